"""Collective workloads an attached classical job runs with the quantum service
(:meth:`monitor_engine.attach_client.Attachment.collective`): functions both jobs import by name
and call with their own side of the merged hybrid communicator."""

from __future__ import annotations

import time
from typing import Any

from mpiq_magic.kernel.addressing import Rank


def barriers(hc, flag: str, repeat: int = 1, timeout: float | None = None) -> list[dict[str, Any]] | None:
    """``repeat`` hybrid barriers (``CC``, ``QQ`` or ``ALL``) over both jobs; classical rank 0
    returns the records of the reporting process (qrank 0 for ``QQ``, itself otherwise: with a
    service, qrank 0 is in the other job, so its records are gathered over the merged
    communicator). Collective; bounded by ``timeout`` (default: the communicator's)."""
    from mpiq_magic.kernel import barrier as kb

    bflag = kb.BarrierFlag[flag]
    deadline = time.monotonic() + (hc.timeout if timeout is None else float(timeout))
    records = [hc.barrier(bflag, timeout=max(deadline - time.monotonic(), 0.05)).to_dict() for _ in range(repeat)]
    if bflag != kb.QQ:  # classical rank 0 takes part: its own records
        return records if hc.rank == 0 else None
    # MPI-Q's gather: classical rank 0 collects one object from every monitor, by qrank
    got = hc.gather(records if hc.is_quantum else None, root=Rank(0), timeout=max(deadline - time.monotonic(), 1.0))
    return got[0] if hc.rank == 0 else None
