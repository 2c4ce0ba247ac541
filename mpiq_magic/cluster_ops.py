"""Code that runs on the engines of a :class:`~mpiq_magic.cluster.HybridCluster`.

The client ships these functions with ipyparallel's ``apply``; they work on the engine's hybrid
communicator ``hc`` (created by :func:`init_engine`, also left in the engine namespace as
``hc``). Payloads travel only over MPI-Q: classical rank 0 compiles each circuit for its
monitor's device and sends the payload to that monitor; monitors execute and send results back
to rank 0; the client receives rank 0's summary (results, never payloads).

Protocol of one scatter/bcast job ``job`` (point-to-point on ``hc``'s private context):

* rank 0 -> each monitor, tag :func:`job_tags` ``[0]``: ``("job", job, [(index, payload), ...], sent_at)``
  or ``("abort", job, reason)``;
* monitor -> rank 0, tag ``[1]``: ``("result", job, index, ExecutionResult)`` per payload, as
  soon as it has run; ``("done", job, qrank, error)`` if the monitor fails outside a payload.

Messages of another job (left over after a timeout) are dropped. Every wait ends at the job's
wall-clock ``deadline``; rank 0 also stops waiting for monitors whose process has died.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Any, Sequence

#: Rank 0 publishes the monitors' progress at most once per interval (nothing for shorter jobs;
#: the client emits the final events from the results).
EVENT_INTERVAL = 0.1
#: Tags of cluster jobs on the hybrid communicator (user code should avoid 20000..27999).
TAG_BASE = 20000
_TAG_JOBS = 4000
_POLL = 0.1

_STATE: dict[str, Any] = {}


def job_tags(job: int) -> tuple[int, int]:
    """(payload tag, result tag) of job ``job``."""
    base = TAG_BASE + 2 * (job % _TAG_JOBS)
    return base, base + 1


# ----------------------------------------------------------------------------- helpers
def _hc():
    hc = _STATE.get("hc")
    if hc is None:
        raise RuntimeError(
            "This engine has no hybrid communicator; it was not initialised by HybridCluster.start()."
        )
    return hc


def _user_ns() -> dict:
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:  # pragma: no cover - engines always have IPython
        shell = None
    if shell is None:
        return _STATE.setdefault("ns", {})
    return shell.user_ns


def _publish(event: str, **info: Any) -> None:
    try:
        from .events import publish_event
    except Exception:  # pragma: no cover - widgets are optional for the transport
        return
    try:
        publish_event(event, info)
    except Exception:  # never let progress reporting break the work
        pass


def _remaining(deadline: float) -> float:
    return deadline - time.time()


def peer_alive(comm_rank: int) -> bool:
    """False when the process of ``comm_rank`` is known dead (same node, pid gone or zombie)."""
    peers = _STATE.get("peers")
    if not peers or comm_rank >= len(peers):
        return True
    node, pid = peers[comm_rank]
    if node != _STATE.get("node"):
        return True  # another node: no cheap check, rely on the timeout
    try:
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:
        return False


def _node_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return socket.gethostname()


# ----------------------------------------------------------------------------- lifecycle
def init_engine(classical: int, devices: Any, timeout: float) -> dict[str, Any]:
    """Collective over every engine: build ``hc`` and describe this engine.

    Also makes SIGTERM end the process at once (no MPI_Finalize, which could wait forever for a
    dead peer), so stopping a cluster never hangs.
    """
    from mpi4py import MPI

    from . import kernel

    hc = kernel.init(devices=devices, classical=classical, timeout=timeout)
    _STATE["hc"] = hc
    _STATE["node"] = _node_id()
    world = MPI.COMM_WORLD
    _STATE["peers"] = world.allgather((_STATE["node"], os.getpid()))
    _user_ns()["hc"] = hc
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    return engine_info()


def engine_info() -> dict[str, Any]:
    """What the client needs to know about this engine (small, JSON-able)."""
    from mpi4py import MPI

    hc = _hc()
    device = hc.device.to_dict() if hc.device is not None else None
    return {
        "world_rank": MPI.COMM_WORLD.Get_rank(),
        "world_size": MPI.COMM_WORLD.Get_size(),
        "role": hc.role,
        "rank": hc.rank,
        "qrank": hc.qrank,
        "device": device,
        "host": socket.gethostname(),
        "node": _STATE.get("node"),
        "pid": os.getpid(),
        "ppid": os.getppid(),
    }


def prewarm() -> float:
    """Import what later operations need (qiskit, the simulator), so the first cell is not slow."""
    t0 = time.perf_counter()
    hc = _hc()
    if hc.is_quantum:
        _monitor()
    elif hc.rank == 0:
        import monitor_engine.payload  # noqa: F401 - qiskit.transpile and QPY
    return time.perf_counter() - t0


def topology() -> Any:
    return _hc().topology


def _monitor():
    monitor = _STATE.get("monitor")
    if monitor is None:
        from monitor_engine.process import MonitorProcess

        monitor = _STATE["monitor"] = MonitorProcess(_hc())
    return monitor


def _cache():
    cache = _STATE.get("cache")
    if cache is None:
        from monitor_engine.payload import CompileCache

        cache = _STATE["cache"] = CompileCache()
    return cache


# ----------------------------------------------------------------------------- scatter / bcast
def _run_code(code: str | None) -> None:
    if not code or not code.strip():
        return
    ns = _user_ns()
    exec(compile(code, "<mpiq cell>", "exec"), ns)  # noqa: S102 - the user's own cell


def _items(obj: Any, mode: str, send_q: Sequence[Sequence[int]] | None, quantum: int, var: str) -> list[tuple[int, int, Any]]:
    """(index, qrank, circuit) for every circuit of the job."""
    from qiskit import QuantumCircuit

    if mode == "bcast":
        if not isinstance(obj, QuantumCircuit):
            raise TypeError(f"%%mpiq bcast needs '{var}' to be one QuantumCircuit, got {type(obj).__name__}.")
        return [(j, j, obj) for j in range(quantum)]
    if send_q is not None:
        if not isinstance(obj, QuantumCircuit):
            raise TypeError(
                f"With --send-q, '{var}' must be one QuantumCircuit to split, got {type(obj).__name__}."
            )
        if len(send_q) > quantum:
            raise ValueError(
                f"--send-q gives {len(send_q)} qubit groups but the cluster has {quantum} monitor(s); "
                "give at most one group per monitor."
            )
        from .kernel.sendq import split_circuit

        circuits = split_circuit(obj, send_q)
    elif isinstance(obj, QuantumCircuit):
        circuits = [obj]
    else:
        try:
            circuits = list(obj)
        except TypeError:
            raise TypeError(
                f"'{var}' must be a QuantumCircuit or a list of them, got {type(obj).__name__}."
            ) from None
        bad = [i for i, c in enumerate(circuits) if not isinstance(c, QuantumCircuit)]
        if bad:
            raise TypeError(
                f"'{var}'[{bad[0]}] is a {type(circuits[bad[0]]).__name__}, not a QuantumCircuit."
            )
    if not circuits:
        raise ValueError(f"'{var}' holds no circuit; nothing to scatter.")
    return [(i, i % quantum, c) for i, c in enumerate(circuits)]


def scatter_root(
    job: int,
    *,
    code: str | None,
    var: str,
    mode: str = "scatter",
    send_q: Sequence[Sequence[int]] | None = None,
    shots: int = 1024,
    deadline: float,
    circuits: Any = None,
    dead_qranks: Sequence[int] = (),
) -> dict[str, Any]:
    """Classical rank 0's side of a scatter/bcast job; returns results and what is missing.

    A list of circuits is dealt over the live monitors; with ``send_q`` or for a bcast, the
    items of dead monitors are reported missing without being sent.
    """
    from .kernel import QRank
    from .kernel.errors import MPIQTimeoutError

    hc = _hc()
    quantum = hc.quantum_size
    payload_tag, result_tag = job_tags(job)
    t_start = time.perf_counter()
    try:
        if quantum < 1:
            raise ValueError("The cluster has no quantum monitor engine to run circuits on.")
        _run_code(code)
        if circuits is None:
            ns = _user_ns()
            if var not in ns:
                raise NameError(
                    f"The cell did not define '{var}' on classical rank 0; assign the circuit(s) to "
                    f"'{var}' or name another variable with --var."
                )
            circuits = ns[var]
        live = [j for j in range(quantum) if j not in set(dead_qranks)]
        if not live:
            raise RuntimeError(f"Every quantum monitor ({quantum}) is dead; restart the cluster.")
        items = _items(circuits, mode, send_q, quantum, var)
        if mode == "scatter" and send_q is None:
            items = [(index, live[index % len(live)], c) for index, _, c in items]
    except BaseException as exc:
        _abort(hc, job, [j for j in range(quantum) if j not in set(dead_qranks)], f"{type(exc).__name__}: {exc}")
        raise
    from monitor_engine.payload import compile_for

    n = len(items)
    cache = _cache()
    hits0, misses0 = cache.hits, cache.misses
    shares: dict[int, list[tuple[int, Any]]] = {j: [] for j in range(quantum)}
    errors: dict[int, str] = {}
    payload_bytes = 0
    sends = []
    # Compile one monitor's share, send it, go on: monitors start while rank 0 compiles the rest.
    by_qrank: dict[int, list[tuple[int, Any]]] = {}
    for index, qrank, circuit in items:
        by_qrank.setdefault(qrank, []).append((index, circuit))
    t_compile = 0.0
    for qrank in live:
        t0 = time.perf_counter()
        for index, circuit in by_qrank.get(qrank, []):
            try:
                payload = compile_for(
                    hc.devices[qrank], circuit, shots=shots, job_id=f"mpiq{job}-c{index}", cache=cache
                )
            except Exception as exc:
                errors[index] = f"{type(exc).__name__}: {exc}"
                continue
            payload_bytes += payload.nbytes
            shares[qrank].append((index, payload))
        t_compile += time.perf_counter() - t0
        sends.append(hc.isend(("job", job, shares[qrank], time.time()), QRank(qrank), tag=payload_tag))
    t_sent = time.perf_counter()

    results: list[Any] = [None] * n
    owner = {index: qrank for index, qrank, _ in items}
    waiting = {index for q in shares for index, _ in shares[q]}
    never_sent = {index for index, qrank, _ in items if qrank not in live}
    finished: dict[int, str | None] = {}
    dead: list[int] = []
    done_per_qrank = {j: 0 for j in range(quantum)}
    total_per_qrank = {j: len(shares[j]) for j in range(quantum)}
    published = dict(done_per_qrank)
    last_publish = time.perf_counter()
    last_result: dict[int, tuple[int, Any]] = {}
    while waiting:
        left = _remaining(deadline)
        if left <= 0:
            break
        now = time.perf_counter()
        if now - last_publish >= EVENT_INTERVAL:  # live progress, only for jobs that take a while
            last_publish = now
            for q, done in done_per_qrank.items():
                if done != published[q]:
                    published[q] = done
                    index, result = last_result[q]
                    _publish(
                        "executed", qrank=q, block=index, done=done, total=total_per_qrank[q],
                        seconds=getattr(result, "timings", {}).get("execute"), job=job,
                    )
        try:
            msg = hc.recv(tag=result_tag, timeout=min(_POLL, left))
        except MPIQTimeoutError:
            outstanding = {owner[i] for i in waiting}
            dead = sorted(q for q in outstanding if not peer_alive(hc.resolve(QRank(q))))
            if dead and set(dead) >= outstanding:
                break
            continue
        if not isinstance(msg, tuple) or len(msg) < 2 or msg[1] != job:
            continue  # a late message of an earlier job
        if msg[0] == "result":
            _, _, index, result = msg
            results[index] = result
            waiting.discard(index)
            done_per_qrank[owner[index]] += 1
            last_result[owner[index]] = (index, result)
            if getattr(result, "error", None):
                errors[index] = result.error
        elif msg[0] == "done":
            _, _, qrank, error = msg
            finished[qrank] = error
            if error:
                for index in [i for i in waiting if owner[i] == qrank]:
                    errors[index] = error
                    waiting.discard(index)
    waiting |= never_sent
    outstanding = sorted({owner[i] for i in waiting})
    dead = sorted(q for q in outstanding if q in set(dead_qranks) or not peer_alive(hc.resolve(QRank(q))))
    for req in sends:
        req.test()
    return {
        "job": job,
        "results": results,
        "missing": {i: owner[i] for i in sorted(waiting)},
        "errors": errors,
        "dead_qranks": dead,
        "owners": owner,
        "payload_bytes": payload_bytes,
        "compile_cache": {"hits": cache.hits - hits0, "misses": cache.misses - misses0},
        "timings": {
            "compile": t_compile,
            "send": t_sent - t_start - t_compile,
            "collect": time.perf_counter() - t_sent,
            "total": time.perf_counter() - t_start,
        },
    }


def _abort(hc, job: int, qranks: Sequence[int], reason: str) -> None:
    from .kernel import QRank

    payload_tag, _ = job_tags(job)
    for qrank in qranks:
        try:
            hc.isend(("abort", job, reason), QRank(qrank), tag=payload_tag)
        except Exception:
            pass


def scatter_monitor(job: int, *, deadline: float) -> dict[str, Any]:
    """A monitor's side of a scatter/bcast job: receive, execute each payload, answer each result."""
    from .kernel import Rank
    from .kernel.errors import MPIQTimeoutError

    hc = _hc()
    payload_tag, result_tag = job_tags(job)
    t0 = time.perf_counter()
    while True:
        left = _remaining(deadline)
        if left <= 0:
            raise MPIQTimeoutError(
                f"qrank {hc.qrank} (device {hc.device.name}) received no payload for job {job} from "
                "rank 0 before the deadline.",
                ["rank 0"],
            )
        try:
            msg = hc.recv(Rank(0), tag=payload_tag, timeout=left)
        except MPIQTimeoutError:
            continue
        if isinstance(msg, tuple) and len(msg) >= 2 and msg[1] == job:
            break
    if msg[0] == "abort":
        return {"qrank": hc.qrank, "executed": 0, "aborted": msg[2]}
    _, _, share, sent_at = msg
    error = None
    executed = 0
    try:
        monitor = _monitor()
        for k, (index, payload) in enumerate(share):
            result = monitor.execute(payload, sent_at=sent_at if k == 0 else None)
            hc.send(("result", job, index, result), Rank(0), tag=result_tag, timeout=max(_remaining(deadline), 1.0))
            executed += 1
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        try:  # rank 0 stops waiting for this monitor's remaining payloads
            hc.send(("done", job, hc.qrank, error), Rank(0), tag=result_tag, timeout=max(_remaining(deadline), 1.0))
        except Exception:
            pass
        raise RuntimeError(error) from exc
    return {"qrank": hc.qrank, "executed": executed, "seconds": time.perf_counter() - t0}


