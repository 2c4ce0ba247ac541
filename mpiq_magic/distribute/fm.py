"""Fiduccia–Mattheyses refinement of a temporal hypergraph under per-layer QPU capacities.

A :class:`Level` is the temporal hypergraph with time coarsened into blocks of adjacent layers:
a supernode is one qubit's live nodes inside one block, and moves as a whole. Hyperedges keep,
per supernode, how many of their root and partner nodes it holds; the cost of a hyperedge only
depends on which QPUs hold root nodes and which hold partner nodes (``Network.group_cost``), and
a temporal edge joins consecutive supernodes of a qubit.

One FM pass (:func:`fm_pass`) moves every supernode at most once, always the unlocked move of
largest gain, and keeps the best prefix of the move sequence. Capacity is per layer and hard.
When every QPU is full (the usual case), single moves are impossible, so a move may overfill its
destination by one qubit on its layers; until that is repaired, the only moves allowed take a
supernode out of the overfilled QPU at the overfilled layers into a QPU with room. Only prefixes
that end in a feasible state count, so the accepted result always respects capacity. Gains are
kept in a lazy max-heap; ties are broken by a seeded random key.
"""

from __future__ import annotations

import heapq
import random
from typing import Sequence

from .hypergraph import TemporalHypergraph
from .network import Network


class Level:
    """Supernodes ``(qubit, block)`` for ``blocks``: contiguous ``(start, stop)`` layer ranges.

    With ``node_part`` (a V-cycle after the first), a qubit's nodes in one block are split where
    their QPU changes, so the current partition is representable at this level.
    """

    def __init__(
        self,
        hg: TemporalHypergraph,
        blocks: Sequence[tuple[int, int]],
        node_part: Sequence[int] | None = None,
    ):
        layered = hg.layered
        self.blocks = tuple(blocks)
        self.num_layers = layered.num_layers
        block_of = [0] * self.num_layers
        for b, (s, e) in enumerate(self.blocks):
            for t in range(s, e + 1):
                block_of[t] = b
        self.sn_qubit: list[int] = []
        self.sn_layers: list[list[int]] = []
        self.sn_nodes: list[list[int]] = []
        self.prev: list[int] = []
        self.next: list[int] = []
        sn_of_node = [0] * hg.num_nodes
        key_to_sn: dict[tuple[int, int, int], int] = {}
        run = 0
        for node, (q, t) in enumerate(hg.nodes):
            if node_part is not None and node and hg.nodes[node - 1][0] == q:
                if node_part[node] != node_part[node - 1]:
                    run += 1
            key = (q, block_of[t], run)
            v = key_to_sn.get(key)
            if v is None:
                v = len(self.sn_qubit)
                key_to_sn[key] = v
                self.sn_qubit.append(q)
                self.sn_layers.append([])
                self.sn_nodes.append([])
                last = key_to_sn.get((q, -1, -1))
                self.prev.append(-1 if last is None else last)
                self.next.append(-1)
                if last is not None:
                    self.next[last] = v
                key_to_sn[(q, -1, -1)] = v
            self.sn_layers[v].append(t)
            self.sn_nodes[v].append(node)
            sn_of_node[node] = v
        self.sn_of_node = sn_of_node
        n = len(self.sn_qubit)
        self.layer_sns: list[list[int]] = [[] for _ in range(self.num_layers)]
        for v in range(n):
            for t in self.sn_layers[v]:
                self.layer_sns[t].append(v)
        # hyperedges over supernodes: (v, root count, partner count)
        self.e_members: list[list[tuple[int, int, int]]] = []
        self.e_maxr: list[int] = []
        self.e_maxp: list[int] = []
        self.v_edges: list[list[tuple[int, int, int]]] = [[] for _ in range(n)]
        for roots, partners in zip(hg.roots, hg.partners):
            counts: dict[int, list[int]] = {}
            for node in roots:
                counts.setdefault(sn_of_node[node], [0, 0])[0] += 1
            for node in partners:
                counts.setdefault(sn_of_node[node], [0, 0])[1] += 1
            if len(counts) < 2:
                continue  # inside one supernode: always local
            e = len(self.e_members)
            members = [(v, rc, pc) for v, (rc, pc) in sorted(counts.items())]
            self.e_members.append(members)
            self.e_maxr.append(max(rc for _, rc, _ in members))
            self.e_maxp.append(max(pc for _, _, pc in members))
            for v, rc, pc in members:
                self.v_edges[v].append((e, rc, pc))

    @property
    def size(self) -> int:
        return len(self.sn_qubit)


