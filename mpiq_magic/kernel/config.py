"""Device configuration: which quantum devices exist and how each is simulated.

A devices file is TOML with a ``[[devices]]`` array of tables::

    [defaults]            # optional, applies to every entry
    num_qubits = 32

    [[devices]]
    host = "127.0.0.1"    # required: the node the monitor runs on
    device_id = 0         # required: the control device on that node
    num_qubits = 24
    method = "automatic"  # automatic | statevector | matrix_product_state | stabilizer
    seed = 7
    threads = 1
    noise = { depolarizing = 0.001, depolarizing_2q = 0.01, readout = 0.02 }

Entry ``j`` binds qrank ``j``. With no file, :func:`default_devices` binds Q local
devices on 127.0.0.1.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from .errors import ConfigError

LOCAL_HOST = "127.0.0.1"
METHODS = ("automatic", "statevector", "matrix_product_state", "stabilizer")
BACKENDS = ("aer",)
DEFAULT_BASIS = ("rz", "sx", "x", "h", "cx", "measure", "reset", "delay")
NOISE_KEYS = ("depolarizing", "depolarizing_2q", "readout", "generic")


@dataclass(frozen=True)
class DeviceSpec:
    """One quantum device, identified by ``(host, device_id)``."""

    host: str
    device_id: int
    num_qubits: int = 128
    backend: str = "aer"
    method: str = "automatic"
    noise: Mapping[str, Any] | None = None
    seed: int | None = None
    threads: int = 1
    basis_gates: tuple[str, ...] = DEFAULT_BASIS
    coupling: str | tuple[tuple[int, int], ...] = "line"
    #: calibration source (``fake:<FakeBackend>`` or a JSON path): ISA and noise come from it
    calibration: str | None = None
    source: str = field(default="<embedded default>", compare=False)

    @property
    def key(self) -> tuple[str, int]:
        """The paper's ``{IP, device_id}`` identifier."""
        return (self.host, self.device_id)

    @property
    def name(self) -> str:
        return f"{self.host}:{self.device_id}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source")
        d["noise"] = dict(self.noise) if self.noise else None
        return d


_FIELD_TYPES = {f.name: f for f in fields(DeviceSpec)}


def default_devices(count: int, *, host: str = LOCAL_HOST, **overrides: Any) -> list[DeviceSpec]:
    """The embedded default: ``count`` ideal local devices ``(host, 0..count-1)``."""
    return [
        DeviceSpec(host=host, device_id=i, seed=1000 + i, **overrides) for i in range(count)
    ]


