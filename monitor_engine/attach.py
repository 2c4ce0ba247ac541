"""The quantum partition as a service: MPI dynamic process management (seed 003, listings 5-7).

A *quantum service* is a separate MPI job of monitors (its own ``COMM_WORLD``) that opens an MPI
port and waits for a classical job. A classical job *attaches* (``Connect``), the two sides merge
the intercommunicator into one intracommunicator with the classical ranks first, and
:func:`mpiq_magic.kernel.init` builds the hybrid communicator over it, so every MPI-Q primitive
and the one dispatch path work across both jobs. When its quantum blocks are done the classical
side *releases* the service (``Disconnect``): the monitors' job ends (or waits for the next
client) and frees its allocation while the classical job goes on::

    # quantum job:   mpiexec -n 3 python -m monitor_engine.attach serve --port-dir /shared/qpu
    # classical job:
    att = attach("/shared/qpu")          # collective over COMM_WORLD; att.hc spans both jobs
    outcome = dispatch(att.hc, shares)    # the monitors stand in serve() (classical rank 0)
    att.collective(run_ghz, 12, 3)        # a collective workload: the monitors call it too
    att.release()                         # the quantum job ends; we keep computing

Rendezvous is a *port directory* shared by both jobs (works under ``mpiexec`` and ``srun``; the
name service crashed under ``srun --mpi=pmi2``): ``service.json`` (the port, its owner, a
heartbeat in its mtime), ``claim`` (the one client being served: a second client queues until
it is released, bounded by its timeout) and ``accepting`` (the service is in ``Accept`` for that
claim). A client never calls ``Connect`` on a port whose service has not just said it accepts:
connecting to a dead port crashes the ``mpich`` wheel's transport. Every wait is bounded:
``Accept``/``Connect`` take MPICH's ``timeout`` info key, control messages are non-blocking
broadcasts polled against a deadline, and ``Disconnect`` runs under a watchdog that aborts the
job with a message rather than hanging.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
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
    _Heartbeat,
    _SERVE_SLICE,
    _TICK,
    _bcast,
    _info,
    _merge,
    _pid_alive,
    _port_dir,
    _read_json,
    _watchdog,
    _write_json,
    read_service,
    stale_reason,
)

@dataclass
class Session:
    """One attach-release period on the service side (QPU accounting: held vs busy)."""

    client: str
    attached: float  # time.time()
    released: float = 0.0
    classical: int = 0
    executed: int = 0
    busy_seconds: float = 0.0  # summed over monitors: hook returned -> last result sent
    commands: list = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ServiceReport:
    """What one :func:`serve_service` call did (on the service's rank 0; others get their own
    counts)."""

    port_dir: str
    sessions: list[Session] = field(default_factory=list)
    stopped: str = "once"  # "once" | "idle" | "sessions"
    started: float = 0.0
    ended: float = 0.0


@dataclass(frozen=True)
class ReleaseReport:
    """What a client's :meth:`Attachment.release` saw."""

    attached_seconds: float
    released_at: float
    disconnect_seconds: float



# ---------------------------------------------------------------------------- the service
def service_devices(comm: MPI.Intracomm, devices=None) -> list:
    """The device specs of the service's monitors: ``devices`` (a TOML path or specs, default
    ``$MPIQ_DEVICES``) or one ideal local device per monitor, bound to the monitor's own host name
    (``device_id`` counts the monitors on each host), so the binding holds when the classical job
    runs on other nodes."""
    from mpiq_magic.kernel.config import default_devices, resolve_devices

    devices = devices if devices is not None else (os.environ.get("MPIQ_DEVICES") or None)
    if devices is not None:
        return resolve_devices(devices, comm.Get_size())
    hosts = comm.allgather(socket.gethostname())
    specs = []
    for j, host in enumerate(hosts):
        (spec,) = default_devices(1, host=host)
        specs.append(type(spec)(**{**spec.__dict__, "device_id": hosts[:j].count(host), "seed": 1000 + j}))
    return specs


