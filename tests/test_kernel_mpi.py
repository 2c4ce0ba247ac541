"""The MPI-Q core under the bundled mpiexec at 1, 2, 4 and 5 processes."""

from __future__ import annotations

import pytest

from mpirun import results, run_mpi

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(240)]

PRIMITIVES = r"""
import json, sys
import numpy as np
from mpi4py import MPI
from qiskit import QuantumCircuit
from mpiq_magic import kernel as mpiq

world = MPI.COMM_WORLD
n = world.Get_size()
C = 1 if n < 5 else 2
hc = mpiq.init(classical=C, timeout=30)
Q = hc.quantum_size
out = {"role": hc.role, "rank": hc.rank, "qrank": hc.qrank}

# --- context isolation: a user message on COMM_WORLD with the same tag never matches hc traffic
if Q:
    if hc.rank == 0:
        world.send("user-world", dest=C, tag=0)
        hc.send("library", mpiq.QRank(0), tag=0)
    elif hc.qrank == 0:
        out["iso_hc"] = hc.recv(mpiq.Rank(0), tag=0)
        out["iso_world"] = world.recv(source=0, tag=0)

# --- a second hybrid domain alongside the first
hc2 = mpiq.init(classical=C, timeout=30)
if Q:
    if hc.rank == 0:
        hc2.send("domain-2", mpiq.QRank(Q - 1), tag=7)
        hc.send("domain-1", mpiq.QRank(Q - 1), tag=7)
    elif hc.qrank == Q - 1:
        out["dom1"] = hc.recv(mpiq.Rank(0), tag=7)
        out["dom2"] = hc2.recv(mpiq.Rank(0), tag=7)
hc2.free()

# --- point-to-point by Rank, QRank, Device, (host, id) tuple, and buffers
if hc.rank == 0:
    for j, spec in enumerate(hc.devices):
        hc.send({"to": j, "via": "qrank"}, mpiq.QRank(j), tag=1)
        hc.send({"to": j, "via": "device"}, mpiq.Device(spec.host, spec.device_id), tag=2)
        hc.send({"to": j, "via": "tuple"}, (spec.host, spec.device_id), tag=3)
        hc.Send(np.full(1000 + j, j, dtype=np.float64), mpiq.QRank(j), tag=4)
        req = hc.isend(np.arange(j + 3), mpiq.QRank(j), tag=5)
        req.wait()
    out["echo"] = sorted(hc.recv(tag=6) for _ in range(Q))
elif hc.is_quantum:
    got = [hc.recv(mpiq.Rank(0), tag=t) for t in (1, 2, 3)]
    out["p2p_ok"] = all(g["to"] == hc.qrank for g in got)
    buf = np.empty(1000 + hc.qrank)
    hc.Recv(buf, mpiq.Rank(0), tag=4)
    out["buf_ok"] = bool((buf == hc.qrank).all())
    arr = hc.irecv(mpiq.Rank(0), tag=5).wait()
    out["irecv"] = arr.tolist()
    st = MPI.Status()
    hc.send(hc.qrank, mpiq.Rank(0), tag=6)

# --- collectives with uneven sizes
b = hc.bcast({"cfg": list(range(5))} if hc.rank == 0 else None)
out["bcast"] = b
arr = hc.bcast(np.arange(7.0) if hc.rank == 0 else None)
out["bcast_array"] = arr.tolist()
items = [np.arange(j * 1000 + 1, dtype=np.int64) for j in range(Q)] if hc.rank == 0 else None
mine = hc.scatter(items)
if hc.is_quantum:
    out["scatter_len"] = int(mine.size)
obj_items = [{"j": j, "pad": "x" * (j * 5000)} for j in range(Q)] if hc.rank == 0 else None
mine = hc.scatter(obj_items)
if hc.is_quantum:
    out["scatter_obj"] = mine["j"]
g = hc.gather(np.full(hc.qrank + 1, hc.qrank) if hc.is_quantum else None)
if hc.rank == 0:
    out["gather"] = [x.tolist() for x in g]
ag = hc.allgather(hc.qrank * 10 if hc.is_quantum else None)
if hc.is_classical:
    out["allgather"] = ag

# --- send_q scatter (paper Algorithm 2)
if Q:
    circ = None
    if hc.rank == 0:
        circ = QuantumCircuit(2 * Q, 2 * Q)
        for j in range(Q):
            circ.h(2 * j)
            circ.cx(2 * j, 2 * j + 1)
            circ.measure([2 * j, 2 * j + 1], [2 * j, 2 * j + 1])
    groups = [[2 * j, 2 * j + 1] for j in range(Q)]
    sub = hc.scatter(circ, send_q=groups)
    if hc.is_quantum:
        out["sendq"] = [sub.num_qubits, sub.num_clbits, dict(sub.count_ops())]

# --- barriers
for flag in (mpiq.CC, mpiq.QQ, mpiq.ALL):
    rec = hc.barrier(flag)
    out[f"barrier_{flag.name}"] = {
        "members": rec.members, "n_rel": len(rec.releases or []),
        "ordered": bool(rec.releases is None or min(rec.releases) >= min(rec.arrivals) - 1e-9),
    }

# --- address errors
try:
    hc.send(1, mpiq.QRank(99))
except mpiq.AddressError as exc:
    out["addr_err"] = str(exc)

hc.free()
emit(out)
"""


@pytest.mark.parametrize("n", [1, 2, 4, 5])
def test_every_primitive(n, tmp_path):
    res = results(run_mpi(PRIMITIVES, n, timeout=150, tmp_path=tmp_path))
    assert len(res) == n
    C = 1 if n < 5 else 2
    Q = n - C
    classical = [r for r in res if r["role"] == "classical"]
    quantum = sorted((r for r in res if r["role"] == "quantum"), key=lambda r: r["qrank"])
    assert len(classical) == C and len(quantum) == Q
    root = next(r for r in classical if r["rank"] == 0)
    for r in res:
        assert r["bcast"] == {"cfg": [0, 1, 2, 3, 4]}
        assert r["bcast_array"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        assert "QRank" not in r["addr_err"] and "qrank 99 does not exist" in r["addr_err"]
    assert root["gather"] == [[j] * (j + 1) for j in range(Q)]
    for c in classical:
        assert c["allgather"] == [10 * j for j in range(Q)]
        assert c["barrier_CC"]["members"] == [f"rank {i}" for i in range(C)]
        assert c["barrier_CC"]["n_rel"] == C and c["barrier_CC"]["ordered"]
        assert c["barrier_QQ"]["members"] == []
    for j, q in enumerate(quantum):
        assert q["p2p_ok"] and q["buf_ok"]
        assert q["irecv"] == list(range(j + 3))
        assert q["scatter_len"] == j * 1000 + 1
        assert q["scatter_obj"] == j
        assert q["sendq"] == [2, 2, {"h": 1, "cx": 1, "measure": 2}]
        assert q["barrier_QQ"]["members"] == [f"qrank {i}" for i in range(Q)]
        assert q["barrier_QQ"]["n_rel"] == Q and q["barrier_QQ"]["ordered"]
        assert q["barrier_CC"]["members"] == []
    for r in res:
        assert len(r["barrier_ALL"]["members"]) == n and r["barrier_ALL"]["n_rel"] == n
    if Q:
        assert root["echo"] == list(range(Q))
        assert quantum[0]["iso_hc"] == "library" and quantum[0]["iso_world"] == "user-world"
        assert quantum[-1]["dom1"] == "domain-1" and quantum[-1]["dom2"] == "domain-2"
