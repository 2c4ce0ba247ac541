"""Noise-aware distributed QAOA for MaxCut (seed 002, Algorithm 1) on the hybrid cluster.

:func:`distributed_qaoa` splits a graph that exceeds one device by balanced min-cut, builds one
QAOA circuit per part, places it on ``k`` noise-aware regions of its device (``mode="aware"``)
or leaves the layout to the transpiler (``mode="naive"``), optimizes every part's angles with
its own COBYLA on the classical rank while all parts run in parallel on the monitors (one
``SamplerV2.run`` per optimizer step; after the first, only parameter values travel), samples
the optimized circuits, pools the regions' counts, and merges the parts' best cuts.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import networkx as nx
import numpy as np

from ..kernel.errors import UsageError
from .circuits import qaoa_circuit, region_circuit
from .execute import Job, LocalExecutor, SamplerExecutor
from .graph import BRUTE_FORCE_MAX, as_graph, brute_force_maxcut, cut_table, cut_value
from .merge import merge_solutions
from .optimize import OptimizerTrace
from .plan import PartPlan
from .regions import RegionSet, device_errors, find_regions, usable_graph
from .split import Split, split_graph

MODES = ("aware", "naive")
#: Default largest part (qubits per region): keeps k regions of a part simulable on 2 cores.
DEFAULT_MAX_PART = 8


@dataclass
class SubproblemResult:
    """One part: where it ran, its optimized angles, what its samples gave."""

    index: int
    nodes: tuple[int, ...]
    qrank: int
    device: str
    regions: tuple[tuple[int, ...], ...]  # physical qubits of each region (aware mode)
    region_fidelity: tuple[float, ...]
    template_edges: tuple[tuple[int, int], ...]
    params: dict[str, float]
    energy_history: list[float]  # expected cut per evaluation
    evaluations: int
    best_assignment: dict[int, int]  # global node -> side, the best sampled cut of the part
    best_cut: float
    expected_cut: float
    optimum: float | None  # the part's exact maximum cut (brute force)
    p_optimal: float | None  # fraction of final samples that are optimal cuts of the part
    samples: int
    #: the best distinct sampled cuts of the part (global node -> side), best first; the merge
    #: may pick any of them
    candidates: list[dict[int, int]] = field(default_factory=list, repr=False)


@dataclass
class QAOAResult:
    """The whole run: the merged cut, the parts, timings and what went over the wire."""

    mode: str
    p: int
    eta: float | None
    k: int
    assignment: dict[int, int]
    cut: float
    concatenated_cut: float
    oriented_cut: float
    split: Split
    subproblems: list[SubproblemResult]
    timings: dict[str, float]
    calls: int
    wire: list[dict[str, Any]] = field(default_factory=list)
    optimum: float | None = None
    optimum_method: str | None = None
    devices: list[str] = field(default_factory=list)
    merge: str = "exact"
    orientation: Any = None  # the merge QAOA's OrientationResult (merge="qaoa")

    @property
    def ratio(self) -> float | None:
        """``cut / optimum`` when the optimum (or a classical baseline) is known."""
        return None if not self.optimum else self.cut / self.optimum

    @property
    def p_optimal(self) -> float | None:
        """Mean over parts of the probability of sampling an optimal cut of the part."""
        vals = [s.p_optimal for s in self.subproblems if s.p_optimal is not None]
        return float(np.mean(vals)) if vals else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (node keys as strings)."""
        d = asdict(self)
        d["assignment"] = {str(n): s for n, s in self.assignment.items()}
        for s in d["subproblems"]:
            s.pop("candidates", None)
            s["best_assignment"] = {str(n): v for n, v in s["best_assignment"].items()}
        d["split"] = {"parts": [list(p) for p in self.split.parts], "cut_edges": [list(e) for e in self.split.cut_edges],
                      "cut_weight": self.split.cut_weight, "method": self.split.method}
        d["ratio"] = self.ratio
        d["p_optimal"] = self.p_optimal
        return d


