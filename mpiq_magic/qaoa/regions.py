"""Noise-aware regions of a device (seed 002, noise-aware multi-sampling).

1. :func:`usable_graph`: drop the qubits whose readout error is above ``eta`` and the couplings
   whose two-qubit gate error is above ``eta`` (and the couplings of dropped qubits).
2. :func:`find_regions`: ``k`` disjoint, topologically equivalent regions of ``n`` qubits in the
   usable graph. Candidate shapes (*templates*) are grown greedily from every qubit towards the
   best neighbours; every placement of a template is found with networkx's VF2 matcher (induced
   subgraph isomorphism, so all regions have the same couplings and one compiled circuit runs on
   each); placements are ranked by fidelity, the product of ``(1 - error)`` over the region's
   readouts, one-qubit gates and couplings, and the best disjoint ones are kept greedily.

Devices without a calibration have zero errors and their configured coupling (``line``,
``full`` or pairs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from networkx.algorithms import isomorphism

from ..kernel.calibration import Calibration, load_calibration
from ..kernel.errors import UsageError

#: Placements of one template the matcher enumerates at most.
MAX_MATCHES = 20000


@dataclass(frozen=True)
class DeviceErrors:
    """A device's qubits, couplings and error rates (all zero for an ideal device)."""

    name: str
    num_qubits: int
    couplings: tuple[tuple[int, int], ...]  # undirected, (min, max)
    readout: tuple[float, ...]
    single: tuple[float, ...]
    pair: dict[tuple[int, int], float] = field(hash=False, compare=False)
    calibrated: bool = False


def device_errors(device: Any) -> DeviceErrors:
    """The :class:`DeviceErrors` of a ``DeviceSpec`` (its calibration when it has one) or of a
    :class:`~mpiq_magic.kernel.calibration.Calibration`."""
    if isinstance(device, Calibration):
        return _from_calibration(device)
    if getattr(device, "calibration", None):
        return _from_calibration(load_calibration(device.calibration), name=device.name)
    n = device.num_qubits
    if device.coupling == "full":
        pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
    elif device.coupling == "line":
        pairs = [(a, a + 1) for a in range(n - 1)]
    else:
        pairs = sorted({(min(a, b), max(a, b)) for a, b in device.coupling})
    return DeviceErrors(device.name, n, tuple(pairs), (0.0,) * n, (0.0,) * n, {p: 0.0 for p in pairs}, False)


def _from_calibration(cal: Calibration, name: str | None = None) -> DeviceErrors:
    pair = cal.pair_errors()
    return DeviceErrors(
        name or cal.name, cal.num_qubits, tuple(sorted(pair)), tuple(cal.readout_error),
        tuple(cal.single_qubit_errors()), pair, True,
    )


@dataclass(frozen=True)
class Usable:
    """What the threshold filter keeps: the usable graph and what it removed."""

    graph: nx.Graph
    eta: float
    removed_qubits: tuple[int, ...]
    removed_couplings: tuple[tuple[int, int], ...]


def usable_graph(errors: DeviceErrors, eta: float | None) -> Usable:
    """The device graph without qubits whose readout error is > ``eta`` and couplings whose
    two-qubit error is > ``eta`` (``eta=None``: keep everything). Node attribute ``fidelity`` =
    ``(1 - readout)(1 - single-qubit error)``, edge attribute ``fidelity`` = ``1 - pair error``.

    Raises:
        UsageError: ``eta`` outside ``[0, 1]``.
    """
    if eta is not None and not 0.0 <= eta <= 1.0:
        raise UsageError(f"eta must be an error rate in [0, 1], got {eta!r}.")
    limit = math.inf if eta is None else eta
    graph = nx.Graph()
    removed_q = tuple(q for q in range(errors.num_qubits) if errors.readout[q] > limit)
    for q in range(errors.num_qubits):
        if q not in removed_q:
            graph.add_node(q, fidelity=(1 - errors.readout[q]) * (1 - errors.single[q]))
    removed_c = []
    for a, b in errors.couplings:
        if errors.pair[(a, b)] > limit:
            removed_c.append((a, b))
        elif a in graph and b in graph:
            graph.add_edge(a, b, fidelity=1 - errors.pair[(a, b)])
    return Usable(graph, -1.0 if eta is None else float(eta), removed_q, tuple(removed_c))


