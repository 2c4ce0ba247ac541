"""Where sub-problem circuits run: the MPI-Q primitives, or in-process simulators.

An executor takes *jobs* — ``(circuit, values, qrank, shots)`` with ``values`` one row per
parameter set — and returns, per job, an int64 array ``(rows, samples)`` of measured
assignments (bit ``i`` = clbit ``i`` of a register; every register of the circuit is one more
copy, so ``samples = shots * registers``). :class:`SamplerExecutor` sends all jobs of a call as
one ``SamplerV2.run`` (one PUB per job, pinned to its qrank): sub-problems on different monitors
run in parallel, the circuit is compiled once per device and later calls carry only parameter
values. :class:`LocalExecutor` runs the same compiled payloads on in-process Aer backends built
from the same device specs (tests, baselines without MPI).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..kernel.errors import UsageError


@dataclass
class Job:
    circuit: Any
    values: np.ndarray
    qrank: int
    shots: int


def packed_to_ints(packed: np.ndarray) -> np.ndarray:
    """BitArray bytes ``(..., nbytes)`` (big-endian, clbit 0 = LSB of the last byte) -> int64."""
    packed = np.asarray(packed, dtype=np.uint8)
    nbytes = packed.shape[-1]
    out = np.zeros(packed.shape[:-1], dtype=np.int64)
    for j in range(nbytes):
        out = (out << 8) | packed[..., j].astype(np.int64)
    return out


class SamplerExecutor:
    """Jobs as PUBs of an MPI-Q ``SamplerV2`` (headless communicator or cluster)."""

    def __init__(self, sampler):
        self.sampler = sampler
        self.devices = list(sampler.transport.devices)
        self.calls = 0
        self.last_metadata: list[dict] = []

    def run(self, jobs: Sequence[Job]) -> list[np.ndarray]:
        pubs = [(job.circuit, job.values, job.shots) for job in jobs]
        result = self.sampler.run(pubs, pin=[job.qrank for job in jobs]).result()
        self.calls += 1
        out = []
        self.last_metadata = [dict(r.metadata) for r in result]
        for job, pub in zip(jobs, result):
            blocks = [packed_to_ints(pub.data[c.name].array) for c in job.circuit.cregs]
            out.append(np.concatenate(blocks, axis=-1).reshape(len(job.values), -1))
        return out


class LocalExecutor:
    """Jobs on in-process qiskit-aer backends of ``devices`` (``DeviceSpec`` list; qrank = index),
    compiled with the same ``compile_for`` the dispatch path uses."""

    def __init__(self, devices: Sequence[Any], *, seed: int | None = None):
        from monitor_engine.backend import make_backend

        self.devices = list(devices)
        self.seed = seed
        self.calls = 0
        self._backends = [make_backend(d) for d in self.devices]
        self.last_metadata: list[dict] = []

    def run(self, jobs: Sequence[Job]) -> list[np.ndarray]:
        from monitor_engine.payload import compile_for

        out = []
        for index, job in enumerate(jobs):
            if not 0 <= job.qrank < len(self.devices):
                raise UsageError(f"qrank {job.qrank} names no device; there are {len(self.devices)}.")
            payload = compile_for(self.devices[job.qrank], job.circuit, shots=job.shots, parameterized=True)
            isa = payload.circuit()
            names = [p.name for p in job.circuit.parameters]
            by_name = {p.name: p for p in isa.parameters}
            rows = []
            for r, row in enumerate(np.atleast_2d(job.values)):
                bound = isa.assign_parameters({by_name[nm]: float(v) for nm, v in zip(names, row) if nm in by_name})
                seed = None if self.seed is None else self.seed + 7919 * self.calls + 104729 * index + r
                run = self._backends[job.qrank].run(bound, job.shots, seed)
                full = packed_to_ints(run.memory)
                blocks, offset = [], 0
                for creg in job.circuit.cregs:
                    blocks.append((full >> offset) & ((1 << creg.size) - 1))
                    offset += creg.size
                rows.append(np.concatenate(blocks))
            out.append(np.stack(rows))
        self.calls += 1
        return out