class FMState:
    """A partition of a :class:`Level`'s supernodes with incremental costs and loads."""

    def __init__(self, level: Level, network: Network, node_part: Sequence[int]):
        self.level = level
        self.network = network
        self.k = k = network.k
        self.caps = network.capacities
        self.dist = network.distance
        if network.is_full:
            self.cf = lambda rm, pm: (pm & ~rm).bit_count()
        else:
            self.cf = network.group_cost
        self.part = [node_part[nodes[0]] for nodes in level.sn_nodes]
        self.load = [[0] * level.num_layers for _ in range(k)]
        for v, p in enumerate(self.part):
            row = self.load[p]
            for t in level.sn_layers[v]:
                row[t] += 1
        ne = len(level.e_members)
        self.R = [[0] * k for _ in range(ne)]
        self.P = [[0] * k for _ in range(ne)]
        self.rmask = [0] * ne
        self.pmask = [0] * ne
        self.ecost = [0] * ne
        for e, members in enumerate(level.e_members):
            for v, rc, pc in members:
                p = self.part[v]
                self.R[e][p] += rc
                self.P[e][p] += pc
            self.rmask[e] = sum(1 << p for p in range(k) if self.R[e][p])
            self.pmask[e] = sum(1 << p for p in range(k) if self.P[e][p])
            self.ecost[e] = self.cf(self.rmask[e], self.pmask[e])
        self.cost = sum(self.ecost) + self._temporal_cost()

    def _temporal_cost(self) -> int:
        part, dist = self.part, self.dist
        return sum(dist[part[v]][part[u]] for v, u in enumerate(self.level.next) if u >= 0)

    def node_part(self, out: list[int]) -> list[int]:
        for v, nodes in enumerate(self.level.sn_nodes):
            p = self.part[v]
            for node in nodes:
                out[node] = p
        return out

    def feasible(self) -> bool:
        return all(max(row) <= cap for row, cap in zip(self.load, self.caps))

    def gains(self, v: int) -> list[int]:
        """Gain (cost decrease) of moving ``v`` to each QPU; its own QPU gets 0."""
        k, part, dist, cf = self.k, self.part, self.dist, self.cf
        src = part[v]
        g = [0] * k
        lv = self.level
        for u in (lv.prev[v], lv.next[v]):
            if u >= 0:
                pu = part[u]
                ds = dist[src][pu]
                du = dist
                for d in range(k):
                    g[d] += ds - du[d][pu]
        sbit = 1 << src
        for e, rc, pc in lv.v_edges[v]:
            rm = self.rmask[e]
            pm = self.pmask[e]
            base = self.ecost[e]
            if rc and self.R[e][src] == rc:
                rm &= ~sbit
            if pc and self.P[e][src] == pc:
                pm &= ~sbit
            for d in range(k):
                if d != src:
                    bit = 1 << d
                    g[d] += base - cf(rm | bit if rc else rm, pm | bit if pc else pm)
        g[src] = 0
        return g

    def move(self, v: int, dst: int) -> None:
        src = self.part[v]
        if src == dst:
            return
        lv = self.level
        dist = self.dist
        delta = 0
        for u in (lv.prev[v], lv.next[v]):
            if u >= 0:
                pu = self.part[u]
                delta += dist[dst][pu] - dist[src][pu]
        sbit, dbit = 1 << src, 1 << dst
        for e, rc, pc in lv.v_edges[v]:
            if rc:
                R = self.R[e]
                R[src] -= rc
                if not R[src]:
                    self.rmask[e] &= ~sbit
                R[dst] += rc
                self.rmask[e] |= dbit
            if pc:
                P = self.P[e]
                P[src] -= pc
                if not P[src]:
                    self.pmask[e] &= ~sbit
                P[dst] += pc
                self.pmask[e] |= dbit
            new = self.cf(self.rmask[e], self.pmask[e])
            delta += new - self.ecost[e]
            self.ecost[e] = new
        ls, ld = self.load[src], self.load[dst]
        for t in lv.sn_layers[v]:
            ls[t] -= 1
            ld[t] += 1
        self.part[v] = dst
        self.cost += delta

    def affected(self, v: int, dst: int) -> set[int]:
        """Supernodes whose gains change when ``v`` moves to ``dst`` (call before the move)."""
        lv = self.level
        src = self.part[v]
        out = {u for u in (lv.prev[v], lv.next[v]) if u >= 0}
        for e, rc, pc in lv.v_edges[v]:
            hit = False
            if rc:
                after, before = self.R[e][src] - rc, self.R[e][dst]
                hit = after == 0 or before == 0 or after <= lv.e_maxr[e] or before <= lv.e_maxr[e]
            if pc and not hit:
                after, before = self.P[e][src] - pc, self.P[e][dst]
                hit = after == 0 or before == 0 or after <= lv.e_maxp[e] or before <= lv.e_maxp[e]
            if hit:
                out.update(u for u, _, _ in lv.e_members[e])
        out.discard(v)
        return out


