"""MPI-Q collectives against mpi4py's, measured in the same processes and the same run.

    python benchmarks/collectives.py [--sizes 5 17 33] [--reps 60] [--out benchmarks/results/collectives.json]

One mpiexec job per process count P (1 classical rank + P-1 quantum processes; oversubscribed
on small machines). Each repetition runs mpi4py's operation and then MPI-Q's, each started
right after a ``COMM_WORLD.Barrier``; a repetition's time is the largest elapsed time over the
processes; the table gives medians over the repetitions.

- 3 KB ``bytes`` items: ``hc.bcast/scatter/gather/allgather`` against mpi4py's object
  collectives ``comm.bcast/scatter/gather/allgather`` (target: MPI-Q <= 1.5x).
- 1 MiB numpy items: the same MPI-Q calls with arrays against mpi4py's buffer collectives
  ``Bcast/Scatter/Gather/Allgather`` (target: MPI-Q bandwidth >= 0.8 of mpi4py's).

The operations are not identical, and the table says so: MPI-Q's scatter/gather involve the
root and the P-1 quantum processes (mpi4py's: all P, the root's own item included), and MPI-Q's
allgather delivers the quantum contributions to every *classical* rank (mpi4py's: every item
to every process). The bandwidth fraction is mpi4py's time over MPI-Q's for the same 1 MiB
item size (per-item bandwidth); the JSON also records the bytes each side delivers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mpiq_magic.launch import mpiexec_path

JOB = r"""
import json, statistics, sys, time
import numpy as np
from mpi4py import MPI
from mpiq_magic import kernel as mpiq

world = MPI.COMM_WORLD
P, me = world.Get_size(), world.Get_rank()
reps = int(sys.argv[1])
hc = mpiq.init(classical=1, timeout=300)
Q = hc.quantum_size
root = me == 0

small = bytes(3 * 1024)
N = (1 << 20) // 8
big = np.full(N, float(me))
small_items = [small] * P
small_q = [small] * Q
big_all = np.zeros((P, N)) if root else None
big_items = [np.full(N, float(j)) for j in range(Q)] if root else None
recv1 = np.empty(N)
recv_all = np.empty((P, N))

cases = {
    ("bcast", "3KB"): (lambda: world.bcast(small if root else None), lambda: hc.bcast(small if root else None)),
    ("scatter", "3KB"): (lambda: world.scatter(small_items if root else None), lambda: hc.scatter(small_q if root else None)),
    ("gather", "3KB"): (lambda: world.gather(small), lambda: hc.gather(small if hc.is_quantum else None)),
    ("allgather", "3KB"): (lambda: world.allgather(small), lambda: hc.allgather(small if hc.is_quantum else None)),
    ("bcast", "1MiB"): (lambda: world.Bcast(big if root else recv1), lambda: hc.bcast(big if root else None)),
    ("scatter", "1MiB"): (lambda: world.Scatter(big_all, recv1), lambda: hc.scatter(big_items)),
    ("gather", "1MiB"): (lambda: world.Gather(big, recv_all if root else None), lambda: hc.gather(big if hc.is_quantum else None)),
    ("allgather", "1MiB"): (lambda: world.Allgather(big, recv_all), lambda: hc.allgather(big if hc.is_quantum else None)),
}

def once(fn):
    world.Barrier()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0

mine = {}
for key, (raw, ours) in cases.items():
    n = reps if key[1] == "3KB" else max(50, reps // 2 + 20)
    for _ in range(3):  # warm-up
        once(raw); once(ours)
    times = [(once(raw), once(ours)) for _ in range(n)]
    mine["/".join(key)] = times
everyone = world.gather(mine, root=0)
if root:
    out = {}
    for k in mine:
        per_rep = [tuple(max(proc[k][i][j] for proc in everyone) for j in (0, 1)) for i in range(len(mine[k]))]
        raw = statistics.median(t[0] for t in per_rep)
        ours = statistics.median(t[1] for t in per_rep)
        out[k] = {"raw_s": raw, "mpiq_s": ours, "ratio": ours / raw, "reps": len(per_rep)}
    print("JSON " + json.dumps(out), flush=True)
hc.free()
"""

ITEM_BYTES = {"3KB": 3 * 1024, "1MiB": 1 << 20}


def moved(op: str, item: str, P: int, side: str) -> int:
    """Bytes of items one operation delivers (for bandwidth), per side's semantics."""
    b, Q = ITEM_BYTES[item], P - 1
    if side == "raw":
        return {"bcast": b * (P - 1), "scatter": b * (P - 1), "gather": b * (P - 1), "allgather": b * P * (P - 1)}[op]
    return {"bcast": b * (P - 1), "scatter": b * Q, "gather": b * Q, "allgather": b * Q}[op]


def _load() -> tuple[float, float]:
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields), idle


