"""QQ barrier socket layer (``mpiq_magic.kernel.qsync``): wire format, records, timeouts, forgery."""

from __future__ import annotations

import time

import pytest

from mpiq_magic.kernel.qsync import RELEASE, decode, encode, host_identity, sleep_until
from mpirun import results, run_mpi

KEY = b"k" * 32


def test_frame_roundtrip_and_tampering():
    frame = encode(KEY, RELEASE, 0, 7, [123, -4, 2**62])
    assert decode(KEY, frame) == (RELEASE, 0, 7, (123, -4, 2**62))
    assert decode(b"x" * 32, frame) is None  # wrong key
    flipped = bytearray(frame)
    flipped[10] ^= 1
    assert decode(KEY, bytes(flipped)) is None  # tampered header
    assert decode(KEY, frame[:-1]) is None  # truncated MAC
    assert decode(KEY, frame + b"\0") is None  # trailing garbage
    assert decode(KEY, b"") is None and decode(KEY, b"hello") is None


def test_host_identity_and_sleep_until():
    host, clock = host_identity()
    assert host and host_identity() == (host, clock)
    target = time.monotonic_ns() + 2_000_000
    woke = sleep_until(target, 200_000)
    assert target <= woke < target + 50_000_000


RECORDS = r"""
import json
from mpi4py import MPI
from mpiq_magic.kernel.qsync import QQSync
comm = MPI.COMM_WORLD
qs = QQSync.create(comm, timeout=20)
recs = [qs.barrier(seq, timeout=20) for seq in range(5)]
recs.append(qs.barrier(5, timeout=20, record=False))
qs.close(); qs.close()
out = comm.gather({"qrank": comm.rank, "recs": recs}, root=0)  # one line: ranks' stdout may interleave
if comm.rank == 0:
    print("RESULT " + json.dumps(out), flush=True)
"""


@pytest.mark.mpi
@pytest.mark.timeout(90)
@pytest.mark.parametrize("n", [1, 2, 4])
def test_barrier_records_are_consistent(n):
    (out,) = results(run_mpi(RECORDS, n, timeout=60))
    assert [r["qrank"] for r in out] == list(range(n))
    for seq in range(6):
        recs = [r["recs"][seq] for r in out]
        first = recs[0]
        for q, rec in enumerate(recs):
            assert rec["seq"] == seq
            assert rec["trigger"] == first["trigger"] and rec["arrivals"] == first["arrivals"]
            assert len(rec["arrivals"]) == n and rec["local_arrival"] == rec["arrivals"][q]
            assert rec["local_release"] >= rec["trigger"] >= max(rec["arrivals"])
            assert rec["offset"] == 0.0  # one host: the shared CLOCK_MONOTONIC, offset exactly 0
            if seq < 5:
                assert rec["releases"] == first["releases"] and rec["local_release"] == rec["releases"][q]
                assert rec["skew"] == pytest.approx(max(rec["releases"]) - min(rec["releases"]), abs=1e-8)
                assert rec["skew"] < 0.05
            else:
                assert rec["releases"] is None and rec["skew"] is None
        if seq:  # a process arrives at #seq only after its release from #seq-1
            assert all(a >= r for a, r in zip(first["arrivals"], out[0]["recs"][seq - 1]["releases"]))


TIMEOUTS = r"""
import json, time
from mpi4py import MPI
from mpiq_magic.kernel.errors import MPIQTimeoutError
from mpiq_magic.kernel.qsync import QQSync
comm = MPI.COMM_WORLD
qs = QQSync.create(comm, timeout=20)
out = {"qrank": comm.rank}
qs.barrier(0, timeout=20)
for seq, absent in ((1, 2), (2, 0)):  # #1: qrank 2 never arrives; #2: the coordinator never arrives
    if comm.rank != absent:
        t0 = time.monotonic()
        try:
            qs.barrier(seq, timeout=1.0)
            out[f"b{seq}"] = "released"
        except MPIQTimeoutError as exc:
            out[f"b{seq}"] = {"msg": str(exc), "missing": exc.missing, "took": time.monotonic() - t0}
    comm.Barrier()
    if seq == 1:  # a retry under the same seq works
        out["retry"] = qs.barrier(1, timeout=20)["skew"]
out["b3"] = qs.barrier(3, timeout=20)["skew"]  # the barrier works again afterwards
qs.close()
out = comm.gather(out, root=0)  # one line: ranks' stdout may interleave
if comm.rank == 0:
    print("RESULT " + json.dumps(out), flush=True)
"""


