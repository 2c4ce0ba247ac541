"""What a pilot is made of: :class:`PilotDescription` (resources) and :class:`Resources` (a task's needs).

A pilot description names the pilot, says how it is started (``kind``: ``local`` runs the
bundled ``mpiexec`` like :class:`~mpiq_magic.cluster.HybridCluster`; ``slurm`` submits a
placeholder batch job that runs the engines) and what it holds: ``classical`` ranks and
``quantum`` monitors bound to ``devices`` (a TOML file or a list of ``DeviceSpec``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from .errors import PilotUsageError

KINDS = ("local", "slurm")
METHODS = ("automatic", "statevector", "matrix_product_state", "stabilizer")


def _positive(name: str, value: Any, *, minimum: float = 0.0, integer: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int,) if integer else (int, float))
    if not ok or value < minimum or (not integer and value <= 0 and minimum == 0.0):
        kind = "an integer" if integer else "a number"
        raise PilotUsageError(f"Pilot description field {name!r} must be {kind} >= {minimum:g}, got {value!r}.")


@dataclass(frozen=True)
class PilotDescription:
    """The resources of one pilot.

    ``name``: unique within a :class:`~mpiq_magic.pilot.PilotManager`. ``kind``: ``local`` or
    ``slurm``. ``classical``/``quantum``: classical ranks and quantum monitors. ``devices``: a
    devices TOML file or a list of ``DeviceSpec`` (default: ``quantum`` ideal local devices).
    ``timeout``: default timeout of a task's remote run, seconds. ``start_timeout``: how long the
    engines may take to register. ``seed``: seed of the pilot's primitives (reproducible shots).
    ``max_batch``: most quantum tasks sent to rank 0 in one run. ``window``: most applies
    outstanding per classical engine (2 keeps an engine busy while the next is on its way).
    ``slurm``: options of the placeholder job (``partition``, ``time``, ``account``, ``extra``).

    Raises:
        PilotUsageError: a field has a bad value (the message names it and the value).
    """

    name: str
    kind: str = "local"
    classical: int = 1
    quantum: int = 2
    devices: str | os.PathLike[str] | Sequence[Any] | None = None
    timeout: float = 120.0
    start_timeout: float = 120.0
    seed: int | None = None
    max_batch: int = 256
    window: int = 2
    env: Mapping[str, str] = field(default_factory=dict)
    slurm: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or any(c.isspace() for c in self.name):
            raise PilotUsageError(f"A pilot needs a non-empty name without spaces, got {self.name!r}.")
        if self.kind not in KINDS:
            raise PilotUsageError(f"Pilot {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}.")
        _positive("classical", self.classical, minimum=1, integer=True)
        _positive("quantum", self.quantum, minimum=1, integer=True)
        _positive("timeout", self.timeout)
        _positive("start_timeout", self.start_timeout)
        _positive("max_batch", self.max_batch, minimum=1, integer=True)
        _positive("window", self.window, minimum=1, integer=True)
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise PilotUsageError(f"Pilot {self.name!r}: seed must be an integer or None, got {self.seed!r}.")
        unknown = set(self.slurm) - {"partition", "time", "account", "extra", "qos"}
        if unknown:
            raise PilotUsageError(
                f"Pilot {self.name!r}: unknown slurm option(s) {sorted(unknown)}; "
                "known: partition, time, account, qos, extra."
            )

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any]) -> "PilotDescription":
        """A description from a dict (Pilot-Quantum's ``pilot_compute_description`` style).

        Raises:
            PilotUsageError: unknown keys or bad values.
        """
        known = set(cls.__dataclass_fields__)
        unknown = set(spec) - known
        if unknown:
            raise PilotUsageError(f"Unknown pilot description key(s) {sorted(unknown)}; known: {sorted(known)}.")
        if "name" not in spec:
            raise PilotUsageError("A pilot description needs a 'name'.")
        return cls(**dict(spec))

    def with_(self, **changes: Any) -> "PilotDescription":
        return replace(self, **changes)


@dataclass(frozen=True)
class Resources:
    """What a task needs; the placement policy reads it.

    ``qubits``: width (default: the circuit's). ``basis_gates``: gates the device must offer
    natively. ``method``: the simulation method the device must use. ``max_error``: highest
    acceptable estimated error of the circuit on the device (from its noise rates). ``device``:
    pin a ``(host, device_id)`` or a qrank of the chosen pilot. ``engine``: for a function task,
    the classical engine (MPI rank) it must run on.

    Raises:
        PilotUsageError: unknown keys or bad values.
    """

    qubits: int | None = None
    basis_gates: tuple[str, ...] | None = None
    method: str | None = None
    max_error: float | None = None
    device: Any = None
    engine: int | None = None

    def __post_init__(self) -> None:
        if self.qubits is not None:
            _positive("qubits", self.qubits, minimum=1, integer=True)
        if self.method is not None and self.method not in METHODS:
            raise PilotUsageError(f"resources method must be one of {METHODS}, got {self.method!r}.")
        if self.max_error is not None and not (isinstance(self.max_error, (int, float)) and 0 <= self.max_error <= 1):
            raise PilotUsageError(f"resources max_error must be a number in [0, 1], got {self.max_error!r}.")
        if self.engine is not None:
            _positive("engine", self.engine, minimum=0, integer=True)
        if self.basis_gates is not None:
            object.__setattr__(self, "basis_gates", tuple(str(g) for g in self.basis_gates))

    @classmethod
    def coerce(cls, value: "Resources | Mapping[str, Any] | None") -> "Resources":
        """``Resources`` from None, a dict or a ``Resources``.

        Raises:
            PilotUsageError: unknown keys or bad values.
        """
        if value is None:
            return cls()
        if isinstance(value, Resources):
            return value
        if not isinstance(value, Mapping):
            raise PilotUsageError(f"resources must be a dict or Resources, got {type(value).__name__}.")
        known = set(cls.__dataclass_fields__)
        unknown = set(value) - known
        if unknown:
            raise PilotUsageError(f"Unknown resources key(s) {sorted(unknown)}; known: {sorted(known)}.")
        return cls(**dict(value))
