"""The Qiskit ``Target`` of a configured device, and fingerprints of what its ISA depends on.

The classical side transpiles to :func:`device_target`; the monitor recomputes
:func:`target_fingerprint` (device key + ISA) for its own device and refuses payloads compiled
for anything else. :func:`isa_fingerprint` (ISA only) keys the compile cache, so ISA-identical
devices share compilations.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache

from qiskit.transpiler import CouplingMap, Target

from mpiq_magic.kernel.config import DeviceSpec

#: Bumped whenever the meaning of a fingerprint changes, so old payloads are refused.
FINGERPRINT_VERSION = 1


def coupling_edges(spec: DeviceSpec) -> list[tuple[int, int]] | None:
    """The directed edges of the device's coupling map; None means all-to-all."""
    return _edges(spec.num_qubits, spec.coupling, spec.name)


def _edges(num_qubits, coupling, name) -> list[tuple[int, int]] | None:
    if coupling == "full":
        return None
    if coupling == "line":
        return list(CouplingMap.from_line(num_qubits, bidirectional=True).get_edges())
    edges = []
    for a, b in coupling:
        if not (0 <= a < num_qubits and 0 <= b < num_qubits) or a == b:
            raise ValueError(
                f"Device {name} has coupling pair ({a}, {b}), which is not a pair of distinct "
                f"qubits among its {num_qubits} qubits."
            )
        edges.append((int(a), int(b)))
    return edges


def isa_fingerprint(spec: DeviceSpec) -> str:
    """A stable hex digest of the ISA alone: basis gates, coupling map, width.

    Devices with equal ISA fingerprints get identical compiled circuits, so the compile cache
    keys on this one.
    """
    return _isa_fingerprint(spec.num_qubits, spec.basis_gates, spec.coupling, spec.name)


def target_fingerprint(spec: DeviceSpec) -> str:
    """A stable hex digest of the device key and its ISA (what a payload is compiled for)."""
    isa = _isa_fingerprint(spec.num_qubits, spec.basis_gates, spec.coupling, spec.name)
    return _digest({"version": FINGERPRINT_VERSION, "device": [spec.host, spec.device_id], "isa": isa})


@lru_cache(maxsize=256)
def _isa_fingerprint(num_qubits, basis_gates, coupling, name) -> str:
    edges = _edges(num_qubits, coupling, name)
    return _digest({
        "version": FINGERPRINT_VERSION,
        "num_qubits": num_qubits,
        "basis_gates": sorted(set(basis_gates)),
        "coupling": "full" if edges is None else sorted(edges),
    })


def _digest(description: dict) -> str:
    text = json.dumps(description, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def device_target(spec: DeviceSpec) -> Target:
    """The Qiskit ``Target`` of ``spec``: its basis gates on its coupling map and qubit count.

    Targets are cached per ISA description; treat the returned object as read-only.
    """
    return _target(spec.num_qubits, spec.basis_gates, spec.coupling, spec.name)


@lru_cache(maxsize=64)
def _target(num_qubits, basis_gates, coupling, name) -> Target:
    edges = _edges(num_qubits, coupling, name)
    coupling_map = None if edges is None else CouplingMap(edges)
    try:
        return Target.from_configuration(
            basis_gates=list(basis_gates), num_qubits=num_qubits, coupling_map=coupling_map
        )
    except Exception as exc:
        raise ValueError(
            f"Cannot build a Qiskit Target for device {name} from "
            f"basis_gates={list(basis_gates)!r} on {num_qubits} qubits: {exc}"
        ) from exc
