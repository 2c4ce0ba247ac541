"""MonitorProcess under the bundled mpiexec: 1 classical rank + 3 quantum monitors, real qiskit-aer.

One job covers the SPMD path (scatter -> execute -> gather) and the serve loop (MonitorClient):
right devices, counts equal to an independent AerSimulator run with the same seed, noise as
configured, refused payloads (wrong device, too wide, non-ISA, garbage) while the monitors keep
serving, the compile cache, a QQ barrier, and shutdown. On the monitors ``qiskit.transpile`` and
every pass manager's ``run`` are replaced by functions that raise, so any compilation there fails
the test. A second job starts ``python -m monitor_engine`` (health check and ``--run``).
"""

from __future__ import annotations

import json
import time

import psutil
import pytest

from mpirun import results, run_mpi

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(300)]

DEVICES_TOML = """
[[devices]]
host = "127.0.0.1"
device_id = 0
num_qubits = 12
seed = 11

[[devices]]
host = "127.0.0.1"
device_id = 1
num_qubits = 8
seed = 12
noise = { readout = 0.2 }

[[devices]]
host = "127.0.0.1"
device_id = 2
num_qubits = 6
seed = 13
noise = { depolarizing_2q = 0.1 }
"""

MONITOR_JOB = r"""
import json, os, sys, time
from mpi4py import MPI
from mpiq_magic import kernel as mpiq

def abort_on_error(kind, value, tb):   # an exception anywhere ends the whole job at once
    sys.__excepthook__(kind, value, tb)
    sys.stderr.flush()
    MPI.COMM_WORLD.Abort(1)
sys.excepthook = abort_on_error

hc = mpiq.init(devices=sys.argv[1], classical=1, timeout=60)
out = {"role": hc.role, "qrank": hc.qrank, "pid": os.getpid()}
FORBIDDEN = []
if hc.is_quantum:
    # The monitor must never compile: make every entry point into the transpiler raise. qiskit-aer
    # is imported first because its import builds controlled-gate definitions with a PassManager.
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

import numpy as np
from qiskit import QuantumCircuit
import monitor_engine.protocol as mp
from monitor_engine import (CircuitTooWideError, CompileCache, MonitorClient, MonitorProcess,
                            Payload, compile_for, spmd_run)
from monitor_engine.payload import dump_circuit
from monitor_engine.target import target_fingerprint
mp.DETACH_BYTES = 1024   # 2000-shot results travel as raw buffers, small ones pickled: both paths

def ghz(n, name=None):
    qc = QuantumCircuit(n, n, name=name)
    qc.h(0)
    for i in range(n - 1):
        qc.cx(i, i + 1)
    qc.measure(range(n), range(n))
    return qc

def reference(payload, result):
    # An independent AerSimulator run of the same ISA circuit with the same seed and method.
    if result.error:
        return result.error
    from qiskit_aer import AerSimulator
    from qiskit_aer.noise import NoiseModel, ReadoutError, depolarizing_error
    model = None
    if result.qrank == 1:
        model = NoiseModel()
        model.add_all_qubit_readout_error(ReadoutError([[0.8, 0.2], [0.2, 0.8]]))
    elif result.qrank == 2:
        model = NoiseModel()
        model.add_all_qubit_quantum_error(depolarizing_error(0.1, 2), ["cx"])
    sim = AerSimulator(method=result.method, noise_model=model, seed_simulator=result.seed)
    return dict(sim.run(payload.circuit(), shots=payload.shots).result().get_counts())

def ghz_fraction(result):
    if result.error:
        return result.error
    n = result.num_bits
    return (result.counts.get("0" * n, 0) + result.counts.get("1" * n, 0)) / result.shots

if hc.is_quantum:
    monitor = MonitorProcess(hc)
    spmd = spmd_run(hc, monitor=monitor)
    final = monitor.serve(timeout=90)
    out.update(stopped=final["stopped"], executed=final["executed"], refused=final["refused"],
               forbidden=list(FORBIDDEN))
    try:                                # the patch is live: compiling here does raise
        qiskit.transpile(QuantumCircuit(1))
    except RuntimeError:
        out["patch_live"] = True
else:
    devices = hc.devices
    cache = CompileCache()
    # ---- SPMD: one GHZ block per monitor plus two more for device 0, scattered and gathered
    blocks = [compile_for(devices[j % 3], ghz(5, f"block-{j}"), shots=2000, job_id=f"spmd-{j}", cache=cache)
              for j in range(5)]
    out["cache"] = cache.stats()
    spmd = spmd_run(hc, blocks)
    out["spmd"] = [[r.job_id, r.qrank, list(r.device), r.method, r.error] for r in spmd]
    out["spmd_match"] = [r.counts == reference(p, r) for p, r in zip(blocks, spmd)]
    out["spmd_ghz_fraction"] = [ghz_fraction(r) for r in spmd]
    out["spmd_packed"] = [r.memory.shape == (2000, 1) and r.bitarray().get_counts() == r.counts for r in spmd]

    # ---- serve loop
    client = MonitorClient(hc, timeout=60)
    t = QuantumCircuit(3, 3)
    t.h(0); t.t(0); t.cx(0, 1); t.h(0); t.measure(range(3), range(3))
    batch = [compile_for(devices[j % 3], ghz(4), shots=2000, job_id=f"b-{j}", cache=cache) for j in range(6)]
    batch.append(compile_for(devices[0], t, shots=300, job_id="t-gate", cache=cache))
    res = client.run_batch(batch)
    out["batch"] = [[r.job_id, r.qrank, list(r.device), r.method, r.error] for r in res]
    out["batch_match"] = [r.counts == reference(p, r) for p, r in zip(batch, res)]
    out["batch_packed"] = [r.memory.shape == (p.shots, 1) and r.bitarray().get_counts() == r.counts
                           for p, r in zip(batch, res)]
    out["timings_ok"] = all(set(r.timings) == {"receive", "load", "execute", "reply"}
                            and all(v >= 0 for v in r.timings.values()) for r in res)

    # refused payloads: the error comes back, the monitor keeps serving
    errors = {}
    wrong = compile_for(devices[2], ghz(3), job_id="job-7", cache=cache)
    errors["wrong_device"] = client.result(client.submit(mpiq.QRank(0), wrong)).error
    try:
        compile_for(devices[2], ghz(7, "seven"), cache=cache)
    except CircuitTooWideError as exc:
        errors["too_wide_classical"] = str(exc)
    wide = Payload("forged-wide", devices[2].key, target_fingerprint(devices[2]), dump_circuit(ghz(7)),
                   10, 7, 7, {})
    errors["too_wide_monitor"] = client.result(client.submit(wide)).error
    ccx = QuantumCircuit(3, 3); ccx.ccx(0, 1, 2); ccx.measure(range(3), range(3))
    non_isa = Payload("forged-ccx", devices[1].key, target_fingerprint(devices[1]), dump_circuit(ccx), 10, 3, 3, {})
    errors["non_isa"] = client.result(client.submit(mpiq.Device("127.0.0.1", 1), non_isa)).error
    hc.layer("dispatch").send("not a request", mpiq.QRank(2), tag=mp.WORK_TAG)   # ignored, no reply
    out["errors"] = errors
    after = client.run_batch([compile_for(d, ghz(3), shots=100, job_id=f"after-{d.device_id}", cache=cache)
                              for d in devices])
    out["after"] = [[r.qrank, r.error] for r in after]

    records = client.barrier_all(timeout=30)
    out["barrier"] = [[r.flag, len(r.members)] for r in records]
    out["status"] = [[s["qrank"], s["device"], s["executed"], s["refused"], s["pid"]] for s in client.status()]
    out["cache_final"] = cache.stats()
    t0 = time.monotonic()
    out["shutdown"] = client.shutdown(timeout=30)
    out["shutdown_seconds"] = time.monotonic() - t0
rank = hc.comm_rank
hc.free()
with open(f"result-{rank}.json", "w") as f:   # files, not stdout: long lines from 4 ranks interleave
    json.dump(out, f)
"""


