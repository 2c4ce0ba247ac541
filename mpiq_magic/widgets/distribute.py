"""Distributed circuits: the partition (qubits x time layers coloured by monitor, e-bits per
layer, totals) and, while ``distribute`` runs, the circuits done per monitor.

The figures are pure functions of the data (:func:`partition_view` -> :class:`PartitionView`,
:func:`partition_figure`); :class:`PartitionWidget` shows one partition, :class:`DistributeWidget`
adds per-monitor progress fed by the run's events (:mod:`mpiq_magic.events`: ``partition``,
``plan``, ``compile``, ``executed``, ``reconstruct``, ``result``).
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .base import FigureSync, LiveView, figure_widget

if TYPE_CHECKING:
    import ipywidgets
    import plotly.graph_objects as go

#: One colour per qrank (cycled past ten monitors).
QRANK_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
#: Layers listed one by one in the text summary before it abbreviates.
TEXT_LAYERS = 48


# ----------------------------------------------------------------------------- data
@dataclass(frozen=True)
class PartitionView:
    """What the partition figure shows.

    ``cells[q][t]``: the qrank holding qubit ``q`` during layer ``t`` (None: not live), the heat
    map's rows; ``ebits_per_layer[t]`` the e-bit bars (they sum to ``ebits``); ``cuts_per_layer[t]``
    the gates of layer ``t`` that a distributed run replaces by a classical feed-forward link
    (empty when no run plan is known); ``loads[t][p]`` live qubits on qrank ``p``.
    """

    method: str
    num_qubits: int
    num_layers: int
    capacities: tuple[int, ...]
    topology: str
    cells: tuple[tuple[int | None, ...], ...]
    ebits_per_layer: tuple[int, ...]
    ebits: int
    teleport_ebits: int
    gate_ebits: int
    loads: tuple[tuple[int, ...], ...]
    cuts_per_layer: tuple[int, ...] = ()
    cut_modes: tuple[tuple[str, int], ...] = ()  # (mode, count), e.g. ("frame", 3)

    @property
    def num_qpus(self) -> int:
        return len(self.capacities)

    @property
    def cuts(self) -> int:
        return sum(self.cuts_per_layer)

    def qubits_on(self, qrank: int) -> list[int]:
        """Qubits that spend at least one layer on ``qrank``."""
        return [q for q, row in enumerate(self.cells) if qrank in row]

    def heading(self) -> str:
        caps = "x".join(map(str, self.capacities)) if len(set(self.capacities)) > 1 else (
            f"{self.num_qpus}x{self.capacities[0]}" if self.capacities else "0")
        text = (f"{self.method}: {self.ebits} e-bits ({self.teleport_ebits} teleportation, {self.gate_ebits} gate) · "
                f"{self.num_qubits} qubits x {self.num_layers} layers on {caps} ({self.topology})")
        if self.cut_modes:
            text += " · feed-forward cuts " + ", ".join(f"{n} {m}" for m, n in self.cut_modes)
        return text


def partition_dict(partition: Any, plan: Any = None) -> dict[str, Any]:
    """A ``PartitionResult`` (and optionally the ``FeedForwardPlan`` that runs it) as the
    JSON-ready ``partition`` event's payload (without the ``event`` key)."""
    d: dict[str, Any] = {
        "method": partition.method, "num_qubits": partition.num_qubits, "num_layers": partition.num_layers,
        "capacities": list(partition.capacities), "topology": partition.topology,
        "assignment": [list(row) for row in partition.assignment],
        "ebits_per_layer": list(partition.ebits_per_layer), "ebits": partition.ebits,
        "teleport_ebits": partition.teleport_ebits, "gate_ebits": partition.gate_ebits,
        "loads": [list(row) for row in partition.loads],
    }
    if plan is not None:
        d["cuts"] = [{"layer": c.layer, "mode": c.mode, "source_qrank": c.source, "dest_qrank": c.dest}
                     for c in plan.cuts]
        d["blocks"] = [{"qrank": p, "qubits": len(b.qubits), "variants": b.num_variants if b.runs else 0}
                       for p, b in sorted(plan.blocks.items())]
    return d


