"""Quantum MonitorProcess: executes device-ready payloads on its bound device (paper section 3.2).

Classical side: :func:`compile_for` a circuit for a device (ISA circuit as QPY bytes in a
:class:`Payload`, cached by structure and target), send it with a :class:`MonitorClient` or
``hc.scatter``. Quantum side: :class:`MonitorProcess` checks the payload against its own
Target and runs it on its :class:`DeviceBackend` (qiskit-aer by default), never recompiling.

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
    "MonitorClient": "process",
    "MonitorRequest": "process",
    "MonitorReply": "process",
    "MONITOR_TAG": "process",
    "REPLY_TAG": "process",
    "spmd_run": "process",
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
