"""The classical side of MPI dynamic process management (:mod:`monitor_engine.attach`): a
classical job claims the quantum service, connects, merges both jobs into one hybrid
communicator (classical ranks first), runs dispatched and collective work on it, and releases
the service when its quantum blocks are done."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mpi4py import MPI

from mpiq_magic.kernel.errors import MPIQError, MPIQTimeoutError, UsageError

from .rendezvous import (
    ACCEPT_TIMEOUT,
    DISCONNECT_TIMEOUT,
    _TICK,
    Rendezvous,
    ServiceError,
    ServiceInfo,
    _bcast,
    _info,
    _merge,
    _watchdog,
    choose,
    claim_record,
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

    def __init__(self, hc, intercomm, merged, control, service: ServiceInfo, rendezvous: Rendezvous, claim_id: str):
        self.hc = hc
        self.service = service
        self.rendezvous = rendezvous
        #: the port directory, when that was the rendezvous (else None: MPI's name service)
        self.port_dir: Path | None = getattr(rendezvous, "directory", None)
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
    name: str | None = None,
    comm: MPI.Intracomm | None = None,
    timeout: float | None = None,
    wait: float | None = None,
) -> Attachment:
    """Attach the classical job on ``comm`` (default ``COMM_WORLD``; all classical) to a quantum
    service. Collective.

    The rendezvous (:func:`monitor_engine.rendezvous.choose`): the port directory ``port_dir``
    (default ``$MPIQ_PORT_DIR``); without one, under hydra's ``mpiexec``, MPI's name service:
    the service published as ``name`` (default ``$MPIQ_SERVICE_NAME`` or ``mpiq-qpu``) at the
    name server ``$MPIQ_NAMESERVER`` this job's ``mpiexec -nameserver`` was given.
    ``wait``: how long to wait for a service to appear and to be free (a second client queues
    while another is attached; default ``timeout``). ``timeout``: the hybrid communicator's
    default (``$MPIQ_TIMEOUT`` or 120 s). The returned :class:`Attachment`'s ``hc`` has this
    job's ranks as classical ranks 0..C-1 and the service's monitors as qranks 0..Q-1, and the
    monitors stand serving the dispatch path.

    Raises:
        UsageError: no rendezvous is possible here (e.g. no port directory under ``srun``).
        ServiceError: the port file or name entry is stale (its service is gone), or the name
            server does not answer.
        MPIQTimeoutError: no service appeared, or it stayed attached to another client, within
            ``wait`` seconds (``missing`` names the service).
    """
    from mpiq_magic.kernel import init
    from mpiq_magic.kernel.waiting import DEFAULT_TIMEOUT

    comm = MPI.COMM_WORLD if comm is None else comm
    rv = choose(port_dir, name)
    limit = DEFAULT_TIMEOUT if timeout is None else float(timeout)
    patience = limit if wait is None else float(wait)
    deadline = time.monotonic() + patience
    outcome: tuple = ("error", "")
    if comm.Get_rank() == 0:
        try:
            outcome = ("ok", *_claim(rv, deadline, patience))
        except MPIQError as exc:
            outcome = ("error", exc)
    outcome = _bcast(comm, outcome, 0, deadline + 5.0,
                     f"Classical rank 0 did not finish claiming the service at {rv.where} in time.", "classical rank 0")
    if outcome[0] == "error":
        raise outcome[1]
    _, service, claim_id = outcome
    try:
        intercomm = comm.Connect(service.port, _info(min(ACCEPT_TIMEOUT, patience)), root=0)
    except MPI.Exception as exc:
        if comm.Get_rank() == 0:
            rv.leave(claim_id)
        raise MPIQTimeoutError(
            f"Connecting to {service.describe()} found at {rv.where} failed: "
            f"{exc.Get_error_string().splitlines()[0]}.", [service.describe()],
        ) from None
    merged = _merge(intercomm, high=False)
    control = merged.Dup()
    classical = comm.Get_size()
    specs = _bcast(control, None, classical, time.monotonic() + limit,
                   f"{service.describe()} did not send its device list within {limit:g} s.", service.describe())
    hc = init(devices=specs, classical=classical, comm=merged, timeout=limit)
    return Attachment(hc, intercomm, merged, control, service, rv, claim_id)


def request_service(rv: Rendezvous) -> str | None:
    """The QPU on demand (``mpiq slurm --release --qpu-on-demand``): when ``$MPIQ_SERVICE_SUBMIT``
    is set and no live service is at ``rv``, run it (an ``sbatch`` of the quantum service) and
    return what it printed (the job id, also kept in the port directory's ``service-job`` so the
    batch script can cancel a service the script never released). Rank 0 only.

    Raises:
        ServiceError: the command failed or did not finish within 60 s.
    """
    command = os.environ.get("MPIQ_SERVICE_SUBMIT")
    if not command:
        return None
    current = rv.service()
    if current is not None and rv.stale_reason(current) is None:
        return None
    # the service is its own job: none of this job step's SLURM/PMI variables may leak into it
    env = {k: v for k, v in os.environ.items()
           if k == "SLURM_CONF" or not k.startswith(("SLURM_", "SLURMD_", "PMI_", "PMIX_", "HYDI_", "MPI_LOCAL"))}
    try:
        done = subprocess.run(shlex.split(command), capture_output=True, text=True, env=env, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f"Requesting the quantum service with $MPIQ_SERVICE_SUBMIT ({command!r}) failed: {exc}.") from None
    if done.returncode != 0:
        raise ServiceError(f"Requesting the quantum service with $MPIQ_SERVICE_SUBMIT ({command!r}) failed "
                           f"(exit {done.returncode}): {done.stderr.strip()[-500:]}")
    job = done.stdout.strip().split(";")[0]
    directory = getattr(rv, "directory", None)
    if directory is not None and job:
        (directory / "service-job").write_text(job + "\n")
    return job


def _claim(rv: Rendezvous, deadline: float, patience: float) -> tuple[ServiceInfo, str]:
    """Rank 0: wait for a live service, queue a claim on it, wait until it accepts us."""
    request_service(rv)
    record = claim_record(uuid.uuid4().hex)
    claim_id = record["id"]
    queued = False
    holder = None
    service = None
    while True:
        service = rv.service()
        if service is not None:
            reason = rv.stale_reason(service)
            if reason is not None:
                if queued:
                    rv.leave(claim_id)
                raise rv.stale_error(service, reason)
            if not queued:
                rv.queue(record)
                queued = True
            holder = rv.holder() or holder
            if holder is not None and holder.get("id") == claim_id and rv.accepting() == claim_id:
                return service, claim_id
        if time.monotonic() >= deadline:
            if queued:
                rv.leave(claim_id)
            if service is None:
                raise MPIQTimeoutError(
                    f"No quantum service announced itself at {rv.where} within {patience:g} s"
                    f"{rv.missing_hint()}", ["quantum service"],
                )
            if holder is None or holder.get("id") != claim_id:
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
