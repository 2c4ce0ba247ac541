"""The quantum service side of MPI dynamic process management (:mod:`monitor_engine.attach`):
monitors of their own MPI job open a port, announce it, accept one classical client at a time,
serve it over the merged hybrid communicator until it releases them, and account for the
session (held vs busy)."""

from __future__ import annotations

import importlib
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from mpi4py import MPI

from mpiq_magic.kernel.errors import MPIQError, MPIQTimeoutError, UsageError
from mpiq_magic.kernel.hosts import node_id

from .rendezvous import (
    ACCEPT_TIMEOUT,
    DISCONNECT_TIMEOUT,
    _SERVE_SLICE,
    _TICK,
    Rendezvous,
    _bcast,
    _info,
    _merge,
    _watchdog,
    choose,
    client_gone,
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

    rendezvous: str  # where clients found it: "the port directory ..." / "the name ... at ..."
    sessions: list[Session] = field(default_factory=list)
    stopped: str = "once"  # "once" | "idle" | "sessions"
    started: float = 0.0
    ended: float = 0.0
    port_dir: str = ""  # the port directory, if that was the rendezvous



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
    name: str | None = None,
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

    Collective. Opens a port, announces it (:func:`monitor_engine.rendezvous.choose`: in the
    port directory ``port_dir`` / ``$MPIQ_PORT_DIR``, else under ``name`` at MPI's name service
    under hydra's ``mpiexec -nameserver``) and serves one client at a time: the client's
    classical ranks and these monitors form one hybrid communicator until the client releases
    it. ``once`` (default): return after the first client released (the job ends and frees its
    allocation); else serve ``sessions`` clients (default: until ``idle_timeout``).
    ``idle_timeout``: return when no client came for that long; ``session_timeout``: the longest
    a client may go without a command (then the service aborts: the client is gone).
    ``timeout``: the hybrid communicator's default timeout. Returns a :class:`ServiceReport`.

    Raises:
        UsageError: no rendezvous is possible here, or another live service owns it.
    """
    comm = MPI.COMM_WORLD if comm is None else comm
    root = comm.Get_rank() == 0
    rv, error = None, None
    try:
        rv = choose(port_dir, name)
    except MPIQError as exc:
        error = str(exc)
    if error is None:
        specs = service_devices(comm, devices)
        _warm_up()
    report = ServiceReport(getattr(rv, "where", ""), started=time.time(),
                           port_dir=str(getattr(rv, "directory", "") or ""))
    port = None
    if root and error is None:
        try:
            port = MPI.Open_port()
            rv.announce(port, {
                "pid": os.getpid(), "host": socket.gethostname(), "node": node_id(), "quantum": comm.Get_size(),
                "devices": [s.name for s in specs], "started": time.time(),
                "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            })
        except MPIQError as exc:
            error = str(exc)
            if port is not None:
                MPI.Close_port(port)
            port = None
    error = comm.bcast(error, root=0)
    if error is not None:
        raise UsageError(error)
    try:
        waiting_since = time.monotonic()
        while True:
            claim = _next_claim(comm, rv, waiting_since + idle_timeout)
            if claim is None:
                report.stopped = "idle"
                break
            session = _session(comm, rv, port, claim, specs, session_timeout, timeout)
            waiting_since = time.monotonic()
            if session is None:
                continue
            report.sessions.append(session)
            if root:
                rv.log_session(session.to_dict())
            if on_session is not None:
                on_session(session)
            if once or (sessions is not None and len(report.sessions) >= sessions):
                report.stopped = "once" if once else "sessions"
                break
    finally:
        if root:
            rv.withdraw()
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


def _next_claim(comm: MPI.Intracomm, rv: Rendezvous, until: float) -> dict | None:
    """Wait (bounded by ``until``, monotonic) for a client's claim; every rank gets it. A claim
    whose client is gone (its rank 0 was on this node and exited) is dropped, not served."""
    while True:
        claim = None
        if comm.Get_rank() == 0:
            claim = rv.holder()
            if claim is not None and client_gone(claim):
                sys.stderr.write(f"mpiq service: client {claim.get('who', claim.get('id'))} {client_gone(claim)} "
                                 "before it was served; dropping its claim.\n")
                rv.end_session()
                claim = None
            if claim is None and time.monotonic() >= until:
                claim = {"stop": True}
        claim = comm.bcast(claim, root=0)  # rank 0 reaches it within one tick
        if claim is not None:
            return None if claim.get("stop") else claim
        time.sleep(_TICK)


def _session(comm, rv: Rendezvous, port: str, claim: dict, specs, session_timeout: float, timeout) -> Session | None:
    from mpiq_magic.kernel import init

    root = comm.Get_rank() == 0
    if root:
        rv.accept(claim["id"])
    try:
        intercomm = comm.Accept(port, _info(ACCEPT_TIMEOUT), root=0)
    except MPI.Exception as exc:
        if root:
            print(f"mpiq service: client {claim.get('who', claim['id'])} did not connect within "
                  f"{ACCEPT_TIMEOUT:g} s ({exc.Get_error_string().splitlines()[0]}); waiting for the next.",
                  file=sys.stderr, flush=True)
            rv.end_session()
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
            rv.end_session()
    return session


def _service_loop(hc, control, session: Session, session_timeout: float, claim: dict) -> None:
    from .serve import serve

    while True:
        what = (f"The client {session.client} sent no command for {session_timeout:g} s; the quantum "
                "service gives up on it.")
        try:
            command = _bcast(control, None, 0, time.monotonic() + session_timeout, what, session.client,
                             alive=lambda: client_gone(claim))
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
                gone = client_gone(claim)
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


def _account(session: Session, done: list) -> None:
    for d in done:
        session.busy_seconds += d.execute_seconds


def _resolve(name: str) -> Callable:
    module, _, qualname = name.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj

