"""A hybrid cluster: ipyparallel engines that are the ranks of one MPI job running MPI-Q.

:class:`HybridCluster` owns the cluster's lifetime (like ipyparallel's ``Cluster``): it starts a
controller and ``C + Q`` engines with ipyparallel's MPI launcher and the bundled ``mpiexec``, so
the engines share one ``COMM_WORLD`` and engine id == MPI rank (checked at start); every engine
runs :func:`mpiq_magic.kernel.init` (the first ``C`` ranks are classical, the rest quantum
monitors bound to their devices). It works without IPython and is a context manager::

    from mpiq_magic.cluster import HybridCluster

    with HybridCluster(classical=1, quantum=3) as cluster:
        print(cluster.topology)
        res = cluster.scatter(circuits=[qc1, qc2, qc3], shots=1000)   # payloads go over MPI-Q
        cluster.barrier("QQ", repeat=10)

Every operation has a timeout (default ``timeout=``); when it expires the error names the
engines that did not answer. Failures on engines are collected into one
:class:`~mpiq_magic.errors.HybridClusterError` with ``[rank:operation] message`` lines.

Fault tolerance: MPICH's process manager kills every rank when one dies of a signal. Engines
therefore run under ``-disable-auto-cleanup`` behind a tiny ``sh`` parent that turns a killed
engine into an ordinary exit status (and ignores the SIGUSR1 failure notice), so the other
engines survive a dead monitor and report what they have.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import cluster_ops as ops
from .errors import ClusterStateError, ClusterTimeoutError, ClusterUsageError, EngineFailure, HybridClusterError
from .kernel.errors import ConfigError
from .events import ProgressCallback

LAUNCHERS = ("mpi",)
TARGETS = ("classical", "quantum", "all")
BARRIER_FLAGS = ("CC", "QQ", "ALL")
#: Seconds between two looks at running operations (events, liveness).
POLL_SECONDS = 0.05
#: Engine-side work ends this much before the client's timeout, so its answer arrives in time.
_MARGIN = 0.5
#: The engines' parent: turns death by a signal into an exit status, ignores SIGUSR1.
_ENGINE_SHELL = 'trap "" USR1; "$@"; exit $?'

_live_clusters: "weakref.WeakSet[HybridCluster]" = weakref.WeakSet()


def engine_command(python: str | None = None) -> list[str]:
    """The command ``mpiexec`` runs for every engine (see the module docstring)."""
    return ["sh", "-c", _ENGINE_SHELL, "mpiq-engine", python or sys.executable, "-m", "ipyparallel.engine"]


def _node_id() -> str:
    return ops._node_id()


# ----------------------------------------------------------------------------- records
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


@dataclass
class ScatterResult:
    """Results of a scatter/bcast, in circuit order (``None`` where a circuit got no result)."""

    results: list[Any]
    missing: dict[int, int] = field(default_factory=dict)  # circuit index -> qrank
    errors: dict[int, str] = field(default_factory=dict)  # circuit index -> message
    payload_bytes: int = 0
    compile_cache: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    job: int = 0
    stdout: str = ""  # what the cell printed on classical rank 0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.errors

    @property
    def counts(self) -> list[dict[str, int] | None]:
        return [getattr(r, "counts", None) for r in self.results]


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


@dataclass
class RunResult:
    """Outcome of :meth:`HybridCluster.run`: return values and output, by engine id."""

    values: dict[int, Any]
    stdout: dict[int, str]
    stderr: dict[int, str]
    async_result: Any = field(repr=False, default=None)

    def display_outputs(self, groupby: str = "engine") -> None:
        """ipyparallel's display of the engines' outputs (stdout, stderr, displays)."""
        if self.async_result is not None:
            self.async_result.display_outputs(groupby=groupby)


@dataclass
class _Outcome:
    values: dict[int, Any]
    failures: list[EngineFailure]
    unanswered: list[int]
    dead: list[int]


# ----------------------------------------------------------------------------- the cluster
class HybridCluster:
    """An ipyparallel cluster whose engines form one MPI-Q hybrid communicator.

    ``classical``/``quantum``: number of classical ranks and quantum monitor engines.
    ``devices``: devices TOML file or list of ``DeviceSpec`` (default: ``quantum`` local
    devices). ``timeout``: default timeout of every operation, seconds. ``start_timeout``:
    how long :meth:`start` waits for the engines. ``progress``: callbacks receiving every
    progress event (dicts, see :mod:`mpiq_magic.events`).
    """

    def __init__(
        self,
        classical: int = 1,
        quantum: int = 2,
        *,
        devices: str | os.PathLike[str] | Sequence[Any] | None = None,
        timeout: float = 60.0,
        launcher: str = "mpi",
        start_timeout: float = 120.0,
        profile_dir: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        prewarm: bool = True,
        progress: Iterable[ProgressCallback] = (),
        log_level: int = logging.WARNING,
    ):
        if isinstance(classical, bool) or not isinstance(classical, int) or classical < 1:
            raise ConfigError(f"A hybrid cluster needs at least one classical rank, got classical={classical!r}.")
        if isinstance(quantum, bool) or not isinstance(quantum, int) or quantum < 0:
            raise ConfigError(f"The number of quantum monitor engines must be >= 0, got quantum={quantum!r}.")
        if launcher not in LAUNCHERS:
            raise ConfigError(f"Unknown launcher {launcher!r}; supported launchers: {', '.join(LAUNCHERS)}.")
        _check_timeout(timeout, "timeout")
        _check_timeout(start_timeout, "start_timeout")
        from .kernel.config import resolve_devices

        if isinstance(devices, (str, os.PathLike)):
            devices = str(Path(devices).resolve())
        self.devices = resolve_devices(devices, quantum)  # ConfigError now, not on the engines
        self._devices_arg = devices
        self.classical = classical
        self.quantum = quantum
        self.timeout = float(timeout)
        self.launcher = launcher
        self.start_timeout = float(start_timeout)
        self.env = dict(env or {})
        self.prewarm = prewarm
        self.progress: list[ProgressCallback] = list(progress)
        self.log_level = log_level
        self._profile_dir_arg = None if profile_dir is None else str(profile_dir)
        self._profile_dir: str | None = None
        self._ipp: Any = None
        self._client: Any = None
        self.engines: list[EngineInfo] = []
        self._topology: Any = None
        self._last_error: dict[int, str] = {}
        self._warm: dict[int, Any] = {}
        self._job = 0
        self._owned_pids: dict[int, float] = {}
        self.start_seconds: float | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def size(self) -> int:
        return self.classical + self.quantum

    @property
    def running(self) -> bool:
        return self._client is not None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<HybridCluster {self.classical} classical + {self.quantum} quantum, {state}>"

    def start(self) -> "HybridCluster":
        """Start the controller and the MPI engines, check engine id == rank, run ``kernel.init``."""
        if self.running:
            raise ClusterStateError(f"{self!r} is already running; stop it first.")
        t0 = time.perf_counter()
        _register_atexit()
        _live_clusters.add(self)
        try:
            self._start_ipp()
            self._check_ranks()
            self._init_engines()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - t0
        self._emit({"event": "topology", "topology": self._topology.to_dict()})
        if self.prewarm:
            self._warm = {e: self._apply(e, ops.prewarm) for e in self._ids("all")}
        return self

    def _start_ipp(self) -> None:
        import ipyparallel as ipp
        from traitlets.config import Config

        from .launch import mpiexec_path

        if self._profile_dir_arg is None:
            self._profile_dir = tempfile.mkdtemp(prefix="mpiq-cluster-")
        else:
            self._profile_dir = self._profile_dir_arg
        cfg = Config()
        launcher = cfg.MPIEngineSetLauncher
        launcher.mpi_cmd = [mpiexec_path()]
        launcher.mpi_args = ["-disable-auto-cleanup"]
        launcher.engine_cmd = engine_command()
        launcher.environment = {"PYTHONUNBUFFERED": "1", "MPIQ_CLASSICAL": str(self.classical), **self.env}
        launcher.stop_seconds_until_kill = 2
        cfg.LocalControllerLauncher.stop_seconds_until_kill = 2
        self._ipp = ipp.Cluster(
            engines="mpi",
            n=self.size,
            profile_dir=self._profile_dir,
            config=cfg,
            delay=0,
            controller_args=["--ping=1000"],  # heartbeat period (ms): engines register sooner
            engine_timeout=int(self.start_timeout),
            log_level=self.log_level,
        )
        self._ipp.start_cluster_sync()
        client = self._ipp.connect_client_sync()
        self._client = client
        deadline = time.monotonic() + self.start_timeout
        while len(client.ids) < self.size:
            engine_set = self._ipp.engine_set
            if engine_set is not None and engine_set.state == "after":
                output = engine_set.get_output()
                raise HybridClusterError(
                    f"mpiexec exited before all {self.size} engines registered "
                    f"({len(client.ids)} did); its output:\n{output[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise ClusterTimeoutError(
                    f"Only {len(client.ids)} of {self.size} engines registered within "
                    f"{self.start_timeout:g} s; engines {sorted(set(range(self.size)) - set(client.ids))} "
                    "did not answer."
                )
            time.sleep(POLL_SECONDS)

    def _check_ranks(self) -> None:
        """engine id == MPI rank, or the cluster is useless: MPI-Q addresses ranks."""
        if self.size == 1:
            return
        ranks = self._client[:].pull("mpi_rank", block=False).get(timeout=self.start_timeout)
        wrong = [(e, r) for e, r in zip(self._client.ids, ranks) if e != r]
        if wrong:
            raise HybridClusterError(
                "Engine ids do not match MPI ranks: "
                + ", ".join(f"engine {e} runs MPI rank {r}" for e, r in wrong)
                + "; MPI-Q addresses processes by rank, so the cluster cannot be used."
            )

    def _init_engines(self) -> None:
        ars = {
            e: self._apply(e, ops.init_engine, self.classical, self._devices_arg, self.timeout)
            for e in range(self.size)
        }
        out = self._collect("start", ars, self.start_timeout)
        if out.failures:
            raise _error("The hybrid communicator could not be initialised on the engines.", out)
        self.engines = [
            EngineInfo(
                engine=e, role=v["role"], rank=v["rank"], qrank=v["qrank"], device=v["device"],
                host=v["host"], node=v["node"], pid=v["pid"], ppid=v["ppid"],
            )
            for e, v in sorted(out.values.items())
        ]
        self._owned_pids = {}
        for info in self.engines:
            for pid in (info.pid, info.ppid):
                created = _create_time(pid) if info.node == _node_id() else None
                if created is not None:
                    self._owned_pids[pid] = created
        self._topology = self._apply(0, ops.topology).get(timeout=self.start_timeout)

    def wait_ready(self, timeout: float | None = None) -> float:
        """Wait until the engines have imported qiskit and the simulators; returns the seconds it took."""
        t0 = time.perf_counter()
        if self._warm:
            out = self._collect("prewarm", self._warm, timeout or self.start_timeout)
            self._warm = {}
            if out.failures:
                raise _error("Preparing the engines failed.", out)
        return time.perf_counter() - t0

    def stop(self) -> None:
        """Stop engines and controller; kill (by PID) any engine process left over. Idempotent."""
        _live_clusters.discard(self)
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass
        if self._ipp is not None:
            cluster, self._ipp = self._ipp, None
            # Engines stopped on purpose exit by SIGTERM; ipyparallel would log their whole
            # output as a warning for that non-zero exit, which is noise here.
            cluster.log.setLevel(max(self.log_level, logging.ERROR))
            for stop in (cluster.stop_engines_sync, cluster.stop_controller_sync):
                try:  # engines first: stopping both at once makes mpiexec linger
                    stop()
                except Exception:
                    pass
        for pid, created in self._owned_pids.items():
            _kill_if_same(pid, created)
        self._owned_pids = {}
        self._warm = {}
        if self._profile_dir and self._profile_dir_arg is None:
            shutil.rmtree(self._profile_dir, ignore_errors=True)
        self._profile_dir = None

    def __enter__(self) -> "HybridCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ views and state
    @property
    def client(self):
        """The ipyparallel ``Client`` (raises when the cluster is not running)."""
        self._require()
        return self._client

    def engine_ids(self, targets: str | Sequence[int] = "all") -> list[int]:
        """Engine ids of ``'classical'``, ``'quantum'``, ``'all'`` or an explicit list."""
        return self._ids(targets)

    def view(self, targets: str | Sequence[int] = "all"):
        """A non-blocking ipyparallel ``DirectView`` on those engines."""
        view = self.client[self._ids(targets)]
        view.block = False
        return view

    @property
    def classical_view(self):
        return self.view("classical")

    @property
    def quantum_view(self):
        return self.view("quantum")

    @property
    def all_view(self):
        return self.view("all")

    @property
    def topology(self):
        """The kernel's ``Topology`` (classical and quantum virtual processors)."""
        self._require()
        return self._topology

    def engine(self, engine: int) -> EngineInfo:
        return self.engines[engine]

    def status(self) -> ClusterStatus:
        """Roles, devices, busy/idle/dead and the last error of every engine."""
        if not self.running:
            return ClusterStatus(False)
        dead = set(self._dead_engines(range(self.size)))
        try:
            queues = self._client.queue_status()
        except Exception:
            queues = {}
        rows = []
        for info in self.engines:
            q = queues.get(info.engine, {}) if isinstance(queues, dict) else {}
            queued = int(q.get("queue", 0)) if isinstance(q, dict) else 0
            state = "dead" if info.engine in dead else ("busy" if queued else "idle")
            rows.append(EngineStatus(info, state, queued, self._last_error.get(info.engine)))
        for e in dead:
            self._emit({"event": "status", "who": self.engines[e].who, "status": "dead"})
        return ClusterStatus(True, tuple(rows))

    @contextmanager
    def client_traffic(self):
        """Count the bytes and messages this client receives inside the ``with`` block.

        Yields a dict with ``bytes`` and ``messages``; shows that payloads travel over MPI-Q
        and never through the client (or the controller, which relays everything the client gets).
        """
        session = self.client.session
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

    # ------------------------------------------------------------------ operations
    def run(
        self,
        code: str,
        targets: str | Sequence[int] = "all",
        *,
        timeout: float | None = None,
        stream: bool = False,
        progress: ProgressCallback | None = None,
    ) -> RunResult:
        """Run ``code`` SPMD on those engines (``hc`` is defined there), like ``%%px``."""
        timeout = self._timeout(timeout)
        ids = self._live("run", self._ids(targets))
        ar = self.view(ids).execute(code, silent=False, block=False)
        split = dict(zip(ids, ar.split())) if len(ids) > 1 else {ids[0]: ar}
        if stream:
            with _stream_without_tracebacks(ar):
                out = self._collect("run", split, timeout, progress, interrupt=True)
                _wait_for_output(split, out.values)
        else:
            out = self._collect("run", split, timeout, progress, interrupt=True)
            _wait_for_output(split, out.values)
        result = RunResult(
            values={e: _execute_value(v) for e, v in out.values.items()},
            stdout={e: _single(split[e].stdout) for e in ids},
            stderr={e: _single(split[e].stderr) for e in ids},
            async_result=ar,
        )
        if out.failures:
            raise _error(f"The cell failed on {len(_named(out))} of {len(ids)} engine(s).", out, partial=result)
        return result

    def scatter(
        self,
        code: str | None = None,
        *,
        circuits: Any = None,
        var: str = "circuits",
        send_q: Sequence[Sequence[int]] | None = None,
        shots: int = 1024,
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
    ) -> ScatterResult:
        """Run ``code`` on classical rank 0 (or take ``circuits``), compile each circuit for its
        monitor's device there, send the payloads over MPI-Q, execute, collect the results.

        Circuit ``i`` runs on qrank ``i % Q``; with ``send_q`` one circuit is split into one
        sub-circuit per qubit group first. Payloads never pass through this client.
        """
        return self._scatter("scatter", code, circuits, var, send_q, shots, timeout, progress)

    def bcast(
        self,
        code: str | None = None,
        *,
        circuit: Any = None,
        var: str = "circuit",
        shots: int = 1024,
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
    ) -> ScatterResult:
        """Run one circuit on every monitor (compiled on rank 0 for each device); results by qrank."""
        return self._scatter("bcast", code, circuit, var, None, shots, timeout, progress)

    def _scatter(self, mode, code, circuits, var, send_q, shots, timeout, progress) -> ScatterResult:
        timeout = self._timeout(timeout)
        _check_shots(shots)
        job = self._next_job()
        deadline = time.time() + max(timeout - _MARGIN, timeout / 2)
        root = self._ids("classical")[0]
        dead = set(self._dead_engines(range(self.size)))
        if root in dead:
            raise self._dead_error(mode, [root])
        dead_qranks = sorted(self.engines[e].qrank for e in dead if self.engines[e].role == "quantum")
        root_kwargs = dict(code=code, var=var, mode=mode, send_q=send_q, shots=shots, dead_qranks=dead_qranks)
        monitors = [i.engine for i in self.engines if i.role == "quantum" and i.engine not in dead]
        if circuits is None:
            # one request for all: serialised once, rank 0 and the monitors start together
            ids = [root, *monitors]
            ar = self.view(ids).apply_async(ops.scatter_task, job, deadline, root_kwargs)
            tasks = dict(zip(ids, ar.split()))
        else:  # client-side circuits go to rank 0 only
            tasks = {root: self._apply(root, ops.scatter_root, job, deadline=deadline, circuits=circuits, **root_kwargs)}
            tasks.update({e: self._apply(e, ops.scatter_monitor, job, deadline=deadline) for e in monitors})
        self._emit({"event": "scatter", "monitors": len(monitors), "job": job}, progress)
        seen: dict[int, int] = {}
        out = self._collect(mode, tasks, timeout, _track_executed(progress, seen))
        summary = out.values.get(root)
        if summary is not None:
            self._finish_events(summary, seen, job, progress)
        if summary is None:  # rank 0 failed or did not answer: nothing to keep
            raise _error(f"%%mpiq {mode} failed on classical rank 0; no circuit ran.", out)
        result = ScatterResult(
            results=summary["results"], missing=summary["missing"], errors=summary["errors"],
            payload_bytes=summary["payload_bytes"], compile_cache=summary["compile_cache"],
            timings=summary["timings"], job=job, stdout=tasks[root].stdout or "",
        )
        failures = self._scatter_failures(mode, result, summary, out)
        if failures:
            done = sum(r is not None and getattr(r, "error", None) is None for r in result.results)
            missing = ClusterTimeoutError if any(f.kind in ("timeout", "dead") for f in failures) else HybridClusterError
            err = missing(
                f"%%mpiq {mode}: {done} of {len(result.results)} circuit(s) returned a result; "
                "the results that did are kept.",
                failures,
                partial=result,
            )
            self._remember(err.failures)
            raise err
        return result

    def _finish_events(self, summary: dict, seen: Mapping[int, int], job: int, progress) -> None:
        """Emit the last ``executed`` event of each monitor (monitors skip them on short jobs), then ``gather``."""
        per_qrank: dict[int, list[Any]] = {}
        for index, result in enumerate(summary["results"]):
            q = summary.get("owners", {}).get(index)
            if q is not None:
                per_qrank.setdefault(q, []).append(result)
        for q, results in sorted(per_qrank.items()):
            done = sum(r is not None for r in results)
            if done and seen.get(q, 0) < done:
                last = [r for r in results if r is not None][-1]
                self._emit({
                    "event": "executed", "qrank": q, "done": done, "total": len(results),
                    "seconds": last.timings.get("execute"), "job": job,
                }, progress)
        self._emit({"event": "gather", "monitors": len(per_qrank), "job": job}, progress)

    def _dead_error(self, op: str, engines: Sequence[int]) -> ClusterTimeoutError:
        failures = [
            EngineFailure(
                e, op,
                f"{self.engines[e].label()} is dead (pid {self.engines[e].pid}); restart the cluster "
                "(%mpiq stop, then %mpiq start) to use it again.",
                "dead",
            )
            for e in engines
        ]
        self._remember(failures)
        return ClusterTimeoutError(f"{op} needs engine(s) {list(engines)}, which are dead.", failures)

    def _live(self, op: str, ids: Sequence[int]) -> list[int]:
        """``ids``, or a ClusterTimeoutError if one of them is dead (collectives need everyone)."""
        dead = self._dead_engines(ids)
        if dead:
            raise self._dead_error(op, dead)
        return list(ids)

    def _scatter_failures(self, mode: str, result: ScatterResult, summary: dict, out: _Outcome) -> list[EngineFailure]:
        by_qrank = {i.qrank: i for i in self.engines if i.role == "quantum"}
        missing_by_q: dict[int, list[int]] = {}
        for index, q in result.missing.items():
            missing_by_q.setdefault(q, []).append(index)
        failures: list[EngineFailure] = []
        dead = set(out.dead) | {by_qrank[q].engine for q in summary.get("dead_qranks", [])}
        for q, indices in sorted(missing_by_q.items()):
            info = by_qrank[q]
            if info.engine in dead:
                msg = f"{info.label()} died (pid {info.pid}); circuit(s) {indices} got no result."
                failures.append(EngineFailure(info.engine, mode, msg, "dead"))
            else:
                msg = f"{info.label()} did not answer in time; circuit(s) {indices} got no result."
                failures.append(EngineFailure(info.engine, mode, msg, "timeout"))
        named = {f.engine for f in failures}
        owners = summary.get("owners", {})
        for index, message in sorted(result.errors.items()):
            info = by_qrank.get(owners.get(index, index % max(self.quantum, 1)))
            failures.append(EngineFailure(info.engine if info else None, mode, f"circuit {index}: {message}"))
            named.add(info.engine if info else None)
        for f in out.failures:  # engine-level failures not already explained by a missing circuit
            if f.engine not in named:
                failures.append(f)
        return failures

    def gather(
        self,
        code: str | None = None,
        *,
        var: str = "result",
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
    ) -> list[Any]:
        """Run ``code`` on every monitor, then gather their ``var`` over MPI-Q to rank 0; list by qrank."""
        timeout = self._timeout(timeout)
        job = self._next_job()
        deadline = time.time() + max(timeout - _MARGIN, timeout / 2)
        ids = self._live("gather", self._ids("all"))
        tasks = {e: self._apply(e, ops.gather_op, job, code=code, var=var, deadline=deadline) for e in ids}
        out = self._collect("gather", tasks, timeout, progress)
        summary = out.values.get(self._ids("classical")[0])
        if out.failures or summary is None:
            raise _error(f"%%mpiq gather of '{var}' failed.", out, partial=summary and summary["values"])
        return summary["values"]

    def barrier(
        self,
        flag: str = "ALL",
        repeat: int = 1,
        *,
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
    ) -> BarrierRecords:
        """``repeat`` hybrid barriers (CC, QQ or ALL); one ``BarrierRecord`` dict per barrier."""
        flag = str(flag).upper()
        if flag not in BARRIER_FLAGS:
            raise ClusterUsageError(f"Unknown barrier flag {flag!r}; use one of {', '.join(BARRIER_FLAGS)}.")
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise ClusterUsageError(f"repeat must be a positive integer, got {repeat!r}.")
        if flag == "QQ" and self.quantum == 0:
            raise ClusterStateError("A QQ barrier needs quantum monitor engines; this cluster has none.")
        timeout = self._timeout(timeout)
        deadline = time.time() + max(timeout - _MARGIN, timeout / 2)
        ids = self._live("barrier", self._ids("all"))
        tasks = {e: self._apply(e, ops.barrier_op, flag, repeat, deadline=deadline) for e in ids}
        out = self._collect("barrier", tasks, timeout, progress)
        if out.failures:
            raise _error(f"The {flag} barrier failed.", out)
        reporter = self._ids("quantum")[0] if flag == "QQ" else 0
        return BarrierRecords(out.values[reporter])

    def ghz(
        self,
        qubits: int,
        *,
        nodes: int | None = None,
        blocks: int | None = None,
        shots: int = 1024,
        serial: bool = False,
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
    ):
        """The distributed GHZ pipeline (:func:`mpiq_magic.ghz.pipeline.run_ghz`) on this cluster.

        ``nodes`` monitors take blocks (qranks 0..nodes-1; default every monitor); ``blocks``
        defaults to ``nodes``. Returns the ``GHZResult``.
        """
        if isinstance(qubits, bool) or not isinstance(qubits, int) or qubits < 1:
            raise ClusterUsageError(f"The GHZ needs at least 1 qubit, got {qubits!r}.")
        if nodes is not None and not 1 <= nodes <= self.quantum:
            raise ClusterUsageError(
                f"--nodes {nodes} is more than the {self.quantum} quantum monitor engine(s) of this "
                f"cluster (or less than 1); start one with -q {nodes} or pass --nodes 1..{self.quantum}."
            )
        if self.quantum == 0:
            raise ClusterStateError("The GHZ pipeline needs quantum monitor engines; this cluster has none.")
        _check_shots(shots)
        timeout = self._timeout(timeout)
        deadline = time.time() + max(timeout - _MARGIN, timeout / 2)
        tasks = {
            e: self._apply(e, ops.ghz_op, qubits, blocks=blocks, shots=shots, serial=serial, deadline=deadline,
                           nodes=nodes)
            for e in self._live("ghz", self._ids("all"))
        }
        out = self._collect("ghz", tasks, timeout, progress)
        if out.failures:
            raise _error(f"The {qubits}-qubit GHZ run failed.", out)
        return out.values[0]

    # ------------------------------------------------------------------ plumbing
    def _require(self) -> None:
        if not self.running:
            raise ClusterStateError("The hybrid cluster is not running; call start() first.")

    def _timeout(self, timeout: float | None) -> float:
        self._require()
        if timeout is None:
            return self.timeout
        _check_timeout(timeout, "timeout")
        return float(timeout)

    def _next_job(self) -> int:
        self._job += 1
        return self._job

    def _ids(self, targets: str | Sequence[int]) -> list[int]:
        self._require()
        if isinstance(targets, str):
            if targets not in TARGETS:
                raise ClusterUsageError(f"Unknown targets {targets!r}; use one of {', '.join(TARGETS)} or a list of engine ids.")
            if targets == "all":
                return list(range(self.size))
            if targets == "classical":
                return list(range(self.classical))
            ids = list(range(self.classical, self.size))
            if not ids:
                raise ClusterStateError("This cluster has no quantum monitor engines.")
            return ids
        ids = [int(t) for t in targets]
        bad = [t for t in ids if not 0 <= t < self.size]
        if bad:
            raise ClusterUsageError(f"Engine id(s) {bad} do not exist; this cluster has engines 0..{self.size - 1}.")
        return ids

    def _apply(self, engine: int, fn: Callable, *args: Any, **kwargs: Any):
        return self._client[engine].apply_async(fn, *args, **kwargs)

    def _emit(self, event: Mapping[str, Any], extra: ProgressCallback | None = None) -> None:
        for cb in [*self.progress, *([extra] if extra else [])]:
            try:
                cb(event)
            except Exception:  # a broken display must not break the operation
                pass

    def _dead_engines(self, engines: Iterable[int]) -> list[int]:
        here = _node_id()
        registered = set(self._client.ids) if self._client is not None else set()
        dead = []
        for e in engines:
            if e >= len(self.engines):
                continue
            info = self.engines[e]
            if info.node == here:
                if not _alive(info.pid):
                    dead.append(e)
            elif e not in registered:
                dead.append(e)
        return dead

    def _collect(
        self,
        op: str,
        tasks: Mapping[int, Any],
        timeout: float,
        progress: ProgressCallback | None = None,
        interrupt: bool = False,
    ) -> _Outcome:
        """Wait for per-engine results until done, dead or ``timeout``; forward progress events."""
        from .events import collect_events

        deadline = time.monotonic() + timeout
        seen: dict[int, set] = {e: set() for e in tasks}  # event keys repeat across engines
        pending = dict(tasks)
        dead: list[int] = []

        def forward_events() -> None:
            for e, ar in tasks.items():
                for ev in collect_events(ar.data, seen[e]):
                    self._emit(ev, progress)

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
                if now >= next_check and self.engines:
                    next_check = now + 0.25
                    for e in self._dead_engines(pending):
                        pending.pop(e)
                        dead.append(e)
                        self._emit({"event": "status", "who": self.engines[e].who, "status": "dead"}, progress)
                    if not pending:
                        return
                next(iter(pending.values())).wait(POLL_SECONDS)

        try:
            wait()
        except KeyboardInterrupt:
            if interrupt:  # like %%px: pass the interrupt on to the engines
                self._interrupt({e: tasks[e] for e in pending}, grace=2.0)
            raise
        _wait_for_output(tasks, [e for e in tasks if e not in pending and e not in dead], timeout=1.0)
        forward_events()  # events published just before each answer
        values: dict[int, Any] = {}
        failures: list[EngineFailure] = []
        for e, ar in tasks.items():
            if e in pending or e in dead:
                continue
            try:
                values[e] = ar.get(timeout=0)
            except Exception as exc:  # noqa: BLE001 - each engine's error becomes one line
                failures.extend(_failures_of(e, op, exc))
        unanswered = sorted(pending)
        late_dead = self._dead_engines(unanswered) if unanswered and self.engines else []
        for e in sorted(set(dead) | set(late_dead)):
            info = self.engines[e]
            failures.append(EngineFailure(e, op, f"{info.label()} died (pid {info.pid}) before answering.", "dead"))
        alive_unanswered = [e for e in unanswered if e not in late_dead]
        for e in alive_unanswered:
            label = self.engines[e].label() if e < len(self.engines) else f"engine {e}"
            failures.append(EngineFailure(e, op, f"{label} did not answer within {timeout:g} s.", "timeout"))
        if interrupt and alive_unanswered:
            self._interrupt({e: tasks[e] for e in alive_unanswered})
        self._remember(failures)
        return _Outcome(values, failures, unanswered, sorted(set(dead) | set(late_dead)))

    def _interrupt(self, stuck: Mapping[int, Any], grace: float = 5.0) -> None:
        """SIGINT the engines still running a cell, and wait (briefly) until they are free again.

        Waiting matters: an interrupted cell makes the engine drop requests already queued
        behind it, so the next operation must not be sent before the interrupt has landed.
        """
        try:
            self._client.send_signal(signal.SIGINT, targets=list(stuck), block=False)
        except Exception:
            return
        end = time.monotonic() + grace
        for ar in stuck.values():
            ar.wait(max(end - time.monotonic(), 0.0))

    def _remember(self, failures: Iterable[EngineFailure]) -> None:
        for f in failures:
            if f.engine is not None:
                self._last_error[f.engine] = f.line()


