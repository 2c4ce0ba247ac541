"""The pilot agent: engine-side functions a :class:`~mpiq_magic.pilot.Pilot` applies with ipyparallel.

- :func:`stand` runs on every monitor: ``monitor_engine.serve.serve(hc)`` standing, so classical
  rank 0 can reach the monitors over MPI-Q at any time (the one dispatch path).
- :func:`setup` runs on every classical engine: rank 0 gets a ``SamplerV2`` and an
  ``EstimatorV2`` on the standing monitors (headless primitives); both are left in the engine
  namespace (``sampler``, ``estimator``) next to ``hc``.
- :func:`run_function` runs one function task, with ``hc`` at hand (passed as ``hc=`` when the
  function takes that parameter; :func:`context` from anywhere inside it).
- :func:`run_quantum` runs a batch of quantum tasks as one primitive run per kind on rank 0:
  sampler tasks of the same circuit, shots and device are coalesced into one PUB (one compiled
  payload, all parameter rows bound on the monitor in one simulator run). A failing batch is
  re-run task by task, so one bad task fails alone.
"""

from __future__ import annotations

import inspect
import pickle
import time
import traceback
from dataclasses import dataclass
from typing import Any, Sequence

_STATE: dict[str, Any] = {}


@dataclass(frozen=True)
class TaskContext:
    """What a running function task can use: its id, its pilot, ``hc`` and (rank 0) the primitives."""

    task_id: str
    pilot: str
    hc: Any
    sampler: Any = None
    estimator: Any = None


@dataclass(frozen=True)
class Outcome:
    """One task's answer from an engine (times are ``time.time()``)."""

    task_id: str
    ok: bool
    value: Any
    start: float
    end: float
    error_text: str = ""
    qranks: tuple[int, ...] = ()
    device_seconds: float | None = None
    batch: int = 1


def context() -> TaskContext:
    """The context of the function task running on this engine.

    Raises:
        RuntimeError: called outside a pilot task.
    """
    ctx = _STATE.get("context")
    if ctx is None:
        raise RuntimeError("mpiq_magic.pilot.context() is only available inside a running pilot task.")
    return ctx


def _hc():
    from ..cluster.engine import hc

    return hc()


def stand() -> str:
    """Monitor: serve dispatched work until shut down or killed with the cluster."""
    from monitor_engine.serve import serve

    return serve(_hc()).stopped


def setup(pilot: str, seed: int | None, timeout: float) -> int:
    """Classical engine: remember the pilot; rank 0 builds its primitives. Returns the pid."""
    import os

    from ..cluster.engine import user_ns

    hc = _hc()
    _STATE["pilot"] = pilot
    ns = user_ns()
    if hc.rank == 0:
        from ..primitives import EstimatorV2, SamplerV2

        _STATE["sampler"] = ns["sampler"] = SamplerV2(hc, seed=seed, timeout=timeout)
        _STATE["estimator"] = ns["estimator"] = EstimatorV2(hc, seed=seed, timeout=timeout)
    return os.getpid()


def _failure(task_id: str, exc: BaseException, start: float) -> Outcome:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        pickle.dumps(exc)
        value = exc
    except Exception:
        value = None
    return Outcome(task_id, False, value, start, time.time(), f"{type(exc).__name__}: {exc}\n{text}")


