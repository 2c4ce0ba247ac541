"""%mpiq / %%mpiq in an in-process IPython shell: parsing, usage errors, delegation.

No MPI here: a fake cluster records what the magics delegate to it.
"""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from mpiq_magic import magics as M

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def ip():
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython()
    shell.run_line_magic("load_ext", "mpiq_magic")
    shell.run_line_magic("load_ext", "mpiq_magic")  # loading twice is harmless
    return shell


@pytest.fixture
def magics(ip):
    instance = ip.magics_manager.registry["MPIQMagics"]
    yield instance
    M._active = None
    instance.cluster_factory = None


class FakeCluster:
    """Records the calls the magics delegate; returns canned values."""

    def __init__(self, classical, quantum, **kwargs):
        self.classical, self.quantum, self.kwargs = classical, quantum, kwargs
        self.calls: list[tuple] = []
        self.running = False
        self.start_seconds = 0.1
        self.topology = "fake topology"

    def start(self):
        self.running = True
        return self

    def stop(self):
        self.running = False

    def status(self):
        return "fake status"

    def __getattr__(self, name):
        if name in ("scatter", "bcast", "gather", "barrier", "run", "ghz"):
            def call(*args, **kwargs):
                kwargs.pop("progress", None)
                self.calls.append((name, args, kwargs))
                return _canned(name)
            return call
        raise AttributeError(name)


def _canned(name):
    from mpiq_magic.cluster import BarrierRecords, ScatterResult

    if name in ("scatter", "bcast"):
        return ScatterResult(results=["r0", "r1"])
    if name == "gather":
        return [1, 2]
    if name == "barrier":
        return BarrierRecords([])
    return None


def run_error(ip, source):
    result = ip.run_cell(source)
    return result.error_in_exec


@pytest.mark.parametrize(
    "line, expected",
    [
        ("%mpiq", "needs a subcommand"),
        ("%mpiq bogus", "Unknown %mpiq subcommand 'bogus'"),
        ("%mpiq scatter", "put `%%mpiq scatter` on the first line of a cell"),
        ("%mpiq run", "put `%%mpiq run` on the first line of a cell"),
        ("%mpiq start -c 0", "expected a positive integer, got 0"),
        ("%mpiq start -q x", "expected a non-negative integer, got 'x'"),
        ("%mpiq start --launcher slurm", "invalid choice: 'slurm'"),
        ("%mpiq start --timeout -1", "expected a positive number of seconds, got -1"),
        ("%mpiq barrier XX", "expected CC, QQ or ALL, got 'XX'"),
        ("%mpiq barrier QQ --repeat 0", "expected a positive integer, got 0"),
        ("%mpiq ghz", "the following arguments are required: N"),
        ("%mpiq ghz 10 --nodes two", "expected a positive integer, got 'two'"),
        ("%mpiq start 'unbalanced", "Cannot split the %mpiq line"),
    ],
)
def test_usage_errors_name_the_problem_and_show_usage(ip, line, expected):
    err = run_error(ip, line)
    assert isinstance(err, UsageError), err
    assert expected in str(err)


def test_argparse_errors_include_the_usage_line(ip):
    err = run_error(ip, "%mpiq start -c 0")
    assert ("usage: %mpiq start [-c C] [-q Q] [--devices FILE] [--launcher {mpi}] [--slurm PARTITION] "
            "[--qpu-partition P] [--slurm-time T] [--timeout T]") in str(err)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("%%mpiq scatter\ncircuits = []", M.NO_CLUSTER),
        ("%%mpiq run\nprint(1)", M.NO_CLUSTER),
        ("%%mpiq gather\nresult = 1", M.NO_CLUSTER),
        ("%%mpiq bcast\ncircuit = None", M.NO_CLUSTER),
        ("%mpiq barrier", M.NO_CLUSTER),
        ("%mpiq status", M.NO_CLUSTER),
        ("%mpiq stop", M.NO_CLUSTER),
        ("%%mpiq start\nx = 1", "`%%mpiq start` takes no cell body"),
        ("%%mpiq run\n", "the cell body is empty"),  # IPython's own check
        ("%%mpiq scatter --send-q 0,a\nc = 1", "--send-q '0,a' is not a list of qubit groups"),
        ("%%mpiq scatter --out 1x\nc = 1", "'1x' is not a Python variable name"),
        ("%%mpiq run --targets gpu\nx = 1", "invalid choice: 'gpu'"),
    ],
)
def test_cells_before_start_and_malformed_cells(ip, source, expected):
    err = run_error(ip, source)
    assert isinstance(err, UsageError), err
    assert expected in str(err)


