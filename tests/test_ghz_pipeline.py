"""The distributed GHZ pipeline under the bundled mpiexec (real processes, real qiskit-aer).

One MPI job (1 classical rank + 3 monitors) runs every case; the reconstructed distributions
are checked here against a direct simulation of the *uncut* circuit:

* ideal: ``Statevector`` of the uncut chain (exact probabilities);
* depolarizing noise: Aer ``density_matrix`` of the uncut chain with the same noise model as the
  monitors (``monitor_engine.backend.build_noise_model``: depolarizing on H, 2-qubit depolarizing
  on CNOT), except on the cut CNOTs, which the cut replaces by an ideal classical link. The
  density-matrix probabilities are exact, so no second sampling error enters.

Tolerance: with S shots, TV(empirical, exact) <= 1/2 sum_x sqrt(p(x)(1-p(x))/S) +
sqrt(ln(1/delta)/(2S)) except with probability delta (Jensen for the mean, McDiarmid for the
tail; see :func:`mpiq_magic.ghz.reconstruct.tv_bound`). delta = 1e-6 per comparison.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from mpirun import results, run_mpi
from qiskit.quantum_info import Statevector

from mpiq_magic.ghz.cut import cut_ghz, ghz_circuit
from mpiq_magic.ghz.reconstruct import total_variation, tv_bound

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(200)]

NOISE = {"depolarizing": 0.01, "depolarizing_2q": 0.04}
SHOTS = 4000

# (label, qubits, blocks, serial, method, noise)
CASES = [
    ("ideal-20x4", 20, 4, False, None, None),
    ("ideal-20x1", 20, 1, True, None, None),
    ("ideal-sv-16x3", 16, 3, False, "statevector", None),
    ("noisy-10x3", 10, 3, False, None, NOISE),
    ("noisy-10x1", 10, 1, True, None, NOISE),
    ("noisy-sv-9x5", 9, 5, False, "statevector", NOISE),
]

JOB = """
import json, sys
from dataclasses import replace
from mpiq_magic import kernel as mpiq
from mpiq_magic.kernel.config import default_devices
from mpiq_magic.ghz.pipeline import run_ghz

from mpiq_magic.ghz.pipeline import GHZRunError

cases = json.loads(sys.argv[1])
shots = int(sys.argv[2])
# Failures first: one refused on the root before anything is sent, one failing on a monitor.
for label, n, m, method in [("too-wide", 300, 2, None), ("monitor-fails", 80, 2, "statevector")]:
    devices = [replace(d, method=method or d.method) for d in default_devices(3)]
    hc = mpiq.init(devices=devices, classical=1, timeout=60)
    try:
        run_ghz(hc, n, m, shots=8, serial=True, timeout=60)
    except GHZRunError as exc:
        print("RESULT " + json.dumps({"label": label, "error": str(exc)}), flush=True)
    hc.free()
for label, n, m, serial, method, noise in cases:
    devices = [replace(d, method=method or d.method, noise=noise) for d in default_devices(3)]
    hc = mpiq.init(devices=devices, classical=1, timeout=90)
    res = run_ghz(hc, n, m, shots=shots, serial=serial, timeout=90)
    if res is not None:
        d = res.to_dict(top=None)
        d["label"] = label
        print("RESULT " + json.dumps(d), flush=True)
    hc.free()
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    proc = run_mpi(JOB, 4, timeout=150, args=[json.dumps(CASES), str(SHOTS)], tmp_path=tmp_path_factory.mktemp("ghz"))
    got = {r["label"]: r for r in results(proc)}
    assert set(got) == {c[0] for c in CASES} | {"too-wide", "monitor-fails"}, proc.stdout + proc.stderr
    return got


def exact_uncut(n: int, blocks: int, noise: dict | None) -> dict[str, float]:
    """Exact Z-basis distribution of the uncut n-qubit chain (cut CNOTs ideal under noise)."""
    if not noise:
        return Statevector(ghz_circuit(n, measure=False)).probabilities_dict()
    from qiskit_aer import AerSimulator
    from qiskit_aer.noise import NoiseModel, depolarizing_error

    cut_pairs = set(cut_ghz(n, blocks).cut_pairs)
    model = NoiseModel(basis_gates=["h", "cx"])
    model.add_all_qubit_quantum_error(depolarizing_error(noise["depolarizing"], 1), ["h"])
    err2 = depolarizing_error(noise["depolarizing_2q"], 2)
    for q in range(n - 1):
        if (q, q + 1) not in cut_pairs:
            model.add_quantum_error(err2, ["cx"], [q, q + 1])
    qc = ghz_circuit(n, measure=False)
    qc.save_probabilities()
    probs = AerSimulator(method="density_matrix", noise_model=model).run(qc).result().data()["probabilities"]
    return {format(i, f"0{n}b"): float(p) for i, p in enumerate(np.asarray(probs)) if p > 1e-15}


