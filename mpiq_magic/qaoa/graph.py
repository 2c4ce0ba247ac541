"""MaxCut graphs: reading them, cut values, exact optima of small graphs.

Graphs are networkx graphs with nodes ``0..N-1`` (:func:`as_graph` relabels others and keeps
the original label in the node attribute ``label``) and an optional edge ``weight`` (default 1).
A cut is an assignment node -> 0/1, or an integer whose bit ``i`` is node ``i``'s side.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import networkx as nx
import numpy as np

from ..kernel.errors import UsageError

#: Largest graph :func:`brute_force_maxcut` enumerates (2**N cuts).
BRUTE_FORCE_MAX = 26


def as_graph(obj: Any) -> nx.Graph:
    """A networkx graph with nodes ``0..N-1`` from a graph, an edge list, a JSON-like dict
    (``{"edges": [[u, v] or [u, v, w], ...], "nodes": N or [labels]}`` or networkx node-link
    data) or the path of a JSON file holding one.

    Raises:
        UsageError: unreadable input, no edges, or negative/non-numeric weights.
    """
    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        try:
            obj = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"Cannot read graph file '{path}': {exc}.") from None
    if isinstance(obj, nx.Graph):
        graph = nx.Graph(obj)
    elif isinstance(obj, Mapping) and "links" in obj:
        graph = nx.Graph(nx.node_link_graph(dict(obj), edges="links"))
    elif isinstance(obj, Mapping) and "edges" in obj:
        graph = nx.Graph()
        nodes = obj.get("nodes")
        if isinstance(nodes, int):
            graph.add_nodes_from(range(nodes))
        elif nodes is not None:
            graph.add_nodes_from(nodes)
        graph.add_weighted_edges_from(_edges(obj["edges"]))
    elif isinstance(obj, Iterable):
        graph = nx.Graph()
        graph.add_weighted_edges_from(_edges(obj))
    else:
        raise UsageError(f"A graph must be a networkx graph, an edge list, a dict or a JSON file, got {type(obj).__name__}.")
    if graph.number_of_edges() == 0:
        raise UsageError(f"The graph has {graph.number_of_nodes()} nodes and no edges; MaxCut needs edges.")
    for u, v, w in graph.edges(data="weight", default=1.0):
        if not isinstance(w, (int, float)) or w < 0:
            raise UsageError(f"Edge ({u}, {v}) has weight {w!r}; weights must be numbers >= 0.")
    if sorted(graph.nodes) != list(range(graph.number_of_nodes())):
        graph = nx.convert_node_labels_to_integers(graph, ordering="sorted", label_attribute="label")
    return graph


def _edges(items) -> list[tuple[Any, Any, float]]:
    out = []
    for item in items:
        item = list(item)
        if len(item) not in (2, 3):
            raise UsageError(f"An edge is [u, v] or [u, v, weight], got {item!r}.")
        out.append((item[0], item[1], float(item[2]) if len(item) == 3 else 1.0))
    return out


def graph_to_dict(graph: nx.Graph) -> dict[str, Any]:
    """``{"nodes": N, "edges": [[u, v, w], ...]}`` (the format :func:`as_graph` reads)."""
    return {
        "nodes": graph.number_of_nodes(),
        "edges": [[int(u), int(v), float(w)] for u, v, w in graph.edges(data="weight", default=1.0)],
    }


def regular_graph(nodes: int, degree: int = 3, seed: int = 0) -> nx.Graph:
    """A seeded random ``degree``-regular graph on ``nodes`` nodes (unit weights)."""
    graph = nx.random_regular_graph(degree, nodes, seed=seed)
    nx.set_edge_attributes(graph, 1.0, "weight")
    return graph


def edge_arrays(graph: nx.Graph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(u, v, w)`` arrays of the edges."""
    data = [(int(u), int(v), float(w)) for u, v, w in graph.edges(data="weight", default=1.0)]
    if not data:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    u, v, w = zip(*data)
    return np.array(u), np.array(v), np.array(w)


def cut_value(graph: nx.Graph, assignment: Mapping[int, int] | Iterable[int] | int) -> float:
    """The weight of the edges whose endpoints ``assignment`` puts on different sides."""
    if isinstance(assignment, (int, np.integer)):
        side = {n: (int(assignment) >> n) & 1 for n in graph.nodes}
    elif isinstance(assignment, Mapping):
        side = assignment
    else:
        side = dict(enumerate(assignment))
    return float(sum(w for u, v, w in graph.edges(data="weight", default=1.0) if side[u] != side[v]))