def scatter_task(job: int, deadline: float, root_kwargs: dict[str, Any]) -> Any:
    """One request for every engine of a scatter/bcast: each takes its part by role."""
    hc = _hc()
    if hc.is_quantum:
        return scatter_monitor(job, deadline=deadline)
    if hc.rank == 0:
        return scatter_root(job, deadline=deadline, **root_kwargs)
    return None


def idle() -> None:
    """Classical ranks other than 0 take no part in a scatter."""
    return None


# ----------------------------------------------------------------------------- gather
def gather_op(job: int, *, code: str | None, var: str, deadline: float) -> Any:
    """Collective: monitors run ``code`` and contribute ``var``; rank 0 returns the list by qrank."""
    from .kernel import Rank

    hc = _hc()
    timeout = max(_remaining(deadline), 0.05)
    if hc.is_quantum:
        error = None
        value = None
        try:
            _run_code(code)
            ns = _user_ns()
            if var not in ns:
                raise NameError(f"'{var}' is not defined on qrank {hc.qrank} (device {hc.device.name}).")
            value = ns[var]
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        hc.gather({"value": value, "error": error}, root=Rank(0), timeout=timeout)
        if error:
            raise RuntimeError(error)
        return None
    if hc.rank != 0:
        return None
    gathered = hc.gather(None, root=Rank(0), timeout=timeout)
    return {"values": [g["value"] for g in gathered], "errors": {j: g["error"] for j, g in enumerate(gathered) if g["error"]}}


