"""``%mpiq`` and ``%%mpiq``: IPython magics over :class:`~mpiq_magic.cluster.HybridCluster`.

The magics only parse their line and delegate; everything they do is available without
IPython through :class:`~mpiq_magic.cluster.HybridCluster`.

The subcommands and their options: :data:`mpiq_magic.magic_parsing.USAGE` (also below).
"""

from __future__ import annotations

from typing import Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from .events import TextProgress
from .magic_parsing import (  # noqa: F401 - re-exported: the parsing API of the magics
    ALREADY_RUNNING, CELL_COMMANDS, LINE_COMMANDS, NO_CLUSTER, PARSERS, USAGE, USAGE_DOC, parse, parse_send_q,
)

__doc__ = f"{__doc__}\n{USAGE_DOC}"

_active: Any = None  # the HybridCluster started by %mpiq start


def active_cluster():
    """The cluster started by ``%mpiq start`` (None when there is none)."""
    return _active


def shutdown_active_cluster() -> None:
    """Stop the cluster started by ``%mpiq start`` (used when the extension is unloaded)."""
    global _active
    cluster, _active = _active, None
    if cluster is not None:
        cluster.stop()


# ----------------------------------------------------------------------------- magics
@magics_class
class MPIQMagics(Magics):
    """``%mpiq`` / ``%%mpiq``: run MPI-Q hybrid clusters from IPython."""

    def __init__(self, shell=None, **kwargs: Any):
        super().__init__(shell=shell, **kwargs)
        #: Makes the progress callback of one operation when no widget frontend is there.
        self.progress_factory: Callable[[], Any] = TextProgress
        #: "auto" shows live widgets where a frontend can render them (see mpiq_magic.widgets);
        #: "text" keeps to progress lines. ``$MPIQ_WIDGETS`` overrides auto-detection.
        self.widget_mode: str = "auto"
        self._topology_view: Any = None
        #: How ``%mpiq start`` builds the cluster (default HybridCluster; tests may swap it).
        self.cluster_factory: Callable[..., Any] | None = None

    @line_cell_magic
    def mpiq(self, line: str, cell: str | None = None):
        """Run MPI-Q hybrid clusters: ``%mpiq start|stop|status|topology|barrier|ghz``,
        ``%%mpiq run|scatter|bcast|gather|distribute``. ``%mpiq help`` lists the options."""
        name, args = parse(line, cell)
        if name == "help":
            print(USAGE)
            return None
        from .errors import ClusterStateError, ClusterUsageError
        from .kernel.errors import ConfigError

        try:
            return getattr(self, f"_{name}")(args, cell)
        except (ClusterUsageError, ClusterStateError, ConfigError) as exc:  # misuse: no traceback
            raise UsageError(f"{exc}\n{PARSERS[name].format_usage().strip()}") from None

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _cluster():
        if _active is None or not _active.running:
            raise UsageError(NO_CLUSTER)
        return _active

    def _ns(self) -> dict:
        return self.shell.user_ns if self.shell is not None else {}

    def _live(self, *views: str) -> Any:
        """The progress callback of one operation: a widget dashboard of ``views`` when the
        frontend can show one, else :attr:`progress_factory` (text lines)."""
        if self.widget_mode == "text" or self.progress_factory is not TextProgress:
            return self.progress_factory()
        from .widgets import Dashboard, resolve_mode

        mode = resolve_mode(self.widget_mode)
        if mode == "text":
            return self.progress_factory()
        from . import widgets

        made = [getattr(widgets, name)(mode=mode) for name in views]
        if self._topology_view is not None:
            made.append(self._topology_view)  # status changes (busy, dead) show on the topology
        return Dashboard(*made, mode=mode).show()

    def _release_topology(self) -> None:
        view, self._topology_view = self._topology_view, None
        release = getattr(view, "release", None)
        if release is not None:
            try:
                release()
            except Exception:
                pass

    def _show_topology(self, cluster: Any) -> None:
        if self.widget_mode == "text":
            return
        self._release_topology()  # one live topology view at a time
        from .widgets import TopologyWidget, resolve_mode

        mode = resolve_mode(self.widget_mode)
        if mode != "text":
            self._topology_view = TopologyWidget(cluster.topology, mode=mode).show()

    def _with_progress(self, fn: Callable[..., Any], *views: str, **kwargs: Any) -> Any:
        progress = self._live(*views) if views else self.progress_factory()
        try:
            return fn(progress=progress, **kwargs)
        finally:
            # a cell's dashboard is released when the cell ends: its output keeps a static copy
            # and its widgets are closed (the topology view, shared by every cell, stays live)
            release = getattr(progress, "release", None)
            close = getattr(progress, "close", None)
            if release is not None:
                release(keep=[self._topology_view])
            elif close is not None:
                close()

    # ------------------------------------------------------------------ line magics
    def _start(self, args, cell):
        global _active
        if _active is not None and _active.running:
            raise UsageError(ALREADY_RUNNING.format(cluster=_active))
        factory = self.cluster_factory
        if factory is None:
            from .cluster import HybridCluster as factory
        options = {"interface": args.interface} if args.interface else {}
        if args.slurm is not None:
            from .cluster.launchers import SlurmEngines

            options["engine_launcher"] = SlurmEngines(partition=args.slurm, quantum_partition=args.qpu_partition,
                                                      time=args.slurm_time)
        elif args.qpu_partition or args.slurm_time:
            raise UsageError("--qpu-partition and --slurm-time go with --slurm PARTITION.")
        cluster = factory(
            args.classical, args.quantum, devices=args.devices, timeout=args.timeout, launcher=args.launcher, **options,
        )
        cluster.start()
        _active = cluster
        self._ns()["mpiq_cluster"] = cluster
        print(
            f"Started {cluster.classical} classical + {cluster.quantum} quantum engines "
            f"(engine id == MPI rank) in {cluster.start_seconds or 0:.1f} s"
            + (f" as SLURM job {cluster.job_id}" if getattr(cluster, "job_id", None) else "")
            + "; the cluster is `mpiq_cluster`."
        )
        print(cluster.topology)
        self._show_topology(cluster)

    def _stop(self, args, cell):
        if _active is None:
            raise UsageError(NO_CLUSTER)
        shutdown_active_cluster()
        self._release_topology()
        self._ns().pop("mpiq_cluster", None)
        print("Stopped the hybrid cluster.")

    def _status(self, args, cell):
        if _active is None:
            raise UsageError(NO_CLUSTER)
        return _active.status()

    def _topology(self, args, cell):
        cluster = self._cluster()
        print(cluster.topology)
        self._show_topology(cluster)

    def _barrier(self, args, cell):
        cluster = self._cluster()
        records = self._with_progress(cluster.barrier, "BarrierWidget", flag=args.flag, repeat=args.repeat, timeout=args.timeout)
        if args.out:
            self._ns()[args.out] = records
        return records

    def _ghz(self, args, cell):
        cluster = self._cluster()
        result = self._with_progress(
            cluster.ghz, "GHZWidget", "ProgressWidget", qubits=args.qubits, nodes=args.nodes, blocks=args.blocks, shots=args.shots,
            serial=args.serial, timeout=args.timeout,
        )
        self._ns()[args.out] = result
        print(result.reconstruction.summary())
        stages = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in result.timings.items())
        print(f"timings: {stages}")
        print(f"The GHZResult is `{args.out}`.")

    def _attach(self, args, cell):
        from .cluster.attach import attach

        print(attach(self._cluster(), args.port_dir, wait=args.wait, timeout=args.timeout))

    def _release(self, args, cell):
        from .cluster.attach import release

        print(release(self._cluster()))

    def _qaoa(self, args, cell):
        from .kernel.errors import UsageError as BadQAOA
        from .qaoa.magic import run_qaoa

        try:
            run_qaoa(self._cluster(), args, self._ns(), self.widget_mode)
        except BadQAOA as exc:  # a bad graph or option: no traceback
            raise UsageError(f"{exc}\n{PARSERS['qaoa'].format_usage().strip()}") from None

    # ------------------------------------------------------------------ cell magics
    def _run(self, args, cell):
        cluster = self._cluster()
        self._with_progress(cluster.run, code=cell, targets=args.targets, timeout=args.timeout, stream=True)

    def _scatter(self, args, cell):
        return self._circuits(
            "scatter", args,
            lambda **kw: self._cluster().scatter(cell, var=args.var, send_q=args.send_q, failover=args.failover, **kw),
        )

    def _bcast(self, args, cell):
        return self._circuits("bcast", args, lambda **kw: self._cluster().bcast(cell, var=args.var, **kw))

    def _circuits(self, name: str, args, call: Callable[..., Any]):
        from .errors import HybridClusterError

        self._cluster()
        try:
            res = self._with_progress(call, "ProgressWidget", shots=args.shots, timeout=args.timeout)
        except HybridClusterError as exc:
            if exc.partial is not None and hasattr(exc.partial, "results"):
                self._ns()[args.out] = exc.partial.results  # what did come back stays usable
            raise
        self._ns()[args.out] = res.results
        for notice in getattr(res, "notices", []):
            print(f"[mpiq] {notice}")
        if res.stdout:
            print(res.stdout, end="" if res.stdout.endswith("\n") else "\n")
        monitors = len({getattr(r, "qrank", None) for r in res.results})
        print(
            f"[mpiq] {len(res.results)} circuit(s) ran on {monitors} monitor(s); results in `{args.out}` "
            f"({res.payload_bytes} payload bytes over MPI-Q, compile cache {res.compile_cache.get('hits', 0)} "
            f"hit(s) / {res.compile_cache.get('misses', 0)} miss(es))."
        )

    def _distribute(self, args, cell):
        from .distribute.magic import distribute_cell

        return distribute_cell(self, args, cell)

    def _partition(self, args, cell):
        from .distribute.magic import partition_cell

        return partition_cell(self, args, cell)

    def _gather(self, args, cell):
        cluster = self._cluster()
        values = self._with_progress(cluster.gather, code=cell, var=args.var, timeout=args.timeout)
        out = args.out or args.var
        self._ns()[out] = values
        print(f"[mpiq] gathered `{args.var}` from {len(values)} monitor(s) into `{out}` (ordered by qrank).")
