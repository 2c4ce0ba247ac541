"""``SamplerV2`` on the hybrid cluster: Qiskit's sampler interface, MPI-Q underneath.

PUB semantics are Qiskit's (``SamplerPub.coerce``): a circuit, optional parameter values
(broadcast to the PUB's shape), optional shots (else the ``run`` shots, else ``default_shots``).
Each PUB becomes one :class:`~mpiq_magic.primitives.runner.Task`; its elements are spread over
the monitors whose device fits, the circuit is compiled once per device target on classical
rank 0 and monitors bind the values. The result has one ``BitArray`` per classical register,
shaped like the PUB, exactly as ``StatevectorSampler`` and qiskit-aer's ``SamplerV2`` return.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable

import numpy as np
from qiskit.primitives import BaseSamplerV2
from qiskit.primitives.containers import BitArray, DataBin, PrimitiveResult, SamplerPubResult
from qiskit.primitives.containers.sampler_pub import SamplerPub, SamplerPubLike

from ..kernel.errors import UsageError
from .base import ClusterPrimitive, MPIQJob, check_pin, check_widths, flat_values, pub_seed, run_metadata
from .runner import Task


class SamplerV2(ClusterPrimitive, BaseSamplerV2):
    """Qiskit ``SamplerV2`` whose PUBs run on MPI-Q monitors.

    ``target``: a :class:`~mpiq_magic.cluster.HybridCluster` (``cluster.sampler()``), or a hybrid
    communicator on classical rank 0 while the monitors ``serve(hc)`` (headless). ``seed``: an int
    makes runs reproducible (per PUB; rows split over monitors sample as in one run); None uses
    the devices' seeds. ``pin``: a qrank or ``(host, device_id)`` every PUB runs on (``run`` can
    override it per PUB). ``progress``: headless, true prints text progress on stderr; on a
    cluster, a callable or a live view (``mpiq_magic.widgets.ProgressWidget``) that receives this
    primitive's progress events (they also reach ``cluster.progress``).

    Raises:
        UsageError: ``target`` is not a cluster or a communicator on classical rank 0, or bad
            ``default_shots``.
    """

    def __init__(
        self,
        target: Any,
        *,
        default_shots: int = 1024,
        seed: int | np.random.Generator | None = None,
        pin: Any = None,
        timeout: float | None = None,
        progress: Any = False,
    ):
        if isinstance(default_shots, bool) or not isinstance(default_shots, (int, np.integer)) or default_shots < 1:
            raise UsageError(f"default_shots must be a positive integer, got {default_shots!r}.")
        self._connect(target, seed, pin, timeout, progress)
        self._default_shots = int(default_shots)

    @property
    def default_shots(self) -> int:
        return self._default_shots

    def run(self, pubs: Iterable[SamplerPubLike], *, shots: int | None = None, pin: Any = None) -> MPIQJob:
        """Run the PUBs (coerced as Qiskit does); ``pin`` overrides the primitive's pin (one, or
        one per PUB). The returned job is finished; ``result()`` raises a failed run's error.

        Raises:
            ValueError: a PUB Qiskit refuses (bad shapes, shots, parameters).
            UsageError: a bad pin.
        """
        if shots is None:
            shots = self._default_shots
        coerced = [SamplerPub.coerce(pub, shots) for pub in pubs]
        if any(len(pub.circuit.cregs) == 0 for pub in coerced):
            warnings.warn(
                "One of your circuits has no output classical registers and so the result "
                "will be empty. Did you mean to add measurement instructions?",
                UserWarning,
            )
        pins = check_pin(self._pin if pin is None else pin, len(coerced))
        check_widths([pub.circuit for pub in coerced], self._transport.devices, pins)
        return MPIQJob(self._run, coerced, pins)

    def _run(self, pubs: list[SamplerPub], pins: list[Any]) -> PrimitiveResult[SamplerPubResult]:
        tasks, owners = [], []
        for i, pub in enumerate(pubs):
            if pub.circuit.num_clbits == 0 or pub.size == 0:
                continue
            tasks.append(Task(pub.circuit, flat_values(pub), pub.shots, pub_seed(self._seed, i), pins[i]))
            owners.append(i)
        report = self._transport.run(tasks) if tasks else None
        by_pub = dict(zip(owners, report.results if report else []))
        return PrimitiveResult(
            [self._pub_result(pub, by_pub.get(i), report) for i, pub in enumerate(pubs)],
            metadata={"version": 2},
        )

    @staticmethod
    def _pub_result(pub: SamplerPub, result, report) -> SamplerPubResult:
        circuit = pub.circuit
        meas = {}
        metadata: dict[str, Any] = {"shots": pub.shots, "circuit_metadata": circuit.metadata}
        if result is not None:
            nbytes = result.memory.shape[-1]
            full = BitArray(result.memory.reshape(pub.shape + (pub.shots, nbytes)), circuit.num_clbits)
            for creg in circuit.cregs:
                meas[creg.name] = full.slice_bits([circuit.find_bit(b).index for b in creg])
            metadata.update(run_metadata(report, [result], pub.shots))
            metadata["qranks"] = result.qranks.reshape(pub.shape)
            metadata["execute_seconds"] = result.execute_seconds.reshape(pub.shape)
        else:
            for creg in circuit.cregs:
                meas[creg.name] = BitArray(
                    np.zeros(pub.shape + (pub.shots, (creg.size + 7) // 8), dtype=np.uint8), creg.size
                )
        return SamplerPubResult(DataBin(**meas, shape=pub.shape), metadata=metadata)

