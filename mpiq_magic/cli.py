"""The ``mpiq`` command line: ``mpiq run``, ``mpiq demo``, ``mpiq ghz``, ``mpiq slurm``, ``mpiq serve``."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Sequence

from .kernel.errors import MPIQError


def _cmd_run(args: argparse.Namespace) -> int:
    from .cluster.processes import make_temp_dir
    from .kernel.config import resolve_devices
    from .launch import Supervised, mpiq_command

    # everything is checked before anything starts: a bad argument costs no MPI job
    if not os.path.exists(args.script):
        raise MPIQError(f"Script '{args.script}' does not exist.")
    if args.timeout is not None and not (args.timeout >= 0 and args.timeout < float("inf")):
        raise MPIQError(f"--timeout must be a number of seconds >= 0 (0: no limit), got {args.timeout:g}.")
    cmd, env = mpiq_command(
        [sys.executable, "-m", "mpiq_magic.runner", args.script, *args.script_args],
        classical=args.classical,
        quantum=args.quantum,
        devices=args.devices,
        interface=args.interface,
    )
    if args.devices:  # one copy of a bad devices file's error, here, not one per rank
        resolve_devices(env["MPIQ_DEVICES"], args.quantum)
    failures = make_temp_dir("mpiq-run-")
    try:
        job = Supervised(cmd, {**os.environ, **env, "MPIQ_FAILURE_DIR": failures},
                         timeout=args.timeout or None, dirs=[failures])
        rc = job.run()
        reports = _failure_reports(failures)
    finally:
        import shutil

        shutil.rmtree(failures, ignore_errors=True)
    if reports:
        print(_format_failures(reports), file=sys.stderr)
        return int(reports[0].get("code") or 1)
    if job.timed_out:
        print(f"mpiq: error: the job did not finish within --timeout {args.timeout:g} s and was stopped.", file=sys.stderr)
        return rc
    if rc != 0 and job.noise:
        sys.stderr.writelines(job.noise)
    return rc


def _failure_reports(directory: str) -> list[dict]:
    import json

    reports = []
    for name in sorted(os.listdir(directory)):
        if name.startswith("rank-") and name.endswith(".json"):
            try:
                with open(os.path.join(directory, name)) as f:
                    reports.append(json.load(f))
            except (OSError, ValueError):
                pass
    return sorted(reports, key=lambda r: r.get("rank", -1))


def _format_failures(reports: list[dict]) -> str:
    """Each distinct failure once, naming every rank it happened on."""
    groups: dict[tuple, list[dict]] = {}
    for r in reports:
        groups.setdefault((r.get("type"), r.get("message")), []).append(r)
    lines = []
    for (kind, message), same in groups.items():
        first = same[0]
        lines.append(f"mpiq: error: {first['who']} failed: {kind}: {message}")
        if len(same) > 1:
            lines.append(f"  (the same error on {', '.join(r['who'] for r in same[1:])})")
        if first.get("traceback"):
            lines.append(first["traceback"].rstrip())
    lines.append("mpiq: the job was ended at the first failure, so no rank waited out a timeout.")
    return "\n".join(lines)


def _cmd_slurm(args: argparse.Namespace) -> int:
    from .slurm import HetJob, hetjob_script

    text = hetjob_script(
        HetJob(
            script=args.script, classical=args.classical, quantum=args.quantum,
            classical_partition=args.classical_partition, quantum_partition=args.quantum_partition,
            quantum_nodes=args.quantum_nodes, time=args.time, num_qubits=args.num_qubits,
            method=args.method, python=args.python, srun_args=args.srun_args, release=args.release,
            exclusive_qpu=args.exclusive_qpu, split=args.split, qpu_on_demand=args.qpu_on_demand,
        )
    )
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
        if args.split:
            os.chmod(args.output, 0o755)
            print(f"Wrote {args.output}; submit the {args.split} chained sub-jobs with: bash {args.output}")
        else:
            print(f"Wrote {args.output}; submit it with: sbatch {args.output}")
    else:
        print(text, end="")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    """A quantum service of Q monitors under the bundled mpiexec (inside a SLURM allocation hydra
    launches through srun by itself). Its rendezvous: the port directory (--port-dir or
    $MPIQ_PORT_DIR), else MPI's name service at $MPIQ_NAMESERVER (default 127.0.0.1:6392), where
    a hydra_nameserver is started for the service's lifetime when none answers."""
    from monitor_engine.rendezvous_names import NameServer, mpiexec_args

    from .launch import mpiexec_path

    bound = args.idle_timeout + args.session_timeout * max(args.sessions, 1) + 60
    service = [sys.executable, "-m", "monitor_engine.attach", "serve",
               "--sessions", str(args.sessions), "--idle-timeout", str(args.idle_timeout),
               "--session-timeout", str(args.session_timeout)]
    port_dir = args.port_dir or os.environ.get("MPIQ_PORT_DIR")
    if port_dir and args.name:
        raise MPIQError("mpiq serve takes --port-dir or --name (MPI's name service), not both.")
    if port_dir:
        service += ["--port-dir", port_dir]
    if args.name:
        service += ["--name", args.name]
    if args.devices:
        if not os.path.exists(args.devices):
            raise MPIQError(f"Devices file '{args.devices}' does not exist.")
        service += ["--devices", os.path.abspath(args.devices)]
    if args.timeout:
        service += ["--timeout", str(args.timeout)]
    if args.json:
        service.append("--json")
    env = dict(os.environ)
    nameserver = None
    options: list[str] = []
    if not port_dir:
        nameserver = NameServer.ensure(args.nameserver, limit=bound + 30)
        options, extra = mpiexec_args(nameserver.address)
        env.update(extra)
        if nameserver.started:
            print(f"mpiq serve: started a name server at {nameserver.address} for this service's lifetime",
                  file=sys.stderr, flush=True)
    try:
        return subprocess.call(["timeout", "--kill-after=10", str(int(bound)), mpiexec_path(), *options,
                                "-n", str(args.quantum), *service], env=env)
    finally:
        if nameserver is not None:
            nameserver.stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mpiq", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a script under the bundled mpiexec with C classical + Q quantum processes")
    run.add_argument("-c", "--classical", type=int, default=1, help="classical ranks (default 1)")
    run.add_argument("-q", "--quantum", type=int, default=2, help="quantum processes (default 2)")
    run.add_argument("--devices", help="devices TOML file (default: Q local devices on 127.0.0.1)")
    run.add_argument("--timeout", type=float, default=0, help="kill the job after this many seconds (0: no limit)")
    run.add_argument("--interface", default=None, metavar="IF",
                     help="network interface the job listens on (multi-host: the cluster's, e.g. eth0; default: loopback)")
    run.add_argument("script")
    run.add_argument("script_args", nargs=argparse.REMAINDER)
    run.set_defaults(func=_cmd_run)

    slurm = sub.add_parser("slurm", help="write a SLURM heterogeneous-job script: classical and quantum partitions")
    slurm.add_argument("-c", "--classical", type=int, default=1)
    slurm.add_argument("-q", "--quantum", type=int, default=2)
    slurm.add_argument("--classical-partition", required=True)
    slurm.add_argument("--quantum-partition", required=True)
    slurm.add_argument("--quantum-nodes", type=int, default=1, help="nodes of the quantum partition (monitors spread over them)")
    slurm.add_argument("--time", default="00:30:00")
    slurm.add_argument("--num-qubits", type=int, default=128)
    slurm.add_argument("--method", default="automatic", choices=["automatic", "statevector", "matrix_product_state", "stabilizer"])
    slurm.add_argument("--python", default="python")
    slurm.add_argument("--srun-args", default="", help="extra srun options, e.g. --mpi=pmix")
    slurm.add_argument("--release", action="store_true",
                       help="quantum group as a service the script attaches to (monitor_engine.attach); "
                            "its component is cancelled as soon as the script releases it")
    slurm.add_argument("--qpu-on-demand", action="store_true",
                       help="with --release: the quantum service is a separate job that attach() submits when the "
                            "script is ready for it (the QPU is not allocated during the script's start-up)")
    slurm.add_argument("--exclusive-qpu", action="store_true",
                       help="the quantum component takes its nodes exclusively (one QPU, one job at a time)")
    slurm.add_argument("--split", type=int, default=0, metavar="K",
                       help="write a submit script for K sub-jobs chained with --dependency=afterok "
                            "(checkpoints: mpiq_magic.slurm.current_step)")
    slurm.add_argument("-o", "--output", help="write the script here instead of printing it")
    slurm.add_argument("script")
    slurm.set_defaults(func=_cmd_slurm)

    serve = sub.add_parser("serve", help="run a quantum service: Q monitors that classical jobs attach to (MPI DPM)")
    serve.add_argument("-q", "--quantum", type=int, default=2, help="monitors (default 2)")
    serve.add_argument("--port-dir", help="rendezvous directory shared with the clients (default $MPIQ_PORT_DIR; "
                       "without one: MPI's name service)")
    serve.add_argument("--name", help="the service's name at MPI's name service (default $MPIQ_SERVICE_NAME or mpiq-qpu)")
    serve.add_argument("--nameserver", metavar="HOST:PORT",
                       help="the hydra_nameserver (default $MPIQ_NAMESERVER or 127.0.0.1:6392; started here if none answers)")
    serve.add_argument("--devices", help="devices TOML (default: one ideal device per monitor on its host)")
    serve.add_argument("--sessions", type=int, default=1,
                       help="clients to serve, then exit (default 1: released = gone; 0: until --idle-timeout)")
    serve.add_argument("--idle-timeout", type=float, default=600.0, help="exit when no client came for this long (s)")
    serve.add_argument("--session-timeout", type=float, default=3600.0, help="give up on a silent client after this long (s)")
    serve.add_argument("--timeout", type=float, default=0, help="default timeout of the hybrid communicator (s)")
    serve.add_argument("--json", action="store_true", help="print the service report as one SERVICE {...} line")
    serve.set_defaults(func=_cmd_serve)

    _add_ghz_commands(sub)
    _add_qaoa_commands(sub)
    _add_distribute_commands(sub)
    return parser


def _add_qaoa_commands(sub) -> None:
    """``qaoa`` lives with the distributed QAOA package (mpiq_magic/qaoa/cli.py)."""
    from .qaoa.cli import add_commands

    add_commands(sub)


def _add_ghz_commands(sub) -> None:
    """``demo`` and ``ghz`` live with the GHZ pipeline; absent until it is installed."""
    try:
        from .ghz.cli import add_commands
    except ImportError:
        return
    add_commands(sub)


def _add_distribute_commands(sub) -> None:
    """``distribute`` lives with the distributed execution (``mpiq_magic.distribute.cli``)."""
    from .distribute.cli import add_commands

    add_commands(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MPIQError as exc:
        print(f"mpiq: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
