"""A small real MPI-Q run that feeds the widget tests: run under the bundled mpiexec with
MPIQ_CLASSICAL=C and C+Q processes. Prints ``MPIQ-PROGRESS {json}`` event lines (the protocol of
:mod:`mpiq_magic.events`): the topology, CC/QQ/ALL barrier records, and a distributed
GHZ run's live progress and result."""

from __future__ import annotations

import json
import sys

from mpiq_magic import kernel as mpiq
from mpiq_magic.ghz.pipeline import run_ghz

PREFIX = "MPIQ-PROGRESS "


def emit(event: str, info: dict) -> None:
    sys.stdout.write(PREFIX + json.dumps({"event": event, **info}) + "\n")
    sys.stdout.flush()


def main() -> None:
    qubits = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    hc = mpiq.init(timeout=60)
    root = hc.is_classical and hc.rank == 0
    if root:
        emit("topology", {"topology": hc.topology.to_dict()})
    for flag in (mpiq.CC, mpiq.QQ, mpiq.ALL):
        for _ in range(rounds):
            record = hc.barrier(flag)
            if record.participated and (root or (flag == mpiq.QQ and hc.qrank == 0)):
                emit("barrier", {"record": record.to_dict()})
    result = run_ghz(hc, qubits, 2 * hc.quantum_size, shots=512, progress=emit)
    if result is not None:
        emit("result", {"result": result.to_dict(top=64)})
    hc.free()


if __name__ == "__main__":
    main()
