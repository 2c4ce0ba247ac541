"""Pure-function tests of the GHZ cut and the feed-forward reconstruction (no MPI)."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit.primitives import BitArray
from qiskit.quantum_info import Statevector

from mpiq_magic.ghz.cut import GHZCutError, assign_blocks, block_widths, cut_ghz, ghz_circuit
from mpiq_magic.ghz.reconstruct import (
    ReconstructionError,
    feed_forward,
    pack_bits,
    reconstruct,
    total_variation,
    tv_bound,
    unpack_bits,
)

pytestmark = pytest.mark.timeout(60)


def test_block_widths_equal_granularity():
    assert block_widths(10, 3) == [4, 3, 3]
    assert block_widths(250, 10) == [25] * 10
    assert block_widths(7, 7) == [1] * 7
    assert sum(block_widths(10_000, 100)) == 10_000
    for n, m in [(13, 5), (100, 7), (1, 1)]:
        w = block_widths(n, m)
        assert sum(w) == n and max(w) - min(w) <= 1 and w == sorted(w, reverse=True)


@pytest.mark.parametrize("n, m, match", [(0, 1, "at least 1 qubit"), (5, 0, "at least 1 block"), (3, 5, "into 5 blocks")])
def test_bad_cuts_are_refused(n, m, match):
    with pytest.raises(GHZCutError, match=match):
        cut_ghz(n, m)


def test_cut_structure():
    cut = cut_ghz(10, 3)
    assert [b.start for b in cut.blocks] == [0, 4, 7]
    assert cut.cut_pairs == [(3, 4), (6, 7)]
    b0, b1, b2 = cut.blocks
    assert b0.circuit.count_ops() == {"h": 1, "cx": 3, "measure": 4}
    assert b1.circuit.count_ops() == {"cx": 2, "measure": 3}
    assert b1.circuit is b2.circuit  # equal blocks share one circuit: the compile cache sees one structure


def test_assign_blocks():
    assert assign_blocks(6, 3) == [[0, 3], [1, 4], [2, 5]]
    assert assign_blocks(4, 3, serial=True) == [[0, 1, 2, 3], [], []]
    with pytest.raises(GHZCutError, match="4 monitors but only 2 block"):
        assign_blocks(2, 4)


def test_pack_layout_is_qiskit_bitarray():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, (40, 13), dtype=np.uint8)
    strings = ["".join(map(str, row[::-1])) for row in bits]
    assert np.array_equal(pack_bits(bits), BitArray.from_samples(strings, 13).array)
    assert np.array_equal(unpack_bits(pack_bits(bits), 13), bits)


def _true_and_raw(rng, widths, shots):
    """Random raw block outcomes and the corrected outcome computed shot by shot in Python."""
    raw = [rng.integers(0, 2, (shots, w), dtype=np.uint8) for w in widths]
    expect = np.zeros((shots, sum(widths)), np.uint8)
    for k in range(shots):
        c, col = 0, 0
        for r in raw:
            corrected = r[k] ^ c
            expect[k, col : col + len(corrected)] = corrected
            c = corrected[-1]
            col += len(corrected)
    return raw, expect


def test_feed_forward_matches_shot_by_shot_definition():
    rng = np.random.default_rng(1)
    widths = [4, 3, 3, 1, 9]
    raw, expect = _true_and_raw(rng, widths, 200)
    assert np.array_equal(feed_forward(raw), expect)
    rec = reconstruct([pack_bits(r) for r in raw], widths)
    assert np.array_equal(rec.bits, pack_bits(expect))
    assert sum(rec.counts.values()) == 200


def test_reconstruct_ideal_blocks_give_ghz():
    rng = np.random.default_rng(2)
    widths = block_widths(1000, 7)
    shots = 512
    raw = [np.zeros((shots, w), np.uint8) for w in widths]
    raw[0][:] = rng.integers(0, 2, (shots, 1), dtype=np.uint8)
    rec = reconstruct([pack_bits(r) for r in raw], widths, block_info=[{"qrank": i % 3} for i in range(7)])
    assert rec.num_outcomes == 2 and rec.ghz_population == 1.0
    assert set(rec.counts) == {"0" * 1000, "1" * 1000}
    assert rec.p_all_one == rec.counts["1" * 1000] / shots
    assert rec.blocks[0].p_raw_one == rec.p_all_one and rec.blocks[3].p_raw_zero == 1.0
    assert abs(rec.blocks[3].flip_rate - rec.p_all_one) < 1e-12
    assert rec.to_dict(top=1)["counts_truncated"]


def test_reconstruct_scales_to_10000_qubits():
    rng = np.random.default_rng(3)
    widths = block_widths(10_000, 100)
    raw = [pack_bits(rng.integers(0, 2, (2048, w), dtype=np.uint8)) for w in widths]
    rec = reconstruct(raw, widths)
    assert rec.bits.shape == (2048, 1250)
    assert rec.seconds < 5.0


def test_reconstruct_refuses_mismatched_blocks():
    with pytest.raises(ReconstructionError, match="same number of shots"):
        reconstruct([np.zeros((4, 1), np.uint8), np.zeros((5, 1), np.uint8)], [3, 3])
    with pytest.raises(ReconstructionError, match=r"shape \(shots, 2\)"):
        reconstruct([np.zeros((4, 1), np.uint8)], [9])


def test_reconstruction_is_exact_against_statevector_of_uncut_circuit():
    """Exact blocks in, exact distribution out: sample blocks from their exact distributions."""
    n, m, shots = 12, 4, 20_000
    cut = cut_ghz(n, m)
    rng = np.random.default_rng(4)
    raw = []
    for b in cut.blocks:
        probs = Statevector(b.circuit.remove_final_measurements(inplace=False)).probabilities()
        idx = rng.choice(len(probs), size=shots, p=probs)
        raw.append(((idx[:, None] >> np.arange(b.width)) & 1).astype(np.uint8))
    rec = reconstruct([pack_bits(r) for r in raw], cut.widths)
    exact = Statevector(ghz_circuit(n, measure=False)).probabilities_dict()
    assert total_variation(rec.counts, exact) <= tv_bound(exact, shots)


def test_tv_bound_formula():
    # Two equiprobable outcomes, S shots: mu = 1/2 * 2 * sqrt(1/4 / S) = 1/(2 sqrt S).
    S = 10_000
    expected = 1 / (2 * np.sqrt(S)) + np.sqrt(np.log(1e6) / (2 * S))
    assert tv_bound({"0": 0.5, "1": 0.5}, S) == pytest.approx(expected)
