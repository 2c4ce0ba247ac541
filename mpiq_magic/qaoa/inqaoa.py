"""QAOA-in-QAOA merge: the parts' orientations chosen by a QAOA on a monitor.

Flipping every node of a part keeps its own cut and changes only its edges to other parts, so
the best orientations solve a MaxCut on the graph of parts: with ``same[i, j]`` (``diff[i, j]``)
the weight cut between parts ``i`` and ``j`` when their orientations are equal (differ), the
merged cut is ``sum(same) + sum over differing pairs of (diff - same)`` — a MaxCut with weights
``diff - same`` (possibly negative). :func:`qaoa_orientation` builds its QAOA circuit, optimizes
the angles with COBYLA through the run's executor (pinned to one monitor) and keeps the best
sampled orientation. The classical merge enumerates the orientations instead (see :mod:`.merge`).
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from .circuits import qaoa_circuit
from .execute import Job
from .graph import cut_table


@dataclass(frozen=True)
class OrientationResult:
    """What the merge QAOA did: the flips, its samples' quality, and the exact best for reference."""

    flips: tuple[int, ...]
    value: float  # weight cut between parts with these flips
    best_value: float  # the best over all orientations (enumerated: the part graph is small)
    p_best: float  # fraction of final samples that are best orientations
    evaluations: int
    qrank: int


def orientation_graph(same: np.ndarray, diff: np.ndarray) -> nx.Graph:
    """The graph of parts with edge weights ``diff - same`` (pairs with no edge between them left out)."""
    m = len(same)
    g = nx.Graph()
    g.add_nodes_from(range(m))
    for i in range(m):
        for j in range(i + 1, m):
            if same[i, j] or diff[i, j]:
                g.add_edge(i, j, weight=float(diff[i, j] - same[i, j]))
    return g


def qaoa_orientation(executor, same: np.ndarray, diff: np.ndarray, *, p: int = 1, shots: int = 256,
                     maxiter: int = 15, qrank: int = 0) -> OrientationResult:
    """Choose the parts' orientations with a depth-``p`` QAOA run through ``executor`` on ``qrank``."""
    from .optimize import lockstep_minimize

    m = len(same)
    base = float(sum(same[i, j] for i in range(m) for j in range(i + 1, m)))
    g = orientation_graph(same, diff)
    table = cut_table(g)  # value of orientation state s: base + table[s]
    if g.number_of_edges() == 0:
        return OrientationResult((0,) * m, base, base, 1.0, 0, qrank)
    circuit = qaoa_circuit(g, p, name="qaoa-merge")
    names = [prm.name for prm in circuit.parameters]

    def row(x):
        by = {f"gamma[{l}]": x[l] for l in range(p)} | {f"beta[{l}]": x[p + l] for l in range(p)}
        return np.array([[by[n] for n in names]], dtype=float)

    def sample(x, count):
        return executor.run([Job(circuit, row(x), qrank, count)])[0][0]

    def evaluate(batch):
        return [-float(table[sample(x, shots)].mean()) for _, x in batch]

    x0 = np.concatenate([np.full(p, 0.6), np.full(p, 0.35)])
    trace = lockstep_minimize(evaluate, [x0], maxiter=maxiter)[0]
    final = sample(trace.x, shots)
    values = table[final]
    state = int(final[int(np.argmax(values))])
    flips = tuple((state >> i) & 1 for i in range(m))
    best = float(table.max())
    return OrientationResult(flips, base + float(values.max()), base + best,
                             float(np.mean(values >= best - 1e-9)), trace.evaluations, qrank)
