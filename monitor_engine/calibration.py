"""Qiskit objects from a device calibration: a Target with error rates, the Aer noise model.

:mod:`mpiq_magic.kernel.calibration` reads calibrations (fake backends of qiskit-ibm-runtime,
calibration JSON) without Qiskit; this module turns one into

- :func:`calibration_target`: a Qiskit ``Target`` carrying every calibrated gate's error and
  duration, the readout errors on ``measure`` and each qubit's T1/T2 (``QubitProperties``);
- :func:`calibration_noise_model`: qiskit-aer's ``NoiseModel.from_backend`` on that Target
  (depolarizing gate errors + thermal relaxation + readout errors, per qubit and pair).

Payloads are still compiled for :func:`monitor_engine.target.device_target` (basis and coupling
only, no error rates): which physical qubits a circuit uses is the workload's decision (e.g. the
noise-aware regions of :mod:`mpiq_magic.qaoa.regions`), not a side effect of the transpiler's
error-aware layout passes, and the monitor's ISA check is unchanged.
"""

from __future__ import annotations

from functools import lru_cache
from types import SimpleNamespace

from mpiq_magic.kernel.calibration import Calibration, load_calibration

from .errors import BackendError


def calibration_target(cal: Calibration):
    """A Qiskit ``Target`` for ``cal`` with per-instruction error/duration and qubit properties.

    Raises:
        BackendError: the calibration names a gate Qiskit does not know.
    """
    from qiskit.circuit import Delay, Measure, Parameter, Reset
    from qiskit.circuit.library import get_standard_gate_name_mapping
    from qiskit.providers import QubitProperties
    from qiskit.transpiler import InstructionProperties, Target

    qubit_props = [
        QubitProperties(
            t1=_at(cal.t1, q), t2=_at(cal.t2, q), frequency=_at(cal.frequency, q)
        )
        for q in range(cal.num_qubits)
    ]
    target = Target(num_qubits=cal.num_qubits, dt=cal.dt, qubit_properties=qubit_props)
    mapping = get_standard_gate_name_mapping()
    by_gate: dict[str, dict[tuple[int, ...], InstructionProperties]] = {}
    for g in cal.gates:
        if g.gate == "reset" or g.gate not in mapping:
            continue
        by_gate.setdefault(g.gate, {})[g.qubits] = InstructionProperties(error=g.error, duration=g.duration)
    for name in cal.basis_gates:
        if name in ("measure", "reset", "delay") or name in by_gate:
            continue
        if name not in mapping:
            raise BackendError(
                f"Calibration '{cal.source or cal.name}' names gate '{name}', which Qiskit's standard "
                "gates do not include."
            )
        arity = mapping[name].num_qubits
        if arity == 1:
            by_gate[name] = {(q,): InstructionProperties(error=0.0, duration=0.0) for q in range(cal.num_qubits)}
        elif arity == 2:
            by_gate[name] = {tuple(p): None for p in cal.coupling}
    for name, props in by_gate.items():
        target.add_instruction(mapping[name], props)
    target.add_instruction(
        Measure(),
        {(q,): InstructionProperties(error=cal.readout_error[q], duration=_at(cal.readout_length, q))
         for q in range(cal.num_qubits)},
    )
    target.add_instruction(Reset(), {(q,): None for q in range(cal.num_qubits)})
    target.add_instruction(Delay(Parameter("t")), {(q,): None for q in range(cal.num_qubits)})
    return target


def _at(values, q):
    return values[q] if q < len(values) else None


@lru_cache(maxsize=16)
def _noise_model(source: str):
    from qiskit_aer.noise import NoiseModel

    cal = load_calibration(source)
    target = calibration_target(cal)
    shim = SimpleNamespace(
        version=2, target=target, operation_names=list(target.operation_names), dt=cal.dt,
        name=cal.name,
    )
    try:
        return NoiseModel.from_backend(shim)
    except Exception as exc:
        raise BackendError(f"Cannot build a noise model from calibration '{source}': {exc}") from exc


def calibration_noise_model(source: str):
    """The Aer noise model of calibration ``source`` (built once per process).

    Raises:
        ConfigError: unknown or invalid calibration (see ``load_calibration``).
        BackendError: Aer could not build the model.
    """
    return _noise_model(source)