def _leftovers(marker: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or []):
                found.append(proc.info["pid"])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


@pytest.fixture(scope="module")
def monitor_job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monitor")
    devices = tmp / "devices.toml"
    devices.write_text(DEVICES_TOML)
    start = time.monotonic()
    proc = run_mpi(MONITOR_JOB, 4, timeout=150, args=[str(devices)], tmp_path=tmp)
    elapsed = time.monotonic() - start
    by_role = {}
    for path in tmp.glob("result-*.json"):
        r = json.loads(path.read_text())
        by_role[r["qrank"] if r["role"] == "quantum" else "C"] = r
    assert set(by_role) == {"C", 0, 1, 2}, proc.stdout + proc.stderr
    return by_role, elapsed, str(tmp)


def test_spmd_payloads_run_on_their_devices(monitor_job):
    out = monitor_job[0]["C"]
    assert out["spmd"] == [
        [f"spmd-{j}", j % 3, ["127.0.0.1", j % 3], "stabilizer", None] for j in range(5)
    ]
    assert all(out["spmd_match"]), out["spmd_match"]
    assert all(out["spmd_packed"])
    assert out["cache"] == {"hits": 2, "misses": 3, "entries": 3}   # equal blocks compile once per target


def test_noise_changes_outcomes_as_configured(monitor_job):
    fractions = monitor_job[0]["C"]["spmd_ghz_fraction"]
    assert fractions[0] == fractions[3] == 1.0                      # ideal device 0
    assert abs(fractions[1] - (0.8**5 + 0.2**5)) < 0.05                # readout 0.2 on device 1
    assert 0.55 < fractions[2] < 0.9                                   # depolarizing_2q 0.1 on device 2


