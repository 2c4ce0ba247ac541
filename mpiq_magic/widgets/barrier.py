"""Barrier timing: per-process arrival and release on a shared time axis for the last K
barriers (CC / QQ / ALL in their own colours), and the distribution of release skew."""

from __future__ import annotations

import statistics
from collections import deque
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .base import FigureSync, LiveView, figure_widget

if TYPE_CHECKING:
    import ipywidgets
    import plotly.graph_objects as go

FLAGS = ("CC", "QQ", "ALL")
FLAG_COLORS = {"CC": "#1f77b4", "QQ": "#d62728", "ALL": "#9467bd"}
DEFAULT_KEEP = 20
MAX_SKEWS = 100_000  # skews kept for the distribution
SKEW_FLOOR_US = 0.01  # zero skew (a single member) drawn here on the log axis


# ----------------------------------------------------------------------------- data
def member_label(name: str) -> str:
    """'qrank 2 (device 127.0.0.1:2)' -> 'qrank 2': one row per process across barrier kinds."""
    return str(name).split(" (")[0]


def record_dict(record: Any) -> dict[str, Any] | None:
    """A ``BarrierRecord`` or its ``to_dict()`` as a normalised dict; None for a non-member's
    empty record."""
    if hasattr(record, "to_dict"):
        record = record.to_dict()
    if not isinstance(record, Mapping):
        raise TypeError(f"A barrier record must be a BarrierRecord or its to_dict(), got {type(record).__name__}.")
    members = [member_label(m) for m in record.get("members") or []]
    if not members:
        return None
    flag = str(record.get("flag", "?")).upper()
    flag = flag.split(".")[-1]  # 'BarrierFlag.QQ' -> 'QQ'
    arrivals = [float(a) for a in record["arrivals"]]
    releases = record.get("releases")
    releases = [float(r) for r in releases] if releases else None
    if len(arrivals) != len(members) or (releases is not None and len(releases) != len(members)):
        raise ValueError(
            f"Barrier record {flag} #{record.get('seq')} has {len(members)} members but "
            f"{len(arrivals)} arrivals and {len(releases or [])} releases."
        )
    skew = max(releases) - min(releases) if releases else None
    return {
        "flag": flag, "seq": int(record.get("seq", 0)), "members": members, "arrivals": arrivals,
        "releases": releases, "trigger": record.get("trigger"), "skew": skew,
    }


def _records(records: Iterable[Any]) -> list[dict[str, Any]]:
    out = []
    for r in records:
        d = record_dict(r)
        if d is not None:
            out.append(d)
    return out


