"""A Qiskit circuit as time layers of two-qubit gates, with the gate groups of seed 002.

Time layers: two-qubit gates are scheduled as soon as possible (ASAP) on their qubits; layer
``t`` holds gates on disjoint qubits. Single-qubit operations do not cost e-bits and get the layer
of the qubit's previous two-qubit gate (or of its first one). A qubit is *live* from the layer of
its first operation to the end of the circuit: only live qubits occupy a slot on a QPU. With
``reuse=True`` a qubit whose last operation is a measurement is freed after it (its slot can
hold another qubit later: mid-circuit measurement and reset).

Gate groups (the "distributable packets" of Burt et al.; also Andrés-Martínez & Heunen): a root
qubit whose state is shared once with a remote QPU (cat-entanglement, 1 e-bit) can act as the
control of any number of gates there, as long as it only undergoes operations that are diagonal
in its computational basis in between. So consecutive two-qubit gates in which a qubit is on a
diagonal side (either qubit of a diagonal gate such as CZ, CP, RZZ, CRZ; the control of a
controlled gate such as CX) form one hyperedge: the root's nodes over the group's span and the
partners' nodes at their gate layers. A non-diagonal operation on the root (H, RX, measure,
reset, the target side of a CX, ...) closes its group. Each gate is put in one group, greedily:
the qubit with the longer diagonal run (gates already in its open group plus those ahead before
its next non-diagonal operation) becomes the root.

Gates on three or more qubits and two-qubit gates that are neither diagonal nor singly
controlled (SWAP, iSWAP, RXX, ...) are first decomposed with Qiskit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import ControlFlowOp, ControlledGate

from .errors import PartitionError

IGNORED = frozenset({"barrier", "delay", "store"})
BREAKING = frozenset({"measure", "reset", "initialize", "prepare_state"})
DIAGONAL_1Q = frozenset({"id", "rz", "p", "u1", "z", "s", "sdg", "t", "tdg"})
DIAGONAL_2Q = frozenset({"cz", "cp", "cu1", "rzz", "crz", "cs", "csdg"})
BASIS = ["u", "cx", "cp", "cz", "rzz", "measure", "reset"]


@dataclass(frozen=True)
class Gate:
    """A two-qubit gate. ``qubits[0]`` is the control of a controlled gate."""

    index: int  # position in LayeredCircuit.circuit.data
    name: str
    qubits: tuple[int, int]
    layer: int
    diagonal: bool  # symmetric: either qubit may be the root


@dataclass(frozen=True)
class GateGroup:
    """A hyperedge: ``root``'s nodes over layers ``start..stop`` and the partner nodes."""

    root: int
    start: int
    stop: int
    gates: tuple[int, ...]  # indices into LayeredCircuit.gates
    partners: tuple[tuple[int, int], ...]  # (qubit, layer), one per gate


@dataclass(frozen=True)
class LayeredCircuit:
    """The circuit the partitioner works on (``circuit``: decomposed where needed)."""

    circuit: QuantumCircuit
    num_qubits: int
    num_layers: int
    gates: tuple[Gate, ...]
    groups: tuple[GateGroup, ...]
    live: tuple[tuple[int, int] | None, ...]  # per qubit: first and last live layer, or None
    instruction_layer: tuple[int, ...]  # per instruction of ``circuit``; -1 for barriers

    def live_count(self, layer: int) -> int:
        return sum(1 for span in self.live if span and span[0] <= layer <= span[1])

    def is_live(self, qubit: int, layer: int) -> bool:
        span = self.live[qubit]
        return bool(span) and span[0] <= layer <= span[1]


_DIAG_CACHE: dict[tuple, bool] = {}


