"""Progress events and the dashboard that routes them to the views.

Events are small JSON-ready dicts with an ``"event"`` key. Engines publish them (ipyparallel's
``publish_data``), ``run_ghz(progress=...)`` emits them, ``mpiq_magic.ghz.job`` prints them as
``MPIQ-PROGRESS`` lines; every view's ``event()`` ignores kinds it does not know.

=========== ======================================================= ===========================
event       other keys                                              views
=========== ======================================================= ===========================
topology    ``topology`` (``Topology.to_dict()``)                   topology
status      ``who`` ('rank 0', 'qrank 1', comm rank), ``status``    topology
            ('idle' | 'busy' | 'dead'), optional ``detail``
run         ``index``, ``of``, ``label``                            progress
cut         ``qubits``, ``blocks``                                  ghz, progress
compile     ``blocks``, ``compiled``                                ghz, progress
scatter     ``monitors``, ``bytes``                                 ghz, progress, topology (busy)
executed    ``qrank``, ``block``, ``done``, ``total``, ``seconds``  ghz, progress, topology (idle
                                                                    when done == total)
gather      ``monitors``                                            ghz, progress, topology (idle)
reconstruct ``p_all_zero``, ``p_all_one``                           ghz, progress
barrier     ``record`` (``BarrierRecord.to_dict()``)                barrier
result      ``result`` (``GHZResult.to_dict()``)                    ghz, progress, barrier
=========== ======================================================= ===========================

From engines: ipyparallel merges each engine's published dicts (a later value replaces an earlier
one under the same key), so :func:`publish_event` publishes every event under its own key, and
:func:`collect_events` / :meth:`Dashboard.follow` read the new ones back from ``AsyncResult.data``.
"""

from __future__ import annotations

import itertools
import sys
import time
from typing import Any, Callable, Iterable, Mapping

from .base import LiveView

EVENT_KEY = "mpiq-event-"
_counter = itertools.count()


def publish_event(event: str | Mapping[str, Any], info: Mapping[str, Any] | None = None) -> None:
    """Engine side: publish one progress event to the client (ipyparallel ``publish_data``).

    Has ``run_ghz``'s ``progress(event, info)`` signature: ``run_ghz(hc, ..., progress=publish_event)``.
    Outside an ipyparallel engine it does nothing.
    """
    pub = _engine_data_publisher()
    if pub is None:
        return
    ev = as_event(event, info)
    ev.setdefault("t", time.time())
    pub.publish_data({f"{EVENT_KEY}{next(_counter):08d}": ev})


def _engine_data_publisher() -> Any | None:
    """The ipyparallel engine's data publisher, or None when this process is not an engine."""
    shell_cls = getattr(sys.modules.get("ipykernel.zmqshell"), "ZMQInteractiveShell", None)
    if shell_cls is None or not shell_cls.initialized():
        return None
    pub = getattr(shell_cls.instance(), "_data_pub", None)  # set by ipyparallel's engine kernel
    return pub if pub is not None and type(pub).__module__.startswith("ipyparallel") else None


def collect_events(data: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None, seen: set) -> list[dict[str, Any]]:
    """Client side: the events in ``AsyncResult.data`` (one dict, or one per engine) not in ``seen``,
    oldest first. ``seen`` is updated; pass the same set on every poll."""
    if data is None:
        return []
    per_engine = [data] if isinstance(data, Mapping) else list(data)
    new = []
    for engine, d in enumerate(per_engine):
        for key, ev in list((d or {}).items()):
            if isinstance(key, str) and key.startswith(EVENT_KEY) and (engine, key) not in seen:
                seen.add((engine, key))
                new.append((ev.get("t", 0.0) if isinstance(ev, Mapping) else 0.0, engine, key, ev))
    new.sort(key=lambda item: item[:3])
    return [dict(ev) for *_, ev in new if isinstance(ev, Mapping)]


def as_event(event: Any, info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Normalise ``("executed", {...})`` (``run_ghz``'s callback form) or a dict to one dict."""
    if isinstance(event, str):
        return {"event": event, **(info or {})}
    if isinstance(event, Mapping) and "event" in event:
        return dict(event)
    raise TypeError(f"A progress event is a dict with an 'event' key or (name, info), got {event!r}.")


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
            display(W.VBox([v.widget for v in self.views]))
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