# ----------------------------------------------------------------------------- helpers
def _check_timeout(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ClusterUsageError(f"{name} must be a positive number of seconds, got {value!r}.")


def _check_shots(shots: Any) -> None:
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ClusterUsageError(f"shots must be a positive integer, got {shots!r}.")


def _named(out: _Outcome) -> set:
    return {f.engine for f in out.failures}


def _error(summary: str, out: _Outcome, partial: Any = None) -> HybridClusterError:
    cls = ClusterTimeoutError if any(f.kind in ("timeout", "dead") for f in out.failures) else HybridClusterError
    return cls(summary, out.failures, partial=partial)


def _failures_of(engine: int, op: str, exc: BaseException) -> list[EngineFailure]:
    from ipyparallel.error import CompositeError, RemoteError

    if isinstance(exc, CompositeError):
        return [EngineFailure(engine, op, f"{en}: {ev}", traceback=tb) for en, ev, tb, _ in exc.elist]
    if isinstance(exc, RemoteError):
        if exc.ename == "EngineError":
            return [EngineFailure(engine, op, f"the engine died: {exc.evalue}", "dead", exc.traceback)]
        return [EngineFailure(engine, op, f"{exc.ename}: {exc.evalue}", traceback=exc.traceback)]
    return [EngineFailure(engine, op, f"{type(exc).__name__}: {exc}")]


@contextmanager
def _stream_without_tracebacks(ar):
    """ipyparallel's live output of ``ar`` (``[stdout:N] ...``), minus the error tracebacks:
    errors are reported once, as ``[rank:run]`` lines, when the cell ends."""
    show = ar._iopub_streaming_output_callback

    def callback(eid, msg_future, msg):
        if msg["header"]["msg_type"] != "error":
            show(eid, msg_future, msg)

    ar._iopub_streaming_output_callback = callback  # looked up when stream_output() subscribes
    try:
        with ar.stream_output():
            yield
    finally:
        del ar._iopub_streaming_output_callback


def _wait_for_output(split: Mapping[int, Any], answered: Mapping[int, Any], timeout: float = 2.0) -> None:
    """Let the answered engines' last output (stdout, Out[...]) arrive before it is read."""
    end = time.monotonic() + timeout
    for e in answered:
        try:
            split[e].wait_for_output(max(end - time.monotonic(), 0.01))
        except Exception:
            pass


def _track_executed(progress, seen: dict[int, int]) -> ProgressCallback:
    """A progress callback that also records how far each monitor's ``executed`` events got."""

    def callback(event: Mapping[str, Any]) -> None:
        if event.get("event") == "executed" and isinstance(event.get("qrank"), int):
            seen[event["qrank"]] = max(seen.get(event["qrank"], 0), int(event.get("done") or 0))
        if progress is not None:
            progress(event)

    return callback


def _frame_size(frame: Any) -> int:
    try:
        return memoryview(frame.buffer if hasattr(frame, "buffer") else frame).nbytes
    except TypeError:
        return len(frame)


def _single(value: Any) -> Any:
    """The one element of a one-engine result list."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def _execute_value(value: Any) -> Any:
    """The execute_result of an ``execute`` reply, as text (what ``%%px`` shows as Out[...])."""
    value = _single(value)
    data = getattr(value, "data", None)
    if isinstance(data, Mapping):
        return data.get("text/plain")
    return value


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _kill_if_same(pid: int, created: float) -> None:
    """SIGKILL ``pid`` only if it is still the process we started (same creation time)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - created) < 1e-3 and proc.status() != psutil.STATUS_ZOMBIE:
            proc.kill()
    except psutil.Error:
        pass


def _stop_all_at_exit() -> None:
    for cluster in list(_live_clusters):
        try:
            cluster.stop()
        except Exception:
            pass


_atexit_registered = False


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_stop_all_at_exit)
        _atexit_registered = True
