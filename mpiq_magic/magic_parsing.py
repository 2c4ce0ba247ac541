"""Parsing of the ``%mpiq`` / ``%%mpiq`` lines: one argparse parser per subcommand, the usage
text (also the end of :mod:`mpiq_magic.magics`' docstring) and the messages for malformed lines.

Every error is an IPython ``UsageError`` that names what was wrong and shows the usage line.
"""

from __future__ import annotations

import ast
import shlex
from typing import Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic_arguments import MagicArgumentParser

# ----------------------------------------------------------------------------- messages
USAGE_DOC = """Line magics::

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
USAGE = USAGE_DOC.split("Line magics::", 1)[1].strip()
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
