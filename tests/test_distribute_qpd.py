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
    assert plan.num_subexperiments == plan.families.num_subexperiments > 0
    assert 0 < plan.num_families < plan.num_subexperiments
    addon = plan_cuts(circuit_4q(), ["ZZII", "IIZZ"], max_qubits=3, addon_subexperiments=True)
    assert plan.num_subexperiments == sum(len(v) for v in addon.subexperiments.values())
    assert "sampling overhead 9" in plan.summary()
    labelled = plan_cuts(circuit_4q(), "ZZZZ", partition=[0, 0, 1, 1], generate=False)
    assert labelled.overhead == 81 and labelled.partition_labels == "AABB"
    assert [c.qubits for c in labelled.cuts] == [(1, 2), (1, 2)] and labelled.num_subexperiments == 0


def test_vectorized_reconstruction_equals_the_addon():
    from qiskit_addon_cutting import reconstruct_expectation_values
    from qiskit_aer.primitives import SamplerV2 as AerSampler

    from mpiq_magic.distribute.qpd import plan_cuts, reconstruct

    plan = plan_cuts(circuit_4q(), ["ZZII", "IZZI", "XIIX"], max_qubits=3, addon_subexperiments=True)
    res = {k: AerSampler(seed=2).run(v, shots=200).result() for k, v in plan.subexperiments.items()}
    ref = reconstruct_expectation_values(res, plan.coefficients, plan.problem.subobservables)
    mine = reconstruct(res, plan.coefficients, plan.problem.subobservables, [0, 100, 200])
    assert mine.shape == (3, 3)
    np.testing.assert_allclose(mine[0], ref, atol=1e-12)


def _clbit_distribution(circuit):
    """Exact distribution over the clbits (qiskit bit order, register by register) of a circuit
    with mid-circuit measurements and no resets: every measurement deferred to a fresh ancilla,
    then a Statevector of the widened circuit."""
    from qiskit import QuantumCircuit
    from qiskit.quantum_info import Statevector

    measures = [inst for inst in circuit.data if inst.operation.name == "measure"]
    n = circuit.num_qubits
    wide = QuantumCircuit(n + len(measures))
    where = {}
    for inst in circuit.data:
        qs = [circuit.find_bit(q).index for q in inst.qubits]
        if inst.operation.name == "measure":
            anc = n + len(where)
            wide.cx(qs[0], anc)
            where[anc] = circuit.find_bit(inst.clbits[0]).index
        else:
            assert inst.operation.name != "reset"
            wide.append(inst.operation, qs)
    probs = Statevector(wide).probabilities_dict(qargs=sorted(where))
    out = {}
    order = [where[a] for a in sorted(where)]  # clbit of each ancilla, ancilla order
    for key, p in probs.items():
        bits = ["0"] * circuit.num_clbits
        for a, ch in zip(range(len(order)), reversed(key)):
            bits[order[a]] = ch
        label = "".join(reversed(bits))
        out[label] = out.get(label, 0.0) + p
    return out


