"""HybridCluster without IPython: lifecycle, engine id == MPI rank, views, operations, errors.

All tests share one running cluster (1 classical + 3 quantum monitor engines); see
``cluster_fixtures.hybrid_cluster``. Nothing here kills an engine (the fault test does that on
its own cluster, through a real kernel).
"""

from __future__ import annotations

import time

import pytest

from mpiq_magic.errors import ClusterTimeoutError, HybridClusterError

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(180)]


def ghz(n: int):
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(n, name=f"ghz{n}")
    qc.h(0)
    for i in range(n - 1):
        qc.cx(i, i + 1)
    qc.measure_all()
    return qc


def test_engine_ids_are_mpi_ranks_and_roles_follow_init(hybrid_cluster):
    c = hybrid_cluster
    assert c.client.ids == [0, 1, 2, 3]
    ranks = c.view("all").pull("mpi_rank", block=True)
    assert ranks == [0, 1, 2, 3]
    roles = c.run("import json; role = (hc.role, hc.rank, hc.qrank, hc.comm_rank)", targets="all")
    assert roles.values == {0: None, 1: None, 2: None, 3: None}
    got = c.view("all").pull("role", block=True)
    assert got == [("classical", 0, None, 0), ("quantum", None, 0, 1), ("quantum", None, 1, 2), ("quantum", None, 2, 3)]
    assert [e.who for e in c.engines] == ["rank 0", "qrank 0", "qrank 1", "qrank 2"]
    assert [e.device_name for e in c.engines] == [None, "127.0.0.1:0", "127.0.0.1:1", "127.0.0.1:2"]


def test_views_target_classical_quantum_and_all(hybrid_cluster):
    c = hybrid_cluster
    assert c.classical_view.targets == [0]
    assert c.quantum_view.targets == [1, 2, 3]
    assert c.all_view.targets == [0, 1, 2, 3]
    assert c.engine_ids([2, 3]) == [2, 3]
    with pytest.raises(ValueError, match=r"Engine id\(s\) \[7\] do not exist; this cluster has engines 0..3"):
        c.engine_ids([7])
    with pytest.raises(ValueError, match="Unknown targets 'gpu'"):
        c.view("gpu")


def test_topology_and_status(hybrid_cluster):
    c = hybrid_cluster
    topo = c.topology
    assert len(topo.classical) == 1 and len(topo.quantum) == 3
    assert [(q.qrank, q.comm_rank, q.device_id) for q in topo.quantum] == [(0, 1, 0), (1, 2, 1), (2, 3, 2)]
    status = c.status()
    assert status.running and status.dead == []
    assert [e.state for e in status.engines] == ["idle"] * 4
    text = str(status)
    assert "4 engines (4 idle, 0 busy, 0 dead)" in text and "qrank 2  127.0.0.1:2" in text


def test_status_shows_busy_engines(hybrid_cluster):
    c = hybrid_cluster
    ar = c.view([2]).execute("import time; time.sleep(1.5)", block=False)
    time.sleep(0.3)
    states = [e.state for e in c.status().engines]
    ar.get(timeout=30)
    assert states == ["idle", "idle", "busy", "idle"], states
    assert [e.state for e in c.status().engines] == ["idle"] * 4


def test_run_collects_values_output_and_errors_as_rank_lines(hybrid_cluster):
    c = hybrid_cluster
    res = c.run("print('rank', hc.comm_rank)\nhc.comm_rank * 10", targets="quantum")
    assert res.values == {1: "10", 2: "20", 3: "30"}
    assert res.stdout == {1: "rank 1\n", 2: "rank 2\n", 3: "rank 3\n"}
    with pytest.raises(HybridClusterError) as info:
        c.run("if hc.qrank == 1:\n    raise ValueError(f'bad qrank {hc.qrank}')", targets="all")
    err = info.value
    assert str(err).splitlines() == ["The cell failed on 1 of 4 engine(s).", "[2:run] ValueError: bad qrank 1"]
    assert "bad qrank 1" in err.failures[0].traceback  # the engine traceback is kept
    assert "[2:run] ValueError: bad qrank 1" in c.status().engines[2].last_error


def test_run_timeout_names_the_engines_and_interrupts_them(hybrid_cluster):
    c = hybrid_cluster
    t0 = time.monotonic()
    with pytest.raises(ClusterTimeoutError) as info:
        c.run("import time\nif hc.qrank in (0, 2):\n    time.sleep(60)", targets="all", timeout=2)
    elapsed = time.monotonic() - t0
    assert 2 <= elapsed < 10, elapsed
    assert info.value.missing == [1, 3]
    assert "[1:run] engine 1 (qrank 0, device 127.0.0.1:0) did not answer within 2 s." in str(info.value)
    assert "[3:run] engine 3 (qrank 2, device 127.0.0.1:2) did not answer within 2 s." in str(info.value)
    # the stuck cells were interrupted: the engines serve the next cell at once
    t0 = time.monotonic()
    assert c.run("hc.qrank", targets="quantum", timeout=10).values == {1: "0", 2: "1", 3: "2"}
    assert time.monotonic() - t0 < 5


