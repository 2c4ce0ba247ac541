"""``%mpiq barrier``: repeated hybrid barriers (CC, QQ, ALL) on every engine, records back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from ..errors import ClusterStateError, ClusterUsageError
from . import engine as E

if TYPE_CHECKING:  # pragma: no cover
    from .lifecycle import HybridCluster

BARRIER_FLAGS = ("CC", "QQ", "ALL")


class BarrierRecords(list):
    """``BarrierRecord`` dicts of consecutive barriers, shown as a short summary."""

    def skews(self) -> list[float]:
        return [r["skew"] for r in self if r.get("skew") is not None]

    def summary(self) -> str:
        if not self:
            return "no barrier records"
        flag = self[0]["flag"]
        skews = sorted(self.skews())
        waits = sorted(
            max(r["releases"] or [r["local_release"]]) - min(r["arrivals"]) for r in self if r.get("arrivals")
        )
        line = f"{len(self)} {flag} barrier(s) over {len(self[0]['members'])} process(es)"
        if skews:
            line += f": release skew median {_median(skews) * 1e6:.1f} us, max {skews[-1] * 1e6:.1f} us"
        if waits:
            line += f"; arrival-to-release median {_median(waits) * 1e6:.1f} us"
        return line

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.summary())


def _median(values: Sequence[float]) -> float:
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def barrier(cluster: "HybridCluster", flag: str, repeat: int, timeout: float | None, progress) -> BarrierRecords:
    """The client's side; see ``HybridCluster.barrier``."""
    from .collect import cluster_error

    flag = str(flag).upper()
    if flag not in BARRIER_FLAGS:
        raise ClusterUsageError(f"Unknown barrier flag {flag!r}; use one of {', '.join(BARRIER_FLAGS)}.")
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ClusterUsageError(f"repeat must be a positive integer, got {repeat!r}.")
    if flag == "QQ" and cluster.quantum == 0:
        raise ClusterStateError("A QQ barrier needs quantum monitor engines; this cluster has none.")
    timeout = cluster._timeout(timeout)
    deadline = cluster._engine_deadline(timeout)
    ids = cluster._live("barrier", cluster._ids("all"))
    tasks = {e: cluster._apply(e, barrier_task, flag, repeat, deadline=deadline) for e in ids}
    out = cluster._collect("barrier", tasks, timeout, progress)
    if out.failures:
        raise cluster_error(f"The {flag} barrier failed.", out)
    reporter = cluster._ids("quantum")[0] if flag == "QQ" else 0
    return BarrierRecords(out.values[reporter])


def barrier_task(flag: str, repeat: int, *, deadline: float) -> list[dict[str, Any]] | None:
    """Every engine takes part in ``repeat`` barriers; the reporter returns the records."""
    from ..kernel import barrier as kb

    hc = E.hc()
    bflag = kb.BarrierFlag[flag]
    reporter = hc.qrank == 0 if bflag == kb.QQ else hc.comm_rank == 0
    records = []
    for k in range(repeat):
        rec = hc.barrier(bflag, timeout=max(E.remaining(deadline), 0.05))
        records.append(rec.to_dict())
        if rec.participated and reporter:
            E.publish("barrier", record=rec.to_dict(), index=k, of=repeat)
    return records if reporter else None
