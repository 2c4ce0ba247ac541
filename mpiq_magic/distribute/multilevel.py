"""Multilevel FM over time (seed 002): coarsen by merging adjacent layers, partition the coarsest,
uncoarsen and refine.

Level ``l`` groups the layers into blocks of ``2**l`` adjacent layers; the coarsest level has one
block, so a qubit is one supernode and its partition is static. There the initial partitions are
refined with FM (a static hypergraph partition from :mod:`.baselines` when it is given, and a
first-fit fill in qubit order); the best is projected down level by level, each time refined with
FM, so qubits learn to move between QPUs where that saves e-bits.

One more start is *temporal*: Mt-KaHyPar on the whole temporal hypergraph (nodes ``(qubit,
layer)``, temporal edges and gate groups as km1 hyperedges), per-layer capacity repaired greedily
(an overfull QPU gives back the node whose neighbours in time sit elsewhere), then V-cycles from
that partition. It wins where qubits should move a lot (random CP circuits over 2–4 QPUs);
the cheaper of the two results is kept.
"""

from __future__ import annotations

import random
from typing import Sequence

from .fm import FMState, Level, refine
from .hypergraph import TemporalHypergraph
from .network import Network


def block_levels(num_layers: int, offset: int = 0) -> list[list[tuple[int, int]]]:
    """Blocks per level, coarsest first: sizes ``2**L, ..., 2, 1`` with ``2**L >= num_layers``;
    block boundaries at ``offset`` modulo the size (``offset`` 0: aligned)."""
    levels = []
    size = 1
    while True:
        cuts = sorted({0, num_layers} | {c for c in range(offset % size, num_layers, size) if c})
        levels.append([(a, b - 1) for a, b in zip(cuts, cuts[1:])])
        if size >= num_layers:
            break
        size *= 2
    return levels[::-1]


def first_fit(hg: TemporalHypergraph, network: Network) -> list[int]:
    """A static, capacity-feasible node partition: qubits by first live layer, into the first QPU
    with room at that layer (always feasible when every layer fits in the total capacity: a QPU
    with room at a qubit's first layer keeps it, since qubits only leave before later starts)."""
    layered = hg.layered
    k = network.k
    load = [[0] * layered.num_layers for _ in range(k)]
    node_part = [0] * hg.num_nodes
    order = sorted(
        (span[0], q) for q, span in enumerate(layered.live) if span is not None
    )
    for first, q in order:
        start, stop = layered.live[q]
        p = next((p for p in range(k) if load[p][first] < network.capacities[p]), None)
        if p is None:  # pragma: no cover - capacity is checked before
            p = min(range(k), key=lambda p: load[p][first] - network.capacities[p])
        for t in range(start, stop + 1):
            load[p][t] += 1
            node_part[hg.node_id[(q, t)]] = p
    return node_part


def multilevel_fm(
    hg: TemporalHypergraph,
    network: Network,
    initial: Sequence[Sequence[int]] = (),
    *,
    seed: int = 0,
    max_passes: int = 8,
    stall: int = 60,
    cycles: int = 8,
    patience: int = 2,
    restarts: int = 3,
) -> tuple[list[int], list[dict]]:
    """Node partition (per node of ``hg``) and a log of cost per level.

    ``initial``: static node partitions to start from at the coarsest level (each must respect
    capacity); a first-fit fill is always tried too. After the first V-cycle, up to ``cycles - 1``
    more run with block boundaries shifted by a seeded random offset, starting from the current
    partition (supernodes split where it changes), until ``patience`` cycles in a row gain
    nothing; a cycle never makes the cost worse. The whole
    run is repeated ``restarts`` times with different tie-breaking; the cheapest result wins.
    """
    best = None
    for r in range(max(1, restarts)):
        rng = random.Random(seed * 1_000_003 + r)
        node_part, log, cost = _run(hg, network, initial, rng, max_passes, stall, cycles, patience)
        for entry in log:
            entry["restart"] = r
        if best is None or cost < best[2]:
            best = (node_part, log, cost)
    start = temporal_start(hg, network, seed=seed)
    if start is not None:
        rng = random.Random(seed * 1_000_003 + 999_983)
        node_part, log, cost = _cycles(hg, network, start, rng, max_passes, stall, cycles, patience + 1, first=True)
        for entry in log:
            entry["start"] = "temporal"
        if cost < best[2]:
            best = (node_part, log, cost)
    return best[0], best[1]


