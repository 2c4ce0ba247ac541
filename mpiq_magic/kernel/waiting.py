"""Polling waits with a deadline: every blocking MPI-Q call goes through here.

For the first millisecond the loop spins, yielding the core between tests (low latency when a
core is free, and an oversubscribed peer still gets to run); after that it sleeps with a
growing interval, so long waits cost no CPU.

Every wait also drives the progress engines of this process (:data:`ENGINES`): a receive
posted with ``irecv``/``Irecv`` keeps matching messages while the process blocks in any other
MPI-Q call, as a posted receive does in MPI.
"""

from __future__ import annotations

import os
import time
from typing import Callable, TypeVar

from .errors import UsageError

T = TypeVar("T")

DEFAULT_TIMEOUT = float(os.environ.get("MPIQ_TIMEOUT", "120"))
_SPIN_SECONDS = 1e-3
_PURE_SPIN_SECONDS = 50e-6
_MAX_SLEEP = 1e-3

#: Progress engines with receives still pending (see :mod:`.requests`); empty most of the time.
ENGINES: list = []


def progress() -> None:
    """Let every pending non-blocking receive of this process match what has arrived."""
    for engine in tuple(ENGINES):
        engine.progress()


class Deadline:
    """A point in time after which a wait gives up."""

    __slots__ = ("timeout", "end")

    def __init__(self, timeout: float | None):
        self.timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
        if self.timeout <= 0:
            raise UsageError(f"A timeout must be > 0 seconds, got {self.timeout!r}.")
        self.end = time.monotonic() + self.timeout

    def expired(self) -> bool:
        return time.monotonic() >= self.end


def poll(test: Callable[[], T | None], deadline: Deadline) -> T | None:
    """Call ``test`` until it returns something other than None, or the deadline passes.

    Returns the result, or None on expiry (the caller builds the error: it knows who is missing).
    """
    result = test()
    if result is not None:
        return result
    start = time.monotonic()
    pause = 10e-6
    engines = ENGINES
    while True:
        if engines:
            progress()
        result = test()
        if result is not None:
            return result
        now = time.monotonic()
        if now >= deadline.end:
            return None
        if now - start > _SPIN_SECONDS:
            time.sleep(min(pause, max(deadline.end - now, 0)))
            pause = min(pause * 2, _MAX_SLEEP)
        elif now - start > _PURE_SPIN_SECONDS:
            os.sched_yield()
