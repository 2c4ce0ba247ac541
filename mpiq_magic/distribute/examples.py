"""Circuits that feed-forward cutting runs exactly: GHZ chains, CNOT ladders, random qualifying ones."""

from __future__ import annotations

import random

import numpy as np
from typing import Sequence

from qiskit import QuantumCircuit


def ghz(n: int) -> QuantumCircuit:
    """H on qubit 0, then a CNOT chain; every qubit measured."""
    qc = QuantumCircuit(n, name=f"ghz{n}")
    qc.h(0)
    for i in range(n - 1):
        qc.cx(i, i + 1)
    qc.measure_all()
    return qc


def cnot_ladder(n: int, *, angle: float = 0.3) -> QuantumCircuit:
    """A CNOT ladder with a non-Clifford rotation (RY, T) after every CNOT on its target."""
    qc = QuantumCircuit(n, name=f"ladder{n}")
    qc.h(0)
    qc.t(0)
    qc.h(0)
    for i in range(n - 1):
        qc.cx(i, i + 1)
        qc.ry(angle * (i + 1), i + 1)
        qc.t(i + 1)
    qc.measure_all()
    return qc


def random_feedforward(
    widths: Sequence[int],
    depth: int,
    seed: int = 0,
    *,
    cross: float = 0.3,
    basis: bool = False,
) -> tuple[QuantumCircuit, list[int]]:
    """A random circuit over blocks of ``widths`` qubits that qualifies for feed-forward cuts, and
    its ``qubit -> block`` map.

    Gates between blocks go from a lower block to a higher one (CX, CZ, CY); their control is
    afterwards only touched by Z-diagonal gates (T, S, Z, RZ) or as a control. Every qubit starts
    with a non-Clifford SX RZ(theta) SX. ``basis=True`` keeps to the monitors' default ISA (H, X, SX,
    RZ, CX) with Clifford angles after the start, so a noisy reference simulation sees the same gates
    and every cut is a Pauli frame.
    """
    rng = random.Random(seed)
    owner = [b for b, w in enumerate(widths) for _ in range(w)]
    n = len(owner)
    qc = QuantumCircuit(n, name=f"ff-random-{seed}")
    frozen = [False] * n
    free_1q = ["h", "sx", "x", "rz"] if basis else ["h", "rx", "t", "sx", "ry"]
    diag_1q = ["rz"] if basis else ["t", "s", "z", "rz"]
    for q in range(n):  # a non-Clifford start on every qubit
        qc.sx(q)
        qc.rz(rng.uniform(0.2, 2.9), q)
        qc.sx(q)
    for _ in range(depth):
        a = rng.randrange(n)
        if rng.random() < 0.35:
            name = rng.choice(diag_1q if frozen[a] else free_1q)
            angle = rng.choice([0.5, 1.0, 1.5]) * np.pi if basis else rng.uniform(0.2, 2.9)
            params = [angle] if name in ("rx", "ry", "rz") else []
            getattr(qc, name)(*params, a)
            continue
        later = [q for q in range(n) if owner[q] > owner[a] and not frozen[q]]
        same = [q for q in range(n) if q != a and owner[q] == owner[a]]
        if later and rng.random() < cross:
            gate = "cx" if basis else rng.choice(["cx", "cz", "cy"])
            getattr(qc, gate)(a, rng.choice(later))
            frozen[a] = True
        elif same:
            t = rng.choice(same)
            if frozen[t] and frozen[a]:
                if not basis:
                    qc.cz(a, t)
            elif frozen[t]:
                qc.cx(t, a)
            else:
                qc.cx(a, t)
    qc.measure_all()
    return qc, owner