def executor_for(target: Any, *, seed: int | None = None):
    """An executor for ``target``: a ``SamplerV2`` of mpiq_magic, a HybridCluster, a hybrid
    communicator on classical rank 0, a list of ``DeviceSpec`` (in-process), or an executor.

    Raises:
        UsageError: none of those.
    """
    if hasattr(target, "run") and hasattr(target, "devices") and not hasattr(target, "transport") \
            and not hasattr(target, "engines") and not hasattr(target, "is_classical"):
        return target, None
    if hasattr(target, "transport") and hasattr(target, "run"):
        return SamplerExecutor(target), None
    if hasattr(target, "engines") and hasattr(target, "sampler"):
        return SamplerExecutor(target.sampler(seed=seed)), None
    if hasattr(target, "is_classical") and hasattr(target, "devices"):
        from ..primitives import SamplerV2

        sampler = SamplerV2(target, seed=seed)
        return SamplerExecutor(sampler), sampler
    if isinstance(target, (list, tuple)) and target and all(hasattr(d, "num_qubits") for d in target):
        return LocalExecutor(target, seed=seed), None
    raise UsageError(
        "distributed_qaoa runs on a SamplerV2, a HybridCluster, a hybrid communicator on classical "
        f"rank 0, or a list of DeviceSpec (in-process); got {type(target).__name__}."
    )