def test_families_equal_the_addon_subexperiments_exactly():
    """Every row of every family, bound, has the same exact clbit distribution as the addon's
    concrete subexperiment it stands for (mid-circuit and deferred measurements; CX, CPhase and
    observables in X, Y and Z), and the coefficients are the addon's."""
    from qiskit import QuantumCircuit
    from qiskit.quantum_info import SparsePauliOp

    from mpiq_magic.distribute.qpd import plan_cuts

    qc = QuantumCircuit(4)
    for q in range(4):
        qc.ry(0.3 + 0.2 * q, q)
    qc.cx(1, 2); qc.h(1); qc.cp(0.7, 2, 1); qc.cx(0, 1); qc.cx(2, 3); qc.rx(0.4, 2)
    ops = [SparsePauliOp(["ZZZZ", "XIIY"]), "IYXI"]
    for width in (None, 1 << 30):
        plan = plan_cuts(qc, ops, partition="AABB", addon_subexperiments=True, defer_width=width)
        fs = plan.families
        assert [c for c, _ in fs.coefficients] == pytest.approx([c for c, _ in plan.coefficients])
        assert fs.num_subexperiments == sum(len(v) for v in plan.subexperiments.values())
        assert (sum(f.deferred > 0 for f in fs.families) > 0) == (width is not None)
        index = fs.index()
        ngroups = {label: len(v) // len(plan.coefficients) for label, v in plan.subexperiments.items()}
        checked = 0
        for label, circuits in plan.subexperiments.items():
            for k, ref in enumerate(circuits):
                z, j = divmod(k, ngroups[label])
                f, r = index[(label, z, j)]
                fam = fs.families[f]
                mine = fam.circuit.assign_parameters(fam.values[r])
                # same registers by name, same exact distribution over them
                want, got = _clbit_distribution(ref), _clbit_distribution(mine)
                def by_reg(circ, dist):
                    out = {}
                    for key, p in dist.items():
                        bits = key[::-1]
                        regs = tuple("".join(bits[circ.find_bit(b).index] for b in creg) for creg in
                                     sorted(circ.cregs, key=lambda c: c.name))
                        out[regs] = out.get(regs, 0.0) + p
                    return {k2: v for k2, v in out.items() if v > 1e-12}
                a, b = by_reg(ref, want), by_reg(mine, got)
                assert a.keys() == b.keys(), (label, k)
                for key in a:
                    assert a[key] == pytest.approx(b[key], abs=1e-9), (label, k, key)
                checked += 1
        assert checked == fs.num_subexperiments and len(fs.families) < checked


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

from mpiq_magic.distribute.execute import distribute

hc = mpiq.init(devices=sys.argv[1], classical=1, timeout=90)
if hc.is_quantum:
    from monitor_engine.serve import serve
    for _ in range(5):  # the root's five distribute calls (collective)
        distribute(hc, None)
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

# distribute: feed-forward cannot run qc2, so with observables it falls back on QPD
from mpiq_magic.distribute.feedforward import FeedForwardError
from mpiq_magic.distribute.qpd import OverheadError
dist_events = []
t0 = time.perf_counter()
r = distribute(hc, qc2, observables=ops2, shots=2000, max_overhead=50,
               progress=lambda event, info: dist_events.append([event, info.get("mode"), info.get("overhead")]))
out["distribute"] = {
    "type": type(r).__name__, "mode": r.mode, "values": r.expectation_values.tolist(),
    "errors": r.standard_errors.tolist(), "exact": exact(qc2, ops2), "overhead": r.overhead,
    "coeff_sums": [float(np.sum(np.abs(SparsePauliOp(o).coeffs))) for o in ops2],
    "subexperiments": r.num_subexperiments, "families": r.num_families, "deferred": r.deferred,
    "widths": r.subcircuit_widths, "qranks": r.qranks, "transfer": r.transfer, "partition": r.partition,
    "observables": list(r.observables), "events": dist_events, "seconds": time.perf_counter() - t0,
    "summary": r.summary(),
}
try:  # refused before anything runs: the monitors stand down
    distribute(hc, qc2, observables=ops2, shots=100, max_overhead=5)
    out["refused"] = None
except OverheadError as exc:
    out["refused"] = {"overhead": exc.overhead, "limit": exc.max_overhead, "message": str(exc)}
try:  # no observables: feed-forward's refusal says how to fall back
    distribute(hc, qc2, shots=100)
    out["no_observables"] = None
except FeedForwardError as exc:
    out["no_observables"] = str(exc)
ghz = QuantumCircuit(4)
ghz.h(0); ghz.cx(0, 1); ghz.cx(1, 2); ghz.cx(2, 3); ghz.measure_all()
g = distribute(hc, ghz, observables=["ZZZZ", "IIIZ"], shots=500)
out["ghz"] = {"type": type(g).__name__, "mode": g.mode, "counts": g.counts,
              "values": g.expectation_values.tolist(), "errors": g.standard_errors.tolist()}
x = distribute(hc, ghz, observables="XXXX", shots=1000)  # X terms: Z-basis samples cannot, QPD can
out["ghz_x"] = {"type": type(x).__name__, "mode": x.mode, "values": x.expectation_values.tolist(),
                "errors": x.standard_errors.tolist(), "overhead": x.overhead}

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
            "seconds": time.perf_counter() - t0, "timings": r.timings, "families": r.num_families,
            "transfer": r.transfer,
        })
    # the same cut again: every family is cached on the monitors, only value rows travel
    again = cut_and_run(sampler, qc2, ops2, shots=500, max_overhead=50, partition=[0, 0, 1, 1])
    out["again"] = {"transfer": again.transfer, "families": again.num_families,
                    "subexperiments": again.num_subexperiments}
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
    for run in root["runs"]:  # one PUB per family: fewer compilations than subexperiments
        assert 0 < run["families"] < run["subexperiments"], run
        assert run["transfer"]["compile_cache"]["misses"] <= 2 * run["families"], run
    again = root["again"]["transfer"]  # a repeated cut: no compile, no payload, only values
    assert again["compile_cache"]["misses"] == 0 and again["payloads_sent"] == 0, again
    assert again["bytes"]["payloads"] == 0 and again["bytes"]["values"] > 0, again


