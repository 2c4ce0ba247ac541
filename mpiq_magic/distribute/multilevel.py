"""Multilevel FM over time (seed 002): coarsen by merging adjacent layers, partition the coarsest,
uncoarsen and refine.

Level ``l`` groups the layers into blocks of ``2**l`` adjacent layers; the coarsest level has one
block, so a qubit is one supernode and its partition is static. There the initial partitions are
refined with FM (a static hypergraph partition from :mod:`.baselines` when it is given, and a
first-fit fill in qubit order); the best is projected down level by level, each time refined with
FM, so qubits learn to move between QPUs where that saves e-bits.
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
    return best[0], best[1]


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
    idle = 0
    for cycle in range(1, cycles):
        if idle >= patience:
            break
        offset = rng.randrange(1, max(2, hg.layered.num_layers))
        before_cycle = None
        for depth, blocks in enumerate(block_levels(hg.layered.num_layers, offset)):
            state = FMState(Level(hg, blocks, node_part), network, node_part)
            if before_cycle is None:
                before_cycle = state.cost
            refine(state, rng, max_passes=max_passes, stall=stall)
            node_part = state.node_part(node_part)
        log.append({"cycle": cycle, "offset": offset, "before": before_cycle, "after": state.cost})
        idle = idle + 1 if state.cost >= before_cycle else 0
    return node_part, log, state.cost
