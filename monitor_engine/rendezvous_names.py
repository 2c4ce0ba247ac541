"""MPI's name service as the rendezvous (:mod:`monitor_engine.rendezvous`): ``Publish_name`` /
``Lookup_name`` / ``Unpublish_name`` through the ``mpich`` wheel's ``hydra_nameserver``.

Both jobs' ``mpiexec`` must be given the same name server (``mpiexec -nameserver HOST:PORT``,
see :func:`mpiexec_args`); ``$MPIQ_NAMESERVER`` says which one to the processes (hydra does not
tell them) and defaults to ``127.0.0.1:6392``, hydra's own default port. ``mpiq serve`` starts
one there when none answers (:class:`NameServer`) and stops it when the service ends.

Names, for a service called ``NAME`` (default ``$MPIQ_SERVICE_NAME`` or ``mpiq-qpu``):

* ``NAME``: the MPI port (what ``Lookup_name`` returns to a plain MPI client too);
* ``NAME:info``: who the service is (process, host, node, monitors), for staleness checks;
* ``NAME:claim``: the client being served. ``hydra_nameserver`` refuses a second publish of a
  name but keeps the refused entry behind the first, and ``Unpublish_name`` removes the first:
  a client that finds the service busy is therefore queued in claim order; a client that sees
  the claim vacant publishes again (for a name server that keeps nothing refused);
* ``NAME:accepting``: the claim id the service is in ``Accept`` for.

Values are URL-safe base64 of compact JSON (no spaces or ``=`` on hydra's PMI wire), and must
stay under 1023 bytes: hydra truncates longer ones.

Facts of this ``mpich`` (5.0.2) build that shape the code: a ``Lookup_name`` through a name
server that does not answer ends the whole ``mpiexec`` job (so the server is probed first);
``mpiexec.gforker`` does not know ``lookup_name`` and hangs (so it is never tried there);
``hydra_nameserver`` has no option to listen on loopback only (it binds every interface, as
hydra's ``mpiexec`` does).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from mpi4py import MPI

from mpiq_magic.kernel.errors import MPIQError, UsageError

from .rendezvous import Rendezvous, ServiceError, ServiceInfo

DEFAULT_NAME = "mpiq-qpu"
#: hydra's default name-server port (``HYDRA_NAMESERVER_DEFAULT_PORT``).
DEFAULT_NAMESERVER = "127.0.0.1:6392"
#: hydra truncates published values at 1023 bytes.
_MAX_VALUE = 1000


def nameserver_address(value: str | None = None) -> str:
    """``value``, else ``$MPIQ_NAMESERVER``, else :data:`DEFAULT_NAMESERVER`; checked ``HOST:PORT``.

    Raises:
        UsageError: not ``HOST:PORT`` with a numeric port.
    """
    address = value or os.environ.get("MPIQ_NAMESERVER") or DEFAULT_NAMESERVER
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"A name server address is HOST:PORT (e.g. {DEFAULT_NAMESERVER}), got {address!r}.")
    return address


def listening(address: str, timeout: float = 2.0) -> bool:
    """Whether something accepts TCP connections at ``address`` (``HOST:PORT``)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def mpiexec_args(address: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The ``mpiexec`` options and environment that put a job on the name server at ``address``
    (default :func:`nameserver_address`): ``-nameserver HOST:PORT`` and ``MPIQ_NAMESERVER``."""
    address = nameserver_address(address)
    return ["-nameserver", address], {"MPIQ_NAMESERVER": address}


def hydra_nameserver_path() -> str:
    """The ``hydra_nameserver`` of the ``mpich`` wheel (next to this Python), else on PATH."""
    candidate = Path(sys.executable).parent / "hydra_nameserver"
    found = str(candidate) if candidate.exists() else shutil.which("hydra_nameserver")
    if found is None:
        raise MPIQError("No hydra_nameserver next to the Python interpreter or on PATH; install the 'mpich' wheel.")
    return found


class NameServer:
    """A ``hydra_nameserver`` this process started, bounded by ``limit`` seconds (``timeout``),
    stopped by :meth:`stop` (or at ``limit``). :meth:`ensure` starts one only where none answers."""

    def __init__(self, address: str, proc: subprocess.Popen | None):
        self.address, self.proc = address, proc

    @classmethod
    def ensure(cls, address: str | None = None, *, limit: float = 3600.0, wait: float = 10.0) -> "NameServer":
        """The name server at ``address``: the one answering there, or a new one on this host.

        Raises:
            UsageError: none answers at a host that is not this one (it cannot be started from here).
            MPIQError: the one started here did not answer within ``wait`` seconds.
        """
        address = nameserver_address(address)
        if listening(address):
            return cls(address, None)
        host, _, port = address.rpartition(":")
        local = {"127.0.0.1", "localhost", "::1", socket.gethostname(), socket.getfqdn()}
        if host not in local:
            raise UsageError(f"No name server answers at {address}, and one can only be started on this host "
                             f"({socket.gethostname()}); start `hydra_nameserver -port {port}` on {host}.")
        proc = subprocess.Popen(
            ["timeout", "--kill-after=5", str(int(limit)), hydra_nameserver_path(), "-port", port],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + wait
        while not listening(address, timeout=0.5):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                err = (proc.communicate()[1] or "").strip().splitlines()
                raise MPIQError(f"The name server started at {address} did not answer within {wait:g} s"
                                + (f": {err[-1]}" if err else "."))
            time.sleep(0.05)
        return cls(address, proc)

    @property
    def started(self) -> bool:
        return self.proc is not None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> "NameServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _encode(record: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(record, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode(value: str | None) -> dict | None:
    if not value:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except ValueError:
        return None


class NameService(Rendezvous):
    kind = "name service"

    def __init__(self, name: str | None = None):
        self.name = name or os.environ.get("MPIQ_SERVICE_NAME") or DEFAULT_NAME
        if not self.name or any(c.isspace() or c == "=" for c in self.name):
            raise UsageError(f"A service name has no spaces or '=', got {self.name!r}.")
        self.nameserver = os.environ.get("MPIQ_NAMESERVER")
        self._mine: dict | None = None  # our claim while we queue

    @property
    def where(self) -> str:
        server = (f"the name server {self.nameserver}" if self.nameserver else
                  "the name server of this job's mpiexec (none known: $MPIQ_NAMESERVER is unset)")
        return f"the name {self.name!r} at {server}"

    # -- MPI's name service, with the name server checked first (a dead one ends the job)
    def _check_server(self) -> None:
        if self.nameserver and not listening(nameserver_address(self.nameserver)):
            raise ServiceError(
                f"No name server answers at {self.nameserver} ($MPIQ_NAMESERVER), so {self.name!r} cannot "
                "be looked up; start the service with `mpiq serve` (it starts one) or `hydra_nameserver "
                f"-port {self.nameserver.rpartition(':')[2]}`."
            )

    def _lookup(self, key: str) -> str | None:
        self._check_server()
        try:
            return MPI.Lookup_name(key)
        except MPI.Exception:
            return None

    def _publish(self, key: str, value: str) -> bool:
        if len(value) > _MAX_VALUE:
            raise UsageError(f"The value published under {key!r} is {len(value)} bytes; hydra keeps at most 1023.")
        self._check_server()
        try:
            MPI.Publish_name(key, value)
        except MPI.Exception:
            return False
        return True

    def _unpublish(self, key: str) -> bool:
        self._check_server()
        try:
            MPI.Unpublish_name(key, "")
        except MPI.Exception:
            return False
        return True

    def _clear(self, key: str) -> None:
        for _ in range(64):  # refused publishes left duplicates behind; bounded
            if not self._unpublish(key):
                return

    # -- service side
    def announce(self, port: str, record: dict) -> None:
        other = self.service()
        if other is not None:
            reason = self.stale_reason(other)
            if reason is None:
                raise UsageError(
                    f"{self.where[0].upper()}{self.where[1:]} already belongs to {other.describe()}; stop it "
                    "or choose another name (--name, $MPIQ_SERVICE_NAME)."
                )
            sys.stderr.write(f"mpiq service: replacing the stale entry of {other.describe()} ({reason}).\n")
        for key in (self.name, f"{self.name}:info", f"{self.name}:claim", f"{self.name}:accepting"):
            self._clear(key)
        info = _encode(record)
        if len(info) > _MAX_VALUE:
            info = _encode({**record, "devices": []})
        if not (self._publish(f"{self.name}:info", info) and self._publish(self.name, port)):
            raise UsageError(f"Publishing {self.where} failed: another service published it at the same time.")

    def withdraw(self) -> None:
        for key in (f"{self.name}:accepting", f"{self.name}:claim", self.name, f"{self.name}:info"):
            self._clear(key)

    def accept(self, claim_id: str) -> None:
        self._clear(f"{self.name}:accepting")
        self._publish(f"{self.name}:accepting", claim_id)

    def end_session(self) -> None:
        self._unpublish(f"{self.name}:accepting")
        self._unpublish(f"{self.name}:claim")  # the first entry: the client just served

    # -- client side
    def service(self) -> ServiceInfo | None:
        port = self._lookup(self.name)
        record = _decode(self._lookup(f"{self.name}:info")) if port else None
        if not port or record is None:
            return None
        return ServiceInfo.from_record(port, record, "")

    def stale_error(self, info: ServiceInfo, reason: str) -> ServiceError:
        return ServiceError(
            f"The entry of {self.where} is stale: {info.describe()} is gone ({reason}). Start the "
            "service again (it replaces the entry)."
        )

    def queue(self, record: dict) -> None:
        self._mine = record
        self._publish(f"{self.name}:claim", _encode(record))  # refused = queued behind the holder

    def holder(self) -> dict | None:
        current = _decode(self._lookup(f"{self.name}:claim"))
        if current is None and self._mine is not None:  # vacant, and we are not in it: a server that kept nothing
            self._publish(f"{self.name}:claim", _encode(self._mine))
            current = _decode(self._lookup(f"{self.name}:claim"))
        return current

    def leave(self, claim_id: str) -> None:
        self._mine = None
        current = _decode(self._lookup(f"{self.name}:claim"))
        if current is not None and current.get("id") == claim_id:
            self._unpublish(f"{self.name}:claim")

    def accepting(self) -> str | None:
        return self._lookup(f"{self.name}:accepting")

    def missing_hint(self) -> str:
        hint = " (nothing is published under that name); start one with `mpiq serve` first"
        if not self.nameserver:
            hint += (", and launch this job with `mpiexec -nameserver HOST:PORT` and $MPIQ_NAMESERVER set "
                     "(without -nameserver mpiexec sees only its own job's names)")
        return hint + "."
