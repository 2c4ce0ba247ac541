"""Quantum MonitorProcess: executes device-ready payloads on its bound device (paper section 3.2).

One dispatch path: on a classical rank :func:`dispatch` places each :class:`Share` on a monitor,
compiles it for that device (:func:`compile_for`: ISA circuit as QPY bytes in a :class:`Payload`,
cached by structure and target) and sends it; on a quantum process :func:`serve` runs it on the
:class:`MonitorProcess` bound to its device, which checks the payload against its own Target and
runs it on its :class:`DeviceBackend` (qiskit-aer by default), never recompiling.
:class:`MonitorClient` and :func:`spmd_run` are thin callers of the same path.

Imports are lazy so ``import monitor_engine`` does not start MPI or load qiskit-aer.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "device_target": "target",
    "target_fingerprint": "target",
    "isa_fingerprint": "target",
    "Payload": "payload",
    "CompileCache": "payload",
    "DEFAULT_CACHE": "payload",
    "compile_for": "payload",
    "structure_key": "payload",
    "DeviceBackend": "backend",
    "AerDeviceBackend": "backend",
    "SamplerDeviceBackend": "backend",
    "BackendRun": "backend",
    "make_backend": "backend",
    "register_backend": "backend",
    "ExecutionResult": "process",
    "MonitorProcess": "process",
    "MonitorClient": "client",
    "spmd_run": "client",
    "Share": "dispatch",
    "Dispatcher": "dispatch",
    "DispatchResult": "dispatch",
    "dispatch": "dispatch",
    "serve": "serve",
    "monitor_for": "serve",
    "run_job": "job",
    "MonitorError": "errors",
    "CircuitTooWideError": "errors",
    "CompileError": "errors",
    "PayloadError": "errors",
    "WrongDeviceError": "errors",
    "ISAError": "errors",
    "BackendError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'monitor_engine' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return __all__
