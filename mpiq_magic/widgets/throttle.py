"""Coalescing rate limiter for view refreshes.

``poke()`` says "the state changed". The refresh function runs at once if the last run is at
least ``1 / max_rate`` seconds old (leading edge, in the caller's thread); otherwise the request
is coalesced with any others and, when ``trailing`` is on, a daemon timer runs the refresh once
the interval has passed, so the last state is always shown even if no further change comes.
``poke()`` never waits for a refresh in progress on another thread, so producers (the magics'
polling loop, a progress callback) are never blocked by the frontend.
"""

from __future__ import annotations

import threading
import time
import warnings
from typing import Callable


class Throttle:
    """Run ``fn`` at most ``max_rate`` times per second, coalescing the requests in between."""

    def __init__(
        self,
        fn: Callable[[], None],
        max_rate: float = 10.0,
        *,
        trailing: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_rate <= 0:
            raise ValueError(f"max_rate must be a positive number of refreshes per second, got {max_rate!r}.")
        self._fn = fn
        self.interval = 1.0 / max_rate
        self.trailing = trailing
        self._clock = clock
        self._state = threading.Lock()  # guards the fields below
        self._running = threading.Lock()  # held while fn runs
        self._pending = False
        self._last = float("-inf")
        self._timer: threading.Timer | None = None
        self._closed = False
        self.requests = 0  # poke() calls
        self.calls = 0  # fn runs
        self.last_error: BaseException | None = None
        self._warned = False

    @property
    def pending(self) -> bool:
        """True while a change has not been shown yet."""
        return self._pending

    def poke(self) -> None:
        """Note a change; refresh now if allowed, else coalesce (and schedule a trailing run)."""
        with self._state:
            self.requests += 1
            self._pending = True
            if self._closed:
                return
            wait = self._last + self.interval - self._clock()
            if wait > 0:
                if self.trailing and self._timer is None:
                    self._timer = threading.Timer(wait, self._fire)
                    self._timer.daemon = True
                    self._timer.start()
                return
        self._run(block=False)

    def flush(self) -> None:
        """Run ``fn`` now if a change is pending (waits for a run in progress elsewhere)."""
        self._cancel_timer()
        self._run(block=True)

    def close(self) -> None:
        """Flush, then stop: later pokes are recorded but never shown."""
        self.flush()
        with self._state:
            self._closed = True
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        with self._state:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _fire(self) -> None:
        with self._state:
            self._timer = None
        self._run(block=False)

    def _run(self, *, block: bool) -> None:
        if not self._running.acquire(blocking=block):
            # Another thread is refreshing; make sure the change it may have missed is shown.
            with self._state:
                if self.trailing and self._timer is None and not self._closed:
                    self._timer = threading.Timer(self.interval, self._fire)
                    self._timer.daemon = True
                    self._timer.start()
            return
        try:
            with self._state:
                if not self._pending:
                    return
                self._pending = False
                self._last = self._clock()
                self.calls += 1
            try:
                self._fn()
            except Exception as exc:  # a display problem must never break the computation
                self.last_error = exc
                if not self._warned:
                    self._warned = True
                    warnings.warn(
                        f"mpiq widget refresh failed and later failures are not reported: "
                        f"{type(exc).__name__}: {exc}",
                        RuntimeWarning,
                        stacklevel=3,
                    )
        finally:
            self._running.release()