def temporal_start(hg: TemporalHypergraph, network: Network, *, seed: int = 0) -> list[int] | None:
    """A capacity-feasible node partition from Mt-KaHyPar on the temporal hypergraph (see the
    module doc), or None without mtkahypar or with one QPU."""
    from . import baselines

    mtk = baselines._mtkahypar()
    if mtk is None or network.k < 2 or hg.num_nodes == 0:
        return None
    mtkahypar, init = mtk
    k, caps = network.k, network.capacities
    edges, weights = [], []
    for node, (q, t) in enumerate(hg.nodes):
        nxt = hg.node_id.get((q, t + 1))
        if nxt is not None:
            edges.append([node, nxt])
            weights.append(1)
    for roots, partners in zip(hg.roots, hg.partners):
        pins = sorted(set(roots) | set(partners))
        if len(pins) > 1:
            edges.append(pins)
            weights.append(1)
    ctx = init.context_from_preset(mtkahypar.PresetType.DETERMINISTIC)
    ctx.set_partitioning_parameters(k, 0.03, mtkahypar.Objective.KM1)
    ctx.logging = False
    mtkahypar.set_seed(seed)
    part = init.create_hypergraph(ctx, hg.num_nodes, len(edges), edges, [1] * hg.num_nodes, weights).partition(ctx)
    node_part = [int(part.block_id(v)) for v in range(hg.num_nodes)]
    by_layer: list[list[int]] = [[] for _ in range(hg.layered.num_layers)]
    for node, (_, t) in enumerate(hg.nodes):
        by_layer[t].append(node)
    for t, nodes in enumerate(by_layer):  # repair per-layer capacity in time order
        load = [0] * k
        for v in nodes:
            load[node_part[v]] += 1
        while any(load[p] > caps[p] for p in range(k)):
            p = max(range(k), key=lambda p: load[p] - caps[p])
            best = None
            for v in nodes:
                if node_part[v] != p:
                    continue
                q = hg.nodes[v][0]
                near = [hg.node_id.get((q, t - 1)), hg.node_id.get((q, t + 1))]
                for d in range(k):
                    if d != p and load[d] < caps[d]:
                        score = sum(u is None or node_part[u] != d for u in near)
                        if best is None or score < best[0]:
                            best = (score, v, d)
            if best is None:  # pragma: no cover - capacity is checked before
                return None
            _, v, d = best
            load[p] -= 1
            load[d] += 1
            node_part[v] = d
    return node_part


def _run(hg, network, initial, rng, max_passes, stall, cycles, patience):
    levels = block_levels(hg.layered.num_layers)
    log: list[dict] = []
    coarsest = Level(hg, levels[0])
    best_state = None
    starts = [first_fit(hg, network)] + [list(p) for p in initial]
    for i, node_part in enumerate(starts):
        state = FMState(coarsest, network, node_part)
        if not state.feasible():
            continue
        before = state.cost
        refine(state, rng, max_passes=max_passes, stall=stall)
        log.append({"level": 0, "blocks": 1, "start": i, "before": before, "after": state.cost})
        if best_state is None or state.cost < best_state.cost:
            best_state = state
    assert best_state is not None
    node_part = best_state.node_part([0] * hg.num_nodes)
    state = best_state
    for depth, blocks in enumerate(levels[1:], start=1):
        state = FMState(Level(hg, blocks), network, node_part)
        before = state.cost
        refine(state, rng, max_passes=max_passes, stall=stall)
        log.append({"level": depth, "blocks": len(blocks), "before": before, "after": state.cost})
        node_part = state.node_part(node_part)
    node_part, more, cost = _cycles(hg, network, node_part, rng, max_passes, stall, cycles, patience)
    return node_part, log + more, cost if more else state.cost


def _cycles(hg, network, node_part, rng, max_passes, stall, cycles, patience, first=False):
    """V-cycles from ``node_part`` (the first aligned when ``first``, then shifted by seeded random
    offsets) until ``patience`` in a row gain nothing or ``cycles`` ran in all."""
    log: list[dict] = []
    idle = 0
    cost = None
    for cycle in range(0 if first else 1, cycles):
        if idle >= patience:
            break
        offset = 0 if first and cycle == 0 else rng.randrange(1, max(2, hg.layered.num_layers))
        before_cycle = None
        for blocks in block_levels(hg.layered.num_layers, offset):
            state = FMState(Level(hg, blocks, node_part), network, node_part)
            if before_cycle is None:
                before_cycle = state.cost
            refine(state, rng, max_passes=max_passes, stall=stall)
            node_part = state.node_part(node_part)
        cost = state.cost
        log.append({"cycle": cycle, "offset": offset, "before": before_cycle, "after": cost})
        idle = idle + 1 if cost >= before_cycle else 0
    return node_part, log, cost
