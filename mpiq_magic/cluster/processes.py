"""The processes a cluster starts: the engines' command line, liveness, killing by PID, exit cleanup.

Nothing outlives its owner: every cluster (and every ``mpiq run``/``mpiq ghz`` job) has a
:class:`~mpiq_magic.watchdog.Watchdog` that kills the processes it started and removes its
directories when the owner dies by any signal; directories an owner could not remove are
marked with their owner (:func:`mark_owner`) and reaped at the next start (:func:`reap_stale`).

Fault tolerance: MPICH's process managers kill every rank when one dies (hydra: of a signal;
gforker, used on one host: with a non-zero status). Engines therefore run behind a tiny ``sh``
parent that turns a dead engine into exit status 0 (and ignores the SIGUSR1 failure notice) —
hydra also gets ``-disable-auto-cleanup`` — so the other engines survive a dead monitor and
report what they have.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
import weakref
from pathlib import Path
from typing import Any

#: Prefixes of the temporary directories the product creates (reaped once their owner is gone).
TEMP_PREFIXES = ("mpiq-cluster-", "mpiq-ghz-", "mpiq-run-")
_OWNER_FILE = ".mpiq-owner"

#: The engines' parent: turns death by a signal into an exit status, ignores SIGUSR1.
_ENGINE_SHELL = 'trap "" USR1; "$@"; exit 0'

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


def mark_owner(directory: str | os.PathLike[str]) -> None:
    """Record this process as the owner of ``directory`` (see :func:`reap_stale`)."""
    import psutil

    me = psutil.Process()
    try:
        (Path(directory) / _OWNER_FILE).write_text(json.dumps({"pid": me.pid, "created": me.create_time()}))
    except OSError:
        pass


def make_temp_dir(prefix: str) -> str:
    """A new temporary directory owned by this process; stale ones of dead owners go first."""
    reap_stale()
    path = tempfile.mkdtemp(prefix=prefix)
    mark_owner(path)
    return path


def reap_stale(root: str | None = None) -> list[str]:
    """Remove the product's temporary directories whose owner process is gone; returns them."""
    import psutil

    removed = []
    base = Path(root or tempfile.gettempdir())
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    for d in entries:
        if not d.name.startswith(TEMP_PREFIXES):
            continue
        try:
            if not d.is_dir() or d.stat().st_uid != os.getuid():
                continue
            owner = json.loads((d / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        try:
            alive = abs(psutil.Process(int(owner["pid"])).create_time() - float(owner["created"])) < 1e-3
        except (psutil.Error, KeyError, TypeError, ValueError):
            alive = False
        if not alive:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(str(d))
    return removed


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGKILL when the thread that started it ends (Linux)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # not Linux: the watchdog still covers it
        pass


def tree(pids: "list[int]") -> dict[int, float]:
    """``pids`` and all their live descendants, each with its creation time."""
    import psutil

    found: dict[int, float] = {}
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            found[pid] = proc.create_time()
            for child in proc.children(recursive=True):
                try:
                    found[child.pid] = child.create_time()
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
    return found
