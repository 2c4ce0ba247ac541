"""Text progress for cluster operations (the widgets in :mod:`mpiq_magic.widgets` render the same events).

Engines publish small event dicts (see :mod:`mpiq_magic.widgets.events` for the vocabulary);
:class:`~mpiq_magic.cluster.HybridCluster` hands each one to its progress callbacks.
:class:`TextProgress` is the callback used when no widget frontend is there: one line per
event that matters, at most one line per ``interval`` seconds for repetitive events.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Mapping, TextIO

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
