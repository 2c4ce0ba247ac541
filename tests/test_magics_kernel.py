"""The magics end to end in a real Jupyter kernel (nbclient), ending with the fault test.

One kernel for the module (``kernel_session``); the tests run in file order on the cluster
started by the first one. The last tests kill a monitor engine (by its PID, from inside the
kernel that started it) during a scatter, then stop the cluster and start a fresh one.
"""

from __future__ import annotations

import re
import time

import pytest

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(240)]

CIRCUITS = """\
from qiskit import QuantumCircuit
circuits = []
for n in (2, 3, 4, 2, 3, 4, 2, 3):
    qc = QuantumCircuit(n)
    qc.h(0)
    for i in range(n - 1):
        qc.cx(i, i + 1)
    qc.measure_all()
    circuits.append(qc)
"""


def ok(session, source: str):
    result = session.run(source)
    assert result.error is None, f"cell failed:\n{source}\n{result.error_text}"
    return result


def test_start_shows_the_topology(kernel_session):
    out = ok(kernel_session, "%mpiq start -c 1 -q 3 --timeout 60").text
    assert "Started 1 classical + 3 quantum engines (engine id == MPI rank)" in out
    assert "hybrid communicator: 1 classical, 3 quantum" in out
    assert "qrank 2  comm rank 3   device (127.0.0.1, 2)" in out
    ok(kernel_session, "mpiq_cluster.wait_ready()")
    err = kernel_session.run("%mpiq start")  # IPython prints usage errors, without a traceback
    assert "UsageError: A hybrid cluster is already running" in err.text


def test_run_cell_streams_output_by_engine(kernel_session):
    out = ok(kernel_session, "%%mpiq run --targets quantum\nprint('hello from qrank', hc.qrank)\nhc.qrank * 10").text
    for j in range(3):
        assert f"hello from qrank {j}" in out
    assert "[stdout:1]" in out and "[stdout:3]" in out
    assert re.search(r"Out\[3:\d+\]: 20", out), out


def test_scatter_cell_returns_results_in_out(kernel_session):
    out = ok(kernel_session, "%%mpiq scatter --shots 100 --out res\n" + CIRCUITS).text
    assert "[mpiq] 8 circuit(s) ran on 3 monitor(s); results in `res`" in out
    ok(kernel_session, (
        "assert [r.qrank for r in res] == [0, 1, 2, 0, 1, 2, 0, 1]\n"
        "assert all(set(r.counts) <= {'0' * r.num_bits, '1' * r.num_bits} for r in res)\n"
        "assert all(sum(r.counts.values()) == 100 for r in res)"
    ))


def test_scatter_payloads_never_pass_through_the_client(kernel_session):
    ok(kernel_session, (
        "code = '''from qiskit.circuit.random import random_circuit\n"
        "circuits = [random_circuit(8, 20, measure=True, seed=s) for s in range(6)]\n'''\n"
        "with mpiq_cluster.client_traffic() as traffic:\n"
        "    get_ipython().run_cell_magic('mpiq', 'scatter --shots 4 --out big', code)\n"
        "sent = mpiq_cluster.scatter(code, shots=4).payload_bytes\n"
        "print('client received', traffic['bytes'], 'bytes; payloads', sent, 'bytes')\n"
        "assert sent > 100_000 and traffic['bytes'] < sent / 10, (traffic, sent)"
    ))


