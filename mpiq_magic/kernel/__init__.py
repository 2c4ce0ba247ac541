"""The MPI-Q core: hybrid communicator, point-to-point, collectives and the hybrid barrier.

>>> from mpiq_magic import kernel as mpiq
>>> hc = mpiq.init(devices="devices.toml", classical=1)   # MPIQ_Init  # doctest: +SKIP

Paper name -> API: MPIQ_Init -> :func:`init`; MPIQ_Send/Recv -> ``hc.send``/``hc.recv``
(``Send``/``Recv`` for buffers); MPIQ_Bcast/Scatter/Gather/Allgather -> ``hc.bcast`` ...;
MPIQ_Barrier -> ``hc.barrier(CC | QQ | ALL)``. Non-blocking requests (``hc.isend``, ``hc.irecv``,
``hc.Isend``, ``hc.Irecv``) complete with ``req.wait()``/``req.test()`` or :func:`waitall`,
:func:`waitany`, :func:`testall`, :func:`testany`.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

# MPI-free modules load eagerly; everything that imports mpi4py.MPI loads on first use
# (module ``__getattr__`` below), so a client (the notebook kernel, the ``mpiq`` launcher)
# can import ``mpiq_magic.kernel.config``/``errors``/``topology`` without initialising MPI.
from .config import DeviceSpec, default_devices, load_devices, resolve_devices
from .errors import (
    AddressError,
    BindingError,
    ConfigError,
    MPIQError,
    MPIQTimeoutError,
    ProcessFailure,
    ProcessFailures,
    SendQError,
    UsageError,
)
from .topology import Topology, check_binding, local_host_info, map_classical, map_quantum
from .waiting import DEFAULT_TIMEOUT, Deadline, poll

_LAZY = {
    "ANY_SOURCE": "addressing", "ANY_TAG": "addressing", "Device": "addressing", "QRank": "addressing",
    "Rank": "addressing", "ALL": "barrier", "CC": "barrier", "QQ": "barrier", "BarrierFlag": "barrier",
    "BarrierRecord": "barrier", "LIBRARY_LAYERS": "comm", "HybridComm": "comm", "Request": "requests",
    "testall": "requests", "testany": "requests", "waitall": "requests", "waitany": "requests",
}


def __getattr__(name: str) -> Any:
    """Names from the MPI-using modules, imported (and MPI initialised) on first use."""
    if name == "MPI":
        from mpi4py import MPI

        return MPI
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "init", "HybridComm", "Request", "Rank", "QRank", "Device", "ANY_SOURCE", "ANY_TAG",
    "CC", "QQ", "ALL", "BarrierFlag", "BarrierRecord", "DeviceSpec", "Topology",
    "load_devices", "default_devices", "MPIQError", "ConfigError", "BindingError",
    "AddressError", "SendQError", "MPIQTimeoutError", "UsageError", "ProcessFailure", "ProcessFailures", "waitall", "waitany", "testall", "testany",
    "LIBRARY_LAYERS",
]


def _classical_ranks(classical: int | Sequence[int] | None, size: int) -> list[int]:
    if classical is None:
        classical = int(os.environ.get("MPIQ_CLASSICAL", "1"))
    if isinstance(classical, int) and not isinstance(classical, bool):
        if not 0 <= classical <= size:
            raise ConfigError(
                f"classical={classical} is impossible with {size} process(es); use 0..{size}."
            )
        return list(range(classical))
    ranks = sorted(set(classical))
    bad = [r for r in ranks if not isinstance(r, int) or not 0 <= r < size]
    if bad or len(ranks) != len(list(classical)):
        raise ConfigError(
            f"classical={list(classical)!r} must list distinct comm ranks in 0..{size - 1}; bad: {bad or 'duplicates'}."
        )
    return ranks


def _agree(comm: "MPI.Intracomm", fn: Callable[[], Any]) -> Any:
    """Run ``fn`` everywhere; if it failed anywhere, raise the same error on every process."""
    try:
        value, error = fn(), None
    except Exception as exc:  # noqa: BLE001 - re-raised below, on every rank
        value, error = None, exc
    errors = comm.allgather(None if error is None else (type(error).__name__, str(error)))
    failed = [(r, e) for r, e in enumerate(errors) if e is not None]
    if failed:
        if error is not None and len(failed) == 1:
            raise error
        kinds = {name for _, (name, _) in failed}
        cls = BindingError if kinds == {"BindingError"} else ConfigError
        raise cls(" ".join(dict.fromkeys(msg for _, (_, msg) in failed)))  # each message once
    return value


def init(
    devices: str | os.PathLike[str] | Sequence[DeviceSpec] | None = None,
    classical: int | Sequence[int] | None = None,
    comm: "MPI.Intracomm | None" = None,
    timeout: float | None = None,
    seed: int = 0,
) -> HybridComm:
    """MPIQ_Init: build the hybrid communicator. Collective over ``comm`` (default COMM_WORLD).

    ``classical``: number of classical ranks (the first ones) or their comm ranks; default
    ``$MPIQ_CLASSICAL`` or 1. ``devices``: TOML path, list of :class:`DeviceSpec`, or None for
    ``$MPIQ_DEVICES`` or the embedded default (local devices on 127.0.0.1). Quantum process j
    gets qrank j and device entry j. ``timeout``: default for every blocking call (seconds).
    """
    from mpi4py import MPI

    from .comm import HybridComm

    comm = MPI.COMM_WORLD if comm is None else comm
    size = comm.Get_size()
    arrived = comm.Ibarrier()
    deadline = Deadline(timeout)
    if poll(lambda: True if arrived.Test() else None, deadline) is None:
        raise MPIQTimeoutError(
            f"init on comm rank {comm.Get_rank()} timed out after {deadline.timeout:g} s: not every "
            f"one of the {size} processes called init.",
        )
    if devices is None:
        devices = os.environ.get("MPIQ_DEVICES") or None
    classical_ranks = _agree(comm, lambda: _classical_ranks(classical, size))
    quantum_ranks = [r for r in range(size) if r not in set(classical_ranks)]
    specs = _agree(comm, lambda: resolve_devices(devices, len(quantum_ranks)))
    infos = comm.allgather(local_host_info())
    me = comm.Get_rank()
    single_node = len({i.node_id for i in infos}) == 1
    if me in quantum_ranks:
        j = quantum_ranks.index(me)
        _agree(comm, lambda: check_binding(j, me, specs[j], infos[me], single_node))
    else:
        _agree(comm, lambda: None)
    topology = Topology(
        classical=map_classical(classical_ranks, infos, seed),
        quantum=map_quantum(quantum_ranks, specs),
        hosts=tuple(sorted({i.hostname for i in infos})),
    )
    return HybridComm(comm, classical_ranks, specs, topology, timeout)
