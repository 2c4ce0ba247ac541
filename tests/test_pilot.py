"""Pilots and tasks with real processes: two local pilots (tests/pilot_fixtures.py)."""

from __future__ import annotations

import csv
import json
import os
import time

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector

from pilot_fixtures import NARROW_QUBITS, TESTS, WIDE_QUBITS, alive, two_pilots  # noqa: F401

pytestmark = pytest.mark.timeout(300) if hasattr(pytest.mark, "timeout") else []


def ghz(n: int, name: str | None = None) -> QuantumCircuit:
    qc = QuantumCircuit(n, name=name or f"ghz{n}")
    qc.h(0)
    for i in range(n - 1):
        qc.cx(i, i + 1)
    qc.measure_all()
    return qc


def whoami(hc):
    from mpiq_magic.pilot import context

    return {"pid": os.getpid(), "rank": hc.rank, "pilot": context().pilot, "monitors": hc.quantum_size}


def fail(message):
    raise ValueError(message)


def slow(seconds):
    time.sleep(seconds)
    return seconds


def slow_marked(path, seconds):
    """Sleep after creating ``path``: the test knows the engine is busy with it."""
    open(path, "w").close()
    time.sleep(seconds)
    return seconds


def busy_engine(pm, tmp_path, seconds, **where):
    """A function task holding a classical engine, returned once it runs there."""
    mark = tmp_path / f"busy-{time.monotonic_ns()}"
    fut = pm.submit_task(slow_marked, str(mark), seconds, **where)
    deadline = time.time() + 60
    while not mark.exists() and time.time() < deadline:
        time.sleep(0.01)
    assert mark.exists(), f"the function task {fut} did not start within 60 s"
    return fut


def sample_on_rank0(hc, n):
    """A function task using the pilot's primitives from classical rank 0 (MPI-Q to its monitors)."""
    from mpiq_magic.pilot import context

    qc = QuantumCircuit(n)
    qc.x(range(n))
    qc.measure_all()
    result = context().sampler.run([(qc, None, 50)]).result()
    return result[0].data.meas.get_counts()


def test_unpinned_tasks_use_every_pilot(two_pilots):
    pm = two_pilots
    futures = [pm.submit_task(whoami) for _ in range(8)]
    done, not_done = pm.wait(futures, timeout=120)
    assert not not_done
    pilots = {f.result()["pilot"] for f in futures}
    assert pilots == {"wide", "narrow"}
    assert all(f.record.pilot == f.result()["pilot"] for f in futures)
    # quantum tasks: with the error term off, the queue spreads them over every pilot and device
    from mpiq_magic.pilot import ResourceAwarePolicy

    default, pm.policy = pm.policy, ResourceAwarePolicy(error_weight=0.0)
    try:
        qf = [pm.submit_task(ghz(3), shots=64) for _ in range(12)]
    finally:
        pm.policy = default
    for f in pm.as_completed(qf, timeout=120):
        assert f.result().data.meas.num_shots == 64
    assert {f.record.pilot for f in qf} == {"wide", "narrow"}
    assert len({f.record.devices for f in qf}) == 4
    assert all(f.record.devices == (f.placement["device"],) for f in qf)


def test_default_policy_prefers_the_ideal_device_and_says_why(two_pilots):
    f = two_pilots.submit_task(ghz(3), shots=32)
    f.result(timeout=120)
    assert f.placement["pilot"] == "wide"
    assert f.placement["estimated_error"] == 0
    assert any("estimated error" in r for r in f.placement["reasons"])


def test_pinned_task_runs_on_that_pilots_engine(two_pilots):
    pm = two_pilots
    narrow = pm.pilot("narrow")
    classical_pids = {narrow.engine_pids[e] for e in narrow.cluster.engine_ids("classical")}
    futures = [pm.submit_task(whoami, pilot="narrow") for _ in range(4)]
    for f in futures:
        got = f.result(timeout=120)
        assert got["pilot"] == "narrow" and got["pid"] in classical_pids
        assert got["pid"] == narrow.engine_pids[f.record.engine]
    one = pm.submit_task(whoami, pilot="narrow", resources={"engine": 1}).result(timeout=120)
    assert one["pid"] == narrow.engine_pids[1] and one["rank"] == 1
    q = pm.submit_task(ghz(2), pilot="narrow", shots=50)
    q.result(timeout=120)
    assert q.record.pilot == "narrow"
    assert q.record.devices[0] in {d.name for d in narrow.devices}
    counts = pm.submit_task(sample_on_rank0, 3, pilot="wide").result(timeout=120)
    assert counts == {"111": 50}


