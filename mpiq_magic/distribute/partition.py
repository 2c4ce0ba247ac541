"""Partition a Qiskit circuit over the monitors: qubit -> qrank per time layer, e-bits per layer.

    from mpiq_magic.distribute import partition_circuit
    result = partition_circuit(circuit, [8, 8, 8, 8])            # widths, or DeviceSpec objects
    result.ebits, result.ebits_per_layer, result.assignment[t][q]

Methods (all counted with the same cost model, :mod:`.hypergraph`):

``"multilevel"`` (default)
    Temporal-hypergraph partitioning with multilevel Fiduccia–Mattheyses (seed 002,
    :mod:`.multilevel`): qubits may move between QPUs (1 e-bit per hop) where that saves
    non-local gates.
``"static"``
    Graph partitioning of the qubit-interaction graph (METIS, or Kernighan–Lin without pymetis);
    qubits never move.
``"static-hypergraph"``
    Mt-KaHyPar on the gate groups; qubits never move (needs mtkahypar).
``"time-sliced"``
    FGP-rOEE (Baker et al. 2020), a new partition per layer with lookahead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from qiskit import QuantumCircuit

from . import baselines
from .errors import CapacityError, PartitionError
from .hypergraph import build_hypergraph, evaluate, loads
from .layering import LayeredCircuit, layer_circuit
from .multilevel import multilevel_fm
from .network import Network, make_network

METHODS = ("multilevel", "static", "static-hypergraph", "time-sliced")


@dataclass(frozen=True)
class PartitionResult:
    """Where every qubit is at every time layer, and what it costs in e-bits.

    ``assignment[t][q]``: the qrank holding qubit ``q`` during layer ``t``, ``-1`` where ``q`` is
    not live (before its first operation, or after its measurement with ``reuse=True``).
    ``ebits_per_layer[t]``: e-bits consumed at layer ``t`` (teleportations into ``t`` and
    remote gate copies first needed at ``t``); ``ebits`` their sum = ``teleport_ebits`` +
    ``gate_ebits``. ``loads[t][p]``: live qubits on qrank ``p`` at layer ``t`` (never above
    ``capacities[p]``: checked when the result is made).
    """

    method: str
    assignment: tuple[tuple[int, ...], ...]
    ebits: int
    ebits_per_layer: tuple[int, ...]
    teleport_ebits: int
    gate_ebits: int
    capacities: tuple[int, ...]
    topology: str
    num_qubits: int
    num_layers: int
    seconds: float
    loads: tuple[tuple[int, ...], ...]
    details: dict = field(default_factory=dict, compare=False)
    layered: LayeredCircuit | None = field(default=None, compare=False, repr=False)

    @property
    def num_qpus(self) -> int:
        return len(self.capacities)

    @property
    def teleportations(self) -> list[tuple[int, int, int, int]]:
        """``(qubit, layer, from_qrank, to_qrank)`` for every move between consecutive layers."""
        out = []
        for t in range(1, self.num_layers):
            prev, cur = self.assignment[t - 1], self.assignment[t]
            for q in range(self.num_qubits):
                if prev[q] >= 0 and cur[q] >= 0 and prev[q] != cur[q]:
                    out.append((q, t, prev[q], cur[q]))
        return out

    def qubits_on(self, qrank: int, layer: int) -> list[int]:
        return [q for q, p in enumerate(self.assignment[layer]) if p == qrank]

    def summary(self) -> str:
        return (
            f"{self.method}: {self.ebits} e-bits ({self.teleport_ebits} teleportation, "
            f"{self.gate_ebits} gate) for {self.num_qubits} qubits x {self.num_layers} layers on "
            f"{self.num_qpus} QPUs {list(self.capacities)} ({self.topology}), {self.seconds:.3f} s"
        )


def check_capacity(layered: LayeredCircuit, network: Network) -> None:
    """Raise :class:`CapacityError` naming the first layer whose live qubits exceed the total."""
    total = network.total_capacity
    for t in range(layered.num_layers):
        needed = layered.live_count(t)
        if needed > total:
            live = [q for q in range(layered.num_qubits) if layered.is_live(q, t)]
            shown = ", ".join(map(str, live[:12])) + (", ..." if len(live) > 12 else "")
            raise CapacityError(
                f"Layer {t} of {layered.num_layers} needs {needed} live qubits ({shown}) but "
                f"the {network.k} QPUs hold {total} together (capacities "
                f"{list(network.capacities)}); no assignment fits. Use more or wider devices"
                + ("" if t < layered.num_layers - 1 else ", or measure qubits early with reuse=True")
                + ".",
                layer=t,
                needed=needed,
                available=total,
            )


def validate(layered: LayeredCircuit, network: Network, assignment: Sequence[Sequence[int]]) -> None:
    """Raise PartitionError unless every live qubit has a qrank and every layer fits capacity."""
    k = network.k
    if len(assignment) != layered.num_layers:
        raise PartitionError(
            f"The assignment has {len(assignment)} layers; the circuit has {layered.num_layers}."
        )
    for t, row in enumerate(assignment):
        for q in range(layered.num_qubits):
            p = row[q]
            if layered.is_live(q, t) and not 0 <= p < k:
                raise PartitionError(f"Qubit {q} is live at layer {t} but assigned to {p}.")
        counts = [0] * k
        for q in range(layered.num_qubits):
            if layered.is_live(q, t):
                counts[row[q]] += 1
        for p in range(k):
            if counts[p] > network.capacities[p]:
                raise PartitionError(
                    f"Layer {t} puts {counts[p]} qubits on qrank {p}, whose capacity is "
                    f"{network.capacities[p]}."
                )


def make_result(
    method: str,
    layered: LayeredCircuit,
    network: Network,
    assignment: Sequence[Sequence[int]],
    seconds: float,
    details: dict | None = None,
) -> PartitionResult:
    validate(layered, network, assignment)
    cost = evaluate(layered, network, assignment)
    return PartitionResult(
        method=method,
        assignment=tuple(tuple(row) for row in assignment),
        ebits=cost.total,
        ebits_per_layer=cost.per_layer,
        teleport_ebits=cost.teleport,
        gate_ebits=cost.gate,
        capacities=network.capacities,
        topology=network.topology,
        num_qubits=layered.num_qubits,
        num_layers=layered.num_layers,
        seconds=seconds,
        loads=tuple(tuple(r) for r in loads(layered, network.k, assignment)),
        details=dict(details or {}),
        layered=layered,
    )


def partition_circuit(
    circuit: QuantumCircuit,
    qpus: Sequence[Any] | Network,
    *,
    method: str = "multilevel",
    topology: Any = "full",
    seed: int = 0,
    reuse: bool = False,
    max_passes: int = 8,
    restarts: int = 3,
) -> PartitionResult:
    """Partition ``circuit`` over ``qpus`` (DeviceSpec objects or widths, in qrank order).

    ``method``: one of :data:`METHODS`. ``topology``: ``"full"``, ``"line"``, ``"grid"`` or
    explicit links (see :func:`.network.make_network`); multi-hop e-bits cost one per hop.
    ``seed`` makes the result deterministic. ``reuse``: free a qubit's slot after its final
    measurement. ``max_passes`` / ``restarts``: FM passes per level and multilevel runs (the
    cheapest wins). Raises :class:`CapacityError` (naming the layer) when a layer cannot fit.
    """
    if method not in METHODS:
        raise PartitionError(f"Unknown method {method!r}; use one of {', '.join(METHODS)}.")
    t0 = time.perf_counter()
    network = make_network(qpus, topology)
    layered = layer_circuit(circuit, reuse=reuse)
    check_capacity(layered, network)
    details: dict[str, Any] = {}
    if method == "multilevel":
        assignment = _multilevel(layered, network, seed, max_passes, restarts, details)
    elif method == "static":
        part, engine = baselines.static_graph(layered, network, seed=seed)
        details["engine"] = engine
        assignment = baselines.static_assignment(layered, part)
    elif method == "static-hypergraph":
        part = baselines.static_hypergraph(layered, network, seed=seed)
        if part is None:
            if baselines._mtkahypar() is None:
                raise PartitionError(
                    "method='static-hypergraph' needs mtkahypar: pip install mtkahypar."
                )
            part = {q: 0 for q in range(layered.num_qubits) if layered.live[q]}
        assignment = baselines.static_assignment(layered, part)
    else:
        assignment = baselines.time_sliced(layered, network, seed=seed)
    return make_result(method, layered, network, assignment, time.perf_counter() - t0, details)


def _multilevel(layered, network, seed, max_passes, restarts, details) -> list[list[int]]:
    hg = build_hypergraph(layered)
    starts = []
    if layered.num_layers and len(layered.live) and network.k > 1:
        used = sum(1 for s in layered.live if s)
        if used <= network.total_capacity:
            for name, fn in (("static-hypergraph", baselines.static_hypergraph), ("static", None)):
                try:
                    part = fn(layered, network, seed=seed) if fn else baselines.static_graph(
                        layered, network, seed=seed
                    )[0]
                except PartitionError:
                    continue
                if part is not None:
                    starts.append([part[q] for q, _ in hg.nodes])
                    details.setdefault("starts", []).append(name)
    if hg.num_nodes == 0:
        return [[-1] * layered.num_qubits for _ in range(layered.num_layers)]
    node_part, log = multilevel_fm(
        hg, network, starts, seed=seed, max_passes=max_passes, restarts=restarts
    )
    details["levels"] = log
    out = [[-1] * layered.num_qubits for _ in range(layered.num_layers)]
    for node, (q, t) in enumerate(hg.nodes):
        out[t][q] = node_part[node]
    return out
