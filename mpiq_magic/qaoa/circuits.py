"""QAOA circuits for MaxCut sub-problems, and their placement on noise-aware regions.

:func:`qaoa_circuit` is the logical ``n``-qubit ansatz (parameters ``gamma[0..p-1]``,
``beta[0..p-1]``, clbit ``i`` = node ``i``). :func:`region_circuit` routes it once onto the
regions' template (a small Qiskit Target: the device's basis on the template's couplings) and
places a copy on every region of a device-wide circuit, region ``r`` measured into register
``r<r>``: one payload, compiled once, samples ``k`` copies per shot. The device's own compile
(``monitor_engine.payload.compile_for``) then keeps this layout (it is already perfect).
"""

from __future__ import annotations

import networkx as nx
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister, transpile
from qiskit.circuit import ParameterVector
from qiskit.transpiler import CouplingMap, Target

from .regions import RegionSet

_NON_GATES = ("measure", "reset", "delay", "barrier")


def qaoa_circuit(graph: nx.Graph, p: int, *, name: str = "qaoa") -> QuantumCircuit:
    """The depth-``p`` QAOA ansatz for MaxCut on ``graph`` (nodes ``0..n-1``, edge ``weight``):
    ``H^n``, then per layer ``RZZ(-gamma*w)`` on every edge and ``RX(2*beta)`` on every qubit,
    then a measurement of every qubit into clbit = node."""
    n = graph.number_of_nodes()
    gamma = ParameterVector("gamma", p)
    beta = ParameterVector("beta", p)
    qc = QuantumCircuit(QuantumRegister(n, "q"), ClassicalRegister(n, "c"), name=name)
    qc.h(range(n))
    for layer in range(p):
        for u, v, w in graph.edges(data="weight", default=1.0):
            qc.rzz(-gamma[layer] * w, u, v)
        qc.rx(2 * beta[layer], range(n))
    qc.measure(range(n), range(n))
    return qc


def parameter_order(circuit: QuantumCircuit) -> list[str]:
    """The circuit's parameter names in the column order of value arrays (``circuit.parameters``)."""
    return [p.name for p in circuit.parameters]


def template_target(regions: RegionSet, basis_gates) -> Target:
    """The Target of one region: the device's basis on the template's couplings (both ways)."""
    edges = [list(e) for a, b in regions.template_edges for e in ((a, b), (b, a))]
    coupling = CouplingMap(edges) if edges else None
    return Target.from_configuration(
        basis_gates=list(basis_gates), num_qubits=regions.n, coupling_map=coupling
    )


def region_circuit(
    logical: QuantumCircuit, regions: RegionSet, width: int, basis_gates, *, seed: int = 0,
    only: int | None = None,
) -> QuantumCircuit:
    """``logical`` routed onto the template and copied onto each region of a ``width``-qubit
    device; region ``r`` measures into register ``r<r>`` (``logical``'s clbit order).
    ``only=r``: region ``r`` alone (one register)."""
    routed = transpile(logical, target=template_target(regions, basis_gates), optimization_level=1, seed_transpiler=seed)
    n = logical.num_clbits
    chosen = range(regions.k) if only is None else [only]
    qreg = QuantumRegister(width, "q")
    cregs = [ClassicalRegister(n, f"r{r}") for r in chosen]
    wide = QuantumCircuit(qreg, *cregs, name=f"{logical.name}-x{regions.k}" if only is None else f"{logical.name}-r{only}")
    for creg, r in zip(cregs, chosen):
        wide.compose(routed, qubits=[qreg[q] for q in regions.regions[r].qubits], clbits=list(creg), inplace=True)
    return wide