def test_wide_circuit_is_never_placed_on_a_narrow_device(two_pilots):
    from mpiq_magic.pilot import NoPlacementError

    pm = two_pilots
    wide_names = {d.name for d in pm.pilot("wide").devices}
    futures = [pm.submit_task(ghz(NARROW_QUBITS + 2), shots=20) for _ in range(10)]
    for f in futures:
        f.result(timeout=120)
        assert f.record.pilot == "wide" and set(f.record.devices) <= wide_names
        assert all("too narrow" in why for why in f.placement["rejected"].values())
    with pytest.raises(NoPlacementError, match="too narrow: the task needs 6 qubits, the device has 4"):
        pm.submit_task(ghz(NARROW_QUBITS + 2), pilot="narrow")
    with pytest.raises(NoPlacementError, match=f"No device can run a {WIDE_QUBITS + 1}-qubit task"):
        pm.submit_task(ghz(WIDE_QUBITS + 1))


def test_a_failing_task_does_not_disturb_others(two_pilots):
    pm = two_pilots
    bad = pm.submit_task(fail, "bad input 17", pilot="narrow", resources={"engine": 0})
    good = [pm.submit_task(whoami, pilot="narrow", resources={"engine": e}) for e in (1, 0, 1)]
    with pytest.raises(ValueError, match="bad input 17"):
        bad.result(timeout=120)
    assert bad.record.status == "failed" and "bad input 17" in bad.record.error
    assert [g.result(timeout=120)["rank"] for g in good] == [1, 0, 1]
    # a bad quantum task in a batch fails alone: its values do not match its parameters
    th = ParameterVector("t", 3)
    pc = QuantumCircuit(3)
    for i in range(3):
        pc.ry(th[i], i)
    pc.measure_all()
    batch = [pm.submit_task((pc, np.full(3, np.pi)), pilot="wide", shots=40) for _ in range(5)]
    broken = pm.submit_task((pc, np.zeros(2)), pilot="wide", shots=40)
    batch += [pm.submit_task((pc, np.full(3, np.pi)), pilot="wide", shots=40) for _ in range(5)]
    with pytest.raises(Exception):
        broken.result(timeout=120)
    for f in batch:
        assert f.result(timeout=120).data.meas.get_counts() == {"111": 40}
    assert pm.submit_task(whoami, pilot="wide").result(timeout=120)["pilot"] == "wide"


def test_coalesced_parameter_rows_match_their_tasks(two_pilots):
    pm = two_pilots
    th = ParameterVector("t", 4)
    pc = QuantumCircuit(4)
    for i in range(4):
        pc.ry(th[i], i)
    pc.measure_all()
    rows = [np.array([np.pi * ((k >> i) & 1) for i in range(4)]) for k in range(16)]
    futures = [pm.submit_task((pc, r), pilot="wide", shots=30) for r in rows]
    for k, f in enumerate(futures):
        expect = format(k, "04b")
        assert f.result(timeout=120).data.meas.get_counts() == {expect: 30}
    assert max(f.record.batch for f in futures) >= 1


def test_metrics_rows_csv_and_json(two_pilots, tmp_path):
    pm = two_pilots
    rows = pm.metrics()
    assert rows and all(r["task_id"] and r["pilot"] for r in rows)
    finished = [r for r in rows if r["status"] in ("done", "failed")]
    assert all(r["wait"] is not None and r["execution"] is not None and r["wait"] >= -0.05 for r in finished)
    pm.write_metrics(str(tmp_path / "m.csv"))
    pm.write_metrics(str(tmp_path / "m.json"))
    with open(tmp_path / "m.csv") as fh:
        parsed = list(csv.DictReader(fh))
    assert len(parsed) == len(rows) and parsed[0]["task_id"] == rows[0]["task_id"]
    assert {r["status"] for r in json.loads((tmp_path / "m.json").read_text())} >= {"done", "failed"}
    from mpiq_magic.pilot import metrics

    assert "task_id" in metrics.text_table(rows) and "#" in metrics.timeline(rows)


