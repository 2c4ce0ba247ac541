"""Device backends: what a monitor runs an ISA circuit on.

:class:`DeviceBackend` is the whole interface the monitor needs (``run(circuit, shots, seed)``),
so a real device can be plugged in later without touching the transport: wrap any Qiskit
``SamplerV2`` (for a ``BackendV2``: ``BackendSamplerV2(backend=...)``) in
:class:`SamplerDeviceBackend`, or register a factory with :func:`register_backend`.

The default, :class:`AerDeviceBackend`, is a seeded qiskit-aer ``AerSimulator`` with the
device's thread limit and optional noise. Method ``automatic`` picks an exact method that fits:
``stabilizer`` for Clifford circuits (under ideal or Pauli noise), ``statevector`` when the
state of the circuit's active qubits fits in memory, ``matrix_product_state`` otherwise.

Shots come back packed in the layout of :class:`qiskit.primitives.containers.BitArray`: a
``uint8`` array of shape ``(shots, ceil(num_bits / 8))``, big-endian bytes, clbit 0 the least
significant bit of the last byte, so ``BitArray(memory, num_bits)`` rebuilds them.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from functools import lru_cache
from typing import Any, Callable, NamedTuple

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit.library import get_standard_gate_name_mapping

from mpiq_magic.kernel.config import DeviceSpec

from .errors import BackendError
from .target import coupling_edges

#: Gates the Aer stabilizer method runs that are Clifford for any parameters.
CLIFFORD_GATES = frozenset(
    {"id", "x", "y", "z", "h", "s", "sdg", "sx", "sxdg", "cx", "cy", "cz", "swap", "ecr", "pauli"}
)
#: Non-unitary instructions and directives every method handles.
NON_GATES = frozenset({"measure", "reset", "barrier", "delay"})
#: Seed increment between sweep rows (monitor_engine.protocol.SEED_STRIDE; Aer's own).
_SEED_STRIDE = 2113
#: Fraction of available memory one statevector may take when no limit is given.
MEMORY_FRACTION = 0.5


class BackendRun(NamedTuple):
    """What a device backend returns for one circuit."""

    counts: dict[str, int]
    memory: np.ndarray
    method: str


class DeviceBackend(ABC):
    """A device a monitor can run ISA circuits on."""

    name: str = "device"

    @abstractmethod
    def run(self, circuit: QuantumCircuit, shots: int, seed: int | None) -> BackendRun:
        """Run ``circuit`` for ``shots`` shots; ``memory`` is packed as BitArray bytes."""

    def run_sweep(
        self, circuit: QuantumCircuit, binds: dict, rows: int, shots: int, seed: int | None
    ) -> tuple[np.ndarray, str]:
        """Run a parameterized ``circuit`` once per row of ``binds`` (``{Parameter: values}``, each
        ``values`` of length ``rows``); returns packed shots ``(rows, shots, ceil(clbits/8))`` and the
        method. Row *r* is seeded with ``seed + SEED_STRIDE * r`` (see
        :data:`monitor_engine.protocol.SEED_STRIDE`). Binding values is not compiling.

        The default binds each row and calls :meth:`run`; backends may run all rows at once.
        """
        nbytes = (circuit.num_clbits + 7) // 8
        memory = np.zeros((rows, shots, nbytes), dtype=np.uint8)
        method = self.name
        for r in range(rows):
            bound = circuit.assign_parameters({p: v[r] for p, v in binds.items()}) if binds else circuit
            run = self.run(bound, shots, None if seed is None else seed + _SEED_STRIDE * r)
            memory[r] = run.memory
            method = run.method
        return memory, method

    def prepare(self) -> None:
        """Do one-time setup (imports, noise models) before the first run; optional."""

    def describe(self) -> dict[str, Any]:
        """A small JSON-able description for status reports."""
        return {"backend": self.name}


# --------------------------------------------------------------------------- packing helpers


def pack_hex_memory(memory: list[str], num_bits: int) -> np.ndarray:
    """Aer's per-shot hex strings as packed bits ``(shots, ceil(num_bits/8))`` uint8."""
    nbytes = (num_bits + 7) // 8
    if nbytes == 0:
        return np.zeros((len(memory), 0), dtype=np.uint8)
    width = 2 * nbytes
    text = "".join(h[2:].zfill(width) for h in memory)
    return np.frombuffer(bytearray.fromhex(text), dtype=np.uint8).reshape(len(memory), nbytes)


