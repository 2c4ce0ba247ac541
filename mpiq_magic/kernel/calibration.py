"""Device calibrations: per-qubit and per-pair error rates, read without importing Qiskit.

A device entry may name a *calibration source* (``calibration = "FakeGuadalupeV2"`` in a
devices file); it then takes its width, basis gates and coupling map from the calibration, and
its monitor builds an Aer noise model from the error rates
(:func:`monitor_engine.calibration.calibration_noise_model`). Two kinds of source:

- a fake backend of ``qiskit-ibm-runtime`` (``"FakeGuadalupeV2"``, ``"FakeCairo"``,
  ``"guadalupe"``, ``"fake:FakeCairoV2"``): its stored calibration JSON files are read directly,
  so neither ``qiskit_ibm_runtime`` nor Qiskit is imported (that import takes seconds);
- a JSON file: this module's own format (:meth:`Calibration.to_dict`, written by
  :func:`save_calibration`), or an IBM ``props_*.json`` backend-properties file (coupling from
  its two-qubit gates).

Everything here is plain Python (json, dataclasses): the kernel imports no Qiskit.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

#: The ``format`` tag of this module's calibration JSON.
FORMAT = "mpiq-calibration/1"
#: Instructions every calibrated device also supports (IBM configurations list only gates).
EXTRA_INSTRUCTIONS = ("measure", "reset", "delay")


@dataclass(frozen=True)
class GateCalibration:
    """One calibrated gate on specific qubits: error probability and duration (seconds)."""

    gate: str
    qubits: tuple[int, ...]
    error: float
    duration: float | None = None


@dataclass(frozen=True)
class Calibration:
    """A device's calibration: width, ISA and error rates.

    ``readout_error[q]`` is the mean assignment error of qubit ``q``; ``prob_meas1_prep0`` /
    ``prob_meas0_prep1`` the asymmetric parts when known; ``t1`` / ``t2`` in seconds;
    ``coupling`` the directed pairs the two-qubit gate acts on.
    """

    name: str
    num_qubits: int
    basis_gates: tuple[str, ...]
    coupling: tuple[tuple[int, int], ...]
    readout_error: tuple[float, ...]
    gates: tuple[GateCalibration, ...] = ()
    t1: tuple[float | None, ...] = ()
    t2: tuple[float | None, ...] = ()
    frequency: tuple[float | None, ...] = ()
    prob_meas1_prep0: tuple[float | None, ...] = ()
    prob_meas0_prep1: tuple[float | None, ...] = ()
    readout_length: tuple[float | None, ...] = ()
    dt: float | None = None
    source: str = field(default="", compare=False)

    # ------------------------------------------------------------------ error look-ups
    def two_qubit_gate(self) -> str | None:
        """The name of the calibrated two-qubit gate (``cx``, ``ecr``, ``cz``), if any."""
        names = sorted({g.gate for g in self.gates if len(g.qubits) == 2})
        return names[0] if names else None

    def pair_errors(self) -> dict[tuple[int, int], float]:
        """Undirected pair ``(min, max)`` -> the worst two-qubit gate error on it; a coupled pair
        without any calibrated two-qubit gate counts as 1.0 (unknown: never usable)."""
        out: dict[tuple[int, int], float] = {}
        for g in self.gates:
            if len(g.qubits) == 2:
                key = (min(g.qubits), max(g.qubits))
                out[key] = max(out.get(key, 0.0), g.error)
        for a, b in self.coupling:  # coupled pairs without a calibrated gate: error unknown
            out.setdefault((min(a, b), max(a, b)), 1.0)
        return out

    def single_qubit_errors(self) -> list[float]:
        """Per qubit, the worst error of its calibrated non-virtual one-qubit gates (sx, x)."""
        out = [0.0] * self.num_qubits
        for g in self.gates:
            if len(g.qubits) == 1 and g.gate not in ("rz", "id", "delay", "reset"):
                q = g.qubits[0]
                out[q] = max(out[q], g.error)
        return out

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict[str, Any]:
        """This calibration in the ``mpiq-calibration/1`` JSON format."""
        d = asdict(self)
        d.pop("source")
        d["format"] = FORMAT
        d["coupling"] = [list(p) for p in self.coupling]
        d["gates"] = [
            {"gate": g.gate, "qubits": list(g.qubits), "error": g.error, "duration": g.duration}
            for g in self.gates
        ]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "<dict>") -> "Calibration":
        """Read the ``mpiq-calibration/1`` format (see :meth:`to_dict`).

        Raises:
            ConfigError: a missing or malformed field (named, with the source).
        """
        try:
            n = int(d["num_qubits"])
            gates = tuple(
                GateCalibration(str(g["gate"]), tuple(int(q) for q in g["qubits"]), float(g["error"]),
                                None if g.get("duration") is None else float(g["duration"]))
                for g in d.get("gates", ())
            )
            cal = cls(
                name=str(d.get("name", Path(source).stem)),
                num_qubits=n,
                basis_gates=tuple(str(g) for g in d["basis_gates"]),
                coupling=tuple((int(a), int(b)) for a, b in d["coupling"]),
                readout_error=tuple(float(e) for e in d["readout_error"]),
                gates=gates,
                **{k: tuple(None if v is None else float(v) for v in d.get(k, ()))
                   for k in ("t1", "t2", "frequency", "prob_meas1_prep0", "prob_meas0_prep1", "readout_length")},
                dt=None if d.get("dt") is None else float(d["dt"]),
                source=source,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"Calibration '{source}' is not a valid {FORMAT} document: {type(exc).__name__}: {exc}."
            ) from None
        _validate(cal)
        return cal


def _validate(cal: Calibration) -> None:
    where = f"Calibration '{cal.source or cal.name}'"
    if cal.num_qubits < 1:
        raise ConfigError(f"{where} has num_qubits={cal.num_qubits}; it must be at least 1.")
    if len(cal.readout_error) != cal.num_qubits:
        raise ConfigError(
            f"{where} gives {len(cal.readout_error)} readout errors for {cal.num_qubits} qubits."
        )
    for a, b in cal.coupling:
        if not (0 <= a < cal.num_qubits and 0 <= b < cal.num_qubits) or a == b:
            raise ConfigError(f"{where} has coupling pair ({a}, {b}) outside its {cal.num_qubits} qubits.")
    for p in list(cal.readout_error) + [g.error for g in cal.gates]:
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"{where} has an error rate {p!r} outside [0, 1].")


def save_calibration(cal: Calibration, path: str | os.PathLike[str]) -> Path:
    """Write ``cal`` as ``mpiq-calibration/1`` JSON to ``path``; returns the path."""
    path = Path(path)
    path.write_text(json.dumps(cal.to_dict(), indent=1))
    return path


# --------------------------------------------------------------------------- fake backends


def _fake_dir() -> Path | None:
    spec = importlib.util.find_spec("qiskit_ibm_runtime")  # top level: nothing is imported
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "fake_provider" / "backends"
    return path if path.is_dir() else None


@lru_cache(maxsize=1)
def fake_backends() -> dict[str, Path]:
    """Class name (``FakeGuadalupeV2``) -> directory of its stored calibration, for every fake
    backend of the installed qiskit-ibm-runtime (empty when it is not installed)."""
    base = _fake_dir()
    out: dict[str, Path] = {}
    if base is None:
        return out
    for sub in sorted(base.iterdir()):
        if not sub.is_dir():
            continue
        for py in sub.glob("fake_*.py"):
            for name in re.findall(r"^class (Fake\w+)\(", py.read_text(), flags=re.M):
                if list(sub.glob("props_*.json")) and list(sub.glob("conf_*.json")):
                    out[name] = sub
    return out


def available_calibrations() -> list[str]:
    """The fake backend names a device's ``calibration`` may name."""
    return sorted(fake_backends())


