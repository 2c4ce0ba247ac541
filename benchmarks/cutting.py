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

Throughput (``--throughput``, on by default): a 14-qubit circuit cut into two 7-qubit partitions
by two CNOTs (36 QPD samples x 2 partitions = 72 subexperiments: one commuting observable group),
reconstructing <Z...Z> and 0.6 <Z6 Z7> + 0.4 <Z0 Z13>:

* baseline: qiskit-addon-cutting in one process (``partition_problem``,
  ``generate_cutting_experiments``, qiskit-aer's ``SamplerV2``, ``reconstruct_expectation_values``);
* the same in one process with this project's parameterized families (``qpd.cut_and_run`` on
  Aer's SamplerV2), with and without deferred measurements: where the speed comes from;
* through the cluster: ``distribute(hc, circuit, observables=..., mode="qpd", partition=labels)``
  in an mpiexec job of 1 classical rank + 2 monitors and 1 + 4 monitors (10-qubit devices), timed
  on classical rank 0 from the call to the result: ``first`` compiles the 8 families, ``repeat``
  is a second call with the compile cache kept (payloads are sent again: a new dispatcher).
  Process start-up and warm-up (importing the transpiler and Aer, a first tiny run: ~10 s at load
  10+) are not counted on either side: the job runs one tiny distribute first, the baseline one
  tiny Aer run.

Feed-forward against QPD of the same circuit (through the cluster, 2 monitors): the 8-qubit CNOT
ladder with non-Clifford rotations split 4+4 (one two-variant feed-forward cut), <Z^8> and <Z0 Z7> from the feed-forward samples and from QPD cuts: shots
run, circuits, seconds, standard errors.

    flock /work/bench.lock .venv/bin/python benchmarks/cutting.py     # a few minutes on 2 cores

Writes benchmarks/results/cutting.json and .md (with the load average at start and end). Not a
timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
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


# ----------------------------------------------------------------------------- throughput
N_QUBITS, HALF = 14, 7


def throughput_circuit():
    """Two 7-qubit halves of RY/RZ + CX brickwork, two CNOTs between qubit 6 and 7."""
    import numpy as np
    from qiskit import QuantumCircuit

    rng = np.random.default_rng(7)
    qc = QuantumCircuit(N_QUBITS, name="cut72")
    for layer in range(4):
        for q in range(N_QUBITS):
            qc.ry(float(rng.uniform(0, np.pi)), q)
            qc.rz(float(rng.uniform(0, np.pi)), q)
        start = layer % 2
        for q in range(start, N_QUBITS - 1, 2):  # q = 6 (the cut) in layers 0 and 2
            qc.cx(q, q + 1)
        if layer == 1:
            qc.h(HALF - 1)  # the cut CNOT's control is not only measured in Z afterwards
    return qc


def throughput_observables():
    from qiskit.quantum_info import SparsePauliOp

    return [SparsePauliOp(["Z" * N_QUBITS]),
            SparsePauliOp(["I" * (N_QUBITS - HALF - 1) + "ZZ" + "I" * (HALF - 1), "Z" + "I" * (N_QUBITS - 2) + "Z"],
                          [0.6, 0.4])]


LABELS = "A" * HALF + "B" * (N_QUBITS - HALF)


def baseline_in_process(shots: int) -> dict:
    """qiskit-addon-cutting + qiskit-aer SamplerV2 in this process; standard errors by the same
    batch means (``qpd.reconstruct`` equals the addon's reconstruction in row 0)."""
    import numpy as np
    from qiskit_addon_cutting import generate_cutting_experiments, partition_problem, reconstruct_expectation_values
    from qiskit_aer.primitives import SamplerV2

    from mpiq_magic.distribute.qpd import reconstruct

    qc, ops = throughput_circuit(), throughput_observables()
    from qiskit import QuantumCircuit

    warm = QuantumCircuit(2, 2)  # Aer loaded and warmed in this process, as the cluster's processes are
    warm.h(0); warm.cx(0, 1); warm.measure([0, 1], [0, 1])
    SamplerV2().run([warm], shots=10).result()
    t0 = time.perf_counter()
    paulis = sorted({p.to_label() for op in ops for p in op.paulis})
    from qiskit.quantum_info import PauliList

    problem = partition_problem(circuit=qc, partition_labels=LABELS, observables=PauliList(paulis))
    subexperiments, coefficients = generate_cutting_experiments(
        circuits=problem.subcircuits, observables=problem.subobservables, num_samples=np.inf)
    t_gen = time.perf_counter()
    sampler = SamplerV2(seed=11)
    results = {k: sampler.run(v, shots=shots).result() for k, v in subexperiments.items()}
    t_run = time.perf_counter()
    terms = reconstruct_expectation_values(results, coefficients, problem.subobservables)
    t_end = time.perf_counter()
    index = {p: i for i, p in enumerate(paulis)}
    values = [float(np.real(sum(c * terms[index[p.to_label()]] for p, c in zip(op.paulis, op.coeffs)))) for op in ops]
    edges = np.linspace(0, shots, 11).astype(int)
    rows = reconstruct(results, coefficients, problem.subobservables, edges)
    per = np.array([[float(np.real(sum(c * row[index[p.to_label()]] for p, c in zip(op.paulis, op.coeffs))))
                     for op in ops] for row in rows[1:]])
    errors = (np.std(per, axis=0, ddof=1) / np.sqrt(10)).tolist()
    return {"values": values, "errors": errors, "subexperiments": sum(len(v) for v in subexperiments.values()),
            "seconds": t_end - t0, "generate_seconds": t_gen - t0, "run_seconds": t_run - t_gen,
            "reconstruct_seconds": t_end - t_run}


def families_in_process(shots: int, defer: bool) -> dict:
    from qiskit_aer.primitives import SamplerV2

    from mpiq_magic.distribute.qpd import cut_and_run

    t0 = time.perf_counter()
    r = cut_and_run(SamplerV2(seed=11), throughput_circuit(), throughput_observables(), partition=LABELS,
                    shots=shots, defer=defer, max_overhead=None)
    return {"values": r.expectation_values.tolist(), "errors": r.standard_errors.tolist(),
            "subexperiments": r.num_subexperiments, "families": r.num_families, "deferred": r.deferred,
            "seconds": time.perf_counter() - t0, "timings": r.timings}


CLUSTER_JOB = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[2])
from mpi4py import MPI
from mpiq_magic import kernel as mpiq
from mpiq_magic.distribute.execute import distribute
from monitor_engine.payload import CompileCache
import cutting as bench

