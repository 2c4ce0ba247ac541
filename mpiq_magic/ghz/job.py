"""The MPI side of ``mpiq demo`` / ``mpiq ghz`` and the benchmarks: ``python -m mpiq_magic.ghz.job SPEC OUT``.

Every rank runs this module under ``mpiexec``. ``SPEC`` is a JSON file written by the parent::

    {"launched_at": <time.time() of the launch>, "classical": 1, "devices": null | "file.toml",
     "device_qubits": null | int, "timeout": 600, "warmup": true, "barriers": 0, "top": 64,
     "runs": [{"qubits": 60, "blocks": 6, "shots": 1024, "serial": false,
               "method": null | "statevector" | ..., "noise": null | {...}, "label": "..."}]}

Runs that share a (method, noise) device setting share one hybrid communicator; a new setting
gets a fresh ``init``. Classical rank 0 writes ``OUT`` (JSON): startup, topology, per-run
results, barrier records, per-rank peak memory, or ``{"error": ...}``. Progress goes to stdout
as ``MPIQ-PROGRESS {json}`` lines, which the parent turns into a progress display.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any

PROGRESS_PREFIX = "MPIQ-PROGRESS "


def emit(event: str, info: dict) -> None:
    sys.stdout.write(PROGRESS_PREFIX + json.dumps({"event": event, **info}) + "\n")
    sys.stdout.flush()


def device_specs(spec: dict, quantum: int, method: str | None, noise: dict | None):
    from dataclasses import replace

    from ..kernel.config import default_devices, load_devices

    if spec.get("devices"):
        specs = load_devices(spec["devices"])[:quantum]
    else:
        specs = default_devices(quantum)
    overrides: dict[str, Any] = {}
    if method:
        overrides["method"] = method
    if noise is not None:
        overrides["noise"] = noise or None
    if spec.get("device_qubits"):
        overrides["num_qubits"] = int(spec["device_qubits"])
    return [replace(s, **overrides) for s in specs]


def _busy_cpu_seconds() -> float:
    """CPU seconds every process on this host has used since boot (Linux /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:8]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str]) -> int:
    t_main = time.time()
    spec_path, out_path = argv
    with open(spec_path) as f:
        spec = json.load(f)
    from mpi4py import MPI

    from .. import kernel as mpiq
    from .pipeline import run_ghz

    world = MPI.COMM_WORLD
    quantum = world.Get_size() - int(spec.get("classical", 1))
    timeout = float(spec.get("timeout", 600))
    top = spec.get("top", 64)
    is_root = world.Get_rank() == 0
    out: dict[str, Any] = {"runs": []}
    hc = None
    setting = None
    exit_code = 0
    try:
        for index, run in enumerate(spec["runs"]):
            key = (run.get("method"), json.dumps(run.get("noise"), sort_keys=True))
            if key != setting:
                if hc is not None:
                    hc.free()
                devices = device_specs(spec, quantum, run.get("method"), run.get("noise"))
                hc = mpiq.init(devices=devices, classical=int(spec.get("classical", 1)), timeout=timeout)
                if setting is None:
                    _startup(hc, spec, out, t_main, timeout)
                setting = key
            progress = emit if spec.get("progress", True) else None
            if is_root and progress:
                emit("run", {"index": index, "of": len(spec["runs"]), "label": run.get("label", "")})
            cpu0, busy0, wall0 = time.process_time(), _busy_cpu_seconds(), time.perf_counter()
            result = run_ghz(
                hc, int(run["qubits"]), run.get("blocks"), shots=int(run.get("shots", 1024)),
                serial=bool(run.get("serial", False)), timeout=timeout, progress=progress,
            )
            ours = world.gather(time.process_time() - cpu0, root=0)
            if result is not None:
                # CPU the rest of the host used meanwhile: a shared machine shows up here.
                wall = time.perf_counter() - wall0
                foreign = max(0.0, _busy_cpu_seconds() - busy0 - sum(ours))
                result_cpu = {"job_cpu_seconds": sum(ours), "other_cpu_seconds": foreign,
                              "other_cpu_share": foreign / (wall * (os.cpu_count() or 1))}
                d = result.to_dict(top=top)
                d["label"] = run.get("label", "")
                d["requested_method"] = run.get("method") or "device default"
                d.update(result_cpu)
                out["runs"].append(d)
        if spec.get("barriers"):
            out["barrier_rounds"] = _barrier_rounds(hc, int(spec["barriers"]), timeout)
        memory = world.gather(peak_rss_bytes(), root=0)
        if is_root:
            out["peak_rss_bytes"] = memory
    except Exception as exc:  # noqa: BLE001 - reported to the parent through OUT
        exit_code = 1
        if is_root:
            out["error"] = f"{type(exc).__name__}: {exc}"
        else:
            print(f"[comm rank {world.Get_rank()}] {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        if hc is not None:
            hc.free()
    if is_root:
        from ..launch import write_json_atomic

        write_json_atomic(out_path, out)
    return exit_code


def _startup(hc, spec: dict, out: dict, t_main: float, timeout: float) -> None:
    """Record start-up: launch -> init done, then an optional tiny warm-up run."""
    from .pipeline import run_ghz

    t_init = time.time()
    if spec.get("warmup", True):
        q = hc.quantum_size
        run_ghz(hc, 2 * q, q, shots=8, timeout=timeout)
    t_ready = time.time()
    if hc.is_classical and hc.rank == 0:
        launched = float(spec.get("launched_at", t_main))
        out["startup"] = {
            "launch_to_python": t_main - launched,
            "launch_to_init": t_init - launched,
            "warmup": t_ready - t_init,
            "total": t_ready - launched,
        }
        out["topology"] = hc.topology.to_dict()
        out["topology_text"] = str(hc.topology)
        out["devices"] = [d.to_dict() for d in hc.devices]
        emit("ready", {"seconds": t_ready - launched})


def _barrier_rounds(hc, rounds: int, timeout: float) -> list[dict]:
    """``rounds`` extra QQ barriers; qrank 0's records reach the root."""
    from .. import kernel as mpiq

    records = []
    if hc.is_quantum:
        for _ in range(rounds):
            records.append(hc.barrier(mpiq.QQ, timeout=timeout).to_dict())
    gathered = hc.gather(records if hc.qrank == 0 else None, timeout=timeout)
    return gathered[0] if gathered else []


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
