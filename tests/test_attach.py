"""The quantum partition as a service (MPI DPM, monitor_engine.attach): two separately launched
``mpiexec`` jobs attach, run the dispatch path and a collective GHZ across the merged hybrid
communicator, release, and the service's job exits while the classical job goes on. Errors of the
rendezvous (no service, a stale port file, a service busy with another client) are checked in
this process; a notebook cluster attaches in a real kernel (scatter, %mpiq ghz, %mpiq barrier QQ/ALL
across both jobs). The name-service rendezvous: tests/test_attach_names.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mpiq_magic.launch import mpiexec_path

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(240)]

CLIENT = r"""
import json, sys, time
from mpi4py import MPI
from monitor_engine.attach import attach
from monitor_engine.dispatch import Share, dispatch
from mpiq_magic.ghz.pipeline import run_ghz
from qiskit import QuantumCircuit

hold = float(sys.argv[2])
att = attach(None if sys.argv[1] == "-" else sys.argv[1], timeout=90, wait=120)  # "-": found by name
hc = att.hc
out = {"attached": time.time(), "rendezvous": att.rendezvous.kind, "rank": hc.rank, "classical": hc.classical_size,
       "quantum": hc.quantum_size, "devices": [d.name for d in hc.devices]}
if hc.rank == 0:
    qc = QuantumCircuit(2); qc.h(0); qc.cx(0, 1); qc.measure_all()
    got = dispatch(hc, [Share(circuit=qc, shots=100) for _ in range(3)])
    out["dispatch"] = [sorted(r.counts) for r in got.results] if got.ok else repr(got)
ghz = att.collective(run_ghz, 6, 2, shots=200)
if hc.rank == 0:
    out["ghz"] = {k: int(v) for k, v in ghz.counts.items()}
time.sleep(hold)
report = att.release()
out["released"] = report.released_at
out["after"] = MPI.COMM_WORLD.allreduce(1)  # the classical job goes on after release
print("CLIENT " + json.dumps(out), flush=True)
"""


def _env():
    return {**os.environ, "PYTHONUNBUFFERED": "1", "UCX_LOG_LEVEL": "error"}


def _service(port_dir: Path, n: int = 2, sessions: int = 1, limit: int = 180) -> subprocess.Popen:
    return subprocess.Popen(
        ["timeout", "--kill-after=5", str(limit), mpiexec_path(), "-n", str(n), sys.executable, "-m",
         "monitor_engine.attach", "serve", "--port-dir", str(port_dir), "--json", "--sessions", str(sessions),
         "--idle-timeout", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )


def _client(tmp_path: Path, port_dir: Path, n: int = 1, hold: float = 0.0, limit: int = 180) -> subprocess.Popen:
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    return subprocess.Popen(
        ["timeout", "--kill-after=5", str(limit), mpiexec_path(), "-n", str(n), sys.executable, str(script),
         str(port_dir), str(hold)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )


def _lines(text: str, tag: str) -> list[dict]:
    """Every ``TAG {json}`` record in ``text``; two ranks' lines may interleave on one line."""
    decoder, out, start = json.JSONDecoder(), [], 0
    while (at := text.find(tag + " {", start)) >= 0:
        value, start = decoder.raw_decode(text, at + len(tag) + 1)
        out.append(value)
    return out


def test_two_jobs_attach_run_and_release(tmp_path):
    port_dir = tmp_path / "port"
    service = _service(port_dir)
    client = _client(tmp_path, port_dir, n=2)
    c_out, c_err = client.communicate(timeout=200)
    released_seen = time.time()
    s_out, s_err = service.communicate(timeout=60)
    service_exit = time.time()
    assert client.returncode == 0, c_out + c_err
    assert service.returncode == 0, s_out + s_err
    outs = sorted(_lines(c_out, "CLIENT"), key=lambda o: o["rank"])
    assert [o["rank"] for o in outs] == [0, 1]
    first = outs[0]
    assert first["classical"] == 2 and first["quantum"] == 2
    assert first["dispatch"] == [["00", "11"]] * 3
    # GHZ reconstructed exactly across the two jobs: only all-zeros and all-ones
    assert set(first["ghz"]) == {"000000", "111111"} and sum(first["ghz"].values()) == 200
    assert all(o["after"] == 2 for o in outs)
    (report,) = _lines(s_out, "SERVICE")
    (session,) = report["sessions"]
    assert report["stopped"] == "once" and session["classical"] == 2
    assert session["executed"] >= 3 + 2  # three dispatched shares, two GHZ blocks
    assert session["commands"] == ["serve", "call:mpiq_magic.ghz.pipeline:run_ghz", "serve", "release"]
    # the service's job ended promptly after the release (its allocation would be free)
    assert report["ended"] - first["released"] < 10, (report["ended"], first["released"])
    assert service_exit - released_seen < 15
    assert not (port_dir / "service.json").exists()
    assert json.loads((port_dir / "sessions.jsonl").read_text())["client"] == session["client"]


def test_a_second_client_queues_until_the_first_releases(tmp_path):
    port_dir = tmp_path / "port"
    service = _service(port_dir, sessions=2, limit=220)
    first = _client(tmp_path, port_dir, hold=4.0, limit=200)
    deadline = time.time() + 120
    while not (port_dir / "accepting").exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.2)
    second = _client(tmp_path, port_dir, limit=200)
    a_out, a_err = first.communicate(timeout=200)
    b_out, b_err = second.communicate(timeout=200)
    s_out, s_err = service.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0, a_out + a_err + b_out + b_err
    assert service.returncode == 0, s_out + s_err
    (a,), (b,) = _lines(a_out, "CLIENT"), _lines(b_out, "CLIENT")
    assert b["attached"] >= a["released"]  # served one at a time, in claim order
    (report,) = _lines(s_out, "SERVICE")
    assert report["stopped"] == "sessions" and len(report["sessions"]) == 2


