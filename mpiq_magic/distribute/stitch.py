"""Pair the blocks' shots and correct them: the uncut circuit's Z-basis samples, vectorised.

Shot k of every block (and variant) is paired. In the plan's dependency order:

* ``raw(B)``: B's clbits; with variant cuts, row k comes from the variant its bits select
  (``variant = sum_j bit_j << j``, one fancy-indexing gather, no Python loop over shots);
* ``bit(c)``: the control bit of cut c = the raw source clbit XOR the bits of the Pauli frames
  that flip it (frames entering the source block before that measurement);
* finally every block's clbits are XOR-ed with ``bit_j * mask_j`` for its frame cuts, and each of
  the circuit's clbits is read from its last writer.

Packed arrays follow qiskit's ``BitArray`` layout (see :mod:`mpiq_magic.ghz.reconstruct`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from qiskit.primitives.containers import BitArray

from ..ghz.reconstruct import ReconstructionError, num_bytes, pack_bits, unpack_bits
from .feedforward import FeedForwardPlan


@dataclass
class Stitched:
    """The reconstructed samples: ``bits`` packed (shots, ceil(num_clbits/8)), per-cut bit rates."""

    bits: np.ndarray
    num_clbits: int
    shots: int
    bit_rates: dict[int, float]  # cut id -> fraction of shots whose control bit was 1
    seconds: float

    def bitarray(self) -> BitArray:
        return BitArray(self.bits, self.num_clbits)


def stitch(plan: FeedForwardPlan, memories: Mapping[tuple[int, int], np.ndarray]) -> Stitched:
    """Combine ``memories[(qrank, variant)]`` (packed shots of each block variant) into samples of
    the uncut circuit.

    Raises:
        ReconstructionError: a block variant is missing, or shapes / shot counts disagree.
    """
    t0 = time.perf_counter()
    unpacked: dict[tuple[int, int], np.ndarray] = {}
    shots = None
    for p, block in plan.blocks.items():
        if not block.runs:
            continue
        for v in range(block.num_variants):
            mem = memories.get((p, v))
            if mem is None:
                raise ReconstructionError(f"No shots for block qrank {p}, variant {v}; cannot pair the blocks.")
            mem = np.asarray(mem, dtype=np.uint8)
            if mem.ndim != 2 or mem.shape[1] != num_bytes(block.num_clbits):
                raise ReconstructionError(
                    f"Block qrank {p} variant {v} has {block.num_clbits} clbits, so its packed shots must "
                    f"have shape (shots, {num_bytes(block.num_clbits)}); got {mem.shape}."
                )
            if shots is None:
                shots = mem.shape[0]
            elif mem.shape[0] != shots:
                raise ReconstructionError(
                    f"Every block must return the same number of shots to be paired; block qrank {p} "
                    f"variant {v} has {mem.shape[0]}, others {shots}."
                )
            unpacked[(p, v)] = unpack_bits(mem, block.num_clbits)
    if not shots:
        raise ReconstructionError("The blocks returned no shots; nothing to reconstruct.")
    cuts = {c.id: c for c in plan.cuts}
    raw: dict[int, np.ndarray] = {}
    bit: dict[int, np.ndarray] = {}
    rows = np.arange(shots)
    for kind, key in plan.order:
        if kind == "raw":
            block = plan.blocks[key]
            if not block.runs:
                continue
            if block.num_variants == 1:
                raw[key] = unpacked[(key, 0)]
            else:
                index = np.zeros(shots, np.intp)
                for j, cid in enumerate(block.variant_cuts):
                    index |= bit[cid].astype(np.intp) << j
                stacked = np.stack([unpacked[(key, v)] for v in range(block.num_variants)])
                raw[key] = stacked[index, rows]
        else:
            cut = cuts[key]
            value = raw[cut.source][:, cut.clbit].copy()
            for j, mask in plan.blocks[cut.source].frames.items():
                if mask[cut.clbit]:
                    value ^= bit[j]
            bit[key] = value
    out = np.zeros((shots, plan.num_clbits), np.uint8)
    final: dict[int, np.ndarray] = {}
    for p, block in plan.blocks.items():
        if not block.runs:
            continue
        b = raw[p].copy()
        for j, mask in block.frames.items():
            if mask.any():
                b ^= bit[j][:, None] & mask[None, :]
        final[p] = b
    for clbit, (p, local) in plan.outputs.items():
        out[:, clbit] = final[p][:, local]
    packed = pack_bits(out) if plan.num_clbits else np.zeros((shots, 0), np.uint8)
    return Stitched(
        bits=packed,
        num_clbits=plan.num_clbits,
        shots=shots,
        bit_rates={k: float(v.mean()) for k, v in bit.items()},
        seconds=time.perf_counter() - t0,
    )


def counts_of(bits: np.ndarray, num_clbits: int) -> dict[str, int]:
    """Sparse counts (qiskit bitstrings, clbit 0 rightmost) of packed rows, most frequent first."""
    if bits.shape[0] == 0:
        return {}
    rows = np.ascontiguousarray(bits)
    view = rows.view(np.dtype((np.void, max(rows.shape[1], 1)))).ravel() if rows.shape[1] else None
    if view is None:
        return {"": int(rows.shape[0])}
    _, index, counts = np.unique(view, return_index=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    uniq = unpack_bits(rows[index[order]], num_clbits)[:, ::-1]
    table = bytes.maketrans(b"\x00\x01", b"01")
    return {r.tobytes().translate(table).decode(): int(c) for r, c in zip(uniq, counts[order])}


def run_locally(plan: FeedForwardPlan, shots: int, *, simulator: Any = None, seed: int | None = None) -> Stitched:
    """Run every block variant in this process on qiskit-aer (``simulator``: an ``AerSimulator``)
    and stitch: the single-process reference of :func:`mpiq_magic.distribute.execute.distribute`."""
    from qiskit import transpile
    from qiskit_aer import AerSimulator

    sim = simulator or AerSimulator()
    memories = {}
    for n, (p, block) in enumerate(sorted(plan.blocks.items())):
        for v, circuit in enumerate(block.circuits):
            tc = transpile(circuit, sim, optimization_level=0)
            res = sim.run(tc, shots=shots, memory=True,
                          seed_simulator=None if seed is None else seed + 1000 * n + v).result()
            memory = res.get_memory(0)
            bits = np.array([[int(ch) for ch in m.replace(" ", "")[::-1]] for m in memory], np.uint8)
            memories[(p, v)] = pack_bits(bits.reshape(shots, block.num_clbits))
    return stitch(plan, memories)
