"""Launching MPI-Q jobs under the bundled ``mpiexec`` (the ``mpich`` wheel)."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

from .kernel.errors import ConfigError


def mpiexec_path() -> str:
    """The ``mpiexec`` installed next to this Python (mpich wheel), else the one on PATH."""
    candidate = Path(sys.executable).parent / "mpiexec"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("mpiexec")
    if found is None:
        raise FileNotFoundError(
            "No mpiexec found next to the Python interpreter or on PATH; install the 'mpich' "
            "wheel (pip install mpich) or a system MPI."
        )
    return found


#: Environment that keeps a single-host job's MPI traffic on loopback: the ``mpich`` wheel's
#: ch4 netmods (UCX by default, OFI on request) would otherwise listen on every interface.
LOOPBACK_ENV = {
    "UCX_NET_DEVICES": "lo",
    "FI_TCP_IFACE": "lo",
    "FI_SOCKETS_IFACE": "lo",
    "MPIR_CVAR_NEMESIS_TCP_NETWORK_IFACE": "lo",
}


def loopback_env(environ: "os._Environ[str] | dict[str, str] | None" = None) -> dict[str, str]:
    """:data:`LOOPBACK_ENV` less what the user already set (a user setting wins)."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in LOOPBACK_ENV.items() if k not in environ}


#: The variables that pin MPI traffic to one interface (UCX and OFI netmods of ch4, ch3's nemesis).
_IFACE_VARS = ("UCX_NET_DEVICES", "FI_TCP_IFACE", "FI_SOCKETS_IFACE", "MPIR_CVAR_NEMESIS_TCP_NETWORK_IFACE")


def network_env(interface: str | None = None,
                environ: "os._Environ[str] | dict[str, str] | None" = None) -> dict[str, str]:
    """The environment that binds a job's listeners to one network interface.

    ``None``: loopback (:func:`loopback_env`, a single-host job). A name (``"eth0"``, ``"ib0"``,
    the cluster interface of a multi-host job): the MPI netmods are pinned to it and
    ``MPIQ_INTERFACE`` makes the QQ coordinator bind its address. A user's own MPI settings win.

    Raises:
        ConfigError: no such interface (the message lists the ones there are).
    """
    environ = os.environ if environ is None else environ
    if interface is None:
        return loopback_env(environ)
    from .kernel.hosts import interface_address

    interface_address(interface)  # the error names it and lists the interfaces there are
    env = {k: interface for k in _IFACE_VARS if k not in environ}
    env["MPIQ_INTERFACE"] = interface
    return env


def local_mpiexec(*, survive_rank_death: bool = False, interface: str | None = None) -> tuple[str, list[str]]:
    """The process manager for a single-host job and its options.

    The ``mpich`` wheel's hydra ``mpiexec`` always listens on 0.0.0.0 for its proxies; on one
    host its ``gforker`` sibling needs no listening socket at all (PMI runs over inherited
    descriptors), so it is used when present. gforker ends the job when a process exits with
    a non-zero status — what ``mpiq run`` wants; a cluster that must survive a dead monitor
    (``survive_rank_death``) runs its engines behind a shell that exits 0 (see
    :mod:`mpiq_magic.cluster.processes`). ``$MPIQ_MPIEXEC=hydra`` forces hydra, which is then
    told the cluster ``interface`` (``-iface``) for its proxies' connections.
    """
    hydra = mpiexec_path()
    forker = Path(hydra).with_name("mpiexec.gforker")
    if os.environ.get("MPIQ_MPIEXEC", "").lower() != "hydra" and forker.exists():
        return str(forker), []
    args = ["-disable-auto-cleanup"] if survive_rank_death else []
    if interface is not None:
        args += ["-iface", interface]
    return hydra, args


