"""``EstimatorV2`` on the hybrid cluster: expectation values from measured shots.

How the values are computed (the same way real devices do it): the Pauli terms of every
observable of a PUB are grouped into qubit-wise commuting sets; each set gets one measurement
circuit (the PUB's circuit, a basis change per qubit — H for X, S†H for Y — and a measurement of
every qubit), compiled once per device like any sampler circuit; every parameter row of the PUB
runs on the monitors with ``ceil(1 / precision**2)`` shots; each term's expectation value is the
mean parity of its qubits' bits. ``stds`` are ``sum_i |c_i| sqrt(Var(P_i) / shots)`` with
``Var(P_i) = 1 - <P_i>^2``, as in Qiskit's ``BackendEstimatorV2``. So the monitors only ever
sample; noise models apply as configured. Exact (shot-free) values are not offered: precision
must be > 0.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
from qiskit import ClassicalRegister
from qiskit.primitives import BaseEstimatorV2
from qiskit.primitives.containers import DataBin, PrimitiveResult, PubResult
from qiskit.primitives.containers.estimator_pub import EstimatorPub, EstimatorPubLike
from qiskit.quantum_info import PauliList

from ..kernel.errors import UsageError
from .base import ClusterPrimitive, MPIQJob, check_pin, check_widths, flat_values, pub_seed, run_metadata
from .runner import Task

#: Name of the classical register the measurement circuits add.
MEAS_REGISTER = "mpiq_meas"


class EstimatorV2(ClusterPrimitive, BaseEstimatorV2):
    """Qiskit ``EstimatorV2`` whose PUBs run on MPI-Q monitors (see the module docstring).

    ``target``, ``seed``, ``pin``, ``timeout``, ``progress`` as for
    :class:`~mpiq_magic.primitives.SamplerV2`. ``default_precision``: used when neither ``run``
    nor the PUB gives one (0.015625: 4096 shots per measurement group).

    Raises:
        UsageError: a bad target or ``default_precision`` <= 0.
    """

    def __init__(
        self,
        target: Any,
        *,
        default_precision: float = 0.015625,
        seed: int | np.random.Generator | None = None,
        pin: Any = None,
        timeout: float | None = None,
        progress: Any = False,
    ):
        if not default_precision > 0:
            raise UsageError(f"default_precision must be > 0 (shots are ceil(1/precision^2)), got {default_precision!r}.")
        self._connect(target, seed, pin, timeout, progress)
        self._default_precision = float(default_precision)

    @property
    def default_precision(self) -> float:
        return self._default_precision

    def run(self, pubs: Iterable[EstimatorPubLike], *, precision: float | None = None, pin: Any = None) -> MPIQJob:
        """Run the PUBs (coerced as Qiskit does); ``pin`` as for ``SamplerV2.run``.

        Raises:
            ValueError: a PUB Qiskit refuses (shapes that do not broadcast, bad observables).
            UsageError: a precision of 0 (this estimator samples) or a bad pin.
        """
        if precision is None:
            precision = self._default_precision
        coerced = [EstimatorPub.coerce(pub, precision) for pub in pubs]
        for i, pub in enumerate(coerced):
            if not pub.precision > 0:
                raise UsageError(
                    f"PUB {i} asks for precision {pub.precision!r}; this estimator samples "
                    "(shots = ceil(1/precision^2)), so precision must be > 0."
                )
        pins = check_pin(self._pin if pin is None else pin, len(coerced))
        check_widths([pub.circuit for pub in coerced], self._transport.devices, pins)
        return MPIQJob(self._run, coerced, pins)

    def _run(self, pubs: list[EstimatorPub], pins: list[Any]) -> PrimitiveResult[PubResult]:
        tasks, plans = [], []
        for i, pub in enumerate(pubs):
            plan = _plan(pub)
            plan["first"] = len(tasks)
            values = flat_values(pub)
            for g, circuit in enumerate(plan["circuits"]):
                tasks.append(Task(circuit, values, plan["shots"], pub_seed(self._seed, i, g), pins[i]))
            plans.append(plan)
        report = self._transport.run(tasks) if tasks else None
        results = []
        for pub, plan in zip(pubs, plans):
            group_results = report.results[plan["first"]:plan["first"] + len(plan["circuits"])] if report else []
            results.append(_pub_result(pub, plan, group_results, report))
        return PrimitiveResult(results, metadata={"version": 2})



def _plan(pub: EstimatorPub) -> dict[str, Any]:
    """Measurement groups of the PUB's Pauli terms and one measurement circuit per group."""
    circuit = pub.circuit.remove_final_measurements(inplace=False)
    n = circuit.num_qubits
    labels = sorted({label for obs in pub.observables.ravel().tolist() for label in obs})
    bad = [label for label in labels if set(label) - set("IXYZ")]
    if bad:
        raise UsageError(f"Observable terms {bad[:3]} are not Pauli strings (I, X, Y, Z); this estimator measures Paulis.")
    terms = [label for label in labels if set(label) != {"I"}]
    groups = PauliList(terms).group_qubit_wise_commuting() if terms else []
    circuits, members = [], []
    for g, group in enumerate(groups):
        x, z = np.any(group.x, axis=0), np.any(group.z, axis=0)
        measured = circuit.copy()
        creg = ClassicalRegister(n, MEAS_REGISTER)
        measured.add_register(creg)
        for q in range(n):
            if x[q] and z[q]:
                measured.sdg(q)
                measured.h(q)
            elif x[q]:
                measured.h(q)
        measured.measure(range(n), creg)
        measured.name = f"{pub.circuit.name}-meas{g}"
        circuits.append(measured)
        members.append([p.to_label() for p in group])
    return {
        "circuits": circuits,
        "members": members,
        "shots": math.ceil(1.0 / pub.precision**2),
        "num_qubits": n,
    }