def _run(P: int, reps: int, timeout: int = 1800) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(JOB)
    try:
        proc = subprocess.run(
            ["timeout", str(timeout), mpiexec_path(), "-n", str(P), sys.executable, f.name, str(reps)],
            capture_output=True, text=True,
        )
    finally:
        os.unlink(f.name)
    for line in proc.stdout.splitlines():
        if line.startswith("JSON "):
            return json.loads(line[5:])
    raise RuntimeError(f"benchmark job (P={P}) failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 17, 33])
    parser.add_argument("--reps", type=int, default=60)
    parser.add_argument("--out", default="benchmarks/results/collectives.json")
    args = parser.parse_args()
    started = time.time()
    result = {
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "command": "python benchmarks/collectives.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_before": os.getloadavg(),
        "runs": {},
    }
    for P in args.sizes:
        t0, i0 = _load()
        wall = time.time()
        res = _run(P, args.reps)
        t1, i1 = _load()
        busy = 1 - (i1 - i0) / max(t1 - t0, 1e-9)
        for key, row in res.items():
            op, item = key.split("/")
            if item == "1MiB":
                # Bandwidth per item: the same 1 MiB item size over each side's time (the
                # fraction is raw time / MPI-Q time); bytes each side delivers are recorded too.
                row["raw_GBps"] = ITEM_BYTES[item] / row["raw_s"] / 1e9
                row["mpiq_GBps"] = ITEM_BYTES[item] / row["mpiq_s"] / 1e9
                row["bandwidth_fraction"] = row["raw_s"] / row["mpiq_s"]
                row["bytes_delivered"] = {"mpi4py": moved(op, item, P, "raw"), "mpiq": moved(op, item, P, "mpiq")}
                row["ok"] = row["bandwidth_fraction"] >= 0.8
            else:
                row["ok"] = row["ratio"] <= 1.5
        result["runs"][str(P)] = {"results": res, "cpu_busy_fraction": busy, "wall_s": time.time() - wall,
                                  "load_after": os.getloadavg()}
    result["wall_s"] = time.time() - started
    result["targets_met"] = all(r["ok"] for run in result["runs"].values() for r in run["results"].values())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    md = markdown(result)
    Path(args.out).with_suffix(".md").write_text(md)
    print(md)


def markdown(r: dict) -> str:
    lines = [
        f"<!-- generated by `{r['command']}` on {r['date']}, {r['machine']['cores']} cores -->",
        "",
        f"1 classical + P-1 quantum processes; median over repetitions of the slowest process's time. "
        f"1-minute load average {r['load_before'][0]:.1f} at start.",
        "",
        "| P | operation | item | mpi4py | MPI-Q | MPI-Q / mpi4py | bandwidth mpi4py -> MPI-Q | target | ok | CPU busy |",
        "|---:|---|---|---:|---:|---:|---:|---|:--:|---:|",
    ]
    for P, run in r["runs"].items():
        for key, row in run["results"].items():
            op, item = key.split("/")
            if item == "1MiB":
                bw = f"{row['raw_GBps']:.2f} -> {row['mpiq_GBps']:.2f} GB/s ({row['bandwidth_fraction']:.2f})"
                target = ">= 0.8 of buffer bw"
            else:
                bw, target = "", "<= 1.5x object"
            lines.append(
                f"| {P} | {op} | {item} | {row['raw_s'] * 1e6:.0f} µs | {row['mpiq_s'] * 1e6:.0f} µs | "
                f"{row['ratio']:.2f} | {bw} | {target} | {'yes' if row['ok'] else '**no**'} | "
                f"{run['cpu_busy_fraction'] * 100:.0f}% |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