def mpiq_command(
    argv: Sequence[str], *, classical: int, quantum: int, devices: str | os.PathLike[str] | None = None,
    interface: str | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The ``mpiexec`` command line and environment that run ``argv`` with C + Q processes
    (listening on loopback, or on ``interface``: see :func:`network_env`).

    The split is passed to :func:`mpiq_magic.kernel.init` through ``MPIQ_CLASSICAL`` and
    ``MPIQ_DEVICES``, so an unmodified script calling ``init()`` picks it up.
    """
    if classical < 1:
        raise ConfigError(f"At least one classical rank is needed, got classical={classical}.")
    if quantum < 0:
        raise ConfigError(f"The number of quantum processes must be >= 0, got quantum={quantum}.")
    env = {"MPIQ_CLASSICAL": str(classical)}
    if devices is not None:
        path = Path(devices).resolve()
        if not path.exists():
            raise ConfigError(f"Devices file '{devices}' does not exist.")
        env["MPIQ_DEVICES"] = str(path)
    env.update(network_env(interface))
    mpiexec, args = local_mpiexec(interface=interface)
    cmd = [mpiexec, *args, "-n", str(classical + quantum), *argv]
    return cmd, env


# ----------------------------------------------------------------------------- supervising a job
#: Exit status of a job stopped at its timeout (as coreutils' ``timeout``).
TIMED_OUT = 124

#: Lines the process managers print for a job that one rank ended; shown only when no rank
#: reported a failure itself (then they are the only clue, e.g. a segfault).
_PM_NOISE = re.compile(
    r"^(\[\d+\]\d+:Return code = |Abort\(\d+\) on node |application called MPI_Abort|"
    r"=+$|BAD TERMINATION|PID \d+ RUNNING AT|EXIT CODE:|CLEANING UP REMAINING|YOUR APPLICATION TERMINATED|"
    r"This typically refers to a problem|\[proxy:)"
)


class Supervised:
    """One ``mpiexec`` job owned by this process: it dies with this process, whatever signal
    kills it (a :class:`~mpiq_magic.watchdog.Watchdog` and a parent-death signal), it is stopped
    at ``timeout``, and SIGTERM/SIGHUP to this process stop the job before this process ends.

    ``on_line`` receives each stdout line (else stdout is inherited); stderr is forwarded
    except the process manager's own abort banners, kept in :attr:`noise`.
    """

    def __init__(self, cmd: Sequence[str], env: dict[str, str], *, timeout: float | None = None,
                 on_line=None, dirs: Sequence[str] = ()):
        self.cmd, self.env, self.timeout, self.on_line, self.dirs = list(cmd), env, timeout, on_line, list(dirs)
        self.noise: list[str] = []
        self.timed_out = False

    def run(self) -> int:
        import signal
        import subprocess
        import threading

        from .cluster.processes import die_with_parent, tree
        from .watchdog import Watchdog

        watchdog = Watchdog()
        for d in self.dirs:
            watchdog.remove_dir(d)
        previous = {}

        def stop_job(signum, frame):
            raise SystemExit(128 + signum)

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):
                previous[sig] = signal.signal(sig, stop_job)
        proc = None
        threads = []
        try:
            proc = subprocess.Popen(
                self.cmd, env=self.env, stdout=subprocess.PIPE if self.on_line else None,
                stderr=subprocess.PIPE, text=True, bufsize=1, preexec_fn=die_with_parent,
            )
            watchdog.track([proc.pid])
            threads.append(threading.Thread(target=self._pump_stderr, args=(proc.stderr,), daemon=True))
            if self.on_line:
                threads.append(threading.Thread(target=self._pump_stdout, args=(proc.stdout,), daemon=True))
            for t in threads:
                t.start()
            try:
                rc = proc.wait(self.timeout)
            except subprocess.TimeoutExpired:
                self.timed_out = True
                rc = TIMED_OUT
            return rc
        finally:
            if proc is not None:
                left = tree([proc.pid])  # the job, and anything it left behind
                from .cluster.processes import kill_if_same

                for pid, created in left.items():
                    kill_if_same(pid, created)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
                for t in threads:
                    t.join(5)  # the rest of the output, now that every writer is gone
                for stream in (proc.stdout, proc.stderr):
                    try:
                        if stream is not None:
                            stream.close()
                    except OSError:
                        pass
            watchdog.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _pump_stderr(self, stream) -> None:
        for line in stream:
            if _PM_NOISE.match(line.strip()):
                self.noise.append(line)
            else:
                sys.stderr.write(line)
                sys.stderr.flush()

    def _pump_stdout(self, stream) -> None:
        for line in stream:
            self.on_line(line)


def write_json_atomic(path: str, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file, so a reader never sees half of it."""
    import json

    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)
