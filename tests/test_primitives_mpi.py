"""Qiskit primitives headless under the bundled mpiexec: 1 classical rank + 3 monitors.

One job: rank 0 builds ``SamplerV2(hc)`` / ``EstimatorV2(hc)`` while the monitors ``serve(hc)``
(with ``qiskit.transpile`` and every pass manager's ``run`` made to raise there, as in
test_monitor_mpi.py: binding parameters is not compiling). Rank 0 checks conformance against
``StatevectorSampler``/``StatevectorEstimator`` and qiskit-aer's primitives (shapes, dtypes,
statistics), the parameterized-payload cache (second runs send values only; a small cache
evicts and reports it), placement (spread, pins, a too-wide circuit refused), then runs two
real clients: qiskit-algorithms' QAOA on a MaxCut and qiskit-addon-cutting's documented
workflow. Closing the primitive shuts the monitors down. Results come back as JSON per rank.
"""

from __future__ import annotations

import pytest

from mpirun import results, run_mpi

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(400)]

DEVICES_TOML = """
[[devices]]
host = "127.0.0.1"
device_id = 0
num_qubits = 6
seed = 11
coupling = "full"

[[devices]]
host = "127.0.0.1"
device_id = 1
num_qubits = 6
seed = 12

[[devices]]
host = "127.0.0.1"
device_id = 2
num_qubits = 3
seed = 13
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
FORBIDDEN = []
if hc.is_quantum:
    import qiskit_aer, qiskit_aer.noise
    import qiskit, qiskit.compiler, qiskit.compiler.transpiler, qiskit.passmanager, qiskit.transpiler
    def forbid(name):
        def forbidden(*args, **kwargs):
            FORBIDDEN.append(name)
            raise RuntimeError(f"the monitor called {name}")
        return forbidden
    qiskit.transpile = qiskit.compiler.transpile = qiskit.compiler.transpiler.transpile = forbid("transpile")
    qiskit.transpiler.generate_preset_pass_manager = forbid("generate_preset_pass_manager")
    qiskit.transpiler.PassManager.run = forbid("PassManager.run")
    qiskit.transpiler.StagedPassManager.run = forbid("StagedPassManager.run")
    qiskit.passmanager.BasePassManager.run = forbid("BasePassManager.run")
    from monitor_engine.serve import monitor_for, serve
    report = serve(hc, idle_timeout=240)
    emit({"qrank": hc.qrank, "stopped": report.stopped, "forbidden": FORBIDDEN,
          "cache": monitor_for(hc).store.stats()})
    sys.exit(0)

from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.circuit import Parameter, ParameterVector
from qiskit.primitives import StatevectorEstimator, StatevectorSampler
from qiskit.quantum_info import SparsePauliOp
from qiskit_aer.primitives import EstimatorV2 as AerEstimator, SamplerV2 as AerSampler
from mpiq_magic.primitives import EstimatorV2, SamplerV2
out = {}

def tvd(c1, c2):
    n1, n2 = sum(c1.values()), sum(c2.values())
    return 0.5 * sum(abs(c1.get(k, 0) / n1 - c2.get(k, 0) / n2) for k in set(c1) | set(c2))

# ---- a 3-qubit circuit with two registers and two parameters, a (2, 3) sweep (Qiskit's example)
a, b = Parameter("a"), Parameter("b")
qr = QuantumRegister(3)
alpha, beta = ClassicalRegister(2, "alpha"), ClassicalRegister(1, "beta")
qc = QuantumCircuit(qr, alpha, beta, name="two-regs")
qc.h(0); qc.cx(0, 1); qc.cx(1, 2); qc.ry(a, 0); qc.rz(b, 0); qc.cx(1, 2); qc.cx(0, 1); qc.h(0)
qc.measure([0, 1], alpha); qc.measure([2], beta)
params = np.vstack([np.linspace(-np.pi, np.pi, 6), np.linspace(-4 * np.pi, 4 * np.pi, 6)]).T.reshape(2, 3, 2)
pubs = [(qc, params), (qc, params[0, 0], 300), (qc, {(a, b): params[1]})]

sampler = SamplerV2(hc, seed=5)
t0 = time.perf_counter()
mine = sampler.run(pubs).result()
out["first_run_s"] = time.perf_counter() - t0
refs = {"statevector": StatevectorSampler(seed=5).run(pubs).result(),
        "aer": AerSampler(seed=5).run(pubs).result()}
conf = []
for name, ref in refs.items():
    for k, (r, rr) in enumerate(zip(mine, ref)):
        for reg in ("alpha", "beta"):
            x, y = getattr(r.data, reg), getattr(rr.data, reg)
            worst = max(tvd(x.get_counts(i), y.get_counts(i)) for i in np.ndindex(x.shape)) if x.shape else tvd(x.get_counts(), y.get_counts())
            conf.append({"ref": name, "pub": k, "reg": reg, "shape": [list(x.shape), list(y.shape)],
                         "shots": [x.num_shots, y.num_shots], "bits": [x.num_bits, y.num_bits],
                         "dtype": [str(x.array.dtype), str(y.array.dtype)],
                         "array_shape": [list(x.array.shape), list(y.array.shape)], "tvd": worst})
out["conformance"] = conf
out["meta0"] = {"shots": mine[0].metadata["shots"], "qranks": mine[0].metadata["qranks"].tolist(),
                "devices": {str(k): v for k, v in mine[0].metadata["devices"].items()},
                "payloads_sent": mine[0].metadata["payloads_sent"], "timings": sorted(mine[0].metadata["timings"])}
again = sampler.run(pubs).result()
out["reproducible"] = all(np.array_equal(x.data.alpha.array, y.data.alpha.array) for x, y in zip(mine, again))
out["second"] = {"payloads_sent": again[0].metadata["payloads_sent"], "hits": again[0].metadata["payload_cache_hits"],
                 "compile_cache": again[0].metadata["compile_cache"]}
out["run_shots"] = [r.data.alpha.num_shots for r in sampler.run([(qc, params[0, 0]), (qc, params[0, 0], 50)], shots=70).result()]

# ---- bytes on the wire of a second run: values only
from monitor_engine.dispatch import dispatcher_for
from mpiq_magic.primitives.runner import Task, run_tasks
d = dispatcher_for(hc)
rep = run_tasks(d, [Task(qc, params.reshape(-1, 2), 100, 1)])
out["values_only"] = {"payload_bytes": rep.payload_bytes, "values_bytes": rep.values_bytes, "chunks": rep.chunks,
                      "payloads_sent": rep.payloads_sent}

# ---- eviction: a dispatcher-side cache of 2 payloads per monitor, 3 structures pinned to qrank 2
d.payload_slots = 2
circuits = []
for k in range(3):
    c = QuantumCircuit(2, 2, name=f"evict{k}"); c.rx(a, 0)
    for _ in range(k + 1): c.cx(0, 1)
    c.measure([0, 1], [0, 1]); circuits.append(c)
ev = sampler.run([(c, [0.3]) for c in circuits] + [(circuits[0], [0.3])], pin=2).result()
out["evicted"] = {str(k): v for k, v in ev[0].metadata["evicted"].items()}
out["evict_cache"] = {str(k): v for k, v in ev[0].metadata.get("monitor_cache", {}).items()}
out["evict_ok"] = [r.data.c.num_shots for r in ev]
d.payload_slots = 64

# ---- placement: spread, pins, too wide
out["spread"] = sorted(set(mine[0].metadata["qranks"].ravel().tolist()))
out["pin_qrank"] = sampler.run([(qc, params)], pin=2).result()[0].metadata["qranks"].ravel().tolist()
out["pin_device"] = sampler.run([(qc, params)], pin=("127.0.0.1", 1)).result()[0].metadata["qranks"].ravel().tolist()
wide = QuantumCircuit(5, name="wide5"); wide.h(0); wide.measure_all()
out["five_qubits_avoid_qrank2"] = sorted({int(r.metadata["qranks"]) for r in sampler.run([(wide,)] * 4).result()})
big = QuantumCircuit(8, name="big8"); big.h(0); big.measure_all()
try:
    sampler.run([big])
    out["too_wide"] = None
except Exception as exc:
    out["too_wide"] = [type(exc).__name__, str(exc)]
try:
    sampler.run([wide], pin=2)
    out["too_wide_pinned"] = None
except Exception as exc:
    out["too_wide_pinned"] = [type(exc).__name__, str(exc)]

# ---- estimator: observable broadcasting vs StatevectorEstimator and Aer's EstimatorV2
qe = qc.remove_final_measurements(inplace=False)
obs = [[SparsePauliOp(["XXI", "IZZ"], [0.5, 1.0])], [SparsePauliOp(["YIY", "ZII"], [1.0, -0.3])]]
epubs = [(qe, obs, params[0]), (qe, "ZZZ", params[1], 0.01)]
estimator = EstimatorV2(hc, seed=7)
er = estimator.run(epubs).result()
exact = StatevectorEstimator().run([pub[:3] + (0.0,) for pub in epubs]).result()  # noise-free
aer = AerEstimator().run(epubs, precision=0.01).result()
out["estimator"] = [{"shape": [list(r.data.evs.shape), list(x.data.evs.shape), list(y.data.evs.shape)],
                     "dtype": [str(r.data.evs.dtype), str(x.data.evs.dtype)],
                     "max_dev_sigmas": float(np.max(np.abs(r.data.evs - x.data.evs) / np.maximum(r.data.stds, 1e-3))),
                     "max_dev_aer": float(np.max(np.abs(r.data.evs - y.data.evs))),
                     "max_std": float(r.data.stds.max()), "shots": r.metadata["shots"],
                     "groups": r.metadata["num_groups"]} for r, x, y in zip(er, exact, aer)]

# ---- a real client: qiskit-algorithms QAOA on MaxCut of a 4-node ring plus a chord
edges = [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2)]
H = SparsePauliOp.from_sparse_list([("ZZ", list(e), 0.5) for e in edges], num_qubits=4)
def cut(bits):
    x = [int(c) for c in reversed(bits)]
    return sum(x[i] != x[j] for i, j in edges)
from qiskit_algorithms import QAOA
from qiskit_algorithms.optimizers import COBYLA
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_aer import AerSimulator
qaoa = {}
# Aer's sampler needs ISA circuits, so QAOA transpiles for it; the cluster compiles on rank 0.
for label, s, pm in (("mpiq", SamplerV2(hc, seed=42), None),
                     ("aer", AerSampler(seed=42), generate_preset_pass_manager(1, AerSimulator()))):
    t0 = time.perf_counter()
    res = QAOA(s, COBYLA(maxiter=25), reps=1, initial_point=[0.6, 0.4], transpiler=pm).compute_minimum_eigenvalue(H)
    qaoa[label] = {"bitstring": res.best_measurement["bitstring"], "cut": cut(res.best_measurement["bitstring"]),
                   "value": float(res.eigenvalue.real), "seconds": time.perf_counter() - t0}
out["qaoa"] = qaoa
out["max_cut"] = max(cut(format(k, "04b")) for k in range(16))

# ---- a real client: qiskit-addon-cutting's documented workflow with the cluster sampler
from qiskit.circuit.library import efficient_su2
from qiskit_addon_cutting import generate_cutting_experiments, partition_problem, reconstruct_expectation_values
cc = efficient_su2(4, entanglement="linear", reps=2)
cc.assign_parameters([0.4] * len(cc.parameters), inplace=True)
observable = SparsePauliOp(["ZZII", "IZZI", "-IIZZ", "XIXI", "ZIZZ", "IXIX"])
partitioned = partition_problem(circuit=cc, partition_labels="AABB", observables=observable.paulis)
subexperiments, coefficients = generate_cutting_experiments(
    circuits=partitioned.subcircuits, observables=partitioned.subobservables, num_samples=np.inf)
cs = SamplerV2(hc, seed=3)
t0 = time.perf_counter()
cres = {label: cs.run(subexperiments[label], shots=4000).result() for label in subexperiments}
recon = reconstruct_expectation_values(cres, coefficients, partitioned.subobservables)
value = float(np.dot(recon, observable.coeffs).real)
exact_value = float(StatevectorEstimator().run([(cc, observable)]).result()[0].data.evs)
out["cutting"] = {"value": value, "exact": exact_value, "seconds": time.perf_counter() - t0,
                  "subexperiments": sum(len(v) for v in subexperiments.values())}

# ---- close: the monitors' serve returns
sampler.close()
out["closed"] = True
emit(out)
"""


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("primitives")
    (tmp / "devices.toml").write_text(DEVICES_TOML)
    proc = run_mpi(JOB, 4, timeout=360, args=[str(tmp / "devices.toml")], tmp_path=tmp)
    out = results(proc)
    root = next(r for r in out if "conformance" in r)
    monitors = sorted((r for r in out if "qrank" in r), key=lambda r: r["qrank"])
    return root, monitors


