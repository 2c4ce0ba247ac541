"""The quantum partition as a service: MPI dynamic process management (seed 003, listings 5-7).

A *quantum service* is a separate MPI job of monitors (its own ``COMM_WORLD``) that opens an MPI
port and waits for a classical job. A classical job *attaches* (``Connect``), the two sides merge
the intercommunicator into one intracommunicator with the classical ranks first, and
:func:`mpiq_magic.kernel.init` builds the hybrid communicator over it, so every MPI-Q primitive
and the one dispatch path work across both jobs. When its quantum blocks are done the classical
side *releases* the service (``Disconnect``): the monitors' job ends (or waits for the next
client) and frees its allocation while the classical job goes on::

    # quantum job:   mpiexec -n 3 python -m monitor_engine.attach serve --port-dir /shared/qpu
    #                (or: mpiq serve -q 3, published as "mpiq-qpu" at MPI's name service)
    # classical job:
    att = attach("/shared/qpu")          # collective over COMM_WORLD; att.hc spans both jobs
    outcome = dispatch(att.hc, shares)    # the monitors stand in serve() (classical rank 0)
    att.collective(run_ghz, 12, 3)        # a collective workload: the monitors call it too
    att.release()                         # the quantum job ends; we keep computing

The rendezvous (:mod:`monitor_engine.rendezvous`) is chosen automatically: a *port directory*
when one is given (``port_dir=`` / ``$MPIQ_PORT_DIR``; the one rendezvous under ``srun``, where
the name service crashed under ``--mpi=pmi2``), else MPI's *name service* under hydra's
``mpiexec -nameserver HOST:PORT`` (``Publish_name`` / ``Lookup_name``, the service known by a
name, default ``mpiq-qpu``). One client is served at a time (a second queues, bounded by its
``wait``), and a client never calls ``Connect`` on a port whose service has not just said it
accepts that client: connecting to a dead port crashes the ``mpich`` wheel's transport. Every
wait is bounded: ``Accept``/``Connect`` take MPICH's ``timeout`` info key, control messages are
non-blocking broadcasts polled against a deadline, and ``Disconnect`` runs under a watchdog that
aborts the job with a message rather than hanging.

The two sides live in :mod:`monitor_engine.attach_service` and
:mod:`monitor_engine.attach_client`; this module keeps their public names and the command line.
"""

from __future__ import annotations

import json
import os
import sys

from mpi4py import MPI

from mpiq_magic.kernel.errors import MPIQError

from .attach_client import Attachment, ReleaseReport, attach
from .attach_service import ServiceReport, Session, serve_service, service_devices
from .rendezvous import ServiceError, ServiceInfo, choose, read_service, stale_reason

__all__ = [
    "Attachment", "ReleaseReport", "ServiceError", "ServiceInfo", "ServiceReport", "Session", "attach",
    "choose", "read_service", "serve_service", "service_devices", "stale_reason",
]


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
    parser.add_argument("--port-dir", default=None,
                        help="rendezvous directory (default $MPIQ_PORT_DIR; without one, MPI's name service)")
    parser.add_argument("--name", default=None,
                        help="service name at MPI's name service (default $MPIQ_SERVICE_NAME or mpiq-qpu)")
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
            args.port_dir, name=args.name, devices=args.devices, once=args.sessions == 1,
            sessions=args.sessions or None, idle_timeout=args.idle_timeout,
            session_timeout=args.session_timeout, timeout=args.timeout,
        )
    except MPIQError as exc:
        print(f"mpiq serve: error: {exc}", file=sys.stderr)
        return 2
    if MPI.COMM_WORLD.Get_rank() == 0:
        data = {"rendezvous": report.rendezvous, "port_dir": report.port_dir, "stopped": report.stopped,
                "launched": _launched(), "started": report.started, "ended": report.ended,
                "sessions": [s.to_dict() for s in report.sessions]}
        if args.json:
            print("SERVICE " + json.dumps(data), flush=True)
        else:
            print(f"mpiq serve: {len(report.sessions)} session(s) served through {report.rendezvous}, "
                  f"stopped: {report.stopped}", flush=True)
    return 0


def _launched() -> float | None:
    """When this process was created (its start-up before ``started`` is imports and MPI init)."""
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # pragma: no cover - psutil is a dependency; the report does without
        return None


def exit_now(rc: int) -> None:
    """End the service's process right away: finalize MPI, then skip the interpreter's teardown of
    qiskit & co. (1.5-2 s on two loaded cores, all of it QPU allocation a released service still
    holds). Output is flushed first; nothing else is pending once ``serve_service`` returned."""
    sys.stdout.flush()
    sys.stderr.flush()
    if MPI.Is_initialized() and not MPI.Is_finalized():
        MPI.Finalize()
    os._exit(rc)


if __name__ == "__main__":
    exit_now(main())
