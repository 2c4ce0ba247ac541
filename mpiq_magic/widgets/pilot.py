"""Live view of pilot tasks: a table (one row per task) and a timeline (a Gantt chart per pilot and
device), fed by the :class:`~mpiq_magic.pilot.PilotManager`'s task events.

``PilotView(pm).show()`` subscribes to ``pm`` (``pm.subscribe``): every submit, start and
completion schedules a refresh (one timer per refresh interval, so the rendering never runs on
the pilot's own threads) through the view's throttle (at most 10 refreshes a second in widget
mode, see :mod:`.throttle`); there is no polling. The rows are the pilot's own metrics rows
(:meth:`TaskRecord.row <mpiq_magic.pilot.TaskRecord.row>`), read when the view refreshes, so the
view always equals ``pm.metrics()``. In widget mode the table is an ``ipywidgets.HTML`` and the
timeline a plotly ``FigureWidget`` updated in place; without a widget frontend the view is a
static figure plus the text table (see :mod:`.fallback`).

The figure and the table are also pure functions of the rows: :func:`pilot_timeline_figure`,
:func:`pilot_table_html`.
"""

from __future__ import annotations

import html
import threading
import time
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .base import FigureSync, LiveView, figure_widget

if TYPE_CHECKING:
    import ipywidgets
    import plotly.graph_objects as go

#: Table columns: (row key, heading).
TABLE_COLUMNS = (
    ("task_id", "task"), ("pilot", "pilot"), ("devices", "device(s)"), ("submit", "submit"),
    ("wait", "wait"), ("execution", "execution"), ("status", "status"), ("error", "error"),
)
#: Timeline traces, in this fixed order (a live figure keeps its traces): meta -> (label, colour).
TRACES = {
    "mpiq-pilot-wait": ("waiting", "#c7d3e3"),
    "mpiq-pilot-running": ("running", "#f2a541"),
    "mpiq-pilot-done": ("done", "#2e7d32"),
    "mpiq-pilot-failed": ("failed", "#c62828"),
    "mpiq-pilot-cancelled": ("cancelled", "#9e9e9e"),
}
_ORDER = {"mpiq-pilot-done": "done", "mpiq-pilot-failed": "failed", "mpiq-pilot-cancelled": "cancelled"}


def lane(row: Mapping[str, Any]) -> str:
    """The timeline row of a task: ``pilot · device`` (quantum) or ``pilot · engine e`` (function)."""
    pilot = row.get("pilot") or "?"
    if row.get("kind") != "function" and row.get("devices"):
        return f"{pilot} · {row['devices']}"
    if row.get("engine") is not None:
        return f"{pilot} · engine {row['engine']}"
    return f"{pilot} · queue"


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v * 1e3:.1f} ms"


def _bars(rows: Sequence[Mapping[str, Any]], now: float) -> tuple[dict[str, dict[str, list]], list[str], float]:
    """Per trace meta: lanes (y), bases and lengths (seconds from the first submit), hover text."""
    origin = min((r["submit"] for r in rows), default=now)
    out = {meta: {"y": [], "base": [], "x": [], "text": []} for meta in TRACES}

    def add(meta: str, r: Mapping[str, Any], a: float, b: float) -> None:
        t = out[meta]
        t["y"].append(lane(r))
        t["base"].append(round(a - origin, 6))
        t["x"].append(round(max(b - a, 1e-4), 6))  # a zero-length bar is invisible
        t["text"].append(f"{r['task_id']} {r.get('name') or ''} · {r['status']}"
                         + (f" · {str(r['error'])[:80]}" if r.get("error") else ""))

    for r in rows:
        status, start, end = r["status"], r.get("start"), r.get("end")
        if status == "cancelled":
            add("mpiq-pilot-cancelled", r, r["submit"], end or r["submit"])
            continue
        add("mpiq-pilot-wait", r, r["submit"], start if start is not None else (end or now))
        if start is None:
            continue
        if status in ("done", "failed"):
            add(f"mpiq-pilot-{status}", r, start, end or start)
        else:
            add("mpiq-pilot-running", r, start, now)
    lanes = sorted({y for t in out.values() for y in t["y"]})
    return out, lanes, origin


