"""A watchdog that ends every process the product started when their owner dies.

The owner (a notebook kernel holding a :class:`~mpiq_magic.cluster.HybridCluster`, a script in
``with HybridCluster(...)``, the ``mpiq run`` / ``mpiq ghz`` launcher) starts one
:class:`Watchdog`: a small Python process in its own session, so a signal to the owner's
process group does not reach it. The owner tells it, over a pipe on its stdin, which processes
to track (by PID *and* creation time, so a reused PID is never touched) and which directories
to remove. The watchdog adds the tracked processes' descendants as they appear (engines,
``hydra_pmi_proxy``, the controller's schedulers) and, as soon as the owner is gone — the pipe
reaches end-of-file, or the owner's PID no longer names the same process — SIGKILLs every one
of them and removes the directories. That is within a second of the owner dying by any signal,
``kill -9`` included. A clean shutdown asks for the same reap explicitly (``reap()``), so
``stop()`` removes every process even when the controller died first.

The file runs as a script (``python .../watchdog.py OWNER_PID OWNER_CREATED``) and needs only
psutil; :class:`Watchdog` is the owner's handle.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Iterable

#: Seconds between two looks at the owner and the tracked processes' descendants.
POLL_SECONDS = 0.25


# ----------------------------------------------------------------------------- owner side
class Watchdog:
    """The owner's handle on its watchdog process (see the module docstring)."""

    def __init__(self) -> None:
        import psutil

        me = psutil.Process()
        self._proc = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__), str(me.pid), repr(me.create_time())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True, text=True, bufsize=1,
        )

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def _send(self, message: dict[str, Any]) -> bool:
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps(message) + "\n")
            self._proc.stdin.flush()
            return True
        except (OSError, ValueError):
            return False

    def track(self, pids: Iterable[int]) -> None:
        """Kill these processes (and whatever they start) when the owner dies."""
        import psutil

        for pid in pids:
            try:
                created = psutil.Process(pid).create_time()
            except psutil.Error:
                continue
            self._send({"pid": int(pid), "created": created})

    def remove_dir(self, path: str | os.PathLike[str]) -> None:
        """Remove this directory when the owner dies (or at :meth:`reap`)."""
        self._send({"dir": os.fspath(path)})

    def reap(self, timeout: float = 10.0) -> None:
        """Kill everything tracked now, remove the directories, and end the watchdog."""
        if self._send({"reap": True}):
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.close()

    def close(self) -> None:
        """End the watchdog without killing anything (the owner cleaned up itself)."""
        if self._proc.poll() is None:
            self._send({"exit": True})
        for stream in (self._proc.stdin, self._proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


# ----------------------------------------------------------------------------- watchdog side
def _same(pid: int, created: float):
    import psutil

    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - created) < 1e-3:
            return proc
    except psutil.Error:
        pass
    return None


def _descendants(known: dict[int, float]) -> None:
    """Add the current descendants of every known live process to ``known``."""
    import psutil

    for pid, created in list(known.items()):
        proc = _same(pid, created)
        if proc is None:
            continue
        try:
            for child in proc.children(recursive=True):
                try:
                    known.setdefault(child.pid, child.create_time())
                except psutil.Error:
                    pass
        except psutil.Error:
            pass


def _kill_all(known: dict[int, float], dirs: list[str]) -> None:
    import psutil

    _descendants(known)
    procs = [p for p in (_same(pid, created) for pid, created in known.items()) if p is not None]
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    known.clear()


def main(argv: list[str]) -> int:
    owner_pid, owner_created = int(argv[0]), float(argv[1])
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    known: dict[int, float] = {}
    dirs: list[str] = []

    def on_term(*_: Any) -> None:  # asked to go: leave nothing behind
        _kill_all(known, dirs)
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    stdin = sys.stdin
    buffer = ""
    next_scan = 0.0
    while True:
        ready, _, _ = select.select([stdin], [], [], POLL_SECONDS)
        if ready:
            chunk = os.read(stdin.fileno(), 65536).decode()
            if not chunk:  # the owner's end of the pipe closed: the owner is gone
                _kill_all(known, dirs)
                return 0
            buffer += chunk
            *lines, buffer = buffer.split("\n")
            for line in lines:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if "pid" in msg:
                    known[int(msg["pid"])] = float(msg["created"])
                elif "dir" in msg:
                    dirs.append(str(msg["dir"]))
                elif msg.get("reap"):
                    _kill_all(known, dirs)
                    return 0
                elif msg.get("exit"):
                    return 0
        if _same(owner_pid, owner_created) is None or _is_zombie(owner_pid):
            _kill_all(known, dirs)
            return 0
        now = time.monotonic()
        if now >= next_scan:
            next_scan = now + 2 * POLL_SECONDS
            _descendants(known)


def _is_zombie(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
