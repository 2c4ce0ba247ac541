"""Resource-aware placement of quantum tasks across pilots and their devices (QDREAMER's role).

A quantum task's :class:`Demand` (width, operations, method, error budget) is matched against
every :class:`Candidate` device of every running pilot: devices that cannot take it are
rejected with a reason (too narrow, basis, method, error above the budget); the rest are scored
(estimated error from the device's noise rates, current queue length, gates the device would
have to translate) and the lowest score wins. The :class:`Placement` keeps the decision and
the reasons, and is recorded with the task. Replace the policy by any object with a
``place(demand, candidates) -> Placement`` method (:class:`PlacementPolicy`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

from .errors import NoPlacementError

#: Error rates assumed for ``noise = { generic = true }`` (Qiskit's GenericBackendV2 is of this order).
GENERIC_RATES = {"depolarizing": 1e-3, "depolarizing_2q": 1e-2, "readout": 2e-2}
_NON_GATES = {"measure", "barrier", "reset", "delay"}


@dataclass(frozen=True)
class Demand:
    """What a quantum task needs: from its circuit(s) and its ``Resources``."""

    qubits: int
    ops: Mapping[str, int]  # operation name -> count, over the task's circuits
    one_q: int
    two_q: int
    measures: int
    basis_gates: tuple[str, ...] | None = None
    method: str | None = None
    max_error: float | None = None
    device: Any = None  # pinned (host, device_id) or qrank

    @classmethod
    def of(cls, circuits: Sequence[Any], resources) -> "Demand":
        """From the circuits' operation counts (Qiskit counts them in Rust, ~10 us a circuit:
        the instructions are never walked in Python, so nothing needs caching per circuit)."""
        ops: dict[str, int] = {}
        one_q = two_q = measures = 0
        for circuit in circuits:
            counts = circuit.count_ops()
            multi = circuit.num_nonlocal_gates()  # gates on 2+ qubits (barriers excluded)
            for name, n in counts.items():
                ops[name] = ops.get(name, 0) + n
            two_q += multi
            measures += counts.get("measure", 0)
            # rz is a virtual frame change on the devices
            one_q += sum(n for name, n in counts.items() if name not in _NON_GATES and name != "rz") - multi
        width = max((c.num_qubits for c in circuits), default=0)
        return cls(
            qubits=resources.qubits or width, ops=ops, one_q=one_q, two_q=two_q, measures=measures,
            basis_gates=resources.basis_gates, method=resources.method, max_error=resources.max_error,
            device=resources.device,
        )


@dataclass(frozen=True)
class Candidate:
    """One device of one running pilot, with its current queue (tasks placed, not finished)."""

    pilot: str
    qrank: int
    device: Any  # DeviceSpec
    queue: int

    @property
    def label(self) -> str:
        return f"{self.pilot}/qrank {self.qrank} ({self.device.name})"


@dataclass(frozen=True)
class Placement:
    """The decision: which pilot and device, its score, why, and what was rejected."""

    pilot: str
    qrank: int
    device: str
    score: float
    estimated_error: float
    reasons: tuple[str, ...]
    rejected: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pilot": self.pilot, "qrank": self.qrank, "device": self.device, "score": self.score,
            "estimated_error": self.estimated_error, "reasons": list(self.reasons), "rejected": dict(self.rejected),
        }


class PlacementPolicy(Protocol):
    def place(self, demand: Demand, candidates: Sequence[Candidate]) -> Placement: ...


_RATES: dict[int, tuple[Any, dict[str, float]]] = {}


def rates(device) -> dict[str, float]:
    """The device's error rates (zeros for an ideal device); read once per device object."""
    known = _RATES.get(id(device))
    if known is not None and known[0] is device:
        return known[1]
    noise = device.noise or {}
    got = dict(GENERIC_RATES) if noise.get("generic") else {k: float(noise.get(k, 0.0)) for k in GENERIC_RATES}
    if len(_RATES) > 1024:
        _RATES.clear()
    _RATES[id(device)] = (device, got)
    return got


