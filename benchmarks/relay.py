"""The paper's Figure 3a relay path against MPI-Q's direct path, on the same GHZ blocks.

One real ipyparallel cluster of 1 + N MPI engines (``ipyparallel.Cluster(engines="mpi")``, the
bundled ``mpiexec``) serves both paths, so both are timed the same way: on the notebook-side
client, from the request to the reconstructed result.

* ``relay`` (Figure 3a): the client cuts the GHZ chain and sends every raw block circuit through
  ipyparallel to a monitor engine (blocks dealt round-robin); each engine transpiles the circuit
  for its own device locally, runs it, and sends the shots back; the client reconstructs.
* ``relay_precompiled``: as ``relay`` but the client compiles the payloads (with the compile
  cache) and the engines only execute -- separates compilation from transport.
* ``direct`` (MPI-Q): the client sends one small request to every engine; classical rank 0 cuts,
  compiles each block once per structure, scatters the payloads straight to the monitors over
  MPI-Q, QQ barrier, execute, gather, reconstruct; only a summary returns to the client.

    .venv/bin/python benchmarks/relay.py                 # 4 monitors, 24 x 20 and 24 x 10 qubit blocks
    .venv/bin/python benchmarks/relay.py --monitors 8 --repeat 7

Writes benchmarks/results/relay.json and .md. Not a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ipyparallel as ipp  # noqa: E402

TARGETS = {20: 0.5, 10: 0.2}  # direct / relay, per block width


@ipp.interactive
def _setup(timeout):
    global hc, _backend, _monitor
    from mpiq_magic import kernel as mpiq

    hc = mpiq.init(classical=1, timeout=timeout)
    _backend = _monitor = None
    return (hc.role, hc.rank, hc.qrank)


@ipp.interactive
def _relay_exec(circuit, shots, seed):
    """Figure 3a engine: transpile the raw circuit for this engine's device, run it."""
    global _backend
    import time as _t

    from qiskit import transpile

    from monitor_engine.backend import AerDeviceBackend
    from monitor_engine.target import device_target

    t0 = _t.perf_counter()
    if _backend is None:
        _backend = AerDeviceBackend(hc.device)
    isa = transpile(circuit, target=device_target(hc.device), optimization_level=1, seed_transpiler=0)
    t1 = _t.perf_counter()
    run = _backend.run(isa, shots, seed)
    return run.memory, run.method, {"transpile": t1 - t0, "execute": _t.perf_counter() - t1}


@ipp.interactive
def _payload_exec(payload):
    global _monitor
    from monitor_engine.process import MonitorProcess

    if _monitor is None:
        _monitor = MonitorProcess(hc)
    res = _monitor.execute(payload)
    if res.error:
        raise RuntimeError(res.error)
    return res.memory, res.method, res.timings


@ipp.interactive
def _direct(n, blocks, shots, timeout):
    from mpiq_magic.ghz.pipeline import run_ghz

    res = run_ghz(hc, n, blocks, shots=shots, timeout=timeout)
    if res is None:
        return None
    return {"timings": res.timings, "ghz_population": res.reconstruction.ghz_population,
            "methods": sorted(set(res.methods)), "compile_cache": res.compile_cache}


@ipp.interactive
def _free():
    hc.free()


def run_relay(rc, monitors_eids, devices, n, blocks, shots, precompiled, cache_factory):
    from mpiq_magic.ghz.cut import assign_blocks, cut_ghz
    from mpiq_magic.ghz.reconstruct import reconstruct

    t0 = time.perf_counter()
    cut = cut_ghz(n, blocks)
    owner = {b: j for j, bs in enumerate(assign_blocks(cut.num_blocks, len(monitors_eids))) for b in bs}
    pending = []
    if precompiled:
        from monitor_engine.payload import compile_for

        cache = cache_factory()
        for block in cut.blocks:
            j = owner[block.index]
            p = compile_for(devices[j], block.circuit, shots=shots, job_id=f"relay-b{block.index}", cache=cache)
            pending.append(rc[monitors_eids[j]].apply_async(_payload_exec, p))
    else:
        for block in cut.blocks:
            j = owner[block.index]
            pending.append(rc[monitors_eids[j]].apply_async(_relay_exec, block.circuit, shots, 1000 + block.index))
    outs = [ar.get() for ar in pending]
    rec = reconstruct([o[0] for o in outs], cut.widths)
    total = time.perf_counter() - t0
    return {"total": total, "ghz_population": rec.ghz_population, "methods": sorted({o[1] for o in outs}),
            "engine_timings": [o[2] for o in outs]}