def hex_counts_to_bitstrings(counts: dict[str, int], num_bits: int, shots: int) -> dict[str, int]:
    """Aer's hex-keyed counts as Qiskit bitstrings (clbit 0 rightmost, no register spaces)."""
    if num_bits == 0:
        return {"": shots}
    return {format(int(key, 16), f"0{num_bits}b"): int(value) for key, value in counts.items()}


# --------------------------------------------------------------------------- method choice


def is_clifford(circuit: QuantumCircuit) -> bool:
    """True when every operation is a Clifford gate the stabilizer method runs."""
    for instruction in circuit.data:
        op = instruction.operation
        name = op.name
        if name in CLIFFORD_GATES or name in NON_GATES:
            continue
        if name == "rz" and _is_quarter_turn(op.params[0]):
            continue
        return False
    return True


def _is_quarter_turn(angle: Any) -> bool:
    try:
        k = float(angle) / (math.pi / 2)
    except TypeError:
        return False
    return abs(k - round(k)) < 1e-9


def active_qubits(circuit: QuantumCircuit) -> int:
    """Number of qubits some non-directive operation touches (what Aer keeps after truncation)."""
    used = set()
    for instruction in circuit.data:
        if instruction.operation.name not in ("barrier", "delay"):
            used.update(instruction.qubits)
    return len(used)


def statevector_bytes(num_qubits: int) -> int:
    """Memory of a double-precision statevector on ``num_qubits`` qubits."""
    return 16 << num_qubits


