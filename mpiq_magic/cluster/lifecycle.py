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
:class:`~mpiq_magic.errors.HybridClusterError` with ``[rank:operation] message`` lines. Each
operation lives in its own module (client side, engine side and typed reply together:
``scatter``, ``gather``, ``barrier``, ``ghz``, ``run``, ``status``); the methods here delegate.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..errors import ClusterStateError, ClusterTimeoutError, ClusterUsageError, EngineFailure, HybridClusterError
from ..events import ProgressCallback
from ..kernel.errors import ConfigError
from ..kernel.hosts import interface_address, node_id
from . import barrier as _barrier
from . import distribute as _distribute
from . import engine as _engine
from . import gather as _gather
from . import ipp as _ipp
from . import launchers as _launchers
from . import ghz as _ghz
from . import primitives as _primitives
from . import processes as _proc
from . import run as _run
from . import scatter as _scatter
from . import status as _status
from .collect import Outcome, check_timeout, cluster_error, collect

LAUNCHERS = ("mpi", "slurm")  # ``launcher=``; ``engine_launcher=`` takes a configured launcher
TARGETS = ("classical", "quantum", "all")
#: Engine-side work ends this much before the client's timeout, so its answer arrives in time.
_MARGIN = 0.5


# ----------------------------------------------------------------------------- the cluster
class HybridCluster:
    """An ipyparallel cluster whose engines form one MPI-Q hybrid communicator.

    ``classical``/``quantum``: number of classical ranks and quantum monitor engines.
    ``devices``: devices TOML file or list of ``DeviceSpec`` (default: ``quantum`` local
    devices). ``timeout``: default timeout of every operation, seconds. ``start_timeout``:
    how long :meth:`start` waits for the engines. ``engine_launcher``: how the engines start
    (:mod:`mpiq_magic.cluster.launchers`: ``"mpi"``/``LocalMPI()``, the bundled mpiexec on this
    host, the default; ``SlurmEngines(partition=..., ...)`` or ``"slurm"``: a SLURM batch job,
    controller here). ``progress``: callbacks receiving every progress event (dicts, see
    :mod:`mpiq_magic.events`). ``interface``: the network interface every listener binds
    (controller, MPI netmods, QQ sockets; e.g. ``"eth0"`` for a multi-host cluster); default
    loopback.
    """

    def __init__(
        self,
        classical: int = 1,
        quantum: int = 2,
        *,
        devices: str | os.PathLike[str] | Sequence[Any] | None = None,
        timeout: float = 60.0,
        launcher: str = "mpi",
        engine_launcher: "_launchers.EngineLauncher | str | None" = None,
        start_timeout: float = 120.0,
        profile_dir: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        prewarm: bool = True,
        progress: Iterable[ProgressCallback] = (),
        log_level: int = logging.WARNING,
        interface: str | None = None,
    ):
        if isinstance(classical, bool) or not isinstance(classical, int) or classical < 1:
            raise ConfigError(f"A hybrid cluster needs at least one classical rank, got classical={classical!r}.")
        if isinstance(quantum, bool) or not isinstance(quantum, int) or quantum < 0:
            raise ConfigError(f"The number of quantum monitor engines must be >= 0, got quantum={quantum!r}.")
        if launcher not in LAUNCHERS:
            raise ConfigError(f"Unknown launcher {launcher!r}; supported launchers: {', '.join(LAUNCHERS)}.")
        self.engine_launcher = _launchers.engine_launcher(launcher if engine_launcher is None else engine_launcher)
        check_timeout(timeout, "timeout")
        check_timeout(start_timeout, "start_timeout")
        from ..kernel.config import resolve_devices

        if isinstance(devices, (str, os.PathLike)):
            devices = str(Path(devices).resolve())
        self.devices = resolve_devices(devices, quantum)  # ConfigError now, not on the engines
        self._devices_arg = devices
        self.classical = classical
        self.quantum = quantum
        self.timeout = float(timeout)
        self.launcher = self.engine_launcher.name
        self.start_timeout = float(start_timeout)
        self.env = dict(env or {})
        self.prewarm = prewarm
        self.progress: list[ProgressCallback] = list(progress)
        self.log_level = log_level
        self.interface = interface
        self.address = "127.0.0.1" if interface is None else interface_address(interface)  # ConfigError now
        self._profile_dir_arg = None if profile_dir is None else str(profile_dir)
        self._profile_dir: str | None = None
        self._ipp: Any = None
        self._client: Any = None
        self.engines: list[_engine.EngineInfo] = []
        self._topology: Any = None
        self._last_error: dict[int, str] = {}
        self._warm: dict[int, Any] = {}
        self._job = 0
        self._owned_pids: dict[int, float] = {}
        self._watchdog: Any = None
        self._controller_pid: int | None = None
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
        """Start the controller and the MPI engines, check engine id == rank, run ``kernel.init``.

        Raises:
            ClusterStateError: the cluster is already running.
            ClusterTimeoutError: not every engine registered within ``start_timeout``.
            HybridClusterError: mpiexec exited early, or ``kernel.init`` failed on an engine;
                every process started so far is stopped.
        """
        if self.running:
            raise ClusterStateError(f"{self!r} is already running; stop it first.")
        t0 = time.perf_counter()
        _proc.register(self)
        try:
            from ..watchdog import Watchdog

            self._watchdog = Watchdog()  # kills what this start creates if this process dies
            self._start_ipp()
            self._check_ranks()
            self._init_engines()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - t0
        self._emit({"event": "topology", "topology": self._topology.to_dict()})
        if self.prewarm:
            self._warm = {e: self._apply(e, _engine.prewarm) for e in self._ids("all")}
        return self

    def _start_ipp(self) -> None:
        _ipp.start(self)

    @property
    def job_id(self) -> str | None:
        """The SLURM job id of the engines (``SlurmEngines``; None otherwise or before the start)."""
        return self.engine_launcher.job_id(self._ipp) if self._ipp is not None else None

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
            e: self._apply(e, _engine.init_engine, self.classical, self._devices_arg, self.timeout)
            for e in range(self.size)
        }
        out = self._collect("start", ars, self.start_timeout)
        if out.failures:
            raise cluster_error("The hybrid communicator could not be initialised on the engines.", out)
        self.engines = [info for _, info in sorted(out.values.items())]
        # every process of the cluster, by PID and creation time: controller (and its
        # schedulers), mpiexec, proxies, engines; stop() kills whatever is left of them
        self._owned_pids = _proc.tree([p for p in (self._controller_pid, getattr(self._ipp.engine_set, "pid", None)) if p])
        for info in self.engines:
            for pid in (info.pid, info.ppid):
                created = _proc.create_time(pid) if info.node == node_id() else None
                if created is not None:
                    self._owned_pids[pid] = created
        self._topology = self._apply(0, _engine.topology).get(timeout=self.start_timeout)

    def wait_ready(self, timeout: float | None = None) -> float:
        """Wait until the engines have imported qiskit and the simulators; returns the seconds it took."""
        t0 = time.perf_counter()
        if self._warm:
            out = self._collect("prewarm", self._warm, timeout or self.start_timeout)
            self._warm = {}
            if out.failures:
                raise cluster_error("Preparing the engines failed.", out)
        return time.perf_counter() - t0

    def stop(self) -> None:
        """Stop engines and controller; kill (by PID) every process left over. Idempotent.

        Works with a dead controller too: what did not stop gracefully is killed by PID (the
        recorded processes and, through the watchdog, everything they started).
        """
        _proc.live_clusters.discard(self)
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close(linger=0)
            except Exception:
                pass
        if self._ipp is not None:
            ipp_cluster, self._ipp = self._ipp, None
            _ipp.stop(ipp_cluster, self.log_level, self.engine_launcher)
        for pid, created in self._owned_pids.items():
            _proc.kill_if_same(pid, created)
        self._owned_pids = {}
        self._warm = {}
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.reap()  # whatever the controller or mpiexec started and left behind
        if self._profile_dir and self._profile_dir_arg is None:
            shutil.rmtree(self._profile_dir, ignore_errors=True)
        self._profile_dir = None
        self._controller_pid = None

    @property
    def controller_alive(self) -> bool:
        """Whether the ipyparallel controller process is still there."""
        return self._controller_pid is None or _proc.alive(self._controller_pid)

    def _check_controller(self) -> None:
        if not self.controller_alive:
            raise ClusterStateError(
                f"The ipyparallel controller (pid {self._controller_pid}) is dead, so no engine can be "
                "reached; stop the cluster (%mpiq stop, or cluster.stop()) and start a new one."
            )

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

    def status(self) -> _status.ClusterStatus:
        """Roles, devices, busy/idle/dead and the last error of every engine."""
        return _status.status(self)

    def client_traffic(self):
        """Count the bytes and messages this client receives inside a ``with`` block (a dict with
        ``bytes`` and ``messages``): payloads travel over MPI-Q, never through the client."""
        return _ipp.client_traffic(self.client)

    # ------------------------------------------------------------------ operations
    def run(
        self,
        code: str,
        targets: str | Sequence[int] = "all",
        *,
        timeout: float | None = None,
        stream: bool = False,
        progress: ProgressCallback | None = None,
    ) -> _run.RunResult:
        """Run ``code`` SPMD on those engines (``hc`` is defined there), like ``%%px``.

        Raises:
            HybridClusterError: the cell failed on some engine (``partial`` keeps the rest).
        """
        return _run.run(self, code, targets, timeout, stream, progress)

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
        failover: bool = True,
    ) -> _scatter.ScatterResult:
        """Run ``code`` on classical rank 0 (or take ``circuits``), compile each circuit for its
        monitor's device there, send the payloads over MPI-Q, execute, collect the results.

        Circuits are dealt over the live monitors, least-loaded first (circuit ``i`` runs on
        qrank ``i % Q`` for equal devices); with ``send_q`` one circuit is split into one
        sub-circuit per qubit group first. Payloads never pass through this client. With
        ``failover`` a monitor that dies mid-run has its circuits re-run on survivors that fit;
        the result's ``notices`` and ``failed_over`` report it (``send_q`` pieces stay pinned).

        Raises:
            HybridClusterError: a circuit failed or got no result (``partial`` keeps the rest).
        """
        request = _scatter.ScatterRequest(code, var, "scatter", send_q, shots, circuits=circuits, failover=failover)
        return _scatter.scatter(self, request, timeout, progress)

    def bcast(
        self,
        code: str | None = None,
        *,
        circuit: Any = None,
        var: str = "circuit",
        shots: int = 1024,
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
    ) -> _scatter.ScatterResult:
        """Run one circuit on every monitor (compiled on rank 0 for each device); results by qrank."""
        request = _scatter.ScatterRequest(code, var, "bcast", None, shots, circuits=circuit)
        return _scatter.scatter(self, request, timeout, progress)

    def gather(
        self,
        code: str | None = None,
        *,
        var: str = "result",
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
    ) -> list[Any]:
        """Run ``code`` on every monitor, then gather their ``var`` over MPI-Q to rank 0; list by qrank.

        Raises:
            HybridClusterError: the cell failed on a monitor (``partial``: the values gathered).
            ClusterTimeoutError: an engine is dead or did not answer within ``timeout``.
        """
        return _gather.gather(self, code, var, timeout, progress)

    def barrier(
        self,
        flag: str = "ALL",
        repeat: int = 1,
        *,
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
    ) -> _barrier.BarrierRecords:
        """``repeat`` hybrid barriers (CC, QQ or ALL); one ``BarrierRecord`` dict per barrier.

        Raises:
            ClusterUsageError: unknown flag or a bad ``repeat``.
            ClusterTimeoutError: an engine is dead or did not arrive within ``timeout``.
        """
        if getattr(self, "attached", None) is not None:  # %mpiq attach: a collective of both jobs
            from . import attach as _attach

            return _attach.barrier(self, flag, repeat, timeout, progress)
        return _barrier.barrier(self, flag, repeat, timeout, progress)

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

        Raises:
            ClusterUsageError: bad ``qubits``, ``nodes`` or ``shots``.
            HybridClusterError: the run failed (the lines name the monitors and stages).
        """
        if getattr(self, "attached", None) is not None:  # %mpiq attach: a collective of both jobs
            from . import attach as _attach

            return _attach.ghz(self, qubits, nodes=nodes, blocks=blocks, shots=shots, serial=serial,
                               timeout=timeout, progress=progress)
        return _ghz.ghz(self, qubits, nodes=nodes, blocks=blocks, shots=shots, serial=serial,
                        timeout=timeout, progress=progress)

    def distribute(self, circuit, *, shots: int = 1024, partition=None, monitors: int | None = None,
                   max_variants: int = 16, optimization_level: int = 1, timeout: float | None = None,
                   progress: ProgressCallback | None = None, observables=None,
                   max_overhead: float | None = 1000.0, mode: str = "auto", batches: int = 10):
        """Run ``circuit`` across the monitors (:func:`mpiq_magic.distribute.execute.distribute`):
        exact feed-forward cuts, returning the ``DistributeResult``; with ``observables``, where
        feed-forward does not apply (``mode="auto"``) or ``mode="qpd"``, quasi-probability cuts
        returning a ``QPDResult`` (refused above ``max_overhead``).

        Raises:
            ClusterUsageError: not a circuit, bad ``monitors`` or ``shots``.
            HybridClusterError: the run failed or was refused (e.g. a cut that is not feed-forward
                and no observables, or an overhead above ``max_overhead``).
        """
        return _distribute.distribute(self, circuit, shots=shots, partition=partition, monitors=monitors,
                                      max_variants=max_variants, optimization_level=optimization_level,
                                      timeout=timeout, progress=progress, observables=observables,
                                      max_overhead=max_overhead, mode=mode, batches=batches)

    def sampler(self, **options: Any):
        """A Qiskit ``SamplerV2`` on this cluster (:class:`mpiq_magic.primitives.SamplerV2`)."""
        return _primitives.sampler(self, **options)

    def estimator(self, **options: Any):
        """A Qiskit ``EstimatorV2`` on this cluster (:class:`mpiq_magic.primitives.EstimatorV2`)."""
        return _primitives.estimator(self, **options)

    # ------------------------------------------------------------------ plumbing
    def _require(self) -> None:
        if not self.running:
            raise ClusterStateError("The hybrid cluster is not running; call start() first.")

    def _timeout(self, timeout: float | None) -> float:
        self._require()
        self._check_controller()
        if timeout is None:
            return self.timeout
        check_timeout(timeout, "timeout")
        return float(timeout)

    def _engine_deadline(self, timeout: float) -> float:
        """The wall-clock instant engine-side work must end by, so its answer arrives in time."""
        return time.time() + max(timeout - _MARGIN, timeout / 2)

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
        here = node_id()
        registered = set(self._client.ids) if self._client is not None else set()
        dead = []
        for e in engines:
            if e >= len(self.engines):
                continue
            info = self.engines[e]
            if info.node == here:
                if not _proc.alive(info.pid):
                    dead.append(e)
            elif e not in registered:
                dead.append(e)
        return dead

    def _collect(self, op: str, tasks: Mapping[int, Any], timeout: float, *args: Any, **kwargs: Any) -> Outcome:
        """See :func:`mpiq_magic.cluster.collect.collect`. A scatter/bcast past its timeout is
        interrupted on the engines, so it does not keep rank 0 busy and silently delay the next
        operation by the remainder."""
        if op in ("scatter", "bcast") and len(args) < 2:
            kwargs.setdefault("interrupt", True)
        return collect(self, op, tasks, timeout, *args, **kwargs)

    def _remember(self, failures: Iterable[EngineFailure]) -> None:
        for f in failures:
            if f.engine is not None:
                self._last_error[f.engine] = f.line()
