"""Distributed execution with feed-forward cuts, checked against exact simulation of the uncut circuit.

Two parts:

* in-process: the planner (which gates are cuts, Pauli frame or two variants, refusals naming the
  gate, layer and reason) and the stitching, with the blocks run on qiskit-aer in this process
  (:func:`mpiq_magic.distribute.stitch.run_locally`);
* one MPI job (1 classical rank + 3 monitors, real processes under the bundled mpiexec) running
  every case through ``distribute(hc, circuit)`` on the dispatch path, results as JSON lines.

References: ``Statevector`` probabilities (ideal), or Aer ``density_matrix`` probabilities with the
monitors' depolarizing model on every gate except the cut ones (the cut becomes an ideal classical
link). Tolerance: :func:`mpiq_magic.ghz.reconstruct.tv_bound` (Jensen + McDiarmid, delta = 1e-6).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.quantum_info import Statevector

from mpiq_magic.distribute import examples
from mpiq_magic.distribute.feedforward import FeedForwardError, VariantLimitError, plan_feedforward
from mpiq_magic.distribute.stitch import counts_of, run_locally
from mpiq_magic.ghz.reconstruct import total_variation, tv_bound

NOISE = {"depolarizing": 0.02, "depolarizing_2q": 0.05}
SHOTS = 4000


def exact(circuit: QuantumCircuit) -> dict[str, float]:
    return Statevector(circuit.remove_final_measurements(inplace=False)).probabilities_dict()


def noisy_exact(circuit: QuantumCircuit, cut_pairs: set[tuple[int, int]], noise: dict) -> dict[str, float]:
    """Density-matrix probabilities with depolarizing on every 1q gate but rz and on every cx that
    is not cut."""
    from qiskit_aer import AerSimulator
    from qiskit_aer.noise import NoiseModel, depolarizing_error

    n = circuit.num_qubits
    model = NoiseModel(basis_gates=["h", "sx", "x", "rz", "cx"])
    model.add_all_qubit_quantum_error(depolarizing_error(noise["depolarizing"], 1), ["h", "sx", "x"])
    err2 = depolarizing_error(noise["depolarizing_2q"], 2)
    for pair in {(circuit.find_bit(i.qubits[0]).index, circuit.find_bit(i.qubits[1]).index)
                 for i in circuit.data if i.operation.name == "cx"} - cut_pairs:
        model.add_quantum_error(err2, ["cx"], list(pair))
    qc = circuit.remove_final_measurements(inplace=False)
    qc.save_probabilities()
    probs = AerSimulator(method="density_matrix", noise_model=model).run(qc).result().data()["probabilities"]
    return {format(i, f"0{n}b"): float(p) for i, p in enumerate(np.asarray(probs)) if p > 1e-15}


def assert_close(counts: dict[str, int], probs: dict[str, float], shots: int, label: str) -> float:
    tv, bound = total_variation(counts, probs), tv_bound(probs, shots)
    assert tv <= bound, f"{label}: TV {tv:.4f} > bound {bound:.4f}"
    return tv


# ----------------------------------------------------------------------------- planner, in-process
def test_ghz_cuts_are_pauli_frames():
    plan = plan_feedforward(examples.ghz(9), [0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert [(c.control, c.target, c.source, c.dest, c.mode, c.pauli) for c in plan.cuts] == [
        (2, 3, 0, 1, "frame", "X"), (5, 6, 1, 2, "frame", "X"),
    ]
    assert plan.executions == 3  # one circuit per block: no sampling overhead
    # The control's own final measurement carries the bit (no mid-circuit measurement added).
    assert [b.num_clbits for b in plan.blocks.values()] == [3, 3, 3]
    # The frame of block 1 flips all three of its bits, as in the GHZ reconstruction.
    assert plan.blocks[1].frames[0].tolist() == [1, 1, 1]


def test_non_clifford_remainder_uses_two_variants():
    plan = plan_feedforward(examples.cnot_ladder(6), [0, 0, 1, 1, 2, 2])
    assert [c.mode for c in plan.cuts] == ["variant", "variant"]
    assert [b.num_variants for b in plan.blocks.values()] == [1, 2, 2]
    assert plan.executions == 5


def test_refusal_names_gate_layer_and_reason():
    qc = QuantumCircuit(4)
    qc.h(range(4))
    qc.cx(1, 2)
    qc.h(1)  # the control is rotated after the cut
    qc.measure_all()
    with pytest.raises(FeedForwardError) as info:
        plan_feedforward(qc, [0, 0, 1, 1])
    err = info.value
    assert err.gate == "cx" and err.qubits == (1, 2) and isinstance(err.layer, int)
    assert "'h'" in str(err) and "quasi-probability" in str(err) and "layer" in str(err)
    assert isinstance(err, ValueError)  # a UsageError


def test_refusals_teleportation_variant_limit_and_cycle():
    moving = SimpleNamespace(method="multilevel", assignment=((0, 1), (1, 1)))
    with pytest.raises(FeedForwardError, match="moves qubit 0 from qrank 0 to qrank 1 at layer 1"):
        plan_feedforward(examples.ghz(2), moving)
    with pytest.raises(VariantLimitError, match="needs 2 variants .* max_variants=1"):
        plan_feedforward(examples.cnot_ladder(4), [0, 0, 1, 1], max_variants=1)
    qc = QuantumCircuit(4)  # A = {0, 3}, B = {1, 2}: A feeds B, B feeds A, both need variants
    qc.h([0, 1])
    qc.cx(0, 1)
    qc.ry(0.4, 1)
    qc.cx(1, 3)
    qc.ry(0.5, 3)
    qc.measure_all()
    with pytest.raises(FeedForwardError, match="cycle"):
        plan_feedforward(qc, [0, 1, 1, 0])


def test_blocks_feeding_each_other_through_frames_are_exact():
    qc = QuantumCircuit(4)  # A = {0, 3}, B = {1, 2}
    qc.h([0, 1, 3])
    qc.cx(0, 1)  # A -> B
    qc.s(1)
    qc.cx(1, 2)
    qc.cx(1, 3)  # B -> A, whose bit the first frame flips
    qc.cz(0, 3)
    qc.h(3)
    qc.t(0)
    qc.measure_all()
    plan = plan_feedforward(qc, [0, 1, 1, 0])
    assert [c.mode for c in plan.cuts] == ["frame", "frame"] and plan.executions == 2
    st = run_locally(plan, SHOTS, seed=7)
    assert_close(counts_of(st.bits, st.num_clbits), exact(qc), SHOTS, "frame cycle")


def test_controlled_rotations_and_diagonal_cuts_are_exact():
    qc = QuantumCircuit(5)
    qc.h(range(5))
    qc.rzz(0.7, 0, 3)  # U0 = RZ(0.7), U1 = RZ(-0.7): variant
    qc.cp(0.9, 1, 4)  # not a Pauli: variant
    qc.cz(2, 3)  # Pauli frame through the remainder
    qc.crx(1.1, 2, 4)
    qc.t(0)
    qc.h([3, 4])
    qc.measure_all()
    plan = plan_feedforward(qc, [0, 0, 0, 1, 1])
    assert {c.gate: c.mode for c in plan.cuts} == {"rzz": "variant", "cp": "variant", "cz": "frame", "crx": "variant"}
    st = run_locally(plan, SHOTS, seed=3)
    assert_close(counts_of(st.bits, st.num_clbits), exact(qc), SHOTS, "rotations")


# ----------------------------------------------------------------------------- under mpiexec
JOB = """
import json, sys
from dataclasses import replace
from mpiq_magic import kernel as mpiq
from mpiq_magic.kernel.config import default_devices
from mpiq_magic.distribute import examples
from mpiq_magic.distribute.execute import distribute
from mpiq_magic.distribute.feedforward import FeedForwardError
from qiskit import QuantumCircuit

