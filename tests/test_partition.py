"""Partitioner invariants (mpiq_magic.distribute): pure Python, no MPI.

E-bits are recomputed here by a separate, deliberately naive counter that reads only the
circuit's gate list (grouped by the partitioner's ``LayeredCircuit.groups``) and the assignment.
"""

from __future__ import annotations

import itertools
import math
import random

import pytest
from qiskit import QuantumCircuit

from mpiq_magic.distribute import (
    METHODS,
    CapacityError,
    PartitionError,
    layer_circuit,
    make_network,
    partition_circuit,
)
from mpiq_magic.kernel.config import default_devices
from mpiq_magic.kernel.errors import UsageError


def ghz(n: int, measure: bool = True) -> QuantumCircuit:
    qc = QuantumCircuit(n)
    qc.h(0)
    for i in range(n - 1):
        qc.cx(i, i + 1)
    if measure:
        qc.measure_all()
    return qc


def cp_fraction(n: int, depth: int, fraction: float = 0.5, seed: int = 0) -> QuantumCircuit:
    rng = random.Random(seed)
    qc = QuantumCircuit(n)
    for _ in range(depth):
        pick = []
        for q in range(n):
            if rng.random() > fraction:
                qc.u(rng.uniform(0, 6.28), rng.uniform(0, 6.28), rng.uniform(0, 6.28), q)
            else:
                pick.append(q)
        rng.shuffle(pick)
        for i in range(0, len(pick) - 1, 2):
            qc.cp(rng.uniform(0, 6.28), pick[i], pick[i + 1])
    return qc


def naive_ebits(layered, distance, assignment) -> int:
    """Independent count: teleportations hop by hop, and per gate group the brute-force
    smallest set of network links connecting each partner QPU to a QPU holding the root."""
    k = len(distance)
    links = [(a, b) for a in range(k) for b in range(a + 1, k) if distance[a][b] == 1]
    total = 0
    for q in range(layered.num_qubits):
        seq = [assignment[t][q] for t in range(layered.num_layers) if assignment[t][q] >= 0]
        total += sum(distance[a][b] for a, b in zip(seq, seq[1:]))
    for grp in layered.groups:
        holders = {assignment[t][grp.root] for t in range(grp.start, grp.stop + 1)}
        need = {assignment[t][q] for q, t in grp.partners} - holders
        if not need:
            continue
        best = None
        for size in range(len(links) + 1):
            for chosen in itertools.combinations(links, size):
                reach = set(holders)
                grew = True
                while grew:
                    grew = False
                    for a, b in chosen:
                        if (a in reach) != (b in reach):
                            reach |= {a, b}
                            grew = True
                if need <= reach:
                    best = size
                    break
            if best is not None:
                break
        total += best
    return total


def check_invariants(result, circuit, capacities, distance=None):
    layered = result.layered
    k = len(capacities)
    distance = distance or [[int(a != b) for b in range(k)] for a in range(k)]
    # every live qubit placed, capacity at every layer, from the raw assignment
    for t, row in enumerate(result.assignment):
        counts = [0] * k
        for q, p in enumerate(row):
            if layered.is_live(q, t):
                assert 0 <= p < k, (t, q, p)
                counts[p] += 1
            else:
                assert p == -1
        assert all(c <= cap for c, cap in zip(counts, capacities)), (t, counts, capacities)
        assert tuple(counts) == result.loads[t]
    # every two-qubit gate of the circuit is in exactly one group
    n2 = sum(1 for inst in layered.circuit.data if len(inst.qubits) == 2)
    assert sorted(g for grp in layered.groups for g in grp.gates) == list(range(n2))
    assert result.ebits == naive_ebits(layered, distance, result.assignment)
    assert result.ebits == sum(result.ebits_per_layer)
    assert result.ebits == result.teleport_ebits + result.gate_ebits


@pytest.mark.parametrize("method", METHODS)
def test_ghz8_on_two_by_four_costs_one_ebit(method):
    r = partition_circuit(ghz(8), [4, 4], method=method)
    check_invariants(r, ghz(8), [4, 4])
    if method != "time-sliced":  # FGP-rOEE teleports instead (it is a baseline)
        assert r.ebits == 1
    assert r.method == method


def test_ghz8_from_device_specs():
    devices = default_devices(2, num_qubits=4)
    r = partition_circuit(ghz(8), devices)
    assert r.capacities == (4, 4) and r.ebits == 1
    assert r.ebits_per_layer.count(1) == 1 and r.num_layers == 7


@pytest.mark.parametrize("caps", [[17, 17], [9, 9, 9, 9], [8, 8, 8, 8]])
def test_cp_fraction_invariants_all_methods(caps):
    qc = cp_fraction(32, 12, seed=3)
    results = {m: partition_circuit(qc, caps, method=m, seed=1) for m in METHODS}
    for r in results.values():
        check_invariants(r, qc, caps)
    # the multilevel partitioner starts from the static partitions and only improves on them
    assert results["multilevel"].ebits <= results["static"].ebits
    assert results["multilevel"].ebits <= results["static-hypergraph"].ebits


