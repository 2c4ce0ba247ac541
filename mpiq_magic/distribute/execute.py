"""Run a partitioned circuit on the monitors: ``distribute(hc, circuit)``.

::

    from mpiq_magic import kernel as mpiq
    from mpiq_magic.distribute.execute import distribute

    hc = mpiq.init()                                    # under mpiexec -n 1+Q
    result = distribute(hc, circuit, shots=4000)        # collective; classical rank 0 gets the result
    if result is not None:
        print(result.summary(), result.counts, result.cuts)

Steps on classical rank ``root``: plan (partition -> feed-forward cuts -> block circuits, one per
variant, :mod:`.feedforward`), compile each block for its monitor's device, send them pinned to
their monitors on the one dispatch path (``monitor_engine.dispatch``), collect, stitch shot k of
every block (:mod:`.stitch`). The monitors serve the job (``monitor_engine.serve``).

Feed-forward cuts are exact and cost no sampling overhead, so they are tried first. Where no
partition runs with them and ``observables`` are given, the circuit is cut by quasi-probability
decomposition instead (:mod:`.qpd_dispatch`): the sampling overhead is reported (``progress``
event ``plan``) and checked against ``max_overhead`` before anything runs, and the result is a
:class:`~.qpd.QPDResult` (expectation values with standard errors, ``mode == "qpd"``) instead of
a :class:`DistributeResult` (samples of the distribution, ``mode == "feed-forward"``)::

    result = distribute(hc, circuit, observables=["ZZZZ", "XIIX"], max_overhead=100)
    if result is not None and result.mode == "qpd":
        print(result.expectation_values, result.standard_errors, result.overhead)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Sequence

import numpy as np
from qiskit import QuantumCircuit
from qiskit.primitives.containers import BitArray

from ..kernel.errors import ProcessFailure, ProcessFailures
from .errors import PartitionError
from .feedforward import FeedForwardError, FeedForwardPlan, plan_feedforward
from .qpd import QPDResult
from .layering import layer_circuit
from .stitch import counts_of, stitch

Progress = Callable[[str, dict], None]
#: Automatic partitions tried, in this order; the plan with the fewest circuits per shot wins.
CANDIDATES = ("contiguous", "static", "multilevel")
#: ``distribute(mode=...)``: feed-forward where it applies else QPD, only one, or only the other.
MODES = ("auto", "feed-forward", "qpd")


class DistributeRunError(ProcessFailures):
    """The distributed run failed on monitors: one ``[qrank j:stage] message`` line per failure."""


@dataclass(frozen=True)
class BlockRun:
    """One block: where it ran, how many variants, how long."""

    qrank: int
    device: str
    qubits: tuple[int, ...]
    clbits: int
    variants: int
    methods: tuple[str | None, ...]
    seconds: float  # execution time of its variants on the monitor, summed

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "qubits": list(self.qubits), "methods": list(self.methods)}


@dataclass
class DistributeResult:
    """Samples of the uncut circuit's Z-basis distribution and how they were obtained.

    ``bits``: packed shots over the circuit's clbits (qiskit ``BitArray`` layout, :meth:`bitarray`);
    ``cuts``: every gate between monitors with its ``mode`` (``frame``: Pauli frame propagated
    classically, ``variant``: the target block ran in both variants, ``local``: not a real cut);
    ``executions``: circuits run per shot (blocks x variants: the sampling cost; an uncut run is 1);
    ``timings``: seconds for plan, compile, dispatch (send), execute (collect window), reconstruct,
    total.
    """

    num_qubits: int
    num_clbits: int
    shots: int
    bits: np.ndarray
    partition: str
    blocks: list[BlockRun]
    cuts: list[dict[str, Any]]
    executions: int
    timings: dict[str, float]
    bit_rates: dict[int, float] = field(default_factory=dict)
    measured_all: bool = False
    compile_cache: dict[str, int] = field(default_factory=dict)
    payload_bytes: int = 0
    mode: str = "feed-forward"  # QPDResult.mode is "qpd"
    #: with ``distribute(observables=...)`` (Z-diagonal): their values and standard errors from
    #: the samples (:meth:`expectation`), in the order given; None without observables
    expectation_values: np.ndarray | None = None
    standard_errors: np.ndarray | None = None

    def bitarray(self) -> BitArray:
        return BitArray(self.bits, self.num_clbits)

    @cached_property
    def counts(self) -> dict[str, int]:
        """Sparse counts, qiskit bitstrings (clbit 0 rightmost), most frequent first."""
        return counts_of(self.bits, self.num_clbits)

    def probabilities(self) -> dict[str, float]:
        return {k: v / self.shots for k, v in self.counts.items()}

    def expectation(self, observables) -> tuple[np.ndarray, np.ndarray]:
        """Expectation values and standard errors of Z-diagonal observables from the samples.

        ``observables``: a Pauli string of ``I``/``Z`` over the clbits (clbit 0 rightmost; with
        every qubit measured in order, or no measurement in the input, clbit i is qubit i), a
        ``SparsePauliOp`` of such terms, or a list of them. The standard error is the sample
        standard deviation of the per-shot value over sqrt(shots): feed-forward samples the uncut
        distribution exactly, so there is no sampling overhead to add.

        Raises:
            UsageError: a non-diagonal term (X or Y: use ``distribute(..., mode="qpd")``), or the
                wrong number of letters.
        """
        from qiskit.quantum_info import SparsePauliOp

        from ..kernel.errors import UsageError

        items = [observables] if isinstance(observables, (str, SparsePauliOp)) else list(observables)
        bits = np.unpackbits(np.asarray(self.bits, dtype=np.uint8), axis=-1, bitorder="big")
        bits = bits[:, bits.shape[1] - self.num_clbits:][:, ::-1].astype(np.int64)  # column c = clbit c
        values, errors = [], []
        for i, item in enumerate(items):
            op = SparsePauliOp(item)
            if op.num_qubits != self.num_clbits:
                raise UsageError(f"Observable {i} ({item!r}) has {op.num_qubits} letters but the result has "
                                 f"{self.num_clbits} clbits; give one letter per clbit (clbit 0 rightmost).")
            if np.any(op.paulis.x):
                raise UsageError(f"Observable {i} ({item!r}) has X or Y terms, which Z-basis samples cannot "
                                 "estimate; run distribute(..., observables=..., mode='qpd') for those.")
            per_shot = np.zeros(bits.shape[0])
            for z, c in zip(op.paulis.z, op.coeffs):
                per_shot += float(np.real(c)) * (1 - 2 * (bits[:, z].sum(axis=1) & 1))
            values.append(float(per_shot.mean()))
            errors.append(float(per_shot.std(ddof=1) / math.sqrt(len(per_shot))) if len(per_shot) > 1 else 0.0)
        return np.array(values), np.array(errors)

    @property
    def feed_forward_cuts(self) -> list[dict[str, Any]]:
        return [c for c in self.cuts if c["mode"] in ("frame", "variant")]

    def summary(self) -> str:
        modes = {m: sum(c["mode"] == m for c in self.cuts) for m in ("frame", "variant", "local")}
        return (
            f"{self.num_qubits} qubits on {len(self.blocks)} monitor(s) ({self.partition} partition), "
            f"{self.shots} shots: {modes['frame']} Pauli-frame and {modes['variant']} two-variant "
            f"feed-forward cut(s), {self.executions} circuit(s) per shot, "
            f"{len(self.counts)} distinct outcome(s), total {self.timings.get('total', 0.0):.3f} s"
        )

    def to_dict(self, top: int | None = 64) -> dict[str, Any]:
        """JSON-ready; ``counts`` holds the ``top`` outcomes (all if None)."""
        items = list(self.counts.items())
        shown = items if top is None else items[:top]
        return {
            "qubits": self.num_qubits, "clbits": self.num_clbits, "shots": self.shots,
            "partition": self.partition, "executions": self.executions,
            "counts": dict(shown), "counts_truncated": len(shown) < len(items),
            "distinct_outcomes": len(items),
            "blocks": [b.to_dict() for b in self.blocks], "cuts": self.cuts,
            "bit_rates": {str(k): v for k, v in self.bit_rates.items()},
            "timings": dict(self.timings), "measured_all": self.measured_all,
            "compile_cache": self.compile_cache, "payload_bytes": self.payload_bytes, "mode": self.mode,
            "expectation_values": None if self.expectation_values is None else self.expectation_values.tolist(),
            "standard_errors": None if self.standard_errors is None else self.standard_errors.tolist(),
        }


# ----------------------------------------------------------------------------- planning
def plan_for_devices(
    circuit: QuantumCircuit,
    devices: Sequence[Any],
    *,
    partition: Any = None,
    monitors: int | None = None,
    max_variants: int = 16,
) -> tuple[FeedForwardPlan, str]:
    """The feed-forward plan of ``circuit`` over ``devices`` (DeviceSpecs in qrank order), and the
    name of the partition it uses.

    ``partition``: a ``PartitionResult``, ``qubit -> qrank`` (sequence or mapping), or None: try
    the :data:`CANDIDATES` with ``monitors`` monitors (default all) filled evenly, and keep the
    plan with the fewest circuits per shot.

    Raises:
        FeedForwardError: no partition gives feed-forward cuts (names the gate, layer and why).
        PartitionError: the circuit does not fit the monitors, or has control flow.
    """
    if partition is not None:
        name = getattr(partition, "method", "given")
        return plan_feedforward(circuit, partition, max_variants=max_variants), name
    measured_all = not any(inst.operation.name == "measure" for inst in circuit.data)
    if measured_all:
        circuit = circuit.measure_all(inplace=False)
    Q = len(devices) if monitors is None else int(monitors)
    if not 1 <= Q <= len(devices):
        raise PartitionError(f"monitors={monitors} must be between 1 and the {len(devices)} monitor(s) available.")
    layered = layer_circuit(circuit)
    live = [q for q, span in enumerate(layered.live) if span]
    caps = [min(d.num_qubits, math.ceil(len(live) / Q)) for d in devices[:Q]]
    if sum(caps) < len(live):
        raise PartitionError(
            f"The circuit uses {len(live)} qubits but {Q} monitor(s) hold {sum(caps)} (widths "
            f"{[d.num_qubits for d in devices[:Q]]}); use more or wider devices."
        )
    tried: list[tuple[str, Exception]] = []
    plans: list[tuple[tuple[int, int], str, FeedForwardPlan]] = []
    for name in CANDIDATES:
        try:
            if name == "contiguous":
                owner, start = {}, 0
                for p, cap in enumerate(caps):
                    for q in live[start:start + cap]:
                        owner[q] = p
                    start += cap
                part: Any = owner
            else:
                from .partition import partition_circuit

                part = partition_circuit(circuit, caps, method=name, restarts=1)
            plan = plan_feedforward(circuit, part, max_variants=max_variants, layered=layered)
        except (FeedForwardError, PartitionError) as exc:
            tried.append((name, exc))
            continue
        plans.append(((plan.executions, len(plan.cuts)), name, plan))
    if plans:
        _, name, plan = min(plans, key=lambda x: x[0])
        plan.measured_all = measured_all
        return plan, name
    first = tried[0][1]
    lines = "; ".join(f"{name} partition: {exc}" for name, exc in tried)
    raise FeedForwardError(
        f"No automatic partition of the circuit over {Q} monitor(s) runs with feed-forward cuts. {lines}",
        gate=getattr(first, "gate", None), layer=getattr(first, "layer", None),
        instruction=getattr(first, "instruction", None), qubits=getattr(first, "qubits", ()),
        reason=getattr(first, "reason", str(first)),
    )


# ----------------------------------------------------------------------------- execution
def distribute(
    hc,
    circuit: QuantumCircuit | None,
    *,
    shots: int = 1024,
    partition: Any = None,
    monitors: int | None = None,
    max_variants: int = 16,
    optimization_level: int = 1,
    seed_transpiler: int | None = 0,
    cache=None,
    root: int = 0,
    timeout: float | None = None,
    progress: Progress | None = None,
    observables: Any = None,
    max_overhead: float | None = 1000.0,
    mode: str = "auto",
    batches: int = 10,
) -> DistributeResult | QPDResult | None:
    """Run ``circuit`` across the monitors: exact feed-forward cuts where they apply, else
    quasi-probability cuts (expectation values of ``observables``).

    Collective over ``hc``: every process calls it (``circuit`` is only read on classical rank
    ``root``, which returns the :class:`DistributeResult`; every other process returns None). See
    :func:`plan_for_devices` for ``partition``, ``monitors`` and ``max_variants``. Each block is
    compiled for its monitor's device (``optimization_level``, ``seed_transpiler``, ``cache``: a
    ``monitor_engine.payload.CompileCache``) and every block variant runs ``shots`` shots.
    ``timeout`` bounds the run (default: the communicator's); ``progress(event, info)`` is called
    on the root (``plan``, ``compile``, ``executed``, ``reconstruct``).

    ``mode``: ``"auto"`` (feed-forward, else quasi-probability cutting when ``observables`` are
    given), ``"feed-forward"`` or ``"qpd"``. Quasi-probability cutting needs ``observables`` (a
    Pauli string, ``SparsePauliOp``, or a list of them); every subexperiment runs ``shots`` shots,
    ``batches`` batches of shots give the standard errors, and a sampling overhead above
    ``max_overhead`` (None: no limit) is refused before anything runs. It returns a
    :class:`~.qpd.QPDResult` (``mode == "qpd"``), feed-forward a :class:`DistributeResult`.

    Raises:
        FeedForwardError: (on the root) a cut is not a feed-forward cut and quasi-probability
            cutting was not asked for (no ``observables``, or ``mode="feed-forward"``); the
            monitors stand down.
        OverheadError: (on the root) quasi-probability cuts would need a sampling overhead above
            ``max_overhead``; nothing ran.
        PartitionError: (on the root) the circuit does not fit the monitors.
        DistributeRunError: (on the root) a block failed or did not answer on a monitor.
    """
    from monitor_engine.protocol import collective_job

    job = collective_job(hc, "distribute")
    limit = hc.timeout if timeout is None else float(timeout)
    if hc.is_quantum:
        from monitor_engine.serve import serve

        serve(hc, job=job, deadline=time.time() + limit)
        return None
    if hc.rank != root:
        return None
    qpd = dict(observables=observables, max_overhead=max_overhead, mode=mode, batches=batches)
    return _root(hc, job, circuit, shots, partition, monitors, max_variants, optimization_level,
                 seed_transpiler, cache, limit, progress or (lambda event, info: None), qpd)


def _root(hc, job, circuit, shots, partition, monitors, max_variants, level, seed, cache, limit, report, qpd):
    from monitor_engine.dispatch import Dispatcher, Share
    from monitor_engine.payload import CompileCache, compile_for

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    Q = hc.quantum_size
    dispatcher = Dispatcher(hc, namespace="distribute", cache=cache)
    shares: list = []
    keys: list[tuple[int, int]] = []
    try:
        if Q < 1:
            raise PartitionError("The hybrid communicator has no quantum monitor to run the blocks on.")
        if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1:
            raise PartitionError(f"shots must be a positive integer, got {shots!r}.")
        if not isinstance(circuit, QuantumCircuit):
            raise PartitionError(
                f"Expected a qiskit QuantumCircuit on classical rank {hc.rank}, got {type(circuit).__name__}."
            )
        if qpd["mode"] not in MODES:
            raise PartitionError(f"mode={qpd['mode']!r} is not one of {', '.join(MODES)}.")
        if qpd["mode"] == "qpd":
            return _root_qpd(hc, job, dispatcher, circuit, shots, partition, monitors, limit, report, qpd, t_start)
        ff_observables, why = clbit_observables(circuit, qpd["observables"])
        if why is not None:
            if qpd["mode"] == "feed-forward":
                raise PartitionError(f"{why} Feed-forward samples the Z basis; use mode='qpd' or 'auto'.")
            report("fallback", {"from": "feed-forward", "to": "qpd", "reason": why})
            return _root_qpd(hc, job, dispatcher, circuit, shots, partition, monitors, limit, report, qpd, t_start)
        try:
            plan, name = plan_for_devices(circuit, hc.devices, partition=partition, monitors=monitors,
                                          max_variants=max_variants)
        except FeedForwardError as exc:
            if qpd["mode"] == "feed-forward":
                raise
            if qpd["observables"] is None:
                exc.args = (f"{exc.args[0]} Pass observables= to distribute to fall back on quasi-probability "
                            "cutting (expectation values with standard errors instead of samples).",)
                raise
            report("fallback", {"from": "feed-forward", "to": "qpd", "reason": str(exc)})
            return _root_qpd(hc, job, dispatcher, circuit, shots, partition, monitors, limit, report, qpd, t_start)
        bad = [p for p in plan.blocks if not 0 <= p < Q]
        if bad:
            raise PartitionError(f"The partition uses qrank(s) {bad}, but the communicator has {Q} monitor(s).")
        timings["plan"] = time.perf_counter() - t_start
        report("plan", {"summary": plan.summary(), "partition": name})
        t0 = time.perf_counter()
        cache = CompileCache() if cache is None else cache
        misses0 = cache.misses
        for p, block in sorted(plan.blocks.items()):
            for v, circ in enumerate(block.circuits):
                payload = compile_for(hc.devices[p], circ, shots=int(shots), cache=cache,
                                      job_id=f"{job[0]}{job[1]}-q{p}-v{v}",
                                      optimization_level=level, seed_transpiler=seed)
                shares.append(Share(payload=payload, qrank=p))
                keys.append((p, v))
        timings["compile"] = time.perf_counter() - t0
        report("compile", {"circuits": len(shares), "compiled": cache.misses - misses0})
    except Exception as exc:
        dispatcher.abort(job, range(Q), f"{type(exc).__name__}: {exc}")
        raise

    def on_result(index, qrank, result, done, total):
        report("executed", {"qrank": qrank, "block": keys[index][0], "variant": keys[index][1],
                            "done": done, "total": total, "seconds": result.timings.get("execute")})

    outcome = dispatcher.run(shares, job=job, participants=range(Q), deadline=time.time() + limit,
                             on_result=on_result, failover=False)
    timings["dispatch"] = outcome.timings.send
    timings["execute"] = outcome.timings.collect
    failures = _failures(hc, outcome, keys)
    if failures:
        raise DistributeRunError(f"The distributed run of {len(shares)} block circuit(s) failed.", failures,
                                 partial=outcome)
    t0 = time.perf_counter()
    st = stitch(plan, {k: r.memory for k, r in zip(keys, outcome.results)})
    timings["reconstruct"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    report("reconstruct", {"shots": st.shots})
    blocks = []
    for p, block in sorted(plan.blocks.items()):
        mine = [r for k, r in zip(keys, outcome.results) if k[0] == p]
        blocks.append(BlockRun(
            qrank=p, device=hc.devices[p].name, qubits=block.qubits, clbits=block.num_clbits,
            variants=block.num_variants if block.runs else 0, methods=tuple(r.method for r in mine),
            seconds=float(sum(r.timings.get("execute", 0.0) for r in mine)),
        ))
    result = DistributeResult(
        num_qubits=plan.num_qubits, num_clbits=plan.num_clbits, shots=st.shots, bits=st.bits,
        partition=name, blocks=blocks, cuts=[c.to_dict() for c in plan.cuts], executions=plan.executions,
        timings=timings, bit_rates=st.bit_rates, measured_all=plan.measured_all,
        compile_cache={"compiled": cache.misses - misses0, "circuits": len(shares)},
        payload_bytes=sum(s.payload.nbytes for s in shares),
    )
    if ff_observables:
        result.expectation_values, result.standard_errors = result.expectation(ff_observables)
    return result


def clbit_observables(circuit: QuantumCircuit, observables) -> tuple[list | None, str | None]:
    """``observables`` over the circuit's qubits rewritten over the clbits that feed-forward
    samples (each qubit's last measurement; clbit i = qubit i when the circuit measures nothing),
    or ``(None, reason)`` where Z-basis samples cannot estimate them (an X or Y term, or a
    qubit of a term never measured). ``([], None)`` without observables."""
    from qiskit.quantum_info import SparsePauliOp

    from .qpd import observable_ops

    if observables is None:
        return [], None
    n = circuit.num_qubits
    ops = observable_ops(observables, n)
    measured = {}
    for inst in circuit.data:
        if inst.operation.name == "measure":
            measured[circuit.find_bit(inst.qubits[0]).index] = circuit.find_bit(inst.clbits[0]).index
    if not measured:
        measured, nbits = {q: q for q in range(n)}, n
    else:
        nbits = circuit.num_clbits
    out = []
    for i, (item, op) in enumerate(ops):
        if np.any(op.paulis.x):
            return None, f"Observable {i} ({item!r}) has X or Y terms, which Z-basis samples cannot estimate."
        labels = []
        for z in op.paulis.z:
            letters = ["I"] * nbits
            for q in np.flatnonzero(z):
                if int(q) not in measured:
                    return None, f"Observable {i} ({item!r}) needs qubit {int(q)}, which the circuit never measures."
                letters[measured[int(q)]] = "Z"
            labels.append("".join(reversed(letters)))
        out.append(SparsePauliOp(labels, op.coeffs))
    return out, None


def _root_qpd(hc, job, dispatcher, circuit, shots, partition, monitors, limit, report, qpd, t_start) -> QPDResult:
    """Quasi-probability cutting on the root; the caller aborts the job if this raises before
    the run (the monitors are still waiting for it)."""
    from .qpd import check_run_options
    from .qpd_dispatch import plan_qpd_for_devices, qpd_result, run_qpd_plan

    if qpd["observables"] is None:
        raise PartitionError("mode='qpd' needs observables= (quasi-probability cutting reconstructs expectation values).")
    check_run_options(shots, qpd["batches"])
    Q = hc.quantum_size
    used = Q if monitors is None else int(monitors)
    if not 1 <= used <= Q:
        raise PartitionError(f"monitors={monitors} must be between 1 and the {Q} monitor(s) available.")
    plan, name, tried = plan_qpd_for_devices(
        circuit, hc.devices[:used], qpd["observables"], partition=partition, max_overhead=qpd["max_overhead"])
    timings = {"plan": time.perf_counter() - t_start}
    report("plan", {"mode": "qpd", "summary": plan.summary(), "partition": name, "overhead": plan.overhead,
                    "subexperiments": plan.num_subexperiments, "families": plan.num_families, "candidates": tried})
    values, errors, info = run_qpd_plan(hc, dispatcher, job, plan, shots=int(shots), batches=int(qpd["batches"]),
                                        deadline=time.time() + limit, participants=range(Q), live=range(used),
                                        report=report)
    timings.update(info["timings"])
    timings["total"] = time.perf_counter() - t_start
    report("reconstruct", {"mode": "qpd", "subexperiments": plan.num_subexperiments})
    return qpd_result(plan, values, errors, info, shots=int(shots), batches=int(qpd["batches"]), name=name,
                      timings=timings)


def _failures(hc, outcome, keys) -> list[ProcessFailure]:
    return outcome.failures(hc.quantum_size, lambda i: f"block variant {keys[i]}")
