"""One MPI job with serving monitors: quantum processes serve, classical ranks drive them.

Used by ``python -m monitor_engine`` and by scripts started with ``mpiq run``::

    hc = mpiq.init()
    run_job(hc, lambda hc, client: client.run_batch(payloads))
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from mpiq_magic.kernel.barrier import CC

from .client import MonitorClient
from .process import MonitorProcess

Main = Callable[[Any, MonitorClient], Any]


def run_job(hc, main: Main | None = None, *, idle_timeout: float | None = None, timeout: float | None = None) -> Any:
    """Collective over ``hc``: quantum processes serve until shut down; classical ranks run ``main``.

    Every classical rank calls ``main(hc, client)`` (``client`` is its :class:`MonitorClient`);
    when all of them are done (a CC barrier), classical rank 0 shuts every monitor down, also
    when ``main`` raised. Without ``main`` classical rank 0 collects every monitor's status
    (a health check). Returns ``main``'s value (or the status list) on classical ranks and the
    monitor's final status on quantum processes. ``idle_timeout`` stops a monitor that receives
    no request for that long; ``timeout`` bounds each client wait.
    """
    if hc.is_quantum:
        return MonitorProcess(hc).serve(timeout=idle_timeout)
    client = MonitorClient(hc, timeout=timeout)
    value: Any = None
    failed: BaseException | None = None
    try:
        if main is not None:
            value = main(hc, client)
        elif hc.rank == 0:
            value = client.status()
    except BaseException as exc:  # still shut the monitors down below
        failed = exc
    try:
        if failed is None:
            hc.barrier(CC, timeout=timeout)
    finally:
        if hc.rank == 0:
            try:
                client.shutdown(timeout=timeout)
            except Exception as exc:  # report, but do not hide main's own error
                print(f"monitor_engine: shutting the monitors down failed: {exc}", file=sys.stderr)
                if failed is None:
                    raise
    if failed is not None:
        raise failed
    return value