def _close(values, errors, exact, coeff_sums, overhead, shots, where):
    for value, error, want, csum in zip(values, errors, exact, coeff_sums):
        tol = 5 * math.sqrt(overhead / shots) * csum
        assert abs(value - want) < tol, (where, value, want, tol)
        assert 0 < error < tol, (where, error)
        assert abs(value - want) < 5 * error + 0.02, (where, value, want, error)


@pytest.mark.mpi
def test_distribute_falls_back_on_qpd(job):
    root, _ = job
    d = root["distribute"]
    assert d["type"] == "QPDResult" and d["mode"] == "qpd", d
    assert d["overhead"] == 9 and max(d["widths"].values()) <= 2, d  # two monitors filled evenly
    _close(d["values"], d["errors"], d["exact"], d["coeff_sums"], d["overhead"], 2000, d)
    assert sorted({q for qs in d["qranks"].values() for q in qs}) == [0, 1], d
    assert 0 < d["families"] < d["subexperiments"] and d["deferred"] > 0, d
    # each family compiled once per device target, then only values travel
    assert d["transfer"]["compile_cache"]["misses"] <= 2 * d["families"], d
    assert d["transfer"]["bytes"]["values"] > 0, d
    events = [e[0] for e in d["events"]]
    assert events[0] == "fallback" and ["plan", "qpd", 9.0] in d["events"], d["events"]
    assert events.index("plan") < events.index("executed") < events.index("reconstruct"), events
    assert d["observables"][0] == "ZZZZ"
    assert "quasi-probability" in d["summary"]
    refused = root["refused"]
    assert refused["overhead"] == 9 and refused["limit"] == 5, refused
    assert "overhead of 9" in refused["message"] and "nothing was run" in refused["message"]
    assert "observables=" in root["no_observables"], root["no_observables"]
    ghz = root["ghz"]  # feed-forward still wins where it applies
    assert ghz["type"] == "DistributeResult" and ghz["mode"] == "feed-forward", ghz
    assert set(ghz["counts"]) == {"0000", "1111"}, ghz
    assert ghz["values"][0] == 1.0 and ghz["errors"][0] == 0.0, ghz  # parity of 0000 / 1111
    assert abs(ghz["values"][1]) < 5 * ghz["errors"][1] and 0 < ghz["errors"][1] < 0.1, ghz
    gx = root["ghz_x"]
    assert gx["type"] == "QPDResult" and gx["mode"] == "qpd" and gx["overhead"] == 9, gx
    _close(gx["values"], gx["errors"], [1.0], [1.0], gx["overhead"], 1000, gx)
