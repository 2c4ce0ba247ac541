"""Quasi-probability cuts (mpiq_magic.distribute.qpd): in-process checks, and one mpiexec job.

In-process: the overhead refusal (nothing reaches the sampler), the vectorized reconstruction
against qiskit-addon-cutting's ``reconstruct_expectation_values``, usage errors. MPI: 1 classical
rank + 2 monitors of 3 qubits; rank 0 cuts 4-qubit circuits that feed-forward cannot run (the
control of the cut gate gets an H afterwards) with ``find_cuts`` at the monitors' width and with
partition labels, runs the subexperiments through ``SamplerV2(hc)``, and compares the
reconstruction with exact ``Statevector`` expectation values.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpirun import results, run_mpi

pytestmark = pytest.mark.timeout(120)


def circuit_4q():
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(4, name="qpd4")
    for q in range(4):
        qc.ry(0.3 + 0.2 * q, q)
    qc.cx(0, 1); qc.cx(2, 3); qc.cx(1, 2); qc.h(1); qc.rz(0.7, 2); qc.cx(1, 2); qc.ry(0.4, 0); qc.ry(0.5, 3)
    return qc


class RecordingSampler:
    """Refuses to run: a refusal must happen before anything is sampled."""

    def __init__(self):
        self.calls = 0

    def run(self, pubs, shots=None):
        self.calls += 1
        raise AssertionError("the sampler was called")


def test_refuses_above_max_overhead_before_running():
    from mpiq_magic.distribute.qpd import OverheadError, cut_and_run
    from mpiq_magic.kernel.errors import UsageError

    sampler = RecordingSampler()
    with pytest.raises(OverheadError) as info:
        cut_and_run(sampler, circuit_4q(), "ZZZZ", partition="AABB", max_overhead=10)
    err = info.value
    assert isinstance(err, UsageError)
    assert err.overhead == 81 and err.max_overhead == 10 and len(err.cuts) == 2
    assert "sampling overhead of 81" in str(err) and "max_overhead=10" in str(err) and "nothing was run" in str(err)
    assert sampler.calls == 0
    # find_cuts at width 2 needs the same two CNOT cuts
    with pytest.raises(OverheadError, match="overhead of 81"):
        cut_and_run(sampler, circuit_4q(), "ZZZZ", max_qubits=2, max_overhead=80)
    assert sampler.calls == 0


def test_plan_reports_overhead_cuts_and_subexperiments():
    from mpiq_magic.distribute.qpd import plan_cuts

    plan = plan_cuts(circuit_4q(), ["ZZII", "IIZZ"], max_qubits=3)
    assert plan.overhead == 9 and len(plan.cuts) == 1 and plan.cuts[0].kind == "gate"
    assert max(plan.subcircuit_widths.values()) <= 3
    assert plan.num_subexperiments == sum(len(v) for v in plan.subexperiments.values()) > 0
    assert "sampling overhead 9" in plan.summary()
    labelled = plan_cuts(circuit_4q(), "ZZZZ", partition=[0, 0, 1, 1], generate=False)
    assert labelled.overhead == 81 and labelled.partition_labels == "AABB"
    assert [c.qubits for c in labelled.cuts] == [(1, 2), (1, 2)] and labelled.num_subexperiments == 0


def test_vectorized_reconstruction_equals_the_addon():
    from qiskit_addon_cutting import reconstruct_expectation_values
    from qiskit_aer.primitives import SamplerV2 as AerSampler

    from mpiq_magic.distribute.qpd import plan_cuts, reconstruct

    plan = plan_cuts(circuit_4q(), ["ZZII", "IZZI", "XIIX"], max_qubits=3)
    res = {k: AerSampler(seed=2).run(v, shots=200).result() for k, v in plan.subexperiments.items()}
    ref = reconstruct_expectation_values(res, plan.coefficients, plan.problem.subobservables)
    mine = reconstruct(res, plan.coefficients, plan.problem.subobservables, [0, 100, 200])
    assert mine.shape == (3, 3)
    np.testing.assert_allclose(mine[0], ref, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(partition="AAB"), "3 label"),
        (dict(max_qubits=0), "max_qubits must be a positive integer"),
        (dict(max_qubits=3, shots=0), "shots must be a positive integer"),
        (dict(max_qubits=3, batches=1), "batches must be an integer between 2"),
        (dict(), "does not say how wide its devices are"),
    ],
)
def test_usage_errors(kwargs, match):
    from mpiq_magic.distribute.qpd import QPDError, cut_and_run

    with pytest.raises(QPDError, match=match):
        cut_and_run(RecordingSampler(), circuit_4q(), "ZZZZ", **kwargs)


def test_bad_observables_and_mid_circuit_measurements():
    from qiskit import QuantumCircuit

    from mpiq_magic.distribute.qpd import QPDError, plan_cuts

    with pytest.raises(QPDError, match="acts on 2 qubits but the circuit has 4"):
        plan_cuts(circuit_4q(), "ZZ", max_qubits=3)
    qc = QuantumCircuit(2, 1)
    qc.h(0); qc.measure(0, 0); qc.cx(0, 1)
    with pytest.raises(QPDError, match="mid-circuit measure"):
        plan_cuts(qc, "ZZ", max_qubits=1)


DEVICES_TOML = """
[[devices]]
host = "127.0.0.1"
device_id = 0
num_qubits = 3
seed = 21