def _pub_result(pub: EstimatorPub, plan: dict[str, Any], group_results, report) -> PubResult:
    n = plan["num_qubits"]
    shape = pub.parameter_values.shape
    rows = int(np.prod(shape, dtype=np.int64))
    expvals: dict[str, np.ndarray] = {"I" * n: np.ones(rows)}
    variances: dict[str, np.ndarray] = {"I" * n: np.zeros(rows)}
    for labels, result, circuit in zip(plan["members"], group_results, plan["circuits"]):
        creg = circuit.cregs[-1]
        index = [circuit.find_bit(b).index for b in creg]
        bits = np.unpackbits(result.memory, axis=-1)[..., ::-1][..., : result.num_bits]  # (rows, shots, clbits)
        bits = bits[..., index]  # bit q: qubit q
        for label in labels:
            qubits = [q for q in range(n) if label[n - 1 - q] != "I"]
            parity = bits[..., qubits].sum(axis=-1) % 2
            ev = 1.0 - 2.0 * parity.mean(axis=-1)
            expvals[label] = ev
            variances[label] = 1.0 - ev**2
    bshape = np.broadcast_shapes(pub.observables.shape, shape)
    param_index = np.broadcast_to(np.arange(rows).reshape(shape), bshape)
    obs = np.broadcast_to(np.array(pub.observables.tolist(), dtype=object).reshape(pub.observables.shape), bshape)
    evs = np.zeros(bshape, dtype=np.float64)
    stds = np.zeros(bshape, dtype=np.float64)
    shots = plan["shots"]
    for idx in np.ndindex(*bshape):
        m = param_index[idx]
        for label, coeff in obs[idx].items():
            evs[idx] += np.real(coeff) * expvals[label][m]
            stds[idx] += abs(coeff) * math.sqrt(variances[label][m] / shots)
    metadata: dict[str, Any] = {
        "target_precision": pub.precision,
        "shots": shots,
        "circuit_metadata": pub.circuit.metadata,
        "num_groups": len(plan["circuits"]),
        "groups": plan["members"],
    }
    if group_results:
        metadata.update(run_metadata(report, group_results, shots))
        metadata["qranks"] = np.stack([r.qranks.reshape(shape) for r in group_results])
    return PubResult(DataBin(evs=evs, stds=stds, shape=bshape), metadata=metadata)