def test_sampler_conforms_to_statevector_and_aer(job):
    root, _ = job
    for row in root["conformance"]:
        assert row["shape"][0] == row["shape"][1], row
        assert row["shots"][0] == row["shots"][1], row
        assert row["bits"][0] == row["bits"][1], row
        assert row["dtype"] == ["uint8", "uint8"], row
        assert row["array_shape"][0] == row["array_shape"][1], row
        # seeded samples of the same distributions: total variation within shot noise
        assert row["tvd"] < 0.12, row
    shapes = {(r["pub"], r["reg"]): r["shape"][0] for r in root["conformance"]}
    assert shapes[(0, "alpha")] == [2, 3] and shapes[(1, "beta")] == [] and shapes[(2, "alpha")] == [3]
    assert [r["shots"][0] for r in root["conformance"] if r["reg"] == "alpha"][:3] == [1024, 300, 1024]
    assert root["run_shots"] == [70, 50]


def test_metadata_names_qranks_devices_timings(job):
    root, _ = job
    meta = root["meta0"]
    assert meta["shots"] == 1024
    assert len(meta["qranks"]) == 2 and len(meta["qranks"][0]) == 3
    assert set(meta["devices"]) <= {"0", "1", "2"} and meta["devices"]["0"] == "127.0.0.1:0"
    assert {"execute", "compile", "run"} <= set(meta["timings"])