def partition_view(partition: Any, plan: Any = None) -> PartitionView:
    """The figure's data from a ``PartitionResult`` (+ ``FeedForwardPlan``) or a :func:`partition_dict`."""
    d = partition if isinstance(partition, Mapping) else partition_dict(partition, plan)
    n, layers = int(d["num_qubits"]), int(d["num_layers"])
    assignment = d["assignment"]
    if len(assignment) != layers or any(len(row) != n for row in assignment):
        raise ValueError(
            f"The assignment is {len(assignment)} layers x {len(assignment[0]) if assignment else 0} qubits; "
            f"the partition says {layers} x {n}."
        )
    ebits = tuple(int(e) for e in d["ebits_per_layer"])
    if sum(ebits) != int(d["ebits"]):
        raise ValueError(f"E-bits per layer sum to {sum(ebits)}, not the partition's total {d['ebits']}.")
    cuts = d.get("cuts")
    per_layer: tuple[int, ...] = ()
    modes: tuple[tuple[str, int], ...] = ()
    if cuts is not None:
        counts = [0] * layers
        tally: dict[str, int] = {}
        for c in cuts:
            if c["mode"] == "local":  # not a real cut: no link between monitors
                continue
            counts[int(c["layer"])] += 1
            tally[c["mode"]] = tally.get(c["mode"], 0) + 1
        per_layer = tuple(counts)
        modes = tuple(sorted(tally.items()))
    return PartitionView(
        method=str(d["method"]), num_qubits=n, num_layers=layers,
        capacities=tuple(int(c) for c in d["capacities"]), topology=str(d.get("topology", "full")),
        cells=tuple(tuple(None if assignment[t][q] < 0 else int(assignment[t][q]) for t in range(layers))
                    for q in range(n)),
        ebits_per_layer=ebits, ebits=int(d["ebits"]), teleport_ebits=int(d.get("teleport_ebits", 0)),
        gate_ebits=int(d.get("gate_ebits", 0)), loads=tuple(tuple(r) for r in d.get("loads", ())),
        cuts_per_layer=per_layer, cut_modes=modes,
    )


class _Progress:
    """Circuits done per monitor while a distributed run goes."""

    def __init__(self) -> None:
        self.monitors: dict[int, dict[str, Any]] = {}  # qrank -> done, total, qubits, seconds
        self.stage = "waiting"
        self.started = time.monotonic()
        self.finished: float | None = None
        self.result: dict[str, Any] | None = None

    def seed(self, blocks: Sequence[Mapping[str, Any]]) -> None:
        self.monitors = {int(b["qrank"]): {"done": 0, "total": int(b.get("variants", 0)),
                                           "qubits": int(b.get("qubits", 0)), "seconds": 0.0}
                         for b in blocks}
        self.stage, self.result, self.finished = "planned", None, None
        self.started = time.monotonic()

    def row(self, qrank: int) -> dict[str, Any]:
        return self.monitors.setdefault(int(qrank), {"done": 0, "total": 0, "qubits": 0, "seconds": 0.0})

    @property
    def done(self) -> int:
        return sum(m["done"] for m in self.monitors.values())

    @property
    def total(self) -> int:
        return sum(m["total"] for m in self.monitors.values())

    def line(self) -> str:
        elapsed = (self.finished or time.monotonic()) - self.started
        text = f"{self.done}/{self.total or '?'} circuits done on {len(self.monitors)} monitor(s) · {self.stage}"
        r = self.result
        if r is not None:
            text += f" · {r.get('shots')} shots, {r.get('executions')} circuit(s) per shot"
            total = (r.get("timings") or {}).get("total")
            if total is not None:
                elapsed = total
        return f"{text} · {elapsed:.1f} s"


