"""Virtual processor topology (paper section 3.1).

Classical virtual processors are mapped to CPU cores of their host by the paper's random
adaptive allocation: pick a random candidate core, accept it if its load is under capacity,
otherwise keep iterating over the remaining candidates. Quantum virtual processors use the
fixed mapping qrank -> (host, device_id) from the device configuration.
"""

from __future__ import annotations

import math
import os
import random
import socket
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from .config import DeviceSpec
from .errors import BindingError
from .hosts import is_loopback, node_id


@dataclass(frozen=True)
class ClassicalVP:
    rank: int
    comm_rank: int
    host: str
    core: int


@dataclass(frozen=True)
class QuantumVP:
    qrank: int
    comm_rank: int
    host: str
    device_id: int
    num_qubits: int
    backend: str
    method: str


@dataclass(frozen=True)
class Topology:
    classical: tuple[ClassicalVP, ...]
    quantum: tuple[QuantumVP, ...]
    hosts: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "classical": [asdict(v) for v in self.classical],
            "quantum": [asdict(v) for v in self.quantum],
            "hosts": list(self.hosts),
        }

    def __str__(self) -> str:
        lines = [f"hybrid communicator: {len(self.classical)} classical, {len(self.quantum)} quantum"]
        for v in self.classical:
            lines.append(f"  rank {v.rank:<3} comm rank {v.comm_rank:<3} host {v.host} core {v.core}")
        for q in self.quantum:
            lines.append(
                f"  qrank {q.qrank:<2} comm rank {q.comm_rank:<3} device ({q.host}, {q.device_id}) "
                f"{q.num_qubits} qubits, {q.backend}/{q.method}"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class HostInfo:
    """What a process tells the others about where it runs (allgathered at init)."""

    hostname: str
    node_id: str
    addresses: tuple[str, ...]
    cores: tuple[int, ...]


def local_host_info() -> HostInfo:
    hostname = socket.gethostname()
    addresses = {hostname, socket.getfqdn()}
    try:
        addresses.update(info[4][0] for info in socket.getaddrinfo(hostname, None))
    except OSError:
        pass
    node = node_id()
    try:
        cores = tuple(sorted(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = tuple(range(os.cpu_count() or 1))
    return HostInfo(hostname, node, tuple(sorted(addresses)), cores)


def check_binding(qrank: int, comm_rank: int, spec: DeviceSpec, info: HostInfo, single_node: bool) -> None:
    """Raise :class:`BindingError` unless ``spec.host`` names the host this process runs on."""
    if is_loopback(spec.host):
        if single_node:
            return
        raise BindingError(
            f"qrank {qrank} (comm rank {comm_rank}) is bound to device ({spec.host}, {spec.device_id}) "
            f"from '{spec.source}', but a loopback host is ambiguous when the job spans several "
            f"nodes; name the node (this process runs on '{info.hostname}')."
        )
    names = set(info.addresses) | {info.hostname}
    if spec.host in names:
        return
    try:
        resolved = {a[4][0] for a in socket.getaddrinfo(spec.host, None)}
    except OSError:
        resolved = set()
    if resolved & names:
        return
    raise BindingError(
        f"qrank {qrank} (comm rank {comm_rank}) is bound to device ({spec.host}, {spec.device_id}) "
        f"from '{spec.source}', but runs on host '{info.hostname}' (addresses: "
        f"{', '.join(sorted(names))}); start it on {spec.host} or fix the devices file."
    )


def map_classical(
    classical_comm_ranks: Sequence[int], infos: Sequence[HostInfo], seed: int = 0
) -> tuple[ClassicalVP, ...]:
    """Random adaptive mapping of classical VPs to cores, with a per-core load check.

    Deterministic for a given seed, so every process computes the same mapping without
    extra communication.
    """
    rng = random.Random(seed)
    by_node: dict[str, list[int]] = {}
    for r in classical_comm_ranks:
        by_node.setdefault(infos[r].node_id, []).append(r)
    core_of: dict[int, int] = {}
    for node, ranks in by_node.items():
        cores = list(infos[ranks[0]].cores) or [0]
        capacity = math.ceil(len(ranks) / len(cores))
        load = {c: 0 for c in cores}
        for r in ranks:
            candidates = cores[:]
            rng.shuffle(candidates)
            chosen = next((c for c in candidates if load[c] < capacity), min(cores, key=load.get))
            load[chosen] += 1
            core_of[r] = chosen
    return tuple(
        ClassicalVP(rank=i, comm_rank=r, host=infos[r].hostname, core=core_of[r])
        for i, r in enumerate(classical_comm_ranks)
    )


def map_quantum(quantum_comm_ranks: Sequence[int], devices: Sequence[DeviceSpec]) -> tuple[QuantumVP, ...]:
    """Fixed mapping qrank j -> devices[j]."""
    return tuple(
        QuantumVP(
            qrank=j,
            comm_rank=r,
            host=d.host,
            device_id=d.device_id,
            num_qubits=d.num_qubits,
            backend=d.backend,
            method=d.method,
        )
        for j, (r, d) in enumerate(zip(quantum_comm_ranks, devices))
    )
