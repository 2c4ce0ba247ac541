"""One pilot: a hybrid cluster started from a :class:`PilotDescription`, and its task queue.

A :class:`Pilot` is a placeholder for work (Pilot-Quantum's pilot job): once started, its
monitors stand serving the one dispatch path (``monitor_engine.serve``) and classical rank 0
holds headless Qiskit primitives on them. Tasks wait in the pilot's queue on this side; the
pilot's agent thread hands them to the engines (at most ``window`` outstanding per classical
engine, so ``cancel()`` works until a task leaves the queue): function tasks with ipyparallel
``apply`` to the least busy classical engine; quantum tasks in batches to rank 0 over the
pilot's direct link (:mod:`~mpiq_magic.pilot.channel`: signed ZeroMQ messages handled in rank
0's own event loop, a fraction of an ``apply``'s latency), where they run as primitive runs
pinned to the devices the placement chose. Every send happens on the agent thread; results
complete the task futures from ipyparallel's ``AsyncResult`` callbacks and the link's receiver.
"""

from __future__ import annotations

import collections
import threading
import time
from functools import partial
from typing import Any, Sequence

from . import agent, channel
from .description import PilotDescription
from .errors import PilotEngineLostError, PilotStateError, PilotStoppedError, PilotUsageError, RemoteTaskError
from .tasks import FUNCTION, TaskFuture

#: How long the agent thread sleeps when there is nothing to do (it is woken on new work).
_IDLE = 0.5


def make_cluster(desc: PilotDescription):
    """The (not yet started) cluster of a description: local or in a SLURM placeholder job."""
    common = dict(devices=desc.devices, timeout=desc.timeout, start_timeout=desc.start_timeout, env=dict(desc.env))
    if desc.kind == "slurm":
        from .slurm import SlurmHybridCluster

        return SlurmHybridCluster(desc.classical, desc.quantum, slurm=dict(desc.slurm), **common)
    from ..cluster import HybridCluster

    return HybridCluster(desc.classical, desc.quantum, **common)