# ----------------------------------------------------------------------------- barrier / ghz
def barrier_op(flag: str, repeat: int, *, deadline: float) -> list[dict[str, Any]] | None:
    """Every engine takes part in ``repeat`` barriers; members return their records as dicts."""
    from .kernel import barrier as kb

    hc = _hc()
    bflag = kb.BarrierFlag[flag]
    records = []
    for k in range(repeat):
        rec = hc.barrier(bflag, timeout=max(_remaining(deadline), 0.05))
        records.append(rec.to_dict())
        if rec.participated and _is_reporter(hc, bflag):
            _publish("barrier", record=rec.to_dict(), index=k, of=repeat)
    return records if _is_reporter(hc, bflag) else None


def _is_reporter(hc, flag) -> bool:
    """The one process whose records the client keeps: the first member of the flag's group."""
    from .kernel.barrier import QQ

    return hc.qrank == 0 if flag == QQ else hc.comm_rank == 0


def ghz_op(qubits: int, *, blocks: int | None, shots: int, serial: bool, deadline: float, nodes: int | None = None) -> Any:
    """Collective: the distributed GHZ pipeline; rank 0 returns the result as a dict."""
    from .ghz.pipeline import run_ghz

    hc = _hc()

    def progress(event: str, info: dict) -> None:
        _publish(event, **info)

    result = run_ghz(
        hc, qubits, blocks, shots=shots, serial=serial, cache=_cache() if hc.rank == 0 else None,
        timeout=max(_remaining(deadline), 0.05), progress=progress, nodes=nodes,
    )
    if result is None:
        return None
    _publish("result", result=result.to_dict(top=64))
    return result
