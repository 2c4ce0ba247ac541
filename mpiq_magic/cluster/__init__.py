"""The hybrid cluster: ipyparallel engines that are the ranks of one MPI-Q job.

:class:`HybridCluster` (``lifecycle``) owns the cluster; each operation lives in its own module
with its client side, engine side and typed reply: ``scatter`` (also bcast), ``gather``,
``barrier``, ``ghz``, ``run``, ``status``. ``engine`` is the engines' state, ``collect`` waits
for their answers, ``processes`` owns the OS processes.
"""

from .barrier import BarrierRecords
from .engine import EngineInfo
from .lifecycle import HybridCluster
from .processes import engine_command
from .run import RunResult
from .scatter import ScatterResult
from .status import ClusterStatus, EngineStatus

__all__ = [
    "HybridCluster", "EngineInfo", "EngineStatus", "ClusterStatus", "ScatterResult",
    "BarrierRecords", "RunResult", "engine_command",
]
