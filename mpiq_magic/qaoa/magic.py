"""The body of ``%mpiq qaoa GRAPH``: noise-aware distributed QAOA on the notebook's cluster.

``GRAPH`` is a variable of the notebook (a networkx graph, an edge list, a ``{"nodes", "edges"}``
dict) or a graph JSON file, as ``mpiq qaoa graph.json`` reads it. Classical rank 0 runs the
optimizers and the monitors run the sub-problem circuits, through the cluster's ``SamplerV2``;
a live :class:`~mpiq_magic.widgets.qaoa.QAOAWidget` per mode shows the split, the regions and
the expected cut of every part per optimizer step. The result is stored in the notebook.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from ..kernel.errors import UsageError

MODES = {"aware": ("aware",), "naive": ("naive",), "both": ("aware", "naive")}


def resolve_graph(spec: str, ns: Mapping[str, Any]) -> Any:
    """The graph named by ``spec``: a variable of ``ns`` if one has that name, else a file.

    Raises:
        UsageError: neither, or not a graph (see :func:`~mpiq_magic.qaoa.graph.as_graph`).
    """
    from .graph import as_graph

    if spec.isidentifier() and spec in ns:
        return as_graph(ns[spec])
    if os.path.exists(spec):
        return as_graph(spec)
    raise UsageError(
        f"GRAPH {spec!r} is neither a variable of this notebook nor a graph file; pass a variable "
        f"holding a networkx graph or edge list, or the path of a JSON graph file."
    )


def options_of(args: Any) -> dict[str, Any]:
    """The keyword arguments of ``distributed_qaoa`` the magic's options give."""
    options = {"p": args.p, "eta": args.eta, "k": args.k, "shots": args.shots, "final_shots": args.final_shots,
               "maxiter": args.maxiter, "grid": args.grid, "merge": args.merge, "seed": args.seed}
    if args.max_part is not None:
        options["max_part"] = args.max_part
    return options


def run_qaoa(cluster: Any, args: Any, ns: dict, widget_mode: str = "auto") -> Any:
    """Run ``%mpiq qaoa`` with parsed ``args`` on ``cluster``; stores the result in ``ns[args.out]``
    (a ``QAOAResult``, or ``{"aware": ..., "naive": ...}`` with ``--mode both``) and returns it.

    Raises:
        UsageError: a bad graph or option (see ``distributed_qaoa``).
        HybridClusterError / ClusterTimeoutError: the cluster failed or did not answer.
    """
    from ..widgets import Dashboard, QAOAWidget, resolve_mode
    from .graph import classical_baseline
    from .run import distributed_qaoa

    graph = resolve_graph(args.graph, ns)
    optimum, method = (args.optimum, "given") if args.optimum is not None else classical_baseline(graph, args.seed)
    mode = resolve_mode(widget_mode)
    devices = list(cluster.devices)
    results: dict[str, Any] = {}
    for run_mode in MODES[args.mode]:
        aware = run_mode == "aware"
        label = f"aware, p={args.p}, eta={args.eta}, k={args.k}" if aware else f"naive, p={args.p}"
        view = QAOAWidget(graph, devices, eta=args.eta if aware else None, label=label, mode=mode)
        board = Dashboard(view, mode=mode).show()
        try:
            sampler = cluster.sampler(seed=args.seed, timeout=args.timeout)
            result = distributed_qaoa(graph, sampler, mode=run_mode, optimum=optimum, on_plan=view.plan,
                                      on_iteration=view.iteration, **options_of(args))
            result.optimum_method = method
            view.set_result(result)
        finally:
            board.release()
        results[run_mode] = result
        ratio = f", ratio {result.ratio:.3f}" if result.ratio is not None else ""
        popt = f", P(optimal sub-solution) {result.p_optimal:.3f}" if result.p_optimal is not None else ""
        print(f"[mpiq] {run_mode}: cut {result.cut:g} of {optimum:g} ({method}){ratio}, parts "
              f"{[len(p) for p in result.split.parts]} on qranks {[s.qrank for s in result.subproblems]}{popt}, "
              f"{result.calls} sampler call(s), {result.timings['total']:.1f} s")
    out = results[MODES[args.mode][0]] if len(results) == 1 else results
    ns[args.out] = out
    kind = "QAOAResult" if len(results) == 1 else "dict of QAOAResult by mode"
    print(f"[mpiq] The {kind} is `{args.out}`.")
    return out