def distributed_qaoa(
    graph: Any,
    target: Any,
    *,
    p: int = 1,
    eta: float | None = 0.05,
    k: int = 2,
    mode: str = "aware",
    max_part: int | None = None,
    shots: int = 512,
    final_shots: int = 2048,
    maxiter: int = 40,
    grid: int = 4,
    seed: int = 0,
    local_search: str = "boundary",
    candidates: int = 16,
    pack: bool = False,
    optimum: float | None = None,
    angles: Sequence[float] | dict[int, Sequence[float]] | None = None,
    merge: str = "exact",
    on_iteration: Callable[[int, dict[int, float]], None] | None = None,
    on_plan: Callable[[Split, list[PartPlan]], None] | None = None,
) -> QAOAResult:
    """Run Algorithm 1 of seed 002 on ``graph`` with the monitors of ``target``.

    Args:
        graph: anything :func:`~mpiq_magic.qaoa.graph.as_graph` reads.
        target: see :func:`executor_for`.
        p: QAOA depth. eta: error threshold for qubits (readout) and couplings (two-qubit gate),
            aware mode only; None keeps all. k: regions (copies) per part.
        mode: ``"aware"`` (threshold filter + regions) or ``"naive"`` (logical circuit, the
            transpiler's default layout, one copy).
        max_part: most nodes per part (default: min(8, what every device holds)).
        shots: per region and evaluation; final_shots: per region for the final samples.
        maxiter: COBYLA iterations per part; grid: p=1 start grid of grid x grid angle pairs
            (one batch); seed: sampler, splitting and transpiler seeds.
        local_search: ``"boundary"`` or ``"all"`` greedy flips after merging.
        candidates: distinct sampled cuts per part the merge may choose from (1: the best only).
        pack: run a part's ``k`` regions as one device-wide circuit (as on hardware: ``k``
            samples per shot). Default False: one circuit per region, pinned to the same monitor
            (the same samples for disjoint regions and a noise model without crosstalk, but a
            simulator pays ``k * 2**n`` instead of ``2**(k*n)``).
        optimum: the known optimum, for ``ratio`` (default: brute force up to 22 nodes).
        angles: ``[gamma_1..gamma_p, beta_1..beta_p]`` for every part, or ``{part: [...]}``: no
            optimization, only the final samples (compares layouts at equal angles).
        merge: how the parts' orientations are chosen: ``"exact"`` (enumerated) or ``"qaoa"``
            (QAOA-in-QAOA: a QAOA on the graph of parts, run on qrank 0; see :mod:`.inqaoa`).
        on_iteration: called ``(step, {part: expected cut})`` after every batch.
        on_plan: called ``(split, [PartPlan, ...])`` once, before the first circuit runs.

    Raises:
        UsageError: bad arguments, or a part that fits no device (see ``find_regions``).
    """
    if mode not in MODES:
        raise UsageError(f"mode must be one of {MODES}, got {mode!r}.")
    if not isinstance(p, int) or p < 1:
        raise UsageError(f"p must be an integer >= 1, got {p!r}.")
    if merge not in ("exact", "qaoa"):
        raise UsageError(f"merge must be 'exact' or 'qaoa', got {merge!r}.")
    if local_search not in ("boundary", "all"):
        raise UsageError(f"local_search must be 'boundary' or 'all', got {local_search!r}.")
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    graph = as_graph(graph)
    executor, owned = executor_for(target, seed=seed)
    try:
        devices = list(executor.devices)
        if not devices:
            raise UsageError("There are no monitors to run on.")
        capacity = _capacity(devices, mode, eta)
        limit = min(capacity) if max_part is None else max_part
        if max_part is None:
            limit = min(limit, DEFAULT_MAX_PART)
        if limit < 1:
            raise UsageError(f"No device has a usable qubit at eta={eta}; capacities {capacity}.")
        t = time.perf_counter()
        # Algorithm 1: split when the graph exceeds one part; otherwise one part on one device
        split = split_graph(graph, limit, seed=seed)
        timings["split"] = time.perf_counter() - t

        t = time.perf_counter()
        subs = _prepare(graph, split, devices, mode, eta, k, p, seed, pack)
        timings["prepare"] = time.perf_counter() - t
        if on_plan is not None:
            on_plan(split, [_plan(s) for s in subs])

        t = time.perf_counter()
        wire: list[dict[str, Any]] = []
        if angles is None:
            traces = _optimize(subs, executor, shots, maxiter, grid, p, wire, on_iteration)
        else:
            traces = {s.index: OptimizerTrace(_angles(angles, s.index, p), math.nan, 0, [])
                      for s in subs if s.circuit is not None}
        timings["optimize"] = time.perf_counter() - t

        t = time.perf_counter()
        results = _final(subs, traces, executor, final_shots, wire, candidates)
        timings["final"] = time.perf_counter() - t

        t = time.perf_counter()
        orientation: list = []
        orient = None
        if merge == "qaoa":
            from .inqaoa import qaoa_orientation

            def orient(same, diff):
                orientation.append(qaoa_orientation(executor, same, diff, p=p, shots=shots, maxiter=maxiter))
                _record(executor, wire, "merge")
                return orientation[-1].flips
        merged = merge_solutions(graph, split.parts, [r.best_assignment for r in results], local_search=local_search,
                                 candidates=[r.candidates for r in results], orient=orient)
        timings["merge"] = time.perf_counter() - t
    finally:
        if owned is not None:
            owned.close(shutdown=False)
    method = "given" if optimum is not None else None
    if optimum is None and graph.number_of_nodes() <= 22:
        optimum, method = brute_force_maxcut(graph)[0], "brute force"
    timings["total"] = time.perf_counter() - t_start
    return QAOAResult(
        mode=mode, p=p, eta=eta if mode == "aware" else None, k=k if mode == "aware" else 1,
        assignment=merged.assignment, cut=merged.cut, concatenated_cut=merged.concatenated_cut,
        oriented_cut=merged.oriented_cut, split=split, subproblems=results, timings=timings,
        calls=getattr(executor, "calls", 0), wire=wire, optimum=optimum, optimum_method=method,
        devices=[d.name for d in devices], merge=merge, orientation=orientation[0] if orientation else None,
    )


def _angles(angles, part: int, p: int) -> np.ndarray:
    if isinstance(angles, dict):
        if part not in angles:
            raise UsageError(f"angles has no entry for part {part}; it has parts {sorted(angles)}.")
        angles = angles[part]
    x = np.asarray(angles, dtype=float)
    if x.shape != (2 * p,):
        raise UsageError(f"angles must be {2 * p} numbers (gamma_1..gamma_p, beta_1..beta_p) for p={p}, "
                         f"got {np.ravel(x).tolist()}.")
    return x