# ----------------------------------------------------------------------------- figure
def _colorscale(k: int) -> list[list[Any]]:
    k = max(k, 1)
    scale: list[list[Any]] = []
    for i in range(k):
        c = QRANK_COLORS[i % len(QRANK_COLORS)]
        scale += [[i / k, c], [(i + 1) / k, c]]
    return scale


def partition_traces(view: PartitionView | None, progress: _Progress | None = None) -> list[dict]:
    """Trace properties in figure order: heat map, e-bits per layer, feed-forward cuts per layer
    and, with ``progress``, circuits assigned and done per monitor."""
    v = view
    k = v.num_qpus if v else 1
    layers = list(range(v.num_layers)) if v else []
    qubits = list(range(v.num_qubits)) if v else []
    z = [list(row) for row in v.cells] if v else []
    hover = [[f"qubit {q}, layer {t}: " + ("idle" if p is None else f"qrank {p}") for t, p in enumerate(row)]
             for q, row in enumerate(v.cells)] if v else []
    traces: list[dict] = [{
        "type": "heatmap", "x": layers, "y": qubits, "z": z, "zmin": -0.5, "zmax": k - 0.5,
        "colorscale": _colorscale(k), "hovertext": hover, "hoverinfo": "text", "xgap": 1, "ygap": 1,
        "colorbar": {"title": {"text": "qrank"}, "tickvals": list(range(k)), "ticktext": [str(p) for p in range(k)],
                     "len": 0.6, "y": 1.0, "yanchor": "top", "thickness": 14,
                     "x": 0.675 if progress is not None else 1.02},
        "name": "qrank", "meta": "mpiq-partition-cells", "xaxis": "x", "yaxis": "y",
    }, {
        "type": "bar", "x": layers, "y": list(v.ebits_per_layer) if v else [], "name": "e-bits",
        "marker": {"color": "#636efa"}, "meta": "mpiq-partition-ebits", "xaxis": "x2", "yaxis": "y2",
    }, {
        "type": "scatter", "mode": "markers", "name": "feed-forward cuts",
        "x": [t for t, c in enumerate(v.cuts_per_layer) if c] if v else [],
        "y": [c for c in v.cuts_per_layer if c] if v else [],
        "marker": {"color": "#ef553b", "symbol": "diamond", "size": 8},
        "meta": "mpiq-partition-cuts", "xaxis": "x2", "yaxis": "y2",
    }]
    if progress is not None:
        q = sorted(progress.monitors)
        names = [f"qrank {j}" for j in q]
        rows = [progress.monitors[j] for j in q]
        traces.append({"type": "bar", "y": names, "x": [r["total"] for r in rows], "orientation": "h",
                       "name": "assigned", "marker": {"color": "#e0e0e0"}, "showlegend": False,
                       "meta": "mpiq-distribute-total", "xaxis": "x3", "yaxis": "y3"})
        traces.append({"type": "bar", "y": names, "x": [r["done"] for r in rows], "orientation": "h",
                       "name": "done", "marker": {"color": [QRANK_COLORS[j % len(QRANK_COLORS)] for j in q]},
                       "text": [f"{r['done']}/{r['total']}" for r in rows], "textposition": "inside",
                       "hovertext": [f"qrank {j}: {r['qubits']} qubits, {r['done']}/{r['total']} circuit(s), "
                                     f"{r['seconds'] * 1e3:.1f} ms executing" for j, r in zip(q, rows)],
                       "hoverinfo": "text", "showlegend": False,
                       "meta": "mpiq-distribute-done", "xaxis": "x3", "yaxis": "y3"})
    return traces


