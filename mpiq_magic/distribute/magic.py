"""The bodies of ``%%mpiq distribute`` and ``%mpiq partition`` (``magics.py`` parses and delegates here).

``%%mpiq distribute`` plans on the client first (the same choice of partition the classical rank
would make, :func:`~.execute.plan_for_devices`), shows that partition and the circuits each
monitor is assigned (:class:`~mpiq_magic.widgets.DistributeWidget`), then runs
``HybridCluster.distribute`` with that partition, so it is not searched twice; the view counts the
monitors' results as their ``executed`` events arrive. A circuit the client cannot plan for (not a
feed-forward circuit, not a ``QuantumCircuit``) goes to the cluster unplanned, which decides
(and explains) what happens: with ``--observables`` it falls back on quasi-probability cuts
(``--mode qpd`` asks for them, ``--max-overhead`` bounds their sampling overhead).

``%mpiq partition`` shows a partition without running anything
(:class:`~mpiq_magic.widgets.PartitionWidget`), over ``--qpus`` widths or the running cluster's
devices.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

from IPython.core.error import UsageError

from ..kernel.errors import UsageError as MPIQUsageError

#: ``%mpiq partition --method`` values: the partitioner's methods, and the partition ``distribute``
#: would run (static, chosen for feed-forward cuts).
PARTITION_METHODS = ("multilevel", "static", "static-hypergraph", "time-sliced", "distribute")


class Width(NamedTuple):
    """A monitor known only by its width (``--qpus``)."""

    num_qubits: int


@dataclass(frozen=True)
class ClientPlan:
    """The partition a distributed run will use, its feed-forward plan and the ``partition`` event."""

    partition: Any  # PartitionResult (static: every qubit stays on one monitor)
    plan: Any  # FeedForwardPlan
    event: dict[str, Any]


def static_partition(plan: Any, widths: Sequence[int], method: str, seconds: float = 0.0) -> Any:
    """The ``PartitionResult`` of a feed-forward plan's blocks (each qubit on its block's qrank at
    every layer it is live), over monitors of ``widths`` (qrank order); e-bits as the partitioner
    counts them, for comparison with its methods."""
    from .network import make_network
    from .partition import make_result

    owner = {q: p for p, block in plan.blocks.items() for q in block.qubits}
    layered = plan.layered
    k = max(len(widths), max(plan.blocks, default=-1) + 1)
    caps = [int(widths[p]) if p < len(widths) else 0 for p in range(k)]
    for p, block in plan.blocks.items():  # a given partition may hold more than a device's width
        caps[p] = max(caps[p], len(block.qubits))
    assignment = [[owner.get(q, -1) if layered.is_live(q, t) else -1 for q in range(layered.num_qubits)]
                  for t in range(layered.num_layers)]
    return make_result(method, layered, make_network(caps, "full"), assignment, seconds, {"feed_forward": True})


def plan_on_client(devices: Sequence[Any], circuit: Any, *, monitors: int | None = None,
                   max_variants: int = 16) -> ClientPlan:
    """Plan ``circuit`` over ``devices`` (objects with ``num_qubits``, qrank order) as ``distribute``
    would. Raises ``FeedForwardError`` / ``PartitionError`` as it does."""
    from ..widgets.distribute import partition_dict
    from .execute import plan_for_devices

    t0 = time.perf_counter()
    plan, name = plan_for_devices(circuit, devices, monitors=monitors, max_variants=max_variants)
    used = len(devices) if monitors is None else int(monitors)
    partition = static_partition(plan, [d.num_qubits for d in devices[:used]], name, time.perf_counter() - t0)
    return ClientPlan(partition, plan, {"event": "partition", **partition_dict(partition, plan)})


# ----------------------------------------------------------------------------- %%mpiq distribute
def distribute_cell(magics: Any, args: Any, cell: str | None) -> None:
    """``%%mpiq distribute``: run the cell on the client (it defines ``--var``), plan, show the
    partition and per-monitor progress, run ``HybridCluster.distribute``."""
    cluster = magics._cluster()
    ns = magics._ns()
    if cell is not None and cell.strip():
        outcome = magics.shell.run_cell(cell, silent=True)
        if not outcome.success:
            return None  # IPython has shown the cell's error
    if args.var not in ns:
        raise UsageError(
            f"No variable `{args.var}` holds a circuit; define it in the cell (e.g. `{args.var} = "
            f"QuantumCircuit(...)`) or name another one with --var."
        )
    circuit = ns[args.var]
    observables = None
    if args.observables is not None:
        if args.observables not in ns:
            raise UsageError(f"No variable `{args.observables}` holds observables; define it (e.g. a Pauli string "
                             "or a SparsePauliOp) or drop --observables.")
        observables = ns[args.observables]
    planned = None if not _feed_forward_first(circuit, observables, args.mode) else _try_plan(
        cluster, circuit, args.monitors, args.max_variants)
    extra = {} if planned is None else {"partition": planned.partition}
    if args.observables is not None or args.mode != "auto" or args.max_overhead != 1000.0:
        extra.update(observables=observables, mode=args.mode, max_overhead=args.max_overhead)

    def call(progress: Any = None, **kw: Any) -> Any:
        if planned is not None and progress is not None:
            progress(planned.event)
        return cluster.distribute(circuit, progress=progress, **extra, **kw)

    result = magics._with_progress(call, "DistributeWidget", shots=args.shots, monitors=args.monitors,
                                   max_variants=args.max_variants, timeout=args.timeout)
    ns[args.out] = result
    if hasattr(result, "summary"):
        print(result.summary())
    kind = type(result).__name__ if hasattr(result, "summary") else "result"
    print(f"[mpiq] The {kind} is `{args.out}`.")
    return None


def _feed_forward_first(circuit: Any, observables: Any, mode: str) -> bool:
    """Whether the run tries feed-forward cuts first (then the client plans and shows them):
    not with ``mode="qpd"``, nor with observables that Z-basis samples cannot estimate."""
    if mode == "qpd":
        return False
    if observables is None:
        return True
    try:
        from .execute import clbit_observables

        return clbit_observables(circuit, observables)[0] is not None
    except Exception:  # malformed observables: the run says what is wrong
        return False


def _try_plan(cluster: Any, circuit: Any, monitors: int | None, max_variants: int) -> ClientPlan | None:
    """The client's plan, or None where the cluster should decide (and explain) on its own."""
    from qiskit import QuantumCircuit

    devices = getattr(cluster, "devices", None)
    if not isinstance(circuit, QuantumCircuit) or not devices:
        return None
    try:
        return plan_on_client(list(devices), circuit, monitors=monitors, max_variants=max_variants)
    except Exception:  # not feed-forward, does not fit, ...: the run decides and says so, with the cluster's view
        return None