def available_memory() -> int:
    """Bytes of memory available to new allocations on this host."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 30


# --------------------------------------------------------------------------- noise


def build_noise_model(spec: DeviceSpec):
    """The Aer ``NoiseModel`` configured by ``spec.noise``, or None for an ideal device.

    ``depolarizing`` applies to every single-qubit gate of the basis except ``rz`` (a virtual
    frame change), ``depolarizing_2q`` to every two-qubit gate, ``readout`` is a symmetric
    bit-flip on measurement. ``generic = true`` instead derives the model from a Qiskit
    ``GenericBackendV2`` with the device's width, basis, coupling and seed (thermal relaxation,
    gate and readout errors); it is built once per process and cannot be combined with the rates.
    """
    if getattr(spec, "calibration", None):
        from .calibration import calibration_noise_model

        if spec.noise:
            raise BackendError(
                f"Device {spec.name} has calibration '{spec.calibration}' and noise {dict(spec.noise)}; "
                "its noise comes from the calibration, drop the noise rates."
            )
        return calibration_noise_model(spec.calibration)
    noise = dict(spec.noise or {})
    rates = {k: float(noise.get(k, 0.0)) for k in ("depolarizing", "depolarizing_2q", "readout")}
    if noise.get("generic"):
        if any(rates.values()):
            raise BackendError(
                f"Device {spec.name} sets noise.generic = true together with rates "
                f"{ {k: v for k, v in rates.items() if v} }; use one or the other."
            )
        return _generic_noise(spec.num_qubits, spec.basis_gates, spec.coupling, spec.seed, spec.name)
    if not any(rates.values()):
        return None
    from qiskit_aer.noise import NoiseModel, ReadoutError, depolarizing_error

    gate_qubits = _basis_arity(spec.basis_gates)
    model = NoiseModel(basis_gates=[g for g in spec.basis_gates if g not in NON_GATES])
    one_q = [g for g, n in gate_qubits.items() if n == 1 and g != "rz"]
    two_q = [g for g, n in gate_qubits.items() if n == 2]
    if rates["depolarizing"] and one_q:
        model.add_all_qubit_quantum_error(depolarizing_error(rates["depolarizing"], 1), one_q)
    if rates["depolarizing_2q"] and two_q:
        model.add_all_qubit_quantum_error(depolarizing_error(rates["depolarizing_2q"], 2), two_q)
    if rates["readout"]:
        p = rates["readout"]
        model.add_all_qubit_readout_error(ReadoutError([[1 - p, p], [p, 1 - p]]))
    return model


def _basis_arity(basis: tuple[str, ...]) -> dict[str, int]:
    mapping = get_standard_gate_name_mapping()
    return {
        g: mapping[g].num_qubits for g in basis if g in mapping and g not in NON_GATES
    }


@lru_cache(maxsize=8)
def _generic_noise(num_qubits, basis_gates, coupling, seed, name):
    from qiskit.providers.fake_provider import GenericBackendV2
    from qiskit.transpiler import CouplingMap
    from qiskit_aer.noise import NoiseModel

    edges = coupling_edges(
        DeviceSpec(host=name, device_id=0, num_qubits=num_qubits, coupling=coupling)
    )
    try:
        generic = GenericBackendV2(
            num_qubits=num_qubits,
            basis_gates=[g for g in basis_gates if g not in NON_GATES],
            coupling_map=None if edges is None else CouplingMap(edges),
            seed=seed if seed is not None else 0,
        )
        return NoiseModel.from_backend(generic)
    except Exception as exc:
        raise BackendError(
            f"Cannot derive a generic noise model for device {name} (basis {list(basis_gates)}, "
            f"{num_qubits} qubits): {exc}"
        ) from exc


def _is_pauli_noise(noise: dict | None) -> bool:
    """Depolarizing and readout errors keep a Clifford circuit runnable by the stabilizer method."""
    return not (noise or {}).get("generic")


# --------------------------------------------------------------------------- backends


class AerDeviceBackend(DeviceBackend):
    """qiskit-aer ``AerSimulator`` for one configured device.

    ``memory_limit`` caps the bytes a statevector may take when ``automatic`` decides between
    statevector and matrix product state; by default it is ``memory_fraction`` of the memory
    available at run time.
    """

    name = "aer"

    def __init__(
        self,
        spec: DeviceSpec,
        *,
        memory_limit: int | None = None,
        memory_fraction: float = MEMORY_FRACTION,
    ):
        self.spec = spec
        self.memory_limit = memory_limit
        self.memory_fraction = memory_fraction
        self._noise_loaded = False
        self._noise = None
        self._simulators: dict[str, Any] = {}

    @property
    def noise_model(self):
        """The device's noise model (built on first use), or None."""
        if not self._noise_loaded:
            self._noise = build_noise_model(self.spec)
            self._noise_loaded = True
        return self._noise

    def prepare(self) -> None:
        """Import qiskit-aer and build the noise model now rather than on the first payload."""
        import qiskit_aer  # noqa: F401

        self.noise_model  # noqa: B018 - builds and caches it

    def choose_method(self, circuit: QuantumCircuit) -> str:
        """The simulation method for ``circuit``: the configured one, or the automatic pick."""
        if self.spec.method != "automatic":
            return self.spec.method
        if _is_pauli_noise(self.spec.noise) and not getattr(self.spec, "calibration", None) and is_clifford(circuit):
            return "stabilizer"
        limit = self.memory_limit
        if limit is None:
            limit = int(available_memory() * self.memory_fraction)
        if statevector_bytes(active_qubits(circuit)) <= limit:
            return "statevector"
        return "matrix_product_state"

    def _simulator(self, method: str):
        simulator = self._simulators.get(method)
        if simulator is None:
            from qiskit_aer import AerSimulator

            options = {"method": method, "max_parallel_threads": self.spec.threads}
            if self.noise_model is not None:
                options["noise_model"] = self.noise_model
            simulator = self._simulators[method] = AerSimulator(**options)
        return simulator

    def run(self, circuit: QuantumCircuit, shots: int, seed: int | None) -> BackendRun:
        method = self.choose_method(circuit)
        result = self._aer_run(method, circuit, shots, seed, "circuit")
        data = result.results[0].data
        num_bits = circuit.num_clbits
        memory = pack_hex_memory(getattr(data, "memory", None) or ["0x0"] * shots, num_bits)
        counts = hex_counts_to_bitstrings(getattr(data, "counts", None) or {}, num_bits, shots)
        return BackendRun(counts, memory, method)

    def run_sweep(
        self, circuit: QuantumCircuit, binds: dict, rows: int, shots: int, seed: int | None
    ) -> tuple[np.ndarray, str]:
        """All rows in one Aer run (``parameter_binds``: Aer binds, nothing is transpiled)."""
        if not binds or rows == 1:
            return super().run_sweep(circuit, binds, rows, shots, seed)
        method = self.choose_method(circuit)
        binds = [{p: [float(x) for x in v] for p, v in binds.items()}]
        result = self._aer_run(method, circuit, shots, seed, "parameterized circuit", parameter_binds=binds)
        nbytes = (circuit.num_clbits + 7) // 8
        memory = np.empty((rows, shots, nbytes), dtype=np.uint8)
        for r, experiment in enumerate(result.results):
            memory[r] = pack_hex_memory(getattr(experiment.data, "memory", None) or ["0x0"] * shots, circuit.num_clbits)
        return memory, method

    def _aer_run(self, method: str, circuit: QuantumCircuit, shots: int, seed: int | None, what: str, **extra: Any):
        """One Aer run with shot memory; BackendError naming the device if it failed."""
        options: dict[str, Any] = {"shots": shots, "memory": True, **extra}
        if seed is not None:
            options["seed_simulator"] = seed
        result = self._simulator(method).run(circuit, **options).result()
        if not result.success:
            raise BackendError(
                f"Aer ({method}) failed to run {what} '{circuit.name}' on device "
                f"{self.spec.name}: {_aer_status(result)}"
            )
        return result

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "method": self.spec.method,
            "threads": self.spec.threads,
            "noise": dict(self.spec.noise) if self.spec.noise else None,
            **({"calibration": self.spec.calibration} if getattr(self.spec, "calibration", None) else {}),
        }


