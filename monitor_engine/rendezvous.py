"""Rendezvous of a quantum service and its clients (see :mod:`monitor_engine.attach`): the port
directory (``service.json`` with its heartbeat, ``claim``, ``accepting``), staleness, and the
bounded MPI waits (``Accept``/``Connect`` timeouts, polled broadcasts, a disconnect watchdog)."""

from __future__ import annotations

import json
import os
import pickle
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
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
    """What ``service.json`` says about a running quantum service."""

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


# ---------------------------------------------------------------------------- port directory
def _port_dir(port_dir: str | os.PathLike[str] | None) -> Path:
    value = port_dir if port_dir is not None else os.environ.get("MPIQ_PORT_DIR")
    if not value:
        raise UsageError(
            "No port directory given: pass port_dir= (a directory both jobs can read, e.g. on a "
            "shared file system) or set $MPIQ_PORT_DIR."
        )
    return Path(value).resolve()


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_service(port_dir: str | os.PathLike[str] | None = None) -> ServiceInfo | None:
    """The service announced in ``port_dir`` (None if there is none)."""
    path = _port_dir(port_dir) / "service.json"
    data = _read_json(path)
    if data is None:
        return None
    return ServiceInfo(
        data["port"], data["pid"], data["host"], data["node"], data["quantum"], tuple(data["devices"]),
        data["started"], data.get("slurm_job_id"), str(path),
    )


def stale_reason(info: ServiceInfo) -> str | None:
    """Why ``info``'s service is gone (a sentence), or None while it is alive."""
    if info.node == node_id() and not _pid_alive(info.pid):
        return f"its process {info.pid} on {info.host} no longer exists"
    try:
        age = time.time() - os.stat(info.path).st_mtime
    except OSError:
        return "its port file was removed"
    if age > STALE_AFTER:
        return f"its heartbeat stopped {age:.0f} s ago (it is refreshed every {HEARTBEAT:g} s)"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Heartbeat(threading.Thread):
    def __init__(self, path: Path):
        super().__init__(daemon=True, name="mpiq-service-heartbeat")
        self.path = path
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(HEARTBEAT):
            try:
                os.utime(self.path)
            except OSError:
                return


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


