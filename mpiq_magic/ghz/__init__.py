"""Distributed GHZ case study (paper section 5): cut, compile, scatter, synchronise, execute,
gather, reconstruct.

Modules are named after the workflow steps:

- :mod:`.stages` — the stage names and equal-granularity block widths (plain Python);
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

from importlib import import_module

# Lazy: importing the package (or its plain-Python ``stages``, which the widgets use) must not
# import qiskit; the pipeline needs MPI and the monitor engine too. ``reconstruct`` is the
# submodule: the function is ``mpiq_magic.ghz.reconstruct.reconstruct``.
_EXPORTS = {
    "Cut": ".cut",
    "Block": ".cut",
    "GHZCutError": ".cut",
    "block_widths": ".stages",
    "cut_ghz": ".cut",
    "ghz_circuit": ".cut",
    "assign_blocks": ".cut",
    "Reconstruction": ".reconstruct",
    "BlockStats": ".reconstruct",
    "feed_forward": ".reconstruct",
    "run_ghz": ".pipeline",
    "GHZResult": ".pipeline",
    "GHZRunError": ".pipeline",
}

__all__ = [name for name, module in _EXPORTS.items() if module != ".pipeline"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module, __name__), name)
