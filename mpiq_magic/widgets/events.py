"""The dashboard: several views shown together, each progress event routed to all of them.

The events themselves (their kinds and keys, :func:`~mpiq_magic.events.publish_event` on the
engines, :func:`~mpiq_magic.events.collect_events` on the client) are :mod:`mpiq_magic.events`.
"""

from __future__ import annotations

import gc

import time
from typing import Any, Callable, Mapping

from ..events import as_event, collect_events
from .base import LiveView


#: Released dashboards between two garbage collections (see :func:`_collect_released`).
COLLECT_EVERY = 8
_released = 0


def _collect_released() -> None:
    """Released dashboards' figures are reference cycles (plotly objects point at their parents,
    ~1,000 objects per figure); Python's full collection runs only once the long-lived heap grew
    by a quarter, so tens of cells' figures (several MiB) pile up first. A full collection every
    :data:`COLLECT_EVERY` releases bounds that, at ~0.1 s per collection in a kernel with qiskit."""
    global _released
    _released += 1
    if _released >= COLLECT_EVERY:
        _released = 0
        gc.collect()


class Dashboard:
    """Several views shown together; ``event()`` routes each event to all of them.

    ``dashboard.callback`` has ``run_ghz``'s ``progress(event, info)`` signature, and calling the
    dashboard with a dict (``dashboard(event)``) is the ``launch_job(progress=...)`` form.
    """

    def __init__(self, *views: LiveView, mode: str | None = None) -> None:
        if not views:
            raise ValueError("A dashboard needs at least one view.")
        self.views = list(views)
        self.mode = mode or views[0].mode
        self.errors: list[str] = []

    def event(self, event: Any, info: Mapping[str, Any] | None = None) -> None:
        """Route one event to every view; a view that fails is reported once, never raised."""
        ev = as_event(event, info)
        for view in self.views:
            try:
                view.event(ev)  # type: ignore[attr-defined]
            except Exception as exc:  # a bad event must not stop the run being watched
                message = f"[{view.name}:{ev.get('event')}] {type(exc).__name__}: {exc}"
                if message not in self.errors:
                    self.errors.append(message)

    __call__ = event

    @property
    def callback(self) -> Callable[[str, dict], None]:
        return self.event

    def follow(self, ar: Any, *, poll: float = 0.05, timeout: float | None = None, finish: bool = True) -> None:
        """Route the events engines publish while ipyparallel ``AsyncResult`` ``ar`` runs, until
        it is done (or ``timeout`` seconds pass); then :meth:`finish`. Does not raise the
        result's error: call ``ar.get()`` afterwards."""
        seen: set = set()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not ar.ready() and (deadline is None or time.monotonic() < deadline):
            for ev in collect_events(ar.data, seen):
                self.event(ev)
            ar.wait(poll)
        for ev in collect_events(ar.data, seen):
            self.event(ev)
        if finish:
            self.finish()

    def close(self) -> None:
        """Alias of :meth:`finish` (``launch_job`` calls ``progress.close()``)."""
        self.finish()

    def show(self) -> "Dashboard":
        if self.mode == "widget" and all(v.mode == "widget" for v in self.views):
            import ipywidgets as W
            from IPython.display import display

            for v in self.views:
                v._shown = True
            self._box = W.VBox([v.widget for v in self.views])
            self._handle = display(self._box, display_id=True)
        else:
            for v in self.views:
                v.show()
        return self

    def flush(self) -> None:
        for v in self.views:
            v.flush()

    def finish(self) -> None:
        for v in self.views:
            v.finish()

    def release(self, keep: Any = ()) -> None:
        """Finish, then free the live widgets: the output keeps a static copy of the final
        state (figure and summary) and the ipywidgets are closed, so a notebook running many
        cells does not accumulate widget models. Views in ``keep`` (shared with other
        dashboards) stay live."""
        self.finish()
        keep_ids = {id(v) for v in keep if v is not None}
        own = [v for v in self.views if id(v) not in keep_ids]
        handle = getattr(self, "_handle", None)
        if handle is not None:
            from .fallback import static_bundle

            bundles = []
            for v in own:
                try:
                    with v._lock:
                        bundles.append(static_bundle(v.figure(), v.summary(), cdn=False))
                except Exception:  # a view that cannot draw still gets released
                    pass
            if bundles:
                merged = dict(bundles[0])
                merged["text/plain"] = "\n".join(b["text/plain"] for b in bundles)
                merged["text/html"] = "".join(b["text/html"] for b in bundles)
                try:
                    handle.update(merged, raw=True)
                except Exception:
                    pass
            self._handle = None
        box = getattr(self, "_box", None)
        if box is not None:
            from .base import close_tree

            box.children = ()  # the shared views inside stay open
            close_tree(box)  # the box and its layout
            self._box = None
        for v in own:
            v.release()
        _collect_released()
