"""Baselines: static partitions (graph and hypergraph) and the time-sliced FGP-rOEE.

* :func:`static_graph` — the qubit-interaction graph (edge weight = number of two-qubit gates
  between the pair) split into the QPUs with METIS (``pymetis``, ``tpwgts`` = capacity shares),
  or, without pymetis, recursive Kernighan–Lin bisection (networkx); then repaired to respect
  capacity. Every qubit stays on one QPU for the whole circuit.
* :func:`static_hypergraph` — the gate groups as hyperedges ``{root} + partners`` partitioned
  with Mt-KaHyPar under the connectivity-minus-one objective, which on the full topology is
  exactly the e-bit count of a static assignment. Used as the coarsest-level start of the
  multilevel partitioner; ``None`` when mtkahypar is not installed.
* :func:`time_sliced` — FGP-rOEE (Baker et al., "Time-sliced quantum circuit partitioning for
  modular architectures", CF 2020), simply: one slice per layer; in slice ``t`` the graph weights
  pairs gated in ``t`` with a large weight and future pairs with ``2**-(s - t)`` (lookahead);
  starting from slice ``t - 1``'s assignment, relaxed Overall-Extreme-Exchange applies the best
  swap (or move into a free slot) of unlocked qubits until every pair gated in ``t`` is on one
  QPU, then stops. Gates it cannot make local pay e-bits like any other non-local gate.

Each returns a per-qubit (static) or per-layer assignment; e-bits are counted by
:func:`.hypergraph.evaluate` for every method alike.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Sequence

from .errors import PartitionError
from .layering import LayeredCircuit
from .network import Network

BIG = 1 << 20
LOOKAHEAD = 20


def interaction_weights(layered: LayeredCircuit) -> dict[tuple[int, int], int]:
    w: dict[tuple[int, int], int] = defaultdict(int)
    for g in layered.gates:
        a, b = g.qubits
        w[(min(a, b), max(a, b))] += 1
    return dict(w)


def _used(layered: LayeredCircuit) -> list[int]:
    return [q for q, span in enumerate(layered.live) if span is not None]


def _check_static_fits(layered: LayeredCircuit, network: Network, what: str) -> list[int]:
    used = _used(layered)
    if len(used) > network.total_capacity:
        raise PartitionError(
            f"The {what} keeps every qubit on one QPU for the whole circuit, so it needs "
            f"{len(used)} qubit slots, but the QPUs hold {network.total_capacity}; only the "
            "multilevel partitioner (with reuse) can fit this circuit."
        )
    return used


def repair(part: dict[int, int], weights: dict[tuple[int, int], int], network: Network) -> dict[int, int]:
    """Move qubits out of over-full QPUs, each time the one that loses least, into a QPU with
    room (where it gains most)."""
    caps = network.capacities
    k = network.k
    nbrs: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for (a, b), w in weights.items():
        nbrs[a].append((b, w))
        nbrs[b].append((a, w))
    count = [0] * k
    for p in part.values():
        count[p] += 1
    while True:
        over = [p for p in range(k) if count[p] > caps[p]]
        if not over:
            return part
        p = over[0]
        room = [d for d in range(k) if count[d] < caps[d]]
        best = None
        for q in sorted(x for x, y in part.items() if y == p):
            conn = [0] * k
            for o, w in nbrs[q]:
                if o in part:
                    conn[part[o]] += w
            for d in room:
                key = conn[d] - conn[p]
                if best is None or key > best[0]:
                    best = (key, q, d)
        _, q, d = best
        part[q] = d
        count[p] -= 1
        count[d] += 1


def _metis(used, weights, network, seed):
    import pymetis

    index = {q: i for i, q in enumerate(used)}
    adj: list[list[tuple[int, int]]] = [[] for _ in used]
    for (a, b), w in weights.items():
        adj[index[a]].append((index[b], w))
        adj[index[b]].append((index[a], w))
    xadj, adjncy, ew = [0], [], []
    for row in adj:
        for j, w in sorted(row):
            adjncy.append(j)
            ew.append(w)
        xadj.append(len(adjncy))
    total = network.total_capacity
    tpw = [c / total for c in network.capacities]
    opts = pymetis.Options(seed=seed, ufactor=1)
    if not adjncy:
        return {q: 0 for q in used}
    csr = pymetis.CSRAdjacency(xadj, adjncy)
    res = pymetis.part_graph(network.k, csr, eweights=ew, tpwgts=tpw, options=opts)
    return {q: int(res.vertex_part[index[q]]) for q in used}


def _kl(used, weights, network, seed):
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(used)
    for (a, b), w in weights.items():
        g.add_edge(a, b, weight=w)
    out: dict[int, int] = {}

    def split(nodes: list[int], qpus: list[int]) -> None:
        if len(qpus) == 1:
            for q in nodes:
                out[q] = qpus[0]
            return
        left, right = qpus[: len(qpus) // 2], qpus[len(qpus) // 2 :]
        cl = sum(network.capacities[p] for p in left)
        cr = sum(network.capacities[p] for p in right)
        nl = min(cl, max(len(nodes) - cr, round(len(nodes) * cl / max(cl + cr, 1))))
        a, b = set(nodes[:nl]), set(nodes[nl:])
        if a and b:
            a, b = nx.algorithms.community.kernighan_lin_bisection(
                g.subgraph(nodes), partition=(a, b), weight="weight", seed=seed
            )
        split(sorted(a), left)
        split(sorted(b), right)

    split(sorted(used), list(range(network.k)))
    return out


def static_graph(layered: LayeredCircuit, network: Network, *, seed: int = 0, engine: str = "auto"):
    """Per-qubit qrank from graph partitioning (see the module doc); ``engine``: auto, metis, kl.
    Returns ``(part, engine used)``."""
    used = _check_static_fits(layered, network, "static graph baseline")
    weights = interaction_weights(layered)
    if engine in ("auto", "metis"):
        try:
            part = _metis(used, weights, network, seed)
            engine = "metis"
        except ImportError:
            if engine == "metis":
                raise PartitionError("engine='metis' needs pymetis: pip install pymetis.") from None
            engine = "kl"
    if engine == "kl":
        part = _kl(used, weights, network, seed)
    elif engine != "metis":
        raise PartitionError(f"Unknown static engine {engine!r}; use auto, metis or kl.")
    return repair(part, weights, network), engine


_MTK = None


def _mtkahypar():
    global _MTK
    if _MTK is None:
        try:
            import mtkahypar
        except ImportError:
            _MTK = False
        else:
            _MTK = (mtkahypar, mtkahypar.initialize(1, False))
    return _MTK or None


def static_hypergraph(layered: LayeredCircuit, network: Network, *, seed: int = 0):
    """Per-qubit qrank from Mt-KaHyPar (km1 on the gate groups), or None without mtkahypar."""
    mtk = _mtkahypar()
    if mtk is None or network.k < 2:
        return None
    mtkahypar, init = mtk
    used = _check_static_fits(layered, network, "static hypergraph baseline")
    index = {q: i for i, q in enumerate(used)}
    edges: dict[tuple[int, ...], int] = defaultdict(int)
    for grp in layered.groups:
        pins = tuple(sorted({index[grp.root]} | {index[q] for q, _ in grp.partners}))
        if len(pins) > 1:
            edges[pins] += 1
    if not edges:
        return None
    ctx = init.context_from_preset(mtkahypar.PresetType.DETERMINISTIC)
    ctx.set_partitioning_parameters(network.k, 0.03, mtkahypar.Objective.KM1)
    ctx.set_individual_target_block_weights(list(network.capacities))
    ctx.logging = False
    mtkahypar.set_seed(seed)
    keys = sorted(edges)
    hg = init.create_hypergraph(
        ctx, len(used), len(keys), [list(e) for e in keys], [1] * len(used), [edges[e] for e in keys]
    )
    result = hg.partition(ctx)
    part = {q: int(result.block_id(index[q])) for q in used}
    return repair(part, interaction_weights(layered), network)


def static_assignment(layered: LayeredCircuit, part: dict[int, int]) -> list[list[int]]:
    return [
        [part[q] if layered.is_live(q, t) else -1 for q in range(layered.num_qubits)]
        for t in range(layered.num_layers)
    ]


def time_sliced(layered: LayeredCircuit, network: Network, *, seed: int = 0) -> list[list[int]]:
    """FGP-rOEE assignment per layer (see the module doc)."""
    used = _check_static_fits(layered, network, "time-sliced baseline")
    k = network.k
    caps = network.capacities
    dist = network.distance
    rng = random.Random(seed)
    by_layer: list[list[tuple[int, int]]] = [[] for _ in range(layered.num_layers)]
    for g in layered.gates:
        by_layer[g.layer].append(g.qubits)

    def lookahead(t: int) -> dict[int, dict[int, float]]:
        w: dict[int, dict[int, float]] = defaultdict(lambda: defaultdict(float))
        for s in range(t + 1, min(t + 1 + LOOKAHEAD, layered.num_layers)):
            f = 2.0 ** -(s - t)
            for a, b in by_layer[s]:
                w[a][b] += f
                w[b][a] += f
        for a, b in by_layer[t]:
            w[a][b] += BIG
            w[b][a] += BIG
        return w

    # slice 0: a static partition of its lookahead graph
    w0 = lookahead(0) if layered.num_layers else {}
    weights0 = {}
    for a, row in w0.items():
        for b, x in row.items():
            if a < b:
                weights0[(a, b)] = max(1, int(round(x * 64)))
    try:
        part = _metis(used, weights0, network, seed)
    except ImportError:
        part = _kl(used, weights0, network, seed)
    part = repair(part, weights0, network)
    count = [0] * k
    for p in part.values():
        count[p] += 1

    out = []
    for t in range(layered.num_layers):
        w = lookahead(t)
        ext = {q: [0.0] * k for q in used}  # ext[q][p]: weight from q to qubits on p
        for a, row in w.items():
            for b, x in row.items():
                ext[a][part[b]] += x
        locked: set[int] = set()

        def invalid() -> bool:
            return any(part[a] != part[b] for a, b in by_layer[t])

        steps = 0
        while invalid() and steps < len(used):
            steps += 1
            best = None
            # candidates: qubits of non-local pairs in this slice, swapped with or moved anywhere
            movers = sorted({q for a, b in by_layer[t] if part[a] != part[b] for q in (a, b)} - locked)
            free = [p for p in range(k) if count[p] < caps[p]]
            for a in movers:
                pa = part[a]
                da = ext[a]
                for p in free:
                    if p != pa:
                        gain = da[p] - da[pa] - (dist[pa][p] - 1) * 1e-3
                        key = (gain, rng.random())
                        if best is None or key > best[0]:
                            best = (key, a, None, p)
                for b in used:
                    pb = part[b]
                    if pb == pa or b in locked or b == a:
                        continue
                    wab = w[a].get(b, 0.0) if a in w else 0.0
                    gain = da[pb] - da[pa] + ext[b][pa] - ext[b][pb] - 2 * wab
                    key = (gain, rng.random())
                    if best is None or key > best[0]:
                        best = (key, a, b, pb)
            if best is None:
                break
            _, a, b, p = best
            moves = [(a, p)] if b is None else [(a, part[b]), (b, part[a])]
            for q, dst in moves:
                src = part[q]
                part[q] = dst
                count[src] -= 1
                count[dst] += 1
                locked.add(q)
                for o, x in (w[q].items() if q in w else ()):
                    ext[o][src] -= x
                    ext[o][dst] += x
        out.append([part[q] if layered.is_live(q, t) else -1 for q in range(layered.num_qubits)])
    return out