def _capacity(devices, mode, eta) -> list[int]:
    out = []
    for d in devices:
        if mode == "naive":
            out.append(d.num_qubits)
            continue
        usable = usable_graph(device_errors(d), eta).graph
        out.append(max((len(c) for c in nx.connected_components(usable)), default=0))
    return out


@dataclass
class _Sub:
    index: int
    nodes: tuple[int, ...]
    local: nx.Graph
    qrank: int
    device: Any
    circuit: Any = None
    circuits: list = field(default_factory=list)  # what runs: the packed circuit, or one per region
    regions: RegionSet | None = None
    table: np.ndarray | None = None
    names: list[str] = field(default_factory=list)


def _prepare(graph, split, devices, mode, eta, k, p, seed, pack) -> list[_Sub]:
    subs = []
    for i, nodes in enumerate(split.parts):
        qrank = i % len(devices)
        local = nx.convert_node_labels_to_integers(graph.subgraph(nodes), ordering="sorted")
        sub = _Sub(i, tuple(nodes), local, qrank, devices[qrank])
        if local.number_of_edges() > 0:
            logical = qaoa_circuit(local, p, name=f"qaoa-part{i}")
            if mode == "aware":
                sub.regions = find_regions(sub.device, len(nodes), k, eta=eta)
                sub.circuit = region_circuit(logical, sub.regions, sub.device.num_qubits,
                                             sub.device.basis_gates, seed=seed)
                sub.circuits = [sub.circuit] if pack else [
                    region_circuit(logical, sub.regions, sub.device.num_qubits, sub.device.basis_gates,
                                   seed=seed, only=r) for r in range(sub.regions.k)]
            else:
                sub.circuit = logical
                sub.circuits = [logical]
            sub.names = [prm.name for prm in sub.circuit.parameters]
            sub.table = cut_table(local) if len(nodes) <= BRUTE_FORCE_MAX else None
        subs.append(sub)
    return subs


def _plan(s: _Sub) -> PartPlan:
    regions = s.regions.regions if s.regions else ()
    return PartPlan(s.index, s.nodes, s.qrank, s.device.name, tuple(r.qubits for r in regions),
                    tuple(r.fidelity for r in regions), s.regions.template_edges if s.regions else (),
                    float(s.table.max()) if s.table is not None else None, s.circuit is not None)


def _row(sub: _Sub, x: np.ndarray, p: int) -> np.ndarray:
    by_name = {f"gamma[{l}]": x[l] for l in range(p)} | {f"beta[{l}]": x[p + l] for l in range(p)}
    return np.array([by_name[n] for n in sub.names], dtype=float)


def _run(executor, subs, values, shots) -> list[np.ndarray]:
    """One executor call for ``subs`` (every circuit of each); samples pooled per sub."""
    jobs, owner = [], []
    for j, (s, v) in enumerate(zip(subs, values)):
        for c in s.circuits:
            jobs.append(Job(c, v, s.qrank, shots))
            owner.append(j)
    out = executor.run(jobs)
    pooled = [[] for _ in subs]
    for j, smp in zip(owner, out):
        pooled[j].append(smp)
    return [np.concatenate(blocks, axis=-1) for blocks in pooled]


def _record(executor, wire, kind):
    meta = getattr(executor, "last_metadata", None) or []
    wire.append({
        "kind": kind,
        "payloads_sent": int(sum(m.get("payloads_sent", 0) for m in meta)),
        "values_bytes": int(sum(m.get("bytes", {}).get("values", 0) for m in meta)),
        "payload_bytes": int(sum(m.get("bytes", {}).get("payloads", 0) for m in meta)),
    })