def abort_on_error(kind, value, tb):
    sys.__excepthook__(kind, value, tb); sys.stderr.flush(); MPI.COMM_WORLD.Abort(1)
sys.excepthook = abort_on_error

shots = int(sys.argv[3]); ff = sys.argv[4] == "1"
hc = mpiq.init(devices=sys.argv[1], classical=1, timeout=550)
calls = 3 + (2 if ff else 0)
if hc.is_quantum:
    for _ in range(calls):
        distribute(hc, None)
    sys.exit(0)
out = {"monitors": hc.quantum_size, "runs": []}
from qiskit import QuantumCircuit
warm = QuantumCircuit(2)
warm.ry(0.3, 0); warm.cx(0, 1); warm.h(0); warm.ry(0.2, 1)
t0 = time.perf_counter()  # process warm-up: transpiler and Aer loaded on every rank (a live cluster is)
distribute(hc, warm, observables="ZZ", mode="qpd", partition=[0, 1], shots=10, max_overhead=None)
out["warmup_seconds"] = time.perf_counter() - t0
cache = CompileCache()
qc, ops = bench.throughput_circuit(), bench.throughput_observables()
for label in ("first", "repeat"):
    t0 = time.perf_counter()
    r = distribute(hc, qc, observables=ops, mode="qpd", partition=bench.LABELS, shots=shots, max_overhead=None,
                   cache=cache)
    out["runs"].append({"label": label, "seconds": time.perf_counter() - t0, "values": r.expectation_values.tolist(),
                        "errors": r.standard_errors.tolist(), "subexperiments": r.num_subexperiments,
                        "families": r.num_families, "deferred": r.deferred, "qranks": r.qranks,
                        "transfer": r.transfer, "timings": r.timings, "overhead": r.overhead})
