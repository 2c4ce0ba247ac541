"""``%mpiq`` and ``%%mpiq``: IPython magics over :class:`~mpiq_magic.cluster.HybridCluster`.

The magics only parse their line and delegate; everything they do is available without
IPython through :class:`~mpiq_magic.cluster.HybridCluster`.

Line magics::

    %mpiq start [-c C] [-q Q] [--devices FILE] [--launcher mpi] [--timeout T]
                [--slurm PARTITION [--qpu-partition P] [--slurm-time T]]   (engines as a SLURM job)
    %mpiq stop
    %mpiq status
    %mpiq topology
    %mpiq barrier [CC|QQ|ALL] [--repeat K] [--timeout T] [--out NAME]
    %mpiq ghz N --nodes M [--blocks B] [--shots S] [--serial] [--timeout T] [--out NAME]
    %mpiq attach [PORT_DIR] [--wait W] [--timeout T]   (a -q 0 cluster joins a `mpiq serve` service)
    %mpiq release
    %mpiq qaoa GRAPH [--mode aware|naive|both] [--naive] [-p P] [--eta ETA] [-k K] [--max-part N] [--shots S]
               [--final-shots S] [--maxiter M] [--grid G] [--merge exact|qaoa] [--seed S] [--optimum V] [--out NAME] [--timeout T]
      (GRAPH: a variable holding a graph or edge list, or a graph JSON file; live view per mode)
    %mpiq partition [--var circuit] [--qpus 8,8,8,8] [--method M] [--topology full|line|grid] [--out NAME]
      (shows the partition without running; default widths: the running cluster's devices)

Cell magics::

    %%mpiq run [--targets classical|quantum|all] [--timeout T]
    %%mpiq scatter [--var circuits] [--send-q SPEC] [--shots S] [--out results] [--timeout T] [--no-failover]
    %%mpiq bcast [--var circuit] [--shots S] [--out results] [--timeout T]
    %%mpiq gather [--var result] [--out NAME] [--timeout T]
    %%mpiq distribute [--var circuit] [--shots S] [--monitors M] [--max-variants V] [--observables NAME]
                      [--mode auto|feed-forward|qpd] [--max-overhead X] [--out NAME] [--timeout T]
      (the cell runs on the client and defines the circuit; `%mpiq distribute --var NAME` uses an existing one)
"""

from __future__ import annotations

import ast
import shlex
from typing import Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import MagicArgumentParser

from .events import TextProgress

# ----------------------------------------------------------------------------- messages
USAGE = __doc__.split("Line magics::", 1)[1].strip()
NO_CLUSTER = (
    "No hybrid cluster is running. Start one first, e.g. `%mpiq start -c 1 -q 2` "
    "(1 classical rank, 2 quantum monitor engines)."
)
ALREADY_RUNNING = "A hybrid cluster is already running ({cluster}); stop it with `%mpiq stop` first."
NO_SUBCOMMAND = "%mpiq needs a subcommand.\n" + USAGE
UNKNOWN_SUBCOMMAND = "Unknown %mpiq subcommand {name!r}; use one of: {names}.\n" + USAGE
CELL_ONLY = "`%mpiq {name}` works on a cell: put `%%mpiq {name}` on the first line of a cell."
LINE_ONLY = "`%%mpiq {name}` takes no cell body; use the line magic `%mpiq {name}`."
EMPTY_CELL = "The `%%mpiq {name}` cell has no code to run; write the code below the magic line."
BAD_SEND_Q = (
    "--send-q {spec!r} is not a list of qubit groups; write one group per monitor, e.g. "
    "'0,1;2,3' or '[[0, 1], [2, 3]]'."
)
BAD_LINE = "Cannot split the %mpiq line {line!r}: {error}."

LINE_COMMANDS = ("start", "stop", "status", "topology", "barrier", "ghz", "attach", "release", "qaoa")
CELL_COMMANDS = ("run", "scatter", "bcast", "gather")
BOTH_COMMANDS = ("distribute", "partition")  # line or cell

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


# ----------------------------------------------------------------------------- parsers
class _Parser(MagicArgumentParser):
    """argparse for one subcommand; errors are UsageErrors that show the usage line."""

    def __init__(self, prog: str):
        import argparse

        super().__init__(prog=prog, formatter_class=lambda prog: argparse.HelpFormatter(prog, width=200))

    def error(self, message: str):
        raise UsageError(f"{message}\n{self.format_usage().strip()}")


def _integer_at_least(minimum: int, kind: str) -> Callable[[str], int]:
    """An argparse type accepting integers >= ``minimum``."""

    def convert(text: str) -> int:
        import argparse

        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {value}")
        return value

    return convert


_positive_int = _integer_at_least(1, "positive")
_count = _integer_at_least(0, "non-negative")