def test_bcast_gather_barrier_ghz_status(kernel_session):
    ok(kernel_session, (
        "%%mpiq bcast --shots 10 --out bc\n"
        "from qiskit import QuantumCircuit\n"
        "circuit = QuantumCircuit(1); circuit.x(0); circuit.measure_all()"
    ))
    ok(kernel_session, "assert [(r.qrank, r.counts) for r in bc] == [(0, {'1': 10}), (1, {'1': 10}), (2, {'1': 10})]")
    ok(kernel_session, "%%mpiq gather --var dev --out devs\ndev = hc.device.device_id")
    ok(kernel_session, "assert devs == [0, 1, 2], devs")
    res = ok(kernel_session, "%mpiq barrier QQ --repeat 5 --out recs")
    assert "5 QQ barrier(s) over 3 process(es): release skew median" in res.text
    # nbclient has no widget frontend: the barrier view falls back to a static plotly figure
    figures = [o for o in res.outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert figures, "the barrier view showed no figure"
    rows = {y for trace in figures[-1]["data"]["application/vnd.plotly.v1+json"]["data"] for y in (trace.get("y") or [])}
    assert {"qrank 0", "qrank 1", "qrank 2"} <= rows, rows
    ok(kernel_session, "assert len(recs) == 5 and all(len(r['releases']) == 3 for r in recs)")
    out = ok(kernel_session, "%mpiq ghz 24 --nodes 3 --shots 200").text
    assert "GHZ(24) from 3 block(s), 200 shots" in out and "The GHZResult is `ghz_result`." in out
    out = ok(kernel_session, "%mpiq status").text
    assert "4 engines (4 idle, 0 busy, 0 dead)" in out


def test_primitives_in_one_line_after_start(kernel_session):
    """Issue 12: ``mpiq_cluster.sampler()`` / ``.estimator()`` in the kernel that ran ``%mpiq start``."""
    ok(kernel_session, (
        "import numpy as np\n"
        "from qiskit import QuantumCircuit\n"
        "from qiskit.circuit import Parameter\n"
        "from qiskit.primitives import BaseEstimatorV2, BaseSamplerV2\n"
        "from qiskit.quantum_info import SparsePauliOp\n"
        "from mpiq_magic.widgets import ProgressWidget\n"
        "theta = Parameter('theta')\n"
        "pqc = QuantumCircuit(2); pqc.ry(theta, 0); pqc.cx(0, 1)\n"
        "mqc = pqc.measure_all(inplace=False)\n"
        "view = ProgressWidget(label='primitives', monitors=3, mode='text')\n"
        "sampler = mpiq_cluster.sampler(seed=5, progress=view)\n"
        "assert isinstance(sampler, BaseSamplerV2)\n"
        "values = np.linspace(0, np.pi, 6)[:, None]\n"
        "first = sampler.run([(mqc, values)], shots=400).result()[0]\n"
        "second = sampler.run([(mqc, values[::-1])], shots=400).result()[0]\n"
        "assert first.data.meas.shape == (6,) and first.data.meas.num_shots == 400\n"
        "assert all(set(first.data.meas.get_counts(i)) <= {'00', '11'} for i in range(6))\n"
        "assert first.data.meas.get_counts(0) == {'00': 400} and first.data.meas.get_counts(5) == {'11': 400}\n"
        "assert sorted(set(first.metadata['qranks'].tolist())) == [0, 1, 2]\n"
        "assert first.metadata['payloads_sent'] == 3 and second.metadata['payloads_sent'] == 0\n"
        "assert second.metadata['payload_cache_hits'] == 3 and second.metadata['bytes']['payloads'] == 0\n"
        "assert view.done >= 6 and set(view.monitors) == {0, 1, 2}, (view.done, view.monitors)\n"
        "estimator = mpiq_cluster.estimator(seed=5, default_precision=0.02)\n"
        "assert isinstance(estimator, BaseEstimatorV2)\n"
        "est = estimator.run([(pqc, [SparsePauliOp('ZZ'), SparsePauliOp('ZI')], [[0.0], [np.pi]])]).result()[0]\n"
        "assert np.allclose(est.data.evs, [1.0, -1.0]), est.data.evs\n"
    ))


def test_engine_errors_are_one_error_with_rank_lines(kernel_session):
    res = kernel_session.run("%%mpiq run\nif hc.comm_rank in (1, 3):\n    1 / 0")
    assert res.error["ename"] == "HybridClusterError"
    assert res.error["traceback"] == [
        "HybridClusterError: The cell failed on 2 of 4 engine(s).",
        "[1:run] ZeroDivisionError: division by zero",
        "[3:run] ZeroDivisionError: division by zero",
    ]
    usage = kernel_session.run("%mpiq barrier XX")
    assert "UsageError: argument CC|QQ|ALL: expected CC, QQ or ALL, got 'XX'" in usage.text


def test_cell_timeout_names_the_engines_that_did_not_answer(kernel_session):
    res = kernel_session.run("%%mpiq run --targets quantum --timeout 2\nimport time\nif hc.qrank == 1:\n    time.sleep(60)")
    assert res.error["ename"] == "ClusterTimeoutError"
    assert "[2:run] engine 2 (qrank 1, device 127.0.0.1:1) did not answer within 2 s." in res.error["traceback"]
    ok(kernel_session, "%%mpiq run --targets quantum\nassert hc.qrank in (0, 1, 2)")


HEAVY = """\
from qiskit import QuantumCircuit
def light():
    qc = QuantumCircuit(2); qc.h(0); qc.cx(0, 1); qc.measure_all()
    return qc
def heavy(n=20, layers=60):
    qc = QuantumCircuit(n)
    for layer in range(layers):
        for q in range(n):
            qc.rx(0.1 * (q + 1) * (layer + 1), q)
        for q in range(layer % 2, n - 1, 2):
            qc.cx(q, q + 1)
    qc.measure_all()
    return qc
circuits = [light(), light(), heavy()]
"""

KILLER = """\
import os, signal, time
victim = mpiq_cluster.engines[3]
old_pids = [pid for e in mpiq_cluster.engines for pid in (e.pid, e.ppid)]
finished, killed = set(), []
def kill_qrank_2_when_the_others_are_done(event):
    if event.get('event') == 'executed' and event.get('done') == event.get('total'):
        finished.add(event['qrank'])
        if {0, 1} <= finished and not killed:
            os.kill(victim.pid, signal.SIGKILL)  # an engine this kernel started, by its PID
            killed.append(time.monotonic())
mpiq_cluster.progress.append(kill_qrank_2_when_the_others_are_done)
print(victim.label(), victim.pid)
"""


def test_killed_monitor_fails_or_fails_over_and_restart_works(kernel_session):
    ok(kernel_session, KILLER)
    t0 = time.monotonic()
    res = kernel_session.run("%%mpiq scatter --shots 100 --out results --timeout 60 --no-failover\n" + HEAVY)
    elapsed = time.monotonic() - t0
    assert res.error is not None, res.text
    assert res.error["ename"] == "ClusterTimeoutError"
    lines = res.error["traceback"]
    assert lines[0] == (
        "ClusterTimeoutError: %%mpiq scatter: 2 of 3 circuit(s) returned a result; the results that did are kept."
    )
    assert re.fullmatch(
        r"\[3:scatter\] engine 3 \(qrank 2, device 127\.0\.0\.1:2\) died \(pid \d+\); circuit\(s\) \[2\] got no result\.",
        lines[1],
    ), lines
    assert elapsed < 60, elapsed  # within the cell's timeout (in practice about a second)
    ok(kernel_session, (
        "assert killed, 'the monitor was not killed'\n"
        "assert results[0].counts and results[1].counts and results[2] is None\n"
        "assert (results[0].qrank, results[1].qrank) == (0, 1)"
    ))
    status = ok(kernel_session, "%mpiq status").text
    assert "4 engines (3 idle, 0 busy, 1 dead)" in status
    assert re.search(r"3\s+qrank 2\s+127\.0\.0\.1:2\s+\d+\s+dead\s+\[3:scatter\] engine 3", status), status
    # operations that need the dead engine say so at once
    dead = kernel_session.run("%mpiq barrier ALL")
    assert dead.error["ename"] == "ClusterTimeoutError"
    assert "[3:barrier] engine 3 (qrank 2, device 127.0.0.1:2) is dead" in "\n".join(dead.error["traceback"])
    # the survivors still serve: the circuits are dealt over the live monitors
    ok(kernel_session, "%%mpiq scatter --shots 10 --out rest\ncircuits = [light(), light(), light()]")
    ok(kernel_session, "assert [r.qrank for r in rest] == [0, 1, 0]")
    stop = ok(kernel_session, "%mpiq stop").text
    assert "Stopped the hybrid cluster." in stop
    ok(kernel_session, (  # no engine process (nor its sh parent) of the stopped cluster is left
        "import psutil\n"
        "def running(pid):\n"
        "    try:\n"
        "        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE\n"
        "    except psutil.Error:\n"
        "        return False\n"
        "assert not [pid for pid in old_pids if running(pid)], old_pids"
    ))
    start = ok(kernel_session, "%mpiq start -c 1 -q 3 --timeout 60").text
    assert "Started 1 classical + 3 quantum engines" in start
    ok(kernel_session, "%%mpiq scatter --shots 10 --out again\n" + HEAVY + "circuits = [light()] * 3")
    ok(kernel_session, "assert [r.qrank for r in again] == [0, 1, 2]")
    status = ok(kernel_session, "%mpiq status").text
    assert "4 engines (4 idle, 0 busy, 0 dead)" in status
    # failover (the default): the dead monitor's circuit re-runs on a survivor, the cell succeeds
    ok(kernel_session, KILLER)
    res = ok(kernel_session, "%%mpiq scatter --shots 100 --out moved --timeout 60\n" + HEAVY)
    assert re.search(
        r"\[mpiq\] \[3:scatter\] engine 3 \(qrank 2, device 127\.0\.0\.1:2\) died \(pid \d+\); "
        r"circuit\(s\) \[2\] re-ran on qrank\(s\) \[[01]\]\.", res.text), res.text
    ok(kernel_session, (
        "assert killed, 'the monitor was not killed'\n"
        "assert all(r.counts and r.error is None for r in moved) and moved[2].qrank in (0, 1)\n"
        "assert sum(moved[2].counts.values()) == 100"
    ))
    assert "4 engines (3 idle, 0 busy, 1 dead)" in ok(kernel_session, "%mpiq status").text
    ok(kernel_session, "%mpiq stop")
