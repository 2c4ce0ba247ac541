"""The monitor side of the one dispatch path: a single serve loop for every workload.

``serve(hc)`` answers every job until a ``shutdown`` (a standing monitor, ``MonitorClient``);
``serve(hc, job=...)`` answers one job and returns (a ``%%mpiq`` cell, the GHZ pipeline,
``spmd_run``). A ``hook`` runs once per job before its first payload: the GHZ pipeline passes
the QQ barrier, so the monitors start executing on one trigger instant.
"""

from __future__ import annotations

import sys
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from mpiq_magic.kernel.addressing import ANY_SOURCE
from mpiq_magic.kernel.barrier import QQ
from mpiq_magic.kernel.errors import MPIQTimeoutError

from . import protocol as P
from .errors import MonitorError

#: How long one receive waits before the loop checks its deadlines again.
_POLL = 1.0
#: Consecutive receive failures after which the loop gives up (the communicator is broken).
_MAX_BROKEN = 10

Hook = Callable[[], Any]

_MONITORS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_BACKLOGS: "weakref.WeakKeyDictionary[Any, list]" = weakref.WeakKeyDictionary()


def monitor_for(hc):
    """The one :class:`~monitor_engine.process.MonitorProcess` of this quantum process and
    communicator, created on first use and reused by every workload (its simulators stay warm)."""
    owner = _owner(hc)
    monitor = _MONITORS.get(owner)
    if monitor is None:
        from .process import MonitorProcess

        monitor = _MONITORS[owner] = MonitorProcess(owner)
    return monitor


def _owner(hc):
    return getattr(hc, "_owner", hc) if getattr(hc, "layer_name", None) else hc


@dataclass
class ServeReport:
    """What one serve call did on this monitor."""

    qrank: int
    jobs: int = 0
    executed: int = 0
    stopped: str = "job"  # "job" | "shutdown" | "idle"
    done: list = field(default_factory=list)  # MonitorDone per finished job


def serve(
    hc,
    *,
    monitor=None,
    job: P.JobId | None = None,
    hook: Hook | None = None,
    deadline: float | None = None,
    idle_timeout: float | None = None,
) -> ServeReport:
    """Serve dispatched work on this quantum process.

    ``job``: serve that job only and return after its final batch (batches of later jobs wait
    for the next call; stale ones of earlier jobs are dropped). Without it, serve every job
    until a ``shutdown`` control or ``idle_timeout`` seconds without a message. ``deadline``
    (``time.time()``) bounds the whole call.

    Raises:
        MPIQTimeoutError: the deadline passed before ``job`` ended (names classical rank 0).
        MonitorError: the communicator kept failing to deliver messages.
    """
    if not hc.is_quantum:
        raise MonitorError(f"serve() runs on a quantum process, but this process is classical rank {hc.rank}.")
    comm = hc.layer("dispatch")
    monitor = monitor or monitor_for(hc)
    report = ServeReport(hc.qrank)
    jobs: dict[P.JobId, _JobState] = {}
    for batch in _batches(comm, job, deadline, idle_timeout, report):
        if batch.control is not None:
            done = _control(hc, monitor, batch)
            _send(comm, batch.reply_to, done)
            if batch.control == "shutdown":
                report.stopped = "shutdown"
                return report
            continue
        state = jobs.setdefault(batch.job, _JobState(time.perf_counter()))
        if batch.abort is None:
            _run_batch(comm, monitor, batch, state, hook, report)
        if batch.final or batch.abort is not None:
            jobs.pop(batch.job, None)
            done = state.done(batch.job, hc.qrank, hc.device.name)
            if state.cache_owner is not None and hasattr(monitor, "store"):
                done = done._replace(cache=monitor.store.stats(state.cache_owner))
            _send(comm, batch.reply_to, done)
            report.jobs += 1
            report.done.append(done)
            if job is not None and batch.job == job:
                return report
    return report


@dataclass
class _JobState:
    received: float
    hooked: float | None = None
    hook_value: Any = None
    last_sent: float | None = None
    executed: int = 0
    error: str | None = None
    stage: str = "execute"
    cache_owner: int | None = None

    def done(self, job: P.JobId, qrank: int, device: str) -> P.MonitorDone:
        hooked = self.hooked if self.hooked is not None else self.received
        return P.MonitorDone(
            job, qrank, device, self.executed,
            hook_seconds=hooked - self.received,
            hook_value=self.hook_value,
            execute_seconds=(self.last_sent - hooked) if self.last_sent is not None else 0.0,
            error=self.error,
            stage=self.stage,
        )


