"""The quantum MonitorProcess (paper section 3.2): executes device-ready payloads.

A :class:`MonitorProcess` runs on a quantum process of a hybrid communicator, bound to that
process's device. It executes payloads as received (checked, never recompiled). Work reaches it
through the one dispatch path: :func:`monitor_engine.serve.serve` on this side,
:func:`monitor_engine.dispatch.dispatch` (or ``MonitorClient``/``spmd_run``, thin callers of it) on
the classical side.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from qiskit.primitives.containers import BitArray

from .backend import DeviceBackend, MEMORY_FRACTION, make_backend
from .errors import MonitorError, PayloadError
from .payload import Payload, load_circuit
from .target import device_target, target_fingerprint
from .validate import check_circuit, check_header

@dataclass
class ExecutionResult:
    """The outcome of one payload on one monitor.

    ``counts`` maps Qiskit bitstrings (clbit 0 rightmost) to counts; ``memory`` holds every shot
    as packed bits in :class:`~qiskit.primitives.containers.BitArray` layout (see
    :meth:`bitarray`). ``timings`` are seconds: ``receive`` (client send to monitor receipt,
    wall clock), ``load`` (QPY load + checks), ``execute`` (backend run), ``reply`` (monitor send
    to client receipt; filled in by the client). ``error`` is set, and counts empty, when the
    payload was refused or failed.
    """

    counts: dict[str, int]
    memory: np.ndarray
    num_bits: int
    shots: int
    qrank: int | None
    device: tuple[str, int] | None
    method: str | None
    timings: dict[str, float]
    job_id: str
    error: str | None = None
    seed: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def bitarray(self) -> BitArray:
        """The shots as a Qiskit ``BitArray`` (no copy)."""
        return BitArray(self.memory, self.num_bits)

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary without the shot memory."""
        return {
            "job_id": self.job_id,
            "qrank": self.qrank,
            "device": list(self.device) if self.device else None,
            "method": self.method,
            "shots": self.shots,
            "num_bits": self.num_bits,
            "counts": self.counts,
            "timings": self.timings,
            "seed": self.seed,
            "error": self.error,
        }


@dataclass
class SweepResult:
    """The outcome of one :class:`~monitor_engine.protocol.Sweep`: one row of shots per
    parameter-value row.

    ``memory`` is ``uint8`` ``(rows, shots, ceil(num_bits / 8))`` in BitArray layout;
    ``cache_hit`` says the payload was already cached here (only the values travelled);
    ``evicted`` names payload ids this sweep pushed out of the cache; ``missing_payload`` is set
    when the sweep named a payload this monitor does not hold (nothing ran; the dispatcher must
    send it again). ``timings`` as for :class:`ExecutionResult` plus ``bind`` (set up binding).
    """

    memory: np.ndarray
    num_bits: int
    shots: int
    rows: int
    qrank: int | None
    device: tuple[str, int] | None
    method: str | None
    timings: dict[str, float]
    job_id: str
    payload_id: str
    error: str | None = None
    seed: int | None = None
    cache_hit: bool = False
    evicted: tuple = ()
    missing_payload: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def counts(self) -> dict[str, int]:
        """Counts over every row (for progress views and summaries)."""
        if self.memory.size == 0:
            return {}
        return BitArray(self.memory.reshape(-1, self.memory.shape[-1]), self.num_bits).get_counts()


class _Stored(NamedTuple):
    payload: Payload
    circuit: Any  # the loaded, checked ISA circuit (unbound)
    parameters: dict  # name -> Parameter of the ISA circuit


class PayloadStore:
    """Parameterized payloads a monitor holds, per dispatcher (``reply_to``), least recently used
    evicted first. Each dispatcher mirrors its own part, so it knows when to send a payload again."""

    def __init__(self):
        self._parts: dict[int, OrderedDict[str, _Stored]] = {}
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, owner: int, payload_id: str) -> _Stored | None:
        part = self._parts.get(owner)
        entry = None if part is None else part.get(payload_id)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        part.move_to_end(payload_id)
        return entry

    def put(self, owner: int, payload_id: str, entry: _Stored, slots: int) -> tuple[str, ...]:
        part = self._parts.setdefault(owner, OrderedDict())
        part[payload_id] = entry
        part.move_to_end(payload_id)
        evicted = []
        while len(part) > max(1, slots):
            evicted.append(part.popitem(last=False)[0])
        self.evictions += len(evicted)
        return tuple(evicted)

    def stats(self, owner: int | None = None) -> dict[str, Any]:
        entries = sum(len(p) for p in self._parts.values()) if owner is None else len(self._parts.get(owner, ()))
        return {"entries": entries, "hits": self.hits, "misses": self.misses, "evictions": self.evictions}


def derive_seed(device_seed: int | None, job_id: str) -> int:
    """The simulator seed of a job: stable in (device seed, job id), random without a device seed."""
    if device_seed is None:
        return secrets.randbits(31)
    digest = hashlib.blake2b(f"{device_seed}/{job_id}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") >> 1


