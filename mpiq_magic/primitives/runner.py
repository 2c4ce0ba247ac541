"""What the primitives send down the one dispatch path, and how the answers come back.

A primitive turns its PUBs into :class:`Task` s: a logical circuit (parameters unbound), a float
array of parameter values (one row per element), shots, a seed and an optional pin. On classical
rank 0, :func:`run_tasks` splits each task's rows over the live monitors whose device is wide
enough (one :class:`~monitor_engine.dispatch.Share` with ``values`` per chunk, least-loaded first),
dispatches them as one job, and reassembles one :class:`TaskResult` per task: the packed shots of
every row, which qrank ran each row, and timings. Compilation happens once per (circuit
structure, device target) in the dispatcher's compile cache; monitors cache the payloads and
later runs send only ids and values.

:class:`HeadlessTransport` is the transport of a primitive built on a hybrid communicator
(``SamplerV2(hc)`` on classical rank 0 while the monitors ``serve(hc)``);
:mod:`mpiq_magic.cluster.primitives` is the one of a :class:`~mpiq_magic.cluster.HybridCluster`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..kernel.errors import MPIQTimeoutError, ProcessFailure, ProcessFailures, UsageError

#: Text progress (headless) is printed at most this often, seconds.
PROGRESS_INTERVAL = 1.0


class PrimitiveRunError(ProcessFailures):
    """Some elements of a primitive run failed or got no result (``partial``: the RunReport)."""


@dataclass
class Task:
    """One circuit with a block of parameter rows; ``pin`` is a qrank or ``(host, device_id)``."""

    circuit: Any  # logical QuantumCircuit, parameters unbound
    values: np.ndarray  # (rows, circuit.num_parameters) float64, columns in circuit.parameters order
    shots: int
    seed: int | None = None
    pin: int | tuple[str, int] | None = None

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])


@dataclass
class TaskResult:
    """Shots of every row of one task: ``memory`` ``(rows, shots, ceil(num_bits/8))`` uint8."""

    memory: np.ndarray
    num_bits: int
    qranks: np.ndarray  # (rows,) qrank that ran each row
    execute_seconds: np.ndarray  # (rows,) monitor execution time of each row's chunk / its rows
    methods: list[str]
    cache_hits: int = 0  # chunks whose payload was already cached on the monitor


@dataclass
class RunReport:
    """Everything one :func:`run_tasks` call did: results by task plus what travelled."""

    results: list[TaskResult]
    devices: dict[int, str]  # qrank -> device name
    timings: dict[str, float]
    compile_cache: dict[str, int]
    payloads_sent: dict[int, int]
    payload_bytes: int
    values_bytes: int
    evicted: dict[int, list[str]]
    monitor_cache: dict[int, dict] = field(default_factory=dict)
    chunks: int = 0
    placement: list = field(default_factory=list)  # chunk -> qrank that ran it (None: no result)


def _chunks(task: Task, index: int, devices, live: Sequence[int]) -> list[tuple[int, int, dict]]:
    """(start, stop, share options) per chunk of ``task``'s rows."""
    from monitor_engine.placement import fitting

    name = f"Circuit '{task.circuit.name}' (task {index})"
    if task.pin is not None:
        pin = task.pin
        if isinstance(pin, (int, np.integer)) and not isinstance(pin, bool):
            if not 0 <= int(pin) < len(devices):
                raise UsageError(f"pin={pin!r} names no monitor: the communicator has qranks 0..{len(devices) - 1}.")
            spec = devices[int(pin)]
            option = {"qrank": int(pin)}
        elif isinstance(pin, (tuple, list)) and len(pin) == 2:
            key = (str(pin[0]), int(pin[1]))
            match = [q for q, d in enumerate(devices) if d.key == key]
            if not match:
                known = ", ".join(d.name for d in devices)
                raise UsageError(f"pin={tuple(pin)!r} names no bound device; bound devices: {known}.")
            spec = devices[match[0]]
            option = {"device": key}
        else:
            raise UsageError(f"pin must be a qrank or a (host, device_id) pair, got {pin!r}.")
        if task.circuit.num_qubits > spec.num_qubits:
            fitting(task.circuit.num_qubits, [spec], [0], name)  # raises with the message
        return [(0, task.rows, option)] if task.rows else []
    fits = fitting(task.circuit.num_qubits, devices, live, name)
    if task.rows == 0:
        return []
    pieces = min(task.rows, len(fits))
    bounds = [task.rows * k // pieces for k in range(pieces + 1)]  # sizes differ by at most one
    return [(bounds[k], bounds[k + 1], {}) for k in range(pieces)]


def build_shares(tasks: Sequence[Task], devices, live: Sequence[int]):
    """The shares of ``tasks`` and, per share, ``(task index, start row, stop row)``.

    Raises:
        CircuitTooWideError: a circuit is wider than every device.
        UsageError: a bad pin.
    """
    from monitor_engine.dispatch import Share
    from monitor_engine.protocol import SEED_STRIDE

    shares, where = [], []
    for t, task in enumerate(tasks):
        names = tuple(p.name for p in task.circuit.parameters)
        for start, stop, option in _chunks(task, t, devices, live):
            seed = None if task.seed is None else (int(task.seed) + SEED_STRIDE * start) % (1 << 62)
            shares.append(Share(
                circuit=task.circuit, values=task.values[start:stop], parameters=names,
                shots=int(task.shots), seed=seed, **option,
            ))
            where.append((t, start, stop))
    return shares, where


def run_tasks(
    dispatcher,
    tasks: Sequence[Task],
    *,
    job=None,
    participants: Sequence[int] = (),
    live: Sequence[int] | None = None,
    deadline: float | None = None,
    timeout: float | None = None,
    on_result: Callable | None = None,
    on_idle: Callable | None = None,
    retry: bool = True,
    progress: "TextProgress | None" = None,
) -> RunReport:
    """Run ``tasks`` on the monitors of ``dispatcher.hc`` as one dispatch job (classical rank).

    Rows whose monitor no longer held their payload (evicted, or a batch lost) are sent again
    once, with the payload, when ``retry``.

    Raises:
        CircuitTooWideError: a circuit is wider than every device (nothing was sent).
        UsageError: a bad pin.
        PrimitiveRunError: elements failed or got no answer; ``partial`` is the RunReport.
    """
    hc = dispatcher.hc
    devices = hc.devices
    live = [q for q in range(hc.quantum_size) if dispatcher._alive(q)] if live is None else list(live)
    t0 = time.perf_counter()
    shares, where = build_shares(tasks, devices, live)
    if progress is not None:
        progress.begin(len(shares))
        on_result = progress.result if on_result is None else on_result
    outcome = dispatcher.run(
        shares, job=job, participants=participants, deadline=deadline, timeout=timeout,
        on_result=on_result, on_idle=on_idle, failover=False,
    )
    results = list(outcome.results)
    placement = list(outcome.placement)
    errors = dict(outcome.errors)
    missing = dict(outcome.missing)
    sent = dict(outcome.payloads_sent)
    payload_bytes, values_bytes = outcome.payload_bytes, outcome.values_bytes
    evicted = {q: list(v) for q, v in outcome.evicted.items()}
    again = [i for i, r in enumerate(results) if getattr(r, "missing_payload", False)]
    if again and retry:
        second = dispatcher.run([shares[i] for i in again], deadline=deadline, timeout=timeout, failover=False)
        for k, i in enumerate(again):
            results[i], placement[i] = second.results[k], second.placement[k]
            errors.pop(i, None)
            if k in second.errors:
                errors[i] = second.errors[k]
            if k in second.missing:
                missing[i] = second.missing[k]
        for q, n in second.payloads_sent.items():
            sent[q] = sent.get(q, 0) + n
        payload_bytes += second.payload_bytes
        values_bytes += second.values_bytes
    report = RunReport(
        results=[], devices={q: d.name for q, d in enumerate(devices)},
        timings={**outcome.timings.to_dict(), "run": time.perf_counter() - t0},
        compile_cache={"hits": outcome.compile_cache.hits, "misses": outcome.compile_cache.misses},
        payloads_sent=sent, payload_bytes=payload_bytes, values_bytes=values_bytes, evicted=evicted,
        monitor_cache={q: d.cache for q, d in outcome.monitors.items() if d.cache is not None},
        chunks=len(shares), placement=[None if p is None else int(p) for p in placement],
    )
    report.results = _assemble(tasks, where, results, placement)
    if errors or missing:
        lines = []
        for i, message in sorted(errors.items()):
            t, start, stop = where[i]
            lines.append(ProcessFailure(f"qrank {placement[i]}", "primitive", f"task {t} rows {start}..{stop - 1}: {message}"))
        for i, q in sorted(missing.items()):
            t, start, stop = where[i]
            lines.append(ProcessFailure(f"qrank {q}", "primitive", f"task {t} rows {start}..{stop - 1} got no result before the deadline."))
        raise PrimitiveRunError(
            f"{len(errors) + len(missing)} of {len(shares)} chunk(s) of the primitive run failed or got no result.",
            lines, partial=report,
        )
    return report


def _assemble(tasks, where, results, placement) -> list[TaskResult]:
    out = []
    for t, task in enumerate(tasks):
        nbytes = (task.circuit.num_clbits + 7) // 8
        out.append(TaskResult(
            memory=np.zeros((task.rows, task.shots, nbytes), dtype=np.uint8),
            num_bits=task.circuit.num_clbits,
            qranks=np.full(task.rows, -1, dtype=np.int64),
            execute_seconds=np.zeros(task.rows),
            methods=[],
        ))
    for i, (t, start, stop) in enumerate(where):
        result, target = results[i], out[t]
        if result is None or getattr(result, "error", None):
            continue
        target.memory[start:stop] = result.memory
        target.qranks[start:stop] = placement[i]
        target.execute_seconds[start:stop] = result.timings.get("execute", 0.0) / max(1, stop - start)
        target.cache_hits += bool(getattr(result, "cache_hit", False))
        if result.method not in target.methods:
            target.methods.append(result.method)
    return out


class TextProgress:
    """Headless progress on stderr, at most one line every :data:`PROGRESS_INTERVAL` seconds.

    One object serves every run of a primitive (:meth:`begin` starts a run), so a variational
    loop of many short runs prints a line now and then, not one per run; a run that lasts longer
    than the interval always ends with its final line.
    """

    def __init__(self, total: int = 0, stream=None):
        self.total = total
        self.done = 0
        self.runs = 0
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.last = self.start

    def begin(self, total: int) -> None:
        """A new run of ``total`` chunks."""
        self.total, self.done = total, 0
        self.runs += 1
        self.start = time.perf_counter()

    def result(self, index: int, qrank: int, result: Any, done: int, total: int) -> None:
        self.done += 1
        now = time.perf_counter()
        finished_long_run = self.done == self.total and now - self.start >= PROGRESS_INTERVAL
        if now - self.last >= PROGRESS_INTERVAL or finished_long_run:
            self.last = now
            print(
                f"mpiq primitives: run {self.runs}: {self.done}/{self.total} chunk(s) done, {now - self.start:.1f} s",
                file=self.stream,
            )


class HeadlessTransport:
    """Primitives on classical rank 0 of ``hc`` while the monitors stand in ``serve(hc)``.

    ``close()`` (or leaving the primitive's ``with`` block) shuts the monitors down, so their
    ``serve`` returns and the job can end, unless ``shutdown=False``.
    """

    def __init__(self, hc, *, timeout: float | None = None, progress: bool = False, alive=None):
        if not getattr(hc, "is_classical", False) or hc.rank != 0:
            who = f"qrank {hc.qrank}" if getattr(hc, "is_quantum", False) else f"classical rank {getattr(hc, 'rank', '?')}"
            raise UsageError(
                f"A primitive on a hybrid communicator runs on classical rank 0, but this process is {who}; "
                "let the monitors call monitor_engine.serve.serve(hc) and other classical ranks wait."
            )
        from monitor_engine.dispatch import dispatcher_for

        self.hc = hc
        self.dispatcher = dispatcher_for(hc)
        if alive is not None:
            self.dispatcher.alive = alive
        self.timeout = timeout
        self.progress = TextProgress() if progress else None
        self.closed = False

    @property
    def devices(self):
        return list(self.hc.devices)

    def run(self, tasks: Sequence[Task]) -> RunReport:
        if self.closed:
            raise UsageError("This primitive was closed (its monitors were shut down); create a new one.")
        return run_tasks(
            self.dispatcher, tasks, timeout=self.timeout, progress=self.progress,
        )

    def close(self, shutdown: bool = True) -> None:
        """Shut the serving monitors down (once).

        Raises:
            MPIQTimeoutError: a monitor did not acknowledge the shutdown in time.
        """
        if self.closed:
            return
        self.closed = True
        if shutdown:
            self.dispatcher.control("shutdown", timeout=self.timeout)


__all__ = [
    "Task", "TaskResult", "RunReport", "run_tasks", "build_shares", "HeadlessTransport",
    "PrimitiveRunError", "TextProgress", "MPIQTimeoutError",
]