def test_serve_loop_batch(monitor_job):
    out = monitor_job[0]["C"]
    assert [b[:3] for b in out["batch"]] == [
        *[[f"b-{j}", j % 3, ["127.0.0.1", j % 3]] for j in range(6)], ["t-gate", 0, ["127.0.0.1", 0]]
    ]
    assert [b[4] for b in out["batch"]] == [None] * 7
    assert out["batch"][-1][3] == "statevector" and out["batch"][0][3] == "stabilizer"
    assert all(out["batch_match"]), out["batch_match"]
    assert all(out["batch_packed"]), out["batch_packed"]   # raw-buffer (2000 shots) and pickled (300)
    assert out["timings_ok"]


def test_refused_payloads_and_monitors_keep_serving(monitor_job):
    out = monitor_job[0]["C"]
    errors = out["errors"]
    assert errors["wrong_device"] == (
        "Payload job-7 was compiled for device 127.0.0.1:2 but this monitor is 127.0.0.1:0 (qrank 0)."
    )
    assert "has 7 qubits but device 127.0.0.1:2 has 6" in errors["too_wide_classical"]
    assert "has 7 qubits but device 127.0.0.1:2 (qrank 2) has 6" in errors["too_wide_monitor"]
    assert "contains operation 'ccx'" in errors["non_isa"] and "127.0.0.1:1 (qrank 1)" in errors["non_isa"]
    assert out["after"] == [[0, None], [1, None], [2, None]]
    status = {s[0]: s for s in out["status"]}
    assert status[0][3] == 1 and status[1][3] == 1 and status[2][3] == 1   # refused per monitor
    assert [b[1] for b in out["barrier"]] == [3, 3, 3]


def test_monitor_never_transpiles(monitor_job):
    by_role = monitor_job[0]
    for j in range(3):
        assert by_role[j]["forbidden"] == [], by_role[j]
        assert by_role[j]["patch_live"] is True
        assert by_role[j]["executed"] >= 3


def test_compile_cache_hits_for_equal_blocks(monitor_job):
    out = monitor_job[0]["C"]
    # spmd: 3 misses; batch: ghz(4) x 3 targets + t-gate = 4 misses, 3 hits; refusals: ghz(3) on
    # device 2 = 1 miss; after: ghz(3) x 3 targets = 2 misses, 1 hit.
    assert out["cache_final"] == {"hits": 2 + 3 + 1, "misses": 3 + 4 + 1 + 2, "entries": 10}


def test_shutdown_leaves_no_process_behind(monitor_job):
    by_role, elapsed, tmp = monitor_job
    assert [s["error"] for s in by_role["C"]["shutdown"]] == [None] * 3
    assert [by_role[j]["stopped"] for j in range(3)] == ["shutdown"] * 3
    assert elapsed < 150
    pids = [by_role[k]["pid"] for k in by_role]
    time.sleep(0.2)
    assert [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE] == []
    assert _leftovers(tmp) == []


BATCH_SCRIPT = r"""
import json
from qiskit import QuantumCircuit
from monitor_engine import compile_for
qc = QuantumCircuit(3, 3); qc.h(0); qc.cx(0, 1); qc.cx(1, 2); qc.measure(range(3), range(3))
res = client.run_batch([compile_for(d, qc, shots=64, job_id=f"cli-{d.device_id}") for d in hc.devices])
print("RESULT " + json.dumps({"rank": hc.rank, "ok": [r.error is None for r in res],
                              "qranks": [r.qrank for r in res]}), flush=True)
"""


def test_standalone_module_start(tmp_path):
    from mpiq_magic.launch import mpiexec_path  # noqa: F401 - fails early without mpiexec

    script = tmp_path / "batch.py"
    script.write_text(BATCH_SCRIPT)
    driver = (
        "import sys, runpy\n"
        "sys.argv = ['monitor_engine', *sys.argv[1:]]\n"
        "runpy.run_module('monitor_engine', run_name='__main__')\n"
    )
    health = run_mpi(driver, 3, timeout=90, args=["--classical", "1", "--timeout", "30"], tmp_path=tmp_path)
    line = next(l for l in health.stdout.splitlines() if l.startswith("MONITORS "))
    status = json.loads(line[len("MONITORS "):])
    assert [s["qrank"] for s in status] == [0, 1]
    assert [s["device"] for s in status] == ["127.0.0.1:0", "127.0.0.1:1"]
    run = run_mpi(driver, 4, timeout=90, args=["--classical", "1", "--timeout", "30", "--run", str(script)],
                  tmp_path=tmp_path)
    (out,) = results(run)
    assert out == {"rank": 0, "ok": [True] * 3, "qranks": [0, 1, 2]}
    assert _leftovers(str(tmp_path)) == []
