"""Tasks and their futures: :class:`TaskFuture` is a real ``concurrent.futures.Future``.

``concurrent.futures.wait`` and ``as_completed`` work on it directly (re-exported here);
``cancel()`` succeeds while the task waits in its pilot's queue (never sent to an engine).
Each future carries its :class:`TaskRecord`: the metrics row (submit, start, end, wait,
execution, status, error) and, for quantum tasks, the placement decision with its reasons.
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, Future, as_completed, wait
from dataclasses import dataclass, field
from typing import Any

_ids = itertools.count(1)
_ids_lock = threading.Lock()

FUNCTION = "function"
SAMPLER = "sampler"
ESTIMATOR = "estimator"


def next_task_id() -> str:
    with _ids_lock:
        return f"task.{next(_ids):06d}"


@dataclass
class TaskRecord:
    """One task's metrics row. Times are ``time.time()`` seconds (client and engines share the clock
    on one host; on several hosts, as far as their clocks agree)."""

    task_id: str
    kind: str  # function | sampler | estimator
    name: str
    pilot: str | None = None
    engine: int | None = None
    devices: tuple[str, ...] = ()
    submit: float = 0.0
    sent: float | None = None
    start: float | None = None
    end: float | None = None
    device_seconds: float | None = None  # monitor execution time (quantum tasks)
    status: str = "pending"  # pending | running | done | failed | cancelled
    error: str | None = None
    placement: dict | None = None
    batch: int | None = None  # quantum: how many tasks shared the run

    @property
    def wait(self) -> float | None:
        return None if self.start is None else self.start - self.submit

    @property
    def execution(self) -> float | None:
        return None if self.start is None or self.end is None else self.end - self.start

    def row(self) -> dict[str, Any]:
        """The flat metrics row (JSON/CSV ready)."""
        reasons = "; ".join(self.placement.get("reasons", ())) if self.placement else ""
        return {
            "task_id": self.task_id, "kind": self.kind, "name": self.name, "pilot": self.pilot,
            "engine": self.engine, "devices": " ".join(self.devices), "submit": self.submit,
            "start": self.start, "end": self.end, "wait": self.wait, "execution": self.execution,
            "device_seconds": self.device_seconds, "status": self.status, "error": self.error,
            "batch": self.batch, "placement": reasons,
        }


class TaskFuture(Future):
    """The future of one task; ``record`` is its metrics row, ``task_id`` its id."""

    def __init__(self, record: TaskRecord):
        super().__init__()
        self.record = record
        self.task_id = record.task_id
        self._settle_lock = threading.Lock()
        self.observer: Any = None  # called as observer("running", record) once the task was sent

    def __repr__(self) -> str:
        r = self.record
        return f"<TaskFuture {r.task_id} {r.kind} {r.name!r} on {r.pilot} {r.status}>"

    @property
    def placement(self) -> dict | None:
        return self.record.placement

    def _mark_running(self) -> bool:
        """False if the task was cancelled before it left the queue."""
        with self._settle_lock:
            if self.cancelled() or not self.set_running_or_notify_cancel():
                return False
        self.record.status = "running"
        self.record.sent = time.time()
        return True

    def _notify_sent(self) -> None:
        """Tell the observer the task left its queue (called by the pilot after sending, outside
        its lock, so a listener never delays a send)."""
        if self.observer is not None:
            self.observer("running", self.record)

    def _settle(self, *, result: Any = None, error: BaseException | None = None) -> bool:
        """Complete once; later attempts (a stop racing a result) are ignored."""
        with self._settle_lock:
            if self.done():
                return False
            r = self.record
            if r.end is None:
                r.end = time.time()
            if error is not None:
                r.status = "failed"
                r.error = f"{type(error).__name__}: {error}"
                self.set_exception(error)
            else:
                r.status = "done"
                self.set_result(result)
            return True

    def cancel(self) -> bool:
        """Cancel the task if it has not left its pilot's queue; True if it is cancelled.

        Waiters (``wait``, ``as_completed``) see it done at once.
        """
        with self._settle_lock:
            if self.cancelled():
                return True
            before = self.record.status
            self.record.status = "cancelled"  # set first: the done callbacks (views) see it
            ok = super().cancel()
            if ok:
                self.set_running_or_notify_cancel()
            else:
                self.record.status = before  # CANCELLED -> CANCELLED_AND_NOTIFIED: wait() returns
            return ok


__all__ = [
    "TaskFuture", "TaskRecord", "wait", "as_completed", "next_task_id",
    "FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED", "FUNCTION", "SAMPLER", "ESTIMATOR",
]
