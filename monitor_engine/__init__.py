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

import importlib
from typing import Any

#: module -> the names it exports (imported on first use)
_MODULES = {
    "target": ("device_target", "target_fingerprint", "isa_fingerprint",),
    "payload": ("Payload", "CompileCache", "DEFAULT_CACHE", "compile_for", "structure_key",),
    "backend": ("DeviceBackend", "AerDeviceBackend", "SamplerDeviceBackend", "BackendRun", "make_backend", "register_backend",),
    "process": ("ExecutionResult", "MonitorProcess",),
    "client": ("MonitorClient", "spmd_run",),
    "dispatch": ("Share", "Dispatcher", "DispatchResult", "dispatcher_for",),
    "serve": ("monitor_for", "ServeReport",),
    "job": ("run_job",),
    "errors": ("MonitorError", "CircuitTooWideError", "CompileError", "PayloadError", "WrongDeviceError", "ISAError", "BackendError",),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'monitor_engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
