"""Many small quantum tasks through a pilot vs one by one on an ipyparallel LoadBalancedView.

    python benchmarks/tasks.py [--tasks 1000] [--qubits 10] [--shots 100] [--monitors 4]
                               [--latency 50] [--out benchmarks/results]

Workload: ``--tasks`` tasks, each one parameter set of a ``--qubits``-qubit circuit (an RY layer
and a CX chain, measured) with ``--shots`` shots — a sweep, the common shape of many small tasks.

- ``pilot``: a local pilot of 1 classical rank + ``--monitors`` monitors; every task is its own
  ``submit_task((circuit, values), shots=...)`` future (placed by the policy, batched to rank 0
  over the pilot's direct link, coalesced per device into one PUB, compiled once, run by the
  monitors). Throughput = tasks /
  (last task end - first submit). Warm-up tasks first (compile, imports), not counted.
- ``lbview``: an ipyparallel cluster of ``--monitors`` plain engines; each task submitted one by
  one with ``LoadBalancedView.apply_async``: the engine binds the values, transpiles for
  ``AerSimulator`` and runs it (the usual pattern). ``lbview_cached`` is the same with the
  transpiled template cached on each engine (only bind + run per task): a stronger baseline.
- per-task overhead: submit -> start (from the entry of ``submit_task``, placement included, to
  the instant rank 0 starts the task's run), median, over ``--latency`` tasks submitted one at a
  time to an idle pilot; plus the median wait in the throughput run (queueing behind 1000 others
  included). For reference, a bare ipyparallel ``apply`` (submit -> the engine runs it) on an
  idle engine in the same run.

Targets (issue 15): pilot throughput >= 3x lbview; overhead median <= 5 ms. The machine's load
average is recorded before and after. Writes ``tasks.json`` and ``tasks.md`` in ``--out``.
Not a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path


def circuit(n: int):
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector

    th = ParameterVector("t", n)
    qc = QuantumCircuit(n, name=f"sweep{n}")
    for i in range(n):
        qc.ry(th[i], i)
    for i in range(n - 1):
        qc.cx(i, i + 1)
    qc.measure_all()
    return qc


def engine_task(qc, values, shots, cache):
    """On a plain ipyparallel engine: bind, transpile for AerSimulator (cached or not), run."""
    from qiskit import transpile
    from qiskit_aer import AerSimulator

    g = globals()
    sim = g.get("_bench_sim") or g.setdefault("_bench_sim", AerSimulator(method="automatic", max_parallel_threads=1))
    if cache:
        tpl = g.setdefault("_bench_tpl", {})
        isa = tpl.get(qc.name)
        if isa is None:
            isa = tpl[qc.name] = transpile(qc, sim, optimization_level=1)
        bound = isa.assign_parameters(values)
    else:
        bound = transpile(qc.assign_parameters(values), sim, optimization_level=1)
    return sim.run(bound, shots=shots, seed_simulator=1).result().get_counts()


def run_pilot(args, qc, rows) -> dict:
    from mpiq_magic.pilot import PilotDescription, PilotManager

    with PilotManager() as pm:
        t0 = time.perf_counter()
        pilot = pm.create_pilot(PilotDescription("bench", classical=1, quantum=args.monitors, timeout=600, seed=1))
        start_s = time.perf_counter() - t0
        warm = [pm.submit_task((qc, r), shots=args.shots) for r in rows[:32]]
        pm.wait(warm, timeout=600)
        for f in warm:
            f.result()
        # latency: one at a time on an idle pilot
        lat = []
        for r in rows[: args.latency]:
            f = pm.submit_task((qc, r), shots=args.shots)
            f.result(timeout=600)
            lat.append(f.record.start - f.record.submit)
        # throughput
        t_submit = time.time()
        futures = [pm.submit_task((qc, r), shots=args.shots) for r in rows]
        submit_s = time.time() - t_submit
        pm.wait(futures, timeout=1800)
        bad = [f for f in futures if f.exception() is not None]
        if bad:
            raise RuntimeError(f"{len(bad)} pilot task(s) failed; the first: {bad[0].exception()!r}")
        end = max(f.record.end for f in futures)
        per_device = {}
        for f in futures:
            per_device[f.record.devices[0]] = per_device.get(f.record.devices[0], 0) + 1
        return {
            "start_s": start_s,
            "seconds": end - t_submit,
            "throughput": len(futures) / (end - t_submit),
            "submit_seconds": submit_s,
            "submit_per_task_ms": submit_s / len(futures) * 1e3,
            "overhead_median_ms": statistics.median(lat) * 1e3,
            "overhead_p90_ms": sorted(lat)[int(0.9 * (len(lat) - 1))] * 1e3,
            "wait_median_in_run_ms": statistics.median(f.record.wait for f in futures) * 1e3,
            "batches": len({(f.record.start, f.record.end) for f in futures}),
            "max_batch": max(f.record.batch or 1 for f in futures),
            "tasks_per_device": per_device,
            "pids": pilot.pids(),
        }


def run_lbview(args, qc, rows, cache: bool) -> dict:
    import ipyparallel as ipp

    cluster = ipp.Cluster(n=args.monitors, log_level=40)
    try:
        client = cluster.start_and_connect_sync()
        client.wait_for_engines(args.monitors, timeout=600)
        lview = client.load_balanced_view()
        warm = [lview.apply_async(engine_task, qc, r, args.shots, cache) for r in rows[: 2 * args.monitors]]
        for ar in warm:
            ar.get(timeout=600)
        starts = []
        for _ in range(args.latency if not cache else 0):  # a bare apply: submit -> start on an idle engine
            t = time.time()
            starts.append(client[0].apply_async(time.time).get(timeout=600) - t)
        t0 = time.time()
        ars = [lview.apply_async(engine_task, qc, r, args.shots, cache) for r in rows]
        for ar in ars:
            ar.get(timeout=1800)
        seconds = time.time() - t0
        out = {"seconds": seconds, "throughput": len(rows) / seconds}
        if starts:
            out["bare_apply_start_median_ms"] = statistics.median(starts) * 1e3
        return out
    finally:
        cluster.stop_cluster_sync()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--qubits", type=int, default=10)
    ap.add_argument("--shots", type=int, default=100)
    ap.add_argument("--monitors", type=int, default=4)
    ap.add_argument("--latency", type=int, default=50)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    import numpy as np

    qc = circuit(args.qubits)
    rng = np.random.default_rng(7)
    rows = [rng.uniform(0, np.pi, args.qubits) for _ in range(args.tasks)]
    load_before = os.getloadavg()
    pilot = run_pilot(args, qc, rows)
    lb = run_lbview(args, qc, rows, cache=False)
    lbc = run_lbview(args, qc, rows, cache=True)
    load_after = os.getloadavg()
    result = {
        "params": vars(args), "pilot": pilot, "lbview": lb, "lbview_cached": lbc,
        "speedup": pilot["throughput"] / lb["throughput"],
        "speedup_vs_cached": pilot["throughput"] / lbc["throughput"],
        "targets": {"speedup": 3.0, "overhead_median_ms": 5.0},
        "load_before": load_before, "load_after": load_after, "cpus": os.cpu_count(),
        "python": sys.version.split()[0], "platform": platform.platform(),
    }
    result["pilot"].pop("pids", None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tasks.json").write_text(json.dumps(result, indent=1))
    p = pilot
    lines = [
        f"# Tasks: {args.tasks} x {args.qubits}-qubit, {args.shots} shots; 1 classical + {args.monitors} monitors",
        "",
        f"Load average before {load_before[0]:.1f} / after {load_after[0]:.1f} on {os.cpu_count()} CPUs "
        "(shared machine; other sessions were running).",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| pilot throughput | {p['throughput']:.1f} tasks/s ({p['seconds']:.2f} s) | |",
        f"| LoadBalancedView, transpile per task | {lb['throughput']:.1f} tasks/s ({lb['seconds']:.2f} s) | |",
        f"| LoadBalancedView, template cached per engine | {lbc['throughput']:.1f} tasks/s ({lbc['seconds']:.2f} s) | |",
        f"| speedup vs LoadBalancedView | {result['speedup']:.2f}x | >= 3x |",
        f"| speedup vs cached LoadBalancedView | {result['speedup_vs_cached']:.2f}x | |",
        f"| overhead submit -> start, idle pilot, median (p90) | {p['overhead_median_ms']:.2f} ms ({p['overhead_p90_ms']:.2f} ms) | <= 5 ms |",
        f"| reference: bare ipyparallel apply, submit -> start, idle engine, median | {lb.get('bare_apply_start_median_ms', float('nan')):.2f} ms | |",
        f"| submit_task call, per task | {p['submit_per_task_ms']:.3f} ms | |",
        f"| wait in the 1000-task run, median (queueing included) | {p['wait_median_in_run_ms']:.1f} ms | |",
        f"| batches / largest batch | {p['batches']} / {p['max_batch']} | |",
        f"| tasks per device | {p['tasks_per_device']} | |",
    ]
    (out / "tasks.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
