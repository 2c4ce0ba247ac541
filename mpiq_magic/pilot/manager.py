"""Several named pilots at once, one submission API: :class:`PilotManager`.

``submit_task(fn_or_pubs, *args, pilot=None, resources=None, ...)`` returns a
:class:`~mpiq_magic.pilot.tasks.TaskFuture` (a ``concurrent.futures.Future``):

- a callable is a *function task*: it runs on a classical engine of a pilot (``pilot=`` that
  one, else the pilot with the fewest tasks in flight), with ``hc`` passed when it takes an
  ``hc`` parameter (and :func:`mpiq_magic.pilot.context` inside it);
- a ``QuantumCircuit``, a PUB tuple or a list of PUBs is a *quantum task* for the pilot's
  sampler (``primitive="estimator"`` for estimator PUBs); the placement policy chooses the
  pilot and device (width, basis, method, estimated error, queue length) and the decision with
  its reasons is kept in ``future.placement`` and the metrics row.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import metrics as _metrics
from .agent import QuantumItem
from .description import PilotDescription, Resources
from .errors import PilotStateError, PilotUsageError
from .pilot import Pilot
from .placement import Candidate, Demand, ResourceAwarePolicy
from .tasks import ESTIMATOR, FUNCTION, SAMPLER, TaskFuture, TaskRecord, as_completed, next_task_id, wait

DEFAULT_SHOTS = 1024


def _is_circuit(obj: Any) -> bool:
    from qiskit import QuantumCircuit

    return isinstance(obj, QuantumCircuit)


def quantum_pubs(work: Any) -> tuple[list, bool] | None:
    """(PUBs, single) when ``work`` is a circuit, a PUB tuple or a list of those; else None."""
    if _is_circuit(work):
        return [(work,)], True
    if isinstance(work, tuple) and work and _is_circuit(work[0]):
        return [work], True
    if isinstance(work, list) and work and all(_is_circuit(w) or (isinstance(w, tuple) and w and _is_circuit(w[0])) for w in work):
        return [w if isinstance(w, tuple) else (w,) for w in work], False
    return None


def _sampler_pub(pub: tuple, shots: int | None, index: int) -> tuple:
    if len(pub) > 3:
        raise PilotUsageError(f"Sampler PUB {index} has {len(pub)} entries; a PUB is (circuit, values, shots).")
    circuit = pub[0]
    values = pub[1] if len(pub) > 1 else None
    pub_shots = pub[2] if len(pub) > 2 and pub[2] is not None else (shots or DEFAULT_SHOTS)
    if circuit.num_parameters and values is None:
        raise PilotUsageError(
            f"Circuit '{circuit.name}' (PUB {index}) has {circuit.num_parameters} parameter(s) but no values were given."
        )
    return (circuit, values, int(pub_shots))


class PilotManager:
    """Named pilots and the tasks submitted to them (Pilot-Quantum's PilotComputeService).

    ``policy``: the placement policy of quantum tasks (default :class:`ResourceAwarePolicy`);
    any object with ``place(demand, candidates) -> Placement``. A context manager: leaving the
    block stops every pilot.
    """

    def __init__(self, policy: Any = None):
        self.policy = policy or ResourceAwarePolicy()
        self.pilots: dict[str, Pilot] = {}
        self.tasks: list[TaskFuture] = []
        self._lock = threading.Lock()
        self._rr = 0
        self._listeners: list[Callable[[str, TaskRecord], None]] = []

    def __repr__(self) -> str:
        return f"<PilotManager pilots={list(self.pilots)} tasks={len(self.tasks)}>"

    def __enter__(self) -> "PilotManager":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ pilots
    def create_pilot(self, description: PilotDescription | Mapping[str, Any] | None = None, *, start: bool = True, **fields: Any) -> Pilot:
        """Add a pilot (and start it unless ``start=False``).

        Raises:
            PilotUsageError: a bad description, or the name is taken.
            ClusterTimeoutError / HybridClusterError: it did not start (nothing is left running).
        """
        desc = self._description(description, fields)
        pilot = Pilot(desc)
        with self._lock:
            if desc.name in self.pilots:
                raise PilotUsageError(f"A pilot named {desc.name!r} exists already; pilot names are unique.")
            self.pilots[desc.name] = pilot
        if start:
            try:
                pilot.start()
            except BaseException:
                with self._lock:
                    self.pilots.pop(desc.name, None)
                raise
        return pilot

    def create_pilots(self, descriptions: Sequence[PilotDescription | Mapping[str, Any]]) -> list[Pilot]:
        """Start several pilots at once (one thread each); all started, or none left running.

        Raises:
            PilotUsageError: a bad description or a duplicate name.
            Exception: the first start failure (the others are stopped).
        """
        pilots = [self.create_pilot(d, start=False) for d in descriptions]
        errors: list[BaseException] = []

        def run(p: Pilot) -> None:
            try:
                p.start()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(p,), daemon=True) for p in pilots]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            for p in pilots:
                p.stop()
                self.pilots.pop(p.name, None)
            raise errors[0]
        return pilots

    @staticmethod
    def _description(description, fields) -> PilotDescription:
        if isinstance(description, PilotDescription):
            return description.with_(**fields) if fields else description
        if description is None:
            return PilotDescription(**fields)
        if isinstance(description, Mapping):
            return PilotDescription.from_mapping({**description, **fields})
        raise PilotUsageError(f"A pilot description is a PilotDescription or a dict, got {type(description).__name__}.")

    def pilot(self, name: str) -> Pilot:
        """The pilot named ``name``.

        Raises:
            PilotUsageError: no such pilot.
        """
        p = self.pilots.get(name)
        if p is None:
            raise PilotUsageError(f"There is no pilot named {name!r}; pilots: {sorted(self.pilots)}.")
        return p

    def running(self) -> list[Pilot]:
        return [p for p in self.pilots.values() if p.state == "running"]

    def stop(self) -> None:
        """Stop every pilot (queued tasks cancelled, running ones failed). Idempotent."""
        for p in list(self.pilots.values()):
            p.stop()

    cancel = stop

    # ------------------------------------------------------------------ tasks
    def submit_task(
        self,
        work: Any,
        *args: Any,
        pilot: str | None = None,
        resources: Resources | Mapping[str, Any] | None = None,
        shots: int | None = None,
        precision: float | None = None,
        primitive: str = SAMPLER,
        name: str | None = None,
        **kwargs: Any,
    ) -> TaskFuture:
        """Submit a function task or a quantum task; returns its future at once.

        Raises:
            PilotUsageError: bad arguments (unknown pilot, resources, an unplaceable task,
                arguments given to a quantum task).
            NoPlacementError: no running device can take the quantum task (reasons by device).
            PilotStateError: no pilot is running.
        """
        submitted = time.time()  # the metrics' submit: placement and queueing count in the wait
        res = Resources.coerce(resources)
        pubs = quantum_pubs(work)
        if pubs is None and not callable(work):
            raise PilotUsageError(
                f"submit_task takes a function, a QuantumCircuit, a PUB tuple or a list of PUBs, got {type(work).__name__}."
            )
        if pubs is None:
            return self._submit_function(work, args, kwargs, pilot, res, name, submitted)
        if args or kwargs:
            raise PilotUsageError(
                f"A quantum task takes no extra arguments; got {len(args)} positional and {sorted(kwargs)} keyword."
            )
        if primitive not in (SAMPLER, ESTIMATOR):
            raise PilotUsageError(f"primitive must be 'sampler' or 'estimator', got {primitive!r}.")
        return self._submit_quantum(pubs[0], pubs[1], primitive, pilot, res, shots, precision, name, submitted)

    def _candidates_pilots(self, pilot: str | None) -> list[Pilot]:
        if pilot is not None:
            p = self.pilot(pilot)
            p._require_running()
            return [p]
        live = self.running()
        if not live:
            raise PilotStateError(f"No pilot is running (pilots: {sorted(self.pilots) or 'none'}); create_pilot() first.")
        return live

    # ------------------------------------------------------------------ task events
    def subscribe(self, listener: Callable[[str, TaskRecord], None]) -> Callable[[], None]:
        """Call ``listener(event, record)`` as tasks move: ``"submitted"`` (queued on its pilot),
        ``"running"`` (sent to an engine), ``"finished"`` (done, failed or cancelled). It runs on
        the thread that moved the task (the caller, a pilot's agent thread or a result callback),
        so it must be quick; a listener that raises is dropped. Returns a function that unsubscribes."""
        with self._lock:
            self._listeners.append(listener)
        return lambda: self.unsubscribe(listener)

    def unsubscribe(self, listener: Callable[[str, TaskRecord], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _emit(self, event: str, record: TaskRecord) -> None:
        for listener in list(self._listeners):
            try:
                listener(event, record)
            except Exception:  # a broken view must not break the tasks
                self.unsubscribe(listener)

    def _record(self, kind: str, name: str, submitted: float) -> TaskFuture:
        fut = TaskFuture(TaskRecord(next_task_id(), kind, name, submit=submitted))
        fut.observer = self._emit
        with self._lock:
            self.tasks.append(fut)
        return fut

    def _submit_function(self, fn, args, kwargs, pilot, res: Resources, name, submitted: float) -> TaskFuture:
        pilots = self._candidates_pilots(pilot)
        if len(pilots) == 1:
            chosen, why = pilots[0], ("pinned" if pilot else "the only running pilot")
        else:
            with self._lock:
                self._rr += 1
                rr = self._rr
            order = sorted(range(len(pilots)), key=lambda i: (pilots[i].pending / pilots[i].description.classical,
                                                               (i - rr) % len(pilots)))
            chosen = pilots[order[0]]
            why = "fewest tasks in flight per classical rank: " + ", ".join(f"{p.name}={p.pending}" for p in pilots)
        fut = self._record(FUNCTION, name or getattr(fn, "__name__", "function"), submitted)
        fut.record.placement = {"pilot": chosen.name, "reasons": [why]}
        try:
            chosen.submit_function(fut, fn, tuple(args), dict(kwargs), res.engine)
        except BaseException:
            with self._lock:
                self.tasks.remove(fut)
            raise
        return self._submitted(fut)

    def _submitted(self, fut: TaskFuture) -> TaskFuture:
        self._emit("submitted", fut.record)
        fut.add_done_callback(lambda f: self._emit("finished", f.record))
        return fut

    def _submit_quantum(self, pubs, single, kind, pilot, res: Resources, shots, precision, name, submitted: float) -> TaskFuture:
        if kind == SAMPLER:
            pubs = [_sampler_pub(p, shots, i) for i, p in enumerate(pubs)]
        circuits = [p[0] for p in pubs]
        demand = Demand.of(circuits, res)
        pilots = self._candidates_pilots(pilot)
        candidates = []
        for p in pilots:
            loads = p.queue_lengths()
            candidates.extend(Candidate(p.name, q, spec, loads.get(q, 0)) for q, spec in enumerate(p.devices))
        placement = self.policy.place(demand, candidates)
        fut = self._record(kind, name or circuits[0].name, submitted)
        fut.record.placement = placement.to_dict()
        fut.record.devices = (placement.device,)
        item = QuantumItem(fut.task_id, kind, tuple(pubs), placement.qrank, precision, single)
        self.pilot(placement.pilot).submit_quantum(fut, item)
        return self._submitted(fut)

    # ------------------------------------------------------------------ waiting, metrics
    def wait(self, futures: Iterable[Future] | None = None, timeout: float | None = None, return_when: str = "ALL_COMPLETED"):
        """``concurrent.futures.wait`` over ``futures`` (default: every task); returns (done, not_done)."""
        return wait(list(self.tasks if futures is None else futures), timeout=timeout, return_when=return_when)

    def as_completed(self, futures: Iterable[Future] | None = None, timeout: float | None = None):
        """``concurrent.futures.as_completed`` over ``futures`` (default: every task)."""
        return as_completed(list(self.tasks if futures is None else futures), timeout=timeout)

    def cancel_tasks(self, futures: Iterable[TaskFuture] | None = None) -> int:
        """Cancel the queued ones among ``futures`` (default: every task); returns how many were cancelled."""
        return sum(f.cancel() for f in list(self.tasks if futures is None else futures))

    def metrics(self) -> list[dict[str, Any]]:
        """One row per task (see :mod:`mpiq_magic.pilot.metrics`)."""
        return _metrics.rows_of(f.record for f in list(self.tasks))

    def write_metrics(self, path: str) -> str:
        """Write the rows as CSV (``.csv``) or JSON (anything else); returns the text."""
        rows = self.metrics()
        return _metrics.to_csv(rows, path) if str(path).endswith(".csv") else _metrics.to_json(rows, path)
