"""A variational loop on the cluster sampler against qiskit-aer's SamplerV2 in one process.

    python benchmarks/variational.py [--nodes 16] [--reps 2] [--sets 8] [--shots 1024]
                                     [--iters 30] [--monitors 4] [--out benchmarks/results]

One mpiexec job, 1 classical rank + M monitors (devices with full coupling, 1 thread each). QAOA
(p = ``--reps``) for MaxCut on a 3-regular graph (a Möbius ladder: ring plus diameters) of
``--nodes`` nodes; each iteration runs ``--sets`` parameter sets with ``--shots`` shots through
``SamplerV2(hc)``. Measured in the same run:

- ``mpiq``: wall time of ``sampler.run(...).result()`` per iteration (median over iterations 2..N;
  iteration 1 compiles and ships the payloads, reported separately);
- ``slowest``: per iteration the slowest monitor's execution time (sum of its rows' times);
  ``overhead = mpiq / slowest`` (target <= 1.15);
- ``aer``: qiskit-aer's ``SamplerV2`` on rank 0 after the monitors shut down (so nothing
  competes), the ISA circuit transpiled once, ``max_parallel_threads = M`` (same total threads);
  ratio ``mpiq / aer`` (target <= 1.2);
- bytes on the wire per iteration after the first: parameter values sent, plus the pickled size
  of the batches that carry them (target <= 1 KB per parameter set).

- ``relay``: the same loop relayed through ipyparallel (Figure 3a's path, as in
  benchmarks/relay.py), after the MPI job has ended: an ``ipyparallel.Cluster`` of M engines, one
  per device of the same devices file; each iteration the client binds the parameter sets
  (``assign_parameters``) and sends the bound logical circuits round-robin to the engines, which
  transpile each for their device (``device_target``, optimization level 1, as ``compile_for``)
  and run it on the device's ``AerDeviceBackend`` (1 thread), returning the packed shots;
  ratio ``mpiq / relay`` (target <= 0.3). ``--no-relay`` skips it.

The 1-minute load average (``os.getloadavg``, what ``uptime`` prints) is recorded before and
after: on a shared machine the ratios move with it. Writes ``variational.json`` and
``variational.md`` in ``--out``. Not a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import statistics
import tempfile
import time
from pathlib import Path

from mpiq_magic.launch import mpiexec_path

JOB = r"""
import json, pickle, statistics, sys, time
import numpy as np
from mpiq_magic import kernel as mpiq
nodes, reps, sets, shots, iters, out_path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
hc = mpiq.init(devices=sys.argv[7], classical=1, timeout=600)
if hc.is_quantum:
    from monitor_engine.serve import serve
    serve(hc)
    sys.exit(0)