def _aer_status(result) -> str:
    messages = [str(getattr(r, "status", "")) for r in result.results]
    return "; ".join(m for m in messages if m) or str(getattr(result, "status", "unknown error"))


class SamplerDeviceBackend(DeviceBackend):
    """Any Qiskit ``SamplerV2`` as a device (e.g. ``BackendSamplerV2(backend=real_backend)``).

    The sampler's own seeding applies; the ``seed`` argument is ignored.
    """

    def __init__(self, sampler, name: str | None = None):
        self.sampler = sampler
        self.name = name or f"sampler:{type(sampler).__name__}"

    def run(self, circuit: QuantumCircuit, shots: int, seed: int | None) -> BackendRun:
        pub_result = self.sampler.run([(circuit,)], shots=shots).result()[0]
        if circuit.num_clbits == 0:
            return BackendRun({"": shots}, np.zeros((shots, 0), dtype=np.uint8), self.name)
        bits = pub_result.join_data()
        return BackendRun(bits.get_counts(), np.ascontiguousarray(bits.array), self.name)


_FACTORIES: dict[str, Callable[..., DeviceBackend]] = {"aer": AerDeviceBackend}


def register_backend(name: str, factory: Callable[..., DeviceBackend]) -> None:
    """Make ``DeviceSpec(backend=name)`` build its backend with ``factory(spec, **options)``."""
    _FACTORIES[name] = factory


def make_backend(spec: DeviceSpec, **options: Any) -> DeviceBackend:
    """The backend for ``spec.backend`` (``"aer"`` unless another was registered)."""
    factory = _FACTORIES.get(spec.backend)
    if factory is None:
        raise BackendError(
            f"Device {spec.name} asks for backend '{spec.backend}', which is not registered; "
            f"known backends are {sorted(_FACTORIES)}."
        )
    return factory(spec, **options)
