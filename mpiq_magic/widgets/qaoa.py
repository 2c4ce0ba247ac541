"""Distributed QAOA: the graph coloured by part (marker symbol: the device running it), the
expected cut of every part per optimizer step (live), and the chosen regions on each device's
coupling map (qubits and couplings removed by the eta filter crossed out / dotted).

Fed by :func:`~mpiq_magic.qaoa.run.distributed_qaoa`'s hooks: ``on_plan=view.plan``,
``on_iteration=view.iteration``, then ``view.set_result(result)``.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .base import FigureSync, LiveView, figure_widget

if TYPE_CHECKING:
    import ipywidgets
    import plotly.graph_objects as go

PART_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
               "#bcbd22", "#7f7f7f")
DEVICE_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "pentagon", "hexagon", "star", "hourglass")
IDLE_QUBIT = "#d9d9d9"
_GRAPH_Y = (0.42, 1.0)
_DEVICE_Y = (0.0, 0.3)


def part_color(index: int) -> str:
    return PART_COLORS[index % len(PART_COLORS)]


def device_symbol(qrank: int) -> str:
    return DEVICE_SYMBOLS[qrank % len(DEVICE_SYMBOLS)]


# ----------------------------------------------------------------------------- data
def _device_map(device: Any, qrank: int, eta: float | None) -> dict[str, Any]:
    """A device's coupling map as drawn: qubits, usable/removed couplings, positions."""
    import networkx as nx

    from ..qaoa.regions import device_errors, usable_graph

    errors = device_errors(device)
    usable = usable_graph(errors, eta)
    g = nx.Graph()
    g.add_nodes_from(range(errors.num_qubits))
    g.add_edges_from(errors.couplings)
    n = errors.num_qubits
    if n > 2 and set(errors.couplings) == {(q, q + 1) for q in range(n - 1)}:  # a line: a serpentine
        width = max(4, math.ceil(math.sqrt(2 * n)))
        pos = {q: ((q % width) if (q // width) % 2 == 0 else width - 1 - q % width, -(q // width)) for q in range(n)}
    elif n <= 2 or g.number_of_edges() >= n * (n - 1) / 2:
        pos = nx.circular_layout(g)
    else:  # seeded, so a device always looks the same (kamada_kawai is seconds per device on 2 cores)
        pos = nx.spring_layout(g, seed=0, iterations=200)
    return {
        "qrank": qrank, "name": getattr(device, "name", errors.name),
        "calibration": getattr(device, "calibration", None) or (errors.name if errors.calibrated else None),
        "num_qubits": errors.num_qubits, "readout": list(errors.readout),
        "couplings": [tuple(c) for c in errors.couplings],
        "removed_qubits": set(usable.removed_qubits), "removed_couplings": set(usable.removed_couplings),
        "pos": {int(q): (float(x), float(y)) for q, (x, y) in pos.items()},
    }


class _State:
    """What the QAOA view knows: graph, devices, the plan, energies per part, the result."""

    def __init__(self, graph: Any, devices: Sequence[Any], eta: float | None, label: str) -> None:
        import networkx as nx

        self.graph = graph
        self.label = label
        self.eta = eta
        self.nodes = sorted(graph.nodes) if graph is not None else []
        self.edges = [(int(u), int(v)) for u, v in graph.edges] if graph is not None else []
        pos = nx.spring_layout(graph, seed=1) if graph is not None and len(self.nodes) else {}
        self.pos = {int(n): (float(x), float(y)) for n, (x, y) in pos.items()}
        self.devices = [_device_map(d, q, eta) for q, d in enumerate(devices)]
        #: what a monitor is called in the legend and summary: its calibration, else host:device_id
        self.device_label = {d["qrank"]: (d["calibration"] or d["name"]).removeprefix("fake:") for d in self.devices}
        self.parts: list[Any] = []  # PartPlan
        self.part_of: dict[int, int] = {}
        self.steps: dict[int, list[int]] = {}
        self.energies: dict[int, list[float]] = {}
        self.step = 0
        self.stage = "waiting"
        self.result: dict[str, Any] | None = None

    def plan(self, split: Any, parts: Sequence[Any]) -> None:
        self.parts = list(parts)
        self.part_of = split.part_of() if hasattr(split, "part_of") else {n: p.index for p in parts for n in p.nodes}
        self.steps = {p.index: [] for p in parts}
        self.energies = {p.index: [] for p in parts}
        self.step = 0
        self.stage = "optimizing"

    def heading(self) -> str:
        n = len(self.nodes)
        text = f"QAOA MaxCut ({self.label}) of a {n}-node graph"
        if self.parts:
            monitors = len({p.qrank for p in self.parts})
            text += f": {len(self.parts)} part(s) on {monitors} monitor(s)"
        r = self.result
        if r is not None:
            text += f" · cut {r['cut']:g}"
            if r.get("optimum"):
                text += f" of {r['optimum']:g} ({r.get('optimum_method') or 'given'}), ratio {r['cut'] / r['optimum']:.3f}"
            if r.get("total") is not None:
                text += f" · {r['total']:.1f} s"
        else:
            text += f" · {self.stage}" + (f", step {self.step}" if self.step else "")
        return text


def _result_dict(result: Any) -> dict[str, Any]:
    return {
        "cut": float(result.cut), "optimum": result.optimum, "optimum_method": result.optimum_method,
        "assignment": dict(result.assignment), "p_optimal": result.p_optimal,
        "total": (result.timings or {}).get("total"), "calls": result.calls,
        "p_optimal_parts": {s.index: s.p_optimal for s in result.subproblems},
    }


def _lines(pairs: Sequence[tuple[int, int]], pos: Mapping[int, tuple[float, float]]) -> tuple[list, list]:
    xs: list = []
    ys: list = []
    for a, b in pairs:
        xs += [pos[a][0], pos[b][0], None]
        ys += [pos[a][1], pos[b][1], None]
    return xs, ys


def _device_axes(i: int) -> tuple[str, str]:
    return f"x{i + 3}", f"y{i + 3}"


def qaoa_traces(state: _State) -> list[dict]:
    """Trace properties in figure order: graph edges (inside parts, between parts), nodes per
    part (one trace of all nodes before the plan), expected cut per part, then per device its
    usable couplings, removed couplings, region couplings and qubits."""
    part_of = state.part_of
    inside = [(u, v) for u, v in state.edges if part_of.get(u, -1) == part_of.get(v, -2)]
    between = [(u, v) for u, v in state.edges if part_of.get(u, -1) != part_of.get(v, -2)]
    if not part_of:
        inside, between = state.edges, []
    side = (state.result or {}).get("assignment") or {}
    traces: list[dict] = []
    for name, pairs, line, meta in (
        ("edges inside a part", inside, {"color": "#9e9e9e", "width": 1}, "mpiq-qaoa-edges"),
        ("edges between parts", between, {"color": "#d62728", "width": 1, "dash": "dot"}, "mpiq-qaoa-cut-edges"),
    ):
        xs, ys = _lines(pairs, state.pos)
        traces.append({"type": "scatter", "x": xs, "y": ys, "mode": "lines", "line": line, "name": name,
                       "hoverinfo": "skip", "showlegend": bool(pairs) and meta.endswith("cut-edges"), "meta": meta,
                       "xaxis": "x", "yaxis": "y"})
    groups = [(p.index, list(p.nodes), p) for p in state.parts] or [(None, state.nodes, None)]
    for index, nodes, plan in groups:
        hover = []
        for n in nodes:
            h = f"node {n}"
            if plan is not None:
                h += f", part {index} on qrank {plan.qrank} ({state.device_label.get(plan.qrank, plan.device)})"
            if n in side:
                h += f", side {side[n]}"
            hover.append(h)
        traces.append({
            "type": "scatter", "x": [state.pos[n][0] for n in nodes], "y": [state.pos[n][1] for n in nodes],
            "mode": "markers+text", "text": [str(n) for n in nodes], "textfont": {"size": 9, "color": "white"},
            "hovertext": hover, "hoverinfo": "text",
            "marker": {"size": 17, "color": part_color(index) if plan is not None else "#7f7f7f",
                       "symbol": device_symbol(plan.qrank) if plan is not None else "circle",
                       "line": {"color": "black" if not side else ["black" if side.get(n) else "white" for n in nodes],
                                "width": 1.5}},
            "name": f"part {index} → qrank {plan.qrank} ({state.device_label.get(plan.qrank, plan.device)})"
                    if plan is not None else "nodes",
            "legendgroup": f"part{index}", "showlegend": plan is not None,
            "meta": f"mpiq-qaoa-part-{index}" if plan is not None else "mpiq-qaoa-nodes", "xaxis": "x", "yaxis": "y",
        })
    for plan in state.parts:
        if not plan.runs:
            continue
        ys = list(state.energies.get(plan.index, []))  # copies: FigureSync compares with the last sent
        traces.append({
            "type": "scatter", "x": list(state.steps.get(plan.index, [])), "y": ys, "mode": "lines+markers",
            "marker": {"size": 4, "color": part_color(plan.index)}, "line": {"color": part_color(plan.index)},
            "name": f"part {plan.index} expected cut", "legendgroup": f"part{plan.index}", "showlegend": False,
            "hovertemplate": f"part {plan.index}" + (f" (optimum {plan.optimum:g})" if plan.optimum is not None else "")
                             + ": step %{x}, expected cut %{y:.3f}<extra></extra>",
            "meta": f"mpiq-qaoa-energy-{plan.index}", "xaxis": "x2", "yaxis": "y2",
        })
        steps = state.steps.get(plan.index) or [1]
        traces.append({
            "type": "scatter", "x": [min(steps), max(steps)] if plan.optimum is not None else [],
            "y": [plan.optimum] * 2 if plan.optimum is not None else [], "mode": "lines",
            "line": {"color": part_color(plan.index), "dash": "dash", "width": 1},
            "name": f"part {plan.index} optimum", "legendgroup": f"part{plan.index}", "showlegend": False,
            "hovertemplate": f"part {plan.index}: maximum cut %{{y:g}} (brute force)<extra></extra>",
            "meta": f"mpiq-qaoa-optimum-{plan.index}", "xaxis": "x2", "yaxis": "y2",
        })
    for i, dev in enumerate(state.devices):
        xa, ya = _device_axes(i)
        pos = dev["pos"]
        mine = [p for p in state.parts if p.qrank == dev["qrank"]]
        owner: dict[int, tuple[int, int]] = {}
        region_pairs = []
        for p in mine:
            for r, qubits in enumerate(p.regions):
                owner.update({q: (p.index, r) for q in qubits})
                region_pairs += [(qubits[a], qubits[b]) for a, b in p.template_edges]
        removed = dev["removed_couplings"]
        usable = [c for c in dev["couplings"] if c not in removed]
        for name, pairs, line, kind in (
            ("usable coupling", usable, {"color": "#bdbdbd", "width": 1.5}, "couplings"),
            (f"coupling error > eta", [c for c in dev["couplings"] if c in removed],
             {"color": "#ef9a9a", "width": 1, "dash": "dot"}, "removed-couplings"),
            ("region coupling", region_pairs, {"color": "#212121", "width": 3}, "region-couplings"),
        ):
            xs, ys = _lines(pairs, pos)
            traces.append({"type": "scatter", "x": xs, "y": ys, "mode": "lines", "line": line, "name": name,
                           "hoverinfo": "skip", "showlegend": False, "meta": f"mpiq-qaoa-q{dev['qrank']}-{kind}",
                           "xaxis": xa, "yaxis": ya})
        qubits = list(range(dev["num_qubits"]))
        colors, symbols, hover = [], [], []
        for q in qubits:
            gone = q in dev["removed_qubits"]
            if q in owner:
                colors.append(part_color(owner[q][0]))
            else:
                colors.append("white" if gone else IDLE_QUBIT)
            symbols.append("x" if gone else device_symbol(dev["qrank"]))
            h = f"qubit {q}, readout error {dev['readout'][q]:.4f}"
            if gone:
                h += " (> eta: not used)"
            if q in owner:
                h += f", part {owner[q][0]} region {owner[q][1]}"
            hover.append(h)
        traces.append({
            "type": "scatter", "x": [pos[q][0] for q in qubits], "y": [pos[q][1] for q in qubits],
            "mode": "markers+text" if dev["num_qubits"] <= 40 else "markers",
            "text": [str(q) for q in qubits], "textfont": {"size": 7}, "textposition": "middle center",
            "marker": {"size": 12, "color": colors, "symbol": symbols, "line": {"color": "#616161", "width": 1}},
            "hovertext": hover, "hoverinfo": "text", "name": f"qrank {dev['qrank']} qubits", "showlegend": False,
            "meta": f"mpiq-qaoa-q{dev['qrank']}-qubits", "xaxis": xa, "yaxis": ya,
        })
    return traces


def qaoa_layout(state: _State) -> dict:
    hidden = {"showgrid": False, "zeroline": False, "showticklabels": False}

    def note(text: str, x: float, y: float) -> dict:
        return {"text": html.escape(text), "x": x, "y": y, "xref": "paper", "yref": "paper", "xanchor": "center",
                "yanchor": "bottom", "showarrow": False, "font": {"size": 11}}

    layout: dict[str, Any] = {
        "title": {"text": html.escape(state.heading()), "font": {"size": 13}},
        "xaxis": {"domain": [0.0, 0.46], "anchor": "y", **hidden},
        "yaxis": {"domain": list(_GRAPH_Y), "anchor": "x", **hidden},
        "xaxis2": {"domain": [0.56, 1.0], "anchor": "y2", "title": {"text": "optimizer step"},
                   "dtick": max(1, math.ceil(state.step / 8))},
        "yaxis2": {"domain": [_GRAPH_Y[0] + 0.04, _GRAPH_Y[1]], "anchor": "x2", "title": {"text": "expected cut"}},
        "annotations": [note("graph by part (colour) and device (symbol)"
                             + ("; black outline: side 1 of the cut" if state.result else ""), 0.23, _GRAPH_Y[1]),
                        note("expected cut per part (dashed: the part's optimum)", 0.78, _GRAPH_Y[1])],
        "height": 640, "margin": {"l": 50, "r": 20, "t": 60, "b": 20},
        "legend": {"orientation": "h", "x": 0.0, "y": _GRAPH_Y[0] - 0.02, "yanchor": "top", "font": {"size": 10}},
        "template": "plotly_white", "meta": {"mpiq": "qaoa"},
    }
    n = max(len(state.devices), 1)
    gap = 0.03
    width = (1.0 - gap * (n - 1)) / n
    for i, dev in enumerate(state.devices):
        xa, ya = _device_axes(i)
        lo = i * (width + gap)
        layout[xa.replace("x", "xaxis")] = {"domain": [lo, lo + width], "anchor": ya, **hidden}
        layout[ya.replace("y", "yaxis")] = {"domain": list(_DEVICE_Y), "anchor": xa, **hidden}
        mine = [p for p in state.parts if p.qrank == dev["qrank"]]
        regions = sum(len(p.regions) for p in mine)
        label = f"qrank {dev['qrank']}: {state.device_label[dev['qrank']]}"
        if state.parts:
            label += f", {regions} region(s)" if regions else ", transpiler layout" if mine else ", idle"
        layout["annotations"].append(note(label, lo + width / 2, _DEVICE_Y[1]))
    return layout


def _figure(state: _State) -> "go.Figure":
    import plotly.graph_objects as go

    data = []
    for t in qaoa_traces(state):
        t = dict(t)
        t.pop("type")
        data.append(go.Scatter(**t))
    return go.Figure(data, layout=qaoa_layout(state))


def qaoa_summary(state: _State) -> str:
    lines = [state.heading()]
    r = state.result or {}
    for p in state.parts:
        line = f"  part {p.index}: {len(p.nodes)} nodes on qrank {p.qrank} ({state.device_label.get(p.qrank, p.device)})"
        if p.regions:
            line += f", {len(p.regions)} region(s) " + " ".join(str(list(q)) for q in p.regions)
        energies = state.energies.get(p.index) or []
        if energies:
            line += f", expected cut {energies[-1]:.2f} after {len(energies)} evaluation(s)"
        if p.optimum is not None:
            line += f" (part optimum {p.optimum:g})"
        popt = (r.get("p_optimal_parts") or {}).get(p.index)
        if popt is not None:
            line += f", P(optimal) {popt:.3f}"
        lines.append(line)
    if r.get("p_optimal") is not None:
        lines.append(f"  mean P(optimal sub-solution) {r['p_optimal']:.3f}, {r.get('calls', 0)} sampler call(s)")
    return "\n".join(lines)


def qaoa_figure(result: Any, graph: Any, devices: Sequence[Any] = ()) -> "go.Figure":
    """Static figure of a finished run (a ``QAOAResult``, with the graph and devices it ran on)."""
    label = f"{result.mode}, p={result.p}" + (f", eta={result.eta}, k={result.k}" if result.mode == "aware" else "")
    view = QAOAWidget(graph, devices, eta=result.eta, label=label, mode="text")
    view.set_result(result)
    return view.figure()


# ----------------------------------------------------------------------------- live view
class QAOAWidget(LiveView):
    """Live distributed QAOA. Pass ``on_plan=view.plan, on_iteration=view.iteration`` to
    ``distributed_qaoa``, then ``view.set_result(result)``; ``devices`` are the monitors'
    ``DeviceSpec`` (qrank order), for their coupling maps; ``eta`` the threshold the run filters
    with (None in naive mode: nothing is crossed out); ``label`` names the run in the title."""

    name = "qaoa"

    def __init__(self, graph: Any, devices: Sequence[Any] = (), *, eta: float | None = None, label: str = "aware",
                 mode: str | None = "auto", max_rate: float | None = None) -> None:
        super().__init__(mode=mode, max_rate=max_rate)
        from ..qaoa.graph import as_graph

        self._state = _State(as_graph(graph), list(devices), eta, label)
        self._fig: go.FigureWidget | None = None
        self._sync: FigureSync | None = None
        self._header: ipywidgets.HTML | None = None
        self._box: ipywidgets.VBox | None = None

    # ------------------------------------------------------------------ data feeds
    def plan(self, split: Any, parts: Sequence[Any]) -> None:
        """The parts and where they run (``distributed_qaoa``'s ``on_plan``)."""
        with self._lock:
            self._state.plan(split, parts)
        self._changed()

    def iteration(self, step: int, energies: Mapping[int, float]) -> None:
        """Expected cut of the parts evaluated at optimizer ``step`` (``on_iteration``)."""
        with self._lock:
            s = self._state
            s.step = int(step)
            for part, value in energies.items():
                s.steps.setdefault(part, []).append(int(step))
                s.energies.setdefault(part, []).append(float(value))
        self._changed()

    def set_result(self, result: Any) -> None:
        """Show a finished ``QAOAResult`` (its plan and energy histories if none were fed live)."""
        from ..qaoa.plan import PartPlan

        with self._lock:
            s = self._state
            if not s.parts:
                s.plan(result.split, [PartPlan(
                    r.index, tuple(r.nodes), r.qrank, r.device, tuple(map(tuple, r.regions)), tuple(r.region_fidelity),
                    tuple(map(tuple, r.template_edges)), r.optimum, bool(r.evaluations)) for r in result.subproblems])
                for r in result.subproblems:
                    s.energies[r.index] = list(r.energy_history)
                    s.steps[r.index] = list(range(1, len(r.energy_history) + 1))
                s.step = max((len(r.energy_history) for r in result.subproblems), default=0)
            s.result = _result_dict(result)
            s.stage = "done"
        self._changed()

    @property
    def energies(self) -> dict[int, list[float]]:
        """Expected cut per part, one value per evaluation, as received."""
        with self._lock:
            return {k: list(v) for k, v in self._state.energies.items()}

    @property
    def parts(self) -> list[Any]:
        with self._lock:
            return list(self._state.parts)

    # ------------------------------------------------------------------ LiveView
    def figure(self) -> "go.Figure":
        with self._lock:
            return _figure(self._state)

    def summary(self) -> str:
        with self._lock:
            return qaoa_summary(self._state)

    def _text_progress(self) -> str | None:
        with self._lock:
            s = self._state
            if not s.step:
                return None
            last = ", ".join(f"part {k} {v[-1]:.2f}" for k, v in sorted(s.energies.items()) if v)
            return f"[mpiq] QAOA step {s.step}: expected cut {last}"

    def _build_panel(self) -> "ipywidgets.Widget":
        import ipywidgets as W

        self._header = W.HTML()
        self._box = W.VBox([self._header], layout=W.Layout(width="100%"))
        return self._box

    def _sync_panel(self) -> None:
        assert self._box is not None and self._header is not None
        traces, layout = qaoa_traces(self._state), qaoa_layout(self._state)
        if self._fig is None or len(traces) != len(self._fig.data):  # the plan adds traces: a new figure
            old = self._fig
            self._fig = figure_widget(_figure(self._state))
            self._sync = FigureSync(self._fig, traces, layout)
            self._box.children = (self._header, self._fig)
            if old is not None:
                old.close()
        else:
            self._sync.apply(traces, layout)
        self._header.value = f'<span class="mpiq-qaoa-header">{html.escape(self._state.heading())}</span>'
