"""Classical feed-forward reconstruction of the cut GHZ chain (paper section 5.2, last phase).

Why it is exact in the Z basis: after the H on qubit 0, the chain is CNOTs only, and a CNOT
permutes computational basis states. The diagonal of the density matrix (the Z-basis
distribution) therefore evolves as a classical Markov chain, and so does any Pauli noise
(X/Y flip bits, Z does nothing to the diagonal). The cut CNOT from the last qubit of block
``i-1`` onto the first qubit of block ``i`` flips that qubit when the control bit ``c`` is 1;
the rest of block ``i`` is a CNOT chain, which is linear over GF(2) and carries the flip to
every qubit of the block. So block ``i``'s true outcome is its own outcome XOR ``c`` on all of
its bits, where ``c`` is the *corrected* last bit of block ``i-1``. Blocks are independent, so
pairing shot ``k`` of every block gives exact samples of the uncut circuit's Z-basis
distribution (with the cut CNOTs ideal).

Vectorised: with ``l_i`` the raw last bit of block ``i`` (one column per block), the flip of
block ``i`` is ``XOR_{j<i} l_j`` -- a prefix XOR, ``np.bitwise_xor.accumulate``. Nothing loops over
shots or qubits in Python; shots are processed in bounded chunks so 10,000 qubits x many shots
stays within memory.

Bit layout: packed shot arrays follow qiskit's ``BitArray`` (uint8, big-endian per shot: clbit 0
is the least significant bit of the last byte), and bitstrings follow qiskit's counts order
(clbit ``n-1`` leftmost).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping, Sequence

import numpy as np

from ..kernel.errors import UsageError

_CHUNK_BYTES = 1 << 25  # unpacked bits materialised at once (32 MiB)


class ReconstructionError(UsageError):
    """Block results that cannot be stitched together (wrong shapes, unequal shots)."""


def num_bytes(num_bits: int) -> int:
    return (num_bits + 7) // 8


def unpack_bits(packed: np.ndarray, num_bits: int) -> np.ndarray:
    """``(shots, num_bits)`` uint8 of 0/1 with column ``j`` = clbit ``j``, from BitArray layout."""
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8), axis=-1)
    return bits[..., ::-1][..., :num_bits]


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Inverse of :func:`unpack_bits`: column ``j`` = clbit ``j`` -> BitArray layout."""
    bits = np.asarray(bits, dtype=np.uint8)
    num_bits = bits.shape[-1]
    pad = 8 * num_bytes(num_bits) - num_bits
    rev = bits[..., ::-1]
    if pad:
        rev = np.concatenate([np.zeros(rev.shape[:-1] + (pad,), np.uint8), rev], axis=-1)
    return np.packbits(rev, axis=-1)


