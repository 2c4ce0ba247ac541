"""The network of QPUs (monitors) a circuit is partitioned over: capacities and e-bit costs.

A QPU is a monitor, numbered by its qrank. Its capacity is the device width
(``DeviceSpec.num_qubits``) or a plain int. Communication qubits are not counted in the
capacity: like DISQCO's extractor, each QPU is assumed to hold its communication qubits apart.

Costs are in e-bits (shared Bell pairs between neighbouring QPUs of the topology):

* moving (teleporting) a qubit from QPU ``a`` to QPU ``b`` costs ``distance(a, b)`` e-bits
  (one per hop; multi-hop e-bits come from entanglement swapping along the shortest path);
* a gate group (one root qubit's state shared with the QPUs holding its partners) costs the
  number of network edges of the smallest forest that connects every partner QPU to some QPU
  holding the root: :meth:`Network.group_cost`. On the full topology that is the number of
  partner QPUs that do not hold the root.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from .errors import PartitionError

TOPOLOGIES = ("full", "line", "grid")
EXACT_STEINER_MAX_QPUS = 12


def _width(qpu: Any, index: int) -> int:
    if isinstance(qpu, bool):
        raise PartitionError(f"QPU {index} is {qpu!r}; give a width (int) or a DeviceSpec.")
    if isinstance(qpu, int):
        width = qpu
    elif hasattr(qpu, "num_qubits"):
        width = qpu.num_qubits
    else:
        raise PartitionError(
            f"QPU {index} is {qpu!r} of type {type(qpu).__name__}; give a width (int) or a "
            "mpiq_magic.kernel.config.DeviceSpec."
        )
    if not isinstance(width, int) or width < 0:
        raise PartitionError(f"QPU {index} has width {width!r}; a width is an int >= 0.")
    return width


def grid_shape(k: int) -> tuple[int, int]:
    """Rows x columns of the most nearly square grid of ``k`` QPUs (rows <= columns)."""
    rows = max(r for r in range(1, int(math.isqrt(k)) + 1) if k % r == 0)
    return rows, k // rows


def _topology_edges(topology: Any, k: int) -> tuple[str, tuple[tuple[int, int], ...]]:
    if isinstance(topology, str):
        if topology == "full":
            return "full", tuple((a, b) for a in range(k) for b in range(a + 1, k))
        if topology == "line":
            return "line", tuple((a, a + 1) for a in range(k - 1))
        if topology == "grid":
            rows, cols = grid_shape(k)
            edges = []
            for r in range(rows):
                for c in range(cols):
                    q = r * cols + c
                    if c + 1 < cols:
                        edges.append((q, q + 1))
                    if r + 1 < rows:
                        edges.append((q, q + cols))
            return f"grid {rows}x{cols}", tuple(edges)
        raise PartitionError(
            f"Unknown topology {topology!r}; use one of {', '.join(TOPOLOGIES)}, or give the "
            "network's edges as (qrank, qrank) pairs or a networkx graph."
        )
    if hasattr(topology, "edges") and callable(topology.edges):  # a networkx graph
        topology = list(topology.edges())
    edges = []
    for pair in topology:
        a, b = (int(x) for x in pair)
        if not (0 <= a < k and 0 <= b < k) or a == b:
            raise PartitionError(
                f"Network edge ({a}, {b}) does not join two different QPUs among qranks 0..{k - 1}."
            )
        edges.append((min(a, b), max(a, b)))
    return "custom", tuple(sorted(set(edges)))


@dataclass(frozen=True)
class Network:
    """QPU capacities and the topology that prices e-bits. Build with :func:`make_network`."""

    capacities: tuple[int, ...]
    topology: str
    edges: tuple[tuple[int, int], ...]
    distance: tuple[tuple[int, ...], ...]
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def k(self) -> int:
        return len(self.capacities)

    @property
    def is_full(self) -> bool:
        return all(d <= 1 for row in self.distance for d in row)

    @property
    def total_capacity(self) -> int:
        return sum(self.capacities)

    def group_cost(self, root_mask: int, partner_mask: int) -> int:
        """E-bits to give every QPU in ``partner_mask`` a copy of a root held by ``root_mask``.

        Masks are bit sets of qranks. Exact (smallest Steiner forest, every tree touching a
        root QPU) up to 12 QPUs; above, the shortest-path greedy heuristic (at most twice the
        optimum).
        """
        terminals = partner_mask & ~root_mask
        if not terminals:
            return 0
        if self.is_full:
            return terminals.bit_count()
        key = (root_mask, terminals)
        cost = self._cache.get(key)
        if cost is None:
            if self.k <= EXACT_STEINER_MAX_QPUS:
                cost = self._steiner_exact(root_mask, terminals)
            else:
                cost = self._steiner_greedy(root_mask, terminals)
            self._cache[key] = cost
        return cost

    # -- Steiner forests ------------------------------------------------------------------------
    def _adjacency(self) -> list[int]:
        adj = self._cache.get("adj")
        if adj is None:
            adj = [0] * self.k
            for a, b in self.edges:
                adj[a] |= 1 << b
                adj[b] |= 1 << a
            self._cache["adj"] = adj
        return adj

    def _steiner_exact(self, roots: int, terminals: int) -> int:
        adj = self._adjacency()
        others = [q for q in range(self.k) if not (terminals >> q) & 1]
        best = math.inf
        for bits in range(1 << len(others)):
            chosen = terminals
            for i, q in enumerate(others):
                if (bits >> i) & 1:
                    chosen |= 1 << q
            if chosen.bit_count() - 1 >= best:
                continue
            # components of the induced subgraph; each must contain a root QPU
            left = chosen
            components = 0
            ok = True
            while left:
                seed = left & -left
                comp = seed
                frontier = seed
                while frontier:
                    q = frontier.bit_length() - 1
                    frontier &= ~(1 << q)
                    new = adj[q] & chosen & ~comp
                    comp |= new
                    frontier |= new
                left &= ~comp
                components += 1
                if not comp & roots:
                    ok = False
                    break
            if ok:
                best = min(best, chosen.bit_count() - components)
        if best is math.inf:
            raise PartitionError(
                f"The network {self.topology} is not connected: QPUs {self._names(terminals)} "
                f"cannot reach QPUs {self._names(roots)}."
            )
        return int(best)

    def _steiner_greedy(self, roots: int, terminals: int) -> int:
        tree = {q for q in range(self.k) if (roots >> q) & 1}
        todo = {q for q in range(self.k) if (terminals >> q) & 1}
        cost = 0
        while todo:
            d, q = min((min(self.distance[t][s] for s in tree), t) for t in sorted(todo))
            cost += d
            tree.add(q)
            todo.discard(q)
        return cost

    def _names(self, mask: int) -> list[int]:
        return [q for q in range(self.k) if (mask >> q) & 1]


def make_network(qpus: Sequence[Any] | Network, topology: Any = "full") -> Network:
    """A :class:`Network` from device specs or widths and a topology.

    ``qpus``: ``DeviceSpec`` objects (their ``num_qubits``) or ints, in qrank order.
    ``topology``: ``"full"`` (every pair linked), ``"line"``, ``"grid"`` (most nearly square),
    a list of ``(qrank, qrank)`` links, or a networkx graph on the qranks.
    """
    if isinstance(qpus, Network):
        return qpus
    qpus = list(qpus)
    if not qpus:
        raise PartitionError("No QPUs given; a partition needs at least one monitor.")
    caps = tuple(_width(q, i) for i, q in enumerate(qpus))
    name, edges = _topology_edges(topology, len(caps))
    dist = _all_pairs_hops(len(caps), edges)
    for a in range(len(caps)):
        for b in range(len(caps)):
            if dist[a][b] < 0:
                raise PartitionError(
                    f"The {name} network is not connected: there is no path from QPU {a} to "
                    f"QPU {b}."
                )
    return Network(caps, name, edges, dist)


def _all_pairs_hops(k: int, edges: Iterable[tuple[int, int]]) -> tuple[tuple[int, ...], ...]:
    nbrs: list[list[int]] = [[] for _ in range(k)]
    for a, b in edges:
        nbrs[a].append(b)
        nbrs[b].append(a)
    rows = []
    for s in range(k):
        d = [-1] * k
        d[s] = 0
        queue = [s]
        for q in queue:
            for n in nbrs[q]:
                if d[n] < 0:
                    d[n] = d[q] + 1
                    queue.append(n)
        rows.append(tuple(d))
    return tuple(rows)
