"""``%mpiq status``: roles, devices, busy/idle/dead and the last error of every engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .engine import EngineInfo

if TYPE_CHECKING:  # pragma: no cover
    from .lifecycle import HybridCluster


@dataclass(frozen=True)
class EngineStatus:
    """What ``%mpiq status`` shows for one engine."""

    info: EngineInfo
    state: str  # "idle" | "busy" | "dead"
    queue: int
    last_error: str | None

    def to_dict(self) -> dict[str, Any]:
        i = self.info
        return {
            "engine": i.engine, "role": i.role, "rank": i.rank, "qrank": i.qrank,
            "device": i.device_name, "host": i.host, "pid": i.pid, "state": self.state,
            "queue": self.queue, "last_error": self.last_error,
        }


#: Seconds a controller query may take before the controller counts as unresponsive.
QUERY_TIMEOUT = 5.0


def query(client: Any, msg_type: str, content: dict | None = None, timeout: float = QUERY_TIMEOUT) -> dict:
    """One request to the ipyparallel controller, answered within ``timeout`` or TimeoutError.

    ipyparallel's own query methods (``queue_status``, ``purge_results`` ...) wait forever for
    the reply, which hangs the notebook when the controller is dead.
    """
    import concurrent.futures

    future = client._send(client._query_stream, msg_type, content=content or {})
    try:
        reply = future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise TimeoutError(f"the ipyparallel controller did not answer a {msg_type} within {timeout:g} s") from None
    return reply["content"]


def queue_status(client: Any, timeout: float = QUERY_TIMEOUT) -> dict[int, Any]:
    """``client.queue_status()`` with a timeout."""
    content = dict(query(client, "queue_request", {"targets": None, "verbose": False}, timeout))
    if content.pop("status", "ok") != "ok":
        raise RuntimeError(f"the controller refused the queue query: {content.get('evalue', content)}")
    out = {}
    for k, v in content.items():
        try:
            out[int(k)] = v
        except ValueError:
            out[k] = v
    return out


@dataclass(frozen=True)
class ClusterStatus:
    """Roles, devices, busy/idle/dead and the last error of every engine."""

    running: bool
    engines: tuple[EngineStatus, ...] = ()
    #: Why the controller could not be asked (dead or unresponsive); None when it answered.
    controller_error: str | None = None

    @property
    def dead(self) -> list[int]:
        return [e.info.engine for e in self.engines if e.state == "dead"]

    def to_dict(self) -> dict[str, Any]:
        return {"running": self.running, "engines": [e.to_dict() for e in self.engines],
                "controller_error": self.controller_error}

    def __str__(self) -> str:
        if not self.running:
            return "No hybrid cluster is running."
        rows = [("engine", "role", "device", "pid", "state", "last error")]
        for e in self.engines:
            i = e.info
            rows.append((
                str(i.engine), i.who, i.device_name or "-", str(i.pid),
                e.state + (f" ({e.queue} queued)" if e.queue > 1 else ""), e.last_error or "",
            ))
        widths = [max(len(r[c]) for r in rows) for c in range(5)]
        lines = ["  ".join(r[c].ljust(widths[c]) for c in range(5)) + "  " + r[5] for r in rows]
        counts = {s: sum(e.state == s for e in self.engines) for s in ("idle", "busy", "dead")}
        head = f"hybrid cluster: {len(self.engines)} engines ({', '.join(f'{n} {s}' for s, n in counts.items())})"
        if self.controller_error:
            head += f"\ncontroller: {self.controller_error}"
        return "\n".join([head, *(line.rstrip() for line in lines)])

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


def status(cluster: "HybridCluster") -> ClusterStatus:
    """The client's side; see ``HybridCluster.status``."""
    if not cluster.running:
        return ClusterStatus(False)
    dead = set(cluster._dead_engines(range(cluster.size)))
    controller_error = None
    queues: Any = {}
    if not cluster.controller_alive:
        controller_error = (
            f"the ipyparallel controller (pid {cluster._controller_pid}) is dead; no engine can be "
            "reached. Stop the cluster (%mpiq stop) and start a new one."
        )
    else:
        try:
            queues = queue_status(cluster._client)
        except Exception as exc:  # noqa: BLE001 - shown in the status, never a hang
            controller_error = f"{exc}; the queue lengths are unknown."
    rows = []
    for info in cluster.engines:
        q = queues.get(info.engine, {}) if isinstance(queues, dict) else {}
        queued = int(q.get("queue", 0)) if isinstance(q, dict) else 0
        state = "dead" if info.engine in dead else ("busy" if queued else "idle")
        rows.append(EngineStatus(info, state, queued, cluster._last_error.get(info.engine)))
    for e in dead:
        cluster._emit({"event": "status", "who": cluster.engines[e].who, "status": "dead"})
    return ClusterStatus(True, tuple(rows), controller_error)