def _optimize(subs, executor, shots, maxiter, grid, p, wire, on_iteration):
    from .optimize import lockstep_minimize

    live = [s for s in subs if s.circuit is not None]
    if not live:
        return {}
    # start: a grid of (gamma, beta) at p=1, every layer ramped from the best point
    gammas = np.linspace(0.15, 1.35, grid) if grid > 1 else np.array([0.6])
    betas = np.linspace(0.1, 0.7, grid) if grid > 1 else np.array([0.35])
    pairs = [(g, b) for g in gammas for b in betas]
    starts = [np.concatenate([np.full(p, g) * np.arange(1, p + 1) / p * (2 * p / (p + 1)),
                              np.full(p, b) * (1 - np.arange(p) / (p + 1))]) for g, b in pairs]
    samples = _run(executor, live, [np.stack([_row(s, x, p) for x in starts]) for s in live], shots)
    _record(executor, wire, "grid")
    x0 = {}
    for s, smp in zip(live, samples):
        means = s.table[smp].mean(axis=1)
        x0[s.index] = starts[int(np.argmax(means))]
    step = [0]

    def evaluate(batch):
        out = _run(executor, [live[i] for i, _ in batch], [_row(live[i], x, p)[None, :] for i, x in batch], shots)
        _record(executor, wire, "step")
        values = [-float(live[i].table[smp[0]].mean()) for (i, _), smp in zip(batch, out)]
        step[0] += 1
        if on_iteration is not None:
            on_iteration(step[0], {live[i].index: -v for (i, _), v in zip(batch, values)})
        return values

    traces = lockstep_minimize(evaluate, [x0[s.index] for s in live], maxiter=maxiter)
    return {s.index: tr for s, tr in zip(live, traces)}


def _final(subs, traces, executor, final_shots, wire, top: int) -> list[SubproblemResult]:
    live = [s for s in subs if s.circuit is not None]
    p = len(next(iter(traces.values())).x) // 2 if traces else 1
    samples = {}
    if live:
        out = _run(executor, live, [_row(s, traces[s.index].x, p)[None, :] for s in live], final_shots)
        _record(executor, wire, "final")
        samples = {s.index: smp[0] for s, smp in zip(live, out)}
    results = []
    for s in subs:
        if s.circuit is None:  # no internal edges: any assignment is optimal
            results.append(SubproblemResult(
                s.index, s.nodes, s.qrank, s.device.name, (), (), (), {}, [], 0,
                {n: 0 for n in s.nodes}, 0.0, 0.0, 0.0, 1.0, 0))
            continue
        smp = samples[s.index]
        values = s.table[smp]
        best_value = values.max()
        uniq, counts = np.unique(smp[values == best_value], return_counts=True)
        best_state = int(uniq[int(np.argmax(counts))])
        opt = float(s.table.max())
        tr = traces[s.index]
        states, state_counts = np.unique(smp, return_counts=True)
        order = np.lexsort((-state_counts, -s.table[states]))[:max(top, 1)]
        cands = [{node: (int(states[o]) >> j) & 1 for j, node in enumerate(s.nodes)} for o in order]
        results.append(SubproblemResult(
            index=s.index, nodes=s.nodes, qrank=s.qrank, device=s.device.name,
            regions=tuple(r.qubits for r in s.regions.regions) if s.regions else (),
            region_fidelity=tuple(r.fidelity for r in s.regions.regions) if s.regions else (),
            template_edges=s.regions.template_edges if s.regions else (),
            params={f"gamma[{l}]": float(tr.x[l]) for l in range(p)} | {f"beta[{l}]": float(tr.x[p + l]) for l in range(p)},
            energy_history=[-v for v in tr.history], evaluations=tr.evaluations,
            best_assignment={node: (best_state >> j) & 1 for j, node in enumerate(s.nodes)},
            best_cut=float(best_value), expected_cut=float(values.mean()), optimum=opt,
            p_optimal=float(np.mean(values >= opt - 1e-9)), samples=int(len(smp)), candidates=cands,
        ))
    return results


def run_headless(hc, graph: Any, **options: Any) -> QAOAResult | None:
    """Collective over ``hc``: monitors serve, classical rank 0 runs :func:`distributed_qaoa`
    and shuts the monitors down; rank 0 returns the result, every other process None.

    Raises:
        UsageError: see :func:`distributed_qaoa` (on rank 0).
    """
    if hc.is_quantum:
        from monitor_engine.serve import serve

        serve(hc)
        return None
    if hc.rank != 0:
        return None
    from ..primitives import SamplerV2

    with SamplerV2(hc, seed=options.get("seed", 0)) as sampler:
        return distributed_qaoa(graph, sampler, **options)