def _seconds(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def _flag(text: str) -> str:
    import argparse

    flag = text.upper()
    if flag not in ("CC", "QQ", "ALL"):
        raise argparse.ArgumentTypeError(f"expected CC, QQ or ALL, got {text!r}")
    return flag


def _identifier(text: str) -> str:
    import argparse

    if not text.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not a Python variable name")
    return text


def _positive_number(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _widths(text: str) -> list[int]:
    from .distribute.magic import parse_widths  # here, not at import: that package imports qiskit

    return parse_widths(text)


def _timeout_arg(p: _Parser) -> None:
    p.add_argument("--timeout", type=_seconds, default=None, metavar="T",
                   help="seconds before the operation fails naming the engines that did not answer")


def _build_parsers() -> dict[str, _Parser]:
    parsers: dict[str, _Parser] = {}

    def parser(name: str, kind: str = "%mpiq") -> _Parser:
        p = parsers[name] = _Parser(prog=f"{kind} {name}")
        return p

    p = parser("start")
    p.add_argument("-c", "--classical", type=_positive_int, default=1, metavar="C", help="classical ranks")
    p.add_argument("-q", "--quantum", type=_count, default=2, metavar="Q", help="quantum monitor engines")
    p.add_argument("--devices", default=None, metavar="FILE", help="devices TOML file")
    p.add_argument("--launcher", choices=["mpi"], default="mpi", help="engine launcher")
    p.add_argument("--slurm", default=None, metavar="PARTITION",
                   help="engines as a SLURM job on PARTITION (controller here; ipyparallel's SLURM launcher)")
    p.add_argument("--qpu-partition", default=None, metavar="P", help="with --slurm: the monitors on P (a het job)")
    p.add_argument("--slurm-time", default=None, metavar="T", help="with --slurm: the job's --time")
    p.add_argument("--timeout", type=_seconds, default=60.0, metavar="T", help="default timeout of operations")
    p.add_argument("--interface", default=None, metavar="IF", help="network interface to listen on (default loopback)")
    parser("stop")
    parser("status")
    parser("topology")
    p = parser("barrier")
    p.add_argument("flag", nargs="?", type=_flag, default="ALL", metavar="CC|QQ|ALL")
    p.add_argument("--repeat", type=_positive_int, default=1, metavar="K")
    p.add_argument("--out", type=_identifier, default=None, metavar="NAME")
    _timeout_arg(p)
    p = parser("ghz")
    p.add_argument("qubits", type=_positive_int, metavar="N")
    p.add_argument("--nodes", type=_positive_int, default=None, metavar="M", help="quantum monitors used")
    p.add_argument("--blocks", type=_positive_int, default=None, metavar="B")
    p.add_argument("--shots", type=_positive_int, default=1024, metavar="S")
    p.add_argument("--serial", action="store_true", help="every block on qrank 0, in turn")
    p.add_argument("--out", type=_identifier, default="ghz_result", metavar="NAME")
    _timeout_arg(p)
    p = parser("attach")
    p.add_argument("port_dir", nargs="?", default=None, metavar="PORT_DIR", help="default $MPIQ_PORT_DIR")
    p.add_argument("--wait", type=_seconds, default=None, metavar="W", help="how long to wait for a free service")
    _timeout_arg(p)
    parser("release")
    p = parser("qaoa")
    p.add_argument("graph", metavar="GRAPH", help="a variable holding a graph, or a graph JSON file")
    p.add_argument("--mode", choices=["aware", "naive", "both"], default="aware")
    p.add_argument("--naive", dest="mode", action="store_const", const="naive", help="same as --mode naive")
    p.add_argument("-p", type=_positive_int, default=1, metavar="P", help="QAOA depth")
    p.add_argument("--eta", type=float, default=0.05, metavar="ETA", help="error threshold (readout, 2q gate)")
    p.add_argument("-k", type=_positive_int, default=2, metavar="K", help="regions per part")
    p.add_argument("--max-part", dest="max_part", type=_positive_int, default=None, metavar="N")
    p.add_argument("--shots", type=_positive_int, default=512, metavar="S", help="per region and step")
    p.add_argument("--final-shots", dest="final_shots", type=_positive_int, default=2048, metavar="S")
    p.add_argument("--maxiter", type=_positive_int, default=40, metavar="M", help="COBYLA iterations per part")
    p.add_argument("--grid", type=_positive_int, default=4, metavar="G", help="start grid of G x G angle pairs")
    p.add_argument("--merge", choices=["exact", "qaoa"], default="exact", help="orientations: enumerated or QAOA-in-QAOA")
    p.add_argument("--seed", type=_count, default=0, metavar="S")
    p.add_argument("--optimum", type=float, default=None, metavar="V", help="known optimum (default: classical)")
    p.add_argument("--out", type=_identifier, default="qaoa_result", metavar="NAME")
    _timeout_arg(p)
    p = parser("run", "%%mpiq")
    p.add_argument("--targets", choices=["classical", "quantum", "all"], default="all")
    _timeout_arg(p)
    p = parser("scatter", "%%mpiq")
    p.add_argument("--var", type=_identifier, default="circuits", metavar="NAME")
    p.add_argument("--send-q", dest="send_q", default=None, metavar="SPEC")
    p.add_argument("--no-failover", dest="failover", action="store_false",
                   help="a dead monitor's circuits stay missing instead of re-running on survivors")
    p.add_argument("--shots", type=_positive_int, default=1024, metavar="S")
    p.add_argument("--out", type=_identifier, default="results", metavar="NAME")
    _timeout_arg(p)
    p = parser("bcast", "%%mpiq")
    p.add_argument("--var", type=_identifier, default="circuit", metavar="NAME")
    p.add_argument("--shots", type=_positive_int, default=1024, metavar="S")
    p.add_argument("--out", type=_identifier, default="results", metavar="NAME")
    _timeout_arg(p)
    p = parser("gather", "%%mpiq")
    p.add_argument("--var", type=_identifier, default="result", metavar="NAME")
    p.add_argument("--out", type=_identifier, default=None, metavar="NAME")
    _timeout_arg(p)
    p = parser("distribute", "%%mpiq")
    p.add_argument("--var", type=_identifier, default="circuit", metavar="NAME", help="the circuit's variable")
    p.add_argument("--shots", type=_positive_int, default=1024, metavar="S")
    p.add_argument("--monitors", type=_positive_int, default=None, metavar="M", help="monitors used")
    p.add_argument("--max-variants", dest="max_variants", type=_positive_int, default=16, metavar="V")
    p.add_argument("--observables", type=_identifier, default=None, metavar="NAME",
                   help="variable holding observables: quasi-probability cuts where feed-forward does not apply")
    p.add_argument("--mode", choices=["auto", "feed-forward", "qpd"], default="auto")
    p.add_argument("--max-overhead", dest="max_overhead", type=_positive_number, default=1000.0, metavar="X",
                   help="refuse quasi-probability cuts above this sampling overhead")
    p.add_argument("--out", type=_identifier, default="distribute_result", metavar="NAME")
    _timeout_arg(p)
    p = parser("partition")
    p.add_argument("--var", type=_identifier, default="circuit", metavar="NAME", help="the circuit's variable")
    p.add_argument("--qpus", type=_widths, default=None, metavar="W,W,...", help="monitor widths (or 4x8)")
    p.add_argument("--monitors", type=_positive_int, default=None, metavar="M", help="monitors used")
    p.add_argument("--method", choices=["multilevel", "static", "static-hypergraph", "time-sliced", "distribute"],
                   default="multilevel", help="'distribute': the partition %%%%mpiq distribute would run")
    p.add_argument("--topology", choices=["full", "line", "grid"], default="full")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-variants", dest="max_variants", type=_positive_int, default=16, metavar="V")
    p.add_argument("--out", type=_identifier, default="partition", metavar="NAME")
    return parsers


PARSERS = _build_parsers()


def parse_send_q(spec: str) -> list[list[int]]:
    """'0,1;2,3' or '[[0,1],[2,3]]' -> [[0, 1], [2, 3]]; UsageError otherwise."""
    text = spec.strip()
    try:
        if text.startswith("["):
            groups = ast.literal_eval(text)
        else:
            groups = [[int(q) for q in g.split(",") if q.strip()] for g in text.split(";")]
    except (ValueError, SyntaxError):
        raise UsageError(BAD_SEND_Q.format(spec=spec)) from None
    ok = (
        isinstance(groups, (list, tuple)) and groups
        and all(isinstance(g, (list, tuple)) and g and all(isinstance(q, int) and q >= 0 for q in g) for g in groups)
    )
    if not ok:
        raise UsageError(BAD_SEND_Q.format(spec=spec))
    return [list(g) for g in groups]


def parse(line: str, cell: str | None) -> tuple[str, Any]:
    """The subcommand and its parsed options; UsageError for anything malformed."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(BAD_LINE.format(line=line, error=exc)) from None
    if not words:
        raise UsageError(NO_SUBCOMMAND)
    name, argv = words[0], words[1:]
    if name in ("help", "-h", "--help"):
        return "help", None
    if name not in PARSERS:
        raise UsageError(UNKNOWN_SUBCOMMAND.format(name=name, names=", ".join([*LINE_COMMANDS, *CELL_COMMANDS, *BOTH_COMMANDS])))
    if cell is None and name in CELL_COMMANDS:
        raise UsageError(CELL_ONLY.format(name=name))
    if cell is not None and name in LINE_COMMANDS and cell.strip():
        raise UsageError(LINE_ONLY.format(name=name))
    args = PARSERS[name].parse_args(argv)
    if name == "scatter" and args.send_q is not None:
        args.send_q = parse_send_q(args.send_q)
    if name == "run" and not (cell or "").strip():
        raise UsageError(EMPTY_CELL.format(name=name))
    return name, args


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
