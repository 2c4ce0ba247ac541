"""How a :class:`~mpiq_magic.cluster.HybridCluster` starts its engines (``engine_launcher=``).

The controller always runs here; the engines are one MPI job, so they share one
``COMM_WORLD`` and engine id == MPI rank wherever they run:

* :class:`LocalMPI` (the default, ``"mpi"``): ipyparallel's MPI launcher over the bundled
  ``mpiexec`` on this host, every listener on loopback.
* :class:`SlurmEngines` (``"slurm"``): ipyparallel's ``SlurmEngineSetLauncher`` — ``sbatch``
  submits a batch job whose script starts the engines with ``srun --mpi=pmi2`` over its tasks
  (or the bundled ``mpiexec`` in one task: ``launch="mpiexec"``). With ``quantum_partition`` the
  job is heterogeneous: classical engines on ``partition``, monitors on ``quantum_partition``, one
  ``srun ... : ...`` over both groups (classical ranks first, as ``kernel.init`` expects). Stopping
  the cluster ``scancel`` s the job and waits until ``squeue`` no longer lists it.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..kernel.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .lifecycle import HybridCluster


class EngineLauncher(ABC):
    """Configures ipyparallel for one way of starting the engines (see the module docstring)."""

    name = ""

    @abstractmethod
    def configure(self, cluster: "HybridCluster", cfg: Any) -> dict[str, Any]:
        """Fill ``cfg`` (a traitlets ``Config``); return ``ipyparallel.Cluster`` keyword arguments."""

    def ended(self, ipp_cluster: Any) -> str | None:
        """Why the engines' job ended before every engine registered (None while it may still come)."""
        engine_set = getattr(ipp_cluster, "engine_set", None)
        if engine_set is not None and getattr(engine_set, "state", "") == "after":
            return f"mpiexec exited before all engines registered; its output:\n{engine_set.get_output()[-2000:]}"
        return None

    def waiting(self, ipp_cluster: Any) -> str:
        """What the engines may be waiting for (added to the start timeout's sentence)."""
        return ""

    def stopped(self, job: str | None) -> None:
        """After ipyparallel stopped the engines of ``job`` (:meth:`job_id` before the stop): wait
        until they are really gone (bounded)."""

    def job_id(self, ipp_cluster: Any) -> str | None:
        return None

    def describe(self) -> str:
        return self.name


@dataclass(frozen=True)
class LocalMPI(EngineLauncher):
    """The engines under the bundled ``mpiexec`` on this host (see the module docstring)."""

    name = "mpi"

    def configure(self, cluster: "HybridCluster", cfg: Any) -> dict[str, Any]:
        from ..launch import local_mpiexec, network_env
        from . import processes as _proc

        launcher = cfg.MPIEngineSetLauncher
        mpiexec, mpi_args = local_mpiexec(survive_rank_death=True, interface=cluster.interface)
        launcher.mpi_cmd = [mpiexec]
        launcher.mpi_args = mpi_args
        launcher.engine_cmd = _proc.engine_command()
        # every listener on loopback, or on the interface the cluster names (MPI netmod and QQ
        # sockets here, controller below)
        launcher.environment = {
            "PYTHONUNBUFFERED": "1", "MPIQ_CLASSICAL": str(cluster.classical), **network_env(cluster.interface),
            **cluster.env,
        }
        launcher.stop_seconds_until_kill = 2
        return {"engines": "mpi", "controller_ip": cluster.address}

    def describe(self) -> str:
        return "the bundled mpiexec on this host"


_TEMPLATE = """#!/bin/sh
#SBATCH --export=ALL
#SBATCH --job-name={job_name}-{{cluster_id}}
#SBATCH --output={{output_file}}
{directives}
export PYTHONUNBUFFERED=1 MPIQ_CLASSICAL={classical}{env}
{launch}
"""


