"""What SamplerV2 and EstimatorV2 share: where they run (a transport), their job, their options.

A primitive runs through a *transport*: :class:`~mpiq_magic.primitives.runner.HeadlessTransport`
for a hybrid communicator (classical rank 0 of an ``mpiexec`` job), or
:class:`~mpiq_magic.cluster.primitives.ClusterTransport` for a
:class:`~mpiq_magic.cluster.HybridCluster` (a notebook). :func:`transport_for` picks it from what
the primitive was given. The run itself happens when ``run()`` is called, on the calling thread
(MPI calls stay on one thread); the returned :class:`MPIQJob` is already in a final state and
``result()`` raises what the run raised.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

import numpy as np
from qiskit.primitives import BasePrimitiveJob
from qiskit.providers import JobStatus

from ..kernel.errors import UsageError


class MPIQJob(BasePrimitiveJob):
    """The finished run of a primitive: ``result()`` returns the ``PrimitiveResult`` or raises
    the error of the run (a failed element, a deadline)."""

    def __init__(self, function: Callable[..., Any], *args: Any):
        super().__init__(job_id=str(uuid.uuid4()))
        self._result = None
        self._error: BaseException | None = None
        try:
            self._result = function(*args)
        except Exception as exc:  # surfaces at result(), as with Qiskit's PrimitiveJob
            self._error = exc

    def result(self):
        """The ``PrimitiveResult``.

        Raises:
            Exception: whatever the run raised (e.g. ``PrimitiveRunError``, ``MPIQTimeoutError``).
        """
        if self._error is not None:
            raise self._error
        return self._result

    def status(self) -> JobStatus:
        return JobStatus.ERROR if self._error is not None else JobStatus.DONE

    def done(self) -> bool:
        return True

    def running(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def in_final_state(self) -> bool:
        return True

    def cancel(self) -> None:
        """Nothing to cancel: the run finished inside ``run()``."""


class ClusterPrimitive:
    """What SamplerV2 and EstimatorV2 share: the transport to the monitors, the seed, the pin,
    and closing (a context manager)."""

    def _connect(self, target: Any, seed: Any, pin: Any, timeout: float | None, progress: Any) -> None:
        self._transport = transport_for(target, timeout=timeout, progress=progress)
        self._seed = seed
        self._pin = pin

    @property
    def seed(self):
        return self._seed

    @property
    def transport(self):
        return self._transport

    def close(self, shutdown: bool = True) -> None:
        """Release the monitors: headless, shut them down (their ``serve`` returns); on a
        cluster, nothing to do (the cluster owns them).

        Raises:
            MPIQTimeoutError: a monitor did not acknowledge the shutdown in time.
        """
        self._transport.close(shutdown)

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def transport_for(target: Any, *, timeout: float | None = None, progress: Any = False):
    """The transport of ``target``: a HybridCluster, a hybrid communicator, or a transport.

    ``progress``: headless, true prints text progress on stderr; on a cluster, a callable or a
    live view (``mpiq_magic.widgets.ProgressWidget``) that receives the run's progress events
    (every cluster run also publishes them to ``cluster.progress``).

    Raises:
        UsageError: ``target`` is none of those, or a communicator on another process than
            classical rank 0.
    """
    if hasattr(target, "run") and hasattr(target, "devices") and hasattr(target, "close") and not hasattr(target, "engines"):
        return target  # already a transport
    if hasattr(target, "engines") and hasattr(target, "scatter"):  # a HybridCluster
        from ..cluster.primitives import ClusterTransport

        return ClusterTransport(target, timeout=timeout, progress=None if isinstance(progress, bool) else progress)
    if hasattr(target, "is_classical") and hasattr(target, "devices"):
        from .runner import HeadlessTransport

        return HeadlessTransport(target, timeout=timeout, progress=bool(progress))
    raise UsageError(
        f"A primitive runs on a HybridCluster or a hybrid communicator (kernel.init(...)), got {type(target).__name__}."
    )


def flat_values(pub) -> np.ndarray:
    """The PUB's parameter values as ``(elements, parameters)`` float64, in ``circuit.parameters`` order."""
    circuit = pub.circuit
    shape = pub.parameter_values.shape
    rows = int(np.prod(shape, dtype=np.int64))
    if circuit.num_parameters == 0:
        return np.zeros((rows, 0))
    values = pub.parameter_values.as_array(circuit.parameters)
    return np.ascontiguousarray(values, dtype=np.float64).reshape(rows, circuit.num_parameters)


def pub_seed(seed: Any, index: int, part: int = 0) -> int | None:
    """A reproducible seed for PUB ``index`` (and part ``part``) from the primitive's ``seed``."""
    if seed is None:
        return None
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 1 << 31))
    return int(np.random.SeedSequence([int(seed), index, part]).generate_state(1)[0])


def check_pin(pin: Any, count: int) -> list[Any]:
    """One pin per PUB from ``pin`` (None, a qrank, a ``(host, device_id)``, or a list of those).

    Raises:
        UsageError: a list of the wrong length.
    """
    if pin is None or isinstance(pin, (int, np.integer)) or (isinstance(pin, tuple) and len(pin) == 2 and isinstance(pin[0], str)):
        return [pin] * count
    pins = list(pin)
    if len(pins) != count:
        raise UsageError(f"pin gives {len(pins)} entries for {count} PUB(s); give one per PUB or a single one.")
    return pins


def run_metadata(report, task_results, shots: int) -> dict[str, Any]:
    """The metadata one PUB shares: devices, timings and cache counts of its tasks."""
    qranks = sorted({int(q) for t in task_results for q in t.qranks if q >= 0})
    return {
        "devices": {q: report.devices[q] for q in qranks},
        "methods": sorted({m for t in task_results for m in t.methods}),
        "timings": {
            "execute": float(sum(t.execute_seconds.sum() for t in task_results)),
            "run": report.timings.get("run", 0.0),
            "compile": report.timings.get("compile", 0.0),
        },
        "compile_cache": dict(report.compile_cache),
        "payload_cache_hits": int(sum(t.cache_hits for t in task_results)),
        "payloads_sent": int(sum(report.payloads_sent.values())),
        "evicted": {q: list(v) for q, v in report.evicted.items()},
        "monitor_cache": dict(report.monitor_cache),
        "bytes": {"payloads": report.payload_bytes, "values": report.values_bytes},
    }


def check_widths(circuits, devices, pins) -> None:
    """Refuse, before anything runs, a circuit wider than every device or than its pinned one.

    Raises:
        CircuitTooWideError: names the width, the widest (or pinned) device, and points at cutting.
    """
    from monitor_engine.placement import fitting

    for i, (circuit, pin) in enumerate(zip(circuits, pins)):
        name = f"PUB {i} (circuit '{circuit.name}')"
        pool = list(devices)
        if isinstance(pin, (int, np.integer)) and not isinstance(pin, bool) and 0 <= int(pin) < len(pool):
            pool = [pool[int(pin)]]
        elif isinstance(pin, (tuple, list)) and len(pin) == 2:
            pool = [d for d in pool if d.key == (str(pin[0]), int(pin[1]))] or pool
        fitting(circuit.num_qubits, pool, range(len(pool)), name)
