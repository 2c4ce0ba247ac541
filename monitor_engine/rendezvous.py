"""Rendezvous of a quantum service and its clients (see :mod:`monitor_engine.attach`), and the
bounded MPI waits both sides use.

Two rendezvous, one protocol, chosen by :func:`choose`:

* a *port directory* both jobs can read (:mod:`monitor_engine.rendezvous_dir`): works under
  ``mpiexec`` and ``srun``; the one rendezvous under ``srun`` (``MPI_Publish_name`` /
  ``Lookup_name`` crashed under ``srun --mpi=pmi2``);
* MPI's *name service* (:mod:`monitor_engine.rendezvous_names`): ``Publish_name`` /
  ``Lookup_name`` through the ``hydra_nameserver`` given to both jobs' ``mpiexec -nameserver
  HOST:PORT``; the default under hydra's ``mpiexec``.

The protocol (rank 0 of each side): the service *announces* its port and who it is; a client
*queues* a claim (one client is served at a time, in claim order), the service takes the
*holder* and says it is *accepting* that claim id; only then does the client ``Connect`` —
connecting to a port whose service is gone crashes the ``mpich`` wheel's transport, and a
connect request left behind by a client that gave up would be matched by the next ``Accept``.
"""

from __future__ import annotations

import os
import pickle
import socket
import sys
import threading
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
from mpi4py import MPI

from mpiq_magic.kernel.errors import MPIQTimeoutError, UsageError
from mpiq_magic.kernel.hosts import node_id

from .errors import MonitorError

#: A service whose ``service.json`` was not touched for this long is gone.
STALE_AFTER = 10.0
#: How often the service's heartbeat touches ``service.json``.
HEARTBEAT = 1.0
#: How long the service keeps a claimed port in ``Accept`` (the client connects right away).
ACCEPT_TIMEOUT = 60.0
#: How long ``Disconnect`` may take before the watchdog aborts the job.
DISCONNECT_TIMEOUT = 60.0
_TICK = 0.2
#: The standing serve loop returns this often to check that the client is still there.
_SERVE_SLICE = 2.0


class ServiceError(MonitorError):
    """The quantum service is gone, its port file is stale, or it refused the client."""


@dataclass(frozen=True)
class ServiceInfo:
    """What the rendezvous says about a running quantum service."""

    port: str
    pid: int
    host: str
    node: str
    quantum: int
    devices: tuple[str, ...]
    started: float
    slurm_job_id: str | None = None
    path: str = ""

    def describe(self) -> str:
        job = f", SLURM job {self.slurm_job_id}" if self.slurm_job_id else ""
        return f"the quantum service of {self.quantum} monitor(s) (pid {self.pid} on {self.host}{job})"

    @classmethod
    def from_record(cls, port: str, data: dict, path: str = "") -> "ServiceInfo":
        return cls(port, data["pid"], data["host"], data["node"], data["quantum"], tuple(data["devices"]),
                   data["started"], data.get("slurm_job_id"), path)


class Rendezvous(ABC):
    """Where a service and its clients meet. Every method runs on one rank (rank 0) of its side.

    Service side: :meth:`announce` (raises :class:`UsageError` when another live service owns
    the place), :meth:`accept` / :meth:`end_session` around each session, :meth:`withdraw`.
    Client side: :meth:`service`, :meth:`stale_reason`, :meth:`queue` once, then poll
    :meth:`holder` and :meth:`accepting` until both name its claim; :meth:`leave` when it gives up.
    """

    #: "port directory" or "name service"
    kind = ""

    @property
    @abstractmethod
    def where(self) -> str:
        """A sentence fragment naming the place, e.g. ``the port directory /shared/qpu``."""
        ...

    @abstractmethod
    def announce(self, port: str, record: dict) -> None:
        ...

    @abstractmethod
    def withdraw(self) -> None:
        ...

    @abstractmethod
    def service(self) -> ServiceInfo | None:
        ...

    def stale_reason(self, info: ServiceInfo) -> str | None:
        """Why ``info``'s service is gone (a sentence fragment), or None while it may be alive."""
        if info.node == node_id() and not _pid_alive(info.pid):
            return f"its process {info.pid} on {info.host} no longer exists"
        return None

    @abstractmethod
    def stale_error(self, info: ServiceInfo, reason: str) -> ServiceError:
        ...

    @abstractmethod
    def queue(self, record: dict) -> None:
        ...

    @abstractmethod
    def holder(self) -> dict | None:
        ...

    @abstractmethod
    def leave(self, claim_id: str) -> None:
        ...

    @abstractmethod
    def accept(self, claim_id: str) -> None:
        ...

    @abstractmethod
    def accepting(self) -> str | None:
        ...

    @abstractmethod
    def end_session(self) -> None:
        ...

    def log_session(self, session: dict) -> None:
        """Keep a finished session's record where accounting finds it (port directory only)."""

    def missing_hint(self) -> str:
        """What to do when no service showed up (appended to the timeout's sentence)."""
        return "; start one with `mpiq serve` first."


# ---------------------------------------------------------------------------- the choice
def launcher(environ: dict | os._Environ | None = None) -> str:
    """How this process was started: ``"hydra"`` (the ``mpich`` wheel's ``mpiexec``),
    ``"srun"`` (SLURM's PMI), ``"gforker"`` (``mpiexec.gforker``) or ``"singleton"``."""
    env = os.environ if environ is None else environ
    if "HYDI_CONTROL_FD" in env:
        return "hydra"
    if "MPI_APPNUM" in env and "PMI_FD" in env:
        return "gforker"
    if env.get("SLURM_STEP_ID") is not None and ("PMI_FD" in env or "PMIX_RANK" in env or "PMI_RANK" in env):
        return "srun"
    return "singleton"


