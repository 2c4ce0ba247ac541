"""Pilots and tasks on the hybrid cluster (Pilot-Quantum's resource, task and workload layers).

A :class:`Pilot` is a :class:`~mpiq_magic.cluster.HybridCluster` started from a
:class:`PilotDescription` (``local``: the bundled ``mpiexec``; ``slurm``: a placeholder batch
job). A :class:`PilotManager` holds several named pilots and takes tasks::

    from mpiq_magic.pilot import PilotManager, PilotDescription

    with PilotManager() as pm:
        pm.create_pilots([PilotDescription("wide", quantum=2, devices=wide),
                          PilotDescription("noisy", quantum=2, devices=noisy)])
        f = pm.submit_task(circuit, shots=100)              # placed by width, noise, queue
        g = pm.submit_task(lambda hc: hc.quantum_size, pilot="wide")
        print(f.result(), f.placement, g.result())
        pm.write_metrics("tasks.csv")

See docs/pilot.md.
"""

from .agent import TaskContext, context
from .description import PilotDescription, Resources
from .errors import NoPlacementError, PilotEngineLostError, PilotStateError, PilotStoppedError, PilotUsageError, RemoteTaskError
from .manager import PilotManager
from .pilot import Pilot
from .placement import Candidate, Demand, Placement, PlacementPolicy, ResourceAwarePolicy, estimated_error
from .tasks import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, TaskFuture, TaskRecord, as_completed, wait

Session = PilotManager  # Pilot-Quantum calls it a service; a session of pilots

__all__ = [
    "PilotManager", "Session", "Pilot", "PilotDescription", "Resources", "TaskFuture", "TaskRecord",
    "TaskContext", "context", "wait", "as_completed", "FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED",
    "ResourceAwarePolicy", "PlacementPolicy", "Placement", "Demand", "Candidate", "estimated_error",
    "NoPlacementError", "PilotEngineLostError", "PilotUsageError", "PilotStateError", "PilotStoppedError", "RemoteTaskError",
]