@pytest.mark.mpi
@pytest.mark.timeout(90)
def test_timeout_names_the_missing_qrank():
    (out,) = results(run_mpi(TIMEOUTS, 3, timeout=60))
    assert len(out) == 3
    for r in (out[0], out[1]):
        b1 = r["b1"]
        assert b1["msg"] == "QQ barrier #1 timed out after 1.0 s waiting for qrank 2."
        assert b1["missing"] == ["qrank 2"] and b1["took"] < 10
    assert "b1" not in out[2]
    for r in (out[1], out[2]):
        b2 = r["b2"]
        assert "QQ barrier #2 timed out after 1.0 s" in b2["msg"] and "qrank 0" in b2["msg"]
        assert b2["missing"] == ["qrank 0"] and b2["took"] < 10
    assert all(r["b3"] < 0.05 and r["retry"] < 0.05 for r in out)


FORGERY = r"""
import json
import zmq
from mpi4py import MPI
from mpiq_magic.kernel.errors import MPIQTimeoutError
from mpiq_magic.kernel.qsync import ARRIVE, PING, READY, QQSync, encode
comm = MPI.COMM_WORLD
qs = QQSync.create(comm, timeout=20)
out = {"qrank": comm.rank}
if comm.rank == 1:  # an intruder on qrank 1's host: its own socket, forged or replayed frames
    ctx = zmq.Context()
    evil = ctx.socket(zmq.DEALER)
    evil.setsockopt(zmq.LINGER, 0)
    evil.connect(qs.endpoint)
    forged = [
        [b"hello"],
        [b"two", b"frames"],
        [encode(b"w" * 32, ARRIVE, 1, 0, [0])],               # wrong key
        [encode(b"w" * 32, ARRIVE, 1, 1, [0])],               # wrong key, next barrier
        [encode(qs._key, ARRIVE, 1, 0, [0])[:-1] + b"\0"],     # garbled MAC
        [encode(qs._key, ARRIVE, 1, 0, [0])],                  # right key, not qrank 1's socket
        [encode(qs._key, READY, 1, 0, [0, 0, 0])],             # cannot re-register qrank 1
        [encode(qs._key, ARRIVE, 7, 0, [0])],                  # no such qrank
    ]
    for frames in forged:
        evil.send_multipart(frames)
    out["sent"] = len(forged)
comm.Barrier()
if comm.rank == 0:  # qrank 1 does not arrive at #0: only forged arrivals do
    try:
        qs.barrier(0, timeout=1.0)
        out["b0"] = "released"
    except MPIQTimeoutError as exc:
        out["b0"] = exc.missing
    out["rejected"] = qs.rejected
comm.Barrier()
rec = qs.barrier(1, timeout=20)
out["b1"] = [rec["trigger"], rec["skew"]]
if comm.rank == 1:
    evil.close(); ctx.term()
qs.close()
out = comm.gather(out, root=0)  # one line: ranks' stdout may interleave
if comm.rank == 0:
    print("RESULT " + json.dumps(out), flush=True)
"""


@pytest.mark.mpi
@pytest.mark.timeout(90)
def test_forged_messages_are_rejected():
    (out,) = results(run_mpi(FORGERY, 2, timeout=60))
    assert len(out) == 2
    assert out[0]["b0"] == ["qrank 1"]  # no forged frame counted as qrank 1's arrival
    assert out[0]["rejected"] == out[1]["sent"]
    assert out[0]["b1"][0] == out[1]["b1"][0] and out[0]["b1"][1] < 0.05



ESTIMATED = r"""
import json
from mpi4py import MPI
import mpiq_magic.kernel.qsync as qsync
comm = MPI.COMM_WORLD
host, _ = qsync.host_identity()
qsync.host_identity = lambda: (host, f"clock-{comm.rank}")  # pretend no clock is shared: estimate offsets
qs = qsync.QQSync.create(comm, timeout=20)
recs = [qs.barrier(seq, timeout=20) for seq in range(3)]
qs.close()
out = comm.gather({"offset": qs.offset, "same_clock": qs.same_clock, "recs": recs}, root=0)
if comm.rank == 0:
    print("RESULT " + json.dumps(out), flush=True)
"""


@pytest.mark.mpi
@pytest.mark.timeout(90)
def test_offsets_are_estimated_when_clocks_differ():
    (out,) = results(run_mpi(ESTIMATED, 3, timeout=60))
    assert [r["same_clock"] for r in out] == [True, False, False]  # qrank 0 shares its own clock
    assert out[0]["offset"] == 0.0
    assert all(abs(r["offset"]) < 0.005 for r in out)  # the true offset is 0: one host, one clock
    for seq in range(3):
        recs = [r["recs"][seq] for r in out]
        assert len({r["trigger"] for r in recs}) == 1 and recs[0]["skew"] < 0.05
        assert all(r["local_release"] == r["releases"][q] for q, r in enumerate(recs))
