"""One placement policy for every share sent to the monitors.

A share pinned to a qrank, a device address ``(host, device_id)``, or holding a payload already
compiled for one device goes there; any other share goes to the least-loaded live monitor whose
device is wide enough for its circuit (ties: the lowest qrank, so equal devices are dealt
round-robin). A circuit that fits no device is placed as if it did: compiling it for that device
then refuses it with ``CircuitTooWideError`` naming both widths, and nothing is sent. Workloads that
spread work themselves (the primitives) ask :func:`fitting` first, which refuses such a circuit up
front with the widest device named and cutting suggested.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

from .errors import CircuitTooWideError


class Placement(NamedTuple):
    """``qranks[i]`` is where share *i* goes (None if nowhere); ``errors[i]`` says why not."""

    qranks: list[int | None]
    errors: list[str | None]


def place(shares: Sequence[Any], devices: Sequence[Any], live: Sequence[int], load: Mapping[int, int]) -> Placement:
    """Place ``shares`` (``monitor_engine.dispatch.Share``) on the monitors of ``devices``.

    ``live``: the qranks that may take unpinned shares; ``load``: shares already assigned per
    qrank (updated copies are used here, ``load`` itself is not changed).
    """
    by_key = {spec.key: j for j, spec in enumerate(devices)}
    counts = {q: load.get(q, 0) for q in live}
    qranks: list[int | None] = []
    errors: list[str | None] = []
    for share in shares:
        qrank, error = _pinned(share, devices, by_key)
        if qrank is None and error is None:
            qrank, error = _least_loaded(share, devices, live, counts)
        if qrank is not None and error is None:
            counts[qrank] = counts.get(qrank, 0) + 1
        qranks.append(qrank)
        errors.append(error)
    return Placement(qranks, errors)


def _pinned(share, devices, by_key) -> tuple[int | None, str | None]:
    if share.qrank is not None:
        q = share.qrank
        if isinstance(q, bool) or not isinstance(q, int) or not 0 <= q < len(devices):
            return None, f"qrank {q!r} does not exist: the communicator has {len(devices)} monitor(s)."
        return q, None
    key = share.device if share.device is not None else getattr(share.payload, "device", None)
    if key is None:
        return None, None
    q = by_key.get((key[0], int(key[1])))
    if q is None:
        known = ", ".join(f"{h}:{d}" for h, d in by_key) or "none"
        return None, f"No monitor is bound to device {key[0]}:{key[1]}; bound devices: {known}."
    return q, None


def _least_loaded(share, devices, live, counts) -> tuple[int | None, str | None]:
    width = share.circuit.num_qubits if share.circuit is not None else 0
    if not live:
        return None, "Every monitor is dead; no live monitor can take the share."
    fits = [q for q in live if devices[q].num_qubits >= width] or list(live)
    return min(fits, key=lambda q: (counts.get(q, 0), q)), None


def fitting(width: int, devices: Sequence[Any], live: Sequence[int], name: str = "circuit") -> list[int]:
    """The live qranks (in qrank order) whose device has at least ``width`` qubits.

    Raises:
        CircuitTooWideError: no device of the communicator is that wide (the message names the
            width, the widest device, and points at circuit cutting); nothing was compiled or sent.
        MonitorError: devices wide enough exist but none of their monitors is live.
    """
    if not devices or width > max(spec.num_qubits for spec in devices):
        widest = max(range(len(devices)), key=lambda q: devices[q].num_qubits) if devices else None
        where = (
            f"the widest device, {devices[widest].name} (qrank {widest}), has {devices[widest].num_qubits}"
            if widest is not None else "the communicator has no device"
        )
        raise CircuitTooWideError(
            f"{name} has {width} qubits but {where}; nothing was compiled or sent. Cut it into pieces "
            "that fit (qiskit-addon-cutting: partition_problem or cut_wires, then "
            "generate_cutting_experiments) or add a wider device."
        )
    fits = [q for q in live if devices[q].num_qubits >= width]
    if not fits:
        from .errors import MonitorError

        wide = [q for q in range(len(devices)) if devices[q].num_qubits >= width]
        raise MonitorError(
            f"{name} has {width} qubits; only qrank(s) {wide} are wide enough and none of them is live."
        )
    return fits
