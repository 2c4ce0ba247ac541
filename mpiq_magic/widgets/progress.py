"""Progress of long scatters and GHZ runs: blocks done / total overall and per monitor."""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING, Any, Mapping

from .base import LiveView

if TYPE_CHECKING:
    import ipywidgets
    import plotly.graph_objects as go


class _State:
    def __init__(self) -> None:
        self.label = ""
        self.total = 0
        self.done = 0
        self.stage = "waiting"
        self.monitors: dict[int, list[int]] = {}  # qrank -> [done, total]
        self.started = time.monotonic()
        self.finished: float | None = None

    def line(self) -> str:
        elapsed = (self.finished or time.monotonic()) - self.started
        head = f"{self.label}: " if self.label else ""
        return f"{head}{self.done}/{self.total or '?'} blocks done · {self.stage} · {elapsed:.1f} s"


def progress_figure(monitors: Mapping[int, tuple[int, int]] | Mapping[int, list[int]], title: str = "") -> "go.Figure":
    """Static figure: one horizontal bar per monitor, done out of its total."""
    import plotly.graph_objects as go

    q = sorted(monitors)
    names = [f"qrank {j}" for j in q]
    done = [monitors[j][0] for j in q]
    total = [monitors[j][1] for j in q]
    fig = go.Figure([
        go.Bar(y=names, x=total, orientation="h", name="assigned", marker_color="#e0e0e0", meta="mpiq-progress-total"),
        go.Bar(y=names, x=done, orientation="h", name="done", marker_color="#2ca02c", meta="mpiq-progress-done",
               text=[f"{d}/{t}" for d, t in zip(done, total)], textposition="inside"),
    ])
    fig.update_layout(
        title={"text": html.escape(title), "font": {"size": 14}}, barmode="overlay", template="plotly_white",
        height=max(200, 40 * len(q) + 120), xaxis={"title": {"text": "blocks"}, "rangemode": "tozero"},
        yaxis={"autorange": "reversed"}, margin={"l": 70, "r": 20, "t": 50, "b": 40}, meta={"mpiq": "progress"},
    )
    return fig


class ProgressWidget(LiveView):
    """Live progress bars: overall blocks done / total, and one bar per monitor."""

    name = "progress"

    def __init__(self, total: int = 0, *, label: str = "", monitors: int | None = None, mode: str | None = "auto",
                 max_rate: float | None = None) -> None:
        super().__init__(mode=mode, max_rate=max_rate)
        self._state = _State()
        self._rows: dict[int, tuple[Any, Any, Any]] = {}
        self._bar: ipywidgets.IntProgress | None = None
        self._header: ipywidgets.HTML | None = None
        self._box: ipywidgets.VBox | None = None
        self.start(total, label=label, monitors=monitors)

    @property
    def done(self) -> int:
        return self._state.done

    @property
    def total(self) -> int:
        return self._state.total

    @property
    def monitors(self) -> dict[int, tuple[int, int]]:
        with self._lock:
            return {j: (d, t) for j, (d, t) in self._state.monitors.items()}

    def start(self, total: int, *, label: str | None = None, monitors: int | None = None) -> None:
        """(Re)start counting ``total`` blocks; ``monitors`` pre-creates one row per qrank."""
        if total < 0:
            raise ValueError(f"The total number of blocks cannot be negative, got {total}.")
        with self._lock:
            s = self._state
            s.total, s.done, s.stage, s.finished = int(total), 0, "running" if total else "waiting", None
            s.started = time.monotonic()
            if label is not None:
                s.label = label
            s.monitors = {j: [0, 0] for j in range(monitors or 0)}
        self._changed()

    def advance(self, qrank: int | None = None, *, done: int | None = None, total: int | None = None,
                blocks: int = 1) -> None:
        """Count ``blocks`` more blocks done; with ``qrank``, that monitor's count becomes ``done``
        of ``total`` when given (else it grows by ``blocks``)."""
        with self._lock:
            s = self._state
            s.done += blocks
            s.total = max(s.total, s.done)
            if qrank is not None:
                row = s.monitors.setdefault(int(qrank), [0, 0])
                row[0] = int(done) if done is not None else row[0] + blocks
                row[1] = max(int(total) if total is not None else row[1], row[0])
            s.stage = "executing"
        self._changed()

    def set_stage(self, stage: str) -> None:
        with self._lock:
            self._state.stage = stage
        self._changed()

    def complete(self, stage: str = "done") -> None:
        """Mark the run finished (the elapsed time stops)."""
        with self._lock:
            self._state.stage = stage
            self._state.finished = time.monotonic()
        self._changed()

    def event(self, event: Mapping[str, Any]) -> None:
        """Apply a progress event (see :mod:`mpiq_magic.events`)."""
        kind = event.get("event")
        if kind == "cut":
            self.start(int(event.get("blocks") or 0))
            self.set_stage("cut")
        elif kind == "run":
            self.start(self.total, label=str(event.get("label") or f"run {event.get('index', 0) + 1}"))
        elif kind == "executed" and self._state.finished is None:  # late events of a finished run: stale
            self.advance(event.get("qrank"), done=event.get("done"), total=event.get("total"))
        elif kind in ("compile", "scatter", "gather", "reconstruct", "barrier"):
            self.set_stage({"compile": "compiled", "scatter": "scattered, executing", "gather": "gathered",
                            "reconstruct": "reconstructed", "barrier": "barrier"}[kind])
        elif kind == "result":
            self.complete()

    # ------------------------------------------------------------------ rendering
    def figure(self) -> "go.Figure":
        with self._lock:
            return progress_figure(self._state.monitors, self._state.line())

    def summary(self) -> str:
        with self._lock:
            s = self._state
            lines = [s.line()]
            for j in sorted(s.monitors):
                d, t = s.monitors[j]
                lines.append(f"  qrank {j}: {d}/{t}")
            return "\n".join(lines)

    def _text_progress(self) -> str | None:
        with self._lock:
            return f"[mpiq] {self._state.line()}"

    def _build_panel(self) -> "ipywidgets.Widget":
        import ipywidgets as W

        self._header = W.HTML()
        self._bar = W.IntProgress(min=0, max=1, value=0, bar_style="info", layout=W.Layout(width="60%"))
        self._box = W.VBox([])
        return W.VBox([self._header, self._bar, self._box], layout=W.Layout(width="100%"))

    def _sync_panel(self) -> None:
        import ipywidgets as W

        assert self._header is not None and self._bar is not None and self._box is not None
        s = self._state
        self._header.value = f'<span class="mpiq-progress-header">{html.escape(s.line())}</span>'
        self._bar.max = max(s.total, 1)
        self._bar.value = min(s.done, self._bar.max)
        self._bar.bar_style = "success" if s.total and s.done >= s.total else "info"
        added = False
        for j in sorted(s.monitors):
            d, t = s.monitors[j]
            if j not in self._rows:
                bar = W.IntProgress(min=0, max=1, value=0, layout=W.Layout(width="40%"))
                text = W.Label()
                row = W.HBox([W.Label(f"qrank {j}", layout=W.Layout(width="5em")), bar, text])
                self._rows[j] = (bar, text, row)
                added = True
            bar, text, _ = self._rows[j]
            bar.max = max(t, 1)
            bar.value = min(d, bar.max)
            bar.bar_style = "success" if t and d >= t else ""
            text.value = f"{d}/{t}"
        if added:
            self._box.children = [self._rows[j][2] for j in sorted(self._rows)]