if ff:
    from mpiq_magic.distribute.examples import cnot_ladder
    circuit = cnot_ladder(8)
    obs = ["Z" * 8, "Z" + "I" * 6 + "Z"]
    t0 = time.perf_counter()
    f = distribute(hc, circuit, shots=shots, partition=[0] * 4 + [1] * 4)
    t_ff = time.perf_counter() - t0
    bits = np.array([[int(b) for b in reversed(k)] for k in f.counts])  # column q = clbit q
    weights = np.array(list(f.counts.values()), dtype=float)
    ff_vals, ff_errs = [], []
    for o in obs:
        mask = np.array([c == "Z" for c in reversed(o)])
        signs = 1 - 2 * (bits[:, mask].sum(axis=1) % 2)
        mean = float((signs * weights).sum() / weights.sum())
        ff_vals.append(mean)
        ff_errs.append(float(np.sqrt(max(1 - mean ** 2, 0) / f.shots)))
    t0 = time.perf_counter()
    q = distribute(hc, circuit, observables=obs, mode="qpd", partition=[0] * 4 + [1] * 4, shots=shots,
                   max_overhead=None)
    t_q = time.perf_counter() - t0
    out["ff_vs_qpd"] = {
        "circuit": "CNOT ladder-8, non-Clifford (4+4)", "observables": obs, "shots_per_circuit": shots,
        "ff": {"circuits_per_shot": f.executions, "circuits": len(f.blocks), "total_shots": shots * f.executions,
               "seconds": t_ff, "values": ff_vals, "errors": ff_errs,
               "cuts": [c["mode"] for c in f.cuts if c["mode"] != "local"]},
        "qpd": {"subexperiments": q.num_subexperiments, "families": q.num_families, "overhead": q.overhead,
                "total_shots": shots * q.num_subexperiments, "seconds": t_q,
                "values": q.expectation_values.tolist(), "errors": q.standard_errors.tolist()},
    }
