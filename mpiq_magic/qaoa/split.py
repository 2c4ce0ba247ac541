"""Balanced min-cut of a graph into parts that each fit one device (Algorithm 1, line 4)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import networkx as nx

from ..kernel.errors import UsageError


@dataclass(frozen=True)
class Split:
    """The parts (sorted node lists), the cut edges between parts and their total weight."""

    parts: tuple[tuple[int, ...], ...]
    cut_edges: tuple[tuple[int, int], ...]
    cut_weight: float
    method: str

    def part_of(self) -> dict[int, int]:
        """Node -> index of its part."""
        return {n: i for i, part in enumerate(self.parts) for n in part}


def split_graph(graph: nx.Graph, capacity: int, *, parts: int | None = None, seed: int = 0) -> Split:
    """Split ``graph`` into ``parts`` (default ``ceil(N / capacity)``) balanced parts of at most
    ``capacity`` nodes, minimising the weight of the edges between parts.

    METIS (pymetis) partitions; parts over capacity are repaired by moving the boundary node
    whose move costs least. Without pymetis, recursive Kernighan–Lin bisection (networkx).

    Raises:
        UsageError: ``capacity`` < 1, or ``parts`` parts of ``capacity`` cannot hold the graph.
    """
    n = graph.number_of_nodes()
    if capacity < 1:
        raise UsageError(f"capacity must be at least 1, got {capacity}.")
    count = parts if parts is not None else max(1, math.ceil(n / capacity))
    if count * capacity < n:
        raise UsageError(f"{count} part(s) of at most {capacity} nodes cannot hold a graph of {n} nodes.")
    if count == 1:
        return Split((tuple(sorted(graph.nodes)),), (), 0.0, "whole")
    try:
        membership, method = _metis(graph, count, seed), "metis"
    except ImportError:  # pragma: no cover - pymetis is a dependency
        membership, method = _kernighan_lin(graph, count, seed), "kernighan-lin"
    membership = _repair(graph, membership, count, capacity)
    groups = [tuple(sorted(v for v in graph.nodes if membership[v] == p)) for p in range(count)]
    groups = [g for g in groups if g]
    cut = tuple((int(u), int(v)) for u, v in graph.edges if membership[u] != membership[v])
    weight = float(sum(graph[u][v].get("weight", 1.0) for u, v in cut))
    return Split(tuple(groups), cut, weight, method)


def _metis(graph: nx.Graph, count: int, seed: int) -> dict[int, int]:
    import pymetis

    nodes = sorted(graph.nodes)
    xadj, adjncy, eweights = [0], [], []
    for v in nodes:
        for u in sorted(graph[v]):
            adjncy.append(u)
            eweights.append(max(1, int(round(100 * graph[v][u].get("weight", 1.0)))))
        xadj.append(len(adjncy))
    options = pymetis.Options(seed=seed, ufactor=1)
    adjacency = pymetis.CSRAdjacency(xadj, adjncy) if hasattr(pymetis, "CSRAdjacency") else None
    if adjacency is None:  # pragma: no cover - older pymetis
        _, member = pymetis.part_graph(count, xadj=xadj, adjncy=adjncy, eweights=eweights, options=options)
    else:
        _, member = pymetis.part_graph(count, adjacency, eweights=eweights, options=options)
    return {v: int(member[i]) for i, v in enumerate(nodes)}


def _kernighan_lin(graph: nx.Graph, count: int, seed: int) -> dict[int, int]:
    groups = [set(graph.nodes)]
    while len(groups) < count:
        groups.sort(key=len)
        big = groups.pop()
        a, b = nx.algorithms.community.kernighan_lin_bisection(graph.subgraph(big), seed=seed)
        groups += [set(a), set(b)]
    return {v: i for i, g in enumerate(groups) for v in g}


def _repair(graph: nx.Graph, member: dict[int, int], count: int, capacity: int) -> dict[int, int]:
    member = dict(member)
    sizes = [0] * count
    for p in member.values():
        sizes[p] += 1
    while max(sizes) > capacity:
        src = max(range(count), key=lambda p: sizes[p])
        best = None
        for v in (v for v in graph.nodes if member[v] == src):
            for dst in range(count):
                if dst == src or sizes[dst] >= capacity:
                    continue
                gain = sum(graph[v][u].get("weight", 1.0) * ((member[u] == dst) - (member[u] == src)) for u in graph[v])
                if best is None or gain > best[0]:
                    best = (gain, v, dst)
        _, v, dst = best  # a destination with room exists because count * capacity >= N
        member[v] = dst
        sizes[src] -= 1
        sizes[dst] += 1
    return member
