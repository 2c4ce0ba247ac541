"""A pilot inside a SLURM placeholder job: the controller runs here, the engines in a batch job.

:class:`SlurmHybridCluster` is a :class:`~mpiq_magic.cluster.HybridCluster` whose engines are
started by ipyparallel's ``SlurmEngineSetLauncher``: ``sbatch`` submits a placeholder job (one
task of ``C + Q`` CPUs on the ``partition``) whose script runs the bundled ``mpiexec`` over the
engines, so they share one ``COMM_WORLD`` and engine id == MPI rank as in a local cluster.
Everything after the engines registered (rank check, ``kernel.init``, the pilot's standing
monitors) is the local cluster's code. Stopping the cluster ``scancel`` s the job.

Needs a hook in ``mpiq_magic/cluster``: HybridCluster only knows its MPI launcher, so this class
overrides its private ``_start_ipp``; an ``engine_launcher=`` option of HybridCluster would
replace the override.
"""

from __future__ import annotations

import shlex
import tempfile
import time
from typing import Any

from ..cluster import HybridCluster

TEMPLATE = """#!/bin/sh
#SBATCH --export=ALL
#SBATCH --job-name=mpiq-pilot-{{cluster_id}}
#SBATCH --ntasks=1
#SBATCH --cpus-per-task={n}
#SBATCH --output={output}
{directives}
export PYTHONUNBUFFERED=1 MPIQ_CLASSICAL={classical} {env}
exec {mpiexec} -n {{n}} -disable-auto-cleanup {{program_and_args}} --mpi
"""


class SlurmHybridCluster(HybridCluster):
    """A HybridCluster whose engines run in a SLURM batch job (see the module docstring).

    ``slurm``: ``partition``, ``time``, ``account``, ``qos``, ``extra`` (more ``#SBATCH`` lines).
    """

    def __init__(self, classical: int, quantum: int, *, slurm: dict | None = None, **options: Any):
        super().__init__(classical, quantum, **options)
        self.slurm = dict(slurm or {})
        self.job_output: str | None = None

    def _start_ipp(self) -> None:
        import ipyparallel as ipp
        from traitlets.config import Config

        from ..cluster import processes as _proc
        from ..errors import ClusterTimeoutError, HybridClusterError
        from ..launch import mpiexec_path

        self._profile_dir = self._profile_dir_arg or tempfile.mkdtemp(prefix="mpiq-pilot-slurm-")
        self.job_output = f"{self._profile_dir}/slurm-%j.out"
        s = self.slurm
        directives = [f"#SBATCH --partition={s['partition']}"] if s.get("partition") else []
        directives += [f"#SBATCH --time={s['time']}"] if s.get("time") else []
        directives += [f"#SBATCH --account={s['account']}"] if s.get("account") else []
        directives += [f"#SBATCH --qos={s['qos']}"] if s.get("qos") else []
        directives += [str(line) for line in s.get("extra", ())]
        env = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in self.env.items())
        cfg = Config()
        launcher = cfg.SlurmEngineSetLauncher
        launcher.engine_cmd = _proc.engine_command()
        launcher.batch_file_name = f"{self._profile_dir}/slurm_engine.sbatch"  # not in the caller's cwd
        launcher.batch_template = TEMPLATE.format(
            n=self.size, output=self.job_output, directives="\n".join(directives), classical=self.classical,
            env=env, mpiexec=mpiexec_path(),
        )
        cfg.LocalControllerLauncher.stop_seconds_until_kill = 2
        self._ipp = ipp.Cluster(
            engines="slurm", n=self.size, profile_dir=self._profile_dir, config=cfg, delay=0,
            controller_args=["--ping=1000", "--ip=*"], engine_timeout=int(self.start_timeout),
            log_level=self.log_level,
        )
        self._ipp.start_cluster_sync()
        client = self._ipp.connect_client_sync()
        self._client = client
        deadline = time.monotonic() + self.start_timeout
        while len(client.ids) < self.size:
            if time.monotonic() > deadline:
                job = getattr(self._ipp.engine_set, "job_id", None)
                raise ClusterTimeoutError(
                    f"Only {len(client.ids)} of {self.size} engines of SLURM job {job} registered within "
                    f"{self.start_timeout:g} s (queued, or failed: see {self.job_output}); the job is cancelled."
                )
            engine_set = self._ipp.engine_set
            if engine_set is not None and getattr(engine_set, "state", "") == "after":
                raise HybridClusterError(f"The SLURM placeholder job ended before the engines registered; see {self.job_output}.")
            time.sleep(0.1)

    @property
    def job_id(self) -> str | None:
        """The SLURM job id of the placeholder job (None before it is submitted)."""
        return getattr(getattr(self._ipp, "engine_set", None), "job_id", None)
