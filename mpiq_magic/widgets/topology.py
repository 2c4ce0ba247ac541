"""Communicator topology: classical ranks and quantum monitors grouped by host, communicators
as edges, live idle/busy/dead status.

Edges: the classical communicator (CC) as a star from rank 0, the quantum communicator (QQ) as
a star from qrank 0 (the reference clock of QQ barriers), and the hybrid path from classical
rank 0 to every monitor (scatter/gather).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Mapping

from .base import FigureSync, LiveView, figure_widget

if TYPE_CHECKING:
    import ipywidgets
    import plotly.graph_objects as go

STATUSES = ("idle", "busy", "dead")
STATUS_COLORS = {"idle": "#2ca02c", "busy": "#ff7f0e", "dead": "#7f7f7f"}
EDGE_STYLES = {
    "cc": ("classical communicator (CC)", "#1f77b4", "dot"),
    "qq": ("quantum communicator (QQ)", "#d62728", "dot"),
    "hybrid": ("hybrid path (scatter/gather)", "#9467bd", "solid"),
}
_X_CLASSICAL, _X_QUANTUM, _X_HOST = 0.0, 2.0, 5.0


# ----------------------------------------------------------------------------- data
def topology_dict(topology: Any) -> dict[str, Any]:
    """``Topology.to_dict()`` form of a ``Topology``, a dict of that form, or None (empty)."""
    if topology is None:
        return {"classical": [], "quantum": [], "hosts": []}
    if hasattr(topology, "to_dict"):
        topology = topology.to_dict()
    if not isinstance(topology, Mapping) or "classical" not in topology or "quantum" not in topology:
        raise TypeError(
            "A topology must be a Topology or a dict with 'classical' and 'quantum' lists "
            f"(Topology.to_dict()), got {type(topology).__name__}."
        )
    return {
        "classical": [dict(c) for c in topology["classical"]],
        "quantum": [dict(q) for q in topology["quantum"]],
        "hosts": list(topology.get("hosts") or []),
    }


def node_host(node: Mapping[str, Any], hosts: list[str]) -> str:
    """The host a node is drawn under: a loopback device host means the job's single node."""
    from ..kernel.hosts import is_loopback  # here, not at import: the kernel package imports MPI

    host = str(node.get("host", "?"))
    if is_loopback(host) and len(hosts) == 1:
        return hosts[0]
    return host


def node_ids(topo: Mapping[str, Any]) -> list[str]:
    return [f"rank {c['rank']}" for c in topo["classical"]] + [f"qrank {q['qrank']}" for q in topo["quantum"]]


def resolve_node(topo: Mapping[str, Any], who: Any) -> list[str]:
    """Node ids named by ``who``: 'rank 0', 'qrank 1', Rank(0)/QRank(1), a comm rank (int),
    a device ``(host, device_id)``, or a group: 'all', 'classical', 'quantum'."""
    ids = node_ids(topo)
    if isinstance(who, bool):
        raise TypeError(f"A node cannot be named by a bool, got {who!r}.")
    if isinstance(who, int):
        for c in topo["classical"]:
            if c["comm_rank"] == who:
                return [f"rank {c['rank']}"]
        for q in topo["quantum"]:
            if q["comm_rank"] == who:
                return [f"qrank {q['qrank']}"]
        raise KeyError(f"No process of the topology has comm rank {who}; it has {len(ids)} processes.")
    kind = type(who).__name__
    if kind in ("Rank", "QRank"):
        who = str(who)
    if kind == "Device" or (isinstance(who, tuple) and len(who) == 2 and isinstance(who[1], int)):
        host, device_id = who[0], who[1]
        for q in topo["quantum"]:
            if q["device_id"] == device_id and (q["host"] == host or node_host(q, topo["hosts"]) == host):
                return [f"qrank {q['qrank']}"]
        raise KeyError(f"No quantum monitor of the topology is bound to device ({host}, {device_id}).")
    text = str(who).strip().lower()
    text = text.split(" (")[0]  # 'qrank 2 (device 127.0.0.1:2)' -> 'qrank 2'
    groups = {
        "all": ids,
        "*": ids,
        "classical": [i for i in ids if i.startswith("rank ")],
        "quantum": [i for i in ids if i.startswith("qrank ")],
    }
    if text in groups:
        return groups[text]
    if text in ids:
        return [text]
    raise KeyError(
        f"{who!r} names no node of the topology; use 'rank i', 'qrank j', a comm rank, a device "
        f"(host, device_id) or one of all/classical/quantum (nodes: {', '.join(ids) or 'none'})."
    )


