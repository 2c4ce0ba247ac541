"""monitor_engine in one process: targets, compile_for and its cache, checks, backends, execute."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.primitives.containers import BitArray
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel, ReadoutError, depolarizing_error

from mpiq_magic.kernel.config import DeviceSpec, default_devices
from monitor_engine.backend import (
    AerDeviceBackend,
    SamplerDeviceBackend,
    active_qubits,
    is_clifford,
    make_backend,
    pack_hex_memory,
)
from monitor_engine.errors import BackendError, CircuitTooWideError, CompileError
from monitor_engine.payload import CompileCache, Payload, compile_for, dump_circuit, structure_key
from monitor_engine.process import MonitorProcess, derive_seed
from monitor_engine.target import device_target, isa_fingerprint, target_fingerprint

pytestmark = pytest.mark.timeout(120)

DEVICES = default_devices(3)


def ghz(n: int, name: str | None = None) -> QuantumCircuit:
    qc = QuantumCircuit(n, n, name=name)
    qc.h(0)
    for i in range(n - 1):
        qc.cx(i, i + 1)
    qc.measure(range(n), range(n))
    return qc


def fake_hc(qrank: int = 0, devices=DEVICES):
    return SimpleNamespace(
        is_quantum=True, is_classical=False, qrank=qrank, rank=None, device=devices[qrank], devices=devices
    )


def forged(spec: DeviceSpec, circuit: QuantumCircuit, job_id: str = "forged-1", shots: int = 10) -> Payload:
    """A payload built by hand, bypassing compile_for (what a buggy or hostile sender could send)."""
    return Payload(job_id, spec.key, target_fingerprint(spec), dump_circuit(circuit), shots,
                   circuit.num_qubits, circuit.num_clbits, {})


# --------------------------------------------------------------------------- target


def test_target_from_spec():
    line = DeviceSpec("h", 0, num_qubits=5)
    target = device_target(line)
    assert target.num_qubits == 5
    assert set(target.operation_names) == set(line.basis_gates)
    assert target.instruction_supported("cx", (1, 2)) and target.instruction_supported("cx", (2, 1))
    assert not target.instruction_supported("cx", (0, 2))
    full = device_target(DeviceSpec("h", 0, num_qubits=5, coupling="full"))
    assert full.instruction_supported("cx", (0, 4))
    pairs = device_target(DeviceSpec("h", 0, num_qubits=3, coupling=((0, 2),), basis_gates=("rz", "sx", "cz", "measure")))
    assert pairs.instruction_supported("cz", (0, 2)) and not pairs.instruction_supported("cz", (2, 0))
    assert not pairs.instruction_supported("cx", (0, 2))


def test_fingerprint_depends_on_isa_and_device_only():
    a = DeviceSpec("h", 0, num_qubits=5)
    assert target_fingerprint(a) == target_fingerprint(DeviceSpec("h", 0, num_qubits=5, seed=9, threads=4,
                                                                   noise={"readout": 0.1}))
    assert target_fingerprint(a) == target_fingerprint(
        DeviceSpec("h", 0, num_qubits=5, basis_gates=tuple(reversed(a.basis_gates))))
    others = [
        DeviceSpec("h", 1, num_qubits=5),
        DeviceSpec("g", 0, num_qubits=5),
        DeviceSpec("h", 0, num_qubits=6),
        DeviceSpec("h", 0, num_qubits=5, coupling="full"),
        DeviceSpec("h", 0, num_qubits=5, basis_gates=("rz", "sx", "cz", "measure")),
    ]
    prints = {target_fingerprint(s) for s in others} | {target_fingerprint(a)}
    assert len(prints) == len(others) + 1


def test_bad_coupling_pair_named():
    with pytest.raises(ValueError, match=r"coupling pair \(0, 9\).*5 qubits"):
        device_target(DeviceSpec("h", 0, num_qubits=5, coupling=((0, 9),)))


# --------------------------------------------------------------------------- compile_for + cache


def test_compile_for_makes_an_isa_payload():
    spec = DeviceSpec("127.0.0.1", 3, num_qubits=8)
    qc = QuantumCircuit(3, 3)
    qc.ry(0.3, 0)
    qc.ccx(0, 1, 2)
    qc.cx(0, 2)
    qc.measure(range(3), range(3))
    p = compile_for(spec, qc, shots=77, job_id="j-1", cache=CompileCache())
    assert (p.job_id, p.device, p.shots, p.num_clbits) == ("j-1", ("127.0.0.1", 3), 77, 3)
    assert p.fingerprint == target_fingerprint(spec)
    isa = p.circuit()
    assert isa.num_qubits == p.num_qubits == 8
    target = device_target(spec)
    index = {q: i for i, q in enumerate(isa.qubits)}
    for inst in isa.data:
        qargs = tuple(index[q] for q in inst.qubits)
        assert inst.operation.name == "barrier" or target.instruction_supported(inst.operation.name, qargs)
    assert len(p.meta["physical_qubits"]) == 3 and p.meta["cache_hit"] is False


def test_too_wide_refused_before_anything_is_sent():
    spec = DeviceSpec("127.0.0.1", 2, num_qubits=4)
    cache = CompileCache()
    with pytest.raises(CircuitTooWideError, match=r"has 6 qubits but device 127\.0\.0\.1:2 has 4"):
        compile_for(spec, ghz(6, "wide"), cache=cache)
    assert cache.stats() == {"hits": 0, "misses": 0, "entries": 0}


def test_unbound_parameters_refused():
    qc = QuantumCircuit(1, 1)
    qc.rx(Parameter("theta"), 0)
    with pytest.raises(CompileError, match=r"unbound parameters \['theta'\]"):
        compile_for(DEVICES[0], qc, cache=CompileCache())


def test_cache_equal_blocks_compile_once_per_target():
    cache = CompileCache()
    first = compile_for(DEVICES[0], ghz(5, "block-0"), cache=cache)
    second = compile_for(DEVICES[0], ghz(5, "block-7"), cache=cache)   # other name, same structure
    assert (cache.hits, cache.misses) == (1, 1)
    assert second.qpy is first.qpy and second.meta["cache_hit"] and second.meta["name"] == "block-7"
    narrow = DeviceSpec("127.0.0.1", 5, num_qubits=64)
    compile_for(narrow, ghz(5, "block-1"), cache=cache)                 # other target
    compile_for(DEVICES[0], ghz(4), cache=cache)                         # other shape
    compile_for(DEVICES[0], ghz(5), cache=cache, optimization_level=0)   # other compile settings
    assert (cache.hits, cache.misses) == (1, 4)
    compile_for(narrow, ghz(5, "block-4"), cache=cache)
    assert (cache.hits, cache.misses) == (2, 4) and len(cache) == 4


def test_cache_is_shared_by_isa_identical_devices():
    cache = CompileCache()
    payloads = [compile_for(d, ghz(5), cache=cache) for d in DEVICES]   # same width, basis, coupling
    assert (cache.hits, cache.misses) == (2, 1)
    assert [p.device for p in payloads] == [d.key for d in DEVICES]
    assert [p.fingerprint for p in payloads] == [target_fingerprint(d) for d in DEVICES]
    assert len({p.fingerprint for p in payloads}) == 3
    assert isa_fingerprint(DEVICES[0]) == isa_fingerprint(DEVICES[2])
    assert isa_fingerprint(DEVICES[0]) != isa_fingerprint(DeviceSpec("127.0.0.1", 0, num_qubits=64))


def test_structure_key_ignores_name_but_not_params_or_bits():
    def circ(angle=0.5, q=(0, 1), c=0, name="a"):
        qc = QuantumCircuit(3, 2, name=name)
        qc.rz(angle, 0)
        qc.cx(*q)
        qc.measure(q[1], c)
        return qc

    base = structure_key(circ())
    assert structure_key(circ(name="b")) == base
    assert structure_key(circ(angle=0.5000001)) != base
    assert structure_key(circ(q=(0, 2))) != base
    assert structure_key(circ(q=(1, 0))) != base
    assert structure_key(circ(c=1)) != base


def test_structure_key_sees_custom_gate_bodies():
    def custom(gate):
        body = QuantumCircuit(1, name="mygate")
        getattr(body, gate)(0)
        qc = QuantumCircuit(1)
        qc.append(body.to_gate(), [0])
        return qc

    assert structure_key(custom("x")) != structure_key(custom("h"))


# --------------------------------------------------------------------------- backend


def test_packing_matches_bitarray_layout():
    samples = ["0x0", "0x1", "0x201", "0x3ff", "0x100"]
    packed = pack_hex_memory(samples, 10)
    assert packed.dtype == np.uint8 and packed.shape == (5, 2)
    np.testing.assert_array_equal(packed, BitArray.from_samples(samples, 10).array)
    assert BitArray(packed, 10).get_bitstrings()[2] == "1000000001"
    assert pack_hex_memory(["0x0"] * 3, 0).shape == (3, 0)


def test_memory_and_counts_agree_in_qiskit_bit_order():
    spec = DeviceSpec("h", 0, num_qubits=12)
    qc = QuantumCircuit(10, 10)
    qc.x(0)
    qc.x(9)
    qc.measure(range(10), range(10))
    isa = compile_for(spec, qc, cache=CompileCache()).circuit()
    counts, memory, method = AerDeviceBackend(spec).run(isa, 20, 1)
    assert counts == {"1000000001": 20}
    assert BitArray(memory, 10).get_counts() == counts and method == "stabilizer"


def test_method_choice():
    spec = DeviceSpec("h", 0, num_qubits=40)
    backend = AerDeviceBackend(spec)
    clifford = compile_for(spec, ghz(30), cache=CompileCache()).circuit()
    assert is_clifford(clifford) and backend.choose_method(clifford) == "stabilizer"
    qc = ghz(3)
    qc.t(0)
    small = compile_for(spec, qc, cache=CompileCache()).circuit()
    assert not is_clifford(small) and active_qubits(small) == 3
    assert backend.choose_method(small) == "statevector"
    assert AerDeviceBackend(spec, memory_limit=16 * 2**3 - 1).choose_method(small) == "matrix_product_state"
    assert AerDeviceBackend(spec, memory_limit=16 * 2**3).choose_method(small) == "statevector"
    wide = QuantumCircuit(40, 40)
    wide.h(range(40))
    wide.t(range(40))
    wide.measure(range(40), range(40))
    assert backend.choose_method(wide) == "matrix_product_state"      # 16 TiB statevector
    noisy = AerDeviceBackend(DeviceSpec("h", 0, num_qubits=40, noise={"generic": True}))
    assert noisy.choose_method(clifford) != "stabilizer"               # thermal relaxation is not Pauli
    fixed = AerDeviceBackend(DeviceSpec("h", 0, num_qubits=40, method="matrix_product_state"))
    assert fixed.choose_method(clifford) == "matrix_product_state"
    rz = QuantumCircuit(1)
    rz.rz(math.pi / 2, 0)
    assert is_clifford(rz)
    rz.rz(0.1, 0)
    assert not is_clifford(rz)


def test_counts_match_an_independent_aer_run():
    spec = DeviceSpec("h", 0, num_qubits=6, seed=3)
    qc = ghz(4)
    qc.t(1)
    qc.h(1)
    qc.measure(range(4), range(4))
    isa = compile_for(spec, qc, cache=CompileCache()).circuit()
    counts, memory, method = AerDeviceBackend(spec).run(isa, 500, 1234)
    reference = AerSimulator(method=method, seed_simulator=1234).run(isa, shots=500).result().get_counts()
    assert method == "statevector" and counts == dict(reference)


def test_noise_changes_outcomes_as_configured():
    qc = ghz(4)
    ideal = DeviceSpec("h", 0, num_qubits=4)
    readout = DeviceSpec("h", 0, num_qubits=4, noise={"readout": 0.2})
    depol = DeviceSpec("h", 0, num_qubits=4, noise={"depolarizing": 0.02, "depolarizing_2q": 0.1})
    isa = compile_for(ideal, qc, cache=CompileCache()).circuit()
    shots = 4000

    def ghz_fraction(spec):
        counts, _, method = AerDeviceBackend(spec).run(isa, shots, 7)
        assert method == "stabilizer"  # Pauli noise keeps the stabilizer method
        return (counts.get("0000", 0) + counts.get("1111", 0)) / shots, counts

    assert ghz_fraction(ideal)[0] == 1.0
    frac, counts = ghz_fraction(readout)
    assert abs(frac - (0.8**4 + 0.2**4)) < 0.04
    model = NoiseModel()
    model.add_all_qubit_readout_error(ReadoutError([[0.8, 0.2], [0.2, 0.8]]))
    reference = AerSimulator(method="stabilizer", noise_model=model, seed_simulator=7).run(isa, shots=shots)
    assert counts == dict(reference.result().get_counts())
    frac, counts = ghz_fraction(depol)
    assert 0.6 < frac < 0.97
    model = NoiseModel()
    model.add_all_qubit_quantum_error(depolarizing_error(0.02, 1), ["sx", "x", "h"])
    model.add_all_qubit_quantum_error(depolarizing_error(0.1, 2), ["cx"])
    reference = AerSimulator(method="stabilizer", noise_model=model, seed_simulator=7).run(isa, shots=shots)
    assert counts == dict(reference.result().get_counts())


def test_generic_noise_small_device():
    spec = DeviceSpec("h", 0, num_qubits=4, noise={"generic": True}, seed=1)
    isa = compile_for(spec, ghz(4), cache=CompileCache()).circuit()
    counts, _, method = AerDeviceBackend(spec).run(isa, 2000, 5)
    assert method == "statevector" and sum(counts.values()) == 2000 and len(counts) > 2
    with pytest.raises(BackendError, match="generic = true together with rates"):
        AerDeviceBackend(DeviceSpec("h", 0, num_qubits=4, noise={"generic": True, "readout": 0.1})).prepare()


def test_sampler_backend_plugs_in():
    from qiskit_aer.primitives import SamplerV2

    spec = DEVICES[0]
    backend = SamplerDeviceBackend(SamplerV2(seed=3))
    monitor = MonitorProcess(fake_hc(0), backend=backend)
    result = monitor.execute(compile_for(spec, ghz(3), shots=300, cache=CompileCache()))
    assert result.ok and result.method == "sampler:SamplerV2"
    assert set(result.counts) == {"000", "111"} and result.bitarray().get_counts() == result.counts


def test_unknown_backend_named():
    with pytest.raises(BackendError, match="backend 'ibm'.*known backends are \\['aer'\\]"):
        make_backend(DeviceSpec("h", 0, backend="ibm"))


# --------------------------------------------------------------------------- monitor checks + execute


def test_execute_runs_and_reports():
    monitor = MonitorProcess(fake_hc(1))
    payload = compile_for(DEVICES[1], ghz(5), shots=256, job_id="run-1", cache=CompileCache())
    result = monitor.execute(payload)
    assert result.ok, result.error
    assert (result.qrank, result.device, result.shots, result.num_bits) == (1, ("127.0.0.1", 1), 256, 5)
    assert set(result.counts) <= {"00000", "11111"} and sum(result.counts.values()) == 256
    assert result.memory.shape == (256, 1) and result.bitarray().get_counts() == result.counts
    assert set(result.timings) == {"receive", "load", "execute", "reply"}
    assert result.seed == derive_seed(DEVICES[1].seed, "run-1")
    again = monitor.execute(payload)
    np.testing.assert_array_equal(again.memory, result.memory)   # same device seed + job id
    other = monitor.execute(compile_for(DEVICES[1], ghz(5), shots=256, job_id="run-2", cache=CompileCache()))
    assert other.seed != result.seed


def test_wrong_device_refused_naming_both():
    monitor = MonitorProcess(fake_hc(0))
    payload = compile_for(DEVICES[2], ghz(3), job_id="job-7", cache=CompileCache())
    result = monitor.execute(payload)
    assert result.error == (
        "Payload job-7 was compiled for device 127.0.0.1:2 but this monitor is 127.0.0.1:0 (qrank 0)."
    )
    assert result.counts == {} and result.device == ("127.0.0.1", 0)


def test_stale_fingerprint_refused():
    monitor = MonitorProcess(fake_hc(0))
    payload = compile_for(DeviceSpec("127.0.0.1", 0, num_qubits=64), ghz(3), job_id="old", cache=CompileCache())
    assert "different target of device 127.0.0.1:0" in monitor.execute(payload).error


def test_non_isa_and_uncoupled_refused_naming_the_operation():
    monitor = MonitorProcess(fake_hc(0))
    qc = QuantumCircuit(3, 3)
    qc.ccx(0, 1, 2)
    qc.measure(range(3), range(3))
    error = monitor.execute(forged(DEVICES[0], qc, "bad-ccx")).error
    assert error.startswith("Payload bad-ccx contains operation 'ccx' on qubits [0, 1, 2]")
    qc = QuantumCircuit(3, 3)
    qc.cx(0, 2)
    error = monitor.execute(forged(DEVICES[0], qc, "bad-cx")).error
    assert "applies 'cx' to qubits [0, 2]" in error and "not coupled" in error
    ok = monitor.execute(compile_for(DEVICES[0], ghz(3), cache=CompileCache()))
    assert ok.ok and monitor.status()["refused"] == 2 and monitor.status()["executed"] == 1


def test_malformed_payloads_never_raise():
    small = [DeviceSpec("127.0.0.1", 0, num_qubits=4, seed=1)]
    monitor = MonitorProcess(fake_hc(0, small))
    assert "expected a Payload, got str" in monitor.execute("garbage").error
    wide = forged(small[0], ghz(6), "too-wide")
    assert "has 6 qubits but device 127.0.0.1:0 (qrank 0) has 4" in monitor.execute(wide).error
    bad_shots = forged(small[0], ghz(2), "zero-shots", shots=0)
    assert "asks for 0 shots" in monitor.execute(bad_shots).error
    corrupt = forged(small[0], ghz(2), "corrupt")
    corrupt.qpy = b"not qpy"
    assert "could not be loaded" in monitor.execute(corrupt).error
    lying = forged(small[0], ghz(2), "lying")
    lying.num_clbits = 5
    assert "declares 2 qubits and 5 clbits" in monitor.execute(lying).error
    bad_seed = forged(small[0], ghz(2), "bad-seed")
    bad_seed.meta["seed"] = "not a number"
    assert "Payload bad-seed failed on device 127.0.0.1:0" in monitor.execute(bad_seed).error
    seeded = forged(small[0], ghz(2), "seeded")
    seeded.meta["seed"] = 42
    assert monitor.execute(seeded).seed == 42


def test_client_timeout_names_the_silent_monitor():
    from mpiq_magic.kernel.errors import MPIQTimeoutError
    from monitor_engine.client import MonitorClient

    class SilentComm:
        is_classical, is_quantum, rank, qrank, comm_rank, timeout = True, False, 0, None, 0, 5.0
        devices = DEVICES
        quantum_size = 3

        def layer(self, name):
            return self

        def isend(self, obj, dest, tag=0):
            return SimpleNamespace(test=lambda: (True, None))

        def recv(self, source=None, tag=None, timeout=None, status=None):
            raise MPIQTimeoutError("nothing arrived")

    client = MonitorClient(SilentComm(), timeout=0.5)
    req = client.submit(compile_for(DEVICES[2], ghz(2), cache=CompileCache()))
    with pytest.raises(MPIQTimeoutError, match=r"No reply from qrank 2 \(127\.0\.0\.1:2\) within 0\.5 s") as info:
        client.result(req)
    assert info.value.missing == ["qrank 2 (127.0.0.1:2)"]