def run_direct(rc, eids, n, blocks, shots, timeout):
    t0 = time.perf_counter()
    outs = rc[eids].apply_sync(_direct, n, blocks, shots, timeout)
    total = time.perf_counter() - t0
    (summary,) = [o for o in outs if o is not None]
    return {"total": total, "pipeline": summary["timings"]["total"], **summary}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--monitors", type=int, default=4)
    ap.add_argument("--blocks", type=int, default=24)
    ap.add_argument("--widths", type=int, nargs="+", default=[20, 10])
    ap.add_argument("--shots", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    from monitor_engine.payload import CompileCache

    from mpiq_magic.kernel.config import default_devices

    t0 = time.perf_counter()
    cluster = ipp.Cluster(n=1 + args.monitors, engines="mpi")
    rc = cluster.start_and_connect_sync()
    rows = []
    try:
        rc.wait_for_engines(1 + args.monitors, timeout=120)
        eids = sorted(rc.ids)
        roles = dict(zip(eids, rc[eids].apply_sync(_setup, args.timeout)))
        startup = time.perf_counter() - t0
        monitors = sorted((r[2], e) for e, r in roles.items() if r[0] == "quantum")
        monitor_eids = [e for _, e in monitors]
        devices = default_devices(args.monitors)
        print(f"cluster up in {startup:.1f} s: {len(eids)} MPI engines, monitors {monitor_eids}", flush=True)
        for width in args.widths:
            n = width * args.blocks
            paths = {
                "relay": lambda: run_relay(rc, monitor_eids, devices, n, args.blocks, args.shots, False, CompileCache),
                "relay_precompiled": lambda: run_relay(rc, monitor_eids, devices, n, args.blocks, args.shots, True, CompileCache),
                "direct": lambda: run_direct(rc, eids, n, args.blocks, args.shots, args.timeout),
            }
            for fn in paths.values():  # warm-up: imports, simulators, QQ sockets
                fn()
            samples: dict[str, list[dict]] = {k: [] for k in paths}
            for _ in range(args.repeat):
                for name, fn in paths.items():
                    samples[name].append(fn())
            med = {k: statistics.median(s["total"] for s in v) for k, v in samples.items()}
            row = {
                "blocks": args.blocks, "width": width, "qubits": n, "monitors": args.monitors, "shots": args.shots,
                "relay": med["relay"], "relay_precompiled": med["relay_precompiled"], "direct": med["direct"],
                "direct_pipeline": statistics.median(s["pipeline"] for s in samples["direct"]),
                "ratio": med["direct"] / med["relay"], "target": TARGETS.get(width),
                "ratio_ok": (med["direct"] / med["relay"]) <= TARGETS[width] if width in TARGETS else None,
                "relay_engine_transpile_sum": statistics.median(
                    sum(t["transpile"] for t in s["engine_timings"]) for s in samples["relay"]),
                "methods": sorted({m for v in samples.values() for s in v for m in s["methods"]}),
                "ghz_population": min(s["ghz_population"] for v in samples.values() for s in v),
                "samples": {k: [s["total"] for s in v] for k, v in samples.items()},
            }
            rows.append(row)
            print(
                f"{args.blocks} x {width}-qubit blocks on {args.monitors} monitors: relay {row['relay']:.3f} s, "
                f"relay+precompiled {row['relay_precompiled']:.3f} s, direct {row['direct']:.3f} s "
                f"(pipeline {row['direct_pipeline']:.3f} s); direct/relay = {row['ratio']:.3f} "
                f"(target <= {row['target']})", flush=True,
            )
        rc[eids].apply_sync(_free)
    finally:
        try:
            cluster.stop_cluster_sync()
        except Exception as exc:  # noqa: BLE001
            print(f"warning: stopping the cluster: {exc}", file=sys.stderr)
    result = {
        "benchmark": "relay",
        "command": "python benchmarks/relay.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cores": len(os.sched_getaffinity(0)),
        "loadavg_at_end": os.getloadavg(),
        "cluster_startup": startup,
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "relay.json").write_text(json.dumps(result, indent=1))
    lines = [
        f"<!-- generated by `{result['command']}` on {result['date']}, {result['cores']} cores -->",
        "",
        f"ipyparallel cluster of 1 + {args.monitors} MPI engines (start-up {startup:.1f} s, not counted); "
        f"median of {args.repeat} runs, client-side end to end.",
        "",
        "| blocks | width | qubits | monitors | relay (s) | relay, pre-compiled (s) | MPI-Q direct (s) | direct pipeline on rank 0 (s) | direct / relay | target | ok |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['blocks']} | {r['width']} | {r['qubits']} | {r['monitors']} | {r['relay']:.3f} | {r['relay_precompiled']:.3f} | "
            f"{r['direct']:.3f} | {r['direct_pipeline']:.3f} | {r['ratio']:.3f} | <= {r['target']} | "
            f"{'yes' if r['ratio_ok'] else '**no**'} |"
        )
    (out / "relay.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'relay.json'} and {out / 'relay.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
