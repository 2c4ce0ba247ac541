"""One MPI-Q test body for any process count (as mpi4py's tests): run under mpiexec -n N.

Every check runs on every process; a failed check is recorded (name + error) and the body
goes on, so one job reports every failure. Each process emits
``{"me", "n", "checks", "failures"}`` through the harness's ``emit`` (tests/mpirun.py).
"""

import time
import traceback

import numpy as np
from mpi4py import MPI

from mpiq_magic import kernel as mpiq

world = MPI.COMM_WORLD
n = world.Get_size()
C = 1 if n < 5 else 2
hc = mpiq.init(classical=C, timeout=30)
Q = hc.quantum_size
me = hc.comm_rank
nxt, prv = (me + 1) % n, (me - 1) % n
checks, failures = [], []


def check(name):
    def run(fn):
        checks.append(name)
        world.Barrier()  # checks never overlap: wildcard receives see only their own messages
        try:
            fn()
        except Exception:  # noqa: BLE001 - recorded, reported by pytest
            failures.append(f"{name}: {traceback.format_exc(limit=4)}")
        return fn
    return run


def big(seed=0):
    return {"a": np.arange(10) + seed, "b": [np.ones((3, 4), np.float32), np.full(300_000, seed, np.int16)],
            "c": (np.complex128(1j), np.arange(6, dtype=">u2").reshape(2, 3), np.arange(12.0).reshape(3, 4)[:, ::2])}


# mpi4py's message set (test_p2p_obj / test_cco_obj), plus nested numpy in and out of band
MESSAGES = [
    None, True, False, -7, 0, 7, -2**63 + 1, 2**63 - 1, -2**63, -2.17, 0.0, 3.14, 1 + 2j, 2 - 3j,
    "mpi4py", "", (1, 2, 3), [1, 2, 3], {1: 2, "x": [3]}, {1, 2, 3}, frozenset({4, 5}), b"bytes",
    b"", bytearray(b"ba"), np.arange(5, dtype=np.int8), big(),
]


def same(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape
                and bool(np.array_equal(a, b)))
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def expect(got, want, what=""):
    assert same(got, want), f"{what}: got {got!r:.200}, want {want!r:.200}"


def expect_error(cls, fn, *fragments):
    try:
        fn()
    except cls as exc:
        for f in fragments:
            assert f in str(exc), f"{f!r} not in {str(exc)!r}"
        return exc
    raise AssertionError(f"no {cls.__name__} raised")


# ---------------------------------------------------------------- point-to-point, every object
@check("p2p send/recv ring, every object")
def _():
    for i, msg in enumerate(MESSAGES):
        rq = hc.isend(msg, nxt, tag=i)
        st = MPI.Status()
        got = hc.recv(prv, tag=i, status=st)
        rq.wait()
        expect(got, msg, f"message {i}")
        assert st.Get_source() == prv and st.Get_tag() == i, (st.Get_source(), st.Get_tag())


@check("p2p irecv then send, every object, waitall")
def _():
    reqs = [hc.irecv(prv, tag=100 + i) for i in range(len(MESSAGES))]
    for i, msg in enumerate(MESSAGES):
        hc.send(msg, nxt, tag=100 + i)
    for got, msg in zip(mpiq.waitall(reqs), MESSAGES):
        expect(got, msg)


@check("p2p to oneself, every object, ANY_SOURCE / ANY_TAG with status")
def _():
    for i, msg in enumerate(MESSAGES):
        r = hc.irecv(mpiq.ANY_SOURCE, mpiq.ANY_TAG, status=(st := MPI.Status()))
        hc.send(msg, me, tag=7)
        expect(r.wait(), msg)
        assert st.Get_source() == me and st.Get_tag() == 7


@check("irecv then blocking send to oneself: 70 KB bytearray and 1 MiB array")
def _():
    for payload in (bytearray(range(256)) * 280, np.arange(1 << 17, dtype=np.float64)):
        r = hc.irecv(me, tag=3)
        hc.send(payload, me, tag=3)
        expect(r.wait(timeout=10), payload)


@check("irecv then blocking send to a peer: small, 70 KB, 1 MiB array, nested arrays")
def _():
    for payload in (b"x" * 10, bytearray(70_000), np.ones(1 << 17), big(me)):
        r = hc.irecv(prv, tag=4)
        hc.send(payload if not isinstance(payload, dict) else big(me), nxt, tag=4)
        want = payload if not isinstance(payload, dict) else big(prv)
        expect(r.wait(timeout=10), want)


@check("Irecv then Send of a 1 MiB buffer to a peer and to oneself")
def _():
    for dest, src in ((nxt, prv), (me, me)):
        buf = np.empty(1 << 17)
        r = hc.Irecv(buf, src, tag=5)
        hc.Send(np.full(1 << 17, float(src if dest == me else me)), dest, tag=5)
        r.wait(timeout=10)
        assert (buf == float(src)).all()