class Pilot:
    """A started hybrid cluster that runs tasks; see the module docstring.

    Use through :class:`~mpiq_magic.pilot.PilotManager` (``create_pilot``), or alone:
    ``with Pilot(PilotDescription("p", quantum=2)) as p: p.submit_function(f).result()``.
    """

    def __init__(self, description: PilotDescription):
        self.description = description
        self.name = description.name
        self.state = "new"  # new | starting | running | stopped | failed
        self.cluster: Any = None
        self.start_seconds: float | None = None
        self._cond = threading.Condition()
        self._functions: collections.deque = collections.deque()
        self._quantum: collections.deque = collections.deque()
        self._outstanding: dict[int, int] = {}
        self._running: dict[str, TaskFuture] = {}
        self._qload: dict[int, int] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.engine_pids: dict[int, int] = {}
        self._serving: list[Any] = []
        self.error: str | None = None
        self._channel: Any = None
        self._batches: dict[int, tuple[int, dict]] = {}  # batch id -> (engine, futures by task id)
        self._batch_ids = 0

    def __repr__(self) -> str:
        d = self.description
        return f"<Pilot {self.name!r} {d.kind}: {d.classical} classical + {d.quantum} quantum, {self.state}>"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "Pilot":
        """Start the cluster, stand the monitors serving, build rank 0's primitives.

        Raises:
            PilotStateError: the pilot was already started.
            ClusterTimeoutError / HybridClusterError: the engines did not start (nothing is left running).
        """
        if self.state != "new":
            raise PilotStateError(f"Pilot {self.name!r} is {self.state}; a pilot starts once.")
        self.state = "starting"
        t0 = time.perf_counter()
        try:
            self.cluster = make_cluster(self.description)
            self.cluster.start()
            self.cluster.wait_ready()
            client = self.cluster.client
            self._serving = [client[e].apply_async(agent.stand) for e in self.cluster.engine_ids("quantum")]
            d = self.description
            classical = self.cluster.engine_ids("classical")
            setups = [client[e].apply_async(agent.setup, self.name, d.seed, d.timeout) for e in classical]
            for e, ar in zip(classical, setups):
                ar.get(timeout=d.start_timeout)
            self.engine_pids = {info.engine: info.pid for info in self.cluster.engines}
            root = min(classical)
            self._channel = channel.Channel(client, self.name, self._batch_done, self._batches_lost,
                                            lambda: root in client.ids)
            client[root].apply_async(agent.open_channel, self._channel.tasks_url,
                                     self._channel.results_url).get(timeout=d.start_timeout)
            self._outstanding = {e: 0 for e in classical}
            self._qload = {q: 0 for q in range(d.quantum)}
        except BaseException as exc:
            self.state = "failed"
            self.error = f"{type(exc).__name__}: {exc}"
            if self._channel is not None:
                self._channel.close()
            if self.cluster is not None:
                self.cluster.stop()
            raise
        self.start_seconds = time.perf_counter() - t0
        self.state = "running"
        self._thread = threading.Thread(target=self._loop, name=f"pilot-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Cancel queued tasks, fail running ones with :class:`PilotStoppedError`, stop every
        process of the pilot (by PID). Idempotent."""
        with self._cond:
            self._stopping = True
            queued = list(self._functions) + list(self._quantum)
            self._functions.clear()
            self._quantum.clear()
            self._cond.notify_all()
        for item in queued:
            item[0].cancel()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        if self._channel is not None:
            self._channel.close()
        if self.cluster is not None:
            self.cluster.stop()
        for fut in list(self._running.values()):
            fut._settle(error=PilotStoppedError(
                f"Pilot {self.name!r} stopped while task {fut.task_id} was running on engine "
                f"{fut.record.engine}; its result is lost."
            ))
        self._running.clear()
        if self.state in ("running", "starting", "new"):
            self.state = "stopped"

    cancel = stop  # Pilot-Quantum's name for ending a pilot

    def __enter__(self) -> "Pilot":
        return self.start() if self.state == "new" else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ state
    @property
    def devices(self) -> list:
        if self.cluster is not None:
            return list(self.cluster.devices)
        from ..kernel.config import resolve_devices

        d = self.description
        return resolve_devices(d.devices, d.quantum)

    def queue_lengths(self) -> dict[int, int]:
        """Quantum tasks placed on each qrank and not finished yet."""
        with self._cond:
            return dict(self._qload)

    @property
    def pending(self) -> int:
        """Tasks queued or running on this pilot."""
        with self._cond:
            return len(self._functions) + len(self._quantum) + len(self._running)

    def _require_running(self) -> None:
        if self.state != "running":
            raise PilotStateError(f"Pilot {self.name!r} is {self.state}; tasks need a running pilot.")

    # ------------------------------------------------------------------ submission
    def submit_function(self, future: TaskFuture, fn, args: tuple, kwargs: dict, engine: int | None = None) -> TaskFuture:
        """Queue a function task (run on a classical engine, ``hc`` at hand).

        Raises:
            PilotStateError: the pilot is not running.
            PilotUsageError: ``engine`` is not a classical engine of this pilot.
        """
        self._require_running()
        if engine is not None and engine not in self._outstanding:
            raise PilotUsageError(
                f"Task {future.task_id} asks for engine {engine}, but pilot {self.name!r} has classical "
                f"engines {sorted(self._outstanding)}."
            )
        future.record.pilot = self.name
        with self._cond:
            self._functions.append((future, fn, args, kwargs, engine))
            self._cond.notify()
        return future

    def submit_quantum(self, future: TaskFuture, item: "agent.QuantumItem") -> TaskFuture:
        """Queue a quantum task already placed on ``item.qrank`` of this pilot.

        Raises:
            PilotStateError: the pilot is not running.
        """
        self._require_running()
        future.record.pilot = self.name
        with self._cond:
            self._qload[item.qrank] = self._qload.get(item.qrank, 0) + 1
            self._quantum.append((future, item))
            self._cond.notify()
        future.add_done_callback(partial(self._unload, item.qrank))
        return future

    def _unload(self, qrank: int, _future) -> None:
        with self._cond:
            self._qload[qrank] = max(0, self._qload.get(qrank, 0) - 1)

    # ------------------------------------------------------------------ the agent thread
    def _loop(self) -> None:
        window = self.description.window
        while True:
            with self._cond:
                sends = self._take(window)
                while not sends and not self._stopping:
                    self._cond.wait(_IDLE)
                    sends = self._take(window)
                if self._stopping:
                    for fut, *_ in sends:
                        fut._settle(error=PilotStoppedError(f"Pilot {self.name!r} stopped before task {fut.task_id} started."))
                    return
            for send in sends:
                self._send(*send)
            for _, _, entries in sends:
                for entry in entries:
                    entry[0]._notify_sent()

    def _take(self, window: int) -> list:
        """Work to send now (called with the lock held); marks it running and outstanding."""
        sends = []
        root = min(self._outstanding) if self._outstanding else None
        if self._quantum and root is not None and self._outstanding[root] < window:
            batch = []
            while self._quantum and len(batch) < self.description.max_batch:
                fut, item = self._quantum.popleft()
                if fut._mark_running():
                    fut.record.engine = root
                    batch.append((fut, item))
            if batch:
                self._outstanding[root] += 1
                sends.append((root, "quantum", batch))
        if self._functions:
            keep = collections.deque()
            while self._functions:
                entry = self._functions.popleft()
                fut, fn, args, kwargs, pinned = entry
                if fut.cancelled():
                    continue
                engine = pinned if pinned is not None else min(self._outstanding, key=lambda e: (self._outstanding[e], -e))
                if self._outstanding[engine] >= window:
                    keep.append(entry)
                    if pinned is None and all(n >= window for n in self._outstanding.values()):
                        keep.extend(self._functions)
                        self._functions.clear()
                    continue
                if not fut._mark_running():
                    continue
                fut.record.engine = engine
                self._outstanding[engine] += 1
                sends.append((engine, FUNCTION, [(fut, fn, args, kwargs)]))
            self._functions = keep
        for _, _, entries in sends:
            for entry in entries:
                self._running[entry[0].task_id] = entry[0]
        return sends

    def _send(self, engine: int, kind: str, entries: list) -> None:
        futures = {e[0].task_id: e[0] for e in entries}
        try:
            if kind == FUNCTION:
                fut, fn, args, kwargs = entries[0]
                ar = self.cluster.client[engine].apply_async(agent.run_function, fut.task_id, fn, args, kwargs)
            else:
                self._batch_ids += 1
                batch = self._batch_ids
                with self._cond:
                    self._batches[batch] = (engine, futures)
                self._channel.send(batch, [item for _, item in entries])
                return
        except Exception as exc:  # e.g. the function does not serialize
            if kind != FUNCTION:
                with self._cond:
                    self._batches.pop(batch, None)
            self._done(engine, futures, None, exc)
            return
        ar.add_done_callback(partial(self._finished, engine, futures))

    def _batch_done(self, batch: int, outcomes: list) -> None:
        """The link's receiver: a quantum batch's outcomes arrived."""
        with self._cond:
            engine, futures = self._batches.pop(batch, (None, None))
        if futures is None:
            return
        try:
            self._done(engine, futures, outcomes, None)
        except BaseException as bug:  # never leave a future hanging
            for fut in futures.values():
                fut._settle(error=bug)

    def _batches_lost(self, batches: list[int], kind: str, text: str) -> None:
        """The link's receiver: rank 0 went away (``kind="lost"``) or could not read a batch."""
        for batch in batches:
            with self._cond:
                engine, futures = self._batches.pop(batch, (None, None))
            if futures is None:
                continue
            if kind == "lost":
                error: BaseException = PilotEngineLostError(
                    f"Pilot {self.name!r}: {text} with quantum task(s) {sorted(futures)} unanswered; "
                    "their results are lost.")
            else:
                error = RemoteTaskError(f"Pilot {self.name!r}: quantum batch of task(s) {sorted(futures)} failed: "
                                        f"{text.splitlines()[0]}", text)
            self._done(engine, futures, None, error)

    def _finished(self, engine: int, futures: dict, ar) -> None:
        exc = ar.exception()
        outcomes = None if exc is not None else ar.result()
        if isinstance(outcomes, agent.Outcome):
            outcomes = [outcomes]
        try:
            self._done(engine, futures, outcomes, exc)
        except BaseException as bug:  # never leave a future hanging
            for fut in futures.values():
                fut._settle(error=bug)

    def _done(self, engine: int, futures: dict, outcomes, exc: BaseException | None) -> None:
        with self._cond:
            self._outstanding[engine] = max(0, self._outstanding.get(engine, 0) - 1)
            for tid in futures:
                self._running.pop(tid, None)
            self._cond.notify()
        if exc is not None:
            for fut in futures.values():
                fut._settle(error=exc)
            return
        for out in outcomes:
            fut = futures.get(out.task_id)
            if fut is None:
                continue
            r = fut.record
            r.start, r.end, r.batch = out.start, out.end, out.batch
            if out.qranks:
                devs = self.cluster.devices if self.cluster is not None else []
                r.devices = tuple(devs[q].name if q < len(devs) else f"qrank {q}" for q in out.qranks)
            r.device_seconds = out.device_seconds
            if out.ok:
                fut._settle(result=out.value)
            else:
                error = out.value if isinstance(out.value, BaseException) else RemoteTaskError(
                    out.error_text.splitlines()[0] if out.error_text else "The task failed.", out.error_text)
                try:
                    error.add_note(f"(task {out.task_id} on pilot {self.name!r}, engine {engine}; remote traceback:)\n"
                                   + out.error_text.split("\n", 1)[-1])
                except Exception:
                    pass
                fut._settle(error=error)

    # ------------------------------------------------------------------ processes
    def pids(self) -> list[int]:
        """PIDs of the pilot's engines (and their mpiexec proxies) started on this host."""
        engines = getattr(self.cluster, "engines", None) or []
        return sorted({p for info in engines for p in (info.pid, info.ppid)} | set(self.engine_pids.values()))
