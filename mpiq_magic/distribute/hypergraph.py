"""The temporal hypergraph of a layered circuit, and its e-bit cost under an assignment.

Nodes are the live ``(qubit, layer)`` pairs. Two kinds of edges (Burt, Chen, Leung, seed 002):

* temporal edges ``(q, t) - (q, t + 1)``: if the two nodes sit on different QPUs the qubit is
  teleported between the layers, ``distance(a, b)`` e-bits;
* gate hyperedges, one per gate group: root nodes (the root qubit over the group's span) and
  partner nodes (each gate's other qubit at its layer). Cost: ``Network.group_cost`` of the QPUs
  holding root nodes and those holding partner nodes; on the full topology, the number of QPUs
  that hold a partner but never the root during the span.

An assignment is ``assignment[layer][qubit] -> qrank`` (``-1`` where the qubit is not live).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .layering import LayeredCircuit
from .network import Network


@dataclass(frozen=True)
class TemporalHypergraph:
    layered: LayeredCircuit
    nodes: tuple[tuple[int, int], ...]  # node id -> (qubit, layer)
    node_id: dict  # (qubit, layer) -> node id
    roots: tuple[tuple[int, ...], ...]  # per hyperedge: root node ids
    partners: tuple[tuple[int, ...], ...]  # per hyperedge: partner node ids (one per gate)

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)


def build_hypergraph(layered: LayeredCircuit) -> TemporalHypergraph:
    nodes = []
    node_id = {}
    for q, span in enumerate(layered.live):
        if span is None:
            continue
        for t in range(span[0], span[1] + 1):
            node_id[(q, t)] = len(nodes)
            nodes.append((q, t))
    roots = []
    partners = []
    for grp in layered.groups:
        roots.append(tuple(node_id[(grp.root, t)] for t in range(grp.start, grp.stop + 1)))
        partners.append(tuple(node_id[p] for p in grp.partners))
    return TemporalHypergraph(layered, tuple(nodes), node_id, tuple(roots), tuple(partners))


@dataclass(frozen=True)
class Cost:
    total: int
    per_layer: tuple[int, ...]
    teleport: int  # e-bits spent moving qubits
    gate: int  # e-bits spent on non-local gate groups


def evaluate(layered: LayeredCircuit, network: Network, assignment: Sequence[Sequence[int]]) -> Cost:
    """E-bits of ``assignment`` (see the module doc), in total and per layer.

    A teleportation between layers ``t - 1`` and ``t`` is counted at ``t``; a group's e-bits at
    the layers of the partner gates that first need each remote copy.
    """
    per = [0] * max(layered.num_layers, 1)
    teleport = 0
    dist = network.distance
    for q, span in enumerate(layered.live):
        if span is None:
            continue
        for t in range(span[0] + 1, span[1] + 1):
            d = dist[assignment[t - 1][q]][assignment[t][q]]
            if d:
                per[t] += d
                teleport += d
    gate = 0
    for grp in layered.groups:
        root_mask = 0
        for t in range(grp.start, grp.stop + 1):
            root_mask |= 1 << assignment[t][grp.root]
        partner_mask = 0
        cost = 0
        for q, t in sorted(grp.partners, key=lambda p: p[1]):
            partner_mask |= 1 << assignment[t][q]
            new = network.group_cost(root_mask, partner_mask)
            if new != cost:
                per[t] += new - cost
                cost = new
        gate += cost
    return Cost(teleport + gate, tuple(per[: layered.num_layers]), teleport, gate)


def loads(layered: LayeredCircuit, k: int, assignment: Sequence[Sequence[int]]) -> list[list[int]]:
    """``loads[layer][qrank]``: live qubits on each QPU at each layer."""
    out = [[0] * k for _ in range(layered.num_layers)]
    for q, span in enumerate(layered.live):
        if span is None:
            continue
        for t in range(span[0], span[1] + 1):
            out[t][assignment[t][q]] += 1
    return out