shots = int(sys.argv[1])
noise = json.loads(sys.argv[2])

def out(obj):
    print("RESULT " + json.dumps(obj), flush=True)

refused = QuantumCircuit(4)
refused.h(range(4)); refused.cx(1, 2); refused.h(1); refused.measure_all()
rnd, rnd_owner = examples.random_feedforward([3, 3, 2], 30, seed=0)
noisy, noisy_owner = examples.random_feedforward([3, 3, 3], 30, seed=5, basis=True)
settings = [
    (None, 1, [
        ("refused", refused, [0, 0, 1, 1]),
        ("ghz12", examples.ghz(12), None),
        ("ladder8", examples.cnot_ladder(8), None),
        ("random", rnd, rnd_owner),
    ]),
    (noise, 0, [
        ("ghz9-noisy", examples.ghz(9), None),
        ("random-noisy", noisy, noisy_owner),
    ]),
]
for dev_noise, level, cases in settings:
    devices = [replace(d, num_qubits=16, coupling="full", noise=dev_noise) for d in default_devices(3)]
    hc = mpiq.init(devices=devices, classical=1, timeout=90)
    for label, circuit, partition in cases:
        try:
            res = distribute(hc, circuit, shots=shots, partition=partition, optimization_level=level, timeout=90)
        except FeedForwardError as exc:
            out({"label": label, "error": str(exc), "gate": exc.gate, "layer": exc.layer})
            continue
        if res is not None:
            out({"label": label, **res.to_dict(top=None)})
    hc.free()