def serve_service(
    port_dir: str | os.PathLike[str] | None = None,
    *,
    comm: MPI.Intracomm | None = None,
    devices=None,
    once: bool = True,
    sessions: int | None = None,
    idle_timeout: float = 600.0,
    session_timeout: float = 3600.0,
    timeout: float | None = None,
    on_session: Callable[[Session], None] | None = None,
) -> ServiceReport:
    """Run a quantum service on ``comm`` (default ``COMM_WORLD``; every process is a monitor).

    Collective. Opens a port, announces it in ``port_dir`` and serves one client at a time: the
    client's classical ranks and these monitors form one hybrid communicator until the client
    releases it. ``once`` (default): return after the first client released (the job ends and
    frees its allocation); else serve ``sessions`` clients (default: until ``idle_timeout``).
    ``idle_timeout``: return when no client came for that long; ``session_timeout``: the longest
    a client may go without a command (then the service aborts: the client is gone).
    ``timeout``: the hybrid communicator's default timeout. Returns a :class:`ServiceReport`.

    Raises:
        UsageError: ``port_dir`` is missing, or another live service owns it.
    """
    comm = MPI.COMM_WORLD if comm is None else comm
    root = comm.Get_rank() == 0
    directory = _port_dir(port_dir)
    specs = service_devices(comm, devices)
    _warm_up()
    report = ServiceReport(str(directory), started=time.time())
    port = heartbeat = None
    error = None
    if root:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            other = read_service(directory)
            if other is not None and other.pid != os.getpid() and stale_reason(other) is None:
                raise UsageError(
                    f"Port directory '{directory}' already belongs to {other.describe()}; stop it or "
                    "use another directory."
                )
            for name in ("claim", "accepting"):
                (directory / name).unlink(missing_ok=True)
            port = MPI.Open_port()
            _write_json(directory / "service.json", {
                "port": port, "pid": os.getpid(), "host": socket.gethostname(), "node": node_id(),
                "quantum": comm.Get_size(), "devices": [s.name for s in specs], "started": time.time(),
                "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            })
            heartbeat = _Heartbeat(directory / "service.json")
            heartbeat.start()
        except MPIQError as exc:
            error = exc
    error = comm.bcast(None if error is None else str(error), root=0)
    if error is not None:
        raise UsageError(error)
    try:
        waiting_since = time.monotonic()
        while True:
            claim = _next_claim(comm, directory, waiting_since + idle_timeout)
            if claim is None:
                report.stopped = "idle"
                break
            session = _session(comm, directory, port, claim, specs, session_timeout, timeout)
            waiting_since = time.monotonic()
            if session is None:
                continue
            report.sessions.append(session)
            if root:
                with open(directory / "sessions.jsonl", "a") as f:
                    f.write(json.dumps(session.to_dict()) + "\n")
            if on_session is not None:
                on_session(session)
            if once or (sessions is not None and len(report.sessions) >= sessions):
                report.stopped = "once" if once else "sessions"
                break
    finally:
        if root:
            if heartbeat is not None:
                heartbeat.stopped.set()
            for name in ("service.json", "claim", "accepting"):
                (directory / name).unlink(missing_ok=True)
            if port is not None:
                MPI.Close_port(port)
    report.ended = time.time()
    return report


def _warm_up() -> None:
    """Import the execution stack before announcing the port, so a client's first quantum block
    does not pay for it inside its attached (QPU-holding) time."""
    for name in ("qiskit_aer", "qiskit.qpy", "monitor_engine.process", "monitor_engine.serve",
                 "mpiq_magic.ghz.pipeline"):
        importlib.import_module(name)


def _next_claim(comm: MPI.Intracomm, directory: Path, until: float) -> dict | None:
    """Wait (bounded by ``until``, monotonic) for a client's claim; every rank gets it."""
    while True:
        claim = None
        if comm.Get_rank() == 0:
            claim = _read_json(directory / "claim")
            if claim is None and time.monotonic() >= until:
                claim = {"stop": True}
        claim = comm.bcast(claim, root=0)  # rank 0 reaches it within one tick
        if claim is not None:
            return None if claim.get("stop") else claim
        time.sleep(_TICK)


def _session(comm, directory: Path, port: str, claim: dict, specs, session_timeout: float, timeout) -> Session | None:
    from mpiq_magic.kernel import init

    root = comm.Get_rank() == 0
    if root:
        _write_json(directory / "accepting", {"client": claim["id"], "at": time.time()})
    try:
        intercomm = comm.Accept(port, _info(ACCEPT_TIMEOUT), root=0)
    except MPI.Exception as exc:
        if root:
            print(f"mpiq service: client {claim.get('who', claim['id'])} did not connect within "
                  f"{ACCEPT_TIMEOUT:g} s ({exc.Get_error_string().splitlines()[0]}); waiting for the next.",
                  file=sys.stderr, flush=True)
            for name in ("accepting", "claim"):
                (directory / name).unlink(missing_ok=True)
        return None
    session = Session(client=claim.get("who", claim["id"]), attached=time.time(), classical=intercomm.Get_remote_size())
    merged = _merge(intercomm, high=True)
    control = merged.Dup()
    classical = intercomm.Get_remote_size()
    horizon = time.monotonic() + session_timeout
    _bcast(control, specs, classical, horizon,  # our rank 0 is merged rank `classical`
           f"The client {session.client} did not take the device list within {session_timeout:g} s.", session.client)
    hc = init(devices=specs, classical=classical, comm=merged, timeout=timeout)
    try:
        _service_loop(hc, control, session, session_timeout, claim)
        from .serve import monitor_for

        session.executed = monitor_for(hc).stats["executed"]  # dispatched and collective work alike
        # every monitor's share of the work, summed (a command is collective, so this is too)
        session.executed = comm.allreduce(session.executed)
        session.busy_seconds = comm.allreduce(session.busy_seconds)
    finally:
        hc.free()
        with _watchdog(DISCONNECT_TIMEOUT, f"the quantum service could not disconnect from client "
                       f"{session.client} within {DISCONNECT_TIMEOUT:g} s."):
            control.Free()
            merged.Free()
            intercomm.Disconnect()
        session.released = time.time()
        if root:
            for name in ("accepting", "claim"):
                (directory / name).unlink(missing_ok=True)
    return session


def _service_loop(hc, control, session: Session, session_timeout: float, claim: dict) -> None:
    from .serve import serve

    while True:
        what = (f"The client {session.client} sent no command for {session_timeout:g} s; the quantum "
                "service gives up on it.")
        try:
            command = _bcast(control, None, 0, time.monotonic() + session_timeout, what, session.client,
                             alive=lambda: _client_gone(claim))
        except MPIQTimeoutError as exc:
            sys.stderr.write(f"mpiq service: {exc} Aborting.\n")
            sys.stderr.flush()
            MPI.COMM_WORLD.Abort(71)
        kind = command[0]
        session.commands.append(kind if kind != "call" else f"call:{command[1]}")
        if kind == "release":
            return
        if kind == "serve":
            silent_since = time.monotonic()
            while True:  # standing, in slices, so a vanished client is noticed
                report = serve(hc, idle_timeout=_SERVE_SLICE)
                _account(session, report.done)
                if report.stopped != "idle":
                    break
                if report.jobs or report.executed:
                    silent_since = time.monotonic()
                gone = _client_gone(claim)
                if gone or time.monotonic() - silent_since > session_timeout:
                    sys.stderr.write(f"mpiq service: client {session.client} "
                                     f"{gone or f'sent nothing for {session_timeout:g} s'} and did not "
                                     "release; aborting the service.\n")
                    sys.stderr.flush()
                    MPI.COMM_WORLD.Abort(71)
        elif kind == "call":
            t0 = time.perf_counter()
            try:
                _resolve(command[1])(hc, *command[2], **command[3])
            except Exception as exc:  # the client's side reports its own failure; keep serving
                sys.stderr.write(f"mpiq service: qrank {hc.qrank}: {command[1]} failed: "
                                 f"{type(exc).__name__}: {exc}\n")
            session.busy_seconds += time.perf_counter() - t0
        else:  # pragma: no cover - a newer client
            sys.stderr.write(f"mpiq service: unknown command {kind!r} from {session.client}; ignored.\n")


def _client_gone(claim: dict) -> str | None:
    """Why the client that claimed the service is gone (its rank 0 ran on this node and its
    process no longer exists), or None; a client on another node is only bounded by the session
    timeout."""
    if claim.get("node") == node_id() and claim.get("pid") and not _pid_alive(int(claim["pid"])):
        return f"is gone (its rank 0, process {claim['pid']}, no longer exists)"
    return None


def _account(session: Session, done: list) -> None:
    for d in done:
        session.busy_seconds += d.execute_seconds


def _resolve(name: str) -> Callable:
    module, _, qualname = name.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


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


# ---------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    """``python -m monitor_engine.attach serve --port-dir DIR [--devices F] [--sessions N]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m monitor_engine.attach", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run a quantum service on this MPI job's processes")
    add_serve_arguments(s)
    args = parser.parse_args(argv)
    return run_serve(args)


def add_serve_arguments(parser) -> None:
    parser.add_argument("--port-dir", default=None, help="rendezvous directory (default $MPIQ_PORT_DIR)")
    parser.add_argument("--devices", default=None, help="devices TOML (default: one local device per monitor)")
    parser.add_argument("--sessions", type=int, default=1,
                        help="clients to serve before the job ends (default 1: released = gone; 0: until idle)")
    parser.add_argument("--idle-timeout", type=float, default=600.0, help="end when no client came for this long")
    parser.add_argument("--session-timeout", type=float, default=3600.0,
                        help="give up on a client that sends nothing for this long")
    parser.add_argument("--timeout", type=float, default=None, help="hybrid communicator default timeout")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON line (rank 0)")


def run_serve(args) -> int:
    try:
        report = serve_service(
            args.port_dir, devices=args.devices, once=args.sessions == 1,
            sessions=args.sessions or None, idle_timeout=args.idle_timeout,
            session_timeout=args.session_timeout, timeout=args.timeout,
        )
    except MPIQError as exc:
        print(f"mpiq serve: error: {exc}", file=sys.stderr)
        return 2
    if MPI.COMM_WORLD.Get_rank() == 0:
        data = {"port_dir": report.port_dir, "stopped": report.stopped, "started": report.started,
                "ended": report.ended, "sessions": [s.to_dict() for s in report.sessions]}
        if args.json:
            print("SERVICE " + json.dumps(data), flush=True)
        else:
            print(f"mpiq serve: {len(report.sessions)} session(s) served, stopped: {report.stopped}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