@check("posted receive matches before a later blocking recv (MPI order)")
def _():
    r1 = hc.irecv(prv, tag=6)
    r2 = hc.irecv(mpiq.ANY_SOURCE, mpiq.ANY_TAG)
    hc.send(("seq", 0), nxt, tag=6)
    hc.send(("seq", 1), nxt, tag=6)
    rq = hc.isend(("seq", 2), nxt, tag=6)  # a blocking send to oneself would wait for its receive
    third = hc.recv(prv, tag=6)
    rq.wait()
    assert r1.wait() == ("seq", 0) and r2.wait() == ("seq", 1) and third == ("seq", 2)


@check("order between a pair on one tag, 40 messages small and large")
def _():
    msgs = [k if k % 5 else np.full(40_000, k) for k in range(40)]
    reqs = [hc.isend(m, nxt, tag=8) for m in msgs]
    got = [hc.recv(prv, tag=8) for _ in msgs]
    mpiq.waitall(reqs)
    for g, m in zip(got, msgs):
        expect(g, m)


@check("ANY_SOURCE keeps per-source order")
def _():
    if n == 1:
        return
    if me == 0:
        seen = {}
        for _ in range(5 * (n - 1)):
            st = MPI.Status()
            src, k = hc.recv(mpiq.ANY_SOURCE, tag=9, status=st)
            assert st.Get_source() == src
            assert k == seen.get(src, -1) + 1, (src, k, seen)
            seen[src] = k
    else:
        for k in range(5):
            hc.send((me, k), 0, tag=9)


@check("waitany / testany / testall")
def _():
    idle = [hc.irecv(prv, tag=29), hc.irecv(mpiq.ANY_SOURCE, tag=29)]
    assert mpiq.testall(idle) == (False, None) and mpiq.testany(idle) == (MPI.UNDEFINED, False, None)
    assert all(r.cancel() for r in idle)
    reqs = [hc.irecv(prv, tag=20 + k) for k in range(4)]
    for k in (2, 0, 3, 1):
        hc.send(k * 10, nxt, tag=20 + k)
    seen = set()
    for _ in range(4):
        i, v = mpiq.waitany(reqs, timeout=10)
        assert v == i * 10 and i not in seen, (i, v, seen)
        seen.add(i)
    assert mpiq.waitany(reqs) == (MPI.UNDEFINED, None)
    assert mpiq.testany(reqs) == (MPI.UNDEFINED, True, None)
    assert mpiq.testall(reqs) == (True, [0, 10, 20, 30])


@check("uppercase Isend/Irecv with waitall, and Recv with status")
def _():
    a = np.arange(1000, dtype=np.int32) + me
    b = np.empty_like(a)
    mpiq.waitall([hc.Irecv(b, prv, tag=30), hc.Isend(a, nxt, tag=30)])
    assert (b == np.arange(1000) + prv).all()
    st = MPI.Status()
    rq = hc.Isend(a, nxt, tag=31)
    hc.Recv(b, mpiq.ANY_SOURCE, mpiq.ANY_TAG, status=st)
    rq.wait()
    assert st.Get_source() == prv and st.Get_tag() == 31 and st.Get_count(MPI.INT32_T) == 1000


# ---------------------------------------------------------------- tags collide with nothing
@check("one tag on COMM_WORLD, hc, two layers and a second domain: no collision")
def _():
    hc2 = mpiq.init(classical=C, timeout=30)
    try:
        dispatch, cluster = hc.layer("dispatch"), hc.layer("cluster")
        assert dispatch.layer_name == "dispatch" and hc.layer("dispatch") is dispatch
        tag = 32001
        sends = [world.isend("world", nxt, tag), hc.isend("hc", nxt, tag), dispatch.isend("dispatch", nxt, tag),
                 cluster.isend("cluster", nxt, tag), hc2.isend("hc2", nxt, tag)]
        # received in the opposite order: each context holds only its own message
        assert hc2.recv(prv, tag) == "hc2"
        assert cluster.recv(mpiq.ANY_SOURCE, mpiq.ANY_TAG) == "cluster"
        assert dispatch.recv(prv, tag) == "dispatch"
        assert hc.recv(mpiq.ANY_SOURCE, tag) == "hc"
        assert world.recv(source=prv, tag=tag) == "world"
        sends[0].wait()
        mpiq.waitall(sends[1:])
        # a posted layer receive is not taken by a user message with the same tag
        r = dispatch.irecv(prv, tag=0)
        rq = hc.isend("user", nxt, tag=0)
        dispatch.send("layer", nxt, tag=0)
        assert hc.recv(prv, tag=0) == "user" and r.wait() == "layer"
        rq.wait()
    finally:
        hc2.free()


# ---------------------------------------------------------------- collectives, every object
@check("bcast / scatter / gather / allgather, every object, two roots")
def _():
    for root in {mpiq.Rank(0), mpiq.Rank(C - 1)}:
        is_root = hc.rank == root.index
        for i, msg in enumerate(MESSAGES):
            expect(hc.bcast(msg if is_root else None, root=root), msg, f"bcast {i}")
            items = [(j, msg) for j in range(Q)] if is_root else None
            got = hc.scatter(items, root=root)
            if hc.is_quantum:
                expect(got, (hc.qrank, msg), f"scatter {i}")
            else:
                assert got is None
            g = hc.gather((hc.qrank, msg) if hc.is_quantum else None, root=root)
            if is_root:
                expect(g, [(j, msg) for j in range(Q)], f"gather {i}")
            else:
                assert g is None
        ag = hc.allgather(big(hc.qrank) if hc.is_quantum else None)
        if hc.is_classical:
            expect(ag, [big(j) for j in range(Q)], "allgather")
        else:
            assert ag is None


