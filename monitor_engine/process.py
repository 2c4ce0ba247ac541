"""The quantum MonitorProcess (paper section 3.2) and its classical-side client.

A :class:`MonitorProcess` runs on a quantum process of a hybrid communicator, bound to that
process's device. It executes device-ready payloads as received (checked, never recompiled),
either one by one (:meth:`MonitorProcess.execute`, e.g. between ``hc.scatter`` and
``hc.gather``; see :func:`spmd_run`) or in a request loop (:meth:`MonitorProcess.serve`) driven
by a :class:`MonitorClient` on a classical rank.

Message protocol (point-to-point on the hybrid communicator's private context):

* client -> monitor, tag :data:`MONITOR_TAG`: a :class:`MonitorRequest` with ``kind`` one of
  ``"execute"`` (``payload`` set), ``"barrier"`` (the monitor joins ``hc.barrier(QQ)``; send it
  to every monitor), ``"status"``, ``"shutdown"``;
* monitor -> ``request.reply_to``, tag :data:`REPLY_TAG`: a :class:`MonitorReply` with the same
  ``req_id``; ``value`` is an :class:`ExecutionResult`, a ``BarrierRecord``, a status dict, or
  None for shutdown. Shot memory over :data:`DETACH_BYTES` follows in a second message on the
  same tag as a raw numpy buffer (``reply.detached`` is True).

A request that cannot be served is answered with ``reply.error`` (or ``result.error``); the
monitor keeps serving.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
from qiskit.primitives.containers import BitArray

from mpiq_magic.kernel.addressing import ANY_SOURCE, QRank, Rank
from mpiq_magic.kernel.barrier import QQ
from mpiq_magic.kernel.errors import MPIQTimeoutError

from .backend import DeviceBackend, MEMORY_FRACTION, make_backend
from .errors import MonitorError, PayloadError
from .payload import Payload, load_circuit
from .target import device_target, target_fingerprint
from .validate import check_circuit, check_header

#: Tag of requests to monitors and of their replies (on the communicator's private p2p context).
MONITOR_TAG = 32001
REPLY_TAG = 32002
#: Shot memory larger than this travels as a raw buffer after the reply instead of pickled in it.
DETACH_BYTES = 1 << 20
#: How long one receive in the serve loop waits before checking the idle timeout again.
_SERVE_POLL = 30.0
#: Consecutive receive failures after which the serve loop gives up (the communicator is broken).
_MAX_BROKEN = 10

KINDS = ("execute", "barrier", "status", "shutdown")


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
class MonitorRequest:
    """A request to a monitor; ``sent_at`` is the client's ``time.time()`` at sending."""

    kind: str
    req_id: int
    reply_to: int
    payload: Payload | None = None
    sent_at: float = 0.0
    options: dict = field(default_factory=dict)