def cut_table(graph: nx.Graph) -> np.ndarray:
    """The cut value of every integer assignment ``0 .. 2**N - 1`` (N <= :data:`BRUTE_FORCE_MAX`).

    Raises:
        UsageError: the graph is too large to enumerate.
    """
    n = graph.number_of_nodes()
    if n > BRUTE_FORCE_MAX:
        raise UsageError(f"The graph has {n} nodes; enumerating its cuts is limited to {BRUTE_FORCE_MAX}.")
    states = np.arange(1 << n, dtype=np.int64)
    table = np.zeros(1 << n)
    for u, v, w in zip(*edge_arrays(graph)):
        table += w * (((states >> u) ^ (states >> v)) & 1)
    return table


def brute_force_maxcut(graph: nx.Graph) -> tuple[float, int]:
    """The maximum cut of a small graph and one assignment (as an integer) reaching it.

    Raises:
        UsageError: more than :data:`BRUTE_FORCE_MAX` nodes.
    """
    n = graph.number_of_nodes()
    if n > BRUTE_FORCE_MAX:
        raise UsageError(f"The graph has {n} nodes; brute force is limited to {BRUTE_FORCE_MAX}.")
    best_value, best_state = -1.0, 0
    chunk = 1 << min(n, 20)
    u, v, w = edge_arrays(graph)
    for start in range(0, 1 << max(n - 1, 0) or 1, chunk):  # node n-1 fixed to 0 (symmetry)
        states = np.arange(start, min(start + chunk, max(1 << max(n - 1, 0), 1)), dtype=np.int64)
        values = np.zeros(len(states))
        for a, b, c in zip(u, v, w):
            values += c * (((states >> a) ^ (states >> b)) & 1)
        i = int(np.argmax(values))
        if values[i] > best_value:
            best_value, best_state = float(values[i]), int(states[i])
    return best_value, best_state


def milp_maxcut(graph: nx.Graph, *, time_limit: float = 60.0) -> tuple[float, dict[int, int], bool]:
    """MaxCut as a mixed-integer program solved by HiGHS (``scipy.optimize.milp``): binary side
    ``x_i`` per node, binary ``y_e <= x_i + x_j`` and ``y_e <= 2 - x_i - x_j`` per edge, maximise
    the weight of the ``y_e``; the last node is fixed to side 0 (symmetry). Returns
    ``(value, assignment, proven)``: ``proven`` is True when HiGHS proved the value optimal
    within ``time_limit`` seconds (else the best cut it found).

    Raises:
        UsageError: HiGHS found no cut at all within the limit.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    n = graph.number_of_nodes()
    u, v, w = edge_arrays(graph)
    m = len(w)
    rows = np.repeat(np.arange(2 * m), 3)
    cols = np.stack([n + np.arange(m), u, v, n + np.arange(m), u, v], axis=1).reshape(-1)
    vals = np.tile([1.0, -1.0, -1.0, 1.0, 1.0, 1.0], m)
    a = coo_matrix((vals, (rows, cols)), shape=(2 * m, n + m)).tocsr()
    upper = np.tile([0.0, 2.0], m)
    high = np.ones(n + m)
    high[n - 1] = 0.0
    res = milp(np.concatenate([np.zeros(n), -w]), constraints=LinearConstraint(a, -np.inf, upper),
               integrality=np.ones(n + m), bounds=Bounds(np.zeros(n + m), high), options={"time_limit": time_limit})
    if res.x is None:
        raise UsageError(f"HiGHS found no cut of the {n}-node graph within {time_limit} s: {res.message}")
    side = {i: int(round(res.x[i])) for i in range(n)}
    return cut_value(graph, side), side, res.status == 0


def classical_baseline(graph: nx.Graph, seed: int = 0) -> tuple[float, str]:
    """The maximum cut for comparison, ``(value, method)``: brute force up to 22 nodes, else the
    mixed-integer program of :func:`milp_maxcut` (exact when HiGHS proves it within a minute;
    otherwise the better of its cut and networkx's one-exchange local search, named as such)."""
    if graph.number_of_nodes() <= 22:
        return brute_force_maxcut(graph)[0], "brute force"
    value, _, proven = milp_maxcut(graph)
    if proven:
        return value, "exact (MILP, HiGHS)"
    local = heuristic_maxcut(graph, seed)
    return max(value, local), "best of MILP (not proven in 60 s) and one_exchange"


def heuristic_maxcut(graph: nx.Graph, seed: int = 0, tries: int = 8) -> float:
    """networkx's one-exchange local search (``approximation.one_exchange``), best of ``tries``
    seeds: the classical heuristic baseline."""
    from networkx.algorithms import approximation as approx

    best = 0.0
    for s in range(tries):
        value, _ = approx.one_exchange(graph, weight="weight", seed=seed + s)
        best = max(best, float(value))
    return best