def test_no_cluster_message_says_how_to_start_one():
    assert "%mpiq start -c 1 -q 2" in M.NO_CLUSTER


def test_a_blank_run_cell_is_refused():
    with pytest.raises(UsageError, match="has no code to run"):
        M.parse("run", "  \n ")


@pytest.mark.parametrize(
    "spec, groups",
    [("0,1;2,3", [[0, 1], [2, 3]]), ("[[0, 1], [2], [3]]", [[0, 1], [2], [3]]), ("5", [[5]])],
)
def test_send_q_specs(spec, groups):
    assert M.parse_send_q(spec) == groups


@pytest.mark.parametrize("spec", ["", "[]", "[[0], []]", "0,-1", "[[0.5]]", "abc"])
def test_bad_send_q_specs(spec):
    with pytest.raises(UsageError, match="not a list of qubit groups"):
        M.parse_send_q(spec)


def test_parse_returns_options_with_defaults():
    name, args = M.parse("scatter", "circuits = []")
    assert name == "scatter"
    assert (args.var, args.send_q, args.shots, args.out, args.timeout) == ("circuits", None, 1024, "results", None)
    name, args = M.parse("start -c 2 -q 3 --devices d.toml --timeout 5", None)
    assert (args.classical, args.quantum, args.devices, args.launcher, args.timeout) == (2, 3, "d.toml", "mpi", 5.0)
    name, args = M.parse("barrier qq --repeat 7", None)
    assert (args.flag, args.repeat) == ("QQ", 7)
    name, args = M.parse("ghz 40 --nodes 3 --blocks 6 --shots 100 --serial", None)
    assert (args.qubits, args.nodes, args.blocks, args.shots, args.serial) == (40, 3, 6, 100, True)


def test_magics_delegate_to_the_cluster(ip, magics, capsys):
    magics.cluster_factory = FakeCluster
    assert run_error(ip, "%mpiq start -c 2 -q 3 --timeout 9") is None
    cluster = M.active_cluster()
    assert (cluster.classical, cluster.quantum, cluster.kwargs["timeout"]) == (2, 3, 9.0)
    assert ip.user_ns["mpiq_cluster"] is cluster

    err = run_error(ip, "%mpiq start")
    assert isinstance(err, UsageError) and "already running" in str(err)

    assert run_error(ip, "%%mpiq scatter --var circs --send-q 0;1 --shots 10 --out res --timeout 4\ncircs = 1") is None
    name, args, kwargs = cluster.calls[-1]
    assert name == "scatter" and [a.strip() for a in args] == ["circs = 1"]
    assert kwargs == {"var": "circs", "send_q": [[0], [1]], "shots": 10, "timeout": 4.0, "failover": True}
    assert ip.user_ns["res"] == ["r0", "r1"]
    assert run_error(ip, "%%mpiq scatter --no-failover\ncircuits = 1") is None
    assert cluster.calls[-1][2]["failover"] is False

    assert run_error(ip, "%%mpiq bcast --shots 5\ncircuit = 1") is None
    assert cluster.calls[-1][0] == "bcast" and ip.user_ns["results"] == ["r0", "r1"]

    assert run_error(ip, "%%mpiq gather --var pid --out pids\npid = 1") is None
    name, args, kwargs = cluster.calls[-1]
    assert (name, kwargs["code"].strip(), kwargs["var"], kwargs["timeout"]) == ("gather", "pid = 1", "pid", None)
    assert ip.user_ns["pids"] == [1, 2]

    assert run_error(ip, "%mpiq barrier qq --repeat 3 --out recs") is None
    assert cluster.calls[-1] == ("barrier", (), {"flag": "QQ", "repeat": 3, "timeout": None})

    assert run_error(ip, "%%mpiq run --targets quantum --timeout 2\nx = 1") is None
    name, args, kwargs = cluster.calls[-1]
    assert (name, kwargs.pop("code").strip()) == ("run", "x = 1")
    assert kwargs == {"targets": "quantum", "timeout": 2.0, "stream": True}

    assert ip.run_line_magic("mpiq", "status") == "fake status"
    assert run_error(ip, "%mpiq stop") is None
    assert M.active_cluster() is None and "mpiq_cluster" not in ip.user_ns