def process_order(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every process seen, classical ranks first, each group by number."""
    seen = {m for r in records for m in r["members"]}

    def key(name: str) -> tuple:
        kind, _, num = name.partition(" ")
        return (kind != "rank", kind, int(num) if num.isdigit() else 0, name)

    return sorted(seen, key=key)


def _fmt_us(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:.1f} µs"


def barrier_traces(recent: list[Mapping[str, Any]], skews: Mapping[str, list[float]], origin: float | None) -> list[dict]:
    """Trace properties in figure order: one timeline trace per flag, one skew box per flag."""
    t0 = origin if origin is not None else min((min(r["arrivals"]) for r in recent), default=0.0)
    traces: list[dict] = []
    for flag in FLAGS:
        xs: list[float | None] = []
        ys: list[str | None] = []
        symbols: list[str] = []
        hover: list[str | None] = []
        for r in recent:
            if r["flag"] != flag:
                continue
            releases = r["releases"] or [None] * len(r["members"])
            first_release = min(r["releases"]) if r["releases"] else None
            for m, a, rel in zip(r["members"], r["arrivals"], releases):
                info = (
                    f"{flag} barrier #{r['seq']} · {m}<br>arrived {(a - t0) * 1e3:.3f} ms"
                    + (f", released {(rel - t0) * 1e3:.3f} ms (+{(rel - first_release) * 1e6:.1f} us after the first)"
                       if rel is not None else "")
                    + f"<br>release skew {_fmt_us(r['skew'])}"
                )
                xs += [(a - t0) * 1e3] + ([(rel - t0) * 1e3] if rel is not None else []) + [None]
                ys += [m] + ([m] if rel is not None else []) + [None]
                symbols += ["circle-open"] + (["line-ns-open"] if rel is not None else []) + ["circle"]
                hover += [info] + ([info] if rel is not None else []) + [None]
        traces.append({
            "x": xs, "y": ys, "name": f"{flag}: arrival o — release |", "mode": "lines+markers",
            "line": {"color": FLAG_COLORS[flag], "width": 3},
            "marker": {"color": FLAG_COLORS[flag], "size": 11, "symbol": symbols, "line": {"width": 2}},
            "hovertext": hover, "hoverinfo": "text", "meta": f"mpiq-barrier-{flag.lower()}",
            "legendgroup": flag, "xaxis": "x", "yaxis": "y",
        })
    for flag in FLAGS:
        values = [s * 1e6 for s in skews.get(flag, [])]
        traces.append({
            "type": "box", "x": [max(v, SKEW_FLOOR_US) for v in values], "y": [flag] * len(values),
            "customdata": values, "orientation": "h", "boxpoints": "all", "jitter": 0.5, "pointpos": 0,
            "name": f"{flag} skew", "marker": {"color": FLAG_COLORS[flag], "size": 5}, "line": {"width": 1},
            "meta": f"mpiq-skew-{flag.lower()}", "legendgroup": flag, "showlegend": False,
            "xaxis": "x2", "yaxis": "y2", "hovertemplate": f"{flag} barrier: release skew %{{customdata:.2f}} µs<extra></extra>",
        })
    return traces


def barrier_layout(recent: list[Mapping[str, Any]], skews: Mapping[str, list[float]], total: Mapping[str, int]) -> dict:
    procs = process_order(recent)
    parts = [f"{flag} {total.get(flag, 0)}" for flag in FLAGS if total.get(flag)]
    title = f"Barriers: {sum(total.values())} recorded ({', '.join(parts) or 'none yet'}), last {len(recent)} shown"

    def note(text: str, x: float) -> dict:
        return {"text": f"<b>{text}</b>", "x": x, "y": 1.0, "xref": "paper", "yref": "paper", "xanchor": "center",
                "yanchor": "bottom", "showarrow": False, "font": {"size": 12}}

    return {
        "title": {"text": title, "font": {"size": 14}},
        "annotations": [note("arrival o → release | per process", 0.32), note("release skew per barrier", 0.87)],
        "xaxis": {"domain": [0.0, 0.64], "title": {"text": "time since first arrival (ms)"}, "zeroline": False},
        "yaxis": {"type": "category", "categoryorder": "array", "categoryarray": list(reversed(procs)),
                  "title": {"text": "process"}},
        "xaxis2": {"domain": [0.74, 1.0], "title": {"text": "µs (log)"}, "anchor": "y2", "type": "log", "dtick": 1},
        "yaxis2": {"anchor": "x2", "type": "category", "categoryorder": "array",
                   "categoryarray": [f for f in reversed(FLAGS)]},
                "height": max(340, 34 * len(procs) + 200),
        "margin": {"l": 70, "r": 20, "t": 60, "b": 50},
        "legend": {"orientation": "h", "y": -0.18, "yanchor": "top"},
        "template": "plotly_white",
        "meta": {"mpiq": "barrier", "processes": procs},
    }


class _State:
    """Barrier data: the last ``keep`` records, every skew by flag, counts, the time origin."""

    def __init__(self, keep: int) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1 barrier, got {keep}.")
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self.skews: dict[str, deque[float]] = {f: deque(maxlen=MAX_SKEWS) for f in FLAGS}
        self.total: dict[str, int] = {f: 0 for f in FLAGS}
        self.origin: float | None = None

    def add(self, rec: Mapping[str, Any]) -> None:
        flag = rec["flag"]
        self.recent.append(dict(rec))
        self.total[flag] = self.total.get(flag, 0) + 1
        if rec["skew"] is not None:
            self.skews.setdefault(flag, deque(maxlen=MAX_SKEWS)).append(rec["skew"])
        first = min(rec["arrivals"])
        self.origin = first if self.origin is None else min(self.origin, first)

    def traces(self) -> list[dict]:
        return barrier_traces(list(self.recent), {k: list(v) for k, v in self.skews.items()}, self.origin)

    def layout(self) -> dict:
        return barrier_layout(list(self.recent), {k: list(v) for k, v in self.skews.items()}, self.total)


def barrier_figure(records: Iterable[Any], keep: int = DEFAULT_KEEP) -> "go.Figure":
    """Static figure: the last ``keep`` of ``records`` (``BarrierRecord`` or ``to_dict()``) on a
    shared time axis, and the release skew distribution over all of them."""
    state = _State(keep)
    for r in _records(records):
        state.add(r)
    return _figure(state)


def _figure(state: _State) -> "go.Figure":
    import plotly.graph_objects as go

    traces = state.traces()
    kinds = {"scatter": go.Scatter, "box": go.Box}
    data = [kinds[t.pop("type", "scatter")](**t) for t in traces]
    return go.Figure(data, layout=state.layout())


def barrier_summary(state: _State) -> str:
    n = sum(state.total.values())
    if not n:
        return "barriers: none recorded yet"
    lines = [f"barriers: {n} recorded (" + ", ".join(f"{f} {state.total[f]}" for f in FLAGS if state.total[f]) + ")"]
    for flag in FLAGS:
        sk = list(state.skews.get(flag, []))
        if sk:
            lines.append(
                f"  {flag}: release skew median {statistics.median(sk) * 1e6:.1f} us, "
                f"max {max(sk) * 1e6:.1f} us over {len(sk)} barrier(s)"
            )
    last = state.recent[-1]
    t0 = min(last["arrivals"])
    lines.append(f"  last: {last['flag']} #{last['seq']} (times after its first arrival, us)")
    releases = last["releases"] or [None] * len(last["members"])
    for m, a, r in zip(last["members"], last["arrivals"], releases):
        rel = f"{(r - t0) * 1e6:10.1f}" if r is not None else "         -"
        lines.append(f"    {m:<9} arrived {(a - t0) * 1e6:10.1f}  released {rel}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- live view
class BarrierWidget(LiveView):
    """Live barrier timing. ``add(record)`` appends one record (or a list) and refreshes."""

    name = "barrier"

    def __init__(self, records: Iterable[Any] = (), *, keep: int = DEFAULT_KEEP, mode: str | None = "auto",
                 max_rate: float | None = None) -> None:
        super().__init__(mode=mode, max_rate=max_rate)
        self.keep = keep
        self._state = _State(keep)
        self._fig: go.FigureWidget | None = None
        self._sync: FigureSync | None = None
        self._header: ipywidgets.HTML | None = None
        for r in _records(records):
            self._state.add(r)

    @property
    def count(self) -> int:
        """Barriers recorded so far."""
        return sum(self._state.total.values())

    @property
    def records(self) -> list[dict[str, Any]]:
        """The last ``keep`` records, normalised."""
        with self._lock:
            return [dict(r) for r in self._state.recent]

    def add(self, record: Any) -> None:
        """Append a ``BarrierRecord`` (or its dict, or a list of them); empty records are skipped."""
        recs = _records(record if isinstance(record, (list, tuple)) else [record])
        if not recs:
            return
        with self._lock:
            for r in recs:
                self._state.add(r)
        self._changed()

    def event(self, event: Mapping[str, Any]) -> None:
        """Apply a progress event: ``{"event": "barrier", "record": {...}}``."""
        if event.get("event") == "barrier":
            self.add(event.get("record", event))
        elif event.get("event") == "result" and isinstance(event.get("result"), Mapping):
            rec = event["result"].get("barrier")
            if rec:
                self.add(rec)

    def figure(self) -> "go.Figure":
        with self._lock:
            return _figure(self._state)

    def summary(self) -> str:
        with self._lock:
            return barrier_summary(self._state)

    def _text_progress(self) -> str | None:
        with self._lock:
            if not self._state.recent:
                return None
            last = self._state.recent[-1]
            return f"[mpiq] barrier {last['flag']} #{last['seq']}: skew {_fmt_us(last['skew'])} ({self.count} recorded)"

    def _build_panel(self) -> "ipywidgets.Widget":
        import ipywidgets as W

        self._header = W.HTML()
        self._fig = figure_widget(_figure(self._state))
        self._sync = FigureSync(self._fig, self._state.traces(), self._state.layout())
        return W.VBox([self._header, self._fig], layout=W.Layout(width="100%"))

    def _sync_panel(self) -> None:
        assert self._fig is not None and self._header is not None
        self._sync.apply(self._state.traces(), self._state.layout())
        last = self._state.recent[-1] if self._state.recent else None
        self._header.value = (
            f'<span class="mpiq-barrier-header">{self.count} barrier(s)'
            + (f" · last {last['flag']} #{last['seq']}, release skew {_fmt_us(last['skew'])}" if last else "")
            + "</span>"
        )