@pytest.mark.parametrize("label, n, m, serial, method, noise", CASES, ids=[c[0] for c in CASES])
def test_reconstruction_matches_uncut_simulation(runs, label, n, m, serial, method, noise):
    run = runs[label]
    assert run["qubits"] == n and run["blocks"] == m and run["shots"] == SHOTS
    assert sum(run["counts"].values()) == SHOTS and not run["counts_truncated"]
    assert all(len(k) == n for k in run["counts"])
    expected_methods = {method} if method else {"stabilizer"}
    assert set(run["methods"]) == expected_methods
    exact = exact_uncut(n, m, noise)
    bound = tv_bound(exact, SHOTS)
    tv = total_variation(run["counts"], exact)
    assert tv <= bound, f"{label}: TV {tv:.4f} > bound {bound:.4f}"
    if noise:
        # The noise is visible: the ideal GHZ distribution is far outside the same bound.
        ideal = exact_uncut(n, m, None)
        assert total_variation(run["counts"], ideal) > 2 * tv_bound(ideal, SHOTS)
    else:
        assert run["ghz_population"] == 1.0


def test_pipeline_bookkeeping(runs):
    run = runs["ideal-20x4"]
    assert run["assignment"] == [[0, 3], [1], [2]]
    assert run["block_widths"] == [5, 5, 5, 5] and run["monitors_used"] == 3
    assert [b["qrank"] for b in run["block_stats"]] == [0, 1, 2, 0]
    assert run["devices"] == ["127.0.0.1:0", "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:0"]
    # Block 0 carries the H; the others come back all-zero and are flipped by feed-forward.
    assert 0.4 < run["block_stats"][0]["p_raw_one"] < 0.6
    assert all(b["p_raw_zero"] == 1.0 for b in run["block_stats"][1:])
    # Two structures (with and without H), compiled once each and shared by equal devices.
    assert run["compile_cache"]["compiled"] == 2 and run["compile_cache"]["reused"] == 2
    t = run["timings"]
    assert set(t) == {"cut", "compile", "scatter", "barrier", "execute", "gather", "reconstruct", "total"}
    assert all(v >= 0 for v in t.values())
    assert t["total"] >= t["compile"] + t["execute"]
    rec = run["barrier"]
    assert rec["flag"] == "QQ" and rec["members"] == ["qrank 0", "qrank 1", "qrank 2"]
    assert len(rec["releases"]) == 3
    serial = runs["ideal-20x1"]
    assert serial["assignment"] == [[0], [], []] and serial["monitors_used"] == 1


def test_failures_are_reported_and_nobody_hangs(runs):
    """Both failures came back as GHZRunError on the root, and the job went on to every case."""
    assert "Block 0 of the 300-qubit GHZ is 150 qubits wide, but device 127.0.0.1:0 (qrank 0) has 128" in runs["too-wide"]["error"]
    lines = runs["monitor-fails"]["error"].splitlines()
    assert lines and all(line.startswith("[qrank 0:execute] block ") for line in lines)
    assert "127.0.0.1:0" in lines[0]


TWO_CLASSICAL = """
import json
from mpiq_magic import kernel as mpiq
from mpiq_magic.ghz.pipeline import GHZRunError, run_ghz

hc = mpiq.init(classical=2, timeout=60)
out = {"comm_rank": hc.comm_rank, "role": hc.role}
try:
    run_ghz(hc, 1000, 2, shots=16, timeout=60)          # refused on the root: blocks too wide
except GHZRunError as exc:
    out["error"] = str(exc)
res = run_ghz(hc, 12, 4, shots=64, timeout=60)          # the next run still lines up everywhere
out["result"] = None if res is None else [res.reconstruction.ghz_population, res.assignment]
print("RESULT " + json.dumps(out), flush=True)
hc.free()
"""


def test_abort_keeps_every_rank_in_step(tmp_path):
    """2 classical ranks + 2 monitors: an aborted run, then a good one; nobody hangs or drifts."""
    got = sorted(results(run_mpi(TWO_CLASSICAL, 4, timeout=90, tmp_path=tmp_path)), key=lambda r: r["comm_rank"])
    assert [r["role"] for r in got] == ["classical", "classical", "quantum", "quantum"]
    assert "500 qubits wide" in got[0]["error"] and all("error" not in r for r in got[1:])
    assert got[0]["result"] == [1.0, [[0, 2], [1, 3]]]
    assert all(r["result"] is None for r in got[1:])