def _resolve_fake(name: str) -> str | None:
    wanted = name.split(":", 1)[1] if name.lower().startswith("fake:") else name
    known = fake_backends()
    norm = wanted.lower().removeprefix("ibmq_").removeprefix("ibm_")
    for cls in known:
        low = cls.lower()
        if low == norm or low == f"fake{norm}" or low.removesuffix("v2") in (norm, f"fake{norm}") \
                or low.removesuffix("v2").removeprefix("fake") == norm:
            return cls
    return None


def _looks_like_file(source: str) -> bool:
    return source.endswith(".json") or os.sep in source or "/" in source


def resolve_source(source: str, *, base: str | os.PathLike[str] | None = None) -> str:
    """The canonical form of a calibration source: ``fake:<ClassName>`` or an absolute path.

    Relative paths are taken relative to ``base`` (the devices file's folder).

    Raises:
        ConfigError: an unknown fake backend (the message lists the available ones) or a
            missing file.
    """
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(f"A calibration source must be a non-empty string, got {source!r}.")
    source = source.strip()
    if _looks_like_file(source):
        path = Path(source)
        if not path.is_absolute() and base is not None:
            path = Path(base) / path
        if not path.is_file():
            raise ConfigError(f"Calibration file '{path}' does not exist.")
        return str(path.resolve())
    cls = _resolve_fake(source)
    if cls is None:
        names = available_calibrations()
        if not names:
            raise ConfigError(
                f"Calibration '{source}' names a fake backend, but qiskit-ibm-runtime is not "
                "installed (pip install qiskit-ibm-runtime, or 'mpiq-magic[calibration]'); "
                "or give a calibration JSON file."
            )
        raise ConfigError(
            f"Calibration '{source}' is neither a JSON file nor a known fake backend; "
            f"available fake backends: {', '.join(names)}."
        )
    return f"fake:{cls}"


