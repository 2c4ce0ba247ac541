"""Two classical-side conveniences, both thin callers of the one dispatch path.

* :class:`MonitorClient` drives monitors that stand in :meth:`MonitorProcess.serve` (a job
  started with ``python -m monitor_engine`` or :func:`~monitor_engine.job.run_job`): submit
  payloads, wait for results, run batches, QQ barriers, status, shutdown.
* :func:`spmd_run` is collective: classical rank ``root`` sends payloads to their devices'
  monitors, the monitors serve that one job, the root gets the results in payload order.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from mpiq_magic.kernel.addressing import QRank, Rank
from mpiq_magic.kernel.errors import MPIQTimeoutError

from .dispatch import DispatchResult, Dispatcher, Share
from .errors import MonitorError, PayloadError
from .payload import Payload
from .process import ExecutionResult, MonitorProcess, _error_result
from .protocol import collective_job


class MonitorClient:
    """Classical-side handle on the serving monitors of a hybrid communicator.

    Several requests may be outstanding; every wait takes ``timeout`` (default: the
    communicator's) and raises ``MPIQTimeoutError`` naming the monitors that did not answer.
    """

    def __init__(self, hc, timeout: float | None = None):
        if not hc.is_classical:
            raise MonitorError(
                f"A MonitorClient runs on a classical rank, but this process is qrank {hc.qrank}."
            )
        self.hc = hc
        self.timeout = hc.timeout if timeout is None else float(timeout)
        self._dispatcher = Dispatcher(hc, namespace=f"client{hc.comm_rank}")
        self._pending: list = []

    def submit(self, qrank_or_device: Any, payload: Payload | None = None) -> Any:
        """Send ``payload`` to a monitor (QRank, Device, ``(host, id)`` or comm rank); returns a request id.

        ``submit(payload)`` sends it to the device it was compiled for. A payload sent to another
        monitor is refused there with an error naming both devices.

        Raises:
            PayloadError: the address names no monitor of this communicator.
        """
        if payload is None and isinstance(qrank_or_device, Payload):
            payload, qrank_or_device = qrank_or_device, qrank_or_device.device
        share = Share(payload=payload, qrank=_qrank_of(self.hc, qrank_or_device))
        job = self._dispatcher.submit([share], timeout=self.timeout, failover=False)
        self._pending.append(job)
        return job

    def result(self, req_id: Any = None, timeout: float | None = None) -> ExecutionResult:
        """The result of request ``req_id`` (default: the oldest outstanding one); a refused
        payload's result has ``error`` set.

        Raises:
            MPIQTimeoutError: no reply within ``timeout``; ``missing`` names the monitor.
        """
        if req_id is None:
            if not self._pending:
                raise MonitorError("There is no outstanding request to wait for.")
            req_id = self._pending[0]
        limit = self.timeout if timeout is None else timeout
        outcome = self._dispatcher.wait(req_id, timeout=limit)
        self._pending.remove(req_id)
        _raise_missing(self.hc, outcome, limit)
        return outcome.results[0]

    def run_batch(self, payloads: Sequence[Payload], timeout: float | None = None) -> list[ExecutionResult]:
        """Run every payload on the monitor of its device; results in payload order (a refused
        payload's result has ``error`` set). ``timeout`` bounds the whole batch.

        Raises:
            MPIQTimeoutError: some monitor did not answer in time.
        """
        limit = self.timeout if timeout is None else timeout
        shares = [Share(payload=p, qrank=_qrank_of(self.hc, p.device)) for p in payloads]
        outcome = self._dispatcher.run(shares, timeout=limit, failover=False)
        _raise_missing(self.hc, outcome, limit)
        return [
            r if r is not None else _error_result(p, self.hc.devices[q], q, outcome.errors[i], {})
            for i, (p, r, q) in enumerate(zip(payloads, outcome.results, outcome.placement))
        ]

    def barrier_all(self, timeout: float | None = None) -> list[Any]:
        """Make every monitor take part in one QQ barrier; their ``BarrierRecord`` by qrank."""
        limit = self.timeout if timeout is None else timeout
        return _values(self._dispatcher.control("barrier", timeout=limit))

    def status(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Every monitor's status dict, by qrank."""
        return _values(self._dispatcher.control("status", timeout=self.timeout if timeout is None else timeout))

    def shutdown(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Stop every serving monitor (their serve loops return); waits for the acknowledgements."""
        done = self._dispatcher.control("shutdown", timeout=self.timeout if timeout is None else timeout)
        return [{"qrank": d.qrank, "error": d.error} for d in done]


def _values(done: list) -> list[Any]:
    errors = [f"[qrank {d.qrank}:{d.stage}] {d.error}" for d in done if d.error]
    if errors:
        raise MonitorError("\n".join(errors))
    return [d.value for d in done]


def _raise_missing(hc, outcome: DispatchResult, limit: float) -> None:
    if outcome.missing:
        names = [f"qrank {j} ({hc.devices[j].name})" for j in sorted(set(outcome.missing.values()))]
        raise MPIQTimeoutError(
            f"No reply from {', '.join(names)} within {limit:g} s; is every monitor serving "
            "(MonitorProcess.serve) and not stuck?",
            names,
        )


def _qrank_of(hc, target: Any) -> int:
    if isinstance(target, QRank):
        hc.resolve(target)
        return target.index
    if isinstance(target, Rank):
        raise PayloadError(f"{target} is a classical rank; payloads go to monitors (QRank or Device).")
    if isinstance(target, tuple) and len(target) == 2 and isinstance(target[0], str):
        key = (target[0], int(target[1]))
        for j, spec in enumerate(hc.devices):
            if spec.key == key:
                return j
        known = ", ".join(spec.name for spec in hc.devices) or "none"
        raise PayloadError(
            f"No monitor of this communicator is bound to device {key[0]}:{key[1]}; bound devices: {known}."
        )
    if isinstance(target, int) and not isinstance(target, bool):
        address = hc.address_of(target)
        if not isinstance(address, QRank):
            raise PayloadError(f"Comm rank {target} is {address}, not a monitor.")
        return address.index
    raise TypeError(
        f"A monitor is named by QRank(j), Device(host, device_id), a (host, device_id) tuple or a "
        f"comm rank, got {target!r}."
    )


def spmd_run(
    hc,
    payloads: Sequence[Payload] | None = None,
    *,
    root: int = 0,
    monitor: MonitorProcess | None = None,
    timeout: float | None = None,
) -> list[ExecutionResult] | None:
    """Collective: classical rank ``root`` sends ``payloads`` to their devices' monitors, each
    monitor executes its share in order, results come back.

    Every process of ``hc`` calls it; ``root`` returns the results in payload order, every other
    process returns None.

    Raises:
        PayloadError: (on the root) a payload is for a device no monitor is bound to; the
            monitors are told to stand down first.
        MPIQTimeoutError: (on the root) a monitor did not answer in time.
    """
    from .serve import serve

    job = collective_job(hc, "spmd")
    limit = hc.timeout if timeout is None else timeout
    if hc.is_quantum:
        serve(hc, monitor=monitor, job=job, deadline=time.time() + limit)
        return None
    if hc.rank != root:
        return None
    dispatcher = Dispatcher(hc, namespace="spmd")
    payloads = list(payloads or [])
    try:
        shares = [Share(payload=p, qrank=_qrank_of(hc, p.device)) for p in payloads]
    except Exception as exc:
        dispatcher.abort(job, range(hc.quantum_size), f"{type(exc).__name__}: {exc}")
        raise
    outcome = dispatcher.run(shares, job=job, participants=range(hc.quantum_size), timeout=limit, failover=False)
    _raise_missing(hc, outcome, limit)
    return outcome.results