def estimated_error(device, demand: Demand) -> float:
    """1 - the probability that no gate or readout error hits (independent Pauli errors)."""
    r = rates(device)
    ok = (1 - r["depolarizing"]) ** demand.one_q * (1 - r["depolarizing_2q"]) ** demand.two_q
    ok *= (1 - r["readout"]) ** demand.measures
    return 1.0 - ok


def _matches_pin(pin: Any, candidate: Candidate) -> bool:
    if pin is None:
        return True
    if isinstance(pin, int) and not isinstance(pin, bool):
        return candidate.qrank == pin
    if isinstance(pin, (tuple, list)) and len(pin) == 2:
        return candidate.device.key == (str(pin[0]), int(pin[1]))
    if isinstance(pin, str):
        return candidate.device.name == pin
    return False


class ResourceAwarePolicy:
    """The default policy: filter by width, basis, method, pin and error budget; then score
    ``error_weight * estimated_error + queue_weight * queue + translate_weight * (gates the
    device must translate)``; lowest wins, ties by queue, pilot order, then qrank."""

    def __init__(self, *, error_weight: float = 20.0, queue_weight: float = 0.1, translate_weight: float = 0.001):
        self.error_weight = error_weight
        self.queue_weight = queue_weight
        self.translate_weight = translate_weight

    def reject(self, demand: Demand, c: Candidate) -> str | None:
        d = c.device
        if not _matches_pin(demand.device, c):
            return f"not the pinned device {demand.device!r}"
        if demand.qubits > d.num_qubits:
            return f"too narrow: the task needs {demand.qubits} qubits, the device has {d.num_qubits}"
        if demand.basis_gates and not set(demand.basis_gates) <= set(d.basis_gates):
            missing = sorted(set(demand.basis_gates) - set(d.basis_gates))
            return f"basis: the device lacks {missing}"
        if demand.method and demand.method != d.method:
            return f"method: the task needs {demand.method!r}, the device uses {d.method!r}"
        if demand.max_error is not None:
            err = estimated_error(d, demand)
            if err > demand.max_error:
                return f"error: estimated {err:.3g} exceeds the budget {demand.max_error:g}"
        return None

    def score(self, demand: Demand, c: Candidate) -> tuple[float, float, int]:
        err = estimated_error(c.device, demand)
        foreign = sum(n for op, n in demand.ops.items() if op not in _NON_GATES and op not in c.device.basis_gates)
        return self.error_weight * err + self.queue_weight * c.queue + self.translate_weight * foreign, err, foreign

    def place(self, demand: Demand, candidates: Sequence[Candidate]) -> Placement:
        """The best candidate for ``demand``.

        Raises:
            NoPlacementError: every candidate was rejected (the message lists why).
        """
        rejected: dict[str, str] = {}
        scored = []
        for order, c in enumerate(candidates):
            why = self.reject(demand, c)
            if why is not None:
                rejected[c.label] = why
                continue
            s, err, foreign = self.score(demand, c)
            scored.append((s, c.queue, order, c, err, foreign))
        if not scored:
            lines = "; ".join(f"{k}: {v}" for k, v in rejected.items()) or "there are no running pilots"
            raise NoPlacementError(
                f"No device can run a {demand.qubits}-qubit task ({lines}). Nothing was sent; add a "
                "pilot with a fitting device, relax the task's resources, or cut the circuit.",
                rejected,
            )
        scored.sort(key=lambda t: t[:3])
        s, queue, _, best, err, foreign = scored[0]
        reasons = [
            f"fits: {demand.qubits} <= {best.device.num_qubits} qubits",
            f"estimated error {err:.3g}",
            f"queue {queue}",
        ]
        if foreign:
            reasons.append(f"{foreign} gate(s) to translate to the device basis")
        if len(scored) > 1:
            runner = scored[1]
            reasons.append(f"score {s:.4g} beats {runner[3].label} ({runner[0]:.4g}) of {len(scored)} fitting device(s)")
        return Placement(best.pilot, best.qrank, best.device.name, s, err, tuple(reasons), rejected)