def load_devices(path: str | os.PathLike[str]) -> list[DeviceSpec]:
    """Read a devices TOML file; errors name the file, the entry and the field."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"Cannot read devices file '{path}': {exc.strerror}.") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Devices file '{path}' is not valid TOML: {exc}.") from None
    return parse_devices(doc, source=str(path))


def parse_devices(doc: Mapping[str, Any], *, source: str = "<devices>") -> list[DeviceSpec]:
    """Validate a parsed devices document into a list of :class:`DeviceSpec`."""
    unknown_top = set(doc) - {"devices", "defaults"}
    if unknown_top:
        raise ConfigError(
            f"Devices file '{source}' has unknown top-level key(s) {sorted(unknown_top)}; "
            "expected a [[devices]] array and an optional [defaults] table."
        )
    entries = doc.get("devices")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(
            f"Devices file '{source}' needs a non-empty [[devices]] array of tables."
        )
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"Devices file '{source}': [defaults] must be a table.")
    specs = []
    seen: dict[tuple[str, int], int] = {}
    for index, entry in enumerate(entries):
        where = f"Devices file '{source}', entry {index} ([[devices]] #{index + 1})"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table, got {entry!r}.")
        spec = _parse_entry({**defaults, **entry}, where, source)
        if spec.key in seen:
            raise ConfigError(
                f"{where}: device (host={spec.host!r}, device_id={spec.device_id}) is "
                f"already defined by entry {seen[spec.key]}."
            )
        seen[spec.key] = index
        specs.append(spec)
    return specs


def _parse_entry(entry: dict[str, Any], where: str, source: str) -> DeviceSpec:
    unknown = set(entry) - (set(_FIELD_TYPES) - {"source"})
    if unknown:
        raise ConfigError(
            f"{where} has unknown field(s) {sorted(unknown)}; known fields are "
            f"{sorted(set(_FIELD_TYPES) - {'source'})}."
        )
    for required in ("host", "device_id"):
        if required not in entry:
            raise ConfigError(f"{where} is missing the required field '{required}'.")
    values: dict[str, Any] = {"source": source}
    values["host"] = _check(entry, "host", str, where, lambda v: bool(v.strip()), "a non-empty string")
    values["device_id"] = _check(entry, "device_id", int, where, lambda v: v >= 0, "an integer >= 0")
    if "num_qubits" in entry:
        values["num_qubits"] = _check(entry, "num_qubits", int, where, lambda v: v >= 1, "an integer >= 1")
    if "backend" in entry:
        values["backend"] = _check(entry, "backend", str, where, lambda v: v in BACKENDS, f"one of {BACKENDS}")
    if "method" in entry:
        values["method"] = _check(entry, "method", str, where, lambda v: v in METHODS, f"one of {METHODS}")
    if "seed" in entry:
        values["seed"] = _check(entry, "seed", int, where, lambda v: v >= 0, "an integer >= 0")
    if "threads" in entry:
        values["threads"] = _check(entry, "threads", int, where, lambda v: v >= 1, "an integer >= 1")
    if "basis_gates" in entry:
        values["basis_gates"] = _parse_basis(entry["basis_gates"], where)
    if "coupling" in entry:
        values["coupling"] = _parse_coupling(entry["coupling"], where, values.get("num_qubits", 128))
    if "noise" in entry:
        values["noise"] = _parse_noise(entry["noise"], where)
    if "calibration" in entry:
        values.update(_parse_calibration(entry, where, source))
    return DeviceSpec(**values)


def _parse_calibration(entry: dict[str, Any], where: str, source: str) -> dict[str, Any]:
    """A calibrated entry takes num_qubits, basis_gates and coupling (and its noise) from it."""
    from .calibration import calibrated_fields

    clash = sorted({"num_qubits", "basis_gates", "coupling", "noise"} & set(entry))
    if clash:
        raise ConfigError(f"{where} sets 'calibration' and {clash}; those come from the calibration, drop them.")
    value = entry["calibration"]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}, field 'calibration' must be a fake backend name or a JSON file, got {value!r}.")
    base = Path(source).parent if source and not source.startswith("<") else None
    try:
        return calibrated_fields(value, base=base)
    except ConfigError as exc:
        raise ConfigError(f"{where}, field 'calibration': {exc}") from None


#: Instructions a basis may name besides Qiskit's standard gates.
_NON_GATES = ("measure", "reset", "delay", "barrier")


def known_gate_names() -> frozenset[str] | None:
    """Qiskit's standard gate names (None when qiskit is not installed: not checked then)."""
    try:
        from qiskit.circuit.library.standard_gates import get_standard_gate_name_mapping
    except ImportError:  # pragma: no cover - qiskit is a dependency
        return None
    return frozenset(get_standard_gate_name_mapping()) | frozenset(_NON_GATES)