def _title(rows: Sequence[Mapping[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return f"{len(rows)} task(s)" + (f": {parts}" if parts else "")


def _traces_and_layout(rows: Sequence[Mapping[str, Any]], now: float) -> tuple[list[dict], dict]:
    bars, lanes, _ = _bars(rows, now)
    traces = []
    for meta, (label, colour) in TRACES.items():
        b = bars[meta]
        traces.append({
            "type": "bar", "orientation": "h", "name": label, "meta": meta, "y": b["y"], "base": b["base"],
            "x": b["x"], "hovertext": b["text"], "hoverinfo": "text+x", "marker": {"color": colour},
            "width": 0.35 if meta == "mpiq-pilot-wait" else 0.7, "showlegend": True,
        })
    layout = {
        "title": {"text": html.escape(_title(rows)), "font": {"size": 14}},
        "height": max(220, 36 * len(lanes) + 140),
        "yaxis": {"categoryorder": "array", "categoryarray": list(reversed(lanes)), "title": {"text": ""}},
    }
    return traces, layout


def pilot_timeline_figure(rows: Sequence[Mapping[str, Any]], now: float | None = None) -> "go.Figure":
    """A Gantt chart of metrics rows: one row per pilot and device (quantum tasks) or classical
    engine (function tasks); light bars are waits (submit -> start), dark bars executions
    (start -> end, or -> ``now`` while running), coloured by status; seconds from the first submit."""
    import plotly.graph_objects as go

    traces, layout = _traces_and_layout(rows, time.time() if now is None else now)
    fig = go.Figure([go.Bar(**{k: v for k, v in t.items() if k != "type"}) for t in traces])
    fig.update_layout(
        barmode="overlay", template="plotly_white", xaxis={"title": {"text": "seconds from the first submit"},
                                                           "rangemode": "tozero"},
        legend={"orientation": "h", "y": -0.25}, margin={"l": 150, "r": 20, "t": 50, "b": 60},
        meta={"mpiq": "pilot-timeline"}, **layout,
    )
    return fig


def pilot_table_html(rows: Sequence[Mapping[str, Any]], limit: int = 50) -> str:
    """An HTML table of the last ``limit`` rows (submit in seconds from the first submit)."""
    origin = min((r["submit"] for r in rows), default=0.0)
    shown = list(rows)[-limit:]
    head = "".join(f"<th>{h}</th>" for _, h in TABLE_COLUMNS)
    body = []
    for r in shown:
        cells = []
        for key, _ in TABLE_COLUMNS:
            v = r.get(key)
            if key == "submit":
                text = f"{v - origin:.3f} s"
            elif key in ("wait", "execution"):
                text = _ms(v)
            else:
                text = "" if v is None else str(v)
                if key == "error":
                    text = text.splitlines()[0][:120] if text else ""
            cells.append(f'<td class="mpiq-pilot-{key}">{html.escape(text)}</td>')
        body.append(f'<tr class="mpiq-pilot-{html.escape(str(r["status"]))}">{"".join(cells)}</tr>')
    more = f"<caption>last {len(shown)} of {len(rows)} task(s)</caption>" if len(rows) > len(shown) else ""
    return (f'<table class="mpiq-pilot-table" style="font-size:12px">{more}<thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


class PilotView(LiveView):
    """The live table + timeline of a :class:`~mpiq_magic.pilot.PilotManager`'s tasks.

    ``limit``: rows shown in the table (the last ones; the timeline shows every task).
    :meth:`close` unsubscribes (also done by :meth:`release`).
    """

    name = "pilot"

    def __init__(self, manager: Any, *, limit: int = 50, mode: str | None = "auto", max_rate: float | None = None):
        super().__init__(mode=mode, max_rate=max_rate)
        self.manager = manager
        self.limit = int(limit)
        self._records: dict[str, Any] = {}
        self._order: list[str] = []
        self._header: ipywidgets.HTML | None = None
        self._table: ipywidgets.HTML | None = None
        self._fig: go.FigureWidget | None = None
        self._sync: FigureSync | None = None
        self.events = 0
        self._defer: threading.Timer | None = None
        self._defer_lock = threading.Lock()
        with self._lock:
            for fut in list(manager.tasks):
                self._add(fut.record)
        self._unsubscribe = manager.subscribe(self._on_event)

    # ------------------------------------------------------------------ data
    def _add(self, record: Any) -> None:
        if record.task_id not in self._records:
            self._records[record.task_id] = record
            self._order.append(record.task_id)

    def _on_event(self, event: str, record: Any) -> None:
        """A task moved (the manager's listener, on a pilot's thread): remember it and schedule a
        refresh on a timer thread — rendering never runs on the pilot's threads."""
        with self._lock:
            self._add(record)
            self.events += 1
        with self._defer_lock:
            if self._defer is None:
                self._defer = threading.Timer(self._throttle.interval, self._deferred)
                self._defer.daemon = True
                self._defer.start()

    def _deferred(self) -> None:
        with self._defer_lock:
            self._defer = None
        self._changed()  # the throttle refreshes now (its interval has passed) or coalesces

    def _drain(self) -> None:
        """Hand a scheduled refresh to the throttle now (before flush/finish)."""
        with self._defer_lock:
            timer, self._defer = self._defer, None
        if timer is not None:
            timer.cancel()
            self._changed()

    def flush(self) -> None:
        self._drain()
        super().flush()

    def finish(self) -> None:
        self._drain()
        super().finish()

    def rows(self) -> list[dict[str, Any]]:
        """The metrics rows of every task the view knows, in task-id order (as ``pm.metrics()``)."""
        with self._lock:
            records = [self._records[t] for t in self._order]
        rows = [r.row() for r in records]
        rows.sort(key=lambda r: int(str(r["task_id"]).rsplit(".", 1)[-1]))
        return rows

    def close(self) -> None:
        """Stop following the manager (the last state stays shown)."""
        self._unsubscribe()
        self.flush()

    def release(self) -> None:
        self._unsubscribe()
        self._drain()
        super().release()

    # ------------------------------------------------------------------ rendering
    def figure(self) -> "go.Figure":
        return pilot_timeline_figure(self.rows())

    def summary(self) -> str:
        from ..pilot.metrics import text_table

        rows = self.rows()
        return text_table(rows, limit=self.limit) if rows else "(no tasks yet)"

    def _build_panel(self) -> "ipywidgets.Widget":
        import ipywidgets as W

        rows, now = self.rows(), time.time()
        self._header = W.HTML()
        self._table = W.HTML(layout=W.Layout(max_height="320px", overflow="auto"))
        self._fig = figure_widget(pilot_timeline_figure(rows, now))
        self._sync = FigureSync(self._fig, *_traces_and_layout(rows, now))
        return W.VBox([self._header, self._fig, self._table], layout=W.Layout(width="100%"))

    def _sync_panel(self) -> None:
        assert self._fig is not None and self._sync is not None and self._table is not None
        rows = self.rows()
        traces, layout = _traces_and_layout(rows, time.time())
        self._sync.apply(traces, layout)
        self._table.value = pilot_table_html(rows, self.limit)
        self._header.value = f'<span class="mpiq-pilot-header">{html.escape(_title(rows))}</span>'
