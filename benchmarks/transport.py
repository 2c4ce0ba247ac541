"""MPI-Q transport against raw mpi4py, measured in the same processes.

    python benchmarks/transport.py [--out benchmarks/results/transport.json]

Three mpiexec jobs: a ping-pong pair (1 classical + 1 quantum) for messages of 8 B, 3 KB,
1 MiB and 64 MiB; two classical ranks for the CC barrier against ``COMM_WORLD.Barrier``; and
1 classical + 4 quantum processes for the QQ barrier's latency and release skew. Every ratio
compares numbers taken in the same run, interleaved repetition by repetition (medians of 3000
ping-pongs for small messages; the barriers: best of 5 interleaved means of 3000). Writes the JSON and a markdown table next to it (``.md``).
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

PINGPONG = r"""
import json, statistics, sys, time
import numpy as np
from mpi4py import MPI
from mpiq_magic import kernel as mpiq

world = MPI.COMM_WORLD
hc = mpiq.init(classical=1)
me, peer = world.Get_rank(), 1 - world.Get_rank()
out = {}

def once(send, recv):
    world.Barrier()
    t0 = time.perf_counter()
    if me == 0:
        send(); recv()
    else:
        recv(); send()
    return (time.perf_counter() - t0) / 2

def pingpong(*pairs, reps):
    # median one-way time of each (send, recv) pair; the pairs alternate repetition by
    # repetition, so a change in the machine's load hits every pair alike
    times = [[] for _ in pairs]
    for _ in range(reps):
        for t, (send, recv) in zip(times, pairs):
            t.append(once(send, recv))
    return [statistics.median(t) for t in times]

cases = [("control_8B", b"12345678", 3000), ("payload_3KB", bytes(3 * 1024), 3000)]
for name, obj, reps in cases:
    raw, ours = pingpong((lambda: world.send(obj, peer, 11), lambda: world.recv(source=peer, tag=11)),
                         (lambda: hc.send(obj, peer, 11), lambda: hc.recv(peer, 11)), reps=reps)
    out[name] = {"bytes": len(obj), "raw_s": raw, "mpiq_s": ours, "ratio": ours / raw}