[[devices]]
host = "127.0.0.1"
device_id = 1
num_qubits = 3
seed = 22
"""

JOB = r"""
import sys, time
import numpy as np
from mpi4py import MPI
from mpiq_magic import kernel as mpiq

def abort_on_error(kind, value, tb):
    sys.__excepthook__(kind, value, tb)
    sys.stderr.flush()
    MPI.COMM_WORLD.Abort(1)
sys.excepthook = abort_on_error

hc = mpiq.init(devices=sys.argv[1], classical=1, timeout=90)
if hc.is_quantum:
    from monitor_engine.serve import serve
    report = serve(hc, idle_timeout=100)
    emit({"qrank": hc.qrank, "stopped": report.stopped})
    sys.exit(0)

from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp, Statevector
from mpiq_magic.primitives import SamplerV2
from mpiq_magic.distribute.qpd import cut_and_run

def exact(qc, ops):
    sv = Statevector(qc)
    return [float(np.real(sv.expectation_value(SparsePauliOp(o)))) for o in ops]

out = {"runs": []}
qc = QuantumCircuit(4, name="qpd4")
for q in range(4):
    qc.ry(0.3 + 0.2 * q, q)
qc.cx(0, 1); qc.cx(2, 3); qc.cx(1, 2); qc.h(1); qc.rz(0.7, 2); qc.cx(1, 2); qc.ry(0.4, 0); qc.ry(0.5, 3)
qc.measure_all()  # final measurements are removed before cutting
ops1 = [SparsePauliOp(["ZZII", "IZZI", "XIIX"], [1.0, 0.5, -0.3]), "IZZI"]

# one cut gate between qubits 1 and 2, whose control then gets an H: not feed-forward
qc2 = QuantumCircuit(4, name="one-cut")
qc2.h(0); qc2.cx(0, 1); qc2.ry(0.9, 2); qc2.cx(2, 3); qc2.cx(1, 2); qc2.h(1); qc2.rx(0.6, 2); qc2.cx(2, 3)
ops2 = ["ZZZZ", SparsePauliOp(["IZZI", "ZIIZ"], [0.7, 0.4])]

events = []
with SamplerV2(hc, seed=5) as sampler:
    for label, circuit, ops, kw in (
        ("find_cuts", qc, ops1, {}),                      # width from the monitors: 3
        ("labels", qc2, ops2, {"partition": [0, 0, 1, 1]}),
    ):
        t0 = time.perf_counter()
        r = cut_and_run(sampler, circuit, ops, shots=3000, max_overhead=50,
                        progress=lambda event, info: events.append([event, info.get("overhead")]), **kw)
        out["runs"].append({
            "label": label, "values": r.expectation_values.tolist(), "errors": r.standard_errors.tolist(),
            "exact": exact(circuit.remove_final_measurements(inplace=False), ops),
            "coeff_sums": [float(np.sum(np.abs(SparsePauliOp(o).coeffs))) for o in ops],
            "overhead": r.overhead, "subexperiments": r.num_subexperiments, "cuts": len(r.cuts),
            "widths": r.subcircuit_widths, "qranks": r.qranks, "shots": r.shots,
            "seconds": time.perf_counter() - t0, "timings": r.timings,
        })
out["events"] = events
emit(out)
"""


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qpd")
    (tmp / "devices.toml").write_text(DEVICES_TOML)
    proc = run_mpi(JOB, 3, timeout=110, args=[str(tmp / "devices.toml")], tmp_path=tmp)
    out = results(proc)
    root = next(r for r in out if "runs" in r)
    monitors = sorted((r for r in out if "qrank" in r), key=lambda r: r["qrank"])
    return root, monitors


@pytest.mark.mpi
def test_qpd_through_the_cluster_matches_exact(job):
    root, monitors = job
    assert [r["label"] for r in root["runs"]] == ["find_cuts", "labels"]
    for run in root["runs"]:
        assert run["cuts"] == 1 and run["overhead"] == 9, run
        assert max(run["widths"].values()) <= 3, run
        assert run["subexperiments"] > 0
        assert sorted({q for qs in run["qranks"].values() for q in qs}) == [0, 1], run  # both monitors ran
        for value, error, want, csum in zip(run["values"], run["errors"], run["exact"], run["coeff_sums"]):
            # shot noise of a QPD estimate: at most sqrt(overhead / shots) per unit of |coefficients|
            tol = 5 * math.sqrt(run["overhead"] / run["shots"]) * csum
            assert abs(value - want) < tol, (run, value, want, tol)
            assert 0 < error < tol, (run, error)
            assert abs(value - want) < 5 * error + 0.02, (run, value, want, error)
    assert [e for e in root["events"] if e[0] == "planned"] == [["planned", 9.0], ["planned", 9.0]]
    assert [m["stopped"] for m in monitors] == ["shutdown"] * 2