def choose(port_dir: str | os.PathLike[str] | None = None, name: str | None = None) -> Rendezvous:
    """The rendezvous for this job: ``port_dir`` (or ``$MPIQ_PORT_DIR`` when no ``name`` is
    given) is a port directory; otherwise MPI's name service under hydra's ``mpiexec``, with
    ``name`` (default ``$MPIQ_SERVICE_NAME`` or ``mpiq-qpu``) at the name server
    ``$MPIQ_NAMESERVER`` that this job's ``mpiexec -nameserver`` was given.

    Raises:
        UsageError: neither is possible here (no port directory under ``srun``, ``gforker`` or
            a singleton), with what to do.
    """
    from .rendezvous_dir import PortDirectory
    from .rendezvous_names import NameService

    if port_dir is not None:
        return PortDirectory(port_dir)
    if name is None and os.environ.get("MPIQ_PORT_DIR"):
        return PortDirectory(os.environ["MPIQ_PORT_DIR"])
    how = launcher()
    if how == "hydra":
        return NameService(name)
    why = {
        "srun": "under srun MPI's name service is not used (Publish_name/Lookup_name crashed under "
                "srun --mpi=pmi2)",
        "gforker": "mpiexec.gforker has no name service (its PMI does not know lookup_name)",
        "singleton": "this process was not started by mpiexec, so it has no name server",
    }[how]
    raise UsageError(
        f"No port directory given, and {why}: pass port_dir= (a directory both jobs can read, e.g. "
        "on a shared file system) or set $MPIQ_PORT_DIR"
        + (f" (the name {name!r} cannot be looked up here)." if name else ".")
    )


# ---------------------------------------------------------------------------- processes
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_record(claim_id: str) -> dict:
    """What a client's claim says about it (shown to the next client, checked by the service)."""
    who = f"{socket.gethostname()}:{os.getpid()}" + (f" (SLURM job {os.environ['SLURM_JOB_ID']})"
                                                    if os.environ.get("SLURM_JOB_ID") else "")
    return {"id": claim_id, "who": who, "pid": os.getpid(), "node": node_id(), "at": time.time()}


def client_gone(claim: dict) -> str | None:
    """Why the client that claimed the service is gone (its rank 0 ran on this node and its
    process no longer exists), or None; a client on another node is only bounded by the session
    timeout."""
    if claim.get("node") == node_id() and claim.get("pid") and not _pid_alive(int(claim["pid"])):
        return f"is gone (its rank 0, process {claim['pid']}, no longer exists)"
    return None


# ---------------------------------------------------------------------------- bounded MPI waits
def _wait(request: MPI.Request, deadline: float, what: str, missing: str,
          alive: Callable[[], str | None] | None = None) -> None:
    """Poll ``request`` until done; past ``deadline`` (monotonic), or once ``alive()`` says why the
    peer is gone (checked about once a second), raise :class:`MPIQTimeoutError`."""
    pause = 1e-4
    checked = time.monotonic()
    while not request.Test():
        now = time.monotonic()
        if now >= deadline:
            raise MPIQTimeoutError(what, [missing])
        if alive is not None and now - checked > 1.0:
            checked = now
            gone = alive()
            if gone:
                raise MPIQTimeoutError(f"{missing} {gone}.", [missing])
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


def _bcast(comm: MPI.Intracomm, obj: Any, root: int, deadline: float, what: str, missing: str,
           alive: Callable[[], str | None] | None = None) -> Any:
    """``comm.bcast`` as two non-blocking broadcasts polled against ``deadline`` (monotonic)."""
    is_root = comm.Get_rank() == root
    data = pickle.dumps(obj) if is_root else b""
    size = np.array([len(data)], dtype=np.int64)
    _wait(comm.Ibcast(size, root=root), deadline, what, missing, alive)
    buf = bytearray(data) if is_root else bytearray(int(size[0]))
    _wait(comm.Ibcast([buf, MPI.BYTE], root=root), deadline, what, missing, alive)
    return obj if is_root else pickle.loads(bytes(buf))


def _merge(intercomm: MPI.Intercomm, high: bool) -> MPI.Intracomm:
    """One intracommunicator over both jobs (the service ``high``). Its ``COMM_TYPE_SHARED``
    splits span two jobs on one host; the kernel's node boards split them further per job
    (:func:`mpiq_magic.kernel.collectives.shared_node`)."""
    return intercomm.Merge(high=high)


def _info(timeout: float) -> MPI.Info:
    info = MPI.Info.Create()
    info.Set("timeout", str(max(1, int(round(timeout)))))
    return info


@contextmanager
def _watchdog(seconds: float, message: str) -> Iterator[None]:
    """Abort this MPI job with ``message`` if the block has not ended after ``seconds``: for the
    few MPI calls that cannot be bounded otherwise (``Disconnect``)."""

    def fire() -> None:
        sys.stderr.write(f"mpiq attach: {message} Aborting the job rather than hanging.\n")
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(70)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


# ---------------------------------------------------------------------------- compatibility
def read_service(port_dir: str | os.PathLike[str] | None = None) -> ServiceInfo | None:
    """The service announced in the port directory ``port_dir`` (None if there is none)."""
    from .rendezvous_dir import PortDirectory

    return PortDirectory(port_dir).service()


def stale_reason(info: ServiceInfo) -> str | None:
    """Why the port-directory service ``info`` is gone (a sentence fragment), or None while alive."""
    from .rendezvous_dir import PortDirectory

    return PortDirectory(os.path.dirname(info.path) or ".").stale_reason(info)
