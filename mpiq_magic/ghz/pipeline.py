"""The distributed GHZ pipeline on an initialised hybrid communicator (paper section 5.2).

::

    from mpiq_magic import kernel as mpiq
    from mpiq_magic.ghz.pipeline import run_ghz

    hc = mpiq.init()                       # 1 classical rank + Q monitors
    result = run_ghz(hc, 120, num_blocks=6, shots=1024)   # collective; the root gets the result
    if result is not None:
        print(result.reconstruction.summary(), result.timings)

Steps, timed separately: cut -> compile (each block for its monitor's device, through a compile
cache) -> scatter (payload lists straight to the monitors over MPI-Q) -> barrier (QQ, so the
monitors start together) -> execute (each monitor runs its blocks in turn) -> gather ->
reconstruct (classical feed-forward). ``serial=True`` runs every block on qrank 0, one after
another: the paper's T_serial.
"""

from __future__ import annotations

import time
import traceback
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from ..kernel import QQ, Rank
from ..kernel.errors import MPIQError
from .cut import Cut, assign_blocks, cut_ghz
from .reconstruct import Reconstruction, reconstruct

#: progress(event, info) is called on whichever process the event happens on.
Progress = Callable[[str, dict], None]

STAGES = ("cut", "compile", "scatter", "barrier", "execute", "gather", "reconstruct", "total")


class GHZRunError(MPIQError):
    """One or more processes failed; every line starts with ``[who:operation]``."""


@dataclass
class GHZResult:
    """Everything the root learns from one distributed GHZ run."""

    num_qubits: int
    num_blocks: int
    num_monitors: int  # monitors that ran at least one block
    shots: int
    serial: bool
    widths: list[int]
    assignment: list[list[int]]  # assignment[qrank] = block indices it ran, in order
    methods: list[str | None]  # simulation method per block
    devices: list[str]  # device name per block
    reconstruction: Reconstruction
    timings: dict[str, float]  # seconds per stage (see STAGES)
    barrier: dict[str, Any] | None  # the QQ barrier record (arrivals/releases per monitor)
    monitors: list[dict[str, Any]] = field(default_factory=list)  # per-qrank timings
    compile_cache: dict[str, int] = field(default_factory=dict)
    payload_bytes: int = 0

    @property
    def p_all_zero(self) -> float:
        return self.reconstruction.p_all_zero

    @property
    def p_all_one(self) -> float:
        return self.reconstruction.p_all_one

    @property
    def ghz_population(self) -> float:
        return self.reconstruction.ghz_population

    @property
    def counts(self) -> dict[str, int]:
        """Sparse global counts (bitstring -> count) of the reconstructed samples."""
        return self.reconstruction.counts

    @property
    def method(self) -> str:
        """The method if every block used the same one, else ``mixed(a, b)``."""
        used = sorted({m or "unknown" for m in self.methods})
        return used[0] if len(used) == 1 else f"mixed({', '.join(used)})"

    def to_dict(self, top: int | None = 64) -> dict[str, Any]:
        """JSON-ready summary; ``counts`` holds the ``top`` outcomes (all if None)."""
        rec = self.reconstruction.to_dict(top)
        return {
            "qubits": self.num_qubits,
            "nodes": len(self.assignment),
            "monitors_used": self.num_monitors,
            "blocks": self.num_blocks,
            "block_widths": self.widths,
            "shots": self.shots,
            "serial": self.serial,
            "method": self.method,
            "methods": self.methods,
            "devices": self.devices,
            "assignment": self.assignment,
            "p_all_zero": rec["p_all_zero"],
            "p_all_one": rec["p_all_one"],
            "ghz_population": rec["ghz_population"],
            "distinct_outcomes": rec["distinct_outcomes"],
            "counts": rec["counts"],
            "counts_truncated": rec["counts_truncated"],
            "block_stats": rec["block_stats"],
            "timings": dict(self.timings),
            "barrier": self.barrier,
            "monitors": self.monitors,
            "compile_cache": self.compile_cache,
            "payload_bytes": self.payload_bytes,
        }


def run_ghz(
    hc,
    num_qubits: int,
    num_blocks: int | None = None,
    *,
    shots: int = 1024,
    serial: bool = False,
    root: int = 0,
    cache=None,
    optimization_level: int = 1,
    seed_transpiler: int = 0,
    timeout: float | None = None,
    progress: Progress | None = None,
    nodes: int | None = None,
) -> GHZResult | None:
    """Run a distributed GHZ of ``num_qubits`` qubits cut into ``num_blocks`` blocks.

    Collective over ``hc``: every process calls it. Classical rank ``root`` cuts, compiles,
    scatters, gathers and reconstructs, and returns the :class:`GHZResult`; every other process
    returns None. ``nodes`` is how many monitors take blocks (qranks 0..nodes-1; default all);
    ``num_blocks`` defaults to ``nodes``. ``cache`` is a
    ``monitor_engine.payload.CompileCache`` (a fresh one per run when None). ``timeout`` bounds
    every blocking step (default: the communicator's). A failure anywhere raises
    :class:`GHZRunError` on the root; the monitors never hang on it.
    """
    report = progress or (lambda event, info: None)
    if hc.is_quantum:
        _monitor_side(hc, root, timeout, report)
        return None
    if hc.rank != root:
        hc.scatter(None, root=Rank(root), timeout=timeout)
        hc.gather(None, root=Rank(root), timeout=timeout)
        return None
    return _root_side(
        hc, num_qubits, num_blocks, shots, serial, root, cache, optimization_level,
        seed_transpiler, timeout, report, nodes,
    )