def test_scatter_deals_circuits_over_the_monitors(hybrid_cluster):
    c = hybrid_cluster
    res = c.scatter(circuits=[ghz(2), ghz(3), ghz(4), ghz(5), ghz(2)], shots=200)
    assert res.ok and len(res.results) == 5
    assert [r.qrank for r in res.results] == [0, 1, 2, 0, 1]
    assert [r.device for r in res.results] == [("127.0.0.1", j) for j in (0, 1, 2, 0, 1)]
    for r, n in zip(res.results, (2, 3, 4, 5, 2)):
        assert set(r.counts) <= {"0" * n, "1" * n} and sum(r.counts.values()) == 200
    assert res.payload_bytes > 0 and res.compile_cache["misses"] >= 1


def test_scatter_cell_code_runs_on_rank_0(hybrid_cluster):
    c = hybrid_cluster
    code = (
        "from qiskit import QuantumCircuit\n"
        "circuits = []\n"
        "for k in range(4):\n"
        "    qc = QuantumCircuit(1); qc.x(0) if k % 2 else None; qc.measure_all(); circuits.append(qc)\n"
        "print('built', len(circuits), 'on rank', hc.rank)\n"
    )
    res = c.scatter(code, shots=50)
    assert [r.counts for r in res.results] == [{"0": 50}, {"1": 50}, {"0": 50}, {"1": 50}]
    assert res.stdout == "built 4 on rank 0\n"
    assert c.view([0]).pull("circuits", block=True)[0] is not None  # the cell ran on rank 0 only
    assert c.run("'circuits' in dir()", targets="quantum").values == {1: "False", 2: "False", 3: "False"}


def test_scatter_send_q_and_bcast(hybrid_cluster):
    from qiskit import QuantumCircuit

    c = hybrid_cluster
    qc = QuantumCircuit(4)
    qc.h(0)
    qc.cx(0, 1)
    qc.x(3)
    qc.measure_all()
    res = c.scatter(circuits=qc, send_q=[[0, 1], [2], [3]], shots=100)
    assert [r.qrank for r in res.results] == [0, 1, 2]
    assert set(res.results[0].counts) <= {"00", "11"}
    assert res.results[1].counts == {"0": 100} and res.results[2].counts == {"1": 100}
    one = QuantumCircuit(1)
    one.x(0)
    one.measure_all()
    res = c.bcast(circuit=one, shots=10)
    assert [(r.qrank, r.counts) for r in res.results] == [(0, {"1": 10}), (1, {"1": 10}), (2, {"1": 10})]


def test_scatter_errors_name_rank_and_operation(hybrid_cluster):
    from qiskit import QuantumCircuit

    c = hybrid_cluster
    with pytest.raises(HybridClusterError) as info:
        c.scatter("circuits = 42")
    assert str(info.value).splitlines()[1] == "[0:scatter] TypeError: 'circuits' must be a QuantumCircuit or a list of them, got int."
    with pytest.raises(HybridClusterError, match=r"\[0:scatter\] NameError: The cell did not define 'nothing_here'"):
        c.scatter("x = 1", var="nothing_here")
    qc = QuantumCircuit(2)
    qc.cx(0, 1)
    with pytest.raises(HybridClusterError, match=r"\[0:scatter\] SendQError: Gate 'cx' on qubits \[0, 1\] crosses send_q groups"):
        c.scatter(circuits=qc, send_q=[[0], [1]])
    wide = QuantumCircuit(200)
    wide.h(0)
    with pytest.raises(HybridClusterError) as info:
        c.scatter(circuits=[ghz(2), wide], shots=10)
    err = info.value
    assert "[2:scatter] circuit 1: CircuitTooWideError: Circuit" in str(err)
    assert err.partial.results[0].counts and err.partial.results[1] is None
    # the monitors are still serving afterwards
    assert c.scatter(circuits=[ghz(2)], shots=5).ok


def test_gather_collects_monitor_values_by_qrank(hybrid_cluster):
    c = hybrid_cluster
    values = c.gather("value = (hc.qrank, hc.device.device_id)", var="value")
    assert values == [(0, 0), (1, 1), (2, 2)]
    with pytest.raises(HybridClusterError, match=r"\[\d:gather\] RuntimeError: NameError: 'absent' is not defined on qrank"):
        c.gather("", var="absent")