def test_the_direct_link_drops_forged_answers(two_pilots, tmp_path):
    """Quantum batches travel on a signed ZeroMQ link: an unsigned answer, one signed with another
    key, and one whose payload does not match its signed digest are all dropped unread."""
    import pickle

    import zmq
    from jupyter_client.session import Session

    from mpiq_magic.pilot import agent, channel

    pm = two_pilots
    wide = pm.pilot("wide")
    busy = busy_engine(pm, tmp_path, 1.5, pilot="wide")  # rank 0 busy: the quantum batch waits behind it
    real = pm.submit_task(ghz(3), pilot="wide", shots=40)
    deadline = time.time() + 30
    while not wide._batches and time.time() < deadline:
        time.sleep(0.01)
    (batch,) = list(wide._batches)
    forged = pickle.dumps([agent.Outcome(real.task_id, True, "forged", 0.0, 0.0)])
    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.linger = 0
    sock.connect(wide._channel.results_url)
    try:
        sock.send_multipart([b"<IDS|MSG>", b"", b"{}", b"{}", b"{}", b"{}", forged])  # unsigned
        Session(key=b"some other key").send(sock, channel.OUTCOMES, {"batch": batch, "sha256": channel.digest(forged)},
                                            buffers=[forged])
        right = channel.session_like(wide.cluster.client.session)
        right.send(sock, channel.OUTCOMES, {"batch": batch, "sha256": channel.digest(b"something else")},
                   buffers=[forged])
        assert busy.result(timeout=60) == 1.5
        counts = real.result(timeout=60).data.meas.get_counts()
    finally:
        sock.close()
    assert set(counts) <= {"000", "111"} and sum(counts.values()) == 40
    assert real.record.start >= busy.record.end - 0.05  # ran after the function task: took turns


def test_a_dead_rank0_fails_its_quantum_batches(tmp_path):
    from mpiq_magic.pilot import PilotDescription, PilotEngineLostError, PilotManager

    with PilotManager() as pm:
        env = {"PYTHONPATH": os.pathsep.join([TESTS, *filter(None, [os.environ.get("PYTHONPATH")])])}
        p = pm.create_pilot(PilotDescription("short", classical=1, quantum=1, timeout=60, env=env))
        busy = busy_engine(pm, tmp_path, 30)  # holds rank 0 while its engine is killed
        queued = pm.submit_task(ghz(2), shots=10)
        deadline = time.time() + 30
        while not p._batches and time.time() < deadline:
            time.sleep(0.01)
        assert p._batches, "the quantum batch should be on the link, behind the running function task"
        os.kill(p.engine_pids[0], 9)
        with pytest.raises(PilotEngineLostError, match="rank 0's engine unregistered"):
            queued.result(timeout=60)
        with pytest.raises(Exception):
            busy.result(timeout=60)
        pids = p.pids()
    deadline = time.time() + 15
    while any(alive(q) for q in pids) and time.time() < deadline:
        time.sleep(0.2)
    assert not [q for q in pids if alive(q)]


def test_cancel_leaves_no_processes_behind(two_pilots):
    from concurrent.futures import CancelledError

    from mpiq_magic.pilot import PilotStoppedError

    pm = two_pilots
    wide = pm.pilot("wide")
    running = pm.submit_task(slow, 30, pilot="wide")
    blocker = pm.submit_task(slow, 30, pilot="wide")  # fills the engine's window of 2
    queued = [pm.submit_task(slow, 0.1, pilot="wide") for _ in range(4)]
    queued_q = pm.submit_task(ghz(2), pilot="wide")
    deadline = time.time() + 60
    while running.record.start is None and time.time() < deadline:
        time.sleep(0.05)
        running.record.start = running.record.start  # set by the engine's answer only; poll the state
        if running.running():
            break
    assert running.running()
    assert queued[0].cancel() and queued[0].cancelled()
    with pytest.raises(CancelledError):
        queued[0].result()
    pids = [p for pilot in pm.pilots.values() for p in pilot.pids()]
    assert pids and all(alive(p) for p in wide.pids())
    others = [blocker, *queued, queued_q]
    finished = [f for f in others if f.done()]  # on a loaded machine the quantum task may be done
    pm.cancel()  # every pilot: queued tasks cancelled, running ones failed, processes stopped
    with pytest.raises(PilotStoppedError):
        running.result(timeout=30)
    assert all(f.cancelled() or isinstance(f.exception(timeout=30), PilotStoppedError)
               for f in others if f not in finished)
    assert blocker not in finished
    deadline = time.time() + 15
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if alive(p)]
    assert {r["status"] for r in pm.metrics()} >= {"cancelled"}
    assert all(p.state == "stopped" for p in pm.pilots.values())