def fm_pass(state: FMState, rng: random.Random, *, stall: int = 60) -> int:
    """One FM pass; returns the cost decrease (the state is left at the best feasible prefix)."""
    lv = state.level
    n = lv.size
    k = state.k
    caps = state.caps
    load = state.load
    part = state.part
    locked = [False] * n
    stamp = [0] * n
    gains = [state.gains(v) for v in range(n)]
    heap = []
    for v in range(n):
        g = gains[v]
        for d in range(k):
            if d != part[v]:
                heap.append((-g[d], rng.random(), v, d, 0))
    heapq.heapify(heap)
    start_cost = best_cost = state.cost
    moves: list[tuple[int, int]] = []
    best_len = 0
    over: tuple[int, set[int]] | None = None
    while True:
        chosen = None
        if over is None:
            while heap:
                _, _, v, d, s = heapq.heappop(heap)
                if locked[v] or s != stamp[v] or part[v] == d:
                    continue
                row, cap = load[d], caps[d] + 1
                if all(row[t] < cap for t in lv.sn_layers[v]):
                    chosen = (v, d)
                    break
        else:
            p, layers = over
            cands = {u for t in layers for u in lv.layer_sns[t] if part[u] == p and not locked[u]}
            best = None
            for u in sorted(cands):
                g = gains[u]
                for d in range(k):
                    if d == p:
                        continue
                    row, cap = load[d], caps[d]
                    if all(row[t] < cap for t in lv.sn_layers[u]):
                        key = (g[d], rng.random())
                        if best is None or key > best[0]:
                            best = (key, u, d)
            if best is not None:
                chosen = (best[1], best[2])
        if chosen is None:
            break
        v, d = chosen
        hit = state.affected(v, d)
        src = part[v]
        state.move(v, d)
        locked[v] = True
        moves.append((v, src))
        if over is None:
            row, cap = load[d], caps[d]
            bad = {t for t in lv.sn_layers[v] if row[t] > cap}
            over = (d, bad) if bad else None
        else:
            p, layers = over
            row, cap = load[p], caps[p]
            bad = {t for t in layers if row[t] > cap}
            over = (p, bad) if bad else None
        if over is None and state.cost < best_cost:
            best_cost = state.cost
            best_len = len(moves)
        elif len(moves) - best_len > stall:
            break
        for u in hit:
            if locked[u]:
                continue
            g = gains[u] = state.gains(u)
            stamp[u] += 1
            s = stamp[u]
            pu = part[u]
            for dd in range(k):
                if dd != pu:
                    heapq.heappush(heap, (-g[dd], rng.random(), u, dd, s))
    for v, src in reversed(moves[best_len:]):
        state.move(v, src)
    return start_cost - state.cost


def refine(state: FMState, rng: random.Random, *, max_passes: int = 8, stall: int = 60) -> int:
    """FM passes until one brings no gain (at most ``max_passes``); returns the total gain."""
    total = 0
    for _ in range(max_passes):
        gain = fm_pass(state, rng, stall=stall)
        total += gain
        if gain <= 0:
            break
    return total