# ----------------------------------------------------------------------------- root
def _root_side(hc, n, m, shots, serial, root, cache, level, seed, timeout, report, nodes=None) -> GHZResult:
    from monitor_engine.payload import CompileCache, compile_for

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    Q = hc.quantum_size
    try:
        if Q < 1:
            raise GHZRunError("The hybrid communicator has no quantum process to run the blocks on.")
        used = Q if nodes is None else nodes
        if not 1 <= used <= Q:
            raise GHZRunError(f"nodes={nodes} must be between 1 and the {Q} monitor(s) of the communicator.")
        cut = cut_ghz(n, used if m is None else m)
        assignment = assign_blocks(cut.num_blocks, used, serial=serial) + [[] for _ in range(Q - used)]
        _check_widths(hc, cut, assignment)
        timings["cut"] = time.perf_counter() - t_start
        report("cut", {"qubits": n, "blocks": cut.num_blocks, "widths": sorted(set(cut.widths))})

        t0 = time.perf_counter()
        cache = CompileCache() if cache is None else cache
        hits0, misses0 = cache.hits, cache.misses
        items = []
        payload_bytes = 0
        compiled: dict[tuple, Any] = {}  # (ISA, block structure) -> payload, shared by equal devices
        restamped = 0
        for j, blocks in enumerate(assignment):
            device = hc.devices[j]
            payloads = []
            for b in blocks:
                block = cut.blocks[b]
                job_id = f"ghz{n}-b{b}"
                key = (_isa_key(device), block.width, block.has_h)
                first = compiled.get(key)
                if first is None:
                    p = compiled[key] = compile_for(
                        device, block.circuit, shots=shots, job_id=job_id, cache=cache,
                        optimization_level=level, seed_transpiler=seed,
                    )
                else:
                    p = _restamp(first, device, job_id)
                    restamped += first.device != device.key
                payload_bytes += p.nbytes
                payloads.append(p)
            items.append({"blocks": blocks, "payloads": payloads})
        timings["compile"] = time.perf_counter() - t0
        report("compile", {"blocks": cut.num_blocks, "compiled": cache.misses - misses0})
    except Exception as exc:
        # Tell the monitors to stand down, then fail here with the original error. Every process
        # still takes part in exactly one scatter and one gather, so later collectives line up.
        hc.scatter([{"abort": f"{type(exc).__name__}: {exc}"}] * Q, root=Rank(root), timeout=timeout)
        hc.gather(None, root=Rank(root), timeout=timeout)
        raise

    t0 = time.perf_counter()
    hc.scatter(items, root=Rank(root), timeout=timeout)
    t_scattered = time.perf_counter()
    timings["scatter"] = t_scattered - t0
    report("scatter", {"monitors": Q, "bytes": payload_bytes})

    replies = hc.gather(None, root=Rank(root), timeout=timeout)
    t_gathered = time.perf_counter()
    report("gather", {"monitors": Q})
    failures = _failures(replies)
    if failures:
        raise GHZRunError("\n".join(failures))

    # Stage split of the window scatter-end .. gather-end from the monitors' own clocks.
    active = [r for r in replies if r["blocks"]]
    crit = max(active, key=lambda r: r["barrier_wait"] + r["execute"])
    timings["barrier"] = max(r["barrier_wait"] for r in replies)
    timings["execute"] = max(r["execute"] for r in active)
    timings["gather"] = max(0.0, (t_gathered - t_scattered) - crit["barrier_wait"] - crit["execute"])

    results: list[Any] = [None] * cut.num_blocks
    info: list[dict[str, Any]] = [{} for _ in range(cut.num_blocks)]
    for r in replies:
        for b, res, secs in zip(r["blocks"], r["results"], r["block_seconds"]):
            results[b] = res
            info[b] = {
                "qrank": r["qrank"],
                "device": f"{res.device[0]}:{res.device[1]}" if res.device else None,
                "method": res.method,
                "seconds": secs,
            }
    t0 = time.perf_counter()
    recon = reconstruct([res.memory for res in results], cut.widths, block_info=info)
    timings["reconstruct"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    report("reconstruct", {"p_all_zero": recon.p_all_zero, "p_all_one": recon.p_all_one})

    barrier = next((r["barrier_record"] for r in replies if r.get("barrier_record")), None)
    monitors = [
        {k: r[k] for k in ("qrank", "device", "blocks", "barrier_wait", "execute", "block_seconds")}
        for r in replies
    ]
    return GHZResult(
        num_qubits=n,
        num_blocks=cut.num_blocks,
        num_monitors=len(active),
        shots=shots,
        serial=serial,
        widths=cut.widths,
        assignment=assignment,
        methods=[i.get("method") for i in info],
        devices=[i.get("device") for i in info],
        reconstruction=recon,
        timings={k: timings[k] for k in STAGES},
        barrier=barrier,
        monitors=monitors,
        compile_cache={
            "compiled": cache.misses - misses0,  # transpiler calls
            "reused": cut.num_blocks - (cache.misses - misses0),  # blocks served from a compilation
            "shared_across_devices": restamped,
            "hits": cache.hits - hits0,
            "misses": cache.misses - misses0,
        },
        payload_bytes=payload_bytes,
    )


def _isa_key(device) -> tuple:
    """What a compiled circuit depends on: width, basis and coupling (not the device's name)."""
    return (device.num_qubits, tuple(sorted(set(device.basis_gates))), device.coupling)


def _restamp(payload, device, job_id: str):
    """A payload compiled for an ISA-identical device, addressed to ``device``.

    The monitor engine's fingerprint covers the device key as well as its ISA, so its cache
    compiles once per device; devices with equal width, basis and coupling get the same ISA
    circuit, so the classical side compiles once and stamps the copy with ``device``'s key and
    fingerprint (the monitor still checks every operation against its own Target).
    """
    from dataclasses import replace

    from monitor_engine.target import target_fingerprint

    meta = {**payload.meta, "cache_hit": True, "compile_seconds": 0.0, "compiled_for": payload.device_name}
    return replace(payload, job_id=job_id, device=device.key, fingerprint=target_fingerprint(device), meta=meta)


def _check_widths(hc, cut: Cut, assignment: list[list[int]]) -> None:
    for j, blocks in enumerate(assignment):
        device = hc.devices[j]
        too_wide = [b for b in blocks if cut.blocks[b].width > device.num_qubits]
        if too_wide:
            b = too_wide[0]
            raise GHZRunError(
                f"Block {b} of the {cut.num_qubits}-qubit GHZ is {cut.blocks[b].width} qubits wide, "
                f"but device {device.name} (qrank {j}) has {device.num_qubits} qubits; use at least "
                f"{-(-cut.num_qubits // device.num_qubits)} blocks."
            )


def _failures(replies: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in replies:
        if r.get("error"):
            lines.append(f"[qrank {r['qrank']}:{r.get('stage', 'execute')}] {r['error']}")
        for b, res in zip(r.get("blocks", []), r.get("results", [])):
            if getattr(res, "error", None):
                lines.append(f"[qrank {r['qrank']}:execute] block {b}: {res.error}")
    return lines


# ----------------------------------------------------------------------------- monitors
_MONITORS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def _monitor_for(hc):
    """One MonitorProcess per hybrid communicator, reused across runs (its simulators stay warm)."""
    monitor = _MONITORS.get(hc)
    if monitor is None:
        from monitor_engine.process import MonitorProcess

        monitor = _MONITORS[hc] = MonitorProcess(hc)
    return monitor


def _monitor_side(hc, root: int, timeout: float | None, report: Progress) -> None:
    item = hc.scatter(None, root=Rank(root), timeout=timeout)
    t_received = time.perf_counter()
    if "abort" in item:
        hc.gather(None, root=Rank(root), timeout=timeout)
        return
    reply: dict[str, Any] = {
        "qrank": hc.qrank,
        "device": hc.device.name,
        "blocks": list(item["blocks"]),
        "results": [],
        "block_seconds": [],
        "barrier_wait": 0.0,
        "execute": 0.0,
        "barrier_record": None,
        "error": None,
    }
    stage = "barrier"
    try:
        record = hc.barrier(QQ, timeout=timeout)
        t_released = time.perf_counter()
        reply["barrier_wait"] = t_released - t_received
        if hc.qrank == 0:
            reply["barrier_record"] = record.to_dict()
        stage = "execute"
        monitor = _monitor_for(hc)
        total = len(item["payloads"])
        for k, (b, payload) in enumerate(zip(item["blocks"], item["payloads"])):
            t0 = time.perf_counter()
            result = monitor.execute(payload)
            secs = time.perf_counter() - t0
            reply["results"].append(result)
            reply["block_seconds"].append(secs)
            report("executed", {"qrank": hc.qrank, "block": b, "done": k + 1, "total": total, "seconds": secs})
        reply["execute"] = time.perf_counter() - t_released
    except Exception as exc:  # reported to the root, which raises GHZRunError
        reply["stage"] = stage
        reply["error"] = f"{type(exc).__name__}: {exc}"
        reply["traceback"] = traceback.format_exc()
    hc.gather(reply, root=Rank(root), timeout=timeout)