def _error_result(payload: Any, spec, qrank, message: str, timings: dict[str, float]) -> ExecutionResult:
    num_bits = getattr(payload, "num_clbits", 0)
    num_bits = num_bits if isinstance(num_bits, int) and num_bits >= 0 else 0
    return ExecutionResult(
        counts={},
        memory=np.zeros((0, (num_bits + 7) // 8), dtype=np.uint8),
        num_bits=num_bits,
        shots=0,
        qrank=qrank,
        device=spec.key,
        method=None,
        timings=timings,
        job_id=str(getattr(payload, "job_id", "?")),
        error=message,
    )


class MonitorProcess:
    """Executes payloads on the device bound to this quantum process; never compiles.

    ``backend`` defaults to :func:`~monitor_engine.backend.make_backend` for ``hc.device``
    (qiskit-aer; the statevector memory budget is shared among the monitors on this host).
    Construction prepares the backend (imports, noise model), so the first payload does not
    pay for it.
    """

    def __init__(self, hc, backend: DeviceBackend | None = None):
        if not hc.is_quantum:
            raise MonitorError(
                f"A MonitorProcess runs on a quantum process, but this process is classical rank {hc.rank}."
            )
        self.hc = hc
        self.spec = hc.device
        self.qrank: int = hc.qrank
        self.fingerprint = target_fingerprint(self.spec)
        self.target = device_target(self.spec)
        if backend is None:
            options = {}
            if self.spec.backend == "aer":
                local = sum(1 for d in hc.devices if d.host == self.spec.host) or 1
                options["memory_fraction"] = MEMORY_FRACTION / local
            backend = make_backend(self.spec, **options)
        self.backend = backend
        self.backend.prepare()
        self.started = time.time()
        self.stats: Counter[str] = Counter()
        self.methods: Counter[str] = Counter()
        self.store = PayloadStore()

    def __repr__(self) -> str:
        return f"<MonitorProcess qrank={self.qrank} device={self.spec.name} backend={self.backend.name}>"

    # ------------------------------------------------------------------ execution
    def execute(self, payload: Payload, *, sent_at: float | None = None) -> ExecutionResult:
        """Check and run one payload. Never raises for a bad payload: ``result.error`` says why.

        ``sent_at`` (the sender's ``time.time()``) fills ``timings["receive"]``.
        """
        timings = {
            "receive": max(0.0, time.time() - sent_at) if sent_at else 0.0,
            "load": 0.0,
            "execute": 0.0,
            "reply": 0.0,
        }
        t0 = time.perf_counter()
        try:
            check_header(payload, self.spec, self.fingerprint, self.qrank)
            circuit = load_circuit(payload.qpy)
            check_circuit(payload, circuit, self.spec, self.target, self.qrank)
        except Exception as exc:  # refused: answer with the reason, keep serving
            timings["load"] = time.perf_counter() - t0
            self.stats["refused"] += 1
            message = str(exc) if isinstance(exc, PayloadError) else (
                f"Payload {getattr(payload, 'job_id', '?')} could not be loaded on monitor "
                f"{self.spec.name} (qrank {self.qrank}): {type(exc).__name__}: {exc}"
            )
            return _error_result(payload, self.spec, self.qrank, message, timings)
        t1 = time.perf_counter()
        timings["load"] = t1 - t0
        seed = None
        try:
            seed = payload.meta.get("seed") if isinstance(payload.meta, dict) else None
            seed = derive_seed(self.spec.seed, payload.job_id) if seed is None else int(seed)
            counts, memory, method = self.backend.run(circuit, payload.shots, seed)
        except Exception as exc:
            timings["execute"] = time.perf_counter() - t1
            self.stats["failed"] += 1
            message = (
                f"Payload {payload.job_id} failed on device {self.spec.name} (qrank {self.qrank}): "
                f"{type(exc).__name__}: {exc}"
            )
            return _error_result(payload, self.spec, self.qrank, message, timings)
        timings["execute"] = time.perf_counter() - t1
        self.stats["executed"] += 1
        self.methods[method] += 1
        return ExecutionResult(
            counts=counts,
            memory=memory,
            num_bits=circuit.num_clbits,
            shots=payload.shots,
            qrank=self.qrank,
            device=self.spec.key,
            method=method,
            timings=timings,
            job_id=payload.job_id,
            seed=seed,
        )

    def execute_sweep(self, sweep, owner: int, *, sent_at: float | None = None) -> SweepResult:
        """Run a :class:`~monitor_engine.protocol.Sweep` from dispatcher ``owner``: cache its payload
        (checked once, when it arrives), bind each row of values, run. Never raises: a refused or
        failed sweep has ``error`` set; one naming a payload not held here has ``missing_payload``.
        """
        timings = {"receive": max(0.0, time.time() - sent_at) if sent_at else 0.0,
                   "load": 0.0, "bind": 0.0, "execute": 0.0, "reply": 0.0}
        t0 = time.perf_counter()
        evicted: tuple = ()
        hit = sweep.payload is None
        try:
            if sweep.payload is not None:
                payload = sweep.payload
                check_header(payload, self.spec, self.fingerprint, self.qrank)
                circuit = load_circuit(payload.qpy)
                check_circuit(payload, circuit, self.spec, self.target, self.qrank, allow_parameters=True)
                entry = _Stored(payload, circuit, {p.name: p for p in circuit.parameters})
                evicted = self.store.put(owner, sweep.payload_id, entry, sweep.slots)
            else:
                entry = self.store.get(owner, sweep.payload_id)
                if entry is None:
                    return self._sweep_error(
                        sweep, timings,
                        f"Monitor {self.spec.name} (qrank {self.qrank}) does not hold payload "
                        f"{sweep.payload_id} (evicted, or its first batch never arrived); it must be sent again.",
                        missing=True,
                    )
            values = np.asarray(sweep.values, dtype=np.float64)
            rows = values.shape[0] if values.ndim == 2 else 0
            if values.ndim != 2 or values.shape[1] != len(sweep.parameters):
                raise PayloadError(
                    f"Sweep {sweep.job_id} gives values of shape {values.shape} for parameters "
                    f"{list(sweep.parameters)}; expected (rows, {len(sweep.parameters)})."
                )
            missing = sorted(set(entry.parameters) - set(sweep.parameters))
            if missing:
                raise PayloadError(f"Sweep {sweep.job_id} gives no values for parameters {missing}.")
            if not isinstance(sweep.shots, int) or not 1 <= sweep.shots <= 10_000_000:
                raise PayloadError(f"Sweep {sweep.job_id} asks for {sweep.shots!r} shots; runs take 1 to 10000000.")
        except Exception as exc:
            timings["load"] = time.perf_counter() - t0
            self.stats["refused"] += 1
            message = str(exc) if isinstance(exc, PayloadError) else (
                f"Sweep {sweep.job_id} could not be loaded on monitor {self.spec.name} (qrank "
                f"{self.qrank}): {type(exc).__name__}: {exc}"
            )
            return self._sweep_error(sweep, timings, message, evicted=evicted)
        t1 = time.perf_counter()
        timings["load"] = t1 - t0
        column = {name: i for i, name in enumerate(sweep.parameters)}
        binds = {param: values[:, column[name]] for name, param in entry.parameters.items()}
        seed = derive_seed(self.spec.seed, sweep.job_id) if sweep.seed is None else int(sweep.seed)
        t2 = time.perf_counter()
        timings["bind"] = t2 - t1
        try:
            memory, method = self.backend.run_sweep(entry.circuit, binds, rows, sweep.shots, seed)
        except Exception as exc:
            timings["execute"] = time.perf_counter() - t2
            self.stats["failed"] += 1
            return self._sweep_error(
                sweep, timings,
                f"Sweep {sweep.job_id} failed on device {self.spec.name} (qrank {self.qrank}): "
                f"{type(exc).__name__}: {exc}",
                evicted=evicted,
            )
        timings["execute"] = time.perf_counter() - t2
        self.stats["executed"] += rows
        self.methods[method] += rows
        return SweepResult(
            memory=memory, num_bits=entry.circuit.num_clbits, shots=sweep.shots, rows=rows,
            qrank=self.qrank, device=self.spec.key, method=method, timings=timings,
            job_id=sweep.job_id, payload_id=sweep.payload_id, seed=seed, cache_hit=hit, evicted=evicted,
        )

    def _sweep_error(self, sweep, timings, message, *, missing=False, evicted=()) -> SweepResult:
        num_bits = getattr(sweep.payload, "num_clbits", 0) or 0
        return SweepResult(
            memory=np.zeros((0, 0, (num_bits + 7) // 8), dtype=np.uint8), num_bits=num_bits, shots=0,
            rows=0, qrank=self.qrank, device=self.spec.key, method=None, timings=timings,
            job_id=str(getattr(sweep, "job_id", "?")), payload_id=str(getattr(sweep, "payload_id", "?")),
            error=message, evicted=evicted, missing_payload=missing,
        )

    def status(self) -> dict[str, Any]:
        """What this monitor is and has done (JSON-able)."""
        return {
            "qrank": self.qrank,
            "device": self.spec.name,
            "host": self.spec.host,
            "device_id": self.spec.device_id,
            "num_qubits": self.spec.num_qubits,
            "fingerprint": self.fingerprint,
            "pid": os.getpid(),
            "uptime": time.time() - self.started,
            "executed": self.stats["executed"],
            "refused": self.stats["refused"],
            "failed": self.stats["failed"],
            "methods": dict(self.methods),
            "payload_cache": self.store.stats(),
            **self.backend.describe(),
        }

    # ------------------------------------------------------------------ request loop
    def serve(self, timeout: float | None = None) -> dict[str, Any]:
        """Serve dispatched work until a ``shutdown`` request (see :func:`monitor_engine.serve.serve`).

        ``timeout``: stop after this many seconds without any request (None: wait forever).
        Returns the final :meth:`status` with ``"stopped"`` set to ``"shutdown"`` or ``"idle"``.
        """
        from .serve import serve

        report = serve(self.hc, monitor=self, idle_timeout=timeout)
        return {**self.status(), "stopped": report.stopped}
