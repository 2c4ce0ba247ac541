"""Partition quality: multilevel FM (seed 002) against the static and time-sliced baselines.

Circuits (issue 13): QFT-32 (qiskit ``synth_qft_full``, no final swaps), QAOA-32 and QAOA-64 on
random 3-regular MaxCut graphs (``p`` layers of RZZ on every edge + RX), and CP-fraction circuits
(random CPhase + U layers, two-qubit fraction 0.5, depth = width; Burt et al.'s generator, our
code). Each is partitioned over 2 and 4 QPUs of ``ceil(n / k) + spare`` qubits (``--spare 1``
is DISQCO's convention; ``--spare 0`` fills every QPU). Every method's e-bits come from the same
cost model (teleportations + gate groups, full topology).

Columns: multilevel FM; static graph (METIS on the qubit-interaction graph); time-sliced
(FGP-rOEE after Baker et al.); static hypergraph (Mt-KaHyPar km1 on the gate groups, which the
multilevel partitioner also uses as a start). Goal (issue 13): multilevel <= 0.7 x the best of
the static graph and time-sliced baselines, on average.

    .venv/bin/python benchmarks/partition.py                 # all rows (~1-2 min on 2 cores)
    .venv/bin/python benchmarks/partition.py --spare 0 --name partition_full

Writes benchmarks/results/<name>.json and .md. Not a timed test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qiskit import QuantumCircuit  # noqa: E402

from mpiq_magic.distribute import partition_circuit  # noqa: E402

TARGET = 0.7
METHODS = ("multilevel", "static", "time-sliced", "static-hypergraph")


def qft(n: int) -> QuantumCircuit:
    from qiskit.synthesis import synth_qft_full

    return synth_qft_full(n, do_swaps=False)


def qaoa_regular(n: int, reps: int = 1, seed: int = 0) -> QuantumCircuit:
    import networkx as nx

    graph = nx.random_regular_graph(3, n, seed=seed)
    rng = random.Random(seed)
    qc = QuantumCircuit(n)
    qc.h(range(n))
    for _ in range(reps):
        gamma, beta = rng.uniform(0, math.pi), rng.uniform(0, math.pi)
        for a, b in sorted(graph.edges()):
            qc.rzz(2 * gamma, a, b)
        for q in range(n):
            qc.rx(2 * beta, q)
    return qc


def cp_fraction(n: int, depth: int, fraction: float = 0.5, seed: int = 0) -> QuantumCircuit:
    rng = random.Random(seed)
    qc = QuantumCircuit(n)
    for _ in range(depth):
        pick = []
        for q in range(n):
            if rng.random() > fraction:
                qc.u(rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi), q)
            else:
                pick.append(q)
        rng.shuffle(pick)
        for i in range(0, len(pick) - 1, 2):
            qc.cp(rng.uniform(0, 2 * math.pi), pick[i], pick[i + 1])
    return qc


def circuits(reps: int):
    yield "QFT-32", qft(32)
    yield f"QAOA-32 (3-regular, p={reps})", qaoa_regular(32, reps, seed=1)
    yield f"QAOA-64 (3-regular, p={reps})", qaoa_regular(64, reps, seed=1)
    yield "CP-fraction-32 (0.5, depth 32)", cp_fraction(32, 32, 0.5, seed=1)
    yield "CP-fraction-64 (0.5, depth 64)", cp_fraction(64, 64, 0.5, seed=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qpus", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--spare", type=int, default=1, help="qubits per QPU above ceil(n/k)")
    ap.add_argument("--reps", type=int, default=1, help="QAOA layers p")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="partition")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    load_start = os.getloadavg()

    rows = []
    for name, qc in circuits(args.reps):
        for k in args.qpus:
            caps = [math.ceil(qc.num_qubits / k) + args.spare] * k
            row = {"circuit": name, "qubits": qc.num_qubits, "qpus": k, "capacities": caps}
            for m in METHODS:
                r = partition_circuit(qc, caps, method=m, seed=args.seed)
                row[m] = {
                    "ebits": r.ebits, "teleport": r.teleport_ebits, "gate": r.gate_ebits,
                    "seconds": r.seconds, "layers": r.num_layers,
                    "peak_layer_ebits": max(r.ebits_per_layer, default=0),
                }
            best = min(row["static"]["ebits"], row["time-sliced"]["ebits"])
            ml = row["multilevel"]["ebits"]
            row["best_baseline"] = best
            row["ratio"] = ml / best if best else (0.0 if ml == 0 else math.inf)
            row["ratio_vs_time_sliced"] = ml / row["time-sliced"]["ebits"] if row["time-sliced"]["ebits"] else None
            row["ratio_vs_hypergraph"] = (
                ml / row["static-hypergraph"]["ebits"] if row["static-hypergraph"]["ebits"] else None
            )
            rows.append(row)
            print(
                f"{name:32s} k={k} caps={caps[0]:>2}: " + ", ".join(f"{m} {row[m]['ebits']} ({row[m]['seconds']:.2f} s)" for m in METHODS)
                + f"; ratio {row['ratio']:.2f}",
                flush=True,
            )
    finite = [r["ratio"] for r in rows if math.isfinite(r["ratio"])]
    mean_ratio = statistics.fmean(finite)
    mean_ts = statistics.fmean(r["ratio_vs_time_sliced"] for r in rows if r["ratio_vs_time_sliced"] is not None)
    mean_hg = statistics.fmean(r["ratio_vs_hypergraph"] for r in rows if r["ratio_vs_hypergraph"] is not None)
    result = {
        "benchmark": "partition",
        "command": "python benchmarks/partition.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cores": len(os.sched_getaffinity(0)),
        "target_ratio": TARGET,
        "mean_ratio_vs_best_baseline": mean_ratio,
        "mean_ratio_vs_time_sliced": mean_ts,
        "mean_ratio_vs_static_hypergraph": mean_hg,
        "ok": mean_ratio <= TARGET,
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    md = [
        f"<!-- generated by `{result['command']}` on {result['date']}, {result['cores']} cores -->",
        "",
        f"E-bits per partition (full topology; QPUs of ceil(n/k) + {args.spare} qubits); time per "
        "partition in parentheses. Ratio = multilevel / min(static graph, time-sliced).",
        "",
        "| circuit | QPUs x qubits | layers | multilevel FM | static graph (METIS) | time-sliced (FGP-rOEE) | static hypergraph (Mt-KaHyPar) | ratio | vs time-sliced |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cell = lambda m: f"{r[m]['ebits']} ({r[m]['seconds']:.2f} s)"  # noqa: E731
        ml = r["multilevel"]
        md.append(
            f"| {r['circuit']} | {r['qpus']} x {r['capacities'][0]} | {ml['layers']} | "
            f"{cell('multilevel')} [{ml['teleport']} tp + {ml['gate']} gate] | {cell('static')} | "
            f"{cell('time-sliced')} | {cell('static-hypergraph')} | {r['ratio']:.2f} | "
            f"{r['ratio_vs_time_sliced']:.2f} |"
        )
    md += [
        "",
        f"Mean ratio vs the best baseline: **{mean_ratio:.2f}** (target <= {TARGET}: "
        f"**{'met' if result['ok'] else 'missed'}**); vs time-sliced alone {mean_ts:.2f}; "
        f"vs Mt-KaHyPar static hypergraph {mean_hg:.2f}.",
        "",
        f"Load average (1, 5, 15 min) at start {tuple(round(x, 2) for x in result['loadavg_start'])}, at end "
        f"{tuple(round(x, 2) for x in result['loadavg_end'])}.",
    ]
    (out / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md[-3:]))
    print(f"wrote {out / (args.name + '.json')} and {out / (args.name + '.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