def _with_hc(fn, args: tuple, kwargs: dict, hc) -> tuple[tuple, dict]:
    """Give ``hc`` to a function that takes an ``hc`` parameter the caller left unfilled: first
    (``f(hc, x)`` called as ``submit_task(f, x)``) or by keyword."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return args, kwargs
    params = list(sig.parameters.values())
    if "hc" not in sig.parameters or "hc" in kwargs:
        return args, kwargs
    if params[0].name == "hc" and params[0].kind in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        return (hc, *args), kwargs
    try:
        bound = sig.bind_partial(*args, **kwargs)
    except TypeError:
        return args, kwargs
    if "hc" in bound.arguments:
        return args, kwargs
    return args, {**kwargs, "hc": hc}


def run_function(task_id: str, fn, args: tuple, kwargs: dict) -> Outcome:
    """Run one function task on this classical engine; its exception becomes a failed Outcome."""
    start = time.time()
    hc = _hc()
    ctx = TaskContext(task_id, _STATE.get("pilot", "?"), hc, _STATE.get("sampler"), _STATE.get("estimator"))
    _STATE["context"] = ctx
    try:
        args, kwargs = _with_hc(fn, args, kwargs, hc)
        value = fn(*args, **kwargs)
        pickle.dumps(value)  # an unpicklable result fails this task, not the engine's reply
        return Outcome(task_id, True, value, start, time.time())
    except Exception as exc:
        return _failure(task_id, exc, start)
    finally:
        _STATE.pop("context", None)


# ----------------------------------------------------------------------------- quantum
@dataclass(frozen=True)
class QuantumItem:
    """One quantum task for rank 0: its PUBs, the qrank it was placed on, its primitive."""

    task_id: str
    kind: str  # "sampler" | "estimator"
    pubs: tuple
    qrank: int
    precision: float | None = None
    single: bool = True  # the task was one PUB: answer with its PubResult, not a list


def _coalescable(item: QuantumItem):
    """(circuit, values row, shots) if the item is one sampler PUB of one parameterized element.

    Sampler PUBs arrive normalised by the client as ``(circuit, values or None, shots)``.
    """
    if item.kind != "sampler" or len(item.pubs) != 1:
        return None
    circuit, values, shots = item.pubs[0]
    if values is None or circuit.num_parameters == 0:
        return None
    import numpy as np

    row = np.asarray(values, dtype=float)
    if row.shape != (circuit.num_parameters,):
        return None
    return circuit, row, shots


def _pub_qranks(pub_result) -> tuple[int, ...]:
    import numpy as np

    qranks = np.asarray(pub_result.metadata.get("qranks", ()), dtype=np.int64).ravel()
    return tuple(sorted({int(q) for q in qranks if q >= 0}))


def _run_group(items: Sequence[QuantumItem]) -> list[tuple[Any, tuple, float]]:
    """Run items of one kind as one primitive call; per item (value, qranks, device seconds)."""
    import numpy as np

    kind = items[0].kind
    if kind == "estimator":
        est = _STATE["estimator"]
        pubs, pins, owner = [], [], []
        for i, item in enumerate(items):
            pubs.extend(item.pubs)
            pins.extend([item.qrank] * len(item.pubs))
            owner.extend([i] * len(item.pubs))
        precision = items[0].precision
        result = est.run(pubs, precision=precision, pin=pins).result()
        return _split(items, list(result), owner)
    sampler = _STATE["sampler"]
    pubs, pins, owner, slices = [], [], [], []
    groups: dict[tuple, list[int]] = {}
    for i, item in enumerate(items):
        c = _coalescable(item)
        if c is not None:
            groups.setdefault((id(c[0]), c[2], item.qrank), []).append(i)
    grouped = {i for members in groups.values() if len(members) > 1 for i in members}
    for key, members in groups.items():
        if len(members) < 2:
            continue
        first = items[members[0]]
        circuit, _, shots = first.pubs[0]
        values = np.stack([np.asarray(items[i].pubs[0][1], dtype=float) for i in members])
        pubs.append((circuit, values, shots))
        pins.append(first.qrank)
        slices.append(members)
    for i, item in enumerate(items):
        if i in grouped:
            continue
        for pub in item.pubs:
            pubs.append(pub)
            pins.append(item.qrank)
            slices.append(i)
    result = sampler.run(pubs, pin=pins).result()
    out: list[Any] = [None] * len(items)
    parts: dict[int, list] = {}
    for s, pub_result in zip(slices, result):
        qranks = _pub_qranks(pub_result)
        secs = float(pub_result.metadata.get("timings", {}).get("execute", 0.0))
        if isinstance(s, list):  # a coalesced group: one element per task
            from qiskit.primitives import DataBin, SamplerPubResult

            for k, i in enumerate(s):
                data = DataBin(**{name: getattr(pub_result.data, name)[k] for name in pub_result.data}, shape=())
                meta = {**pub_result.metadata, "coalesced": len(s)}
                out[i] = (SamplerPubResult(data, meta), qranks, secs / len(s))
        else:
            parts.setdefault(s, []).append((pub_result, qranks, secs))
    for i, got in parts.items():
        values = [g[0] for g in got]
        out[i] = (values[0] if items[i].single else values, tuple(sorted({q for g in got for q in g[1]})),
                  sum(g[2] for g in got))
    return out


def _split(items, results, owner):
    per: dict[int, list] = {}
    for r, i in zip(results, owner):
        per.setdefault(i, []).append(r)
    out = []
    for i, item in enumerate(items):
        got = per.get(i, [])
        qranks = tuple(sorted({q for r in got for q in _pub_qranks(r)}))
        secs = sum(float(r.metadata.get("timings", {}).get("execute", 0.0)) for r in got)
        out.append((got[0] if item.single else got, qranks, secs))
    return out


def run_quantum(items: Sequence[QuantumItem]) -> list[Outcome]:
    """Rank 0: run a batch of quantum tasks on the standing monitors; one Outcome per task."""
    outcomes: list[Outcome] = []
    for kind in ("sampler", "estimator"):
        group = [it for it in items if it.kind == kind]
        if not group:
            continue
        start = time.time()
        try:
            answers = _run_group(group)
            end = time.time()
            outcomes.extend(
                Outcome(it.task_id, True, a[0], start, end, qranks=a[1], device_seconds=a[2], batch=len(group))
                for it, a in zip(group, answers)
            )
        except Exception:
            for it in group:  # isolate the failure: each task alone
                t0 = time.time()
                try:
                    a = _run_group([it])[0]
                    outcomes.append(Outcome(it.task_id, True, a[0], t0, time.time(), qranks=a[1], device_seconds=a[2]))
                except Exception as exc:
                    outcomes.append(_failure(it.task_id, exc, t0))
    return outcomes


# ----------------------------------------------------------------------------- the direct link
def open_channel(tasks_url: str, results_url: str) -> int:
    """Rank 0: receive quantum batches on ``tasks_url`` in this engine's event loop, answer on
    ``results_url`` (see :mod:`mpiq_magic.pilot.channel`). Returns the pid."""
    import os

    import zmq
    from IPython import get_ipython
    from tornado.ioloop import IOLoop
    from zmq.eventloop.zmqstream import ZMQStream

    from .channel import OUTCOMES, TASKS, digest, payload_of, session_like

    close_channel()
    session = session_like(get_ipython().kernel.session)
    ctx = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    push = ctx.socket(zmq.PUSH)
    for sock, url in ((pull, tasks_url), (push, results_url)):
        sock.linger = 0
        sock.connect(url)

    def on_batch(msg_list) -> None:
        try:
            _, parts = session.feed_identities(msg_list)
            msg = session.deserialize(parts)
        except Exception:  # unsigned, badly signed, replayed or malformed: dropped unread
            return
        payload = payload_of(msg) if msg["msg_type"] == TASKS else None
        if payload is None:
            return
        batch = msg["content"]["batch"]
        try:
            items = pickle.loads(payload)
            outcomes = run_quantum(items)
            try:
                answer = pickle.dumps(outcomes, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # an unpicklable result fails its batch, not the link
                answer = pickle.dumps([_failure(it.task_id, exc, time.time()) for it in items])
        except Exception as exc:  # the batch could not even be read here: answer with the error
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            session.send(push, OUTCOMES, {"batch": batch, "error": f"{type(exc).__name__}: {exc}\n{text}"})
            return
        session.send(push, OUTCOMES, {"batch": batch, "sha256": digest(answer)}, buffers=[answer])

    stream = ZMQStream(pull, IOLoop.current())
    stream.on_recv(on_batch)
    _STATE["channel"] = (stream, push)
    return os.getpid()


def close_channel() -> None:
    """Rank 0: stop receiving batches (idempotent)."""
    link = _STATE.pop("channel", None)
    if link is not None:
        stream, push = link
        stream.close(linger=0)
        push.close(linger=0)