def _layout_nodes(topo: Mapping[str, Any]) -> dict[str, Any]:
    """Positions of every node, grouped in one column pair per host."""
    hosts = topo["hosts"]
    order: list[str] = []
    for node in topo["classical"] + topo["quantum"]:
        h = node_host(node, hosts)
        if h not in order:
            order.append(h)
    pos: dict[str, tuple[float, float]] = {}
    boxes = []
    for k, h in enumerate(order):
        cls = [c for c in topo["classical"] if node_host(c, hosts) == h]
        qs = [q for q in topo["quantum"] if node_host(q, hosts) == h]
        rows = max(len(cls), len(qs), 1)
        x0 = k * _X_HOST
        for i, c in enumerate(cls):
            y = -i * (rows - 1) / max(len(cls) - 1, 1) if len(cls) > 1 else -(rows - 1) / 2
            pos[f"rank {c['rank']}"] = (x0 + _X_CLASSICAL, y)
        for i, q in enumerate(qs):
            y = -i * (rows - 1) / max(len(qs) - 1, 1) if len(qs) > 1 else -(rows - 1) / 2
            pos[f"qrank {q['qrank']}"] = (x0 + _X_QUANTUM, y)
        boxes.append({"host": h, "x0": x0 - 1.2, "x1": x0 + _X_QUANTUM + 2.6, "y0": -(rows - 1) - 0.6, "y1": 0.75})
    return {"pos": pos, "boxes": boxes, "rows": max([1] + [int(1 - b["y0"]) for b in boxes])}