@dataclass
class MonitorReply:
    """A monitor's answer to the request ``req_id``."""

    req_id: int
    kind: str
    qrank: int
    value: Any = None
    error: str | None = None
    sent_at: float = 0.0
    detached: bool = False


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
            "requests": self.stats["requests"],
            "methods": dict(self.methods),
            **self.backend.describe(),
        }

    # ------------------------------------------------------------------ request loop
    def serve(self, timeout: float | None = None) -> dict[str, Any]:
        """Answer requests addressed to this monitor until a ``shutdown`` request.

        ``timeout``: stop after this many seconds without any request (None: wait forever).
        Returns the final :meth:`status` with ``"stopped"`` set to ``"shutdown"`` or ``"idle"``.
        """
        hc = self.hc
        last = time.monotonic()
        broken = 0
        while True:
            wait = _SERVE_POLL if timeout is None else min(_SERVE_POLL, timeout - (time.monotonic() - last))
            if wait <= 0:
                return {**self.status(), "stopped": "idle"}
            try:
                request = hc.recv(ANY_SOURCE, MONITOR_TAG, timeout=wait)
                broken = 0
            except MPIQTimeoutError:
                continue
            except Exception as exc:  # e.g. a message that does not unpickle here: drop it
                broken += 1
                print(
                    f"monitor_engine: qrank {self.qrank} dropped a message it could not receive: "
                    f"{type(exc).__name__}: {exc}",
                    file=sys.stderr,
                )
                if broken >= _MAX_BROKEN:
                    raise MonitorError(
                        f"Monitor {self.spec.name} (qrank {self.qrank}) stopped serving after "
                        f"{broken} receive failures in a row; the last was {type(exc).__name__}: {exc}"
                    ) from exc
                continue
            received = time.time()
            last = time.monotonic()
            self.stats["requests"] += 1
            if not isinstance(request, MonitorRequest):
                print(
                    f"monitor_engine: qrank {self.qrank} ignored a {type(request).__name__} on the "
                    f"monitor tag {MONITOR_TAG}; only MonitorRequest objects are served.",
                    file=sys.stderr,
                )
                continue
            reply = self._handle(request, received)
            self._reply(request, reply)
            if request.kind == "shutdown":
                return {**self.status(), "stopped": "shutdown"}

    def _handle(self, request: MonitorRequest, received: float) -> MonitorReply:
        reply = MonitorReply(request.req_id, request.kind, self.qrank)
        try:
            if request.kind == "execute":
                reply.value = self.execute(request.payload, sent_at=request.sent_at or None)
                if request.sent_at:
                    reply.value.timings["receive"] = max(0.0, received - request.sent_at)
            elif request.kind == "barrier":
                reply.value = self.hc.barrier(QQ, timeout=request.options.get("timeout"))
            elif request.kind == "status":
                reply.value = self.status()
            elif request.kind == "shutdown":
                reply.value = None
            else:
                reply.error = (
                    f"Monitor {self.spec.name} (qrank {self.qrank}) got a request of unknown kind "
                    f"{request.kind!r}; known kinds are {list(KINDS)}."
                )
        except Exception as exc:  # e.g. a barrier timeout: answer, keep serving
            reply.error = f"{type(exc).__name__}: {exc}"
        return reply

    def _reply(self, request: MonitorRequest, reply: MonitorReply) -> None:
        memory = None
        value = reply.value
        if isinstance(value, ExecutionResult) and value.memory.nbytes > DETACH_BYTES:
            memory, reply.detached = value.memory, True
            value.memory = None
        try:
            reply.sent_at = time.time()
            self.hc.send(reply, request.reply_to, tag=REPLY_TAG)
            if memory is not None:
                self.hc.send(np.ascontiguousarray(memory), request.reply_to, tag=REPLY_TAG)
        except Exception as exc:  # the client is gone or stuck: keep serving the others
            print(
                f"monitor_engine: qrank {self.qrank} could not answer request {request.req_id} "
                f"({request.kind}) to comm rank {request.reply_to}: {exc}",
                file=sys.stderr,
            )


# ---------------------------------------------------------------------- classical side


def _qrank_of_device(hc, device: Sequence) -> int:
    key = (device[0], int(device[1]))
    for j, spec in enumerate(hc.devices):
        if spec.key == key:
            return j
    known = ", ".join(spec.name for spec in hc.devices) or "none"
    raise PayloadError(
        f"No monitor of this communicator is bound to device {key[0]}:{key[1]}; bound devices: {known}."
    )


def _qrank_of(hc, target: Any) -> int:
    if isinstance(target, QRank):
        hc.resolve(target)
        return target.index
    if isinstance(target, Rank):
        raise PayloadError(f"{target} is a classical rank; payloads go to monitors (QRank or Device).")
    if isinstance(target, tuple) and len(target) == 2 and isinstance(target[0], str):
        return _qrank_of_device(hc, target)
    if isinstance(target, int) and not isinstance(target, bool):
        address = hc.address_of(target)
        if not isinstance(address, QRank):
            raise PayloadError(f"Comm rank {target} is {address}, not a monitor.")
        return address.index
    raise TypeError(
        f"A monitor is named by QRank(j), Device(host, device_id), a (host, device_id) tuple or a "
        f"comm rank, got {target!r}."
    )