def test_scatter_failure_keeps_partial_results(ip, magics):
    from mpiq_magic.cluster import ScatterResult
    from mpiq_magic.errors import ClusterTimeoutError, EngineFailure

    class Failing(FakeCluster):
        def scatter(self, *args, **kwargs):
            failure = EngineFailure(3, "scatter", "engine 3 (qrank 2, device 127.0.0.1:2) died (pid 1).", "dead")
            raise ClusterTimeoutError("1 of 2 circuit(s) returned a result.", [failure],
                                      partial=ScatterResult(results=["kept", None]))

    magics.cluster_factory = Failing
    ip.run_cell("%mpiq start")
    err = run_error(ip, "%%mpiq scatter --out partial\nc = 1")
    assert isinstance(err, ClusterTimeoutError)
    assert err.missing == [3] and "[3:scatter] engine 3 (qrank 2, device 127.0.0.1:2) died" in str(err)
    assert ip.user_ns["partial"] == ["kept", None]
    ip.run_cell("%mpiq stop")


def test_bad_devices_file_is_a_usage_error_before_anything_starts(ip, magics, tmp_path):
    err = run_error(ip, f"%mpiq start -q 2 --devices {tmp_path / 'missing.toml'}")
    assert isinstance(err, UsageError)
    assert "Cannot read devices file" in str(err) and "missing.toml" in str(err)
    assert "usage: %mpiq start" in str(err) and M.active_cluster() is None


def test_help_lists_every_subcommand(ip, capsys):
    ip.run_line_magic("mpiq", "help")
    out = capsys.readouterr().out
    for name in (*M.LINE_COMMANDS, *M.CELL_COMMANDS):
        assert f"mpiq {name}" in out


def test_engine_errors_render_as_rank_operation_lines():
    from mpiq_magic.errors import ClusterTimeoutError, EngineFailure, HybridClusterError

    err = HybridClusterError(
        "The cell failed on 2 of 4 engine(s).",
        [EngineFailure(1, "run", "ZeroDivisionError: division by zero", traceback="tb1"),
         EngineFailure(3, "run", "ZeroDivisionError: division by zero", traceback="tb3")],
    )
    assert err._render_traceback_() == [
        "HybridClusterError: The cell failed on 2 of 4 engine(s).",
        "[1:run] ZeroDivisionError: division by zero",
        "[3:run] ZeroDivisionError: division by zero",
    ]
    assert err.engines == [1, 3] and err.failures[0].traceback == "tb1"
    timeout = ClusterTimeoutError("x", [EngineFailure(2, "barrier", "did not answer", "timeout")])
    assert timeout.missing == [2] and isinstance(timeout, TimeoutError)