print("JSON " + json.dumps(out), flush=True)
"""

DEVICE = """
[[devices]]
host = "127.0.0.1"
device_id = {i}
num_qubits = 10
seed = {seed}
"""


def cluster_run(monitors: int, shots: int, ff: bool, timeout: int = 580) -> dict:
    from mpiq_magic.launch import mpiexec_path

    with tempfile.TemporaryDirectory() as tmp:
        devices = Path(tmp) / "devices.toml"
        devices.write_text("".join(DEVICE.format(i=i, seed=31 + i) for i in range(monitors)))
        script = Path(tmp) / "job.py"
        script.write_text(CLUSTER_JOB)
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        proc = subprocess.run(
            ["timeout", "--kill-after=5", str(timeout), mpiexec_path(), "-n", str(1 + monitors), sys.executable,
             str(script), str(devices), str(ROOT / "benchmarks"), str(shots), "1" if ff else "0"],
            capture_output=True, text=True, env=env, cwd=tmp,
        )
    for line in proc.stdout.splitlines():
        if line.startswith("JSON "):
            return json.loads(line[5:])
    raise RuntimeError(f"cluster job failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def agree(a_vals, a_errs, b_vals, b_errs, sigmas: float = 4.0) -> bool:
    return all(abs(a - b) <= sigmas * (ea ** 2 + eb ** 2) ** 0.5 for a, ea, b, eb in zip(a_vals, a_errs, b_vals, b_errs))


def throughput(shots: int) -> dict:
    from qiskit.quantum_info import Statevector

    exact = [float(Statevector(throughput_circuit()).expectation_value(op).real) for op in throughput_observables()]
    out = {"shots": shots, "exact": exact, "circuit": f"{N_QUBITS} qubits, partitions {LABELS}, 2 cut CNOTs"}
    out["baseline"] = baseline_in_process(shots)
    print(json.dumps({"baseline": out["baseline"]}), flush=True)
    out["families_mid_circuit"] = families_in_process(shots, defer=False)
    print(json.dumps({"families_mid_circuit": out["families_mid_circuit"]}), flush=True)
    out["families_deferred"] = families_in_process(shots, defer=True)
    print(json.dumps({"families_deferred": out["families_deferred"]}), flush=True)
    for monitors in (2, 4):
        job = cluster_run(monitors, shots, ff=monitors == 2)
        out[f"cluster_{monitors}"] = job
        print(json.dumps({f"cluster_{monitors}": job}), flush=True)
    base = out["baseline"]
    for key in ("families_mid_circuit", "families_deferred"):
        out[key]["speedup"] = base["seconds"] / out[key]["seconds"]
        out[key]["agrees_with_baseline"] = agree(out[key]["values"], out[key]["errors"], base["values"], base["errors"])
    for monitors in (2, 4):
        for run in out[f"cluster_{monitors}"]["runs"]:
            run["speedup"] = base["seconds"] / run["seconds"]
            run["agrees_with_baseline"] = agree(run["values"], run["errors"], base["values"], base["errors"])
            run["agrees_with_exact"] = agree(run["values"], run["errors"], exact, [0.0] * len(exact))
    return out


def throughput_md(t: dict) -> list[str]:
    def vals(r):
        return ", ".join(f"{v:+.4f} ± {e:.4f}" for v, e in zip(r["values"], r["errors"]))

    base = t["baseline"]
    md = ["", "## Cutting throughput: 72 subexperiments", "",
          f"{t['circuit']}; {t['shots']} shots per subexperiment; exact values "
          + ", ".join(f"{v:+.4f}" for v in t["exact"]) + ". Speed-up = baseline seconds / seconds.", "",
          "| run | subexperiments | circuits compiled / families | seconds | speed-up | values ± standard error | agrees with baseline (4σ) |",
          "|---|---|---|---|---|---|---|",
          f"| qiskit-addon-cutting + Aer SamplerV2, one process (baseline) | {base['subexperiments']} | {base['subexperiments']} | "
          f"{base['seconds']:.2f} | 1.00x | {vals(base)} | - |"]
    for key, name in (("families_mid_circuit", "families, one process, mid-circuit measurements"),
                      ("families_deferred", "families, one process, deferred measurements")):
        r = t[key]
        md.append(f"| {name} | {r['subexperiments']} | {r['families']} | {r['seconds']:.2f} | {r['speedup']:.2f}x | "
                  f"{vals(r)} | {r['agrees_with_baseline']} |")
    for monitors in (2, 4):
        for run in t[f"cluster_{monitors}"]["runs"]:
            compiled = run["transfer"].get("compile_cache", {}).get("misses", "-")
            md.append(f"| cluster 1 + {monitors} monitors, distribute(mode='qpd'), {run['label']} | {run['subexperiments']} | "
                      f"{compiled} / {run['families']} | {run['seconds']:.2f} | {run['speedup']:.2f}x | {vals(run)} | "
                      f"{run['agrees_with_baseline']} |")
    fq = t["cluster_2"].get("ff_vs_qpd")
    if fq:
        ff, q = fq["ff"], fq["qpd"]
        md += ["", f"## Feed-forward vs quasi-probability cutting of the same circuit ({fq['circuit']}, 1 + 2 monitors)", "",
               f"{fq['shots_per_circuit']} shots per circuit; observables {', '.join(fq['observables'])}.", "",
               "| mode | circuits run | shots run in total | sampling overhead | seconds | values ± standard error |",
               "|---|---|---|---|---|---|",
               f"| feed-forward ({', '.join(ff['cuts'])} cut) | {ff['circuits']} blocks ({ff['circuits_per_shot']} per shot) | "
               f"{ff['total_shots']} | 1 | {ff['seconds']:.2f} | {vals(ff)} |",
               f"| quasi-probability | {q['subexperiments']} subexperiments ({q['families']} families) | {q['total_shots']} | "
               f"{q['overhead']:g} | {q['seconds']:.2f} | {vals(q)} |"]
    return md


def main(argv=None) -> int:
    from qiskit.quantum_info import Statevector

    from mpiq_magic.distribute.feedforward import plan_feedforward
    from mpiq_magic.distribute.stitch import counts_of, run_locally
    from mpiq_magic.ghz.reconstruct import total_variation, tv_bound

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shots", type=int, default=4000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--throughput-shots", type=int, default=1000)
    ap.add_argument("--no-throughput", action="store_true")
    args = ap.parse_args(argv)
    load_start = os.getloadavg()
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
    tp = None if args.no_throughput else throughput(args.throughput_shots)
    load_end = os.getloadavg()
    path = Path(args.out)
    path.mkdir(parents=True, exist_ok=True)
    (path / "cutting.json").write_text(json.dumps({
        "shots": args.shots, "rows": out, "throughput": tp, "cores": os.cpu_count(),
        "loadavg_start": load_start, "loadavg_end": load_end, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }, indent=1))
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
    if tp is not None:
        md += throughput_md(tp)
    md += ["", f"Load average (1, 5, 15 min) at start {tuple(round(x, 2) for x in load_start)}, at end "
           f"{tuple(round(x, 2) for x in load_end)}; {os.cpu_count()} cores."]
    (path / "cutting.md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