@dataclass(frozen=True)
class Region:
    """``qubits[i]`` is the physical qubit of template node ``i``; ``fidelity`` the product of
    ``(1 - error)`` over its qubits (readout, one-qubit gate) and its template couplings."""

    qubits: tuple[int, ...]
    fidelity: float


@dataclass(frozen=True)
class RegionSet:
    """``k`` disjoint regions of one template (``template_edges`` on nodes ``0..n-1``)."""

    device: str
    n: int
    template_edges: tuple[tuple[int, int], ...]
    regions: tuple[Region, ...]
    candidates: int  # distinct placements of the template found

    @property
    def k(self) -> int:
        return len(self.regions)

    def template(self) -> nx.Graph:
        graph = nx.Graph()
        graph.add_nodes_from(range(self.n))
        graph.add_edges_from(self.template_edges)
        return graph


def region_fidelity(usable: nx.Graph, qubits, template_edges) -> float:
    """Product of ``(1 - error)`` over ``qubits`` and the template couplings placed on them."""
    f = 1.0
    for q in qubits:
        f *= usable.nodes[q]["fidelity"]
    for a, b in template_edges:
        f *= usable.edges[qubits[a], qubits[b]]["fidelity"]
    return f


def _grow(usable: nx.Graph, start: int, n: int) -> list[int] | None:
    chosen = [start]
    inside = {start}
    while len(chosen) < n:
        best = None
        for q in inside:
            for r in usable[q]:
                if r in inside:
                    continue
                links = [usable.edges[r, s]["fidelity"] for s in usable[r] if s in inside]
                key = (usable.nodes[r]["fidelity"] * max(links), len(links))
                if best is None or key > best[0]:
                    best = (key, r)
        if best is None:
            return None
        chosen.append(best[1])
        inside.add(best[1])
    return chosen


def _templates(usable: nx.Graph, n: int, limit: int = 6) -> list[nx.Graph]:
    found: list[tuple[float, nx.Graph]] = []
    for start in sorted(usable.nodes):
        qubits = _grow(usable, start, n)
        if qubits is None:
            continue
        t = nx.convert_node_labels_to_integers(usable.subgraph(qubits), ordering="sorted")
        score = region_fidelity(usable, sorted(qubits), [])
        if not any(nx.is_isomorphic(t, other) for _, other in found):
            found.append((score, t))
    path = nx.path_graph(n)
    if not any(nx.is_isomorphic(path, other) for _, other in found):
        found.append((0.0, path))
    found.sort(key=lambda x: -x[0])
    return [t for _, t in found[:limit]]


def find_regions(device: Any, n: int, k: int = 2, *, eta: float | None = None) -> RegionSet:
    """Up to ``k`` disjoint, topologically equivalent regions of ``n`` qubits, best first.

    ``device``: a ``DeviceSpec``, a ``Calibration`` or :class:`DeviceErrors`. Among templates
    the one placing the most regions (up to ``k``) wins, then the one with the most couplings
    (fewer SWAPs when routing), then the highest total log-fidelity of its regions.

    Raises:
        UsageError: ``n`` or ``k`` < 1, or no connected group of ``n`` usable qubits exists (the
            message gives the usable qubits and the largest connected group).
    """
    if n < 1 or k < 1:
        raise UsageError(f"A region needs n >= 1 qubits and k >= 1 copies, got n={n}, k={k}.")
    errors = device if isinstance(device, DeviceErrors) else device_errors(device)
    usable = usable_graph(errors, eta).graph
    if errors.couplings and len(errors.couplings) == errors.num_qubits * (errors.num_qubits - 1) // 2 \
            and not errors.calibrated and usable.number_of_nodes() == errors.num_qubits:
        return _full(errors, usable, n, k)
    best = None
    for template in _templates(usable, n):
        regions, candidates = _place(usable, template, k)
        if not regions:
            continue
        key = (len(regions), template.number_of_edges(), sum(math.log(max(r.fidelity, 1e-300)) for r in regions))
        if best is None or key > best[0]:
            best = (key, RegionSet(errors.name, n, tuple(sorted(template.edges)), tuple(regions), candidates))
    if best is None:
        largest = max((len(c) for c in nx.connected_components(usable)), default=0)
        raise UsageError(
            f"Device {errors.name} has no connected group of {n} usable qubits at eta={eta}: "
            f"{usable.number_of_nodes()} of {errors.num_qubits} qubits are usable and the largest "
            f"connected group has {largest}. Raise eta, or split the problem into smaller parts."
        )
    return best[1]


