"""Distributed GHZ case study (paper section 5): cut, compile, scatter, synchronise, execute,
gather, reconstruct.

Modules are named after the workflow steps:

- :mod:`.cut` — equal-granularity cut of an n-qubit GHZ chain into m blocks;
- :mod:`.reconstruct` — classical feed-forward over the blocks' shots (vectorised numpy);
- :mod:`.pipeline` — the end-to-end run on an initialised hybrid communicator;
- :mod:`.report` — ``mpiq-report.html`` with plotly figures;
- :mod:`.job` / :mod:`.cli` — ``mpiq demo`` and ``mpiq ghz`` under the bundled ``mpiexec``.

Scope: Z-basis statistics of the uncut circuit are reconstructed exactly (ideal, and under
Pauli noise on every gate except the cut CNOTs, which become an ideal classical link).
Observables that need coherence across blocks (X-basis parity, fidelity witnesses) need
quasi-probability cutting and are out of scope.
"""

from .cut import Cut, Block, GHZCutError, block_widths, cut_ghz, ghz_circuit, assign_blocks
from .reconstruct import Reconstruction, BlockStats, reconstruct, feed_forward

__all__ = [
    "Cut",
    "Block",
    "GHZCutError",
    "block_widths",
    "cut_ghz",
    "ghz_circuit",
    "assign_blocks",
    "Reconstruction",
    "BlockStats",
    "reconstruct",
    "feed_forward",
]


def __getattr__(name: str):
    # The pipeline needs MPI and the monitor engine; import it only when asked for.
    if name in ("run_ghz", "GHZResult", "GHZRunError"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
