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


@dataclass(frozen=True)
class ClusterStatus:
    """Roles, devices, busy/idle/dead and the last error of every engine."""

    running: bool
    engines: tuple[EngineStatus, ...] = ()

    @property
    def dead(self) -> list[int]:
        return [e.info.engine for e in self.engines if e.state == "dead"]

    def to_dict(self) -> dict[str, Any]:
        return {"running": self.running, "engines": [e.to_dict() for e in self.engines]}

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
        return "\n".join([head, *(line.rstrip() for line in lines)])

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


def status(cluster: "HybridCluster") -> ClusterStatus:
    """The client's side; see ``HybridCluster.status``."""
    if not cluster.running:
        return ClusterStatus(False)
    dead = set(cluster._dead_engines(range(cluster.size)))
    try:
        queues = cluster._client.queue_status()
    except Exception:
        queues = {}
    rows = []
    for info in cluster.engines:
        q = queues.get(info.engine, {}) if isinstance(queues, dict) else {}
        queued = int(q.get("queue", 0)) if isinstance(q, dict) else 0
        state = "dead" if info.engine in dead else ("busy" if queued else "idle")
        rows.append(EngineStatus(info, state, queued, cluster._last_error.get(info.engine)))
    for e in dead:
        cluster._emit({"event": "status", "who": cluster.engines[e].who, "status": "dead"})
    return ClusterStatus(True, tuple(rows))