from qiskit import transpile
from qiskit.circuit.library import qaoa_ansatz
from qiskit.quantum_info import SparsePauliOp
from mpiq_magic.primitives import SamplerV2
import monitor_engine.protocol as P
edges = [(i, (i + 1) % nodes) for i in range(nodes)] + [(i, i + nodes // 2) for i in range(nodes // 2)]
cost = SparsePauliOp.from_sparse_list([("ZZ", list(e), 0.5) for e in edges], num_qubits=nodes)
ansatz = qaoa_ansatz(cost, reps=reps)
ansatz.measure_all()
rng = np.random.default_rng(0)
points = [rng.uniform(0, np.pi, size=(sets, ansatz.num_parameters)) for _ in range(iters)]
sampler = SamplerV2(hc, seed=1)
walls, slowest, values_bytes, payload_bytes, qranks = [], [], [], [], []
for values in points:
    t0 = time.perf_counter()
    res = sampler.run([(ansatz, values)], shots=shots).result()[0]
    walls.append(time.perf_counter() - t0)
    per_q = {}
    for q, s in zip(res.metadata["qranks"].ravel(), res.metadata["execute_seconds"].ravel()):
        per_q[int(q)] = per_q.get(int(q), 0.0) + float(s)
    slowest.append(max(per_q.values()))
    values_bytes.append(res.metadata["bytes"]["values"])
    payload_bytes.append(res.metadata["bytes"]["payloads"])
    qranks.append(sorted(per_q))
# what one monitor's batch of a later iteration weighs, pickled as the kernel sends it
chunk = points[-1][: max(1, sets // hc.quantum_size)]
sweep = P.Sweep("0" * 24, chunk, tuple(p.name for p in ansatz.parameters), shots, "job-1", seed=1)
batch_bytes = len(pickle.dumps(P.Batch(("dispatch", 1), 0, ((0, sweep),), final=True, sent_at=time.time()), protocol=5))
sampler.close()
from qiskit_aer import AerSimulator
from qiskit_aer.primitives import SamplerV2 as AerSampler
M = hc.quantum_size
isa = transpile(ansatz, AerSimulator(), optimization_level=1, seed_transpiler=0)
aer = AerSampler(seed=1, options={"backend_options": {"method": "statevector", "max_parallel_threads": M}})
aer.run([(isa, points[0])], shots=shots).result()
aer_walls = []
for values in points:
    t0 = time.perf_counter()
    aer.run([(isa, values)], shots=shots).result()
    aer_walls.append(time.perf_counter() - t0)
later = slice(1, None) if iters > 1 else slice(0, None)
med = lambda xs: statistics.median(xs[later])
out = {
    "mpiq_first_s": walls[0], "mpiq_s": med(walls), "slowest_s": med(slowest), "aer_s": med(aer_walls),
    "overhead": sum(walls[later]) / sum(slowest[later]), "vs_aer": med(walls) / med(aer_walls),
    "values_bytes_per_iter": med(values_bytes), "payload_bytes_first": payload_bytes[0],
    "payload_bytes_later": max(payload_bytes[later]), "batch_bytes_per_set": batch_bytes / len(chunk),
    "qranks_used": sorted({q for qs in qranks for q in qs}),
}
json.dump(out, open(out_path, "w"))
"""


def _relay_setup(devices_file: str, j: int) -> str:
    """Engine j: build its device backend (device j of the file) and warm qiskit-aer."""
    global _relay_device, _relay_backend  # noqa: PLW0603 - engine namespace
    from monitor_engine.backend import AerDeviceBackend
    from mpiq_magic.kernel.config import load_devices

    _relay_device = load_devices(devices_file)[j]
    _relay_backend = AerDeviceBackend(_relay_device)
    _relay_backend.prepare()
    return _relay_device.name


def _relay_exec(circuit, shots: int, seed: int):
    """Figure 3a engine: transpile the bound logical circuit for this engine's device, run it."""
    import time as _t

    from qiskit import transpile

    from monitor_engine.target import device_target

    t0 = _t.perf_counter()
    isa = transpile(circuit, target=device_target(_relay_device), optimization_level=1, seed_transpiler=0)
    t1 = _t.perf_counter()
    run = _relay_backend.run(isa, shots, seed)
    return run.memory, t1 - t0, _t.perf_counter() - t1


def run_relay(args, devices_file: Path) -> dict:
    """The same loop relayed through ipyparallel: bound circuits to engines, which transpile and run."""
    import ipyparallel as ipp
    import numpy as np
    from qiskit.circuit.library import qaoa_ansatz
    from qiskit.quantum_info import SparsePauliOp

    nodes, reps, sets, iters, M = args.nodes, args.reps, args.sets, args.iters, args.monitors
    edges = [(i, (i + 1) % nodes) for i in range(nodes)] + [(i, i + nodes // 2) for i in range(nodes // 2)]
    cost = SparsePauliOp.from_sparse_list([("ZZ", list(e), 0.5) for e in edges], num_qubits=nodes)
    ansatz = qaoa_ansatz(cost, reps=reps)
    ansatz.measure_all()
    rng = np.random.default_rng(0)
    points = [rng.uniform(0, np.pi, size=(sets, ansatz.num_parameters)) for _ in range(iters)]
    root = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = root + os.pathsep + os.environ.get("PYTHONPATH", "")
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    t0 = time.perf_counter()
    cluster = ipp.Cluster(n=M)
    rc = cluster.start_and_connect_sync()
    try:
        rc.wait_for_engines(M, timeout=180)
        eids = sorted(rc.ids)[:M]
        for j, e in enumerate(eids):
            rc[e].apply_sync(_relay_setup, str(devices_file), j)
        startup = time.perf_counter() - t0
        walls, transpile_s, execute_s = [], [], []
        for it, values in enumerate(points):
            t0 = time.perf_counter()
            pending = []
            for k, row in enumerate(values):
                bound = ansatz.assign_parameters(row)
                pending.append(rc[eids[k % M]].apply_async(_relay_exec, bound, args.shots, 1000 * it + k))
            outs = [ar.get() for ar in pending]
            walls.append(time.perf_counter() - t0)
            transpile_s.append(sum(o[1] for o in outs))
            execute_s.append(sum(o[2] for o in outs))
    finally:
        try:
            cluster.stop_cluster_sync()
        except Exception as exc:  # noqa: BLE001
            print(f"warning: stopping the ipyparallel cluster: {exc}", file=sys.stderr)
    later = slice(1, None) if iters > 1 else slice(0, None)
    return {
        "relay_s": statistics.median(walls[later]), "relay_first_s": walls[0],
        "relay_transpile_s": statistics.median(transpile_s[later]),
        "relay_execute_s": statistics.median(execute_s[later]), "relay_startup_s": startup,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--sets", type=int, default=8)
    ap.add_argument("--shots", type=int, default=1024)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--monitors", type=int, default=4)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--no-relay", dest="relay", action="store_false", help="skip the ipyparallel relay baseline")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    tmp = Path(tempfile.mkdtemp(prefix="mpiq_variational_"))
    devices = "".join(
        f'[[devices]]\nhost = "127.0.0.1"\ndevice_id = {j}\nnum_qubits = {args.nodes}\n'
        f'coupling = "full"\nseed = {100 + j}\nthreads = 1\nmethod = "statevector"\n\n'
        for j in range(args.monitors)
    )
    (tmp / "devices.toml").write_text(devices)
    (tmp / "job.py").write_text(JOB)
    result_file = tmp / "result.json"
    cmd = [
        "timeout", str(args.timeout), mpiexec_path(), "-n", str(args.monitors + 1), sys.executable,
        str(tmp / "job.py"), str(args.nodes), str(args.reps), str(args.sets), str(args.shots),
        str(args.iters), str(result_file), str(tmp / "devices.toml"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not result_file.exists():
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        return 1
    measured = json.loads(result_file.read_text())
    load_mid = os.getloadavg()
    if args.relay:
        measured.update(run_relay(args, tmp / "devices.toml"))
        measured["vs_relay"] = measured["mpiq_s"] / measured["relay_s"]
    load_after = os.getloadavg()
    command = "python benchmarks/variational.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {
        "command": command.strip(), "date": started,
        "config": vars(args), "host": platform.node(), "cpus": os.cpu_count(), "measured": measured,
        "loadavg": {"before": load_before, "after_mpi_job": load_mid, "after": load_after},
        "targets": {"overhead": 1.15, "vs_aer": 1.2, "vs_relay": 0.3, "bytes_per_set": 1024},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "variational.json").write_text(json.dumps(result, indent=1))
    m = measured
    ok = lambda v, t: "yes" if v <= t else "**no**"
    if args.relay:
        relay_rows = [
            f"| ipyparallel relay (bound circuits; engines transpile + run), per iteration | {m['relay_s'] * 1e3:.1f} ms | | |",
            f"| ... of which engine transpile / execute (sums over the iteration's circuits) | "
            f"{m['relay_transpile_s'] * 1e3:.1f} / {m['relay_execute_s'] * 1e3:.1f} ms | | |",
            f"| MPI-Q / relay | {m['vs_relay']:.2f}x | <= 0.3x | {ok(m['vs_relay'], 0.3)} |",
        ]
    else:
        relay_rows = ["| relayed through ipyparallel | not measured (--no-relay) | <= 0.3x | |"]
    fmt_load = lambda t: " / ".join(f"{x:.1f}" for x in t)
    lines = [
        f"<!-- generated by `{command.strip()}` on {started} -->",
        "",
        f"# Variational loop: QAOA p={args.reps}, {args.nodes}-node 3-regular MaxCut, {args.sets} sets x "
        f"{args.shots} shots, {args.iters} iterations, 1 classical + {args.monitors} monitors, {os.cpu_count()} CPUs",
        "",
        "",
        f"Load average (1 / 5 / 15 min, as `uptime`): before {fmt_load(load_before)}, after the MPI-Q job "
        f"{fmt_load(load_mid)}, at the end {fmt_load(load_after)}; {os.cpu_count()} CPUs shared with other work.",
        "",
        "| measure | value | target | ok |",
        "|---|---|---|:--:|",
        f"| MPI-Q sampler, per iteration (median, iterations 2..N) | {m['mpiq_s'] * 1e3:.1f} ms | | |",
        f"| first iteration (compile + ship payloads) | {m['mpiq_first_s'] * 1e3:.1f} ms | | |",
        f"| slowest monitor's execution, per iteration | {m['slowest_s'] * 1e3:.1f} ms | | |",
        f"| orchestration: MPI-Q / slowest monitor (sums) | {m['overhead']:.2f}x | <= 1.15x | {ok(m['overhead'], 1.15)} |",
        f"| qiskit-aer SamplerV2, one process, {args.monitors} threads | {m['aer_s'] * 1e3:.1f} ms | | |",
        f"| MPI-Q / Aer | {m['vs_aer']:.2f}x | <= 1.2x | {ok(m['vs_aer'], 1.2)} |",
        *relay_rows,
        f"| parameter values sent per later iteration | {m['values_bytes_per_iter']} B | | |",
        f"| payload bytes: first / later iterations | {m['payload_bytes_first']} / {m['payload_bytes_later']} B | later 0 | "
        f"{ok(m['payload_bytes_later'], 0)} |",
        f"| pickled batch bytes per parameter set (later iterations) | {m['batch_bytes_per_set']:.0f} B | <= 1024 B | "
        f"{ok(m['batch_bytes_per_set'], 1024)} |",
    ]
    (out / "variational.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
