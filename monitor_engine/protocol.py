"""The messages of the one dispatch path between classical ranks and monitors.

They travel on the hybrid communicator's ``"dispatch"`` layer context (``hc.layer("dispatch")``),
so no tag is taken from users:

* dispatcher -> monitor, :data:`WORK_TAG`: a :class:`Batch` of ``(share index, item)`` items
  for one job — an item is a :class:`~monitor_engine.payload.Payload` (bound, run as received) or
  a :class:`Sweep` (a parameterized payload's id plus a numpy array of parameter values; the
  payload itself travels only the first time, the monitor keeps it in a bounded cache) — or a
  monitor-wide ``control`` request (``status``, ``barrier``, ``shutdown``);
  ``final`` ends the job on that monitor; ``abort`` ends it before any work was sent;
* monitor -> dispatcher, :data:`REPLY_TAG`: a :class:`ShareReply` per executed payload, as soon
  as it has run (shot memory over :data:`DETACH_BYTES` follows on :data:`DATA_TAG` as a raw numpy
  buffer), then one :class:`MonitorDone` per job.
"""

from __future__ import annotations

import weakref
from typing import Any, NamedTuple

#: dispatcher -> monitor
WORK_TAG = 1
#: monitor -> dispatcher
REPLY_TAG = 2
#: detached shot memory, right after its ShareReply
DATA_TAG = 3
#: Shot memory larger than this travels as a raw buffer after its reply instead of pickled in it.
DETACH_BYTES = 1 << 20

CONTROLS = ("status", "barrier", "shutdown")

#: Parameterized payloads a monitor keeps per dispatcher (least recently used evicted first);
#: a dispatcher mirrors this cache to know when the payload itself must travel again.
PAYLOAD_SLOTS = 64
#: Seed increment between the rows of a sweep: qiskit-aer's own increment between the experiments
#: of one run with ``parameter_binds``, so one multi-row run and row-by-row runs sample alike.
SEED_STRIDE = 2113

#: A job is named by (namespace, number): numbers grow within a namespace, so a monitor can
#: tell a stale batch (an earlier job that timed out) from one that came early.
JobId = tuple[str, int]


class Batch(NamedTuple):
    """Work for one monitor in job ``job``; ``reply_to`` is the dispatcher's comm rank."""

    job: JobId
    reply_to: int
    items: tuple = ()  # ((share index, Payload), ...)
    final: bool = False
    sent_at: float = 0.0
    control: str | None = None
    options: dict | None = None
    abort: str | None = None


class ShareReply(NamedTuple):
    """The result of one share, sent as soon as the monitor has run it."""

    job: JobId
    index: int
    qrank: int
    result: Any  # ExecutionResult; its memory is None when ``detached``
    seconds: float  # wall time of the execution on the monitor
    sent_at: float
    detached: bool = False


class Sweep(NamedTuple):
    """One parameterized payload run for each row of ``values`` (a batch item, like a Payload).

    ``values`` is a float64 array ``(rows, len(parameters))``; column *i* is the value of the
    parameter named ``parameters[i]`` (the logical circuit's names; the ISA circuit keeps them).
    ``payload`` is the parameterized :class:`~monitor_engine.payload.Payload` when the monitor
    does not hold ``payload_id`` yet, else None. ``slots`` bounds the monitor's cache for this
    dispatcher. ``seed`` seeds row 0; row *r* uses ``seed + SEED_STRIDE * r`` (None: derived from
    the device seed and ``job_id``), so a sweep split over monitors samples as it would in one run.
    """

    payload_id: str
    values: Any  # numpy.ndarray (rows, parameters), float64
    parameters: tuple
    shots: int
    job_id: str
    seed: int | None = None
    payload: Any = None
    slots: int = PAYLOAD_SLOTS


class MonitorDone(NamedTuple):
    """A monitor's end of a job: what its hook and its execution took, or why it failed."""

    job: JobId
    qrank: int
    device: str
    executed: int = 0
    hook_seconds: float = 0.0  # first batch received -> hook returned (GHZ: the barrier wait)
    hook_value: Any = None
    execute_seconds: float = 0.0  # hook returned -> last result sent
    value: Any = None  # the answer to a control request
    error: str | None = None
    stage: str = "execute"
    cache: dict | None = None  # parameterized-payload cache of this dispatcher on the monitor


_COUNTERS: "weakref.WeakKeyDictionary[Any, dict[str, int]]" = weakref.WeakKeyDictionary()


def collective_job(hc, namespace: str) -> JobId:
    """The next job id of ``namespace`` on ``hc``; every process that calls it in the same order
    gets the same id (collective workloads: the GHZ pipeline, ``spmd_run``)."""
    owner = getattr(hc, "_owner", hc) if getattr(hc, "layer_name", None) else hc
    counters = _COUNTERS.setdefault(owner, {})
    counters[namespace] = counters.get(namespace, 0) + 1
    return (namespace, counters[namespace])
