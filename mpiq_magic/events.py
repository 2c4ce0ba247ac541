"""The progress-event vocabulary shared by the cluster, the GHZ job and the widgets.

Events are small JSON-ready dicts with an ``"event"`` key. Engines publish them (ipyparallel's
``publish_data``), ``run_ghz(progress=...)`` emits them, ``mpiq_magic.ghz.job`` prints them as
``MPIQ-PROGRESS`` lines; :class:`~mpiq_magic.cluster.HybridCluster` hands each one to its progress
callbacks (:data:`ProgressCallback`). Consumers ignore kinds they do not know: the views of
:mod:`mpiq_magic.widgets`, and :class:`TextProgress` (one line per event that matters) when no
widget frontend is there.

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
executed    ``qrank``, ``block``, ``done``, ``total``, ``seconds``  ghz, progress, distribute,
                                                                    topology (idle when done ==
                                                                    total)
gather      ``monitors``                                            ghz, progress, topology (idle)
reconstruct ``p_all_zero``, ``p_all_one``                           ghz, progress
barrier     ``record`` (``BarrierRecord.to_dict()``)                barrier
partition   ``widgets.distribute.partition_dict()``: assignment,    partition, distribute
            e-bits per layer, feed-forward cuts, blocks
plan        ``summary``, ``partition`` (a distributed run planned)  distribute
result      ``result`` (``GHZResult.to_dict()``)                    ghz, progress, barrier
=========== ======================================================= ===========================

From engines: ipyparallel merges each engine's published dicts (a later value replaces an earlier
one under the same key), so :func:`publish_event` publishes every event under its own key, and
:func:`collect_events` (or ``mpiq_magic.widgets.Dashboard.follow``) reads the new ones back from
``AsyncResult.data``.
"""

from __future__ import annotations

import itertools
import sys
import time
from typing import Any, Callable, Iterable, Mapping, TextIO

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


# ----------------------------------------------------------------------------- text progress
ProgressCallback = Callable[[Mapping[str, Any]], None]


def describe(event: Mapping[str, Any]) -> str | None:
    """One line for an event, or None for events not worth a line."""
    kind = event.get("event")
    if kind == "scatter":
        size = f" ({event['bytes']} bytes)" if "bytes" in event else ""
        return f"scatter: payloads to {event.get('monitors', '?')} monitor(s){size}"
    if kind == "executed":
        secs = event.get("seconds")
        took = f" ({secs * 1e3:.1f} ms)" if isinstance(secs, (int, float)) else ""
        return f"qrank {event.get('qrank')}: {event.get('done')}/{event.get('total')} done{took}"
    if kind == "barrier":
        rec = event.get("record") or {}
        skew = rec.get("skew")
        s = f", release skew {skew * 1e6:.1f} us" if isinstance(skew, (int, float)) else ""
        return f"barrier {rec.get('flag', '')} {event.get('index', 0) + 1}/{event.get('of', 1)}{s}"
    if kind == "cut":
        return f"ghz: {event.get('qubits')} qubits cut into {event.get('blocks')} block(s)"
    if kind == "compile":
        return f"compile: {event.get('blocks')} block(s), {event.get('compiled')} transpiled"
    if kind == "reconstruct":
        return f"reconstruct: P(0...0)={event.get('p_all_zero', 0):.4f} P(1...1)={event.get('p_all_one', 0):.4f}"
    if kind == "partition":
        cuts = [c for c in event.get("cuts") or () if c.get("mode") != "local"]
        return (f"partition: {event.get('method')}, {event.get('num_qubits')} qubits x {event.get('num_layers')} "
                f"layers on {len(event.get('capacities') or ())} monitor(s), {event.get('ebits')} e-bits"
                + (f", {len(cuts)} feed-forward cut(s)" if "cuts" in event else ""))
    if kind == "status" and event.get("status") == "dead":
        return f"{event.get('who')} is dead{': ' + event['detail'] if event.get('detail') else ''}"
    return None


class TextProgress:
    """Print ``[mpiq] ...`` lines for progress events; repetitive events are throttled."""

    def __init__(self, stream: TextIO | None = None, interval: float = 0.5):
        self.stream = stream
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, str] = {}

    def __call__(self, event: Mapping[str, Any]) -> None:
        line = describe(event)
        if line is None:
            return
        kind = str(event.get("event"))
        now = time.monotonic()
        repetitive = kind in ("executed", "barrier")
        if repetitive and now - self._last.get(kind, -1e9) < self.interval and not _final(event):
            self._held[kind] = line
            return
        self._held.pop(kind, None)
        self._last[kind] = now
        self._print(line)

    def close(self) -> None:
        """Print the last held line of every throttled event kind."""
        for line in self._held.values():
            self._print(line)
        self._held.clear()

    def _print(self, line: str) -> None:
        print(f"[mpiq] {line}", file=self.stream or sys.stdout, flush=True)


def _final(event: Mapping[str, Any]) -> bool:
    if event.get("event") == "executed":
        return event.get("done") == event.get("total")
    if event.get("event") == "barrier":
        return event.get("index", 0) + 1 == event.get("of", 1)
    return False
