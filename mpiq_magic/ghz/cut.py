"""Equal-granularity cut of an n-qubit GHZ chain (paper section 5.1, Figure 6).

The chain is ``H(q0)`` followed by ``CNOT(q_i -> q_{i+1})`` for ``i = 0 .. n-2``. Cutting it into
``m`` blocks of ``ceil(n/m)`` or ``floor(n/m)`` consecutive qubits removes the ``m - 1`` CNOTs
that cross a block boundary (last qubit of block ``i-1`` -> first qubit of block ``i``); each
one becomes classical feed-forward in :mod:`.reconstruct`. Block 0 keeps the H; every block
measures all of its qubits (qubit ``j`` -> clbit ``j``).
"""

from __future__ import annotations

from dataclasses import dataclass

from qiskit import QuantumCircuit

from ..kernel.errors import UsageError
from .stages import block_widths


class GHZCutError(UsageError):
    """A cut that cannot be made: no qubits, no blocks, or more blocks than qubits."""


@dataclass(frozen=True)
class Block:
    """One sub-circuit of the cut: global qubits ``start .. start + width - 1``."""

    index: int
    start: int
    width: int
    circuit: QuantumCircuit

    @property
    def stop(self) -> int:
        return self.start + self.width

    @property
    def has_h(self) -> bool:
        return self.index == 0


@dataclass(frozen=True)
class Cut:
    """The blocks of a cut GHZ chain, in chain order."""

    num_qubits: int
    blocks: tuple[Block, ...]

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def widths(self) -> list[int]:
        return [b.width for b in self.blocks]

    @property
    def max_width(self) -> int:
        return max(self.widths)

    @property
    def cut_pairs(self) -> list[tuple[int, int]]:
        """The global ``(control, target)`` pairs of the CNOTs replaced by feed-forward."""
        return [(b.start - 1, b.start) for b in self.blocks[1:]]


def _check_sizes(num_qubits: int, num_blocks: int) -> None:
    if isinstance(num_qubits, bool) or not isinstance(num_qubits, int) or num_qubits < 1:
        raise GHZCutError(f"A GHZ chain needs at least 1 qubit, got num_qubits={num_qubits!r}.")
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 1:
        raise GHZCutError(f"A cut needs at least 1 block, got num_blocks={num_blocks!r}.")
    if num_blocks > num_qubits:
        raise GHZCutError(
            f"Cannot cut a {num_qubits}-qubit GHZ chain into {num_blocks} blocks: every block "
            f"needs at least one qubit, so use at most {num_qubits} blocks."
        )


def ghz_circuit(num_qubits: int, *, measure: bool = True, name: str | None = None) -> QuantumCircuit:
    """The uncut GHZ preparation chain, measured in the Z basis (qubit j -> clbit j)."""
    _check_sizes(num_qubits, 1)
    return _chain(num_qubits, with_h=True, measure=measure, name=name or f"ghz_{num_qubits}")


def block_circuit(width: int, *, with_h: bool, measure: bool = True) -> QuantumCircuit:
    """One block: the CNOT chain on ``width`` qubits, with the H only for block 0.

    Equal-width blocks get identical circuits (same name too), so the compile cache sees one
    structure per (width, has-H) pair.
    """
    name = f"ghz_block_{width}{'_h' if with_h else ''}"
    return _chain(width, with_h=with_h, measure=measure, name=name)


def _chain(width: int, *, with_h: bool, measure: bool, name: str) -> QuantumCircuit:
    qc = QuantumCircuit(width, width if measure else 0, name=name)
    if with_h:
        qc.h(0)
    for q in range(width - 1):
        qc.cx(q, q + 1)
    if measure:
        qc.measure(range(width), range(width))
    return qc


def cut_ghz(num_qubits: int, num_blocks: int) -> Cut:
    """Cut an ``num_qubits``-qubit GHZ chain into ``num_blocks`` equal-granularity blocks."""
    _check_sizes(num_qubits, num_blocks)
    widths = block_widths(num_qubits, num_blocks)
    circuits: dict[tuple[int, bool], QuantumCircuit] = {}
    blocks = []
    start = 0
    for index, width in enumerate(widths):
        key = (width, index == 0)
        if key not in circuits:
            circuits[key] = block_circuit(width, with_h=index == 0)
        blocks.append(Block(index=index, start=start, width=width, circuit=circuits[key]))
        start += width
    return Cut(num_qubits=num_qubits, blocks=tuple(blocks))


def assign_blocks(num_blocks: int, num_monitors: int, *, serial: bool = False) -> list[list[int]]:
    """Deal blocks to monitors: ``result[qrank]`` lists the block indices that monitor runs, in turn.

    Blocks go round-robin (block ``b`` -> monitor ``b % M``) so every monitor gets
    ``ceil(B/M)`` or ``floor(B/M)`` of them. With ``serial=True`` every block goes to monitor 0
    (the paper's T_serial) and the other monitors get nothing.
    """
    if num_monitors < 1:
        raise GHZCutError(f"At least one quantum monitor is needed, got {num_monitors}.")
    if num_blocks < 1:
        raise GHZCutError(f"At least one block is needed, got {num_blocks}.")
    if serial:
        return [list(range(num_blocks))] + [[] for _ in range(num_monitors - 1)]
    if num_monitors > num_blocks:
        raise GHZCutError(
            f"{num_monitors} monitors but only {num_blocks} block(s): {num_monitors - num_blocks} "
            f"monitor(s) would sit idle; use at least {num_monitors} blocks or fewer monitors."
        )
    return [list(range(j, num_blocks, num_monitors)) for j in range(num_monitors)]
