"""Engine-side state of a :class:`~mpiq_magic.cluster.HybridCluster`: the hybrid communicator,
the user namespace, progress events, liveness of peers.

The client ships the engine functions of each operation (``scatter.scatter_task``,
``gather.gather_task`` ...) with ipyparallel's ``apply``; they find ``hc`` here (created by
:func:`init_engine`, also left in the engine namespace as ``hc``).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any, Mapping

from ..kernel.hosts import node_id

_STATE: dict[str, Any] = {}


@dataclass(frozen=True)
class EngineInfo:
    """One engine of the cluster: its MPI rank, MPI-Q role and process."""

    engine: int  # ipyparallel engine id == MPI rank in COMM_WORLD
    role: str  # "classical" | "quantum"
    rank: int | None
    qrank: int | None
    device: Mapping[str, Any] | None
    host: str
    node: str
    pid: int
    ppid: int

    @property
    def device_name(self) -> str | None:
        return f"{self.device['host']}:{self.device['device_id']}" if self.device else None

    @property
    def who(self) -> str:
        """'rank 0' or 'qrank 1', as the widgets and the kernel name processes."""
        return f"rank {self.rank}" if self.role == "classical" else f"qrank {self.qrank}"

    def label(self) -> str:
        """'engine 0 (rank 0)' or 'engine 3 (qrank 2, device 127.0.0.1:2)'."""
        if self.role == "classical":
            return f"engine {self.engine} (rank {self.rank})"
        return f"engine {self.engine} (qrank {self.qrank}, device {self.device_name})"


def hc():
    """This engine's hybrid communicator."""
    comm = _STATE.get("hc")
    if comm is None:
        raise RuntimeError(
            "This engine has no hybrid communicator; it was not initialised by HybridCluster.start()."
        )
    return comm


def user_ns() -> dict:
    """The engine's IPython namespace, where ``%%mpiq`` cells run."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:  # pragma: no cover - engines always have IPython
        shell = None
    if shell is None:
        return _STATE.setdefault("ns", {})
    return shell.user_ns


def run_code(code: str | None) -> None:
    """Run a cell's code in the engine namespace."""
    if code and code.strip():
        exec(compile(code, "<mpiq cell>", "exec"), user_ns())  # noqa: S102 - the user's own cell


def publish(event: str, **info: Any) -> None:
    """A progress event for the client; never lets reporting break the work."""
    try:
        from ..events import publish_event

        publish_event(event, info)
    except Exception:
        pass


def remaining(deadline: float) -> float:
    return deadline - time.time()


def peer_alive(comm_rank: int) -> bool:
    """False when the process of ``comm_rank`` is known dead (same node, pid gone or zombie)."""
    peers = _STATE.get("peers")
    if not peers or comm_rank >= len(peers):
        return True
    node, pid = peers[comm_rank]
    if node != _STATE.get("node"):
        return True  # another node: no cheap check, rely on the timeout
    try:
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:
        return False


def monitor_alive(qrank: int) -> bool:
    """Liveness of a monitor for the dispatch path (``Dispatcher(alive=...)``)."""
    from ..kernel import QRank

    return peer_alive(hc().resolve(QRank(qrank)))


# ----------------------------------------------------------------------------- lifecycle
def init_engine(classical: int, devices: Any, timeout: float) -> EngineInfo:
    """Collective over every engine: build ``hc`` and describe this engine.

    Also makes SIGTERM end the process at once (no MPI_Finalize, which could wait forever for a
    dead peer), so stopping a cluster never hangs.
    """
    from mpi4py import MPI

    from .. import kernel

    comm = kernel.init(devices=devices, classical=classical, timeout=timeout)
    _STATE["hc"] = comm
    _STATE["node"] = node_id()
    _STATE["peers"] = MPI.COMM_WORLD.allgather((_STATE["node"], os.getpid()))
    user_ns()["hc"] = comm
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    return EngineInfo(
        engine=MPI.COMM_WORLD.Get_rank(),
        role=comm.role,
        rank=comm.rank,
        qrank=comm.qrank,
        device=comm.device.to_dict() if comm.device is not None else None,
        host=socket.gethostname(),
        node=_STATE["node"],
        pid=os.getpid(),
        ppid=os.getppid(),
    )


def prewarm() -> float:
    """Import what later operations need (qiskit, the simulator), so the first cell is not slow."""
    t0 = time.perf_counter()
    comm = hc()
    if comm.is_quantum:
        from monitor_engine.serve import monitor_for

        monitor_for(comm)
    elif comm.rank == 0:
        import monitor_engine.payload  # noqa: F401  (qiskit.transpile and QPY, imported ahead of the first cell)
    return time.perf_counter() - t0


def topology() -> Any:
    return hc().topology


def serve_job(job: int, deadline: float) -> int:
    """A monitor's part of cluster job ``job`` on the dispatch path; returns how many payloads it ran.

    Raises:
        RuntimeError: the job failed on this monitor (its hook or its batches).
    """
    from monitor_engine.serve import serve

    report = serve(hc(), job=("cluster", job), deadline=deadline)
    failed = [d.error for d in report.done if d.error]
    if failed:
        raise RuntimeError(failed[0])
    return report.executed


def dispatcher():
    """Classical rank 0's one Dispatcher (its compile cache stays warm across cells)."""
    d = _STATE.get("dispatcher")
    if d is None:
        from monitor_engine.dispatch import Dispatcher

        d = _STATE["dispatcher"] = Dispatcher(hc(), alive=monitor_alive, namespace="cluster")
    return d