for name, nbytes, reps in [("array_1MiB", 1 << 20, 200), ("array_64MiB", 64 << 20, 12)]:
    a = np.ones(nbytes // 8); b = np.empty_like(a)
    raw, ours, obj = pingpong((lambda: world.Send(a, peer, 12), lambda: world.Recv(b, peer, 12)),
                              (lambda: hc.Send(a, peer, 12), lambda: hc.Recv(b, peer, 12)),
                              (lambda: hc.send(a, peer, 13), lambda: hc.recv(peer, 13)), reps=reps)
    out[name] = {
        "bytes": nbytes, "raw_s": raw, "mpiq_s": ours, "ratio": ours / raw,
        "raw_GBps": nbytes / raw / 1e9, "mpiq_GBps": nbytes / ours / 1e9,
        "bandwidth_fraction": raw / ours, "mpiq_object_path_s": obj,
    }
hc.free()
if me == 0:
    print("JSON " + json.dumps(out), flush=True)
"""

CC_BARRIER = r"""
import json, statistics, time
from mpi4py import MPI
from mpiq_magic import kernel as mpiq

world = MPI.COMM_WORLD
hc = mpiq.init(classical=world.Get_size())
reps = 3000
def timed(fn):
    world.Barrier()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps
runs = [(timed(world.Barrier), timed(lambda: hc.barrier(mpiq.CC, record=False)), timed(lambda: hc.barrier(mpiq.CC)))
        for _ in range(5)]  # interleaved rounds, best of 5 for each
raw, fast, rec = (min(r[i] for r in runs) for i in range(3))
hc.free()
if world.Get_rank() == 0:
    print("JSON " + json.dumps({"raw_barrier_s": raw, "mpiq_cc_s": fast, "ratio": fast / raw,
                                "mpiq_cc_with_record_s": rec, "record_ratio": rec / raw}), flush=True)
"""

QQ_BARRIER = r"""
import json, statistics, time
from mpiq_magic import kernel as mpiq

hc = mpiq.init(classical=1)
reps = 100
skews, latencies = [], []
if hc.is_quantum:
    for _ in range(10):
        hc.barrier(mpiq.QQ)  # warm-up
    for _ in range(reps):
        rec = hc.barrier(mpiq.QQ)
        skews.append(rec.skew)
        latencies.append(max(rec.releases) - max(rec.arrivals))
stats = hc.gather({"skews": skews, "lat": latencies} if hc.is_quantum else None, timeout=300)
if hc.rank == 0:
    s = stats[0]["skews"]; l = stats[0]["lat"]
    print("JSON " + json.dumps({
        "quantum_processes": hc.quantum_size, "barriers": reps,
        "skew_median_us": statistics.median(s) * 1e6, "skew_p90_us": sorted(s)[int(0.9 * len(s))] * 1e6,
        "skew_max_us": max(s) * 1e6, "latency_median_us": statistics.median(l) * 1e6,
    }), flush=True)
hc.free()
"""


def _run(code: str, n: int, timeout: int = 600) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(code)
    try:
        proc = subprocess.run(
            ["timeout", str(timeout), mpiexec_path(), "-n", str(n), sys.executable, f.name],
            capture_output=True, text=True,
        )
    finally:
        os.unlink(f.name)
    for line in proc.stdout.splitlines():
        if line.startswith("JSON "):
            return json.loads(line[5:])
    raise RuntimeError(f"benchmark job failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/transport.json")
    args = parser.parse_args()
    started = time.time()
    load_before = os.getloadavg()
    result = {
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "pingpong": _run(PINGPONG, 2),
        "cc_barrier": _run(CC_BARRIER, 2),
        "qq_barrier": _run(QQ_BARRIER, 5),
    }
    result["wall_s"] = time.time() - started
    p, cc, qq = result["pingpong"], result["cc_barrier"], result["qq_barrier"]
    result["load_before"] = load_before
    result["load_after"] = os.getloadavg()
    result["targets"] = {
        "small_messages_latency_le_1_5x": max(p["control_8B"]["ratio"], p["payload_3KB"]["ratio"]) <= 1.5,
        "bandwidth_64MiB_ge_80pct": p["array_64MiB"]["bandwidth_fraction"] >= 0.8,
        "cc_barrier_le_1_5x": cc["ratio"] <= 1.5,
        "cc_barrier_with_record_le_2x": cc["record_ratio"] <= 2.0,
        "qq_skew_median_le_100us": qq["skew_median_us"] <= 100.0,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    md = markdown(result)
    Path(args.out).with_suffix(".md").write_text(md)
    print(md)


def markdown(r: dict) -> str:
    p, cc, qq = r["pingpong"], r["cc_barrier"], r["qq_barrier"]
    rows = [
        f"<!-- generated by `python benchmarks/transport.py` on {r.get('date', '?')}, {r['machine']['cores']} cores; "
        f"1-minute load average {r['load_before'][0]:.1f} at start, {r['load_after'][0]:.1f} at end -->",
        "",
        "| measurement | raw mpi4py | MPI-Q | ratio (MPI-Q / raw) |", "|---|---|---|---|"]
    for name in ("control_8B", "payload_3KB", "array_1MiB", "array_64MiB"):
        c = p[name]
        rows.append(f"| {name} one-way latency | {c['raw_s'] * 1e6:.1f} µs | {c['mpiq_s'] * 1e6:.1f} µs | {c['ratio']:.2f} |")
    for name in ("array_1MiB", "array_64MiB"):
        c = p[name]
        rows.append(f"| {name} bandwidth | {c['raw_GBps']:.2f} GB/s | {c['mpiq_GBps']:.2f} GB/s | {c['bandwidth_fraction']:.2f} of raw |")
    rows.append(f"| CC barrier (record=False) | {cc['raw_barrier_s'] * 1e6:.2f} µs | {cc['mpiq_cc_s'] * 1e6:.2f} µs | {cc['ratio']:.2f} |")
    rows.append(f"| CC barrier (with timing record) | {cc['raw_barrier_s'] * 1e6:.2f} µs | {cc['mpiq_cc_with_record_s'] * 1e6:.2f} µs | {cc['record_ratio']:.2f} |")
    rows.append(f"| QQ barrier, {qq['quantum_processes']} monitors: release skew median / p90 / max | | {qq['skew_median_us']:.1f} / {qq['skew_p90_us']:.1f} / {qq['skew_max_us']:.1f} µs | |")
    rows.append(f"| QQ barrier latency (last arrival to last release), median | | {qq['latency_median_us']:.1f} µs | |")
    targets = ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in r["targets"].items())
    return "\n".join(rows) + f"\n\nTargets: {targets}\n"


if __name__ == "__main__":
    main()