@pytest.mark.parametrize("topology", ["line", "grid"])
def test_topologies_price_multi_hop_ebits(topology):
    qc = cp_fraction(16, 10, seed=5)
    caps = [5, 5, 5, 5]
    net = make_network(caps, topology)
    r = partition_circuit(qc, caps, topology=topology, seed=2)
    check_invariants(r, qc, caps, [list(row) for row in net.distance])
    full = partition_circuit(qc, caps, seed=2)
    assert r.ebits >= full.ebits * 0.8  # a sparser network never makes e-bits much cheaper
    assert r.topology == ("line" if topology == "line" else "grid 2x2")


def test_line_distances_and_group_cost():
    net = make_network([2, 2, 2, 2], "line")
    assert net.distance[0][3] == 3
    assert net.group_cost(0b0001, 0b1000) == 3  # root on 0, partner on 3: three links
    assert net.group_cost(0b0001, 0b1010) == 3  # partners on 1 and 3 share the path
    assert net.group_cost(0b0101, 0b1010) == 2  # root copies on 0 and 2
    full = make_network([2, 2, 2, 2])
    assert full.group_cost(0b0001, 0b1110) == 3 and full.group_cost(0b0011, 0b0011) == 0


def test_circuit_that_cannot_fit_names_the_layer():
    qc = ghz(10)
    with pytest.raises(CapacityError) as info:
        partition_circuit(qc, [4, 4])
    err = info.value
    assert isinstance(err, UsageError)
    assert err.layer == 7 and err.needed == 9 and err.available == 8
    assert "Layer 7 of 9 needs 9 live qubits" in str(err) and "[4, 4]" in str(err)


def test_reuse_frees_measured_qubits():
    # each qubit is measured right after its gates: with reuse, 2 slots suffice at every layer
    qc = QuantumCircuit(6, 6)
    for i in range(5):
        qc.cx(i, i + 1)
        qc.measure(i, i)
    qc.measure(5, 5)
    with pytest.raises(CapacityError):
        partition_circuit(qc, [2, 1])
    r = partition_circuit(qc, [2, 1], reuse=True)
    assert max(max(row) for row in r.loads) <= 2 and r.ebits == 0


def test_deterministic_with_seed():
    qc = cp_fraction(24, 16, seed=11)
    a = partition_circuit(qc, [7, 7, 7, 7], seed=4)
    b = partition_circuit(qc, [7, 7, 7, 7], seed=4)
    assert a.assignment == b.assignment and a.ebits == b.ebits
    assert a.ebits_per_layer == b.ebits_per_layer


def test_qft_groups_make_remote_controls_cheap():
    from qiskit.synthesis import synth_qft_full

    qc = synth_qft_full(16, do_swaps=False)
    r = partition_circuit(qc, [8, 8])
    check_invariants(r, qc, [8, 8])
    # 120 CP gates, but one shared root copy per remote QPU and group: at most one e-bit per root
    assert r.ebits <= 15
    layered = layer_circuit(qc)
    assert len(layered.gates) == 120 and len(layered.groups) <= 16


def test_generic_gates_are_decomposed_and_grouping_rules():
    qc = QuantumCircuit(3)
    qc.ccx(0, 1, 2)
    qc.swap(0, 2)
    layered = layer_circuit(qc)
    assert all(len(i.qubits) <= 2 for i in layered.circuit.data)
    assert layered.gates and {g.name for g in layered.gates} <= {"cx", "cp", "cz", "rzz"}
    # a diagonal run on one root: CZ, RZ, CP, then H closes the group
    qc = QuantumCircuit(4)
    qc.cz(0, 1)
    qc.rz(0.3, 0)
    qc.cp(0.2, 0, 2)
    qc.cx(0, 3)
    qc.h(0)
    qc.cz(0, 1)
    groups = layer_circuit(qc).groups
    assert [(g.root, len(g.gates)) for g in groups] == [(0, 3), (0, 1)]


def test_errors_are_usage_errors_with_values():
    with pytest.raises(PartitionError, match="Unknown method 'best'"):
        partition_circuit(ghz(4), [2, 2], method="best")
    with pytest.raises(PartitionError, match="Unknown topology 'ring'"):
        partition_circuit(ghz(4), [2, 2], topology="ring")
    with pytest.raises(PartitionError, match="QPU 1 is 'x'"):
        partition_circuit(ghz(4), [2, "x"])
    with pytest.raises(PartitionError, match="not connected"):
        make_network([2, 2, 2], [(0, 1)])
    with pytest.raises(PartitionError, match="Expected a qiskit QuantumCircuit"):
        partition_circuit("OPENQASM 2.0;", [2, 2])


def test_teleportations_listing_matches_teleport_ebits():
    qc = cp_fraction(20, 24, seed=7)
    r = partition_circuit(qc, [6, 6, 6, 6], seed=3)
    moves = r.teleportations
    assert len(moves) == r.teleport_ebits  # full topology: one e-bit per move
    for q, t, a, b in moves:
        assert r.assignment[t - 1][q] == a and r.assignment[t][q] == b and a != b
    assert math.isclose(r.seconds, r.seconds) and r.summary().startswith("multilevel: ")