def bit_column(packed: np.ndarray, bit: int) -> np.ndarray:
    """Clbit ``bit`` of every shot, read straight from the packed array (no unpacking)."""
    nb = packed.shape[-1]
    return (packed[:, nb - 1 - bit // 8] >> (bit % 8)) & 1


def ones_pattern(num_bits: int) -> np.ndarray:
    """The packed row of ``num_bits`` ones (BitArray layout)."""
    return pack_bits(np.ones((1, num_bits), np.uint8))[0]


def feed_forward(block_bits: Sequence[np.ndarray]) -> np.ndarray:
    """Stitch unpacked block outcomes ``(shots, width_i)`` into corrected ``(shots, n)`` bits.

    Column ``j`` of the result is global qubit ``j``. This is the plain, unchunked form of the
    algorithm; :func:`reconstruct` does the same on packed arrays in chunks.
    """
    if not block_bits:
        raise ReconstructionError("Feed-forward needs at least one block, got none.")
    last = np.stack([b[:, -1] for b in block_bits], axis=1).astype(np.uint8)
    flips = _prefix_flips(last)
    widths = [b.shape[1] for b in block_bits]
    return np.concatenate(block_bits, axis=1) ^ np.repeat(flips, widths, axis=1)


def _prefix_flips(last: np.ndarray) -> np.ndarray:
    """``flips[:, i] = XOR_{j<i} last[:, j]`` — the corrected last bit of block ``i-1``."""
    flips = np.zeros_like(last)
    if last.shape[1] > 1:
        flips[:, 1:] = np.bitwise_xor.accumulate(last[:, :-1], axis=1)
    return flips


@dataclass(frozen=True)
class BlockStats:
    """What one block contributed: its raw outcome statistics and where it ran."""

    index: int
    start: int
    width: int
    qrank: int | None
    device: str | None
    method: str | None
    p_raw_zero: float  # raw block outcome 0...0
    p_raw_one: float  # raw block outcome 1...1 (ideally 1/2 for block 0, 0 for the others)
    p_uniform: float  # block internally consistent (all bits equal) -- invariant under feed-forward
    flip_rate: float  # fraction of shots the feed-forward flipped this block
    seconds: float | None = None  # execution time on its monitor

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Reconstruction:
    """The reconstructed global Z-basis samples and their statistics."""

    num_qubits: int
    shots: int
    widths: list[int]
    bits: np.ndarray  # (shots, ceil(n/8)) packed, BitArray layout
    outcomes: np.ndarray  # (k, ceil(n/8)) distinct packed outcomes, by decreasing count
    outcome_counts: np.ndarray  # (k,) their counts
    p_all_zero: float
    p_all_one: float
    blocks: list[BlockStats] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def num_blocks(self) -> int:
        return len(self.widths)

    @property
    def ghz_population(self) -> float:
        """P(0...0) + P(1...1): the weight of the two GHZ outcomes."""
        return self.p_all_zero + self.p_all_one

    @property
    def num_outcomes(self) -> int:
        return int(self.outcome_counts.size)

    def _bitstring(self, row: np.ndarray) -> str:
        return unpack_bits(row[None, :], self.num_qubits)[0, ::-1].tobytes().translate(_ASCII01).decode()

    def top(self, k: int | None = 16) -> list[tuple[str, int]]:
        """The ``k`` most frequent outcomes as ``(bitstring, count)`` (all of them if ``k`` is None)."""
        stop = self.num_outcomes if k is None else min(k, self.num_outcomes)
        return [(self._bitstring(self.outcomes[i]), int(self.outcome_counts[i])) for i in range(stop)]

    @cached_property
    def counts(self) -> dict[str, int]:
        """Sparse global counts, bitstring (qiskit order) -> count."""
        return dict(self.top(None))

    def probabilities(self) -> dict[str, float]:
        return {k: v / self.shots for k, v in self.counts.items()}

    def summary(self) -> str:
        lines = [
            f"GHZ({self.num_qubits}) from {self.num_blocks} block(s), {self.shots} shots: "
            f"P(0...0) = {self.p_all_zero:.4f}, P(1...1) = {self.p_all_one:.4f}, "
            f"GHZ population = {self.ghz_population:.4f}, {self.num_outcomes} distinct outcome(s)"
        ]
        return "\n".join(lines)

    def to_dict(self, top: int | None = 64) -> dict[str, Any]:
        """JSON-ready: probabilities, the ``top`` outcomes (all if None) and per-block stats."""
        return {
            "qubits": self.num_qubits,
            "blocks": self.num_blocks,
            "shots": self.shots,
            "p_all_zero": self.p_all_zero,
            "p_all_one": self.p_all_one,
            "ghz_population": self.ghz_population,
            "distinct_outcomes": self.num_outcomes,
            "counts": dict(self.top(top)),
            "counts_truncated": top is not None and self.num_outcomes > top,
            "block_stats": [b.to_dict() for b in self.blocks],
            "reconstruct_seconds": self.seconds,
        }


_ASCII01 = bytes.maketrans(b"\x00\x01", b"01")


def reconstruct(
    memories: Sequence[np.ndarray],
    widths: Sequence[int],
    *,
    block_info: Sequence[Mapping[str, Any]] | None = None,
) -> Reconstruction:
    """Feed-forward reconstruction from the blocks' packed shots, in chain order.

    ``memories[i]`` is block ``i``'s ``(shots, ceil(width_i/8))`` uint8 array in BitArray layout
    (``ExecutionResult.memory``). ``block_info[i]`` may carry ``qrank``, ``device``, ``method`` and
    ``seconds`` for the per-block statistics.
    """
    import time

    t0 = time.perf_counter()
    widths = [int(w) for w in widths]
    if len(memories) != len(widths) or not widths:
        raise ReconstructionError(
            f"Reconstruction needs one shot array per block: got {len(memories)} array(s) for "
            f"{len(widths)} block(s)."
        )
    mems = []
    for i, (mem, w) in enumerate(zip(memories, widths)):
        mem = np.ascontiguousarray(mem, dtype=np.uint8)
        if mem.ndim != 2 or mem.shape[1] != num_bytes(w):
            raise ReconstructionError(
                f"Block {i} is {w} qubits wide, so its packed shots must have shape "
                f"(shots, {num_bytes(w)}); got {mem.shape}."
            )
        mems.append(mem)
    shots = mems[0].shape[0]
    bad = [(i, m.shape[0]) for i, m in enumerate(mems) if m.shape[0] != shots]
    if bad:
        raise ReconstructionError(
            f"Every block must have the same number of shots to be paired shot by shot; block 0 "
            f"has {shots} but block(s) {', '.join(f'{i} has {s}' for i, s in bad)}."
        )
    if shots == 0:
        raise ReconstructionError("The blocks returned 0 shots; nothing to reconstruct.")

    n = sum(widths)
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(int)
    last = np.stack([bit_column(m, w - 1) for m, w in zip(mems, widths)], axis=1)
    flips = _prefix_flips(last)

    # Global corrected bits, packed, built in chunks of shots.
    nbytes = num_bytes(n)
    out = np.empty((shots, nbytes), np.uint8)
    chunk = max(1, _CHUNK_BYTES // max(n, 1))
    for s0 in range(0, shots, chunk):
        s1 = min(shots, s0 + chunk)
        glob = np.empty((s1 - s0, n), np.uint8)
        for i, (m, w, st) in enumerate(zip(mems, widths, starts)):
            glob[:, st : st + w] = unpack_bits(m[s0:s1], w) ^ flips[s0:s1, i, None]
        out[s0:s1] = pack_bits(glob)

    zero_rows = ~out.any(axis=1)
    one_rows = (out == ones_pattern(n)).all(axis=1)
    outcomes, counts = _unique_rows(out)

    stats = []
    for i, (m, w, st) in enumerate(zip(mems, widths, starts)):
        raw_zero = ~m.any(axis=1)
        raw_one = (m == ones_pattern(w)).all(axis=1)
        info = dict(block_info[i]) if block_info is not None else {}
        stats.append(
            BlockStats(
                index=i,
                start=int(st),
                width=w,
                qrank=info.get("qrank"),
                device=info.get("device"),
                method=info.get("method"),
                p_raw_zero=float(raw_zero.mean()),
                p_raw_one=float(raw_one.mean()),
                p_uniform=float((raw_zero | raw_one).mean()),
                flip_rate=float(flips[:, i].mean()),
                seconds=info.get("seconds"),
            )
        )
    return Reconstruction(
        num_qubits=n,
        shots=shots,
        widths=widths,
        bits=out,
        outcomes=outcomes,
        outcome_counts=counts,
        p_all_zero=float(zero_rows.mean()),
        p_all_one=float(one_rows.mean()),
        blocks=stats,
        seconds=time.perf_counter() - t0,
    )


def _unique_rows(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows and their counts, most frequent first (ties: lexicographic)."""
    rows = np.ascontiguousarray(packed)
    view = rows.view(np.dtype((np.void, rows.shape[1]))).ravel()
    uniq, index, counts = np.unique(view, return_index=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return rows[index[order]], counts[order]


# --- verification helpers -------------------------------------------------------------------


def total_variation(counts: Mapping[str, int], probs: Mapping[str, float]) -> float:
    """TV distance between an empirical distribution (counts) and a reference distribution."""
    shots = sum(counts.values())
    keys = set(counts) | set(probs)
    return 0.5 * sum(abs(counts.get(k, 0) / shots - probs.get(k, 0.0)) for k in keys)


def tv_bound(probs: Mapping[str, float] | Sequence[float], shots: int, delta: float = 1e-6) -> float:
    """A bound that the TV distance between ``shots`` i.i.d. samples of ``probs`` and ``probs``
    itself exceeds with probability at most ``delta``.

    Derivation. Let ``p`` be the exact distribution and ``p^`` the empirical one from ``S`` shots.
    Each ``S p^(x)`` is Binomial(S, p(x)), so by Jensen
    ``E|p^(x) - p(x)| <= sqrt(p(x)(1 - p(x)) / S)`` and
    ``E TV(p^, p) <= mu := 1/2 * sum_x sqrt(p(x)(1 - p(x)) / S)``.
    TV(p^, p) is a function of S independent samples and changing one sample moves it by at
    most ``1/S``, so McDiarmid's inequality gives ``P(TV >= mu + t) <= exp(-2 S t^2)``; with
    ``t = sqrt(ln(1/delta) / (2 S))`` the bound ``mu + t`` fails with probability <= delta.
    """
    p = np.fromiter(probs.values() if isinstance(probs, Mapping) else probs, float)
    mu = 0.5 * float(np.sum(np.sqrt(p * (1.0 - p) / shots)))
    return mu + math.sqrt(math.log(1.0 / delta) / (2.0 * shots))
