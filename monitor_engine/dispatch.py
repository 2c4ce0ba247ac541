"""The classical side of the one dispatch path: shares out, results back, one typed result.

Every workload that sends work to monitors — ``%%mpiq scatter``/``bcast``, the GHZ pipeline,
``spmd_run``, ``MonitorClient`` — hands a list of :class:`Share` to :func:`dispatch` (or to a
:class:`Dispatcher` for several jobs in flight). Each share is placed by one policy
(:mod:`monitor_engine.placement`), compiled for its monitor's device on this rank (paper §3.2),
sent over the ``"dispatch"`` layer context, executed by the monitor's :func:`~monitor_engine.serve.serve`
loop, and its result streams back as soon as it has run. One deadline bounds the job; a monitor
found dead has its unfinished stateless shares re-placed on survivors that fit (``failover``);
the :class:`DispatchResult` keeps every result that arrived and names what is missing.

A share with ``values`` is a parameter sweep: its circuit is compiled once per (structure, device
target) with its parameters unbound, the monitor caches the payload (bounded, see
:data:`~monitor_engine.protocol.PAYLOAD_SLOTS`), and later shares send only the payload id and a
numpy array of parameter values (:class:`~monitor_engine.protocol.Sweep`). The dispatcher mirrors
each monitor's cache to know when the payload must travel again; evictions are reported.
"""

from __future__ import annotations

import itertools
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from mpiq_magic.kernel.addressing import QRank
from mpiq_magic.kernel.errors import MPIQTimeoutError

from . import protocol as P
from .errors import MonitorError
from .placement import Placement, place

#: How long one receive waits before liveness and the deadline are checked again.
_POLL = 0.1

#: on_result(index, qrank, result, done, total) is called on the dispatching rank per result;
#: ``done`` of ``total`` shares of that monitor have answered.
OnResult = Callable[[int, int, Any, int, int], None]
#: alive(qrank) -> False when the monitor's process is known dead.
Alive = Callable[[int], bool]


@dataclass
class Share:
    """One unit of work: a circuit to compile for whichever monitor it is placed on, or a
    payload already compiled for one device. ``qrank`` or ``device`` pins it; otherwise it goes
    to the least-loaded live monitor whose device fits."""

    circuit: Any = None  # qiskit QuantumCircuit
    payload: Any = None  # monitor_engine.payload.Payload
    qrank: int | None = None
    device: tuple[str, int] | None = None
    shots: int = 1024
    job_id: str | None = None
    #: a sweep: float array (rows, len(parameters)); the circuit keeps its parameters unbound
    values: Any = None
    #: parameter names of the columns of ``values`` (default: the circuit's, in its order)
    parameters: tuple[str, ...] | None = None
    #: seed of row 0 of a sweep (row r: seed + r); None: derived on the monitor
    seed: int | None = None

    @property
    def pinned(self) -> bool:
        return self.qrank is not None or self.device is not None or self.payload is not None


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0


@dataclass
class DispatchTimings:
    """Seconds: ``compile`` (on this rank), ``send`` (posting), ``collect`` (last send -> last
    answer), ``total``."""

    compile: float = 0.0
    send: float = 0.0
    collect: float = 0.0
    total: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {"compile": self.compile, "send": self.send, "collect": self.collect, "total": self.total}


