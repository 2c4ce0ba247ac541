"""The distributed GHZ pipeline on an initialised hybrid communicator (paper section 5.2).

::

    from mpiq_magic import kernel as mpiq
    from mpiq_magic.ghz.pipeline import run_ghz

    hc = mpiq.init()                       # 1 classical rank + Q monitors
    result = run_ghz(hc, 120, num_blocks=6, shots=1024)   # collective; the root gets the result
    if result is not None:
        print(result.reconstruction.summary(), result.timings)

Steps, timed separately: cut -> compile (each block for its monitor's device, through a compile
cache) -> scatter (payloads straight to the monitors on the one dispatch path,
``monitor_engine.dispatch``) -> barrier (QQ, the monitors' pre-execution hook, so they start
together) -> execute (each monitor runs its blocks in turn; results stream back) -> gather ->
reconstruct (classical feed-forward). ``serial=True`` runs every block on qrank 0, one after
another: the paper's T_serial.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..kernel import QQ
from ..kernel.errors import ProcessFailure, ProcessFailures
from .cut import Cut, assign_blocks, cut_ghz
from .reconstruct import Reconstruction, reconstruct
from .stages import STAGES

#: progress(event, info) is called on whichever process the event happens on.
Progress = Callable[[str, dict], None]



class GHZRunError(ProcessFailures):
    """The run was refused (the message says why) or failed on monitors: one
    ``[qrank j:stage] message`` line per failure in ``failures``."""


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

    Collective over ``hc``: every process calls it. Classical rank ``root`` cuts, compiles and
    dispatches the blocks (``monitor_engine.dispatch``), collects and reconstructs, and returns
    the :class:`GHZResult`; every other process returns None. The monitors serve the job with
    the QQ barrier as their pre-execution hook, so they start on one trigger instant. ``nodes``
    is how many monitors take blocks (qranks 0..nodes-1; default all); ``num_blocks`` defaults to
    ``nodes``. ``cache`` is a ``monitor_engine.payload.CompileCache`` (a fresh one per run when
    None). ``timeout`` bounds the run (default: the communicator's).

    Raises:
        GHZRunError: (on the root) the run failed anywhere; the monitors never hang on it.
    """
    from monitor_engine.protocol import collective_job

    job = collective_job(hc, "ghz")
    limit = hc.timeout if timeout is None else float(timeout)
    report = progress or (lambda event, info: None)
    if hc.is_quantum:
        from monitor_engine.serve import serve

        serve(hc, job=job, hook=lambda: hc.barrier(QQ, timeout=limit), deadline=time.time() + limit)
        return None
    if hc.rank != root:
        return None
    return _root_side(
        hc, job, num_qubits, num_blocks, shots, serial, cache, optimization_level,
        seed_transpiler, limit, report, nodes,
    )


def _root_side(hc, job, n, m, shots, serial, cache, level, seed, timeout, report, nodes) -> GHZResult:
    from monitor_engine.dispatch import Dispatcher, Share
    from monitor_engine.payload import CompileCache, compile_for

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    Q = hc.quantum_size
    dispatcher = Dispatcher(hc, namespace="ghz")
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
        shares: list[Share] = [None] * cut.num_blocks  # type: ignore[list-item]
        compiled: dict[tuple, Any] = {}  # (ISA, block structure) -> payload, shared by equal devices
        restamped = 0
        for j, blocks in enumerate(assignment):
            device = hc.devices[j]
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
                shares[b] = Share(payload=p, qrank=j)
        timings["compile"] = time.perf_counter() - t0
        report("compile", {"blocks": cut.num_blocks, "compiled": cache.misses - misses0})
    except Exception as exc:  # the monitors stand down at once, then the error is raised here
        dispatcher.abort(job, range(Q), f"{type(exc).__name__}: {exc}")
        raise

    def on_result(index: int, qrank: int, result: Any, done: int, total: int) -> None:
        report("executed", {
            "qrank": qrank, "block": index, "done": done, "total": total, "seconds": result.timings.get("execute"),
        })

    t0 = time.perf_counter()
    job = dispatcher.submit(shares, job=job, participants=range(Q), deadline=time.time() + timeout,
                            on_result=on_result, failover=False)
    timings["scatter"] = time.perf_counter() - t0
    report("scatter", {"monitors": Q, "bytes": sum(s.payload.nbytes for s in shares)})
    outcome = dispatcher.wait(job)
    report("gather", {"monitors": Q})
    failures = _failures(hc, outcome)
    if failures:
        raise GHZRunError("", failures, partial=outcome)

    # Stage split of the collect window from the monitors' own clocks.
    done = outcome.monitors
    active = [q for q in range(Q) if assignment[q]]
    crit = max(active, key=lambda q: done[q].hook_seconds + done[q].execute_seconds)
    timings["barrier"] = max(d.hook_seconds for d in done.values())
    timings["execute"] = max(done[q].execute_seconds for q in active)
    timings["gather"] = max(
        0.0, outcome.timings.collect - done[crit].hook_seconds - done[crit].execute_seconds
    )

    info: list[dict[str, Any]] = [{} for _ in range(cut.num_blocks)]
    block_seconds: dict[int, list[float]] = {q: [] for q in range(Q)}
    for b, res in enumerate(outcome.results):
        q = outcome.placement[b]
        info[b] = {
            "qrank": q,
            "device": f"{res.device[0]}:{res.device[1]}" if res.device else None,
            "method": res.method,
            "seconds": res.timings.get("execute", 0.0),
        }
    for q in range(Q):
        block_seconds[q] = [info[b]["seconds"] for b in assignment[q]]
    t0 = time.perf_counter()
    recon = reconstruct([res.memory for res in outcome.results], cut.widths, block_info=info)
    timings["reconstruct"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    report("reconstruct", {"p_all_zero": recon.p_all_zero, "p_all_one": recon.p_all_one})

    barrier = done[0].hook_value.to_dict() if 0 in done and done[0].hook_value is not None else None
    monitors = [
        {
            "qrank": q, "device": hc.devices[q].name, "blocks": assignment[q],
            "barrier_wait": done[q].hook_seconds, "execute": done[q].execute_seconds,
            "block_seconds": block_seconds[q],
        }
        for q in range(Q)
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
        payload_bytes=outcome.payload_bytes,
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


def _failures(hc, outcome) -> list[ProcessFailure]:
    """One failure per monitor or block that failed or did not answer."""
    return outcome.failures(hc.quantum_size, lambda b: f"block {b}")
