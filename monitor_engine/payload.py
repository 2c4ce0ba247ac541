"""Classical side of the device-ready path (paper section 3.2): compile, cache, serialize.

:func:`compile_for` transpiles a circuit to the Target of the device it will run on and wraps the
ISA circuit as QPY bytes in a :class:`Payload`. Equal-shaped circuits compile once per target
through a :class:`CompileCache`. With ``parameterized=True`` the circuit may keep unbound
parameters: the payload then has a ``payload_id`` (stable in circuit structure and device target),
monitors cache it and later runs send only that id and parameter values
(:class:`~monitor_engine.protocol.Sweep`); the monitor binds them, which is not compiling.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from qiskit import QuantumCircuit, qpy, transpile
from qiskit.circuit import ParameterExpression
from qiskit.circuit.library import get_standard_gate_name_mapping

from mpiq_magic.kernel.config import DeviceSpec
from mpiq_magic.kernel.errors import UsageError

from .errors import CircuitTooWideError, CompileError
from .target import device_target, isa_fingerprint, target_fingerprint

_STANDARD_NAMES = frozenset(get_standard_gate_name_mapping()) | {"barrier", "measure", "reset", "delay"}
_job_counter = itertools.count(1)


@dataclass
class Payload:
    """One device-ready job: an ISA circuit for ``device`` as QPY bytes, plus what runs it."""

    job_id: str
    device: tuple[str, int]
    fingerprint: str
    qpy: bytes = field(repr=False)
    shots: int
    num_qubits: int
    num_clbits: int
    meta: dict = field(default_factory=dict)
    payload_id: str | None = None  # set for parameterized payloads (monitors cache them by it)

    @property
    def parameters(self) -> tuple[str, ...]:
        """Names of the unbound parameters of a parameterized payload (empty when bound)."""
        return tuple(self.meta.get("parameters", ())) if isinstance(self.meta, dict) else ()

    @property
    def device_name(self) -> str:
        return f"{self.device[0]}:{self.device[1]}"

    @property
    def nbytes(self) -> int:
        return len(self.qpy)

    def circuit(self) -> QuantumCircuit:
        """Deserialize the ISA circuit (no compilation happens)."""
        return load_circuit(self.qpy)


def load_circuit(data: bytes) -> QuantumCircuit:
    """The single circuit stored in QPY ``data``."""
    circuits = qpy.load(io.BytesIO(data))
    if len(circuits) != 1:
        raise ValueError(f"A payload must hold exactly one circuit, its QPY holds {len(circuits)}.")
    return circuits[0]


def dump_circuit(circuit: QuantumCircuit) -> bytes:
    """``circuit`` as QPY bytes."""
    buffer = io.BytesIO()
    qpy.dump(circuit, buffer)
    return buffer.getvalue()


class _Compiled(NamedTuple):
    qpy: bytes
    num_qubits: int
    num_clbits: int
    physical_qubits: list[int] | None
    compile_seconds: float
    parameters: tuple[str, ...] = ()


class CompileCache:
    """LRU cache of compiled payload bodies keyed by (circuit structure, target ISA).

    The structure key ignores the circuit's name and metadata but includes every operation,
    its parameters and the indices of its qubits and clbits, so equal-shaped blocks compile
    once per target; devices with the same ISA (width, basis, coupling) share entries, and each
    payload still carries its own device's key and fingerprint. ``hits`` and ``misses`` count
    lookups.
    """

    def __init__(self, maxsize: int = 1024):
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple, _Compiled] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple) -> _Compiled | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry

    def put(self, key: tuple, entry: _Compiled) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        self._entries.clear()
        self.hits = self.misses = 0

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "entries": len(self._entries)}

    def __repr__(self) -> str:
        return f"CompileCache(hits={self.hits}, misses={self.misses}, entries={len(self)})"


#: The cache :func:`compile_for` uses when none is given (one per process).
DEFAULT_CACHE = CompileCache()


def structure_key(circuit: QuantumCircuit) -> str:
    """A digest of the circuit's structure: width, operations, parameters, bit indices.

    The circuit's name, metadata and register names do not enter the key.
    """
    digest = hashlib.blake2b(digest_size=20)
    _hash_circuit(circuit, digest)
    return digest.hexdigest()


def _hash_circuit(circuit: QuantumCircuit, digest) -> None:
    qindex = {bit: i for i, bit in enumerate(circuit.qubits)}
    cindex = {bit: i for i, bit in enumerate(circuit.clbits)}
    digest.update(
        f"C{circuit.num_qubits},{circuit.num_clbits},{_param(circuit.global_phase)};".encode()
    )
    if circuit.layout is not None:
        digest.update(f"L{circuit.layout.initial_index_layout()};".encode())
    for instruction in circuit.data:
        op = instruction.operation
        params = ",".join(_param(p) for p in op.params)
        qargs = ",".join(str(qindex[q]) for q in instruction.qubits)
        cargs = ",".join(str(cindex[c]) for c in instruction.clbits)
        unit = getattr(op, "unit", "") if op.name == "delay" else ""
        digest.update(f"{op.name}/{op.num_qubits}/{op.num_clbits}({params}){unit}[{qargs}|{cargs}];".encode())
        if op.name not in _STANDARD_NAMES and getattr(op, "blocks", None) is None:
            definition = getattr(op, "definition", None)
            if definition is not None:  # a custom gate: its body is part of its structure
                digest.update(b"{")
                _hash_circuit(definition, digest)
                digest.update(b"}")


def _param(value: Any) -> str:
    if isinstance(value, float):
        return value.hex()
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, ParameterExpression):
        try:
            return float(value).hex()
        except TypeError:
            return f"P:{value}"
    if isinstance(value, np.ndarray):
        return f"A{value.shape}{value.dtype}:{hashlib.blake2b(value.tobytes(), digest_size=12).hexdigest()}"
    if isinstance(value, QuantumCircuit):
        return f"Q:{structure_key(value)}"
    return repr(value)


def compile_for(
    device: DeviceSpec,
    circuit: QuantumCircuit,
    *,
    shots: int = 1024,
    job_id: str | None = None,
    cache: CompileCache | None = None,
    optimization_level: int = 1,
    seed_transpiler: int | None = 0,
    parameterized: bool = False,
    require_measurements: bool | None = None,
) -> Payload:
    """Compile ``circuit`` for ``device``'s Target and wrap it as a device-ready :class:`Payload`.

    A circuit wider than the device raises :class:`CircuitTooWideError` before anything is
    compiled or sent. ``cache`` defaults to :data:`DEFAULT_CACHE`; ``job_id`` defaults to
    ``job-<n>`` (a per-process counter). The payload's ``meta`` records the circuit name,
    whether the cache hit, the compile time and the physical qubit of each circuit qubit.

    ``parameterized``: the circuit may keep unbound parameters; the payload gets a ``payload_id``
    (a digest of circuit structure, compile options and device target) and ``meta["parameters"]``
    (the parameter names the ISA circuit kept). Without it, unbound parameters are refused.

    Raises:
        CircuitTooWideError: the circuit is wider than the device.
        CompileError: unbound parameters (not ``parameterized``), or the transpiler failed.
        UsageError: ``shots`` is not a positive integer.
    """
    _check_compilable(device, circuit, shots, parameterized)
    if require_measurements is None:
        require_measurements = not parameterized  # primitives (parameterized) decide themselves
    if require_measurements and not any(inst.operation.name == "measure" for inst in circuit.data):
        # a sampler would "succeed" with {'': shots}; estimator-style callers pass False
        raise CompileError(
            f"Circuit '{circuit.name}' has no measurements, so running it on device {device.name} "
            "would return no counts; add measurements (e.g. qc.measure_all()) before sending it."
        )
    cache = DEFAULT_CACHE if cache is None else cache
    key = (structure_key(circuit), isa_fingerprint(device), optimization_level, seed_transpiler)
    entry = cache.get(key)
    hit = entry is not None
    if entry is None:
        entry = _compile(device, circuit, optimization_level, seed_transpiler)
        cache.put(key, entry)
    fingerprint = target_fingerprint(device)
    payload_id = None
    if parameterized:
        payload_id = hashlib.blake2b(repr((key, fingerprint)).encode(), digest_size=12).hexdigest()
    return Payload(
        job_id=job_id if job_id is not None else f"job-{next(_job_counter)}",
        device=device.key,
        fingerprint=fingerprint,
        qpy=entry.qpy,
        shots=int(shots),
        num_qubits=entry.num_qubits,
        num_clbits=entry.num_clbits,
        meta={
            "name": circuit.name,
            "cache_hit": hit,
            "compile_seconds": 0.0 if hit else entry.compile_seconds,
            "physical_qubits": entry.physical_qubits,
            "optimization_level": optimization_level,
            **({"parameters": entry.parameters} if parameterized else {}),
        },
        payload_id=payload_id,
    )


def _check_compilable(device: DeviceSpec, circuit: QuantumCircuit, shots: Any, parameterized: bool = False) -> None:
    """Refuse, before any work, what cannot become a payload for ``device``."""
    problem = None
    if not isinstance(shots, (int, np.integer)) or isinstance(shots, bool) or shots < 1:
        raise UsageError(f"shots must be a positive integer, got {shots!r}.")
    if circuit.num_qubits > device.num_qubits:
        problem = CircuitTooWideError(
            f"Circuit '{circuit.name}' has {circuit.num_qubits} qubits but device {device.name} "
            f"has {device.num_qubits}; it was not compiled or sent. Cut it into blocks of at most "
            f"{device.num_qubits} qubits or choose a wider device."
        )
    elif circuit.parameters and not parameterized:
        problem = CompileError(
            f"Circuit '{circuit.name}' has unbound parameters {sorted(p.name for p in circuit.parameters)}; "
            f"bind them before compiling it for device {device.name}."
        )
    if problem is not None:
        raise problem


def _compile(device: DeviceSpec, circuit: QuantumCircuit, level: int, seed: int | None) -> _Compiled:
    start = time.perf_counter()
    try:
        isa = transpile(
            circuit,
            target=device_target(device),
            optimization_level=level,
            seed_transpiler=seed,
        )
    except Exception as exc:
        raise CompileError(
            f"Circuit '{circuit.name}' could not be compiled for device {device.name} "
            f"(basis {list(device.basis_gates)}, coupling {_coupling_name(device)}): {exc}"
        ) from exc
    data = dump_circuit(isa)
    physical = (
        isa.layout.final_index_layout() if isa.layout is not None else list(range(circuit.num_qubits))
    )
    return _Compiled(
        data, isa.num_qubits, isa.num_clbits, physical, time.perf_counter() - start,
        tuple(p.name for p in isa.parameters),
    )


def _coupling_name(device: DeviceSpec) -> str:
    return device.coupling if isinstance(device.coupling, str) else f"{len(device.coupling)} pairs"
