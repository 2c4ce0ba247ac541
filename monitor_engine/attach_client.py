"""The classical side of MPI dynamic process management (:mod:`monitor_engine.attach`): a
classical job claims the quantum service, connects, merges both jobs into one hybrid
communicator (classical ranks first), runs dispatched and collective work on it, and releases
the service when its quantum blocks are done."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mpi4py import MPI

from mpiq_magic.kernel.errors import MPIQError, MPIQTimeoutError, UsageError
from mpiq_magic.kernel.hosts import node_id

from .rendezvous import (
    ACCEPT_TIMEOUT,
    DISCONNECT_TIMEOUT,
    ServiceError,
    ServiceInfo,
    _TICK,
    _bcast,
    _info,
    _merge,
    _port_dir,
    _read_json,
    _watchdog,
    read_service,
    stale_reason,
)


@dataclass(frozen=True)
class ReleaseReport:
    """What a client's :meth:`Attachment.release` saw."""

    attached_seconds: float
    released_at: float
    disconnect_seconds: float



def _qualified(fn: Callable) -> str:
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        raise UsageError(
            f"collective() needs a function both jobs can import by name, got {fn!r} "
            f"(module {module!r}); define it in an importable module."
        )
    return f"{module}:{qualname}"


# ---------------------------------------------------------------------------- the client
class Attachment:
    """A classical job attached to a quantum service. ``hc`` spans both jobs (classical ranks
    first, then the service's monitors); it is valid until :meth:`release`."""

    def __init__(self, hc, intercomm, merged, control, service: ServiceInfo, directory: Path, claim_id: str):
        self.hc = hc
        self.service = service
        self.port_dir = directory
        self.attached_at = time.time()
        self.released: ReleaseReport | None = None
        self._intercomm, self._merged, self._control = intercomm, merged, control
        self._claim = claim_id
        self._standing = False
        self._stand()

    # -- commands to the service (collective over the classical ranks)
    def _command(self, command: tuple) -> None:
        self._check()
        _bcast(self._control, command, 0, time.monotonic() + self.hc.timeout,
               f"The quantum service did not take the command {command[0]!r} within {self.hc.timeout:g} s.",
               self.service.describe())

    def _stand(self) -> None:
        self._command(("serve",))
        self._standing = True

    def _sit(self) -> None:
        if self._standing:
            if self.hc.rank == 0:
                from .dispatch import Dispatcher

                Dispatcher(self.hc, namespace="attach").control("shutdown")
            self._standing = False

    def collective(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """Run the collective workload ``fn(hc, *args, **kwargs)`` on every process of both jobs
        (e.g. ``mpiq_magic.ghz.pipeline.run_ghz``); returns this rank's value. Collective over
        the classical ranks; ``fn`` must be importable by name in the service."""
        name = _qualified(fn)
        self._sit()
        self._command(("call", name, args, kwargs))
        try:
            return fn(self.hc, *args, **kwargs)
        finally:
            self._stand()

    def release(self) -> ReleaseReport:
        """Disconnect from the service (collective over the classical ranks): the monitors stop,
        the service job ends (or serves its next client) and frees its allocation."""
        if self.released is not None:
            return self.released
        self._sit()
        self._command(("release",))
        self.hc.free()
        t0 = time.perf_counter()
        with _watchdog(DISCONNECT_TIMEOUT, f"{self.service.describe()} did not disconnect within "
                       f"{DISCONNECT_TIMEOUT:g} s."):
            self._control.Free()
            self._merged.Free()
            self._intercomm.Disconnect()
        now = time.time()
        self.released = ReleaseReport(now - self.attached_at, now, time.perf_counter() - t0)
        return self.released

    def _check(self) -> None:
        if self.released is not None:
            raise UsageError(f"This attachment to {self.service.describe()} was released; attach again.")

    def __enter__(self) -> "Attachment":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def attach(
    port_dir: str | os.PathLike[str] | None = None,
    *,
    comm: MPI.Intracomm | None = None,
    timeout: float | None = None,
    wait: float | None = None,
) -> Attachment:
    """Attach the classical job on ``comm`` (default ``COMM_WORLD``; all classical) to the
    quantum service announced in ``port_dir`` (default ``$MPIQ_PORT_DIR``). Collective.

    ``wait``: how long to wait for a service to appear and to be free (a second client queues
    while another is attached; default ``timeout``). ``timeout``: the hybrid communicator's
    default (``$MPIQ_TIMEOUT`` or 120 s). The returned :class:`Attachment`'s ``hc`` has this
    job's ranks as classical ranks 0..C-1 and the service's monitors as qranks 0..Q-1, and the
    monitors stand serving the dispatch path.

    Raises:
        ServiceError: the port file is stale (its service is gone).
        MPIQTimeoutError: no service appeared, or it stayed attached to another client, within
            ``wait`` seconds (``missing`` names the service).
    """
    from mpiq_magic.kernel import init
    from mpiq_magic.kernel.waiting import DEFAULT_TIMEOUT

    comm = MPI.COMM_WORLD if comm is None else comm
    directory = _port_dir(port_dir)
    limit = DEFAULT_TIMEOUT if timeout is None else float(timeout)
    patience = limit if wait is None else float(wait)
    deadline = time.monotonic() + patience
    outcome: tuple = ("error", "")
    if comm.Get_rank() == 0:
        try:
            outcome = ("ok", *_claim(directory, deadline, patience))
        except MPIQError as exc:
            outcome = ("error", exc)
    outcome = _bcast(comm, outcome, 0, deadline + 5.0,
                     f"Classical rank 0 did not finish claiming the service in {directory} in time.", "classical rank 0")
    if outcome[0] == "error":
        raise outcome[1]
    _, service, claim_id = outcome
    try:
        intercomm = comm.Connect(service.port, _info(min(ACCEPT_TIMEOUT, patience)), root=0)
    except MPI.Exception as exc:
        if comm.Get_rank() == 0:
            _drop_claim(directory, claim_id)
        raise MPIQTimeoutError(
            f"Connecting to {service.describe()} through {directory} failed: "
            f"{exc.Get_error_string().splitlines()[0]}.", [service.describe()],
        ) from None
    merged = _merge(intercomm, high=False)
    control = merged.Dup()
    classical = comm.Get_size()
    specs = _bcast(control, None, classical, time.monotonic() + limit,
                   f"{service.describe()} did not send its device list within {limit:g} s.", service.describe())
    hc = init(devices=specs, classical=classical, comm=merged, timeout=limit)
    return Attachment(hc, intercomm, merged, control, service, directory, claim_id)


def _claim(directory: Path, deadline: float, patience: float) -> tuple[ServiceInfo, str]:
    """Rank 0: wait for a live service, claim it (O_EXCL), wait until it accepts us."""
    claim_id = uuid.uuid4().hex
    who = f"{socket.gethostname()}:{os.getpid()}" + (f" (SLURM job {os.environ['SLURM_JOB_ID']})"
                                                    if os.environ.get("SLURM_JOB_ID") else "")
    claimed = False
    holder = None
    service = None
    while True:
        service = read_service(directory)
        if service is not None:
            reason = stale_reason(service)
            if reason is not None:
                if claimed:
                    _drop_claim(directory, claim_id)
                raise ServiceError(
                    f"The port file {service.path} is stale: {service.describe()} is gone ({reason}). "
                    "Start the service again, or remove the file."
                )
            if not claimed:
                try:
                    fd = os.open(directory / "claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    holder = _read_json(directory / "claim") or holder
                else:
                    with os.fdopen(fd, "w") as f:
                        json.dump({"id": claim_id, "who": who, "pid": os.getpid(), "node": node_id(), "at": time.time()}, f)
                    claimed = True
            if claimed:
                accepting = _read_json(directory / "accepting")
                if accepting is not None and accepting.get("client") == claim_id:
                    return service, claim_id
        if time.monotonic() >= deadline:
            if claimed:
                _drop_claim(directory, claim_id)
            if service is None:
                raise MPIQTimeoutError(
                    f"No quantum service announced itself in {directory} within {patience:g} s "
                    "(no service.json); start one with `mpiq serve` first.", ["quantum service"],
                )
            if not claimed:
                raise MPIQTimeoutError(
                    f"{service.describe()} stayed attached to another client "
                    f"({(holder or {}).get('who', 'unknown')}) for the whole {patience:g} s this client "
                    "waited; clients are served one at a time, in the order they claim it.",
                    [service.describe()],
                )
            raise MPIQTimeoutError(
                f"{service.describe()} did not accept this client within {patience:g} s.", [service.describe()]
            )
        time.sleep(_TICK / 2)


def _drop_claim(directory: Path, claim_id: str) -> None:
    current = _read_json(directory / "claim")
    if current is not None and current.get("id") == claim_id:
        (directory / "claim").unlink(missing_ok=True)