def test_cluster_arguments_are_checked_before_anything_starts(tmp_path):
    from mpiq_magic.cluster import HybridCluster
    from mpiq_magic.kernel.errors import ConfigError

    with pytest.raises(ConfigError, match="at least one classical rank, got classical=0"):
        HybridCluster(0, 2)
    with pytest.raises(ConfigError, match="must be >= 0, got quantum=-1"):
        HybridCluster(1, -1)
    with pytest.raises(ConfigError, match="Unknown launcher 'ssh'"):
        HybridCluster(1, 1, launcher="ssh")
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds, got 0"):
        HybridCluster(1, 1, timeout=0)
    bad = tmp_path / "devices.toml"
    bad.write_text('[[devices]]\nhost = "127.0.0.1"\ndevice_id = 0\n')
    with pytest.raises(ConfigError, match="defines 1 device"):
        HybridCluster(1, 2, devices=bad)
    with pytest.raises(ConfigError, match="Cannot read devices file"):
        HybridCluster(1, 2, devices=tmp_path / "missing.toml")
    cluster = HybridCluster(1, 2)
    assert not cluster.running and str(cluster.status()) == "No hybrid cluster is running."


def test_distribute_parses_and_delegates(ip, magics):
    name, args = M.parse("distribute --shots 500 --monitors 2 --out res", "circuit = 1")
    assert (name, args.var, args.shots, args.monitors, args.max_variants, args.out, args.timeout) == (
        "distribute", "circuit", 500, 2, 16, "res", None)
    name, args = M.parse("distribute --var qc", None)  # line form: an existing variable
    assert (args.var, args.shots, args.out) == ("qc", 1024, "distribute_result")
    err = run_error(ip, "%mpiq distribute --shots 0")
    assert isinstance(err, UsageError) and "expected a positive integer, got 0" in str(err)
    err = run_error(ip, "%%mpiq distribute\ncircuit = 1")
    assert isinstance(err, UsageError) and M.NO_CLUSTER in str(err)

    calls = []

    class DistributingCluster(FakeCluster):
        def distribute(self, circuit, **kwargs):
            kwargs.pop("progress", None)
            calls.append((circuit, kwargs))
            return "distributed"

    magics.cluster_factory = DistributingCluster
    assert run_error(ip, "%mpiq start -q 2") is None
    try:
        assert run_error(ip, "%%mpiq distribute --shots 300 --monitors 2 --out dres\ncircuit = 'the circuit'") is None
        assert calls[-1] == ("the circuit", {"shots": 300, "monitors": 2, "max_variants": 16, "timeout": None})
        assert ip.user_ns["dres"] == "distributed"
        ip.user_ns["other"] = "another circuit"
        assert run_error(ip, "%mpiq distribute --var other --max-variants 4") is None
        assert calls[-1][0] == "another circuit" and calls[-1][1]["max_variants"] == 4
        err = run_error(ip, "%mpiq distribute --var missing_circuit")
        assert isinstance(err, UsageError) and "No variable `missing_circuit`" in str(err)
    finally:
        run_error(ip, "%mpiq stop")


