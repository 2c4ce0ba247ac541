"""Quasi-probability subexperiments as parameterized *families*: one circuit, many value rows.

qiskit-addon-cutting's ``generate_cutting_experiments`` writes one concrete circuit per
(QPD sample, partition, observable group): 36 circuits per partition for two cut CNOTs, 216 for
three. They differ only where a cut gate was (its basis instruction: I, Z, S, Sdg, H..., a
mid-circuit measurement, a reset) and in the observable group's basis change. Here every such
place becomes a ``U(theta, phi, lambda)`` slot whose angles are *values*, and only the places'
*shape* (where measurements and resets sit) stays structural:

* per cut gate and side, the basis map's instruction list is split at its ``qpd_measure`` s and
  ``reset`` s; each unitary run before a measurement, and the one at the end, becomes one ``U``
  slot (a unitary right before a reset does nothing and is dropped);
* the observable group's rotations (``H`` for X, ``SX`` for Y, nothing for Z) become one ``U``
  slot per measured qubit;
* a *family* is one (partition, shapes of its cut gates, measured qubits): for cut CNOTs a side
  is either unitary-only or unitary-measure-unitary, so two cut CNOTs give at most 4 families per
  partition and observable-qubit set instead of 36 circuits.

The cluster compiles each family once per device target and later rows travel as float values
(``primitives``' payload cache). ``defer`` additionally replaces each mid-circuit measurement by a
CNOT onto a fresh ancilla measured at the end (the deferred-measurement principle: the outcomes
are only read after the run, so the joint distribution is unchanged). Without mid-circuit
measurements a simulator samples all shots from one state instead of simulating shot by shot;
it costs one qubit per measurement, so it is used only where the widened circuit still fits
(``defer_width``), and never in families with resets (wire cuts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable

import numpy as np

__all__ = ["Family", "FamilySet", "build_families", "register_arrays"]

_MEASURE, _RESET = "m", "r"


@dataclass
class Family:
    """One parameterized subexperiment circuit and its value rows.

    ``rows[k] = (sample, group)``: row k is the subexperiment of QPD sample ``sample`` (index
    into the coefficients) and observable group ``group`` of partition ``label``.
    """

    label: Hashable
    circuit: Any  # QuantumCircuit with ParameterVector 't' (columns of values, in order)
    values: np.ndarray  # (rows, circuit.num_parameters)
    rows: list[tuple[int, int]] = field(default_factory=list)
    shapes: tuple = ()
    measured: tuple[int, ...] = ()
    deferred: int = 0  # ancillas standing in for mid-circuit measurements

    @property
    def num_rows(self) -> int:
        return len(self.rows)


@dataclass
class FamilySet:
    """Every family of a cut circuit, the QPD coefficients, and which rows make which sample."""

    families: list[Family]
    coefficients: list  # [(coefficient, WeightType)], one per QPD sample
    labels: list[Hashable]  # partition labels, in the order of the problem's subcircuits

    @property
    def num_subexperiments(self) -> int:
        return sum(f.num_rows for f in self.families)

    def index(self) -> dict[tuple[Hashable, int, int], tuple[int, int]]:
        """(label, sample, group) -> (family index, row)."""
        return {(f.label, z, j): (i, r) for i, f in enumerate(self.families) for r, (z, j) in enumerate(f.rows)}


def _u_angles(matrix: np.ndarray) -> tuple[float, float, float]:
    from qiskit.synthesis import OneQubitEulerDecomposer

    theta, phi, lam = OneQubitEulerDecomposer("U").angles(matrix)
    return float(theta), float(phi), float(lam)


def _slot_program(ops) -> tuple[tuple[str, ...], list[np.ndarray]]:
    """Shape (``m``/``r`` in order) and the unitaries of the U slots (one before each ``m``, one at
    the end) of one side of a basis map."""
    from qiskit.quantum_info import Operator

    shape: list[str] = []
    mats: list[np.ndarray] = []
    current = np.eye(2, dtype=complex)
    for op in ops:
        name = op.name.lower()
        if name == "qpd_measure":
            shape.append(_MEASURE)
            mats.append(current)
            current = np.eye(2, dtype=complex)
        elif name == "reset":
            shape.append(_RESET)
            current = np.eye(2, dtype=complex)  # a unitary right before a reset does nothing
        else:
            current = Operator(op).data @ current
    mats.append(current)
    return tuple(shape), mats


_ROTATION = {  # observable letter -> basis change before a Z measurement (as the addon's)
    (False, True): np.eye(2, dtype=complex),                                     # Z
    (True, False): np.array([[1, 1], [1, -1]], dtype=complex) / np.sqrt(2),     # X: H
    (True, True): np.array([[1 + 1j, 1 - 1j], [1 - 1j, 1 + 1j]], dtype=complex) / 2,  # Y: SX
}


def _pauli_indices(cog) -> list[int]:
    return list(cog.pauli_indices) or [0]  # the addon measures qubit 0 when nothing is asked


def _template(subcircuit, gates, shapes, measured, defer: bool):
    """The parameterized circuit of one family; its parameters in value-column order."""
    from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
    from qiskit.circuit import ParameterVector
    from qiskit_addon_cutting.cutting_experiments import (
        _consolidate_resets, _remove_final_resets, _remove_resets_in_zero_state,
    )

    n = subcircuit.num_qubits
    n_meas = sum(s.count(_MEASURE) for s in shapes)
    n_slots = sum(s.count(_MEASURE) + 1 for s in shapes) + len(measured)
    ancillas = n_meas if defer else 0
    theta = ParameterVector("t", 3 * n_slots)
    qreg = QuantumRegister(n + ancillas, "q")
    obs_reg = ClassicalRegister(len(measured), "observable_measurements")
    qpd_reg = ClassicalRegister(max(1, n_meas), "qpd_measurements")
    qc = QuantumCircuit(qreg, obs_reg, qpd_reg, name=f"qpd-family-{subcircuit.name}")
    slot = meas = 0
    where = {index: k for k, (index, _, _) in enumerate(gates)}

    def u(qubit):
        nonlocal slot
        qc.u(theta[3 * slot], theta[3 * slot + 1], theta[3 * slot + 2], qubit)
        slot += 1

    deferred = []
    for index, inst in enumerate(subcircuit.data):
        qubits = [subcircuit.find_bit(q).index for q in inst.qubits]
        if index not in where:
            qc.append(inst.operation, [qreg[q] for q in qubits], [])
            continue
        q = qubits[0]
        for element in shapes[where[index]]:
            if element == _MEASURE:
                u(q)
                if defer:
                    qc.cx(q, n + meas)
                    deferred.append((n + meas, meas))
                else:
                    qc.measure(q, qpd_reg[meas])
                meas += 1
            else:
                qc.reset(q)
        u(q)
    for c, q in enumerate(measured):
        u(q)
        qc.measure(q, obs_reg[c])
    for anc, bit in deferred:
        qc.measure(anc, qpd_reg[bit])
    if any(_RESET in s for s in shapes):
        _remove_resets_in_zero_state(qc)
        _remove_final_resets(qc)
        _consolidate_resets(qc)
    order = [p.name for p in qc.parameters]
    assert order == [p.name for p in theta], "parameter order must follow the value columns"
    return qc


def build_families(problem, *, num_samples: float = np.inf, defer_width: int | None = None) -> FamilySet:
    """The families of qiskit-addon-cutting's ``PartitionedCuttingProblem`` ``problem``.

    QPD samples and coefficients are the addon's (``generate_qpd_weights``, exact weights for
    ``num_samples=inf``, the same coefficient formula as ``generate_cutting_experiments``).
    ``defer_width``: defer mid-circuit measurements to ancillas in a family whose widened circuit
    has at most this many qubits (None: never).
    """
    from qiskit_addon_cutting.qpd import SingleQubitQPDGate, generate_qpd_weights
    from qiskit_addon_cutting.utils.observable_grouping import ObservableCollection

    subcircuits = problem.subcircuits
    labels = list(subcircuits)
    gates: dict[Hashable, list[tuple[int, int, Any]]] = {}
    bases: dict[int, Any] = {}
    for label, circ in subcircuits.items():
        gates[label] = []
        for i, inst in enumerate(circ.data):
            if isinstance(inst.operation, SingleQubitQPDGate):
                decomp = int(inst.operation.label.split("_")[-1])
                gates[label].append((i, decomp, inst.operation))
                bases[decomp] = inst.operation.basis
    basis_list = [bases[k] for k in sorted(bases)]
    samples = generate_qpd_weights(basis_list, num_samples=num_samples)
    kappa = float(np.prod([b.kappa for b in basis_list])) if basis_list else 1.0
    total = sum(v[0] for v in samples.values())
    ordered = sorted(samples.items(), key=lambda x: x[1][0], reverse=True)
    coefficients = []
    for map_ids, (redundancy, weight_type) in ordered:
        actual = np.prod([b.coeffs[m] for b, m in zip(basis_list, map_ids)]) if basis_list else 1.0
        coefficients.append(((redundancy / total) * (kappa * np.sign(actual)), weight_type))
    programs: dict[tuple[int, int, int], tuple[tuple[str, ...], list[np.ndarray]]] = {}
    families: dict[tuple, Family] = {}
    value_rows: dict[tuple, list[np.ndarray]] = {}
    for label in labels:
        circ = subcircuits[label]
        groups = ObservableCollection(problem.subobservables[label]).groups
        for z, (map_ids, _) in enumerate(ordered):
            shapes, slot_values = [], []
            for _, decomp, gate in gates[label]:
                key = (decomp, map_ids[decomp], gate.qubit_id)
                if key not in programs:
                    programs[key] = _slot_program(gate.basis.maps[map_ids[decomp]][gate.qubit_id])
                shape, mats = programs[key]
                shapes.append(shape)
                slot_values.extend(_u_angles(m) for m in mats)
            shapes_t = tuple(shapes)
            for j, cog in enumerate(groups):
                measured = tuple(_pauli_indices(cog))
                x, zz = cog.general_observable.x, cog.general_observable.z
                obs_values = [_u_angles(_ROTATION[(bool(x[q]), bool(zz[q]) or not bool(x[q]))]) for q in measured]
                fkey = (label, shapes_t, measured)
                if fkey not in families:
                    n_meas = sum(s.count(_MEASURE) for s in shapes_t)
                    defer = (defer_width is not None and n_meas > 0 and not any(_RESET in s for s in shapes_t)
                             and circ.num_qubits + n_meas <= defer_width)
                    families[fkey] = Family(
                        label=label, circuit=_template(circ, gates[label], shapes_t, measured, defer),
                        values=np.zeros((0, 0)), shapes=shapes_t, measured=measured,
                        deferred=n_meas if defer else 0,
                    )
                    value_rows[fkey] = []
                families[fkey].rows.append((z, j))
                value_rows[fkey].append(np.ravel(slot_values + obs_values))
    for fkey, fam in families.items():
        fam.values = np.ascontiguousarray(np.vstack(value_rows[fkey]), dtype=np.float64)
    return FamilySet(families=list(families.values()), coefficients=coefficients, labels=labels)


def register_arrays(memory: np.ndarray, circuit) -> dict[str, np.ndarray]:
    """Packed shots over all clbits of ``circuit`` (rows, shots, bytes) -> packed bits per
    classical register (qiskit ``BitArray`` layout), by register name."""
    from qiskit.primitives.containers import BitArray

    full = BitArray(np.asarray(memory, dtype=np.uint8), circuit.num_clbits)
    return {creg.name: full.slice_bits([circuit.find_bit(b).index for b in creg]).array for creg in circuit.cregs}