def _place(usable: nx.Graph, template: nx.Graph, k: int) -> tuple[list[Region], int]:
    matcher = isomorphism.GraphMatcher(usable, template)
    seen: dict[frozenset, Region] = {}
    edges = list(template.edges)
    for count, mapping in enumerate(matcher.subgraph_isomorphisms_iter()):
        if count >= MAX_MATCHES:
            break
        qubits = tuple(sorted(mapping, key=mapping.get))  # template node i -> physical qubit
        key = frozenset(qubits)
        if key in seen:
            continue
        seen[key] = Region(qubits, region_fidelity(usable, qubits, edges))
    chosen: list[Region] = []
    taken: set[int] = set()
    for region in sorted(seen.values(), key=lambda r: (-r.fidelity, r.qubits)):
        if taken.isdisjoint(region.qubits):
            chosen.append(region)
            taken.update(region.qubits)
            if len(chosen) == k:
                break
    return chosen, len(seen)


def _full(errors: DeviceErrors, usable: nx.Graph, n: int, k: int) -> RegionSet:
    count = min(k, errors.num_qubits // n)
    if count == 0:
        raise UsageError(f"Device {errors.name} has {errors.num_qubits} qubits, fewer than a region of {n}.")
    template = tuple((a, b) for a in range(n) for b in range(a + 1, n))
    regions = tuple(Region(tuple(range(r * n, (r + 1) * n)), 1.0) for r in range(count))
    return RegionSet(errors.name, n, template, regions, errors.num_qubits // n)


def check_regions(device: Any, regions: RegionSet, eta: float | None) -> list[str]:
    """Independent check of a :class:`RegionSet`: every region has exactly ``n`` usable qubits,
    regions are disjoint, and each region's induced usable subgraph is isomorphic to the first's
    and contains the template. Returns the problems found (empty when all hold)."""
    errors = device if isinstance(device, DeviceErrors) else device_errors(device)
    usable = usable_graph(errors, eta).graph
    problems = []
    seen: set[int] = set()
    first = None
    for i, region in enumerate(regions.regions):
        qubits = set(region.qubits)
        if len(qubits) != regions.n or len(region.qubits) != regions.n:
            problems.append(f"region {i} has {len(qubits)} distinct qubits, not {regions.n}")
        if not qubits <= set(usable.nodes):
            problems.append(f"region {i} uses unusable qubits {sorted(qubits - set(usable.nodes))}")
            continue
        if qubits & seen:
            problems.append(f"region {i} overlaps earlier regions on {sorted(qubits & seen)}")
        seen |= qubits
        induced = usable.subgraph(qubits)
        for a, b in regions.template_edges:
            if not usable.has_edge(region.qubits[a], region.qubits[b]):
                problems.append(f"region {i} lacks coupling {region.qubits[a]}-{region.qubits[b]}")
        if first is None:
            first = induced
        elif not nx.is_isomorphic(first, induced):
            problems.append(f"region {i} is not isomorphic to region 0")
    return problems