def _is_diagonal(op: Any) -> bool | None:
    """Whether ``op``'s matrix is diagonal; None when it has no matrix (unbound parameters)."""
    try:
        key = (op.name, tuple(float(p) for p in op.params))
    except (TypeError, ValueError):
        return None
    if key in _DIAG_CACHE:
        return _DIAG_CACHE[key]
    try:
        m = np.asarray(op.to_matrix())
    except Exception:  # noqa: BLE001 - qiskit raises several types for matrix-less ops
        return None
    diag = bool(np.allclose(m - np.diag(np.diag(m)), 0.0, atol=1e-9))
    _DIAG_CACHE[key] = diag
    return diag


def _kind_2q(op: Any) -> str | None:
    """'diag', 'ctrl' or None (needs decomposition)."""
    if op.name in DIAGONAL_2Q:
        return "diag"
    diag = _is_diagonal(op)
    if diag:
        return "diag"
    if isinstance(op, ControlledGate) and op.num_ctrl_qubits == 1:
        return "ctrl"
    return None


def _to_decompose(circuit: QuantumCircuit) -> set[str]:
    names = set()
    for inst in circuit.data:
        op = inst.operation
        if isinstance(op, ControlFlowOp):
            raise PartitionError(
                f"The circuit holds a control-flow operation {op.name!r}; the partitioner takes "
                "circuits without control flow (unroll loops and conditions first)."
            )
        if op.name in IGNORED or op.name in BREAKING:
            continue
        n = len(inst.qubits)
        if n > 2 or (n == 2 and _kind_2q(op) is None):
            names.add(op.name)
    return names


def _normalise(circuit: QuantumCircuit) -> QuantumCircuit:
    out = circuit
    for _ in range(8):  # definitions first (fast); the transpiler only if that does not settle
        names = _to_decompose(out)
        if not names:
            return out
        out = out.decompose(gates_to_decompose=sorted(names))
    out = transpile(out, basis_gates=BASIS, optimization_level=0)
    if out.num_qubits != circuit.num_qubits:  # pragma: no cover - no layout without a target
        raise PartitionError("Decomposition changed the number of qubits; this is a bug.")
    return out


def layer_circuit(circuit: QuantumCircuit, *, reuse: bool = False) -> LayeredCircuit:
    """Schedule ``circuit``'s two-qubit gates into layers and group them (see the module doc)."""
    if not isinstance(circuit, QuantumCircuit):
        raise PartitionError(
            f"Expected a qiskit QuantumCircuit, got {type(circuit).__name__}; load OpenQASM with "
            "qiskit.qasm2.loads / qiskit.qasm3.loads first."
        )
    circuit = _normalise(circuit)
    n = circuit.num_qubits
    index_of = {q: i for i, q in enumerate(circuit.qubits)}

    # pass 1: layers, and per qubit its event sequence ("D" diagonal side of a 2q gate, "B" break)
    last = [-1] * n  # layer of the qubit's last 2q gate
    pending: list[list[int]] = [[] for _ in range(n)]  # 1q instructions before the first 2q gate
    inst_layer = [-1] * len(circuit.data)
    gates: list[Gate] = []
    events: list[list[tuple[str, int]]] = [[] for _ in range(n)]  # (kind, gate index or -1)
    first_op: list[int | None] = [None] * n
    last_op: list[int | None] = [None] * n
    measured_last = [False] * n
    for i, inst in enumerate(circuit.data):
        op = inst.operation
        qs = [index_of[q] for q in inst.qubits]
        if op.name in IGNORED or not qs:
            continue
        if len(qs) == 1 or op.name in BREAKING:
            for q in qs:
                if last[q] < 0:
                    pending[q].append(i)
                else:
                    inst_layer[i] = last[q]
                    last_op[q] = last[q]
                if op.name in BREAKING or op.name not in DIAGONAL_1Q and not _is_diagonal(op):
                    events[q].append(("B", -1))
                measured_last[q] = op.name == "measure"
            continue
        kind = _kind_2q(op)
        a, b = qs
        layer = max(last[a], last[b]) + 1
        inst_layer[i] = layer
        g = len(gates)
        gates.append(Gate(i, op.name, (a, b), layer, kind == "diag"))
        for q in (a, b):
            if last[q] < 0:
                first_op[q] = layer
                for j in pending[q]:
                    inst_layer[j] = layer
                pending[q] = []
            last[q] = layer
            last_op[q] = layer
            measured_last[q] = False
        events[a].append(("D", g))
        events[b].append(("D", g) if kind == "diag" else ("B", g))
    num_layers = max((g.layer for g in gates), default=-1) + 1
    single_only = [q for q in range(n) if pending[q] and last[q] < 0]
    if single_only:
        num_layers = max(num_layers, 1)
    end = num_layers - 1
    live: list[tuple[int, int] | None] = [None] * n
    for q in range(n):
        if first_op[q] is not None:
            stop = last_op[q] if reuse and measured_last[q] else end
            live[q] = (first_op[q], stop)
    counts = [0] * num_layers
    for span in live:
        if span:
            for t in range(span[0], span[1] + 1):
                counts[t] += 1
    for q in single_only:
        # no two-qubit gates: one layer suffices if it is measured and reuse is on, else to the end
        if reuse and measured_last[q]:
            t = min(range(num_layers), key=lambda t: (counts[t], t))
            live[q] = (t, t)
        else:
            t = end
            live[q] = (end, end)
        counts[t] += 1
        for j in pending[q]:
            inst_layer[j] = t

    groups = _group_gates(gates, events, n)
    return LayeredCircuit(
        circuit, n, num_layers, tuple(gates), groups, tuple(live), tuple(inst_layer)
    )