def test_compiled_once_then_values_only(job):
    root, monitors = job
    assert root["meta0"]["payloads_sent"] == 3  # one structure, three device targets
    assert root["second"]["payloads_sent"] == 0 and root["second"]["hits"] >= 3
    assert root["reproducible"]
    values = root["values_only"]
    assert values["payload_bytes"] == 0 and values["payloads_sent"] == {}
    assert values["values_bytes"] == 6 * 2 * 8
    assert all(m["forbidden"] == [] for m in monitors)  # binding is not compiling
    assert all(m["cache"]["hits"] > 0 for m in monitors)


def test_payload_cache_is_bounded_and_reports_evictions(job):
    root, monitors = job
    # qrank 2 held the sweep payload; 3 new structures and one reuse through 2 slots evict 3,
    # the same on both sides (the dispatcher mirrors the monitor's cache)
    assert list(root["evicted"]) == ["2"] and len(root["evicted"]["2"]) == 3
    assert root["evict_ok"] == [1024] * 4
    assert root["evict_cache"]["2"]["evictions"] == 3  # the monitor's own count after that run


def test_placement_spreads_pins_and_refuses_too_wide(job):
    root, _ = job
    assert root["spread"] == [0, 1, 2]
    assert set(root["pin_qrank"]) == {2}
    assert set(root["pin_device"]) == {1}
    assert root["five_qubits_avoid_qrank2"] == [0, 1]
    kind, message = root["too_wide"]
    assert kind == "CircuitTooWideError"
    assert "8 qubits" in message and "127.0.0.1:0" in message and "has 6" in message and "cut" in message.lower()
    kind, message = root["too_wide_pinned"]
    assert kind == "CircuitTooWideError" and "5 qubits" in message and "127.0.0.1:2" in message