class MonitorClient:
    """Classical-side handle on the serving monitors of a hybrid communicator.

    Replies are matched by request id, so several requests may be outstanding; every wait
    takes ``timeout`` (default: the communicator's) and raises ``MPIQTimeoutError`` naming the
    monitors that did not answer.
    """

    def __init__(self, hc, timeout: float | None = None):
        if not hc.is_classical:
            raise MonitorError(
                f"A MonitorClient runs on a classical rank, but this process is qrank {hc.qrank}."
            )
        self.hc = hc
        self.timeout = hc.timeout if timeout is None else float(timeout)
        self._next_id = 0
        self._pending: dict[int, tuple[int, str]] = {}
        self._ready: dict[int, MonitorReply] = {}
        self._sends: list = []

    # ------------------------------------------------------------------ plumbing
    def _request(self, qrank: int, kind: str, payload: Payload | None = None, **options: Any) -> int:
        self._next_id += 1
        req_id = self._next_id
        request = MonitorRequest(kind, req_id, self.hc.comm_rank, payload, time.time(), options)
        self._sends.append(self.hc.isend(request, QRank(qrank), tag=MONITOR_TAG))
        self._pending[req_id] = (qrank, kind)
        self._sends = [s for s in self._sends if not s.test()[0]]
        return req_id

    def _receive_one(self, deadline_end: float, waiting_for: Iterable[int], limit: float) -> MonitorReply | None:
        remaining = deadline_end - time.monotonic()
        try:
            if remaining <= 0:
                raise MPIQTimeoutError("expired")
            reply = self.hc.recv(ANY_SOURCE, REPLY_TAG, timeout=remaining)
        except MPIQTimeoutError:
            missing = sorted({self._pending[r][0] for r in waiting_for if r in self._pending})
            names = [f"qrank {j} ({self.hc.devices[j].name})" for j in missing]
            raise MPIQTimeoutError(
                f"No reply from {', '.join(names) or 'any monitor'} within {limit:g} s; is "
                "every monitor serving (MonitorProcess.serve) and not stuck?",
                names,
            ) from None
        received = time.time()
        if not isinstance(reply, MonitorReply):
            print(
                f"monitor_engine: rank {self.hc.rank} dropped a {type(reply).__name__} received on "
                f"the reply tag {REPLY_TAG}; only MonitorReply objects are expected there.",
                file=sys.stderr,
            )
            return None
        if reply.detached:
            reply.value.memory = self.hc.recv(QRank(reply.qrank), REPLY_TAG, timeout=max(remaining, 1.0))
        if isinstance(reply.value, ExecutionResult) and reply.sent_at:
            reply.value.timings["reply"] = max(0.0, received - reply.sent_at)
        self._pending.pop(reply.req_id, None)
        self._ready[reply.req_id] = reply
        return reply

    def _wait(self, req_ids: Sequence[int], timeout: float | None) -> list[MonitorReply]:
        limit = self.timeout if timeout is None else timeout
        end = time.monotonic() + limit
        wanted = set(req_ids)
        while not wanted <= self._ready.keys():
            self._receive_one(end, wanted - self._ready.keys(), limit)
        return [self._ready.pop(r) for r in req_ids]

    def _broadcast(self, kind: str, wait: float | None, **options: Any) -> list[MonitorReply]:
        ids = [self._request(j, kind, **options) for j in range(self.hc.quantum_size)]
        return self._wait(ids, wait)

    # ------------------------------------------------------------------ public API
    def submit(self, qrank_or_device: Any, payload: Payload | None = None) -> int:
        """Send ``payload`` to a monitor (QRank, Device, ``(host, id)`` or comm rank); returns a request id.

        ``submit(payload)`` sends it to the device it was compiled for. A payload sent to another
        monitor is refused there with an error naming both devices.
        """
        if payload is None and isinstance(qrank_or_device, Payload):
            payload, qrank_or_device = qrank_or_device, qrank_or_device.device
        return self._request(_qrank_of(self.hc, qrank_or_device), "execute", payload)

    def result(self, req_id: int | None = None, timeout: float | None = None) -> ExecutionResult:
        """The result of request ``req_id`` (default: the oldest outstanding or already arrived one)."""
        if req_id is None:
            candidates = sorted(set(self._ready) | set(self._pending))
            if not candidates:
                raise MonitorError("There is no outstanding request to wait for.")
            req_id = candidates[0]
        (reply,) = self._wait([req_id], timeout)
        if reply.error is not None:
            raise MonitorError(f"qrank {reply.qrank} could not serve request {req_id}: {reply.error}")
        return reply.value

    def run_batch(
        self, payloads: Sequence[Payload], timeout: float | None = None, window: int = 2
    ) -> list[ExecutionResult]:
        """Run every payload on the monitor of its device; results in payload order.

        Payloads for the same device run in turn; at most ``window`` are in flight per monitor
        (so the next one is already there when the current one finishes). ``timeout`` bounds
        the whole batch.
        """
        queues: dict[int, deque[int]] = defaultdict(deque)
        for index, payload in enumerate(payloads):
            queues[_qrank_of_device(self.hc, payload.device)].append(index)
        limit = self.timeout if timeout is None else timeout
        end = time.monotonic() + limit
        results: list[ExecutionResult | None] = [None] * len(payloads)
        owner: dict[int, int] = {}

        def feed(qrank: int) -> None:
            if queues[qrank]:
                index = queues[qrank].popleft()
                owner[self._request(qrank, "execute", payloads[index])] = index

        for qrank in list(queues):
            for _ in range(max(1, window)):
                feed(qrank)
        while owner:
            self._receive_one(end, owner, limit)
            for req_id in [r for r in owner if r in self._ready]:
                index = owner.pop(req_id)
                done = self._ready.pop(req_id)
                results[index] = done.value if done.error is None else _error_result(
                    payloads[index], self.hc.devices[done.qrank], done.qrank, done.error, {}
                )
                feed(done.qrank)
        return results  # type: ignore[return-value]

    def barrier_all(self, timeout: float | None = None) -> list[Any]:
        """Make every monitor take part in one QQ barrier; their ``BarrierRecord`` by qrank."""
        replies = self._broadcast("barrier", timeout, timeout=timeout or self.timeout)
        return self._values(replies)

    def status(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Every monitor's status dict, by qrank."""
        return self._values(self._broadcast("status", timeout))

    def shutdown(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Stop every serving monitor (their serve loops return); waits for the acknowledgements."""
        replies = self._broadcast("shutdown", timeout)
        self._sends = [s for s in self._sends if not s.test()[0]]
        return [{"qrank": r.qrank, "error": r.error} for r in replies]

    @staticmethod
    def _values(replies: list[MonitorReply]) -> list[Any]:
        errors = [f"[qrank {r.qrank}:{r.kind}] {r.error}" for r in replies if r.error]
        if errors:
            raise MonitorError("\n".join(errors))
        return [r.value for r in replies]


# ---------------------------------------------------------------------- SPMD style


def spmd_run(
    hc,
    payloads: Sequence[Payload] | None = None,
    *,
    root: int = 0,
    monitor: MonitorProcess | None = None,
    timeout: float | None = None,
) -> list[ExecutionResult] | None:
    """Collective: classical rank ``root`` scatters ``payloads`` to their devices' monitors,
    each monitor executes its share in order, results are gathered back.

    Every process of ``hc`` calls it; ``root`` returns the results in payload order, every other
    process returns None. A payload for a device no monitor is bound to raises on the root
    (after telling the monitors to stand down).
    """
    if hc.is_quantum:
        item = hc.scatter(None, root=Rank(root), timeout=timeout)
        if item.get("abort"):
            hc.gather({"results": []}, root=Rank(root), timeout=timeout)
            return None
        monitor = monitor or MonitorProcess(hc)
        results = [monitor.execute(p, sent_at=item["sent_at"]) for p in item["payloads"]]
        hc.gather({"results": results, "sent_at": time.time()}, root=Rank(root), timeout=timeout)
        return None
    if hc.rank != root:
        hc.scatter(None, root=Rank(root), timeout=timeout)
        hc.gather(None, root=Rank(root), timeout=timeout)
        return None
    shares: list[list[int]] = [[] for _ in range(hc.quantum_size)]
    try:
        for index, payload in enumerate(payloads or []):
            shares[_qrank_of_device(hc, payload.device)].append(index)
    except Exception:
        hc.scatter([{"abort": True}] * hc.quantum_size, root=Rank(root), timeout=timeout)
        hc.gather(None, root=Rank(root), timeout=timeout)
        raise
    now = time.time()
    items = [{"payloads": [payloads[i] for i in share], "sent_at": now} for share in shares]
    hc.scatter(items, root=Rank(root), timeout=timeout)
    gathered = hc.gather(None, root=Rank(root), timeout=timeout)
    received = time.time()
    results: list[ExecutionResult | None] = [None] * len(payloads or [])
    for share, reply in zip(shares, gathered):
        for index, result in zip(share, reply["results"]):
            result.timings["reply"] = max(0.0, received - reply["sent_at"])
            results[index] = result
    return results  # type: ignore[return-value]