def partition_layout(view: PartitionView | None, progress: _Progress | None = None, title: str | None = None) -> dict:
    right = 0.66 if progress is not None else 1.0
    n = view.num_qubits if view else 0

    def note(text: str, x: float, y: float) -> dict:
        return {"text": f"<b>{html.escape(text)}</b>", "x": x, "y": y, "xref": "paper", "yref": "paper",
                "xanchor": "center", "yanchor": "bottom", "showarrow": False, "font": {"size": 12}}

    total = f" (total {view.ebits})" if view else ""
    layout: dict[str, Any] = {
        "title": {"text": _html_lines(title if title is not None else (view.heading() if view else "partition")),
                  "font": {"size": 13}},
        "xaxis": {"domain": [0.0, right], "anchor": "y", "matches": "x2", "showticklabels": False},
        "yaxis": {"domain": [0.36, 1.0], "anchor": "x", "title": {"text": "qubit"}, "autorange": "reversed"},
        "xaxis2": {"domain": [0.0, right], "anchor": "y2", "title": {"text": "time layer"}},
        "yaxis2": {"domain": [0.0, 0.26], "anchor": "x2", "title": {"text": "e-bits"}, "rangemode": "tozero"},
        "annotations": [note("qubits x layers, coloured by monitor (qrank)", right / 2, 1.0),
                        note(f"e-bits per layer{total}", right / 2, 0.26)],
        "barmode": "overlay", "bargap": 0.15, "template": "plotly_white",
        "height": int(min(760, max(420, 14 * n + 260))),
        "margin": {"l": 60, "r": 20, "t": 85 if progress is not None else 60, "b": 40},
        "legend": {"orientation": "h", "x": 0.0, "y": -0.12, "yanchor": "top"},
        "meta": {"mpiq": "distribute" if progress is not None else "partition"},
    }
    if progress is not None:
        most = max((m["total"] for m in progress.monitors.values()), default=0)
        layout["xaxis3"] = {"domain": [0.84, 1.0], "anchor": "y3", "title": {"text": "circuits"}, "rangemode": "tozero",
                            **({"dtick": 1} if most <= 8 else {})}
        layout["yaxis3"] = {"domain": [0.36, 1.0], "anchor": "x3", "autorange": "reversed", "type": "category"}
        layout["annotations"].append(note("circuits done / assigned", 0.92, 1.0))
    return layout


def _html_lines(text: str) -> str:
    return "<br>".join(html.escape(line) for line in text.split("\n"))


def _figure(view: PartitionView | None, progress: _Progress | None = None, title: str | None = None) -> "go.Figure":
    import plotly.graph_objects as go

    kinds = {"heatmap": go.Heatmap, "bar": go.Bar, "scatter": go.Scatter}
    data = [kinds[t.pop("type")](**t) for t in partition_traces(view, progress)]
    return go.Figure(data, layout=partition_layout(view, progress, title))


def partition_figure(partition: Any, plan: Any = None) -> "go.Figure":
    """Static figure of a ``PartitionResult`` (with the ``FeedForwardPlan`` that runs it: its cuts)."""
    return _figure(partition_view(partition, plan))


def partition_summary(view: PartitionView | None) -> str:
    if view is None:
        return "partition: not planned yet"
    lines = [view.heading()]
    shown = view.ebits_per_layer[:TEXT_LAYERS]
    more = " ..." if view.num_layers > TEXT_LAYERS else ""
    lines.append("  e-bits per layer: " + " ".join(map(str, shown)) + more)
    if view.cuts_per_layer:
        lines.append("  cuts per layer:   " + " ".join(map(str, view.cuts_per_layer[:TEXT_LAYERS])) + more)
    for p in range(view.num_qpus):
        qs = view.qubits_on(p)
        peak = max((row[p] for row in view.loads), default=0) if view.loads else len(qs)
        lines.append(f"  qrank {p}: {len(qs)} qubit(s) {_ranges(qs)}, at most {peak} live of {view.capacities[p]}")
    return "\n".join(lines)


