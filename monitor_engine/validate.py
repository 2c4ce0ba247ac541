"""Monitor-side checks of a device-ready payload: right device, right shape, ISA only.

Nothing here compiles: a payload that fails a check is refused with an error, never fixed up.
"""

from __future__ import annotations

from qiskit import QuantumCircuit
from qiskit.transpiler import Target

from mpiq_magic.kernel.config import DeviceSpec

from .errors import ISAError, PayloadError, WrongDeviceError
from .payload import Payload

#: Compiler directives an ISA circuit may keep; they are no device operation.
DIRECTIVES = frozenset({"barrier"})
#: Upper bound on shots per payload, to refuse absurd requests before allocating for them.
MAX_SHOTS = 10_000_000


def _who(spec: DeviceSpec, qrank: int | None) -> str:
    return f"{spec.name} (qrank {qrank})" if qrank is not None else spec.name


def check_header(payload: Payload, spec: DeviceSpec, fingerprint: str, qrank: int | None = None) -> None:
    """Refuse a payload that is not for this device or whose header is malformed."""
    if not isinstance(payload, Payload):
        raise PayloadError(
            f"Monitor {_who(spec, qrank)} expected a Payload, got {type(payload).__name__}."
        )
    device = tuple(payload.device)
    if device != spec.key:
        raise WrongDeviceError(
            f"Payload {payload.job_id} was compiled for device {device[0]}:{device[1]} but this "
            f"monitor is {_who(spec, qrank)}."
        )
    if payload.fingerprint != fingerprint:
        raise WrongDeviceError(
            f"Payload {payload.job_id} was compiled for a different target of device "
            f"{spec.name} (fingerprint {payload.fingerprint}, this monitor {_who(spec, qrank)} "
            f"has {fingerprint}); recompile it with compile_for against the current device config."
        )
    shots = payload.shots
    if not isinstance(shots, int) or isinstance(shots, bool) or not 1 <= shots <= MAX_SHOTS:
        raise PayloadError(
            f"Payload {payload.job_id} asks for {shots!r} shots; monitor {_who(spec, qrank)} "
            f"runs between 1 and {MAX_SHOTS}."
        )
    if payload.num_qubits > spec.num_qubits:
        raise PayloadError(
            f"Payload {payload.job_id} has {payload.num_qubits} qubits but device "
            f"{_who(spec, qrank)} has {spec.num_qubits}."
        )


def check_circuit(
    payload: Payload, circuit: QuantumCircuit, spec: DeviceSpec, target: Target, qrank: int | None = None,
    *, allow_parameters: bool = False,
) -> None:
    """Refuse a loaded circuit that does not match its header or leaves the device's ISA.

    ``allow_parameters``: a parameterized payload (cached, bound per run) may keep the unbound
    parameters its header names, and no other.
    """
    who = _who(spec, qrank)
    if circuit.num_qubits > spec.num_qubits:
        raise PayloadError(
            f"Payload {payload.job_id} holds a {circuit.num_qubits}-qubit circuit but device "
            f"{who} has {spec.num_qubits} qubits."
        )
    if (circuit.num_qubits, circuit.num_clbits) != (payload.num_qubits, payload.num_clbits):
        raise PayloadError(
            f"Payload {payload.job_id} declares {payload.num_qubits} qubits and "
            f"{payload.num_clbits} clbits but its circuit has {circuit.num_qubits} and "
            f"{circuit.num_clbits}."
        )
    if circuit.parameters:
        names = sorted(p.name for p in circuit.parameters)
        if not allow_parameters:
            raise PayloadError(f"Payload {payload.job_id} has unbound parameters {names}.")
        declared = set(payload.parameters)
        if not set(names) <= declared:
            raise PayloadError(
                f"Payload {payload.job_id} has parameters {names} but declares {sorted(declared)}."
            )
    index = {bit: i for i, bit in enumerate(circuit.qubits)}
    supported = target.instruction_supported
    seen: dict[tuple[str, tuple[int, ...]], bool] = {}
    for instruction in circuit.data:
        name = instruction.operation.name
        if name in DIRECTIVES:
            continue
        qargs = tuple(index[q] for q in instruction.qubits)
        ok = seen.get((name, qargs))
        if ok is None:
            ok = seen[(name, qargs)] = supported(operation_name=name, qargs=qargs)
        if not ok:
            if name not in target.operation_names:
                raise ISAError(
                    f"Payload {payload.job_id} contains operation '{name}' on qubits {list(qargs)}, "
                    f"which is not in the ISA of device {who}; its ISA is "
                    f"{', '.join(sorted(target.operation_names))}. Compile it with compile_for "
                    "for this device."
                )
            raise ISAError(
                f"Payload {payload.job_id} applies '{name}' to qubits {list(qargs)}, which device "
                f"{who} does not support on those qubits (they are not coupled); compile it "
                "with compile_for for this device."
            )