def _curve(a: tuple[float, float], b: tuple[float, float], bend: float, steps: int = 12) -> tuple[list, list]:
    """Points of a quadratic curve from a to b bulging sideways by ``bend`` (None-terminated)."""
    (x0, y0), (x1, y1) = a, b
    cx, cy = (x0 + x1) / 2 + bend * abs(y1 - y0) / 2, (y0 + y1) / 2
    xs, ys = [], []
    for s in range(steps + 1):
        t = s / steps
        xs.append((1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t**2 * x1)
        ys.append((1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t**2 * y1)
    return xs + [None], ys + [None]


def _edges(topo: Mapping[str, Any], pos: Mapping[str, tuple[float, float]]) -> dict[str, tuple[list, list]]:
    out: dict[str, tuple[list, list]] = {"cc": ([], []), "qq": ([], []), "hybrid": ([], [])}
    cls = [f"rank {c['rank']}" for c in topo["classical"]]
    qs = [f"qrank {q['qrank']}" for q in topo["quantum"]]
    for kind, members, bend in (("cc", cls, -0.6), ("qq", qs, -0.5)):
        for other in members[1:]:
            xs, ys = _curve(pos[members[0]], pos[other], bend)
            out[kind][0].extend(xs)
            out[kind][1].extend(ys)
    if cls:
        for q in qs:
            (x0, y0), (x1, y1) = pos[cls[0]], pos[q]
            out["hybrid"][0].extend([x0, x1, None])
            out["hybrid"][1].extend([y0, y1, None])
    return out


def topology_traces(topo: Mapping[str, Any], status: Mapping[str, tuple[str, str]] | None = None) -> list[dict]:
    """Trace properties, in figure order: CC, QQ and hybrid edges, classical, quantum nodes."""
    status = status or {}
    lay = _layout_nodes(topo)
    pos, edges = lay["pos"], _edges(topo, lay["pos"])
    traces: list[dict] = []
    for kind in ("cc", "qq", "hybrid"):
        name, color, dash = EDGE_STYLES[kind]
        traces.append({"x": edges[kind][0], "y": edges[kind][1], "name": name, "mode": "lines",
                       "line": {"color": color, "dash": dash, "width": 1.5}, "hoverinfo": "skip",
                       "meta": f"mpiq-{kind}"})

    def marker(ids: list[str], symbol: str) -> dict:
        st = [status.get(i, ("idle", ""))[0] for i in ids]
        return {"size": 22, "color": [STATUS_COLORS[s] for s in st],
                "symbol": [f"{symbol}-x" if s == "dead" else symbol for s in st],
                "line": {"color": "#333", "width": 1}}

    def detail(i: str) -> str:
        s, d = status.get(i, ("idle", ""))
        return f"<br>status: {s}" + (f" ({html.escape(d)})" if d else "")

    hosts = topo["hosts"]
    cids = [f"rank {c['rank']}" for c in topo["classical"]]
    traces.append({
        "x": [pos[i][0] for i in cids], "y": [pos[i][1] for i in cids], "name": "classical ranks",
        "mode": "markers+text", "text": cids, "textposition": "middle left", "marker": marker(cids, "square"),
        "hovertext": [
            f"{i} (comm rank {c['comm_rank']})<br>host {c['host']}, core {c.get('core', '?')}{detail(i)}"
            for i, c in zip(cids, topo["classical"])
        ],
        "hoverinfo": "text", "meta": "mpiq-classical", "customdata": cids,
    })
    qids = [f"qrank {q['qrank']}" for q in topo["quantum"]]
    traces.append({
        "x": [pos[i][0] for i in qids], "y": [pos[i][1] for i in qids], "name": "quantum monitors",
        "mode": "markers+text", "textposition": "middle right", "marker": marker(qids, "circle"),
        "text": [f"{i} · dev {q['device_id']} · {q['backend']}/{q['method']}" for i, q in zip(qids, topo["quantum"])],
        "hovertext": [
            f"{i} (comm rank {q['comm_rank']})<br>device ({q['host']}, {q['device_id']}) on "
            f"{node_host(q, hosts)}<br>{q['num_qubits']} qubits, {q['backend']}/{q['method']}{detail(i)}"
            for i, q in zip(qids, topo["quantum"])
        ],
        "hoverinfo": "text", "meta": "mpiq-quantum", "customdata": qids,
    })
    return traces


def topology_layout(topo: Mapping[str, Any], status: Mapping[str, tuple[str, str]] | None = None) -> dict:
    """Layout properties: host boxes, title with the counts, axis ranges, height."""
    status = status or {}
    lay = _layout_nodes(topo)
    counts = {s: 0 for s in STATUSES}
    for i in node_ids(topo):
        counts[status.get(i, ("idle", ""))[0]] += 1
    shapes = [
        {"type": "rect", "x0": b["x0"], "x1": b["x1"], "y0": b["y0"], "y1": b["y1"], "layer": "below",
         "line": {"color": "#aaa", "width": 1}, "fillcolor": "rgba(200,200,200,0.12)"}
        for b in lay["boxes"]
    ]
    annotations = [
        {"x": (b["x0"] + b["x1"]) / 2, "y": b["y1"], "yanchor": "bottom", "showarrow": False,
         "text": f"host <b>{html.escape(b['host'])}</b>", "font": {"size": 12}}
        for b in lay["boxes"]
    ]
    width_hosts = max(len(lay["boxes"]), 1)
    title = (
        f"Hybrid communicator: {len(topo['classical'])} classical, {len(topo['quantum'])} quantum "
        f"on {len(lay['boxes'])} host(s) — idle {counts['idle']}, busy {counts['busy']}, dead {counts['dead']}"
    )
    return {
        "title": {"text": title, "font": {"size": 14}},
        "shapes": shapes,
        "annotations": annotations,
        "xaxis": {"visible": False, "range": [-2.6, (width_hosts - 1) * _X_HOST + _X_QUANTUM + 3.4]},
        "yaxis": {"visible": False, "range": [-(lay["rows"] - 1) - 0.9, 1.3]},
        "height": max(320, 70 * lay["rows"] + 170),
        "margin": {"l": 10, "r": 10, "t": 60, "b": 10},
        "legend": {"orientation": "h", "y": -0.02, "yanchor": "top"},
        "template": "plotly_white",
        "meta": {"mpiq": "topology"},
    }


def topology_figure(topology: Any, status: Mapping[str, Any] | None = None) -> "go.Figure":
    """Static figure of a topology (``Topology`` or ``Topology.to_dict()``); ``status`` maps node
    ids ('rank 0', 'qrank 1') to 'idle'/'busy'/'dead' or ``(status, detail)``."""
    import plotly.graph_objects as go

    topo = topology_dict(topology)
    st = {k: (v, "") if isinstance(v, str) else tuple(v) for k, v in (status or {}).items()}
    return go.Figure([go.Scatter(**t) for t in topology_traces(topo, st)], layout=topology_layout(topo, st))


def topology_summary(topo: Mapping[str, Any], status: Mapping[str, tuple[str, str]] | None = None) -> str:
    status = status or {}
    lines = [f"hybrid communicator: {len(topo['classical'])} classical, {len(topo['quantum'])} quantum"]
    for c in topo["classical"]:
        s, d = status.get(f"rank {c['rank']}", ("idle", ""))
        lines.append(f"  rank {c['rank']:<3} comm rank {c['comm_rank']:<3} host {c['host']:<16} core {c.get('core', '?'):<3} {s}"
                     + (f" ({d})" if d else ""))
    for q in topo["quantum"]:
        s, d = status.get(f"qrank {q['qrank']}", ("idle", ""))
        lines.append(
            f"  qrank {q['qrank']:<2} comm rank {q['comm_rank']:<3} device ({q['host']}, {q['device_id']}) "
            f"{q['num_qubits']} qubits, {q['backend']}/{q['method']} {s}" + (f" ({d})" if d else "")
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- live view
class TopologyWidget(LiveView):
    """Live topology view. ``update_status(who, status)`` recolours nodes in place."""

    name = "topology"

    def __init__(self, topology: Any = None, *, mode: str | None = "auto", max_rate: float | None = None) -> None:
        super().__init__(mode=mode, max_rate=max_rate)
        self._topo = topology_dict(topology)
        self._status: dict[str, tuple[str, str]] = {}
        self._fig: go.FigureWidget | None = None
        self._sync: FigureSync | None = None
        self._header: ipywidgets.HTML | None = None

    @property
    def topology(self) -> dict[str, Any]:
        return self._topo

    @property
    def status(self) -> dict[str, str]:
        """Node id -> 'idle' | 'busy' | 'dead'."""
        with self._lock:
            return {i: self._status.get(i, ("idle", ""))[0] for i in node_ids(self._topo)}

    def set_topology(self, topology: Any) -> None:
        """Replace the topology (e.g. after ``%mpiq start``); statuses of kept nodes stay."""
        topo = topology_dict(topology)
        with self._lock:
            self._topo = topo
            keep = set(node_ids(topo))
            self._status = {k: v for k, v in self._status.items() if k in keep}
        self._changed()

    def update_status(self, who: Any, status: str | None = None, detail: str = "") -> None:
        """Set the status of one node or group (see :func:`resolve_node`), or of many at once
        with a mapping ``{who: status}``. ``status`` is 'idle', 'busy' or 'dead'."""
        items = who.items() if isinstance(who, Mapping) else [(who, status)]
        with self._lock:
            for w, s in items:
                if s not in STATUSES:
                    raise ValueError(f"Status {s!r} for {w!r} is not one of {', '.join(STATUSES)}.")
                for node in resolve_node(self._topo, w):
                    self._status[node] = (s, detail)
        self._changed()

    def event(self, event: Mapping[str, Any]) -> None:
        """Apply a progress event (see :mod:`mpiq_magic.events`)."""
        kind = event.get("event")
        if kind == "topology":
            self.set_topology(event["topology"])
        elif kind == "status":
            self.update_status(event["who"], event["status"], event.get("detail", ""))
        elif kind == "scatter" and self._topo["quantum"]:
            self.update_status("quantum", "busy")
        elif kind == "executed" and event.get("done") == event.get("total") and "qrank" in event:
            self.update_status(f"qrank {event['qrank']}", "idle")
        elif kind in ("gather", "result"):
            with self._lock:
                busy = [i for i, (s, _) in self._status.items() if s == "busy"]
            if busy:
                self.update_status({i: "idle" for i in busy})

    # ------------------------------------------------------------------ rendering
    def figure(self) -> "go.Figure":
        with self._lock:
            return topology_figure(self._topo, self._status)

    def summary(self) -> str:
        with self._lock:
            return topology_summary(self._topo, self._status)

    def _build_panel(self) -> "ipywidgets.Widget":
        import ipywidgets as W
        import plotly.graph_objects as go

        self._header = W.HTML()
        traces, layout = topology_traces(self._topo, self._status), topology_layout(self._topo, self._status)
        self._fig = figure_widget([go.Scatter(**t) for t in traces], layout=layout)
        self._sync = FigureSync(self._fig, traces, layout)
        return W.VBox([self._header, self._fig], layout=W.Layout(width="100%"))

    def _sync_panel(self) -> None:
        assert self._fig is not None and self._header is not None
        self._sync.apply(topology_traces(self._topo, self._status), topology_layout(self._topo, self._status))
        counts = {s: 0 for s in STATUSES}
        for s in self.status.values():
            counts[s] += 1
        self._header.value = (
            f'<span class="mpiq-topology-header">{len(self._topo["classical"])} classical · '
            f'{len(self._topo["quantum"])} quantum · '
            + " · ".join(f'<span style="color:{STATUS_COLORS[s]}">{counts[s]} {s}</span>' for s in STATUSES)
            + "</span>"
        )