@check("scatter of 1 MiB arrays and send_q keeps buffers; posted irecv progresses during a collective")
def _():
    r = hc.irecv(prv, tag=40)
    rq = hc.isend(np.ones(1 << 17), nxt, tag=40)
    items = [np.full(1 << 17, float(j)) for j in range(Q)] if hc.rank == 0 else None
    got = hc.scatter(items)
    if hc.is_quantum:
        assert got.shape == (1 << 17,) and (got == hc.qrank).all() and got.flags.writeable
    expect(r.wait(), np.ones(1 << 17))
    rq.wait()


# ---------------------------------------------------------------- errors
@check("negative and bad tags are MPI-Q errors naming the tag")
def _():
    expect_error(mpiq.MPIQError, lambda: hc.send(1, me, tag=-5), "Tag -5 is negative")
    expect_error(mpiq.MPIQError, lambda: hc.isend(1, me, tag=-2), "Tag -2")
    expect_error(mpiq.MPIQError, lambda: hc.Send(np.zeros(1), me, tag=-3), "Tag -3")
    expect_error(mpiq.MPIQError, lambda: hc.recv(me, tag=-4, timeout=1), "Tag -4")
    expect_error(mpiq.MPIQError, lambda: hc.irecv(me, tag=-9), "Tag -9")
    expect_error(mpiq.MPIQError, lambda: hc.Irecv(np.zeros(1), me, tag=-6), "Tag -6")
    expect_error(mpiq.MPIQError, lambda: hc.send(1, me, tag="a"), "'a'")


@check("a receive from a silent peer names it; a posted receive can be cancelled")
def _():
    exc = expect_error(mpiq.MPIQTimeoutError, lambda: hc.recv(prv, tag=999, timeout=0.2), "receive from")
    assert exc.missing == [f"receive from {hc.describe(prv)} (tag 999)"], exc.missing
    r = hc.irecv(prv, tag=998)
    exc = expect_error(mpiq.MPIQTimeoutError, lambda: r.wait(timeout=0.1), hc.describe(prv))
    assert r.cancel() and r.test()[0]
    exc = expect_error(mpiq.MPIQTimeoutError, lambda: mpiq.waitall([hc.irecv(prv, tag=997)], timeout=0.1),
                       "1 of 1", hc.describe(prv))


@check("gather timeout names the late process and keeps everyone else's contribution")
def _():
    if Q == 0:
        hc.gather(None)
        return
    late = Q - 1
    if hc.qrank == late:
        time.sleep(1.5)
        hc.gather("late")
        return
    try:
        g = hc.gather(hc.qrank, timeout=0.6)
    except mpiq.MPIQTimeoutError as exc:
        assert hc.rank == 0, f"only the root times out, not {hc.me}"
        name = hc.describe(hc.resolve(mpiq.QRank(late)))
        assert exc.missing == [name], exc.missing
        assert exc.partial == list(range(late)) + [None], exc.partial
        assert f"{Q - 1} of {Q} contribution(s) arrived" in str(exc)
    else:
        assert hc.rank != 0 and g is None


@check("bcast timeout on the receivers names the late root")
def _():
    if hc.rank == 0:
        time.sleep(2.5)
        hc.bcast("late")
        return
    exc = expect_error(mpiq.MPIQTimeoutError, lambda: hc.bcast(None, timeout=0.5), "rank 0")
    assert "rank 0" in exc.missing, exc.missing


@check("a failing scatter root tells every receiver at once")
def _():
    t0 = time.monotonic()
    try:
        hc.scatter(["too", "many"] * (Q + 1) if hc.rank == 0 else None, timeout=20)
    except ValueError as exc:
        assert hc.rank == 0 and "one item per quantum process" in str(exc)
    except mpiq.MPIQError as exc:
        assert hc.is_quantum and "scatter failed on rank 0" in str(exc), str(exc)
    else:
        assert hc.is_classical and hc.rank != 0 or Q == 0
    assert time.monotonic() - t0 < 5


world.Barrier()
hc.barrier(mpiq.ALL)


@check("any call after free is an MPI-Q error")
def _():
    hc.free()
    for call in (lambda: hc.send(1, me), lambda: hc.recv(me, timeout=1), lambda: hc.irecv(), lambda: hc.bcast(1),
                 lambda: hc.barrier(mpiq.CC), lambda: hc.layer("dispatch"), lambda: hc.Send(np.zeros(1), me)):
        expect_error(mpiq.MPIQError, call, "freed")


emit({"me": me, "n": n, "checks": checks, "failures": failures})  # noqa: F821 - harness preamble
