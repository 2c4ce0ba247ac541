"""Merging sub-problem solutions into one cut of the whole graph.

0. Choice of sub-solutions: each part may offer several sampled cuts (its best distinct samples);
   coordinate ascent picks, part by part, the candidate and orientation that maximise the whole
   cut given the other parts, until no part changes (starting from every part's best sample).
1. Orientation (QAOA-in-QAOA's merge step; exact here, or by a QAOA with :mod:`.inqaoa`): flipping every node of a part
   keeps the part's own cut and changes only its edges to other parts, so choosing which parts
   to flip is a MaxCut on the graph of parts. Exact by enumeration up to :data:`EXACT_PARTS`
   parts, greedy flips above.
2. Greedy boundary flips: repeatedly flip the boundary node (one with an edge between parts)
   whose flip gains most, until no flip gains (``local_search="all"``: any node).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import networkx as nx
import numpy as np

from .graph import cut_value

#: Largest number of parts whose orientations are enumerated exactly.
EXACT_PARTS = 16


@dataclass(frozen=True)
class MergeResult:
    assignment: dict[int, int]
    concatenated_cut: float  # sub-solutions as sampled
    oriented_cut: float  # after choosing the parts' orientations
    cut: float  # after greedy flips
    flipped_parts: tuple[int, ...]
    flipped_nodes: tuple[int, ...]


def merge_solutions(
    graph: nx.Graph, parts: Sequence[Sequence[int]], local: Sequence[dict[int, int]], *,
    local_search: str = "boundary", candidates: Sequence[Sequence[dict[int, int]]] | None = None,
    orient: Callable[[np.ndarray, np.ndarray], Sequence[int]] | None = None,
) -> MergeResult:
    """Merge ``local[i]`` (node -> side, for the nodes of ``parts[i]``) into a cut of ``graph``;
    ``candidates[i]``: more sub-solutions of part ``i`` the merge may choose from; ``orient(same,
    diff)``: the parts to flip (default: enumerated exactly; QAOA-in-QAOA: :mod:`.inqaoa`)."""
    assignment = {n: int(s) for sol in local for n, s in sol.items()}
    concatenated = cut_value(graph, assignment)
    if candidates is not None:
        _choose(graph, parts, assignment, candidates)
    part_of = {n: i for i, part in enumerate(parts) for n in part}
    m = len(parts)
    # gain[i][j]: weight cut between parts i, j if orientations are equal minus if they differ
    same = np.zeros((m, m))
    diff = np.zeros((m, m))
    for u, v, w in graph.edges(data="weight", default=1.0):
        i, j = part_of[u], part_of[v]
        if i == j:
            continue
        if assignment[u] != assignment[v]:
            same[i, j] += w; same[j, i] += w
        else:
            diff[i, j] += w; diff[j, i] += w
    flips = list(orient(same, diff)) if orient is not None else _orient(same, diff)
    flipped_parts = tuple(i for i in range(m) if flips[i])
    for i in flipped_parts:
        for n in parts[i]:
            assignment[n] ^= 1
    oriented = cut_value(graph, assignment)
    flipped_nodes = _greedy_flips(graph, assignment, part_of, local_search)
    return MergeResult(assignment, concatenated, oriented, cut_value(graph, assignment), flipped_parts, flipped_nodes)


def _choose(graph, parts, assignment, candidates) -> None:
    options = []
    for i, cands in enumerate(candidates):
        opts = []
        for c in cands:
            opts.append(dict(c))
            opts.append({n: 1 - v for n, v in c.items()})
        options.append(opts)
    changed, rounds = True, 0
    while changed and rounds < 20:
        changed, rounds = False, rounds + 1
        for i, part in enumerate(parts):
            if not options[i]:
                continue
            inside = set(part)
            def score(sol):
                total = 0.0
                for n in part:
                    for u in graph[n]:
                        w = graph[n][u].get("weight", 1.0)
                        side_u = sol[u] if u in inside else assignment[u]
                        if sol[n] != side_u:
                            total += w if u not in inside else w / 2
                return total
            current = score({n: assignment[n] for n in part})
            best = max(options[i], key=score)
            if score(best) > current + 1e-12:
                assignment.update(best)
                changed = True


def _orient(same: np.ndarray, diff: np.ndarray) -> list[int]:
    m = len(same)
    if m <= 1:
        return [0] * m

    def value(f):
        return sum(same[i, j] if f[i] == f[j] else diff[i, j] for i in range(m) for j in range(i + 1, m))

    if m <= EXACT_PARTS:
        best, best_f = -1.0, [0] * m
        for mask in range(1 << (m - 1)):  # part m-1 keeps its orientation
            f = [(mask >> i) & 1 for i in range(m)]
            v = value(f)
            if v > best:
                best, best_f = v, f
        return best_f
    f = [0] * m
    improved = True
    while improved:
        improved = False
        for i in range(m):
            before = value(f)
            f[i] ^= 1
            if value(f) > before:
                improved = True
            else:
                f[i] ^= 1
    return f


def _greedy_flips(graph: nx.Graph, assignment: dict[int, int], part_of: dict[int, int], mode: str) -> tuple[int, ...]:
    if mode == "all":
        candidates = set(graph.nodes)
    else:
        candidates = {n for u, v in graph.edges if part_of[u] != part_of[v] for n in (u, v)}
    flipped = []
    while True:
        best_gain, best_node = 0.0, None
        for n in sorted(candidates):
            gain = sum(w * (1 if assignment[n] == assignment[u] else -1) for u, w in
                       ((u, graph[n][u].get("weight", 1.0)) for u in graph[n]))
            if gain > best_gain + 1e-12:
                best_gain, best_node = gain, n
        if best_node is None:
            return tuple(flipped)
        assignment[best_node] ^= 1
        flipped.append(best_node)