def test_estimator_matches_exact_within_precision(job):
    root, _ = job
    first, second = root["estimator"]
    assert first["shape"] == [[2, 3], [2, 3], [2, 3]] and second["shape"] == [[3], [3], [3]]
    assert first["dtype"] == ["float64", "float64"]
    # XXI | IZZ ZII | YIY: qubit-wise commuting terms share one measurement circuit
    assert first["groups"] == 3 and second["groups"] == 1
    assert first["shots"] == 4096 and second["shots"] == 10000
    for row in (first, second):
        assert row["max_dev_sigmas"] < 5, row
        assert row["max_dev_aer"] < 0.15, row


def test_qaoa_reaches_the_same_optimum_as_aer(job):
    root, _ = job
    qaoa = root["qaoa"]
    assert qaoa["mpiq"]["cut"] == qaoa["aer"]["cut"] == root["max_cut"]


def test_cutting_workflow_matches_exact(job):
    root, _ = job
    cutting = root["cutting"]
    assert cutting["subexperiments"] > 2
    assert abs(cutting["value"] - cutting["exact"]) < 0.15, cutting


def test_close_shuts_the_monitors_down(job):
    root, monitors = job
    assert root["closed"]
    assert [m["stopped"] for m in monitors] == ["shutdown"] * 3