"""


def _circuits():
    rnd, _ = examples.random_feedforward([3, 3, 2], 30, seed=0)
    noisy, _ = examples.random_feedforward([3, 3, 3], 30, seed=5, basis=True)
    return {
        "ghz12": (examples.ghz(12), None),
        "ladder8": (examples.cnot_ladder(8), None),
        "random": (rnd, None),
        "ghz9-noisy": (examples.ghz(9), NOISE),
        "random-noisy": (noisy, NOISE),
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from mpirun import results, run_mpi

    proc = run_mpi(JOB, 4, timeout=150, args=[str(SHOTS), json.dumps(NOISE)],
                   tmp_path=tmp_path_factory.mktemp("distribute"))
    got = {r["label"]: r for r in results(proc)}
    assert set(got) == {"refused", *_circuits()}, proc.stdout + proc.stderr
    return got


@pytest.mark.mpi
@pytest.mark.timeout(200)
@pytest.mark.parametrize("label", ["ghz12", "ladder8", "random", "ghz9-noisy", "random-noisy"])
def test_distributed_run_matches_uncut_simulation(runs, label):
    circuit, noise = _circuits()[label]
    run = runs[label]
    assert run["shots"] == SHOTS and sum(run["counts"].values()) == SHOTS and not run["counts_truncated"]
    assert len(run["blocks"]) == 3 and {b["qrank"] for b in run["blocks"]} == {0, 1, 2}
    assert run["cuts"] and all(c["mode"] in ("frame", "variant") for c in run["cuts"])
    if noise is None:
        assert_close(run["counts"], exact(circuit), SHOTS, label)
        return
    pairs = {(c["control"], c["target"]) for c in run["cuts"]}
    assert all(c["mode"] == "frame" for c in run["cuts"])  # exact under Pauli noise
    assert_close(run["counts"], noisy_exact(circuit, pairs, noise), SHOTS, label)
    ideal = exact(circuit)  # the noise is really there: the same test rejects the ideal distribution
    assert total_variation(run["counts"], ideal) > tv_bound(ideal, SHOTS)


@pytest.mark.mpi
@pytest.mark.timeout(200)
def test_distributed_bookkeeping_and_refusal(runs):
    ghz = runs["ghz12"]
    assert ghz["executions"] == 3 and [c["mode"] for c in ghz["cuts"]] == ["frame", "frame"]
    assert set(ghz["counts"]) == {"0" * 12, "1" * 12}
    assert set(ghz["timings"]) == {"plan", "compile", "dispatch", "execute", "reconstruct", "total"}
    ladder = runs["ladder8"]
    assert ladder["executions"] == sum(b["variants"] for b in ladder["blocks"]) > 3
    modes = [c["mode"] for c in runs["random"]["cuts"]]
    assert "frame" in modes and "variant" in modes  # the random case mixes both methods
    refused = runs["refused"]
    assert refused["gate"] == "cx" and isinstance(refused["layer"], int)
    assert "quasi-probability" in refused["error"] and "'h'" in refused["error"]


def test_cli_refuses_before_starting_processes(tmp_path, capsys):
    from mpiq_magic.cli import main

    qasm = tmp_path / "bad.qasm"
    qasm.write_text(
        'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[4] q;\nbit[4] c;\nh q;\ncx q[1], q[2];\n'
        "cx q[0], q[1];\nh q[1];\nh q[2];\ncx q[3], q[2];\nc = measure q;\n"
    )
    assert main(["distribute", str(qasm), "-q", "2"]) == 2
    err = capsys.readouterr().err
    assert "Gate 'cx' on qubits 1" in err and "layer 0" in err and "quasi-probability" in err
    assert main(["distribute", str(tmp_path / "missing.qasm"), "-q", "2"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_falls_back_on_quasi_probability_cuts(tmp_path, capsys):
    """`mpiq distribute --observables` on a circuit feed-forward refuses: quasi-probability cuts
    under a real mpiexec job, values within 5 reported standard errors of exact simulation."""
    import json

    from qiskit.quantum_info import SparsePauliOp, Statevector

    from mpiq_magic.cli import main
    from mpiq_magic.distribute.job import load_qasm

    qasm = tmp_path / "bad.qasm"
    qasm.write_text(
        'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[4] q;\nbit[4] c;\nh q;\ncx q[1], q[2];\n'
        "cx q[0], q[1];\nh q[1];\nh q[2];\ncx q[3], q[2];\nry(0.7) q[0];\nc = measure q;\n"
    )
    assert main(["distribute", str(qasm), "-q", "2", "--observables", "ZZI", "--quiet"]) == 2
    assert "has 3 letters" in capsys.readouterr().err
    assert main(["distribute", str(qasm), "-q", "2", "--mode", "qpd", "--quiet"]) == 2
    assert "--observables" in capsys.readouterr().err
    out = tmp_path / "out.json"
    paulis = ["ZZII", "IZIZ", "XXII"]
    assert main(["distribute", str(qasm), "-q", "2", "--observables", ",".join(paulis), "--shots", "2000",
                 "--json", str(out), "--timeout", "240"]) == 0
    printed = capsys.readouterr().out
    assert "quasi-probability cuts" in printed and "<ZZII> =" in printed
    result = json.loads(out.read_text())
    assert result["mode"] == "qpd" and result["observables"] == paulis and result["overhead"] > 1
    state = Statevector(load_qasm(str(qasm)).remove_final_measurements(inplace=False))
    for pauli, value, err in zip(paulis, result["expectation_values"], result["standard_errors"]):
        exact = state.expectation_value(SparsePauliOp(pauli)).real
        assert abs(value - exact) <= 5 * err + 0.02, (pauli, value, err, exact)