@dataclass(frozen=True)
class SlurmEngines(EngineLauncher):
    """The engines as a SLURM batch job (see the module docstring).

    ``partition``: where the engines (with ``quantum_partition``: the classical engines) run;
    ``quantum_partition``: the monitors' partition (a heterogeneous job); ``time``, ``account``,
    ``qos``: the job's ``--time`` etc.; ``extra``: more ``#SBATCH`` lines; ``launch``: ``"srun"``
    (``srun --mpi=MPI`` over the job's tasks) or ``"mpiexec"`` (the bundled ``mpiexec`` in one task
    of ``C + Q`` CPUs; not with ``quantum_partition``); ``mpi``: srun's ``--mpi`` plugin (``pmi2``
    for the ``mpich`` wheel); ``controller_ip``: where the controller listens for the engines
    (``*``: every interface — the engines may run on other nodes); ``stop_wait``: how long
    stopping waits for ``squeue`` to drop the job.
    """

    partition: str | None = None
    quantum_partition: str | None = None
    time: str | None = None
    account: str | None = None
    qos: str | None = None
    extra: tuple[str, ...] = ()
    launch: str = "srun"
    mpi: str = "pmi2"
    controller_ip: str = "*"
    job_name: str = "mpiq-engines"
    stop_wait: float = 30.0
    _checked: dict = field(default_factory=dict, compare=False, repr=False)

    name = "slurm"

    def __post_init__(self) -> None:
        if self.launch not in ("srun", "mpiexec"):
            raise ConfigError(f"SlurmEngines.launch is 'srun' or 'mpiexec', got {self.launch!r}.")
        if self.launch == "mpiexec" and self.quantum_partition:
            raise ConfigError("A heterogeneous engine job (quantum_partition=) is started with srun, not mpiexec.")
        for key in ("partition", "quantum_partition", "time", "account", "qos"):
            value = getattr(self, key)
            if value is not None and (not str(value) or any(c.isspace() for c in str(value))):
                raise ConfigError(f"SlurmEngines.{key} must be one word without spaces, got {value!r}.")

    def describe(self) -> str:
        where = f"partition '{self.partition}'" if self.partition else "the default partition"
        if self.quantum_partition:
            where = f"{where} (classical) and '{self.quantum_partition}' (monitors)"
        return f"a SLURM job on {where}"

    def script(self, cluster: "HybridCluster") -> str:
        """The batch template (ipyparallel fills ``{cluster_id}``, ``{output_file}``,
        ``{program_and_args}``)."""
        from ..launch import mpiexec_path

        def part(name: str | None) -> str:
            return f" --partition={name}" if name else ""

        common = [f"#SBATCH --{k}={getattr(self, k)}" for k in ("time", "account", "qos") if getattr(self, k)]
        engine = "{program_and_args} --mpi"
        if self.quantum_partition:
            directives = [f"#SBATCH{part(self.partition)} --ntasks={cluster.classical}", *common, "#SBATCH hetjob",
                          f"#SBATCH{part(self.quantum_partition)} --ntasks={cluster.quantum}"]
            launch = f"srun -u --mpi={self.mpi} {engine} : {engine}"
        elif self.launch == "srun":
            directives = [f"#SBATCH{part(self.partition)} --ntasks={cluster.size}", *common]
            launch = f"srun -u --mpi={self.mpi} {engine}"
        else:
            directives = [f"#SBATCH{part(self.partition)} --ntasks=1 --cpus-per-task={cluster.size}", *common]
            launch = f"exec {shlex.quote(mpiexec_path())} -n {cluster.size} -disable-auto-cleanup {engine}"
        directives += [str(line).replace("{", "{{").replace("}", "}}") for line in self.extra]
        from ..launch import network_env

        named = network_env(cluster.interface) if cluster.interface else {}  # the cluster interface, if named
        env = "".join(f" {k}={shlex.quote(str(v))}" for k, v in {**named, **cluster.env}.items())
        return _TEMPLATE.format(job_name=self.job_name, directives="\n".join(directives),
                                classical=cluster.classical, env=env.replace("{", "{{").replace("}", "}}"),
                                launch=launch)

    def configure(self, cluster: "HybridCluster", cfg: Any) -> dict[str, Any]:
        from . import processes as _proc

        launcher = cfg.SlurmEngineSetLauncher
        launcher.engine_cmd = _proc.engine_command()
        launcher.batch_file_name = f"{cluster._profile_dir}/slurm_engine.sbatch"  # not in the caller's cwd
        launcher.batch_template = self.script(cluster)
        return {"engines": "slurm", "controller_ip": cluster.address if cluster.interface else self.controller_ip}

    def job_id(self, ipp_cluster: Any) -> str | None:
        return getattr(getattr(ipp_cluster, "engine_set", None), "job_id", None) or None

    def _state(self, job: str) -> str:
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=30)
        return out.stdout.split()[0] if out.returncode == 0 and out.stdout.split() else ""

    def ended(self, ipp_cluster: Any) -> str | None:
        job = self.job_id(ipp_cluster)
        if not job:
            return None
        now = time.monotonic()
        if now - self._checked.get(job, 0.0) < 1.0:  # squeue at most once a second
            return None
        self._checked[job] = now
        state = self._state(job)
        if state in ("", "COMPLETED", "COMPLETING", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                     "BOOT_FAIL", "DEADLINE", "PREEMPTED"):
            output = ""
            engine_set = getattr(ipp_cluster, "engine_set", None)
            if engine_set is not None:
                try:
                    output = engine_set.get_output(remove=False)[-2000:]
                except OSError:
                    pass
            return (f"SLURM job {job} ended ({state or 'no longer queued'}) before every engine registered"
                    + (f"; its output:\n{output}" if output else "."))
        return None

    def waiting(self, ipp_cluster: Any) -> str:
        job = self.job_id(ipp_cluster)
        if not job:
            return " (the SLURM job was not submitted)"
        state = self._state(job)
        return f" (SLURM job {job}: {state or 'gone'}; it is cancelled)"

    def stopped(self, job: str | None) -> None:
        if not job:
            return
        deadline = time.monotonic() + self.stop_wait
        while self._state(job) and time.monotonic() < deadline:
            time.sleep(0.25)


def engine_launcher(value: "EngineLauncher | str | None") -> EngineLauncher:
    """``value`` as an :class:`EngineLauncher` (``None``/``"mpi"``: :class:`LocalMPI`; ``"slurm"``:
    :class:`SlurmEngines` with the default partition).

    Raises:
        ConfigError: anything else.
    """
    if value is None or value == "mpi":
        return LocalMPI()
    if value == "slurm":
        return SlurmEngines()
    if isinstance(value, EngineLauncher):
        return value
    raise ConfigError(f"Unknown engine launcher {value!r}; use 'mpi', 'slurm', LocalMPI() or SlurmEngines(...).")
