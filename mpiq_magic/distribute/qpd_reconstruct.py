"""Reconstruction of quasi-probability cuts on the caller's side (:mod:`.qpd`).

qiskit-addon-cutting's ``reconstruct_expectation_values``, vectorized over shots with numpy (the
addon loops over shots in Python; tests check both agree), for the full shot set and for batches
of shots: the spread of the batch values, divided by sqrt(batches), is the reported standard
error. :func:`reconstruct` reads the addon's per-subexperiment results,
:func:`reconstruct_families` the rows of parameterized families (:mod:`.families`).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["estimate", "reconstruct", "reconstruct_families"]


def _error(message: str):
    from .qpd import QPDError

    return QPDError(message)


def _signs(data, cog, edges) -> np.ndarray:
    """Mean of (+1/-1) per Pauli mask of ``cog`` over all shots and over each batch of shots:
    (1 + len(edges) - 1, masks). ``qpd_measurements`` parity times the observable's parity, as
    qiskit-addon-cutting's ``_process_outcome_v2``, on whole shot columns. ``data``: a result's
    DataBin, or ``(observable_measurements, qpd_measurements)`` packed arrays (shots, bytes)."""
    if isinstance(data, tuple):
        obs, qpd = (np.asarray(a, dtype=np.uint8) for a in data)
    else:
        obs = np.asarray(data.observable_measurements.array, dtype=np.uint8)
        qpd = np.asarray(data.qpd_measurements.array, dtype=np.uint8)
    obs, qpd = obs.reshape(-1, obs.shape[-1]), qpd.reshape(-1, qpd.shape[-1])
    qpd_sign = 1 - 2 * (np.unpackbits(qpd, axis=-1).sum(axis=-1) & 1).astype(np.int64)
    nbytes = obs.shape[-1]
    cols = []
    for mask in cog.pauli_bitmasks:
        mask_bytes = np.frombuffer(int(mask).to_bytes(nbytes, "big"), dtype=np.uint8)
        cols.append(qpd_sign * (1 - 2 * (np.unpackbits(obs & mask_bytes, axis=-1).sum(axis=-1) & 1).astype(np.int64)))
    signs = np.stack(cols, axis=-1).astype(float) if cols else np.zeros((obs.shape[0], 0))
    shots = signs.shape[0]
    if edges[-1] != shots:
        raise _error(f"A subexperiment came back with {shots} shots, not the {edges[-1]} asked for.")
    batch = np.add.reduceat(signs, edges[:-1], axis=0) / np.diff(edges)[:, None]
    return np.vstack([signs.mean(axis=0, keepdims=True), batch])


def reconstruct(results, coefficients, subobservables, edges=None) -> np.ndarray:
    """qiskit-addon-cutting's ``reconstruct_expectation_values`` (SamplerV2 results, one
    PauliList per partition), vectorized over shots, for the full shot set and each batch
    ``edges[b]:edges[b + 1]``. Returns (1 + batches, len(terms)); row 0 equals the addon's value."""
    from qiskit_addon_cutting.utils.observable_grouping import ObservableCollection

    labels = list(subobservables)
    nterms = len(subobservables[labels[0]])
    if edges is None:
        first = next(iter(results[labels[0]]))
        edges = np.array([0, first.data.qpd_measurements.num_shots])
    edges = np.asarray(edges, dtype=int)
    rows = len(edges)  # full + (len(edges) - 1) batches
    collections = {label: ObservableCollection(subobservables[label]) for label in labels}
    for label, so in collections.items():
        if len(results[label]) != len(coefficients) * len(so.groups):
            raise _error(
                f"Partition {label!r} returned {len(results[label])} results for {len(coefficients)} "
                f"coefficients x {len(so.groups)} observable groups."
            )
    expvals = np.zeros((rows, nterms))
    for i, coeff in enumerate(coefficients):
        current = np.ones((rows, nterms))
        for label, so in collections.items():
            groups = [_signs(results[label][i * len(so.groups) + k].data, cog, edges) for k, cog in enumerate(so.groups)]
            for k, sub in enumerate(subobservables[label]):
                current[:, k] *= np.mean([groups[m][:, n] for m, n in so.lookup[sub]], axis=0)
        expvals += coeff[0] * current
    return expvals


def reconstruct_families(families, arrays, subobservables, edges) -> np.ndarray:
    """:func:`reconstruct` for family runs: ``arrays[i]`` holds family ``i``'s packed
    ``observable_measurements`` and ``qpd_measurements`` (rows, shots, bytes) by register name.
    Returns (1 + batches, len(terms))."""
    from qiskit_addon_cutting.utils.observable_grouping import ObservableCollection

    labels = list(families.labels)
    nterms = len(subobservables[labels[0]])
    edges = np.asarray(edges, dtype=int)
    index = families.index()
    collections = {label: ObservableCollection(subobservables[label]) for label in labels}
    expvals = np.zeros((len(edges), nterms))
    for z, coeff in enumerate(families.coefficients):
        current = np.ones((len(edges), nterms))
        for label, so in collections.items():
            groups = []
            for j, cog in enumerate(so.groups):
                f, r = index[(label, z, j)]
                regs = arrays[f]
                groups.append(_signs((regs["observable_measurements"][r], regs["qpd_measurements"][r]), cog, edges))
            for k, sub in enumerate(subobservables[label]):
                current[:, k] *= np.mean([groups[m][:, n] for m, n in so.lookup[sub]], axis=0)
        expvals += coeff[0] * current
    return expvals


def _combine(plan, term_values) -> np.ndarray:
    index = {p.to_label(): i for i, p in enumerate(plan.paulis)}
    terms = np.asarray(term_values, dtype=float)
    return np.array([
        float(np.real(sum(c * terms[index[p.to_label()]] for p, c in zip(op.paulis, op.coeffs))))
        for op in plan.observables
    ])


def estimate(plan, arrays, shots: int, batches: int) -> tuple[np.ndarray, np.ndarray]:
    """Expectation values of ``plan.observables`` and their batch-means standard errors from the
    families' register arrays (``arrays[i]``: register name -> (rows, shots, bytes))."""
    edges = np.linspace(0, int(shots), int(batches) + 1).astype(int)
    rows = reconstruct_families(plan.families, arrays, plan.problem.subobservables, edges)
    values = _combine(plan, rows[0])
    per_batch = np.array([_combine(plan, row) for row in rows[1:]])
    return values, np.std(per_batch, axis=0, ddof=1) / math.sqrt(int(batches))


