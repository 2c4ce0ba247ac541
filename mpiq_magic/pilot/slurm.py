"""A pilot inside a SLURM placeholder job: the controller runs here, the engines in a batch job.

:class:`SlurmHybridCluster` is a :class:`~mpiq_magic.cluster.HybridCluster` whose engines are
started by ipyparallel's ``SlurmEngineSetLauncher``: ``sbatch`` submits a placeholder job (one
task of ``C + Q`` CPUs on the ``partition``) whose script runs the bundled ``mpiexec`` over the
engines, so they share one ``COMM_WORLD`` and engine id == MPI rank as in a local cluster.
Everything after the engines registered (rank check, ``kernel.init``, the pilot's standing
monitors) is the local cluster's code. Stopping the cluster ``scancel`` s the job.

The placeholder job is :class:`~mpiq_magic.cluster.launchers.SlurmEngines` with
``launch="mpiexec"`` (HybridCluster's ``engine_launcher=`` option).
"""

from __future__ import annotations

from typing import Any

from ..cluster import HybridCluster
from ..cluster.launchers import SlurmEngines


class SlurmHybridCluster(HybridCluster):
    """A HybridCluster whose engines run in a SLURM batch job (see the module docstring).

    ``slurm``: ``partition``, ``time``, ``account``, ``qos``, ``extra`` (more ``#SBATCH`` lines).
    """

    def __init__(self, classical: int, quantum: int, *, slurm: dict | None = None, **options: Any):
        s = dict(slurm or {})
        launcher = SlurmEngines(
            partition=s.get("partition"), time=None if s.get("time") is None else str(s["time"]),
            account=s.get("account"), qos=s.get("qos"), extra=tuple(str(x) for x in s.get("extra", ())),
            launch="mpiexec", job_name="mpiq-pilot",
        )
        super().__init__(classical, quantum, engine_launcher=launcher, **options)
        self.slurm = s

    @property
    def job_output(self) -> str | None:
        """The placeholder job's output file (None before it is submitted)."""
        engine_set = getattr(self._ipp, "engine_set", None)
        return getattr(engine_set, "output_file", None)