def _run_batch(comm, monitor, batch: P.Batch, state: _JobState, hook: Hook | None, report: ServeReport) -> None:
    if state.error is not None:
        return
    if state.hooked is None:
        try:
            state.hook_value = hook() if hook is not None else None
        except Exception as exc:  # e.g. a barrier timeout: the dispatcher learns it, nothing runs
            state.error, state.stage = f"{type(exc).__name__}: {exc}", "hook"
            return
        finally:
            state.hooked = time.perf_counter()
    for k, (index, item) in enumerate(batch.items):
        t0 = time.perf_counter()
        sent_at = batch.sent_at if k == 0 else None
        if isinstance(item, P.Sweep):
            result = monitor.execute_sweep(item, batch.reply_to, sent_at=sent_at)
            state.cache_owner = batch.reply_to
        else:
            result = monitor.execute(item, sent_at=sent_at)
        seconds = time.perf_counter() - t0
        memory = result.memory
        detached = memory is not None and memory.nbytes > P.DETACH_BYTES
        if detached:
            result.memory = None
        reply = P.ShareReply(batch.job, index, monitor.qrank, result, seconds, time.time(), detached)
        _send(comm, batch.reply_to, reply)
        if detached:
            _send(comm, batch.reply_to, np.ascontiguousarray(memory), tag=P.DATA_TAG)
            result.memory = memory
        state.executed += 1
        report.executed += 1
        state.last_sent = time.perf_counter()


def _control(hc, monitor, batch: P.Batch) -> P.MonitorDone:
    value, error = None, None
    try:
        if batch.control == "status":
            value = monitor.status()
        elif batch.control == "barrier":
            value = hc.barrier(QQ, timeout=(batch.options or {}).get("timeout"))
        elif batch.control != "shutdown":
            error = (
                f"Monitor {hc.device.name} (qrank {hc.qrank}) got a control request {batch.control!r}; "
                f"known ones are {list(P.CONTROLS)}."
            )
    except Exception as exc:  # answer, keep serving
        error = f"{type(exc).__name__}: {exc}"
    return P.MonitorDone(batch.job, hc.qrank, hc.device.name, value=value, error=error, stage=batch.control or "control")


def _send(comm, dest: int, message: Any, tag: int = P.REPLY_TAG) -> None:
    try:
        comm.send(message, dest, tag=tag)
    except Exception as exc:  # the dispatcher is gone or stuck: keep serving the others
        print(
            f"monitor_engine: qrank {comm.qrank} could not answer comm rank {dest}: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )


def _batches(comm, job, deadline, idle_timeout, report: ServeReport):
    """Batches to serve, in arrival order (a backlog of early ones first)."""
    backlog = _BACKLOGS.setdefault(_owner(comm), [])
    if job is not None:
        ready = [b for b in backlog if b.job == job]
        backlog[:] = [b for b in backlog if b.job != job and not _stale(b.job, job)]
        yield from ready
    broken = 0
    last = time.monotonic()
    while True:
        wait = _POLL
        if deadline is not None:
            wait = min(wait, deadline - time.time())
            if wait <= 0:
                raise MPIQTimeoutError(
                    f"qrank {comm.qrank} (device {comm.device.name}) did not receive the end of job "
                    f"{_name(job)} before its deadline.",
                    ["rank 0"],
                )
        if idle_timeout is not None:
            idle_left = idle_timeout - (time.monotonic() - last)
            if idle_left <= 0:
                report.stopped = "idle"
                return
            wait = min(wait, idle_left)
        try:
            message = comm.recv(ANY_SOURCE, P.WORK_TAG, timeout=max(wait, 1e-3))
            broken = 0
        except MPIQTimeoutError:
            continue
        except Exception as exc:  # e.g. a message that does not unpickle here: drop it
            broken += 1
            print(
                f"monitor_engine: qrank {comm.qrank} dropped a message it could not receive: "
                f"{type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
            if broken >= _MAX_BROKEN:
                raise MonitorError(
                    f"Monitor {comm.device.name} (qrank {comm.qrank}) stopped serving after {broken} "
                    f"receive failures in a row; the last was {type(exc).__name__}: {exc}"
                ) from exc
            continue
        last = time.monotonic()
        if not isinstance(message, P.Batch):
            print(
                f"monitor_engine: qrank {comm.qrank} ignored a {type(message).__name__} on the dispatch "
                "context; only Batch messages are served.",
                file=sys.stderr,
            )
            continue
        if job is not None and message.job != job and message.control is None:
            if not _stale(message.job, job):
                backlog.append(message)  # a later job's: served by the next call
            continue
        yield message


def _stale(job: P.JobId, current: P.JobId) -> bool:
    return job[0] == current[0] and job[1] < current[1]


def _name(job: P.JobId | None) -> str:
    return "(any)" if job is None else f"{job[0]}-{job[1]}"