def test_distribute_plans_on_the_client_and_shows_the_partition(ip, magics):
    """A real circuit: the magic plans it (the real partitioner), shows the partition and hands that
    partition to ``HybridCluster.distribute``, so the run does not search again."""
    from mpiq_magic.distribute.examples import cnot_ladder
    from mpiq_magic.kernel.config import DeviceSpec

    calls = []

    class PlanningCluster(FakeCluster):
        devices = [DeviceSpec("127.0.0.1", j, num_qubits=30) for j in range(3)]

        def distribute(self, circuit, *, progress, **kwargs):
            progress({"event": "executed", "qrank": 1, "done": 1, "total": 2})
            calls.append((circuit, kwargs))
            return "distributed"

    magics.cluster_factory = PlanningCluster
    assert run_error(ip, "%mpiq start -q 3") is None
    try:
        ip.user_ns["ladder"] = cnot_ladder(9)
        assert run_error(ip, "%mpiq distribute --var ladder --shots 100") is None
        circuit, kwargs = calls[-1]
        part = kwargs["partition"]
        assert circuit is ip.user_ns["ladder"] and part.method == "contiguous" and part.ebits == 2
        assert {p for row in part.assignment for p in row if p >= 0} == {0, 1, 2}
        ip.user_ns["not_ff"] = QuantumCircuit_with_a_non_feedforward_cut()
        assert run_error(ip, "%mpiq distribute --var not_ff") is None
        assert "partition" not in calls[-1][1]  # the cluster decides (and explains) on its own
        # observables: quasi-probability cuts where feed-forward does not apply (the run decides)
        ip.user_ns["obs"] = ["ZZ", "XX"]
        assert run_error(ip, "%mpiq distribute --var not_ff --observables obs --max-overhead 50") is None
        assert calls[-1][1] == {"observables": ["ZZ", "XX"], "mode": "auto", "max_overhead": 50.0, "shots": 1024,
                                "monitors": None, "max_variants": 16, "timeout": None}
        # X terms: Z-basis samples cannot estimate them, so no feed-forward plan is made; --mode qpd neither
        assert run_error(ip, "%mpiq distribute --var ladder --observables obs") is None
        assert "partition" not in calls[-1][1] and calls[-1][1]["observables"] == ["ZZ", "XX"]
        assert run_error(ip, "%mpiq distribute --var ladder --mode qpd --observables obs") is None
        assert "partition" not in calls[-1][1] and calls[-1][1]["mode"] == "qpd"
        ip.user_ns["zobs"] = "Z" * 9
        assert run_error(ip, "%mpiq distribute --var ladder --observables zobs") is None
        assert calls[-1][1]["partition"].method == "contiguous"  # Z terms: feed-forward samples estimate them
        for line, expected in [
            ("%mpiq distribute --var ladder --observables nothing_here", "No variable `nothing_here` holds observables"),
            ("%mpiq distribute --var ladder --max-overhead 0", "expected a positive number, got '0'"),
            ("%mpiq distribute --var ladder --mode exact", "invalid choice: 'exact'"),
        ]:
            err = run_error(ip, line)
            assert isinstance(err, UsageError) and expected in str(err), (line, err)
    finally:
        run_error(ip, "%mpiq stop")


def QuantumCircuit_with_a_non_feedforward_cut():
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.h(0)  # the control is rotated after the cut: no feed-forward partition over 2 monitors
    qc.measure_all()
    return qc


def test_partition_magic_shows_and_stores_a_partition(ip, magics, capsys):
    from mpiq_magic.distribute import PartitionResult

    name, args = M.parse("partition --qpus 4x3 --method static --out p", None)
    assert (name, args.qpus, args.method, args.var, args.out) == ("partition", [3, 3, 3, 3], "static", "circuit", "p")
    err = run_error(ip, "%%mpiq partition --qpus 3,3 --out ghz_part\nfrom mpiq_magic.distribute.examples import ghz\n"
                        "circuit = ghz(6)")
    assert err is None, err
    part = ip.user_ns["ghz_part"]
    assert isinstance(part, PartitionResult) and part.capacities == (3, 3) and part.ebits == 1
    out = capsys.readouterr().out
    assert "multilevel: 1 e-bits" in out and "qrank 1: 3 qubit(s) {3-5}" in out and "`ghz_part`" in out
    assert run_error(ip, "%mpiq partition --qpus 3,3 --method distribute --out ff") is None
    assert ip.user_ns["ff"].method == "contiguous" and "feed-forward cuts 1 frame" in capsys.readouterr().out
    for line, expected in [
        ("%mpiq partition --qpus 3,0", "expected monitor widths such as 8,8,8,8 or 4x8, got '3,0'"),
        ("%mpiq partition --qpus 2,2", "Layer"),  # 6 live qubits on 2x2: CapacityError names the layer
        ("%mpiq partition --var nothing_here --qpus 3,3", "`nothing_here` holds nothing, not a QuantumCircuit"),
        ("%mpiq partition", "give their widths with --qpus"),
        ("%mpiq partition --qpus 3,3 --monitors 3", "--monitors 3 is more than the 2 monitor(s) available"),
        ("%mpiq partition --qpus 3,3 --method best", "invalid choice: 'best'"),
    ]:
        err = run_error(ip, line)
        assert isinstance(err, UsageError) and expected in str(err), (line, err)
