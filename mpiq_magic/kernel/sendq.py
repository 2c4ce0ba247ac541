"""The paper's Algorithm 2: split one circuit into per-device sub-circuits by qubit groups."""

from __future__ import annotations

from typing import Sequence

from .errors import SendQError


def split_circuit(circuit, send_q: Sequence[Sequence[int]]) -> list:
    """One sub-circuit per group; qubits (and the clbits they measure) renumbered in group order.

    Groups must be disjoint and cover every qubit the circuit uses; an operation acting on
    qubits of two groups is refused, since cutting it is the GHZ pipeline's job.
    """
    from qiskit import QuantumCircuit

    n = circuit.num_qubits
    owner: dict[int, int] = {}
    groups = [list(g) for g in send_q]
    for gi, group in enumerate(groups):
        if not group:
            raise SendQError(f"send_q group {gi} is empty; every group needs at least one qubit.")
        for q in group:
            if not isinstance(q, int) or not 0 <= q < n:
                raise SendQError(f"send_q group {gi} names qubit {q!r}, but the circuit has qubits 0..{n - 1}.")
            if q in owner:
                raise SendQError(f"Qubit {q} appears in send_q groups {owner[q]} and {gi}; groups must be disjoint.")
            owner[q] = gi

    clbit_owner: dict[int, int] = {}
    for inst in circuit.data:
        qubits = [circuit.find_bit(q).index for q in inst.qubits]
        missing = [q for q in qubits if q not in owner]
        if missing:
            raise SendQError(
                f"Operation '{inst.operation.name}' uses qubit(s) {missing}, which no send_q group contains; "
                f"groups must cover every qubit the circuit uses."
            )
        touched = {owner[q] for q in qubits}
        if len(touched) > 1 and inst.operation.name != "barrier":
            raise SendQError(
                f"Gate '{inst.operation.name}' on qubits {qubits} crosses send_q groups {sorted(touched)}; "
                f"cut the circuit first (see mpiq_magic.ghz) or regroup the qubits."
            )
        for c in (circuit.find_bit(c).index for c in inst.clbits):
            (group,) = touched if len(touched) == 1 else (None,)
            if clbit_owner.setdefault(c, group) != group:
                raise SendQError(f"Classical bit {c} is written by qubits of send_q groups {clbit_owner[c]} and {group}.")

    local_clbits = [sorted(c for c, g in clbit_owner.items() if g == gi) for gi in range(len(groups))]
    subs = [
        QuantumCircuit(len(g), len(local_clbits[gi]), name=f"{circuit.name}_group{gi}")
        for gi, g in enumerate(groups)
    ]
    qmap = {q: (owner[q], groups[owner[q]].index(q)) for q in owner}
    cmap = {c: local_clbits[g].index(c) for c, g in clbit_owner.items() if g is not None}
    for inst in circuit.data:
        qubits = [circuit.find_bit(q).index for q in inst.qubits]
        by_group: dict[int, list[int]] = {}
        for q in qubits:
            by_group.setdefault(qmap[q][0], []).append(qmap[q][1])
        for gi, local in by_group.items():
            op = inst.operation
            if op.name == "barrier" and len(by_group) > 1:
                subs[gi].barrier(local)
                continue
            clbits = [cmap[circuit.find_bit(c).index] for c in inst.clbits]
            subs[gi].append(op, local, clbits)
    return subs
