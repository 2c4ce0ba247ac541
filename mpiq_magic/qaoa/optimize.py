"""Several classical optimizers stepped in lockstep, so their evaluations run as one batch.

Each sub-problem has its own COBYLA (scipy). COBYLA has no ask/tell interface, so each runs on
a worker thread whose objective hands ``x`` to the calling thread and waits; the calling thread
waits for one request from every optimizer still running, evaluates them all in one call (one
``SamplerV2.run``: every monitor busy at once) and answers. MPI stays on the calling thread.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

_STOP = object()


class _Stopped(Exception):
    pass


@dataclass
class OptimizerTrace:
    x: np.ndarray
    fun: float
    evaluations: int
    history: list[float] = field(default_factory=list)
    message: str = ""


def lockstep_minimize(
    evaluate: Callable[[list[tuple[int, np.ndarray]]], Sequence[float]],
    x0s: Sequence[np.ndarray],
    *,
    maxiter: int = 60,
    rhobeg: float = 0.3,
) -> list[OptimizerTrace]:
    """Minimise one objective per start point with COBYLA; ``evaluate([(i, x), ...])`` returns
    the objective values of optimizer ``i`` at ``x`` for one batch. Returns one trace per start.

    Raises:
        Exception: whatever ``evaluate`` raised (every worker is stopped first).
    """
    from scipy.optimize import minimize

    count = len(x0s)
    requests: queue.Queue = queue.Queue()
    replies = [queue.Queue() for _ in range(count)]
    traces: list[OptimizerTrace | None] = [None] * count
    history: list[list[float]] = [[] for _ in range(count)]

    def worker(i: int) -> None:
        def f(x):
            requests.put(("eval", i, np.array(x, dtype=float)))
            value = replies[i].get()
            if value is _STOP:
                raise _Stopped
            history[i].append(float(value))
            return value

        try:
            res = minimize(f, np.asarray(x0s[i], dtype=float), method="COBYLA",
                           options={"maxiter": maxiter, "rhobeg": rhobeg})
            requests.put(("done", i, res))
        except _Stopped:
            requests.put(("stopped", i, None))
        except Exception as exc:  # pragma: no cover - scipy failures
            requests.put(("error", i, exc))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True, name=f"cobyla-{i}") for i in range(count)]
    for t in threads:
        t.start()
    active = set(range(count))
    results = {}
    try:
        while active:
            batch = []
            pending = set(active)
            while pending:
                kind, i, payload = requests.get()
                pending.discard(i)
                if kind == "eval":
                    batch.append((i, payload))
                else:
                    active.discard(i)
                    if kind == "error":
                        raise payload
                    results[i] = payload
            if batch:
                values = evaluate(batch)
                for (i, _), value in zip(batch, values):
                    replies[i].put(float(value))
    except BaseException:
        for i in active:
            replies[i].put(_STOP)
        raise
    finally:
        for t in threads:
            t.join(timeout=5)
    for i, res in results.items():
        best = int(np.argmin(history[i])) if history[i] else 0
        traces[i] = OptimizerTrace(np.asarray(res.x, dtype=float), float(res.fun), int(res.nfev),
                                   history[i], str(res.message))
        del best
    return traces  # type: ignore[return-value]
