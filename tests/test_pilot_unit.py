"""The pilot layer without processes: descriptions, resources, placement, metrics, futures."""

from __future__ import annotations

import pytest
from qiskit import QuantumCircuit

from mpiq_magic.kernel.config import DeviceSpec
from mpiq_magic.pilot import (
    Candidate, Demand, NoPlacementError, PilotDescription, PilotUsageError, ResourceAwarePolicy, Resources,
    TaskFuture, TaskRecord, estimated_error, wait,
)
from mpiq_magic.pilot import metrics


def circuit(n: int) -> QuantumCircuit:
    qc = QuantumCircuit(n)
    qc.h(0)
    for i in range(n - 1):
        qc.cx(i, i + 1)
    qc.measure_all()
    return qc


def test_description_validation():
    d = PilotDescription.from_mapping({"name": "a", "quantum": 3})
    assert d.kind == "local" and d.quantum == 3
    with pytest.raises(PilotUsageError, match="kind must be one of"):
        PilotDescription("a", kind="pbs")
    with pytest.raises(PilotUsageError, match="'classical' must be an integer >= 1, got 0"):
        PilotDescription("a", classical=0)
    with pytest.raises(PilotUsageError, match="Unknown pilot description key"):
        PilotDescription.from_mapping({"name": "a", "cores": 4})
    with pytest.raises(PilotUsageError, match="unknown slurm option"):
        PilotDescription("a", kind="slurm", slurm={"nodes": 2})
    with pytest.raises(PilotUsageError, match="max_error"):
        Resources.coerce({"max_error": 2})
    with pytest.raises(PilotUsageError, match="Unknown resources key"):
        Resources.coerce({"gpus": 1})


def cands():
    ideal = DeviceSpec("h", 0, num_qubits=4)
    noisy = DeviceSpec("h", 1, num_qubits=10, noise={"depolarizing": 0.01, "depolarizing_2q": 0.05, "readout": 0.02})
    mps = DeviceSpec("h", 2, num_qubits=10, method="matrix_product_state", basis_gates=("rz", "sx", "x", "cz", "measure"))
    return [Candidate("a", 0, ideal, 0), Candidate("b", 0, noisy, 0), Candidate("b", 1, mps, 3)]


def test_placement_filters_and_scores():
    policy = ResourceAwarePolicy()
    c = cands()
    p = policy.place(Demand.of([circuit(3)], Resources()), c)
    assert (p.pilot, p.qrank) == ("a", 0)  # ideal and idle
    p = policy.place(Demand.of([circuit(6)], Resources()), c)
    assert p.device == "h:2" and "too narrow" in p.rejected["a/qrank 0 (h:0)"]  # noisy loses to queue 3 of mps
    p = policy.place(Demand.of([circuit(6)], Resources(method="matrix_product_state")), c)
    assert p.device == "h:2" and "method" in p.rejected["b/qrank 0 (h:1)"]
    p = policy.place(Demand.of([circuit(3)], Resources(basis_gates=("cz",))), c)
    assert p.device == "h:2"
    p = policy.place(Demand.of([circuit(6)], Resources(max_error=0.01)), c)
    assert p.device == "h:2" and "error: estimated" in p.rejected["b/qrank 0 (h:1)"]
    with pytest.raises(NoPlacementError, match="error: estimated"):
        policy.place(Demand.of([circuit(6)], Resources(max_error=0.01, method="automatic")), c)
    with pytest.raises(NoPlacementError, match="too narrow") as info:
        policy.place(Demand.of([circuit(12)], Resources()), c)
    assert len(info.value.reasons) == 3
    err = estimated_error(c[1].device, Demand.of([circuit(3)], Resources()))
    assert err == pytest.approx(1 - 0.99 * 0.95**2 * 0.98**3)


def test_queue_moves_work_off_a_busy_device():
    a = DeviceSpec("h", 0, num_qubits=4)
    c = [Candidate("a", 0, a, 5), Candidate("b", 0, a, 1)]
    assert ResourceAwarePolicy().place(Demand.of([circuit(2)], Resources()), c).pilot == "b"


def test_futures_and_metrics_without_processes(tmp_path):
    f = TaskFuture(TaskRecord("task.x", "function", "f", submit=1.0))
    g = TaskFuture(TaskRecord("task.y", "function", "g", submit=1.0))
    assert g.cancel() and g.record.status == "cancelled"
    assert f._mark_running()
    f.record.start = 1.5
    f._settle(result=3)
    f._settle(error=RuntimeError("late"))  # ignored: settled once
    done, not_done = wait([f, g], timeout=1)
    assert f.result() == 3 and not not_done
    rows = metrics.rows_of([f.record, g.record])
    assert rows[0]["wait"] == 0.5 and rows[1]["status"] == "cancelled"
    text = metrics.to_csv(rows, tmp_path / "m.csv")
    assert text.splitlines()[0].startswith("task_id,kind,name,pilot")
    assert metrics.summary(rows)["status"] == {"done": 1, "cancelled": 1}


def test_demand_counts_equal_a_walk_of_the_instructions():
    """Demand.of uses Qiskit's Rust counts (count_ops, num_nonlocal_gates): same numbers as walking
    every instruction, for 1-, 2- and 3-qubit gates, rz (virtual), barriers, resets and measures."""
    from qiskit import QuantumCircuit

    a = QuantumCircuit(4)
    a.h(0)
    a.rz(0.3, 1)
    a.cx(0, 1)
    a.ccx(0, 1, 2)
    a.barrier()
    a.reset(3)
    a.sx(3)
    a.rzz(0.2, 2, 3)
    a.measure_all()
    b = QuantumCircuit(2)
    b.x(0)
    b.swap(0, 1)
    b.measure_all()
    ops: dict[str, int] = {}
    one_q = two_q = measures = 0
    for qc in (a, b):
        for inst in qc.data:
            name = inst.operation.name
            ops[name] = ops.get(name, 0) + 1
            if name == "measure":
                measures += 1
            elif name in ("barrier", "reset", "delay"):
                continue
            elif len(inst.qubits) >= 2:
                two_q += 1
            elif name != "rz":
                one_q += 1
    d = Demand.of([a, b], Resources())
    assert (dict(d.ops), d.one_q, d.two_q, d.measures, d.qubits) == (ops, one_q, two_q, measures, 4)
    assert (d.one_q, d.two_q, d.measures) == (3, 4, 6)  # h, sx, x; cx, ccx, rzz, swap
