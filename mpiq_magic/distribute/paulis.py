"""Small-matrix helpers of feed-forward cutting: Z-controlled splits, Paulis up to phase, conjugation."""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
from qiskit.circuit.library import (
    HGate, RZGate, SdgGate, SGate, SXdgGate, SXGate, TdgGate, TGate, UnitaryGate, XGate, YGate, ZGate,
)

_I = np.eye(2, dtype=complex)
PAULIS = {
    "I": _I,
    "X": np.array([[0, 1], [1, 0]], dtype=complex),
    "Y": np.array([[0, -1j], [1j, 0]], dtype=complex),
    "Z": np.array([[1, 0], [0, -1]], dtype=complex),
}
_NAMED_1Q = [XGate(), YGate(), ZGate(), HGate(), SGate(), SdgGate(), TGate(), TdgGate(), SXGate(), SXdgGate()]
_ATOL = 1e-9


# ----------------------------------------------------------------------------- matrices
_MATRIX: dict[tuple, np.ndarray | None] = {}


def matrix(op) -> np.ndarray | None:
    try:
        key = (op.name, tuple(float(p) for p in op.params))
    except (TypeError, ValueError):
        key = None
    if key is not None and key in _MATRIX:
        return _MATRIX[key]
    try:
        m = np.asarray(op.to_matrix(), dtype=complex)
    except Exception:  # noqa: BLE001 - parameterised or matrix-less operations
        m = None
    if key is not None:
        _MATRIX[key] = m
    return m


def proportional(a: np.ndarray, b: np.ndarray) -> complex | None:
    """``z`` with ``a = z b`` and ``|z| = 1``, or None."""
    k = int(np.argmax(np.abs(b)))
    bk = b.flat[k]
    if abs(bk) < _ATOL:
        return None
    z = a.flat[k] / bk
    if abs(abs(z) - 1) > 1e-7 or not np.allclose(a, z * b, atol=1e-7):
        return None
    return z


def split(m: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(U0, U1)`` on the other qubit if ``m`` is controlled in the Z basis of qubit ``side``."""
    zero, one = ([0, 2], [1, 3]) if side == 0 else ([0, 1], [2, 3])
    if not np.allclose(m[np.ix_(zero, one)], 0, atol=_ATOL) or not np.allclose(m[np.ix_(one, zero)], 0, atol=_ATOL):
        return None
    return m[np.ix_(zero, zero)], m[np.ix_(one, one)]


def which_pauli(u: np.ndarray) -> str | None:
    """The Pauli label ``u`` equals up to a phase, or None."""
    for label, p in PAULIS.items():
        if proportional(u, p) is not None:
            return label
    return None


def gate_for(u: np.ndarray):
    """A gate equal to the 2x2 unitary ``u`` up to a global phase; None for the identity."""
    if proportional(u, _I) is not None:
        return None
    for gate in _NAMED_1Q:
        if proportional(u, gate.to_matrix()) is not None:
            return gate
    if abs(u[0, 1]) < _ATOL and abs(u[1, 0]) < _ATOL:
        return RZGate(float(np.angle(u[1, 1] / u[0, 0])))
    return UnitaryGate(u)


def keeps_z(op, position: int, nq: int) -> bool:
    """Whether ``op`` leaves the Z value of its qubit ``position`` unchanged (commutes with Z there)."""
    if op.name == "measure":
        return True
    if op.name == "reset":
        return False
    m = matrix(op)
    if m is None:
        return False
    z = np.array([1.0 if not (i >> position) & 1 else -1.0 for i in range(1 << nq)])
    return bool(np.allclose(m * z[None, :], z[:, None] * m, atol=_ATOL))


def conjugate(m: np.ndarray, labels: Sequence[str]) -> list[str] | None:
    """Labels of ``m P m^dagger`` for the Pauli ``P`` = labels (qarg order), or None if not a Pauli."""
    p = np.array([[1.0]], dtype=complex)
    for label in labels:  # qiskit order: qarg 0 is the least significant
        p = np.kron(PAULIS[label], p)
    out = m @ p @ m.conj().T
    dim = out.shape[0]
    for combo in itertools.product("IXYZ", repeat=len(labels)):
        q = np.array([[1.0]], dtype=complex)
        for label in combo:
            q = np.kron(PAULIS[label], q)
        if abs(abs(np.trace(q.conj().T @ out)) / dim - 1) < 1e-7:
            return list(combo)
    return None


