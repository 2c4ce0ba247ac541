"""The processes a cluster starts: the engines' command line, liveness, killing by PID, exit cleanup.

Fault tolerance: MPICH's process manager kills every rank when one dies of a signal. Engines
therefore run under ``-disable-auto-cleanup`` behind a tiny ``sh`` parent that turns a killed
engine into an ordinary exit status (and ignores the SIGUSR1 failure notice), so the other
engines survive a dead monitor and report what they have.
"""

from __future__ import annotations

import atexit
import sys
import weakref
from typing import Any

#: The engines' parent: turns death by a signal into an exit status, ignores SIGUSR1.
_ENGINE_SHELL = 'trap "" USR1; "$@"; exit $?'

live_clusters: "weakref.WeakSet[Any]" = weakref.WeakSet()
_atexit_registered = False


def engine_command(python: str | None = None) -> list[str]:
    """The command ``mpiexec`` runs for every engine (see the module docstring)."""
    return ["sh", "-c", _ENGINE_SHELL, "mpiq-engine", python or sys.executable, "-m", "ipyparallel.engine"]


def alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def kill_if_same(pid: int, created: float) -> None:
    """SIGKILL ``pid`` only if it is still the process we started (same creation time)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - created) < 1e-3 and proc.status() != psutil.STATUS_ZOMBIE:
            proc.kill()
    except psutil.Error:
        pass


def _stop_all_at_exit() -> None:
    for cluster in list(live_clusters):
        try:
            cluster.stop()
        except Exception:
            pass


def register(cluster: Any) -> None:
    """Stop ``cluster`` at interpreter exit if it is still running then."""
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_stop_all_at_exit)
        _atexit_registered = True
    live_clusters.add(cluster)