def _ranges(qubits: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    parts, start = [], None
    for i, q in enumerate(qubits):
        if start is None:
            start = q
        if i + 1 == len(qubits) or qubits[i + 1] != q + 1:
            parts.append(str(start) if start == q else f"{start}-{q}")
            start = None
    return "{" + ",".join(parts) + "}"


# ----------------------------------------------------------------------------- live views
class PartitionWidget(LiveView):
    """A partition: qubits x time layers coloured by qrank, e-bits per layer, totals.
    ``set_partition()`` (or a ``partition`` event) replaces what is shown."""

    name = "partition"
    _with_progress = False

    def __init__(self, partition: Any = None, plan: Any = None, *, mode: str | None = "auto",
                 max_rate: float | None = None) -> None:
        super().__init__(mode=mode, max_rate=max_rate)
        self._view: PartitionView | None = None
        self._progress: _Progress | None = _Progress() if self._with_progress else None
        self._fig: go.FigureWidget | None = None
        self._sync: FigureSync | None = None
        self._header: ipywidgets.HTML | None = None
        self._synced_view: PartitionView | None = None
        self._box: ipywidgets.VBox | None = None
        if partition is not None:
            self.set_partition(partition, plan)

    @property
    def view(self) -> PartitionView | None:
        return self._view

    def set_partition(self, partition: Any, plan: Any = None) -> None:
        """Show ``partition`` (``PartitionResult`` or :func:`partition_dict`); with ``plan`` (a
        ``FeedForwardPlan``) also its feed-forward cuts."""
        view = partition_view(partition, plan)
        with self._lock:
            self._view = view
        self._changed()

    def event(self, event: Mapping[str, Any]) -> None:
        if event.get("event") == "partition":
            self.set_partition({k: v for k, v in event.items() if k != "event"})

    def _title(self) -> str | None:
        return None

    def figure(self) -> "go.Figure":
        with self._lock:
            return _figure(self._view, self._progress, self._title())

    def summary(self) -> str:
        with self._lock:
            return partition_summary(self._view)

    def _build_panel(self) -> "ipywidgets.Widget":
        import ipywidgets as W

        self._header = W.HTML()
        self._box = W.VBox([self._header], layout=W.Layout(width="100%"))
        if self._drawable():
            self._new_figure()
        return self._box

    def _drawable(self) -> bool:
        return self._view is not None or bool(self._progress and self._progress.monitors)

    def _new_figure(self) -> None:
        """A FigureWidget holding the current state from the start (see :meth:`_sync_panel`)."""
        old = self._fig
        self._fig = figure_widget(_figure(self._view, self._progress, self._title()))
        self._sync = FigureSync(self._fig, partition_traces(self._view, self._progress),
                                partition_layout(self._view, self._progress, self._title()))
        self._synced_view = self._view
        self._box.children = [self._header, self._fig]
        if old is not None:
            old.close()

    def _sync_panel(self) -> None:
        assert self._header is not None and self._box is not None
        # The figure appears once there is something to draw, and is made anew when the partition
        # changes (rare): plotly sends in-place edits as one-off messages, and a page still loading
        # plotly's widget code (the first figure shown) drops them -- an empty figure shown, then
        # filled right away (a partition event just after show()), stayed blank in JupyterLab.
        # figure_widget() now keeps such edits too; this path stays as its tests pin it down.
        if self._fig is None or self._synced_view is not self._view:
            if self._drawable():
                self._new_figure()
        else:
            self._sync.apply(partition_traces(self._view, self._progress),
                             partition_layout(self._view, self._progress, self._title()))
        head = self._title() or (self._view.heading() if self._view else "partition")
        self._header.value = f'<span class="mpiq-{self.name}-header">{_html_lines(head)}</span>'


class DistributeWidget(PartitionWidget):
    """A distributed run: the partition it runs and, per monitor, circuits done of those assigned
    (block variants), fed by the run's progress events."""

    name = "distribute"
    _with_progress = True

    @property
    def monitors(self) -> dict[int, tuple[int, int]]:
        """qrank -> (circuits done, circuits assigned)."""
        with self._lock:
            return {j: (m["done"], m["total"]) for j, m in self._progress.monitors.items()}

    @property
    def result(self) -> dict[str, Any] | None:
        return self._progress.result

    def set_partition(self, partition: Any, plan: Any = None) -> None:
        d = partition if isinstance(partition, Mapping) else partition_dict(partition, plan)
        view = partition_view(d)
        with self._lock:
            self._view = view
            if d.get("blocks") is not None:
                self._progress.seed(d["blocks"])
        self._changed()

    def executed(self, qrank: int, done: int, total: int | None = None, seconds: float | None = None) -> None:
        """Monitor ``qrank`` has returned ``done`` of its ``total`` circuits."""
        with self._lock:
            p = self._progress
            row = p.row(qrank)
            row["done"] = max(row["done"], int(done))
            row["total"] = max(row["total"], int(total or 0), row["done"])
            if isinstance(seconds, (int, float)):
                row["seconds"] += float(seconds)
            p.stage = "executing"
        self._changed()

    def stage(self, name: str) -> None:
        with self._lock:
            self._progress.stage = name
        self._changed()

    def set_result(self, result: Any) -> None:
        """A finished run (``DistributeResult`` or its ``to_dict()``): every block's circuits done."""
        d = result.to_dict() if hasattr(result, "to_dict") else dict(result)
        with self._lock:
            p = self._progress
            for b in d.get("blocks") or []:
                row = p.row(b["qrank"])
                row["qubits"] = len(b.get("qubits") or ()) or row["qubits"]
                row["done"] = row["total"] = int(b.get("variants", row["total"]))
                row["seconds"] = float(b.get("seconds") or row["seconds"])
            p.result, p.stage, p.finished = d, "done", time.monotonic()
        self._changed()

    def event(self, event: Mapping[str, Any]) -> None:
        """Apply a progress event (see :mod:`mpiq_magic.events`); unknown kinds are ignored."""
        kind = event.get("event")
        if kind == "partition":
            self.set_partition({k: v for k, v in event.items() if k != "event"})
        elif kind == "executed" and isinstance(event.get("qrank"), int) and self._progress.finished is None:
            self.executed(event["qrank"], int(event.get("done") or 0), event.get("total"), event.get("seconds"))
        elif kind == "fallback":
            self.stage(f"falling back to {'quasi-probability' if event.get('to') == 'qpd' else event.get('to')} cuts")
        elif kind == "plan" and event.get("mode") == "qpd":
            self.stage(f"quasi-probability cuts planned: overhead {event.get('overhead', '?'):g}, "
                       f"{event.get('subexperiments', '?')} subexperiments"
                       if isinstance(event.get("overhead"), (int, float)) else "quasi-probability cuts planned")
        elif kind in ("plan", "compile", "reconstruct"):
            self.stage({"plan": "planned", "compile": "compiled, executing", "reconstruct": "reconstructed"}[kind])
        elif kind == "result" and isinstance(event.get("result"), Mapping):
            if "blocks" in event["result"]:
                self.set_result(event["result"])
            else:  # quasi-probability cutting: expectation values, no blocks
                with self._lock:
                    p = self._progress
                    p.stage, p.finished = "done (quasi-probability cuts)", time.monotonic()
                self._changed()

    def _title(self) -> str | None:
        head = self._view.heading() if self._view else "distribute"
        return f"{head}\n{self._progress.line()}"

    def summary(self) -> str:
        with self._lock:
            p = self._progress
            lines = [partition_summary(self._view) if self._view else "distribute: partition not known here",
                     p.line()]
            for j in sorted(p.monitors):
                m = p.monitors[j]
                lines.append(f"  qrank {j}: {m['done']}/{m['total']} circuit(s) done, {m['qubits']} qubit(s), "
                             f"{m['seconds'] * 1e3:.1f} ms executing")
            return "\n".join(lines)

    def _text_progress(self) -> str | None:
        with self._lock:
            return f"[mpiq] distribute: {self._progress.line()}"