# ---------------------------------------------------------------------- rendezvous errors, in-process
def _announce(port_dir: Path, pid: int, age: float = 0.0) -> None:
    from mpiq_magic.kernel.hosts import node_id

    port_dir.mkdir(parents=True, exist_ok=True)
    path = port_dir / "service.json"
    path.write_text(json.dumps({"port": "nowhere", "pid": pid, "host": "here", "node": node_id(), "quantum": 2,
                                "devices": ["here:0", "here:1"], "started": time.time()}))
    if age:
        os.utime(path, (time.time() - age, time.time() - age))


def test_no_service_times_out_with_a_sentence(tmp_path):
    from monitor_engine.attach import attach
    from mpiq_magic.kernel.errors import MPIQTimeoutError

    with pytest.raises(MPIQTimeoutError, match=r"No quantum service announced itself at the port directory .* within 1 s") as info:
        attach(tmp_path, wait=1)
    assert info.value.missing == ["quantum service"]


def test_a_stale_port_file_is_refused(tmp_path):
    from monitor_engine.attach import ServiceError, attach

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _announce(tmp_path, int(dead.stdout))
    with pytest.raises(ServiceError, match=r"is stale: .* is gone \(its process \d+ on here no longer exists\)"):
        attach(tmp_path, wait=5)
    _announce(tmp_path, os.getpid(), age=60)
    with pytest.raises(ServiceError, match=r"heartbeat stopped \d+ s ago"):
        attach(tmp_path, wait=5)
    assert not (tmp_path / "claim").exists()


def test_a_busy_service_makes_the_next_client_wait_then_says_who_holds_it(tmp_path):
    from monitor_engine.attach import attach
    from mpiq_magic.kernel.errors import MPIQTimeoutError

    _announce(tmp_path, os.getpid())
    (tmp_path / "claim").write_text(json.dumps({"id": "other", "who": "node7:4242 (SLURM job 17)"}))
    t0 = time.monotonic()
    with pytest.raises(MPIQTimeoutError, match=r"stayed attached to another client \(node7:4242 \(SLURM job 17\)\)"):
        attach(tmp_path, wait=1.5)
    assert time.monotonic() - t0 >= 1.4
    assert json.loads((tmp_path / "claim").read_text())["id"] == "other"  # not ours to remove


def test_no_port_directory_is_a_usage_error(monkeypatch):
    from monitor_engine.attach import attach
    from mpiq_magic.kernel.errors import UsageError

    monkeypatch.delenv("MPIQ_PORT_DIR", raising=False)
    with pytest.raises(UsageError, match="No port directory given"):
        attach()


def test_notebook_cluster_attaches_and_runs_the_magics_across_jobs(tmp_path):
    """In a real Jupyter kernel: a classical-only cluster (-q 0) attaches to the service
    (%mpiq attach), %%mpiq scatter reaches the service's monitors, %mpiq ghz and %mpiq barrier QQ
    run as collectives of both jobs, %mpiq release hands the service back."""
    from tests.cluster_fixtures import KernelSession

    port_dir = tmp_path / "port"
    service = _service(port_dir)

    def ok(source: str) -> str:
        result = session.run(source)
        assert result.error is None, f"cell failed:\n{source}\n{result.error_text}"
        return result.text

    try:
        with KernelSession(timeout=200) as session:
            ok("%load_ext mpiq_magic")
            ok("%mpiq start -c 1 -q 0 --timeout 90")
            out = ok(f"%mpiq attach {port_dir} --wait 120")
            assert "Attached 1 classical engine(s) to the quantum service of 2 monitor(s)" in out, out
            assert f"found at the port directory {port_dir}" in out, out
            ok("%%mpiq scatter --shots 100 --out res\nfrom qiskit import QuantumCircuit\n"
               "qc = QuantumCircuit(2); qc.h(0); qc.cx(0, 1); qc.measure_all()\ncircuits = [qc] * 3")
            ok("assert [sorted(r.counts) for r in res] == [['00', '11']] * 3, res")
            out = ok("%mpiq ghz 8 --nodes 2 --shots 200")
            assert "GHZ(8) from 2 block(s), 200 shots" in out and "The GHZResult is `ghz_result`." in out, out
            ok("assert set(ghz_result.counts) == {'0' * 8, '1' * 8}, ghz_result.counts\n"
               "assert sum(ghz_result.counts.values()) == 200")
            out = ok("%mpiq barrier QQ --repeat 3 --out recs")
            assert "3 QQ barrier(s) over 2 process(es): release skew median" in out, out
            ok("assert all(len(r['members']) == 2 and r['skew'] is not None for r in recs), recs")
            out = ok("%mpiq barrier ALL --out recs_all")
            assert "1 ALL barrier(s) over 3 process(es)" in out, out
            out = ok("%mpiq release")
            assert "Released the quantum service after" in out, out
            usage = session.run("%mpiq release")
            assert "not attached to a quantum service" in usage.text + usage.error_text
            ok("%mpiq stop")
    finally:
        s_out, s_err = service.communicate(timeout=90)
    assert service.returncode == 0, s_out + s_err
    (report,) = _lines(s_out, "SERVICE")
    (session_record,) = report["sessions"]
    assert session_record["commands"] == [
        "serve", "call:mpiq_magic.ghz.pipeline:run_ghz", "serve", "call:monitor_engine.attach_workloads:barriers",
        "serve", "call:monitor_engine.attach_workloads:barriers", "serve", "release",
    ], session_record["commands"]