def _group_gates(gates: list[Gate], events: list[list[tuple[str, int]]], n: int):
    # ahead[q][j]: diagonal-side 2q events from event j of qubit q up to its next break
    ahead: list[list[int]] = []
    pos: list[dict[int, int]] = []  # gate index -> event position, per qubit
    for q in range(n):
        ev = events[q]
        run = [0] * (len(ev) + 1)
        for j in range(len(ev) - 1, -1, -1):
            run[j] = 0 if ev[j][0] == "B" else run[j + 1] + 1
        ahead.append(run)
        pos.append({g: j for j, (kind, g) in enumerate(ev) if g >= 0})

    open_group: list[int | None] = [None] * n  # group id per root qubit
    members: list[list[int]] = []
    roots: list[int] = []
    # walk events in gate order; breaks between gates close groups
    cursor = [0] * n

    def advance(q: int, upto: int) -> None:
        # process q's events before position ``upto``: a break closes q's open group
        while cursor[q] < upto:
            if events[q][cursor[q]][0] == "B":
                open_group[q] = None
            cursor[q] += 1

    for g, gate in enumerate(gates):
        a, b = gate.qubits
        pa, pb = pos[a][g], pos[b][g]
        advance(a, pa)
        advance(b, pb)
        if gate.diagonal:
            def score(q: int, p: int) -> int:
                grp = open_group[q]
                return (len(members[grp]) if grp is not None else 0) + ahead[q][p]

            sa, sb = score(a, pa), score(b, pb)
            if sb > sa or (sb == sa and open_group[b] is not None and open_group[a] is None):
                root = b
            else:
                root = a
        else:
            root = a
        grp = open_group[root]
        if grp is None:
            grp = len(members)
            members.append([])
            roots.append(root)
            open_group[root] = grp
        members[grp].append(g)
        # consume this gate's event on both qubits; a target side breaks
        for q, p in ((a, pa), (b, pb)):
            if events[q][p][0] == "B":
                open_group[q] = None
            cursor[q] = p + 1

    out = []
    for grp, gs in enumerate(members):
        root = roots[grp]
        partners = tuple(
            (gates[g].qubits[1] if gates[g].qubits[0] == root else gates[g].qubits[0], gates[g].layer)
            for g in gs
        )
        layers = [gates[g].layer for g in gs]
        out.append(GateGroup(root, min(layers), max(layers), tuple(gs), partners))
    return tuple(out)