@lru_cache(maxsize=32)
def load_calibration(source: str) -> Calibration:
    """The calibration named by ``source`` (a fake backend name or a JSON file path).

    Raises:
        ConfigError: unknown backend (listing the available ones), unreadable or invalid file.
    """
    canonical = resolve_source(source)
    if canonical.startswith("fake:"):
        folder = fake_backends()[canonical[5:]]
        conf = json.loads(next(folder.glob("conf_*.json")).read_text())
        props = json.loads(next(folder.glob("props_*.json")).read_text())
        return _from_ibm(props, conf, source=canonical)
    try:
        doc = json.loads(Path(canonical).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Cannot read calibration file '{canonical}': {exc}.") from None
    if isinstance(doc, dict) and doc.get("format") == FORMAT:
        return Calibration.from_dict(doc, source=canonical)
    if isinstance(doc, dict) and "qubits" in doc and "gates" in doc:
        return _from_ibm(doc, None, source=canonical)
    raise ConfigError(
        f"Calibration file '{canonical}' is neither {FORMAT} JSON (a 'format' field) nor IBM "
        "backend properties (the 'qubits' and 'gates' fields)."
    )


_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def _from_ibm(props: Mapping[str, Any], conf: Mapping[str, Any] | None, *, source: str) -> Calibration:
    qubits = props["qubits"]
    n = int(conf["n_qubits"]) if conf else len(qubits)

    def per_qubit(name: str, scale_time: bool = False) -> tuple[float | None, ...]:
        out: list[float | None] = []
        for q in range(n):
            value = None
            for item in qubits[q] if q < len(qubits) else ():
                if item.get("name") == name:
                    value = float(item["value"])
                    if scale_time:
                        value *= _UNITS.get(item.get("unit", "s"), 1.0)
            out.append(value)
        return tuple(out)

    gates = []
    for g in props.get("gates", ()):
        params = {p["name"]: p for p in g.get("parameters", ())}
        error = float(params["gate_error"]["value"]) if "gate_error" in params else 0.0
        duration = None
        if "gate_length" in params:
            duration = float(params["gate_length"]["value"]) * _UNITS.get(params["gate_length"].get("unit", "s"), 1.0)
        gates.append(GateCalibration(str(g["gate"]), tuple(int(q) for q in g["qubits"]), min(max(error, 0.0), 1.0), duration))
    if conf and conf.get("coupling_map"):
        coupling = tuple((int(a), int(b)) for a, b in conf["coupling_map"])
    else:
        coupling = tuple(sorted({g.qubits for g in gates if len(g.qubits) == 2}))
    basis = list(conf["basis_gates"]) if conf else sorted({g.gate for g in gates})
    basis += [x for x in EXTRA_INSTRUCTIONS if x not in basis]
    readout = tuple(min(max(r if r is not None else 0.0, 0.0), 1.0) for r in per_qubit("readout_error"))
    dt = conf.get("dt") if conf else None
    cal = Calibration(
        name=str(props.get("backend_name") or (conf or {}).get("backend_name") or Path(source).stem),
        num_qubits=n,
        basis_gates=tuple(basis),
        coupling=coupling,
        readout_error=readout,
        gates=tuple(gates),
        t1=per_qubit("T1", True),
        t2=per_qubit("T2", True),
        frequency=tuple(None if f is None else f * 1e9 for f in per_qubit("frequency")),
        prob_meas1_prep0=per_qubit("prob_meas1_prep0"),
        prob_meas0_prep1=per_qubit("prob_meas0_prep1"),
        readout_length=per_qubit("readout_length", True),
        dt=None if dt is None else float(dt) * 1e-9,
        source=source,
    )
    _validate(cal)
    return cal


def calibrated_fields(source: str, *, base: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The :class:`~mpiq_magic.kernel.config.DeviceSpec` fields a calibration determines:
    ``calibration`` (canonical source), ``num_qubits``, ``basis_gates``, ``coupling``.

    Raises:
        ConfigError: see :func:`load_calibration`.
    """
    canonical = resolve_source(source, base=base)
    cal = load_calibration(canonical)
    return {
        "calibration": canonical,
        "num_qubits": cal.num_qubits,
        "basis_gates": cal.basis_gates,
        "coupling": cal.coupling,
    }


def calibrated_device(host: str, device_id: int, calibration: str, **fields: Any):
    """A :class:`~mpiq_magic.kernel.config.DeviceSpec` whose ISA comes from ``calibration``.

    Raises:
        ConfigError: see :func:`load_calibration`.
    """
    from .config import DeviceSpec

    return DeviceSpec(host=host, device_id=device_id, **{**fields, **calibrated_fields(calibration)})
