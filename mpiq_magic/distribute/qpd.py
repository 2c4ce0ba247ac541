"""Quasi-probability cuts through the cluster's ``SamplerV2`` (qiskit-addon-cutting).

Where feed-forward cuts do not apply (``feedforward.FeedForwardError``), a circuit still runs
on monitors narrower than itself by *quasi-probability decomposition* (QPD): every cut gate or
wire is replaced by a weighted sum of local operations, the pieces run as ordinary circuits, and
expectation values are reconstructed classically. The price is a sampling overhead (the product
of the cuts' gamma², 9 per cut CNOT, 16 per cut wire): the shots needed for one standard error
grow by that factor. It is computed and checked against ``max_overhead`` *before anything runs*.

::

    from mpiq_magic.distribute.qpd import cut_and_run, plan_cuts
    plan = plan_cuts(circuit, "ZZII", max_qubits=4)          # no sampler needed: overhead, cuts
    result = cut_and_run(sampler, circuit, [SparsePauliOp(...), "ZIIZ"], max_overhead=100)
    result.expectation_values, result.standard_errors, result.overhead, result.num_subexperiments

Cuts are chosen by ``find_cuts`` (widths: ``max_qubits``, default the widest monitor of the
sampler) or given as partition labels (a string such as ``"AABB"``, a ``qubit -> qrank``
sequence, or a static :class:`~mpiq_magic.distribute.PartitionResult`), which cut every gate
between partitions (``partition_problem``). The subexperiments are generated as parameterized
*families* (:mod:`.families`: one circuit per shape of the cut gates' basis instructions, the
instructions' angles as value rows; mid-circuit measurements deferred to ancillas where the
family still fits) and run as one ``sampler.run`` of one PUB per family, so the cluster compiles
each family once per device target and otherwise sends values. :mod:`.qpd_reconstruct`
combines them on the caller's side: qiskit-addon-cutting's ``reconstruct_expectation_values``,
vectorized over shots; the standard error is a batch-means estimate (the shots of every
subexperiment split into ``batches`` slices, each reconstructed alone, spread / sqrt(batches)).
``distribute(..., observables=...)`` uses all this as the fallback of feed-forward cuts
(:mod:`.qpd_dispatch`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from ..kernel.errors import UsageError
from .qpd_reconstruct import estimate, reconstruct, reconstruct_families

__all__ = [
    "OverheadError", "QPDCut", "QPDError", "QPDPlan", "QPDResult", "cut_and_run", "estimate", "plan_cuts",
    "reconstruct", "reconstruct_families",
]

ProgressCallback = Callable[[str, dict], None]
_LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class QPDError(UsageError):
    """A circuit, observable or option cannot be cut as asked; nothing was run."""


class OverheadError(QPDError):
    """The cuts' sampling overhead exceeds ``max_overhead``; nothing was run.

    ``overhead`` the product of the cuts' gamma², ``max_overhead`` the limit, ``cuts`` the cuts.
    """

    def __init__(self, message: str, *, overhead: float, max_overhead: float, cuts: Sequence["QPDCut"]):
        super().__init__(message)
        self.overhead = overhead
        self.max_overhead = max_overhead
        self.cuts = tuple(cuts)


@dataclass(frozen=True)
class QPDCut:
    """One cut: ``kind`` "gate" or "wire", the gate's name, the qubits of the original circuit,
    and the instruction index (in the circuit that was cut, measurements removed)."""

    kind: str
    gate: str
    qubits: tuple[int, ...]
    instruction: int


@dataclass(frozen=True)
class QPDPlan:
    """How a circuit is cut, before anything runs (:func:`plan_cuts`)."""

    overhead: float
    cuts: tuple[QPDCut, ...]
    partition_labels: str                  # one label per qubit of the cut circuit (wire cuts add qubits)
    subcircuit_widths: dict[str, int]
    num_subexperiments: int
    num_samples: float
    observables: tuple[Any, ...]           # the SparsePauliOps, one per observable asked for
    problem: Any = field(repr=False)       # qiskit-addon-cutting's PartitionedCuttingProblem
    subexperiments: dict = field(repr=False)
    coefficients: list = field(repr=False)
    paulis: Any = field(repr=False)        # the distinct Pauli terms reconstructed (PauliList)
    seconds: float = 0.0
    families: Any = field(default=None, repr=False)  # families.FamilySet: what runs
    num_families: int = 0                  # parameterized circuits (compiled once per device each)

    def summary(self) -> str:
        widths = ", ".join(f"{k}: {v}" for k, v in self.subcircuit_widths.items())
        return (
            f"{len(self.cuts)} cut(s) ({sum(c.kind == 'gate' for c in self.cuts)} gate, "
            f"{sum(c.kind == 'wire' for c in self.cuts)} wire), sampling overhead {self.overhead:g}, "
            f"{self.num_subexperiments} subexperiment(s) in {self.num_families} parameterized famil"
            f"{'y' if self.num_families == 1 else 'ies'}, subcircuit widths {{{widths}}}."
        )


@dataclass(frozen=True)
class QPDResult:
    """Reconstructed expectation values of a cut circuit (:func:`cut_and_run`).

    ``expectation_values[i]`` / ``standard_errors[i]`` belong to the i-th observable;
    ``overhead`` is the sampling overhead (product of gamma²) that was accepted.
    """

    expectation_values: np.ndarray
    standard_errors: np.ndarray
    overhead: float
    num_subexperiments: int
    cuts: tuple[QPDCut, ...]
    partition_labels: str
    subcircuit_widths: dict[str, int]
    shots: int
    num_samples: float
    batches: int
    timings: dict[str, float]
    qranks: dict[str, list[int]] = field(default_factory=dict)  # monitors that ran each partition
    observables: tuple[str, ...] = ()  # the observables, as text, in the order of the values
    num_families: int = 0  # parameterized circuits the subexperiments shared
    deferred: int = 0      # families whose mid-circuit measurements were deferred to ancillas
    transfer: dict[str, Any] = field(default_factory=dict)  # compiles, payloads sent, bytes (cluster)
    partition: str = ""    # which cut candidate ran (distribute: "static", "find_cuts", "given")
    mode: str = "qpd"      # how the circuit was cut (DistributeResult says "feed-forward")

    @property
    def value(self) -> float:
        """The single expectation value, when one observable was asked for."""
        if len(self.expectation_values) != 1:
            raise QPDError(
                f"This result holds {len(self.expectation_values)} expectation values; index "
                "expectation_values instead of reading .value."
            )
        return float(self.expectation_values[0])

    def to_dict(self, top: int | None = None) -> dict:
        """JSON-ready (``top`` is accepted for symmetry with ``DistributeResult.to_dict``)."""
        out = asdict(self)
        out["expectation_values"] = [float(v) for v in self.expectation_values]
        out["standard_errors"] = [float(v) for v in self.standard_errors]
        out["num_samples"] = None if math.isinf(self.num_samples) else self.num_samples
        out["cuts"] = [asdict(c) | {"qubits": list(c.qubits)} for c in self.cuts]
        return out

    def summary(self) -> str:
        vals = ", ".join(f"{v:.4f} ± {s:.4f}" for v, s in zip(self.expectation_values, self.standard_errors))
        return (
            f"quasi-probability cutting: {len(self.cuts)} cut(s), overhead {self.overhead:g}, "
            f"{self.num_subexperiments} subexperiments ({self.num_families} families) x {self.shots} shots: {vals}"
        )


# ----------------------------------------------------------------------------- planning
def observable_ops(observables, n: int) -> list[tuple[Any, Any]]:
    """``(item, SparsePauliOp)`` for each observable given (a Pauli string, ``Pauli``,
    ``SparsePauliOp``, ``PauliList`` or a list of them) over ``n`` qubits; QPDError naming the
    one that is not an observable or has the wrong width."""
    from qiskit.quantum_info import Pauli, PauliList, SparsePauliOp

    items = [observables] if isinstance(observables, (str, Pauli, SparsePauliOp)) else list(observables or [])
    if isinstance(observables, PauliList):
        items = list(observables)
    out = []
    for i, item in enumerate(items):
        try:
            op = SparsePauliOp(item)
        except Exception as exc:  # noqa: BLE001 - reported with the item
            raise QPDError(f"Observable {i} ({item!r}) is not a Pauli string or SparsePauliOp: {exc}.") from None
        if op.num_qubits != n:
            raise QPDError(
                f"Observable {i} acts on {op.num_qubits} qubits but the circuit has {n}; give one Pauli "
                "letter per qubit (qubit 0 rightmost)."
            )
        out.append((item, op))
    return out


def _observables(observables, n: int):
    from qiskit.quantum_info import PauliList

    ops = [op.simplify(atol=0) for _, op in observable_ops(observables, n)]
    if not ops:
        raise QPDError("cut_and_run needs at least one observable (a Pauli string or a SparsePauliOp).")
    seen: dict[str, int] = {}
    for op in ops:
        for p in op.paulis:
            seen.setdefault(p.to_label(), len(seen))
    return tuple(ops), PauliList(list(seen))


def _prepare(circuit):
    from qiskit import QuantumCircuit

    if not isinstance(circuit, QuantumCircuit):
        raise QPDError(f"cut_and_run takes a qiskit QuantumCircuit, got {type(circuit).__name__}.")
    qc = circuit.remove_final_measurements(inplace=False)
    for _ in range(4):
        if all(len(inst.qubits) <= 2 for inst in qc.data):
            break
        qc = qc.decompose(gates_to_decompose=[inst.operation.name for inst in qc.data if len(inst.qubits) > 2])
    for k, inst in enumerate(qc.data):
        name = inst.operation.name
        if name in ("measure", "reset") or getattr(inst.operation, "blocks", None):
            raise QPDError(
                f"Instruction {k} ('{name}') is a mid-circuit {name} or control flow; quasi-probability "
                "cutting reconstructs expectation values of unitary circuits only (final measurements "
                "are removed)."
            )
        if len(inst.qubits) > 2:
            raise QPDError(f"Instruction {k} ('{name}') acts on {len(inst.qubits)} qubits and does not decompose.")
    qc.remove_final_measurements()  # idempotent; clears empty cregs
    return qc


def _labels(partition, n: int) -> list[Hashable]:
    if isinstance(partition, str):
        labels = list(partition)
    elif hasattr(partition, "assignment"):  # PartitionResult
        rows = [list(row) for row in partition.assignment]
        labels = []
        for q in range(n):
            ranks = {row[q] for row in rows if q < len(row) and row[q] >= 0}
            if len(ranks) > 1:
                raise QPDError(
                    f"Qubit {q} moves between qranks {sorted(ranks)} in this partition; quasi-probability "
                    "cutting needs a static partition (method='static', or a qubit -> qrank list)."
                )
            labels.append(ranks.pop() if ranks else 0)
    else:
        labels = list(partition.values()) if isinstance(partition, dict) else list(partition)
        if isinstance(partition, dict) and sorted(partition) != list(range(n)):
            raise QPDError(f"partition maps qubits {sorted(partition)} but the circuit has qubits 0..{n - 1}.")
    if len(labels) != n:
        raise QPDError(f"partition has {len(labels)} label(s) but the circuit has {n} qubits; give one per qubit.")
    return labels


def _overhead(bases) -> float:
    out = 1.0
    for basis in bases:
        out *= basis.overhead
    return float(out)


def plan_cuts(
    circuit,
    observables,
    *,
    max_qubits: int | None = None,
    partition: Any = None,
    max_overhead: float | None = 1000.0,
    num_samples: float = np.inf,
    seed: int | None = 111,
    max_backjumps: int | None = 10_000,
    generate: bool = True,
    defer_width: int | None = None,
    addon_subexperiments: bool = False,
) -> QPDPlan:
    """Cut ``circuit`` for ``observables`` without running anything.

    ``partition`` (labels) or ``max_qubits`` (``find_cuts`` with
    ``DeviceConstraints(qubits_per_subcircuit=max_qubits)``) decides the cuts. The subexperiments
    are generated only when the overhead is within ``max_overhead`` (None: no limit) and
    ``generate`` is true, as parameterized families (:mod:`.families`; ``defer_width``: defer
    mid-circuit measurements to ancillas where the family stays within that many qubits) and, with
    ``addon_subexperiments``, also as the addon's concrete circuits (``plan.subexperiments``).

    Raises:
        QPDError: not a circuit, mid-circuit measurements, bad observables or partition, neither
            ``partition`` nor ``max_qubits`` given.
        OverheadError: the sampling overhead exceeds ``max_overhead`` (names both numbers).
    """
    from qiskit_addon_cutting import (
        cut_wires, expand_observables, find_cuts, generate_cutting_experiments, partition_problem,
    )
    from qiskit_addon_cutting.automated_cut_finding import DeviceConstraints, OptimizationParameters

    t0 = time.perf_counter()
    qc = _prepare(circuit)
    n = qc.num_qubits
    ops, paulis = _observables(observables, n)
    if not (num_samples == np.inf or (isinstance(num_samples, (int, float)) and num_samples >= 1)):
        raise QPDError(f"num_samples must be >= 1 or numpy.inf (exact weights), got {num_samples!r}.")
    cuts: list[QPDCut] = []
    if partition is not None:
        labels = _labels(partition, n)
        for k, inst in enumerate(qc.data):
            qs = tuple(qc.find_bit(q).index for q in inst.qubits)
            if len(qs) == 2 and labels[qs[0]] != labels[qs[1]]:
                cuts.append(QPDCut("gate", inst.operation.name, qs, k))
        text = [str(x) for x in labels]
        names = {x: _LABELS[i % 26] + (str(i // 26) if i >= 26 else "") for i, x in enumerate(dict.fromkeys(text))}
        label_str = "".join(names[x][0] for x in text) if len(names) <= 26 else ",".join(names[x] for x in text)
        try:
            problem = partition_problem(circuit=qc, partition_labels=[names[x] for x in text], observables=paulis)
        except Exception as exc:  # noqa: BLE001 - the addon's ValueError, with context
            raise QPDError(f"qiskit-addon-cutting cannot partition this circuit with labels {label_str!r}: {exc}") from None
    else:
        if max_qubits is None:
            raise QPDError("Give max_qubits (the widest subcircuit allowed) or partition labels to cut a circuit.")
        if isinstance(max_qubits, bool) or not isinstance(max_qubits, (int, np.integer)) or max_qubits < 1:
            raise QPDError(f"max_qubits must be a positive integer, got {max_qubits!r}.")
        cut_qc, meta = find_cuts(
            qc, OptimizationParameters(seed=seed, max_backjumps=max_backjumps),
            DeviceConstraints(qubits_per_subcircuit=int(max_qubits)),
        )
        for kind, index in meta["cuts"]:
            inst = cut_qc.data[index]
            qs = tuple(cut_qc.find_bit(q).index for q in inst.qubits)
            if kind == "Gate Cut":
                orig = qc.data[index - sum(1 for k2, i2 in meta["cuts"] if k2 == "Wire Cut" and i2 < index)]
                cuts.append(QPDCut("gate", orig.operation.name, qs, index))
            else:
                cuts.append(QPDCut("wire", "cut_wire", qs, index))
        with_ancilla = cut_wires(cut_qc)
        expanded = expand_observables(paulis, qc, with_ancilla)
        problem = partition_problem(circuit=with_ancilla, observables=expanded)
        try:  # which subcircuit each qubit (wire-cut ancillas included) went to; informative only
            from qiskit_addon_cutting.qpd.instructions import TwoQubitQPDGate
            from qiskit_addon_cutting.utils.transforms import _partition_labels_from_circuit

            found = _partition_labels_from_circuit(
                with_ancilla, ignore=lambda inst: isinstance(inst.operation, TwoQubitQPDGate))
            label_str = "".join("-" if x is None else _LABELS[int(x) % 26] for x in found)
        except Exception:  # noqa: BLE001
            label_str = ""
    overhead = _overhead(problem.bases)
    widths = {str(k): v.num_qubits for k, v in problem.subcircuits.items()}
    if max_overhead is not None and overhead > max_overhead:
        raise OverheadError(
            f"Cutting this {n}-qubit circuit needs {len(cuts)} cut(s) ("
            + ", ".join(f"{c.kind} {c.gate} on qubits {list(c.qubits)}" for c in cuts[:6])
            + (", ..." if len(cuts) > 6 else "")
            + f") with a sampling overhead of {overhead:g}, above max_overhead={max_overhead:g}; nothing was run. "
            f"Raise max_overhead (the shots for one standard error grow {overhead:g}-fold), use wider monitors, "
            "or a partition with fewer gates between partitions.",
            overhead=overhead, max_overhead=float(max_overhead), cuts=cuts,
        )
    subexperiments, coefficients, families = {}, [], None
    count = 0
    if generate:
        from .families import build_families

        families = build_families(problem, num_samples=num_samples, defer_width=defer_width)
        coefficients = families.coefficients
        count = families.num_subexperiments
        if addon_subexperiments:
            subexperiments, coefficients = generate_cutting_experiments(
                circuits=problem.subcircuits, observables=problem.subobservables, num_samples=num_samples)
    return QPDPlan(
        overhead=overhead, cuts=tuple(cuts), partition_labels=label_str, subcircuit_widths=widths,
        num_subexperiments=count, num_samples=float(num_samples), observables=ops, problem=problem,
        subexperiments=subexperiments, coefficients=coefficients, paulis=paulis,
        seconds=time.perf_counter() - t0, families=families,
        num_families=len(families.families) if families is not None else 0,
    )


# ----------------------------------------------------------------------------- running
def _widths(sampler) -> list[int]:
    transport = getattr(sampler, "transport", None)
    devices = getattr(transport, "devices", None) if transport is not None else None
    return [int(d.num_qubits) for d in devices or ()]


def _widest(sampler) -> int | None:
    return max(_widths(sampler), default=None)


def _narrowest(sampler) -> int | None:
    return min(_widths(sampler), default=None)


def check_run_options(shots, batches) -> None:
    """Raises QPDError for shots or batches a run cannot use."""
    if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1:
        raise QPDError(f"shots must be a positive integer, got {shots!r}.")
    if isinstance(batches, bool) or not isinstance(batches, (int, np.integer)) or not 2 <= batches <= shots:
        raise QPDError(f"batches must be an integer between 2 and shots ({shots}), got {batches!r}.")


def observable_texts(plan: QPDPlan) -> tuple[str, ...]:
    out = []
    for op in plan.observables:
        terms = [f"{c.real:+g}*{p.to_label()}" if abs(c - 1) > 1e-12 else p.to_label()
                 for p, c in zip(op.paulis, op.coeffs)]
        out.append(" ".join(terms))
    return tuple(out)


def cut_and_run(
    sampler,
    circuit,
    observables,
    *,
    max_qubits: int | None = None,
    partition: Any = None,
    max_overhead: float | None = 1000.0,
    shots: int = 4096,
    num_samples: float = np.inf,
    batches: int = 10,
    seed: int | None = 111,
    defer: bool | None = None,
    progress: ProgressCallback | None = None,
) -> QPDResult:
    """Cut ``circuit``, run the subexperiments through ``sampler`` (any Qiskit ``SamplerV2``; the
    cluster's spreads the rows of every family over the monitors), reconstruct the expectation
    values of ``observables`` (a Pauli string, ``SparsePauliOp``, or a list of them).

    Without ``partition`` and ``max_qubits`` the cuts fit the sampler's widest monitor. The
    plan (overhead, cuts, subexperiments) is reported to ``progress("planned", {...})`` and
    checked against ``max_overhead`` before any circuit runs. The subexperiments run as one
    ``sampler.run`` of one PUB per family (a parameterized circuit and its value rows).
    ``defer``: replace mid-circuit measurements by ancillas measured at the end (None: where
    the widened family still fits the sampler's narrowest device; a sampler that names no
    devices is taken to be a simulator without a width limit).

    Raises:
        QPDError: bad circuit, observables, partition or options (see :func:`plan_cuts`).
        OverheadError: the sampling overhead exceeds ``max_overhead``; nothing ran.
    """
    check_run_options(shots, batches)
    if partition is None and max_qubits is None:
        max_qubits = _widest(sampler)
        if max_qubits is None:
            raise QPDError(
                f"This sampler ({type(sampler).__name__}) does not say how wide its devices are; give "
                "max_qubits or partition labels."
            )
    if defer is None:
        defer_width = _narrowest(sampler)
        defer_width = 1 << 30 if defer_width is None else defer_width
    else:
        defer_width = (1 << 30) if defer else None
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    plan = plan_cuts(circuit, observables, max_qubits=max_qubits, partition=partition,
                     max_overhead=max_overhead, num_samples=num_samples, seed=seed, defer_width=defer_width)
    timings["plan"] = time.perf_counter() - t0
    if progress is not None:
        progress("planned", {"overhead": plan.overhead, "cuts": len(plan.cuts),
                             "subexperiments": plan.num_subexperiments, "families": plan.num_families,
                             "widths": plan.subcircuit_widths, "summary": plan.summary()})
    t1 = time.perf_counter()
    fams = plan.families.families
    result = sampler.run([(f.circuit, f.values) for f in fams], shots=int(shots)).result()
    arrays, qranks, transfer = [], {}, {}
    for fam, pub in zip(fams, result):
        arrays.append({name: np.asarray(getattr(pub.data, name).array) for name in ("observable_measurements", "qpd_measurements")})
        q = pub.metadata.get("qranks") if hasattr(pub, "metadata") else None
        if q is not None:
            qranks.setdefault(str(fam.label), set()).update(int(x) for x in np.ravel(q))
        if not transfer and hasattr(pub, "metadata") and "bytes" in pub.metadata:
            transfer = {"compile_cache": dict(pub.metadata.get("compile_cache", {})),
                        "payloads_sent": pub.metadata.get("payloads_sent"), "bytes": dict(pub.metadata["bytes"])}
    if progress is not None:
        progress("executed", {"families": len(fams), "subexperiments": plan.num_subexperiments})
    timings["run"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    values, errors = estimate(plan, arrays, int(shots), int(batches))
    timings["reconstruct"] = time.perf_counter() - t2
    timings["total"] = time.perf_counter() - t0
    return QPDResult(
        expectation_values=values, standard_errors=errors, overhead=plan.overhead,
        num_subexperiments=plan.num_subexperiments, cuts=plan.cuts, partition_labels=plan.partition_labels,
        subcircuit_widths=plan.subcircuit_widths, shots=int(shots), num_samples=plan.num_samples,
        batches=int(batches), timings=timings, qranks={k: sorted(v) for k, v in qranks.items()},
        observables=observable_texts(plan), num_families=plan.num_families,
        deferred=sum(f.deferred > 0 for f in fams), transfer=transfer,
    )