@dataclass
class DispatchResult:
    """The outcome of one job, by share index.

    ``results[i]`` is share *i*'s ExecutionResult (None if it never came); ``placement[i]`` the
    qrank that ran it (or was last sent it); ``missing`` maps share -> qrank for shares with no
    answer; ``errors`` share -> message (refused, failed, or not compiled); ``dead`` the qranks
    found dead; ``failed_over`` share -> (dead qrank, new qrank); ``monitors`` qrank ->
    :class:`~monitor_engine.protocol.MonitorDone` of every monitor that ended the job.
    """

    job: P.JobId
    results: list[Any]
    placement: list[int | None]
    missing: dict[int, int] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    dead: list[int] = field(default_factory=list)
    failed_over: dict[int, tuple[int, int]] = field(default_factory=dict)
    monitors: dict[int, P.MonitorDone] = field(default_factory=dict)
    payload_bytes: int = 0
    compile_cache: CacheStats = field(default_factory=CacheStats)
    timings: DispatchTimings = field(default_factory=DispatchTimings)
    #: sweeps: parameterized payloads sent in full (qrank -> count), bytes of parameter values
    #: sent, and payload ids evicted from each monitor's cache by this job
    payloads_sent: dict[int, int] = field(default_factory=dict)
    values_bytes: int = 0
    evicted: dict[int, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.errors

    def failures(self, quantum_size: int, share: Callable[[int], str] = lambda i: f"share {i}") -> list:
        """One ``ProcessFailure`` (``[qrank j:stage] message``) per monitor that failed, share that
        failed or got no answer, and monitor that did not end the job; ``share(i)`` names share *i*."""
        from mpiq_magic.kernel.errors import ProcessFailure

        failed = {q for q, d in self.monitors.items() if d.error}
        out = [ProcessFailure(f"qrank {q}", d.stage, d.error) for q, d in sorted(self.monitors.items()) if d.error]
        out += [
            ProcessFailure(f"qrank {self.placement[i]}", "execute", f"{share(i)}: {message}")
            for i, message in self.errors.items() if self.placement[i] not in failed
        ]
        out += [
            ProcessFailure(f"qrank {q}", "execute", f"{share(i)}: no result before the deadline.", "timeout")
            for i, q in self.missing.items() if q not in failed
        ]
        named = {f.who for f in out}
        out += [
            ProcessFailure(f"qrank {q}", "gather", "did not end the job before the deadline.", "timeout")
            for q in range(quantum_size) if q not in self.monitors and f"qrank {q}" not in named
        ]
        return out


class Dispatcher:
    """The dispatching side for one classical rank of ``hc``; jobs may overlap.

    ``cache`` is the :class:`~monitor_engine.payload.CompileCache` for circuit shares (one per
    dispatcher by default); ``alive`` tells a dead monitor from a slow one (without it, only the
    deadline ends a wait).
    """

    def __init__(
        self, hc, *, cache=None, alive: Alive | None = None, namespace: str = "dispatch",
        payload_slots: int = P.PAYLOAD_SLOTS,
    ):
        if not hc.is_classical:
            raise MonitorError(f"A Dispatcher runs on a classical rank, but this process is qrank {hc.qrank}.")
        from .payload import CompileCache

        self.hc = hc
        self.comm = hc.layer("dispatch")
        self.cache = CompileCache() if cache is None else cache
        self.alive = alive
        self.namespace = namespace
        self._numbers = itertools.count(1)
        self._jobs: dict[P.JobId, _Job] = {}
        self._sends: list = []
        self.payload_slots = int(payload_slots)
        #: qrank -> payload ids that monitor holds for this dispatcher, least recently used first
        self.held: dict[int, OrderedDict[str, None]] = {}

    def new_job(self) -> P.JobId:
        return (self.namespace, next(self._numbers))

    # ------------------------------------------------------------------ jobs
    def submit(
        self,
        shares: Sequence[Share],
        *,
        job: P.JobId | None = None,
        participants: Iterable[int] = (),
        timeout: float | None = None,
        deadline: float | None = None,
        on_result: OnResult | None = None,
        on_idle: Callable[[], None] | None = None,
        failover: bool = True,
    ) -> P.JobId:
        """Place, compile and send ``shares``; returns the job id to :meth:`wait` on.

        ``participants``: qranks that must take part even without a share (they run their serve
        hook, e.g. a barrier, and end the job). ``deadline`` is a ``time.time()`` instant
        (default: now + ``timeout`` or the communicator's timeout). ``on_idle`` is called while
        the job waits and nothing arrives (about every 0.1 s), e.g. to flush throttled progress.
        """
        job = self.new_job() if job is None else job
        if deadline is None:
            deadline = time.time() + (self.hc.timeout if timeout is None else float(timeout))
        state = _Job(job, list(shares), deadline, on_result, failover, set(participants), on_idle)
        self._jobs[job] = state
        state.t_start = time.perf_counter()
        live = [q for q in range(self.hc.quantum_size) if self._alive(q)]
        state.dead.update(q for q in range(self.hc.quantum_size) if q not in live)
        self._place_and_send(state, range(len(state.shares)), live)
        for q in sorted(state.participants - state.sent_to - state.dead):
            self._post(state, q, ())
        if not state.failover:
            self._finish(state)
        state.t_sent = time.perf_counter()
        return job

    def wait(self, job: P.JobId, timeout: float | None = None) -> DispatchResult:
        """Drive ``job`` to its end (every share answered, or its deadline; ``timeout`` sets a new
        deadline from now); never raises for missing or failed shares: they are named in the
        result."""
        state = self._jobs[job]
        if timeout is not None:
            state.deadline = time.time() + timeout
        while not state.complete():
            left = state.deadline - time.time()
            if left <= 0:
                break
            if not self._pump(min(_POLL, left)):
                if state.on_idle is not None:
                    state.on_idle()
                self._check_dead(state)
        self._finish(state)
        self._await_done(state)
        del self._jobs[job]
        return state.result(self.hc, self.cache)

    def run(self, shares: Sequence[Share], **options: Any) -> DispatchResult:
        """:meth:`submit` then :meth:`wait`."""
        return self.wait(self.submit(shares, **options))

    def abort(self, job: P.JobId, qranks: Iterable[int], reason: str) -> None:
        """Tell monitors waiting for ``job`` that it will not come (the dispatcher failed)."""
        for q in qranks:
            self._isend(P.Batch(job, self.hc.comm_rank, abort=reason), q)

    def control(self, kind: str, qranks: Iterable[int] | None = None, timeout: float | None = None) -> list[P.MonitorDone]:
        """A monitor-wide request (``status``, ``barrier``, ``shutdown``) to standing monitors;
        their answers by qrank.

        Raises:
            MPIQTimeoutError: a monitor did not answer in time (``missing`` names it).
        """
        qranks = list(range(self.hc.quantum_size)) if qranks is None else list(qranks)
        limit = self.hc.timeout if timeout is None else timeout
        job = self.new_job()
        state = _Job(job, [], time.time() + limit, None, False, set(qranks))
        self._jobs[job] = state
        for q in qranks:
            self._isend(P.Batch(job, self.hc.comm_rank, control=kind, options={"timeout": limit}), q)
            state.ending.add(q)
        self._await_done(state)
        del self._jobs[job]
        missing = [q for q in qranks if q not in state.monitors]
        if missing:
            names = [self._who(q) for q in missing]
            raise MPIQTimeoutError(
                f"No answer to {kind!r} from {', '.join(names)} within {limit:g} s; is every monitor serving?",
                names,
            )
        return [state.monitors[q] for q in qranks]

    # ------------------------------------------------------------------ sending
    def _place_and_send(self, state: "_Job", indices: Iterable[int], live: list[int]) -> None:
        from .payload import compile_for

        t0 = time.perf_counter()
        indices = list(indices)
        plan: Placement = place([state.shares[i] for i in indices], self.hc.devices, live, state.load)
        by_qrank: dict[int, list[int]] = {}
        for index, qrank, error in zip(indices, plan.qranks, plan.errors):
            state.placement[index] = qrank
            if error is not None:
                state.errors[index] = error
                state.open.discard(index)
            elif qrank in state.dead:
                state.open.add(index)  # pinned to a dead monitor: reported missing
            else:
                by_qrank.setdefault(qrank, []).append(index)
                state.open.add(index)
        state.t_place += time.perf_counter() - t0
        # Compile one monitor's share, send it, go on: monitors start while this rank compiles the rest.
        for qrank, share_indices in by_qrank.items():
            t0 = time.perf_counter()
            items = []
            device = self.hc.devices[qrank]
            for index in share_indices:
                share = state.shares[index]
                try:
                    payload = share.payload
                    if payload is None:
                        payload = compile_for(
                            device, share.circuit, shots=share.shots, cache=self.cache,
                            job_id=share.job_id or f"{state.job[0]}{state.job[1]}-s{index}",
                            parameterized=share.values is not None,
                        )
                        state.cache_hits += payload.meta.get("cache_hit", False)
                        state.cache_misses += not payload.meta.get("cache_hit", False)
                    item = payload if share.values is None else self._sweep(state, qrank, share, payload)
                except Exception as exc:
                    state.errors[index] = f"{type(exc).__name__}: {exc}"
                    state.open.discard(index)
                    continue
                if item is payload or item.payload is not None:
                    state.payload_bytes += payload.nbytes
                items.append((index, item))
                state.load[qrank] = state.load.get(qrank, 0) + 1
            state.t_compile += time.perf_counter() - t0
            if items:
                self._post(state, qrank, tuple(items))

    def _sweep(self, state: "_Job", qrank: int, share: Share, payload) -> P.Sweep:
        """The batch item of a sweep share: the payload id and values, plus the payload itself
        when the monitor's cache (as mirrored here) does not hold it."""
        import numpy as np

        values = np.ascontiguousarray(share.values, dtype=np.float64)
        names = tuple(share.parameters) if share.parameters is not None else tuple(p.name for p in share.circuit.parameters)
        if values.ndim != 2 or values.shape[1] != len(names):
            raise ValueError(
                f"A sweep needs values of shape (rows, {len(names)}) for parameters {list(names)}, "
                f"got shape {values.shape}."
            )
        held = self.held.setdefault(qrank, OrderedDict())
        send = payload.payload_id not in held
        held[payload.payload_id] = None
        held.move_to_end(payload.payload_id)
        while len(held) > max(1, self.payload_slots):
            state.evicted.setdefault(qrank, []).append(held.popitem(last=False)[0])
        if send:
            state.payloads_sent[qrank] = state.payloads_sent.get(qrank, 0) + 1
        state.values_bytes += values.nbytes
        return P.Sweep(
            payload.payload_id, values, names, int(share.shots), payload.job_id,
            seed=share.seed, payload=payload if send else None, slots=self.payload_slots,
        )

    def forget(self, qrank: int, payload_id: str) -> None:
        """The monitor does not hold ``payload_id`` (it said so): send it in full next time."""
        self.held.get(qrank, {}).pop(payload_id, None)

    def _post(self, state: "_Job", qrank: int, items: tuple) -> None:
        self._isend(P.Batch(state.job, self.hc.comm_rank, items, final=not state.failover, sent_at=time.time()), qrank)
        state.sent_to.add(qrank)
        if not state.failover:
            state.ending.add(qrank)

    def _finish(self, state: "_Job") -> None:
        """End the job on every monitor that has it and has not been told yet."""
        for q in sorted(state.sent_to - state.ending - state.dead):
            self._isend(P.Batch(state.job, self.hc.comm_rank, final=True, sent_at=time.time()), q)
            state.ending.add(q)

    def _isend(self, message: P.Batch, qrank: int) -> None:
        self._sends = [s for s in self._sends if not s.test()[0]]
        self._sends.append(self.comm.isend(message, QRank(qrank), tag=P.WORK_TAG))

    # ------------------------------------------------------------------ receiving
    def _pump(self, wait: float) -> bool:
        """Receive one reply (any job) within ``wait`` seconds; False if none came."""
        try:
            message = self.comm.recv(tag=P.REPLY_TAG, timeout=max(wait, 1e-4))
        except MPIQTimeoutError:
            return False
        if isinstance(message, P.ShareReply):
            if message.detached:
                message.result.memory = self.comm.recv(QRank(message.qrank), P.DATA_TAG, timeout=max(wait, 5.0))
            if getattr(message.result, "missing_payload", False):
                self.forget(message.qrank, message.result.payload_id)
            state = self._jobs.get(message.job)
            if state is not None:
                state.take(message, time.time())
        elif isinstance(message, P.MonitorDone):
            state = self._jobs.get(message.job)
            if state is not None:
                state.take_done(message)
        return True

    def _await_done(self, state: "_Job") -> None:
        """Wait (to the deadline) for the MonitorDone of every monitor told to end the job."""
        while not state.ending - state.dead <= state.monitors.keys():
            left = state.deadline - time.time()
            if left <= 0:
                return
            if not self._pump(min(_POLL, left)):
                self._check_dead(state)

    def _check_dead(self, state: "_Job") -> None:
        waiting = {state.placement[i] for i in state.open} | (state.ending - state.monitors.keys())
        newly = sorted(q for q in waiting if q is not None and q not in state.dead and not self._alive(q))
        if not newly:
            return
        state.dead.update(newly)
        if not state.failover:
            return
        movable = [i for i in sorted(state.open) if state.placement[i] in state.dead and not state.shares[i].pinned]
        live = [q for q in range(self.hc.quantum_size) if q not in state.dead]
        if movable and live:
            before = {i: state.placement[i] for i in movable}
            self._place_and_send(state, movable, live)
            state.failed_over.update({i: (before[i], state.placement[i]) for i in movable if i in state.open})

    def _alive(self, qrank: int) -> bool:
        return True if self.alive is None else bool(self.alive(qrank))

    def _who(self, qrank: int) -> str:
        return f"qrank {qrank} ({self.hc.devices[qrank].name})"


@dataclass
class _Job:
    job: P.JobId
    shares: list[Share]
    deadline: float
    on_result: OnResult | None
    failover: bool
    participants: set[int]
    on_idle: Callable[[], None] | None = None
    placement: list[int | None] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)
    open: set[int] = field(default_factory=set)
    errors: dict[int, str] = field(default_factory=dict)
    dead: set[int] = field(default_factory=set)
    failed_over: dict[int, tuple[int, int]] = field(default_factory=dict)
    sent_to: set[int] = field(default_factory=set)
    ending: set[int] = field(default_factory=set)
    monitors: dict[int, P.MonitorDone] = field(default_factory=dict)
    load: dict[int, int] = field(default_factory=dict)
    payload_bytes: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    payloads_sent: dict[int, int] = field(default_factory=dict)
    values_bytes: int = 0
    evicted: dict[int, list[str]] = field(default_factory=dict)
    done: dict[int, int] = field(default_factory=dict)
    t_start: float = 0.0
    t_place: float = 0.0
    t_compile: float = 0.0
    t_sent: float = 0.0

    def __post_init__(self) -> None:
        self.placement = [None] * len(self.shares)
        self.results = [None] * len(self.shares)

    def complete(self) -> bool:
        return not (self.open - self._lost())

    def _lost(self) -> set[int]:
        """Open shares that cannot come: on a dead monitor (and not moved), or on a monitor that
        ended the job with an error."""
        failed = {q for q, d in self.monitors.items() if d.error}
        return {i for i in self.open if self.placement[i] in self.dead or self.placement[i] in failed}

    def take(self, reply: P.ShareReply, received: float) -> None:
        if reply.index not in self.open or self.placement[reply.index] != reply.qrank:
            return  # a duplicate, or an answer from a monitor the share was moved away from
        result = reply.result
        result.timings["reply"] = max(0.0, received - reply.sent_at)
        self.results[reply.index] = result
        self.open.discard(reply.index)
        if result.error:
            self.errors[reply.index] = result.error
        self.done[reply.qrank] = self.done.get(reply.qrank, 0) + 1
        if self.on_result is not None:
            self.on_result(reply.index, reply.qrank, result, self.done[reply.qrank], self.load.get(reply.qrank, 0))

    def take_done(self, done: P.MonitorDone) -> None:
        self.monitors[done.qrank] = done
        if done.error:
            for i in [i for i in self.open if self.placement[i] == done.qrank]:
                self.errors[i] = done.error
                self.open.discard(i)

    def result(self, hc, cache) -> DispatchResult:
        end = time.perf_counter()
        missing = {i: self.placement[i] for i in sorted(self.open)}
        return DispatchResult(
            job=self.job,
            results=self.results,
            placement=self.placement,
            missing=missing,
            errors=dict(sorted(self.errors.items())),
            dead=sorted(self.dead),
            failed_over=self.failed_over,
            monitors=self.monitors,
            payload_bytes=self.payload_bytes,
            compile_cache=CacheStats(self.cache_hits, self.cache_misses),
            timings=DispatchTimings(
                compile=self.t_compile,
                send=max(0.0, self.t_sent - self.t_start - self.t_compile),
                collect=end - self.t_sent,
                total=end - self.t_start,
            ),
            payloads_sent=dict(self.payloads_sent),
            values_bytes=self.values_bytes,
            evicted={q: list(ids) for q, ids in self.evicted.items()},
        )


# ---------------------------------------------------------------------- one-call forms
_DISPATCHERS: "weakref.WeakKeyDictionary[Any, Dispatcher]" = weakref.WeakKeyDictionary()


def dispatcher_for(hc, **options: Any) -> Dispatcher:
    """The cached :class:`Dispatcher` of this classical rank and communicator."""
    d = _DISPATCHERS.get(hc)
    if d is None:
        d = _DISPATCHERS[hc] = Dispatcher(hc, **options)
    return d


def dispatch(hc, shares: Sequence[Share], **options: Any) -> DispatchResult:
    """Place, compile, send and run ``shares`` on the monitors of ``hc``; see :meth:`Dispatcher.submit`."""
    return dispatcher_for(hc).run(shares, **options)


__all__ = [
    "Share", "DispatchResult", "DispatchTimings", "CacheStats", "Dispatcher", "dispatch",
    "dispatcher_for",
]