@pytest.mark.parametrize("flag, members", [("CC", 1), ("QQ", 3), ("ALL", 4)])
def test_barrier_records(hybrid_cluster, flag, members):
    records = hybrid_cluster.barrier(flag, repeat=3)
    assert len(records) == 3 and [r["seq"] for r in records] == sorted(r["seq"] for r in records)
    for rec in records:
        assert rec["flag"] == flag and len(rec["members"]) == members
        assert len(rec["arrivals"]) == members and len(rec["releases"]) == members
        assert min(rec["releases"]) >= min(rec["arrivals"])
    assert f"3 {flag} barrier(s) over {members} process(es)" in records.summary()
    with pytest.raises(ValueError, match="Unknown barrier flag 'XY'"):
        hybrid_cluster.barrier("XY")


def test_ghz_pipeline_on_the_cluster(hybrid_cluster):
    res = hybrid_cluster.ghz(30, nodes=3, shots=400)
    rec = res.reconstruction
    assert abs(rec.p_all_zero + rec.p_all_one - 1.0) < 1e-9
    assert 0.35 < rec.p_all_zero < 0.65
    assert res.num_blocks == 3 and set(res.timings) >= {"compile", "scatter", "execute", "total"}
    with pytest.raises(ValueError, match="--nodes 5 is more than the 3 quantum monitor engine"):
        hybrid_cluster.ghz(10, nodes=5)
    # a subset of the monitors: 4 blocks dealt to qranks 0 and 1 only
    sub = hybrid_cluster.ghz(20, nodes=2, blocks=4, shots=200)
    assert sub.num_blocks == 4 and abs(sub.reconstruction.p_all_zero + sub.reconstruction.p_all_one - 1.0) < 1e-9
    assert sub.assignment[:2] == [[0, 2], [1, 3]] and not any(sub.assignment[2:])
    assert sub.num_monitors == 2 and sub.devices == ["127.0.0.1:0", "127.0.0.1:1", "127.0.0.1:0", "127.0.0.1:1"]


def test_progress_events_reach_the_callbacks(hybrid_cluster):
    events = []
    hybrid_cluster.scatter(circuits=[ghz(2)] * 6, shots=10, progress=events.append)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "scatter" and kinds[-1] == "gather"
    final = {e["qrank"]: (e["done"], e["total"]) for e in events if e["event"] == "executed"}
    assert final == {0: (2, 2), 1: (2, 2), 2: (2, 2)}


def test_long_scatters_report_progress_while_they_run(hybrid_cluster):
    """Rank 0 publishes each monitor's progress (at most every 0.1 s) while others still run."""
    from mpiq_magic.cluster import scatter as cluster_ops

    events = []
    code = (
        "from qiskit import QuantumCircuit\n"
        "def layer_circuit(n, layers):\n"
        "    qc = QuantumCircuit(n)\n"
        "    for layer in range(layers):\n"
        "        for q in range(n):\n"
        "            qc.rx(0.1 * (q + 1) * (layer + 1), q)\n"
        "        for q in range(layer % 2, n - 1, 2):\n"
        "            qc.cx(q, q + 1)\n"
        "    qc.measure_all()\n"
        "    return qc\n"
        "circuits = [layer_circuit(2, 1), layer_circuit(2, 1), layer_circuit(18, 40)]\n"
    )
    t0 = time.monotonic()
    hybrid_cluster.scatter(code, shots=20, progress=lambda e: events.append((time.monotonic() - t0, e)))
    end = time.monotonic() - t0
    early = [t for t, e in events if e["event"] == "executed" and e["qrank"] in (0, 1) and e["done"] == 1]
    assert early and min(early) < end - cluster_ops.EVENT_INTERVAL, (early, end)


def test_payload_bytes_never_reach_the_client(hybrid_cluster):
    """Rank 0 builds and compiles the circuits; the payloads go over MPI-Q to the monitors.

    The client receives the results (tiny here: 4 shots each) and a few control messages,
    a small fraction of the payload bytes the monitors received.
    """
    code = (
        "from qiskit.circuit.random import random_circuit\n"
        "circuits = [random_circuit(8, 20, measure=True, seed=s) for s in range(6)]\n"
    )
    with hybrid_cluster.client_traffic() as traffic:
        res = hybrid_cluster.scatter(code, shots=4)
    assert res.ok
    assert res.payload_bytes > 100_000, res.payload_bytes
    assert traffic["bytes"] < res.payload_bytes / 10, (traffic, res.payload_bytes)


def test_second_start_is_refused_while_running(hybrid_cluster):
    from mpiq_magic.errors import ClusterStateError

    with pytest.raises(ClusterStateError, match="is already running; stop it first"):
        hybrid_cluster.start()