def _parse_basis(gates: Any, where: str) -> tuple[str, ...]:
    if not isinstance(gates, list) or not gates or not all(isinstance(g, str) for g in gates):
        raise ConfigError(f"{where}, field 'basis_gates' must be a non-empty list of gate names, got {gates!r}.")
    duplicates = sorted({g for g in gates if gates.count(g) > 1})
    if duplicates:
        raise ConfigError(f"{where}, field 'basis_gates' names {duplicates} more than once.")
    known = known_gate_names() if tuple(gates) != DEFAULT_BASIS else None
    if known is not None:
        unknown = [g for g in gates if g not in known]
        if unknown:
            raise ConfigError(
                f"{where}, field 'basis_gates' has gate(s) {unknown} that Qiskit does not know; use "
                f"standard gate names such as rz, sx, x, h, cx, cz, ecr, u, measure, reset, delay."
            )
    if "measure" not in gates:
        raise ConfigError(
            f"{where}, field 'basis_gates' must include 'measure' (the device returns measured counts), got {gates!r}."
        )
    return tuple(gates)


def _check(entry, key, typ, where, ok, expected):
    value = entry[key]
    if not isinstance(value, typ) or isinstance(value, bool) or not ok(value):
        raise ConfigError(f"{where}, field '{key}' must be {expected}, got {value!r}.")
    return value


def _parse_coupling(value: Any, where: str, width: int = 128) -> str | tuple[tuple[int, int], ...]:
    if value in ("line", "full"):
        return value
    if isinstance(value, list) and value and all(
        isinstance(e, list) and len(e) == 2 and all(isinstance(q, int) and not isinstance(q, bool) and q >= 0 for q in e)
        for e in value
    ):
        pairs = tuple((a, b) for a, b in value)
        loops = [list(p) for p in pairs if p[0] == p[1]]
        if loops:
            raise ConfigError(f"{where}, field 'coupling' has self-loop(s) {loops}; a pair couples two different qubits.")
        outside = [list(p) for p in pairs if max(p) >= width]
        if outside:
            raise ConfigError(
                f"{where}, field 'coupling' has pair(s) {outside} outside the device's {width} qubits (0..{width - 1})."
            )
        seen: set = set()
        repeated = [list(p) for p in pairs if p in seen or seen.add(p)]
        if repeated:
            raise ConfigError(f"{where}, field 'coupling' lists pair(s) {repeated} more than once.")
        return pairs
    raise ConfigError(
        f"{where}, field 'coupling' must be \"line\", \"full\" or a list of [a, b] qubit pairs, got {value!r}."
    )


def _parse_noise(value: Any, where: str) -> dict[str, Any] | None:
    if value in (None, False, "none", {}):
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{where}, field 'noise' must be a table, got {value!r}.")
    unknown = set(value) - set(NOISE_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}, field 'noise' has unknown key(s) {sorted(unknown)}; known keys are {list(NOISE_KEYS)}."
        )
    for key in ("depolarizing", "depolarizing_2q", "readout"):
        if key in value:
            p = value[key]
            if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
                raise ConfigError(f"{where}, field 'noise.{key}' must be a probability in [0, 1], got {p!r}.")
    if "generic" in value and not isinstance(value["generic"], bool):
        raise ConfigError(f"{where}, field 'noise.generic' must be true or false, got {value['generic']!r}.")
    rates = sorted(k for k in value if k != "generic")
    if value.get("generic") and rates:
        raise ConfigError(
            f"{where}, field 'noise' sets generic = true together with {rates}; a generic noise model "
            "is derived from a Qiskit backend and takes no rates: use one or the other."
        )
    return dict(value)


def resolve_devices(
    devices: str | os.PathLike[str] | Sequence[DeviceSpec] | None, quantum_size: int
) -> list[DeviceSpec]:
    """Turn the ``devices=`` argument of :func:`init` into exactly ``quantum_size`` specs."""
    if devices is None:
        return default_devices(quantum_size)
    specs = load_devices(devices) if isinstance(devices, (str, os.PathLike)) else list(devices)
    if len(specs) < quantum_size:
        source = specs[0].source if specs else str(devices)
        raise ConfigError(
            f"Devices file '{source}' defines {len(specs)} device(s) but {quantum_size} quantum "
            f"process(es) need a binding; add entries or start fewer quantum processes."
        )
    return specs[:quantum_size]