# ----------------------------------------------------------------------------- %mpiq partition
def partition_cell(magics: Any, args: Any, cell: str | None) -> Any:
    """``%mpiq partition``: partition ``--var`` over ``--qpus`` (or the cluster's devices), show
    it, store the ``PartitionResult`` in ``--out``."""
    from qiskit import QuantumCircuit

    ns = magics._ns()
    if cell is not None and cell.strip():
        outcome = magics.shell.run_cell(cell, silent=True)
        if not outcome.success:
            return None
    circuit = ns.get(args.var)
    if not isinstance(circuit, QuantumCircuit):
        got = "nothing" if args.var not in ns else f"a {type(circuit).__name__}"
        raise UsageError(
            f"`{args.var}` holds {got}, not a QuantumCircuit; define it in the cell or name another one with --var."
        )
    devices = _devices(magics, args)
    try:
        if args.method == "distribute":
            planned = plan_on_client(devices, circuit, monitors=None, max_variants=args.max_variants)
            partition, plan = planned.partition, planned.plan
        else:
            from .partition import partition_circuit

            partition = partition_circuit(circuit, [d.num_qubits for d in devices], method=args.method,
                                          topology=args.topology, seed=args.seed)
            plan = None
    except MPIQUsageError as exc:  # does not fit, not feed-forward, bad topology: a sentence, no traceback
        raise UsageError(str(exc)) from None
    ns[args.out] = partition
    from ..widgets.distribute import PartitionWidget
    from ..widgets.fallback import resolve_mode

    mode = "text" if magics.widget_mode == "text" else resolve_mode(magics.widget_mode)
    # Nothing changes after it is shown: a static figure (plotly's own renderer), no widget models.
    view = PartitionWidget(partition, plan, mode="static" if mode == "widget" else mode)
    view.show()
    view.finish()
    if mode != "text":
        print(partition.summary())
    print(f"[mpiq] The PartitionResult is `{args.out}`.")
    return None


def _devices(magics: Any, args: Any) -> list[Any]:
    if args.qpus is not None:
        devices: list[Any] = [Width(w) for w in args.qpus]
    else:
        from .. import magics as M

        cluster = M._active
        if cluster is None or not getattr(cluster, "running", False) or not getattr(cluster, "devices", None):
            raise UsageError(
                "No monitors to partition over: give their widths with --qpus (e.g. --qpus 8,8,8,8) or start "
                "a cluster (`%mpiq start`) whose devices are used."
            )
        devices = list(cluster.devices)
    if args.monitors is not None:
        if args.monitors > len(devices):
            raise UsageError(f"--monitors {args.monitors} is more than the {len(devices)} monitor(s) available.")
        devices = devices[:args.monitors]
    return devices


def parse_widths(text: str) -> list[int]:
    """'8,8,8,8' or '4x8' -> [8, 8, 8, 8] (``--qpus``); an argparse error naming the text otherwise."""
    t = text.strip().lower()
    try:
        if "x" in t:
            count, width = (int(s) for s in t.split("x"))
            widths = [width] * count
        else:
            widths = [int(s) for s in t.split(",") if s.strip()]
    except ValueError:
        widths = []
    if not widths or any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"expected monitor widths such as 8,8,8,8 or 4x8, got {text!r}")
    return widths
