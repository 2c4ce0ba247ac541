"""The MPI side of ``mpiq distribute``: ``python -m mpiq_magic.distribute.job SPEC OUT``.

Every rank runs this under ``mpiexec`` (``MPIQ_CLASSICAL`` / ``MPIQ_DEVICES`` set by
:func:`mpiq_magic.launch.mpiq_command`). ``SPEC`` (JSON): ``{"qasm": path, "shots": S,
"monitors": null | M, "max_variants": V, "optimization_level": L, "timeout": T, "top": K,
"observables": null | [Pauli strings], "mode": "auto" | "feed-forward" | "qpd", "max_overhead": X}``.
Classical rank 0 writes ``OUT``: the result (``DistributeResult.to_dict``) plus ``startup``, or
``{"error": ...}``; progress goes to stdout as ``MPIQ-PROGRESS {json}`` lines.
"""

from __future__ import annotations

import json
import os
import sys
import time


def load_qasm(path: str):
    """A QuantumCircuit from an OpenQASM 2 or 3 file (the version line decides)."""
    from qiskit import qasm2, qasm3

    text = open(path).read()
    head = "\n".join(line for line in text.splitlines()[:5] if not line.strip().startswith("//"))
    if "OPENQASM 3" in head:
        return qasm3.loads(text)
    return qasm2.loads(text, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)


def main(argv: list[str]) -> int:
    t_main = time.time()
    spec_path, out_path = argv
    with open(spec_path) as f:
        spec = json.load(f)
    from .. import kernel as mpiq
    from ..ghz.job import emit
    from .execute import distribute

    hc = None
    out: dict = {}
    code = 0
    try:
        hc = mpiq.init(timeout=float(spec.get("timeout", 600)))
        is_root = hc.is_classical and hc.rank == 0
        circuit = load_qasm(spec["qasm"]) if is_root else None
        t_ready = time.time()
        result = distribute(
            hc, circuit, shots=int(spec.get("shots", 1024)), monitors=spec.get("monitors"),
            max_variants=int(spec.get("max_variants", 16)),
            optimization_level=int(spec.get("optimization_level", 1)),
            timeout=float(spec.get("timeout", 600)), progress=emit if is_root else None,
            observables=spec.get("observables"), mode=spec.get("mode", "auto"),
            max_overhead=spec.get("max_overhead", 1000.0),
        )
        if result is not None:
            out = result.to_dict(top=spec.get("top", 64))
            out["startup"] = {"launch_to_ready": t_ready - float(spec.get("launched_at", t_main))}
            out["devices"] = [d.name for d in hc.devices]
    except Exception as exc:  # noqa: BLE001 - reported to the parent through OUT
        code = 1
        out = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"[pid {os.getpid()}] {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        if hc is not None:
            is_root = hc.is_classical and hc.rank == 0
            hc.free()
        else:
            is_root = True
    if is_root:
        from ..launch import write_json_atomic

        write_json_atomic(out_path, out)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
