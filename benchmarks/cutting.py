"""Feed-forward cuts against quasi-probability cutting of the same circuits: sampling cost.

For each circuit and partition (3 blocks, contiguous or the generator's blocks):

* feed-forward (``mpiq_magic.distribute``): circuits run per shot (blocks x variants), Pauli-frame
  and two-variant cuts, plan time, and the total variation of an in-process run (``run_locally``,
  qiskit-aer) against the exact uncut distribution with its bound;
* quasi-probability cutting of the same gates (qiskit-addon-cutting ``partition_problem`` with the
  same partition labels and a Z observable on every qubit): sampling overhead (product of the
  cut gates' gamma^2, 9 per CNOT) and number of subexperiments (``generate_cutting_experiments``).

The feed-forward overhead is the number of circuits per shot (1 per block without variants);
quasi-probability cutting multiplies the shots needed for one standard error by its overhead.

    .venv/bin/python benchmarks/cutting.py            # ~30 s on 2 idle cores

Writes benchmarks/results/cutting.json and .md. Not a timed test. Running the subexperiments
through the cluster's SamplerV2 (issue 13's throughput row) is not in this script yet.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rows():
    from mpiq_magic.distribute import examples

    for n in (9,):
        yield f"GHZ-{n}", examples.ghz(n), [b for b in range(3) for _ in range(n // 3)]
    for n in (6,):
        yield f"CNOT ladder-{n} (non-Clifford)", examples.cnot_ladder(n), [b for b in range(3) for _ in range(n // 3)]
    for seed in (0,):
        qc, owner = examples.random_feedforward([3, 3, 2], 30, seed=seed)
        yield f"random 8q seed {seed}", qc, owner


def qpd(circuit, owner):
    from qiskit.quantum_info import SparsePauliOp
    from qiskit_addon_cutting import generate_cutting_experiments, partition_problem

    qc = circuit.remove_final_measurements(inplace=False)
    n = qc.num_qubits
    labels = "".join("ABCDEFGH"[owner[q]] for q in range(n))
    obs = SparsePauliOp(["I" * (n - 1 - q) + "Z" + "I" * q for q in range(n)])
    t0 = time.perf_counter()
    problem = partition_problem(circuit=qc, partition_labels=labels, observables=obs.paulis)
    overhead = 1.0
    for basis in problem.bases:
        overhead *= basis.overhead
    count = None  # the exact enumeration grows as 6^cuts: only generated for a few cuts
    if len(problem.bases) <= 3:
        subexperiments, _ = generate_cutting_experiments(
            circuits=problem.subcircuits, observables=problem.subobservables, num_samples=float("inf"))
        count = sum(len(v) for v in subexperiments.values())
    return {"cuts": len(problem.bases), "overhead": overhead, "subexperiments": count,
            "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    from qiskit.quantum_info import Statevector

    from mpiq_magic.distribute.feedforward import plan_feedforward
    from mpiq_magic.distribute.stitch import counts_of, run_locally
    from mpiq_magic.ghz.reconstruct import total_variation, tv_bound

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shots", type=int, default=4000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    out = []
    for label, circuit, owner in rows():
        t0 = time.perf_counter()
        plan = plan_feedforward(circuit, owner)
        t_plan = time.perf_counter() - t0
        st = run_locally(plan, args.shots, seed=11)
        exact = Statevector(circuit.remove_final_measurements(inplace=False)).probabilities_dict()
        counts = counts_of(st.bits, st.num_clbits)
        modes = plan.mode_counts()
        row = {
            "circuit": label, "qubits": circuit.num_qubits, "blocks": len(plan.blocks),
            "ff_frame_cuts": modes["frame"], "ff_variant_cuts": modes["variant"],
            "ff_circuits_per_shot": plan.executions, "ff_plan_seconds": t_plan,
            "ff_tv": total_variation(counts, exact), "ff_tv_bound": tv_bound(exact, args.shots),
            "ff_stitch_seconds": st.seconds,
        }
        try:
            row.update({f"qpd_{k}": v for k, v in qpd(circuit, owner).items()})
        except Exception as exc:  # noqa: BLE001 - reported in the table
            row["qpd_error"] = f"{type(exc).__name__}: {exc}"
        out.append(row)
        print(json.dumps(row), flush=True)
    path = Path(args.out)
    path.mkdir(parents=True, exist_ok=True)
    (path / "cutting.json").write_text(json.dumps({"shots": args.shots, "rows": out}, indent=1))
    md = [
        "# Feed-forward cuts vs quasi-probability cutting (sampling cost)", "",
        f"{args.shots} shots per block variant; TV against the exact uncut distribution (bound: Jensen + McDiarmid, delta 1e-6).", "",
        "| circuit | qubits | frame / variant cuts | FF circuits per shot | FF TV (bound) | QPD cuts | QPD sampling overhead | QPD subexperiments |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in out:
        md.append(
            f"| {r['circuit']} | {r['qubits']} | {r['ff_frame_cuts']} / {r['ff_variant_cuts']} | {r['ff_circuits_per_shot']} | "
            f"{r['ff_tv']:.4f} ({r['ff_tv_bound']:.4f}) | {r.get('qpd_cuts', '-')} | "
            f"{r.get('qpd_overhead', float('nan')):.0f} | {r.get('qpd_subexperiments') or '-'} |"
        )
    (path / "cutting.md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
