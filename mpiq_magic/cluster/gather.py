"""``%%mpiq gather``: every monitor runs a cell and contributes a value; MPIQ_Gather to rank 0."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import engine as E

if TYPE_CHECKING:  # pragma: no cover
    from .lifecycle import HybridCluster


@dataclass(frozen=True)
class GatherReply:
    """Rank 0's answer: the values by qrank, and the monitors whose cell failed."""

    values: list[Any]
    errors: dict[int, str]


@dataclass(frozen=True)
class _Contribution:
    value: Any
    error: str | None


def gather(cluster: "HybridCluster", code: str | None, var: str, timeout: float | None, progress) -> list[Any]:
    """The client's side; see ``HybridCluster.gather``."""
    from .collect import cluster_error

    timeout = cluster._timeout(timeout)
    deadline = cluster._engine_deadline(timeout)
    ids = cluster._live("gather", cluster._ids("all"))
    tasks = {e: cluster._apply(e, gather_task, code=code, var=var, deadline=deadline) for e in ids}
    out = cluster._collect("gather", tasks, timeout, progress)
    reply = out.values.get(cluster._ids("classical")[0])
    if out.failures or reply is None:
        raise cluster_error(f"%%mpiq gather of '{var}' failed.", out, partial=reply and reply.values)
    return reply.values


def gather_task(*, code: str | None, var: str, deadline: float) -> GatherReply | None:
    """Collective: monitors run ``code`` and contribute ``var``; rank 0 returns them by qrank."""
    from ..kernel import Rank

    hc = E.hc()
    timeout = max(E.remaining(deadline), 0.05)
    if hc.is_quantum:
        value, error = None, None
        try:
            E.run_code(code)
            ns = E.user_ns()
            if var not in ns:
                raise NameError(f"'{var}' is not defined on qrank {hc.qrank} (device {hc.device.name}).")
            value = ns[var]
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        hc.gather(_Contribution(value, error), root=Rank(0), timeout=timeout)
        if error:
            raise RuntimeError(error)
        return None
    gathered = hc.gather(None, root=Rank(0), timeout=timeout)
    if hc.rank != 0:
        return None
    return GatherReply([g.value for g in gathered], {j: g.error for j, g in enumerate(gathered) if g.error})
