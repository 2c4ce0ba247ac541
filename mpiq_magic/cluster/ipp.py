"""The ipyparallel side of a cluster's lifetime: start the controller and the MPI engines, stop
them (with ipyparallel's event-loop thread), count what the client receives."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import ClusterTimeoutError, HybridClusterError
from . import processes as _proc
from .collect import POLL_SECONDS

if TYPE_CHECKING:  # pragma: no cover
    from .lifecycle import HybridCluster


def start(cluster: "HybridCluster") -> None:
    """Start the controller here and the engines with the cluster's engine launcher
    (:mod:`mpiq_magic.cluster.launchers`: the bundled mpiexec on loopback, or a SLURM job) and
    wait until every engine registered.

    Raises:
        HybridClusterError: the engines' job ended before every engine registered (its output attached).
        ClusterTimeoutError: not every engine registered within ``start_timeout``.
    """
    import ipyparallel as ipp
    from traitlets.config import Config

    if cluster._profile_dir_arg is None:
        cluster._profile_dir = _proc.make_temp_dir("mpiq-cluster-")  # also reaps dead owners' dirs
        cluster._watchdog.remove_dir(cluster._profile_dir)
    else:
        cluster._profile_dir = cluster._profile_dir_arg
    cfg = Config()
    launcher = cluster.engine_launcher
    options = launcher.configure(cluster, cfg)
    cfg.LocalControllerLauncher.stop_seconds_until_kill = 2
    cluster._ipp = ipp.Cluster(
        n=cluster.size,
        profile_dir=cluster._profile_dir,
        config=cfg,
        delay=0,
        controller_args=["--ping=1000"],  # heartbeat period (ms): engines register sooner
        engine_timeout=int(cluster.start_timeout),
        log_level=cluster.log_level,
        **options,
    )
    cluster._ipp.start_cluster_sync()
    roots = [getattr(cluster._ipp.controller, "pid", None), getattr(cluster._ipp.engine_set, "pid", None)]
    cluster._controller_pid = roots[0]
    cluster._watchdog.track([p for p in roots if p])
    client = cluster._ipp.connect_client_sync()
    cluster._client = client
    deadline = time.monotonic() + cluster.start_timeout
    while len(client.ids) < cluster.size:
        ended = launcher.ended(cluster._ipp)
        if ended is not None:
            raise HybridClusterError(f"{ended} ({len(client.ids)} of {cluster.size} engines registered)")
        if time.monotonic() > deadline:
            raise ClusterTimeoutError(
                f"Only {len(client.ids)} of {cluster.size} engines registered within "
                f"{cluster.start_timeout:g} s; engines {sorted(set(range(cluster.size)) - set(client.ids))} "
                f"did not answer{launcher.waiting(cluster._ipp)}."
            )
        time.sleep(POLL_SECONDS)


def stop(ipp_cluster: Any, log_level: int, launcher: Any = None) -> None:
    """Stop the engines (and wait until ``launcher`` says they are gone: a SLURM job leaves the
    queue), then the controller (both at once makes mpiexec linger), then the event-loop thread;
    never raises."""
    # Engines stopped on purpose exit by SIGTERM; ipyparallel would log their whole output as a
    # warning for that non-zero exit, which is noise here.
    ipp_cluster.log.setLevel(max(log_level, logging.ERROR))
    job = launcher.job_id(ipp_cluster) if launcher is not None else None
    stopped = launcher.stopped if launcher is not None else (lambda job: None)
    for step in (ipp_cluster.stop_engines_sync, lambda: stopped(job), ipp_cluster.stop_controller_sync):
        try:
            step()
        except Exception:
            pass
    _stop_async_thread(ipp_cluster)


@contextmanager
def client_traffic(client: Any):
    """Count the bytes and messages ``client`` receives inside the ``with`` block.

    Yields a dict with ``bytes`` and ``messages``; shows that payloads travel over MPI-Q and never
    through the client (or the controller, which relays everything the client gets).
    """
    session = client.session
    counter = {"bytes": 0, "messages": 0}
    feed = session.feed_identities

    def counting(msg_list, copy=True):
        counter["messages"] += 1
        counter["bytes"] += sum(_frame_size(f) for f in msg_list)
        return feed(msg_list, copy=copy)

    session.feed_identities = counting
    try:
        yield counter
    finally:
        del session.feed_identities


def _stop_async_thread(cluster: Any) -> None:
    """End the IOLoop thread ipyparallel starts for its ``*_sync`` calls inside a running event
    loop (a notebook kernel); it is never stopped otherwise: one thread and three descriptors
    per start/stop cycle."""
    thread = getattr(cluster, "_async_thread", None)
    loop = getattr(cluster, "_thread_loop", None)
    if thread is None or loop is None:
        return
    try:
        loop.add_callback(loop.stop)
        thread.join(5)
        if not thread.is_alive():
            loop.close(all_fds=False)
    except Exception:
        pass
    cluster._async_thread = None


def _frame_size(frame: Any) -> int:
    try:
        return memoryview(frame.buffer if hasattr(frame, "buffer") else frame).nbytes
    except TypeError:
        return len(frame)
