"""GHZ reconstruction: blocks fill in as monitors return, then the reconstructed distribution
(P(0...0), P(1...1), the top other outcomes and the rest, so the bars sum to 1), per-block
populations and the pipeline's timing breakdown."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..ghz.stages import STAGES, block_widths
from .base import FigureSync, LiveView, figure_widget

if TYPE_CHECKING:
    import ipywidgets
    import plotly.graph_objects as go

STEPS = STAGES[:-1]  # the timed steps, without "total"
BLOCK_COLORS = {"pending": "#d9d9d9", "sent": "#9ecae1", "done": "#2ca02c"}
DEFAULT_TOP = 8


# ----------------------------------------------------------------------------- data
def result_dict(result: Any, top: int = 64) -> dict[str, Any]:
    """A ``GHZResult``, a ``Reconstruction`` or a ``to_dict()`` of either, as a dict."""
    if hasattr(result, "to_dict"):
        result = result.to_dict(top)
    if not isinstance(result, Mapping) or "p_all_zero" not in result or "counts" not in result:
        raise TypeError(
            "A GHZ result must be a GHZResult, a Reconstruction or their to_dict() (with "
            f"'p_all_zero' and 'counts'), got {type(result).__name__}."
        )
    return dict(result)


def _label(bits: str) -> str:
    return bits if len(bits) <= 16 else f"{bits[:6]}…{bits[-6:]}"


def distribution(result: Mapping[str, Any], top: int = DEFAULT_TOP) -> tuple[list[str], list[float], list[str]]:
    """Bars of the reconstructed distribution: P(0...0), P(1...1), the ``top`` most frequent other
    outcomes, and the remaining probability ("other"); they sum to 1. Returns labels, values and
    hover texts."""
    n = int(result.get("qubits") or result.get("num_qubits") or 0)
    shots = int(result["shots"])
    zero, one = "0" * n, "1" * n
    labels = [f"0…0 ({n})" if n > 4 else zero or "0…0", f"1…1 ({n})" if n > 4 else one or "1…1"]
    values = [float(result["p_all_zero"]), float(result["p_all_one"])]
    hover = [f"P({zero[:64]}{'…' if n > 64 else ''})", f"P({one[:64]}{'…' if n > 64 else ''})"]
    others = [(b, c) for b, c in result["counts"].items() if b not in (zero, one)]
    others.sort(key=lambda bc: -bc[1])
    for b, c in others[:top]:
        label = _label(b)
        while label in labels:
            label += " "
        labels.append(label)
        values.append(c / shots)
        hover.append(f"{b[:64]}{'…' if len(b) > 64 else ''}: {c} of {shots} shots")
    rest = max(0.0, 1.0 - sum(values))
    distinct = int(result.get("distinct_outcomes") or len(result["counts"]))
    hidden = distinct - (values[0] > 0) - (values[1] > 0) - min(top, len(others))
    if rest > 1e-12 or hidden > 0:
        labels.append("other")
        values.append(rest)
        hover.append(f"{max(hidden, 0)} further outcome(s)")
    return labels, values, hover


class _State:
    """What the GHZ view knows: the planned blocks, their progress, the final result."""

    def __init__(self) -> None:
        self.num_qubits: int | None = None
        self.blocks: list[dict[str, Any]] = []
        self.stage = "waiting"
        self.result: dict[str, Any] | None = None

    def plan(self, num_qubits: int, widths: Sequence[int], assignment: Sequence[Sequence[int]] | None) -> None:
        owner = {b: j for j, bs in enumerate(assignment or []) for b in bs}
        self.num_qubits = num_qubits
        self.blocks = [
            {"index": i, "width": int(w), "state": "pending", "qrank": owner.get(i), "seconds": None, "method": None}
            for i, w in enumerate(widths)
        ]
        self.result = None
        self.stage = "cut"

    @property
    def done(self) -> int:
        return sum(b["state"] == "done" for b in self.blocks)

    def heading(self) -> str:
        """What ran: size, blocks, monitors, shots, method (the figure's title)."""
        r = self.result or {}
        text = f"Distributed GHZ({self.num_qubits or '?'}): {len(self.blocks)} block(s)"
        monitors = r.get("monitors_used") or len({b["qrank"] for b in self.blocks if b["qrank"] is not None})
        if monitors:
            text += f" on {monitors} monitor(s)"
        if r.get("shots"):
            text += f", {r['shots']} shots"
        if r.get("method"):
            text += f", {r['method']}"
        return text

    def title(self) -> str:
        n = self.num_qubits
        head = f"GHZ({n})" if n else "GHZ"
        text = f"{head}: {self.done}/{len(self.blocks)} blocks done · {self.stage}"
        if self.result is not None:
            r = self.result
            text += f" · P(0…0) = {r['p_all_zero']:.4f}, P(1…1) = {r['p_all_one']:.4f}"
            total = (r.get("timings") or {}).get("total")
            if total is not None:
                text += f" · {total:.3f} s"
        return text


def ghz_traces(state: _State, top: int = DEFAULT_TOP) -> list[dict]:
    """Trace properties in figure order: blocks, distribution, raw 0..0, raw 1..1, flip rate, timings."""
    blocks = state.blocks
    r = state.result or {}
    traces: list[dict] = [{
        "type": "bar", "x": [b["index"] for b in blocks], "y": [b["width"] for b in blocks], "name": "blocks",
        "marker": {"color": [BLOCK_COLORS[b["state"]] for b in blocks], "line": {"color": "#555", "width": 1}},
        "text": [f"q{b['qrank']}" if b["qrank"] is not None and b["state"] != "pending" else "" for b in blocks],
        "textposition": "inside",
        "hovertext": [
            f"block {b['index']}: {b['width']} qubits, {b['state']}"
            + (f" on qrank {b['qrank']}" if b["qrank"] is not None else "")
            + (f", {b['seconds'] * 1e3:.1f} ms" if b["seconds"] is not None else "")
            + (f", {b['method']}" if b["method"] else "")
            for b in blocks
        ],
        "hoverinfo": "text", "showlegend": False, "meta": "mpiq-ghz-blocks", "xaxis": "x", "yaxis": "y",
    }]
    labels, values, hover = distribution(r, top) if r else ([], [], [])
    traces.append({
        "type": "bar", "x": labels, "y": values, "name": "P(outcome)", "hovertext": hover, "hoverinfo": "text+y",
        "marker": {"color": ["#2ca02c", "#2ca02c"] + ["#98df8a"] * max(0, len(values) - 2)},
        "text": [f"{v:.3f}" for v in values], "textposition": "outside", "showlegend": False,
        "meta": "mpiq-ghz-distribution", "xaxis": "x2", "yaxis": "y2",
    })
    stats = r.get("block_stats") or []
    idx = [s["index"] for s in stats]
    for key, name, color in (("p_raw_zero", "P(raw 0..0)", "#1f77b4"), ("p_raw_one", "P(raw 1..1)", "#ff7f0e")):
        traces.append({"type": "bar", "x": idx, "y": [s[key] for s in stats], "name": name,
                       "marker": {"color": color}, "meta": f"mpiq-ghz-{key}", "xaxis": "x3", "yaxis": "y3"})
    traces.append({"type": "scatter", "x": idx, "y": [s["flip_rate"] for s in stats], "mode": "lines+markers",
                   "name": "flipped by feed-forward", "marker": {"color": "#7f7f7f"},
                   "meta": "mpiq-ghz-flip", "xaxis": "x3", "yaxis": "y3"})
    t = r.get("timings") or {}
    stages = [s for s in STEPS if s in t]
    traces.append({
        "type": "bar", "x": [t[s] * 1e3 for s in stages], "y": stages, "orientation": "h", "name": "ms",
        "marker": {"color": "#9467bd"}, "text": [f"{t[s] * 1e3:.1f} ms" for s in stages],
        "textposition": "auto", "showlegend": False, "meta": "mpiq-ghz-timings", "xaxis": "x4", "yaxis": "y4",
    })
    return traces


def ghz_layout(state: _State) -> dict:
    r = state.result or {}
    total = (r.get("timings") or {}).get("total")

    def note(text: str, x: float, y: float) -> dict:
        return {"text": f"<b>{html.escape(text)}</b>", "x": x, "y": y, "xref": "paper", "yref": "paper",
                "xanchor": "center", "yanchor": "bottom", "showarrow": False, "font": {"size": 12}}

    return {
        "title": {"text": html.escape(state.heading()), "font": {"size": 14}},
        "xaxis": {"domain": [0.0, 0.44], "anchor": "y", "title": {"text": "block"}, "dtick": 1},
        "yaxis": {"domain": [0.6, 1.0], "anchor": "x", "title": {"text": "qubits"}},
        "xaxis2": {"domain": [0.56, 1.0], "anchor": "y2", "type": "category"},
        "yaxis2": {"domain": [0.6, 1.0], "anchor": "x2", "range": [0, 1.15], "title": {"text": "probability"}},
        "xaxis3": {"domain": [0.0, 0.44], "anchor": "y3", "title": {"text": "block"}, "dtick": 1},
        "yaxis3": {"domain": [0.0, 0.4], "anchor": "x3", "range": [0, 1.05]},
        "xaxis4": {"domain": [0.62, 1.0], "anchor": "y4", "title": {"text": "ms"}},
        "yaxis4": {"domain": [0.0, 0.4], "anchor": "x4", "autorange": "reversed", "type": "category"},
        "annotations": [
            note("blocks (green: returned)", 0.22, 1.0),
            note("reconstructed distribution (bars sum to 1)", 0.78, 1.0),
            note("per-block raw populations", 0.22, 0.4),
            note("timing breakdown" + (f" (total {total * 1e3:.1f} ms)" if total is not None else ""), 0.81, 0.4),
        ],
        "barmode": "group",
        "height": 560,
        "margin": {"l": 60, "r": 20, "t": 70, "b": 40},
        "legend": {"orientation": "h", "x": 0.0, "y": -0.11, "yanchor": "top"},
        "template": "plotly_white",
        "meta": {"mpiq": "ghz"},
    }


def _figure(state: _State, top: int = DEFAULT_TOP) -> "go.Figure":
    import plotly.graph_objects as go

    kinds = {"bar": go.Bar, "scatter": go.Scatter}
    data = [kinds[t.pop("type")](**t) for t in ghz_traces(state, top)]
    return go.Figure(data, layout=ghz_layout(state))


def _state_from_result(result: Mapping[str, Any]) -> _State:
    state = _State()
    widths = result.get("block_widths") or [b["width"] for b in result.get("block_stats") or []]
    state.plan(int(result.get("qubits") or sum(widths)), widths, result.get("assignment"))
    for s in result.get("block_stats") or []:
        if s["index"] < len(state.blocks):
            state.blocks[s["index"]].update(state="done", qrank=s.get("qrank"), seconds=s.get("seconds"),
                                            method=s.get("method"))
    state.result = dict(result)
    state.stage = "reconstructed"
    return state


def ghz_figure(result: Any, top: int = DEFAULT_TOP) -> "go.Figure":
    """Static figure of a finished run (``GHZResult``, ``Reconstruction`` or ``to_dict()``)."""
    return _figure(_state_from_result(result_dict(result)), top)


def ghz_summary(state: _State, top: int = 4) -> str:
    lines = [state.title()]
    r = state.result
    if r is None:
        return "\n".join(lines)
    labels, values, _ = distribution(r, top)
    lines.append("  " + "  ".join(f"{lab.strip()}: {v:.4f}" for lab, v in zip(labels, values)))
    t = r.get("timings") or {}
    if t:
        lines.append("  timings (ms): " + "  ".join(f"{s} {t[s] * 1e3:.1f}" for s in STEPS if s in t)
                     + (f"  | total {t['total'] * 1e3:.1f}" if "total" in t else ""))
    for s in (r.get("block_stats") or [])[:12]:
        lines.append(
            f"  block {s['index']:>3}: {s['width']} qubits on qrank {s.get('qrank')} ({s.get('method') or '-'}), "
            f"P(raw 0..0) {s['p_raw_zero']:.3f}, P(raw 1..1) {s['p_raw_one']:.3f}, flipped {s['flip_rate']:.3f}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- live view
class GHZWidget(LiveView):
    """Live GHZ reconstruction. ``plan()`` the blocks, ``block_done()`` as monitors return,
    ``set_result()`` at the end; or feed the pipeline's progress events to ``event()``."""

    name = "ghz"

    def __init__(self, num_qubits: int | None = None, num_blocks: int | None = None, *,
                 widths: Sequence[int] | None = None, assignment: Sequence[Sequence[int]] | None = None,
                 top: int = DEFAULT_TOP, mode: str | None = "auto", max_rate: float | None = None) -> None:
        super().__init__(mode=mode, max_rate=max_rate)
        self.top = top
        self._state = _State()
        self._fig: go.FigureWidget | None = None
        self._sync: FigureSync | None = None
        self._header: ipywidgets.HTML | None = None
        if num_qubits is not None:
            self.plan(num_qubits, num_blocks, widths=widths, assignment=assignment)

    @property
    def blocks_done(self) -> int:
        return self._state.done

    @property
    def num_blocks(self) -> int:
        return len(self._state.blocks)

    @property
    def result(self) -> dict[str, Any] | None:
        return self._state.result

    def plan(self, num_qubits: int, num_blocks: int | None = None, *, widths: Sequence[int] | None = None,
             assignment: Sequence[Sequence[int]] | None = None) -> None:
        """Lay out the blocks of a GHZ(``num_qubits``) cut (equal granularity unless ``widths``)."""
        if widths is None:
            widths = block_widths(num_qubits, num_blocks or 1)
        elif sum(widths) != num_qubits:
            raise ValueError(f"Block widths {list(widths)} add up to {sum(widths)} qubits, not {num_qubits}.")
        with self._lock:
            self._state.plan(num_qubits, widths, assignment)
        self._changed()

    def stage(self, name: str) -> None:
        """Show the pipeline stage in progress (e.g. 'compile', 'scatter', 'gather')."""
        with self._lock:
            self._state.stage = name
            if name == "scatter":
                for b in self._state.blocks:
                    if b["state"] == "pending":
                        b["state"] = "sent"
        self._changed()

    def block_done(self, block: int, *, qrank: int | None = None, seconds: float | None = None,
                   method: str | None = None) -> None:
        """Mark ``block`` as returned by its monitor."""
        with self._lock:
            blocks = self._state.blocks
            if not 0 <= block < len(blocks):
                raise IndexError(
                    f"Block {block} is not part of the planned cut of {len(blocks)} block(s); call plan() first."
                )
            b = blocks[block]
            b["state"] = "done"
            b["qrank"] = qrank if qrank is not None else b["qrank"]
            b["seconds"] = seconds if seconds is not None else b["seconds"]
            b["method"] = method or b["method"]
            self._state.stage = "executing"
        self._changed()

    def set_result(self, result: Any) -> None:
        """Show a finished run: distribution, per-block populations, timings."""
        d = result_dict(result)
        with self._lock:
            state = _state_from_result(d)
            self._state.__dict__.update(state.__dict__)
        self._changed()

    def event(self, event: Mapping[str, Any]) -> None:
        """Apply a pipeline progress event (see :mod:`mpiq_magic.events`)."""
        kind = event.get("event")
        if kind == "cut" and event.get("qubits"):
            self.plan(int(event["qubits"]), int(event.get("blocks") or 1))
        elif kind == "executed" and "block" in event:
            if event["block"] < self.num_blocks:
                self.block_done(int(event["block"]), qrank=event.get("qrank"), seconds=event.get("seconds"),
                                method=event.get("method"))
        elif kind == "result":
            self.set_result(event["result"])
        elif kind in ("compile", "scatter", "gather", "reconstruct"):
            self.stage(kind)

    def figure(self) -> "go.Figure":
        with self._lock:
            return _figure(self._state, self.top)

    def summary(self) -> str:
        with self._lock:
            return ghz_summary(self._state)

    def _text_progress(self) -> str | None:
        with self._lock:
            return f"[mpiq] {self._state.title()}" if self._state.blocks else None

    def _build_panel(self) -> "ipywidgets.Widget":
        import ipywidgets as W

        self._header = W.HTML()
        self._fig = figure_widget(_figure(self._state, self.top))
        self._sync = FigureSync(self._fig, ghz_traces(self._state, self.top), ghz_layout(self._state))
        return W.VBox([self._header, self._fig], layout=W.Layout(width="100%"))

    def _sync_panel(self) -> None:
        assert self._fig is not None and self._header is not None
        self._sync.apply(ghz_traces(self._state, self.top), ghz_layout(self._state))
        self._header.value = f'<span class="mpiq-ghz-header">{html.escape(self._state.title())}</span>'
