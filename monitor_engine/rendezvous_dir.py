"""The port-directory rendezvous (:mod:`monitor_engine.rendezvous`): a directory both jobs can
read, e.g. on a shared file system. ``service.json`` holds the port and who owns it, with a
heartbeat in its mtime; ``claim`` the one client being served (created with ``O_EXCL``: a
second client retries until it is free); ``accepting`` the claim the service is in ``Accept``
for; ``sessions.jsonl`` one line per finished session (QPU accounting). Works under ``mpiexec``
and ``srun``."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from mpiq_magic.kernel.errors import UsageError

from .rendezvous import HEARTBEAT, STALE_AFTER, Rendezvous, ServiceError, ServiceInfo


def port_dir_path(port_dir: str | os.PathLike[str] | None) -> Path:
    value = port_dir if port_dir is not None else os.environ.get("MPIQ_PORT_DIR")
    if not value:
        raise UsageError(
            "No port directory given: pass port_dir= (a directory both jobs can read, e.g. on a "
            "shared file system) or set $MPIQ_PORT_DIR."
        )
    return Path(value).resolve()


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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


class PortDirectory(Rendezvous):
    kind = "port directory"

    def __init__(self, port_dir: str | os.PathLike[str] | None = None):
        self.directory = port_dir_path(port_dir)
        self._heartbeat: _Heartbeat | None = None
        self._pending: dict | None = None  # our claim, not yet placed (another client holds it)

    @property
    def where(self) -> str:
        return f"the port directory {self.directory}"

    def _path(self, name: str) -> Path:
        return self.directory / name

    # -- service side
    def announce(self, port: str, record: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        other = self.service()
        if other is not None and other.pid != os.getpid() and self.stale_reason(other) is None:
            raise UsageError(
                f"Port directory '{self.directory}' already belongs to {other.describe()}; stop it or "
                "use another directory."
            )
        for name in ("claim", "accepting"):
            self._path(name).unlink(missing_ok=True)
        write_json(self._path("service.json"), {"port": port, **record})
        self._heartbeat = _Heartbeat(self._path("service.json"))
        self._heartbeat.start()

    def withdraw(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stopped.set()
        for name in ("service.json", "claim", "accepting"):
            self._path(name).unlink(missing_ok=True)

    def accept(self, claim_id: str) -> None:
        write_json(self._path("accepting"), {"client": claim_id, "at": time.time()})

    def end_session(self) -> None:
        for name in ("accepting", "claim"):
            self._path(name).unlink(missing_ok=True)

    def log_session(self, session: dict) -> None:
        with open(self._path("sessions.jsonl"), "a") as f:
            f.write(json.dumps(session) + "\n")

    # -- client side
    def service(self) -> ServiceInfo | None:
        path = self._path("service.json")
        data = read_json(path)
        return None if data is None else ServiceInfo.from_record(data["port"], data, str(path))

    def stale_reason(self, info: ServiceInfo) -> str | None:
        reason = super().stale_reason(info)
        if reason is not None:
            return reason
        try:
            age = time.time() - os.stat(self._path("service.json")).st_mtime
        except OSError:
            return "its port file was removed"
        if age > STALE_AFTER:
            return f"its heartbeat stopped {age:.0f} s ago (it is refreshed every {HEARTBEAT:g} s)"
        return None

    def stale_error(self, info: ServiceInfo, reason: str) -> ServiceError:
        return ServiceError(
            f"The port file {info.path} is stale: {info.describe()} is gone ({reason}). "
            "Start the service again, or remove the file."
        )

    def queue(self, record: dict) -> None:
        self._pending = record
        self._place()

    def _place(self) -> None:
        if self._pending is None:
            return
        try:
            fd = os.open(self._path("claim"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return
        with os.fdopen(fd, "w") as f:
            json.dump(self._pending, f)
        self._pending = None

    def holder(self) -> dict | None:
        self._place()
        return read_json(self._path("claim"))

    def leave(self, claim_id: str) -> None:
        self._pending = None
        current = read_json(self._path("claim"))
        if current is not None and current.get("id") == claim_id:
            self._path("claim").unlink(missing_ok=True)

    def accepting(self) -> str | None:
        data = read_json(self._path("accepting"))
        return None if data is None else data.get("client")

    def missing_hint(self) -> str:
        return " (no service.json); start one with `mpiq serve` first."

