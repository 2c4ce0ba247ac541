"""Reproduce the paper's Tables 2 and 3 (section 6.2) with the MPI-Q GHZ pipeline.

Every row measures T_serial (every block on one monitor, in turn) and T_parallel (blocks dealt
to M monitors) in the same MPI job, as end-to-end pipeline time on the classical root (cut ->
compile -> scatter -> QQ barrier -> execute -> gather -> reconstruct) after the processes are
up; the job's start-up (mpiexec + imports + init + a tiny warm-up run) is reported apart.
Each row runs once with ``statevector`` forced (the paper's full simulation) and once with
``automatic`` (stabilizer for these Clifford circuits).

    .venv/bin/python benchmarks/paper_tables.py                    # both tables, both methods
    .venv/bin/python benchmarks/paper_tables.py --tables 3 --max-nodes 12 --methods automatic

Writes benchmarks/results/paper_tables.json and .md. Not a timed test.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mpiq_magic.ghz.cli import launch_job  # noqa: E402

# (qubits, nodes, block size, T_serial, T_parallel, speedup) as printed in the paper.
PAPER_TABLE2 = [
    (40, 10, 4, 13.29, 2.57, 5.18), (80, 10, 8, 14.11, 2.67, 5.29), (120, 10, 12, 14.73, 2.76, 5.33),
    (160, 10, 16, 18.72, 3.14, 5.97), (200, 10, 20, 63.52, 8.82, 7.20), (210, 10, 21, 119.00, 15.22, 7.82),
    (220, 10, 22, 227.49, 28.85, 7.89), (230, 10, 23, 465.35, 55.96, 8.32), (240, 10, 24, 948.93, 111.25, 8.93),
    (250, 10, 25, 1958.48, 234.16, 8.36),
]
PAPER_TABLE3 = [
    (20, 1, 20, 0.89, 0.92, 0.97), (40, 2, 20, 10.41, 9.59, 1.09), (80, 4, 20, 17.99, 8.78, 2.05),
    (120, 6, 20, 31.30, 8.79, 3.56), (160, 8, 20, 48.86, 8.84, 5.52), (200, 10, 20, 64.74, 8.82, 7.34),
    (240, 12, 20, 79.02, 8.63, 9.16), (280, 14, 20, 96.25, 9.17, 10.49), (320, 16, 20, 112.60, 9.08, 12.40),
    (360, 18, 20, 128.35, 8.99, 14.27), (400, 20, 20, 142.57, 9.33, 15.27), (440, 22, 20, 158.96, 9.27, 17.15),
    (480, 24, 20, 177.74, 9.47, 18.76),
]
TARGET_RATIO = {"statevector": 0.25, "automatic": 0.05}
TARGET_EFFICIENCY, EFFICIENCY_MIN_BLOCK = 0.85, 22


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


REPEAT_LARGE = 1


def repeats_for(block: int, method: str, repeat: int) -> int:
    """Big statevector blocks take seconds each; they get ``--repeat-large`` repetitions."""
    return REPEAT_LARGE if method == "statevector" and block >= 23 else repeat


def job_runs(rows, methods, repeat, shots):
    runs = []
    for method in methods:
        for qubits, nodes, block, *_ in rows:
            for rep in range(repeats_for(block, method, repeat)):
                for serial in (True, False):
                    runs.append({
                        "qubits": qubits, "blocks": nodes, "shots": shots, "serial": serial, "method": method,
                        "label": f"{method} {qubits}q/{nodes}n {'serial' if serial else 'parallel'} #{rep + 1}",
                    })
    return runs


def run_job(rows, quantum, methods, repeat, shots, timeout):
    """One MPI job with ``quantum`` monitors for ``rows``; returns (runs, startup seconds, peak RSS)."""
    spec = {"timeout": timeout, "warmup": True, "top": 4, "progress": False,
            "runs": job_runs(rows, methods, repeat, shots)}
    t0 = time.perf_counter()
    out = launch_job(spec, quantum, timeout=timeout)
    wall = time.perf_counter() - t0
    return out["runs"], out["startup"], sum(out.get("peak_rss_bytes") or [0]), wall


def summarise(rows, runs, methods, startup, ncores, table):
    out = []
    for method in methods:
        for qubits, nodes, block, p_ser, p_par, p_speed in rows:
            mine = [r for r in runs if r["requested_method"] == method and r["qubits"] == qubits and r["blocks"] == nodes]
            ser = statistics.median(r["timings"]["total"] for r in mine if r["serial"])
            par = statistics.median(r["timings"]["total"] for r in mine if not r["serial"])
            par_runs = [r for r in mine if not r["serial"]]
            speedup = ser / par
            eff = speedup / min(nodes, ncores)
            ratio = par / p_par
            row = {
                "table": table, "method": method, "qubits": qubits, "nodes": nodes, "block": block,
                "paper_serial": p_ser, "paper_parallel": p_par, "paper_speedup": p_speed,
                "serial": ser, "parallel": par, "speedup": speedup, "cores": ncores, "efficiency": eff,
                "ratio_to_paper": ratio, "target_ratio": TARGET_RATIO[method],
                "ratio_ok": ratio <= TARGET_RATIO[method],
                "efficiency_checked": method == "statevector" and block >= EFFICIENCY_MIN_BLOCK,
                "efficiency_ok": None if not (method == "statevector" and block >= EFFICIENCY_MIN_BLOCK) else eff >= TARGET_EFFICIENCY,
                "methods_used": sorted({m for r in mine for m in r["methods"]}),
                "repeats": len(par_runs),
                "serial_samples": [r["timings"]["total"] for r in mine if r["serial"]],
                "parallel_samples": [r["timings"]["total"] for r in par_runs],
                "parallel_stages": {k: statistics.median(r["timings"][k] for r in par_runs) for k in par_runs[0]["timings"]},
                "ghz_population": min(r["ghz_population"] for r in mine),
                "startup": startup["total"],
                "other_cpu_share": max(r.get("other_cpu_share", 0.0) for r in mine),
            }
            out.append(row)
    return out


def markdown(rows) -> str:
    lines = []
    for table in (2, 3):
        for method in ("statevector", "automatic"):
            sel = [r for r in rows if r["table"] == table and r["method"] == method]
            if not sel:
                continue
            lines += [
                f"### Table {table}, method `{method}` (target: T_parallel <= {TARGET_RATIO[method]}x paper"
                + (f"; efficiency >= {TARGET_EFFICIENCY} for blocks >= {EFFICIENCY_MIN_BLOCK} qubits" if method == "statevector" else "")
                + ")",
                "",
                "| qubits | nodes | block | paper T_serial | paper T_par | paper S | T_serial (s) | T_parallel (s) | S | cores | eff. | T_par / paper | start-up (s) | others' CPU | ok |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:--:|",
            ]
            for r in sel:
                ok = r["ratio_ok"] and (r["efficiency_ok"] is not False)
                eff = f"{r['efficiency']:.2f}" + ("" if r["efficiency_checked"] else "")
                lines.append(
                    f"| {r['qubits']} | {r['nodes']} | {r['block']} | {r['paper_serial']:.2f} | {r['paper_parallel']:.2f} | "
                    f"{r['paper_speedup']:.2f} | {r['serial']:.3f} | {r['parallel']:.3f} | {r['speedup']:.2f} | {r['cores']} | "
                    f"{eff} | {r['ratio_to_paper']:.4f} | {r['startup']:.1f} | {100 * r['other_cpu_share']:.0f}% | {'yes' if ok else '**no**'} |"
                )
            lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", nargs="+", type=int, default=[2, 3], choices=[2, 3])
    ap.add_argument("--methods", nargs="+", default=["statevector", "automatic"], choices=["statevector", "automatic"])
    ap.add_argument("--repeat", type=int, default=3, help="repetitions per row (1 for statevector blocks >= 23 qubits)")
    ap.add_argument("--shots", type=int, default=1024)
    ap.add_argument("--max-nodes", type=int, default=24, help="skip Table 3 rows with more nodes")
    ap.add_argument("--rows", type=int, nargs="+", help="only the rows with these GHZ sizes (qubits)")
    ap.add_argument("--repeat-large", type=int, default=1, help="repetitions for statevector blocks >= 23 qubits")
    ap.add_argument("--name", default="paper_tables", help="output file stem (default %(default)s)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    global REPEAT_LARGE
    REPEAT_LARGE = args.repeat_large
    table2 = [r for r in PAPER_TABLE2 if not args.rows or r[0] in args.rows]
    table3 = [r for r in PAPER_TABLE3 if not args.rows or r[0] in args.rows]
    ncores = cores()
    load_start = os.getloadavg()
    rows: list[dict] = []
    jobs: list[dict] = []
    skipped = []
    if 2 in args.tables and table2:
        print(f"Table 2: one job, 1 classical + 10 monitors, methods {args.methods} ...", flush=True)
        runs, startup, rss, wall = run_job(table2, 10, args.methods, args.repeat, args.shots, args.timeout)
        rows += summarise(table2, runs, args.methods, startup, ncores, 2)
        jobs.append({"table": 2, "monitors": 10, "startup": startup, "peak_rss_bytes": rss, "wall": wall})
    if 3 in args.tables:
        for row in table3:
            if row[1] > args.max_nodes:
                skipped.append({"table": 3, "nodes": row[1], "reason": f"--max-nodes {args.max_nodes}"})
                continue
            print(f"Table 3: {row[1]} node(s), 1 classical + {row[1]} monitors ...", flush=True)
            runs, startup, rss, wall = run_job([row], row[1], args.methods, args.repeat, args.shots, args.timeout)
            rows += summarise([row], runs, args.methods, startup, ncores, 3)
            jobs.append({"table": 3, "monitors": row[1], "startup": startup, "peak_rss_bytes": rss, "wall": wall})
    for r in rows:
        print(
            f"T{r['table']} {r['method']:<11} {r['qubits']:>3}q {r['nodes']:>2}n: serial {r['serial']:8.3f}  "
            f"parallel {r['parallel']:8.3f}  S {r['speedup']:5.2f}  eff {r['efficiency']:.2f}  "
            f"x paper {r['ratio_to_paper']:.4f}  start-up {r['startup']:.1f}"
        )
    import numpy, qiskit, qiskit_aer

    result = {
        "benchmark": "paper_tables",
        "command": "python benchmarks/paper_tables.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cores": ncores, "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "qiskit": qiskit.__version__, "qiskit_aer": qiskit_aer.__version__, "numpy": numpy.__version__,
                    "loadavg_at_start": load_start, "loadavg_at_end": os.getloadavg()},
        "shots": args.shots,
        "rows": rows,
        "jobs": jobs,
        "skipped": skipped,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    (out / f"{args.name}.md").write_text(
        f"<!-- generated by `{result['command']}` on {result['date']}, {ncores} cores -->\n\n"
        f"Median of {args.repeat} interleaved serial/parallel repetitions per row ({args.repeat_large} for statevector "
        f"blocks >= 23 qubits), {args.shots} shots. 1-minute load average {load_start[0]:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end (the machine is shared). Start-up = mpiexec launch -> processes "
        f"ready (imports, init, warm-up), per job, not included in T_serial / T_parallel. `others' CPU` = "
        f"the largest share of the host's CPU time that processes outside the job used during one of the row's "
        f"runs (/proc/stat minus the job's own CPU time): the machine is shared.\n\n"
        + markdown(rows)
    )
    print(f"wrote {out / (args.name + '.json')} and {out / (args.name + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
