"""Waiting for per-engine answers: until done, dead or the timeout; failures as ``[rank:op]`` lines."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ..errors import ClusterTimeoutError, ClusterUsageError, EngineFailure, HybridClusterError
from ..events import ProgressCallback

if TYPE_CHECKING:  # pragma: no cover
    from .lifecycle import HybridCluster

#: Seconds between two looks at running operations (events, liveness).
POLL_SECONDS = 0.05


@dataclass
class Outcome:
    """Per-engine values, failures, engines that did not answer and engines found dead."""

    values: dict[int, Any]
    failures: list[EngineFailure]
    unanswered: list[int]
    dead: list[int]


def collect(
    cluster: "HybridCluster",
    op: str,
    tasks: Mapping[int, Any],
    timeout: float,
    progress: ProgressCallback | None = None,
    interrupt: bool = False,
) -> Outcome:
    """Wait for per-engine results until done, dead or ``timeout``; forward progress events."""
    from ..events import collect_events

    deadline = time.monotonic() + timeout
    seen: dict[int, set] = {e: set() for e in tasks}  # event keys repeat across engines
    pending = dict(tasks)
    dead: list[int] = []
    controller_dead: list[bool] = []

    def forward_events() -> None:
        for e, ar in tasks.items():
            for ev in collect_events(ar.data, seen[e]):
                cluster._emit(ev, progress)

    def wait() -> None:
        next_check = 0.0
        while pending:
            forward_events()
            for e, ar in list(pending.items()):
                if ar.ready():
                    pending.pop(e)
            if not pending:
                return
            now = time.monotonic()
            if now >= deadline:
                return
            if now >= next_check and cluster.engines:
                next_check = now + 0.25
                if not getattr(cluster, "controller_alive", True):
                    controller_dead.append(True)  # nothing can answer any more
                    return
                for e in cluster._dead_engines(pending):
                    pending.pop(e)
                    dead.append(e)
                    cluster._emit({"event": "status", "who": cluster.engines[e].who, "status": "dead"}, progress)
                if not pending:
                    return
            next(iter(pending.values())).wait(POLL_SECONDS)

    try:
        wait()
    except KeyboardInterrupt:
        if interrupt:  # like %%px: pass the interrupt on to the engines
            interrupt_engines(cluster, {e: tasks[e] for e in pending}, grace=2.0)
        raise
    wait_for_output(tasks, [e for e in tasks if e not in pending and e not in dead], timeout=1.0)
    forward_events()  # events published just before each answer
    values: dict[int, Any] = {}
    failures: list[EngineFailure] = []
    for e, ar in tasks.items():
        if e in pending or e in dead:
            continue
        try:
            values[e] = ar.get(timeout=0)
        except Exception as exc:  # noqa: BLE001 - each engine's error becomes one line
            failures.extend(failures_of(e, op, exc))
    forget_async_results()
    unanswered = sorted(pending)
    late_dead = cluster._dead_engines(unanswered) if unanswered and cluster.engines else []
    for e in sorted(set(dead) | set(late_dead)):
        info = cluster.engines[e]
        failures.append(EngineFailure(e, op, f"{info.label()} died (pid {info.pid}) before answering.", "dead"))
    alive_unanswered = [e for e in unanswered if e not in late_dead]
    for e in alive_unanswered:
        label = cluster.engines[e].label() if e < len(cluster.engines) else f"engine {e}"
        if controller_dead:
            failures.append(EngineFailure(
                e, op, f"{label} cannot answer: the ipyparallel controller died; stop the cluster and start a new one.",
                "dead",
            ))
            continue
        failures.append(EngineFailure(e, op, f"{label} did not answer within {timeout:g} s.", "timeout"))
    if controller_dead:
        cluster._remember(failures)
        return Outcome(values, failures, unanswered, sorted(set(dead) | set(late_dead)))
    if interrupt and alive_unanswered:
        interrupt_engines(cluster, {e: tasks[e] for e in alive_unanswered})
    cluster._remember(failures)
    return Outcome(values, failures, unanswered, sorted(set(dead) | set(late_dead)))


def forget_async_results() -> None:
    """Empty ipyparallel's per-class ``lru_cache`` caches of ``AsyncResult`` methods (``split``,
    ``__len__``, ``_count_chunks``): each keeps up to 128 finished results alive, with their
    futures, outputs and metadata. What a caller still holds (``RunResult.async_result``) is
    untouched; the client's own caches are already purged as each reply resolves."""
    from ipyparallel import AsyncResult

    for name in ("split", "__len__", "_count_chunks"):
        clear = getattr(getattr(AsyncResult, name, None), "cache_clear", None)
        if clear is not None:
            clear()


def interrupt_engines(cluster: "HybridCluster", stuck: Mapping[int, Any], grace: float = 5.0) -> None:
    """SIGINT the engines still running a cell, and wait (briefly) until they are free again.

    Waiting matters: an interrupted cell makes the engine drop requests already queued
    behind it, so the next operation must not be sent before the interrupt has landed.
    """
    try:
        cluster._client.send_signal(signal.SIGINT, targets=list(stuck), block=False)
    except Exception:
        return
    end = time.monotonic() + grace
    for ar in stuck.values():
        ar.wait(max(end - time.monotonic(), 0.0))


def wait_for_output(split: Mapping[int, Any], answered: Iterable[int], timeout: float = 2.0) -> None:
    """Let the answered engines' last output (stdout, Out[...]) arrive before it is read."""
    end = time.monotonic() + timeout
    for e in answered:
        try:
            split[e].wait_for_output(max(end - time.monotonic(), 0.01))
        except Exception:
            pass


def failures_of(engine: int, op: str, exc: BaseException) -> list[EngineFailure]:
    """One :class:`EngineFailure` per remote error in ``exc``."""
    from ipyparallel.error import CompositeError, RemoteError

    if isinstance(exc, CompositeError):
        return [EngineFailure(engine, op, f"{en}: {ev}", traceback=tb) for en, ev, tb, _ in exc.elist]
    if isinstance(exc, RemoteError):
        if exc.ename == "EngineError":
            return [EngineFailure(engine, op, f"the engine died: {exc.evalue}", "dead", exc.traceback)]
        return [EngineFailure(engine, op, f"{exc.ename}: {exc.evalue}", traceback=exc.traceback)]
    return [EngineFailure(engine, op, f"{type(exc).__name__}: {exc}")]


def named(out: Outcome) -> set:
    return {f.engine for f in out.failures}


def cluster_error(summary: str, out: Outcome, partial: Any = None) -> HybridClusterError:
    """The error of a failed operation: a timeout error when an engine was silent or dead."""
    cls = ClusterTimeoutError if any(f.kind in ("timeout", "dead") for f in out.failures) else HybridClusterError
    return cls(summary, out.failures, partial=partial)


def check_timeout(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ClusterUsageError(f"{name} must be a positive number of seconds, got {value!r}.")


def check_shots(shots: Any) -> None:
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ClusterUsageError(f"shots must be a positive integer, got {shots!r}.")


def track_executed(progress, seen: dict[int, int]) -> ProgressCallback:
    """A progress callback that also records how far each monitor's ``executed`` events got."""

    def callback(event: Mapping[str, Any]) -> None:
        if event.get("event") == "executed" and isinstance(event.get("qrank"), int):
            seen[event["qrank"]] = max(seen.get(event["qrank"], 0), int(event.get("done") or 0))
        if progress is not None:
            progress(event)

    return callback
