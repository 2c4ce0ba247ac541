"""The GHZ pipeline's stage names and its equal-granularity block widths.

Plain Python (no qiskit, no MPI): the widgets draw them without importing the pipeline.
"""

from __future__ import annotations

#: The pipeline's steps in order, then ``"total"``: the keys of ``GHZResult.timings``.
STAGES = ("cut", "compile", "scatter", "barrier", "execute", "gather", "reconstruct", "total")


def block_widths(num_qubits: int, num_blocks: int) -> list[int]:
    """Widths of the blocks: the first ``n % m`` blocks get ``ceil(n/m)``, the rest ``floor(n/m)``."""
    if num_qubits < 1 or not 1 <= num_blocks <= num_qubits:
        raise ValueError(f"Cannot cut {num_qubits} qubit(s) into {num_blocks} block(s).")
    base, extra = divmod(num_qubits, num_blocks)
    return [base + 1 if i < extra else base for i in range(num_blocks)]
