"""The quantum service found through MPI's name service (monitor_engine.rendezvous_names):
separately launched ``mpiexec -nameserver`` jobs with no port directory. A service that ended
without withdrawing leaves a stale entry (refused with a sentence, then replaced by the next
service); two clients queue on one service and are served in turn, attach/GHZ/release across
the jobs; once the service is gone the name is not published (a sentence naming the name and
the name server), and a name server that stopped answering is reported instead of ending the
client's job."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

from mpiq_magic.launch import mpiexec_path
from tests.test_attach import CLIENT, _lines

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(300)]

#: A real job that publishes a service entry and ends without withdrawing it (as a killed service).
ANNOUNCE_AND_DIE = r"""
import os, socket, time
from mpi4py import MPI
from monitor_engine.rendezvous_names import NameService
from mpiq_magic.kernel.hosts import node_id
NameService().announce(MPI.Open_port(), {"pid": os.getpid(), "host": socket.gethostname(), "node": node_id(),
                                         "quantum": 2, "devices": ["x:0", "x:1"], "started": time.time()})
print("ANNOUNCED", flush=True)
"""

#: A client that expects to fail: prints the error's class and sentence.
FAILING_CLIENT = r"""
import sys
from monitor_engine.attach import attach
from mpiq_magic.kernel.errors import MPIQError
try:
    attach(wait=float(sys.argv[1]), timeout=30)
except MPIQError as exc:
    print(f"ERROR {type(exc).__name__}: {exc}", flush=True)
else:
    print("ATTACHED", flush=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def names(tmp_path):
    """A name server of this test (its own port) and the environment of jobs that use it."""
    from monitor_engine.rendezvous_names import NameServer

    address = f"127.0.0.1:{_free_port()}"
    env = {k: v for k, v in os.environ.items() if k not in ("MPIQ_PORT_DIR",)}
    env.update(PYTHONUNBUFFERED="1", UCX_LOG_LEVEL="error", UCX_NET_DEVICES="lo", MPIQ_NAMESERVER=address,
               MPIQ_SERVICE_NAME=f"mpiq-test-{uuid.uuid4().hex[:8]}")
    server = NameServer.ensure(address, limit=280)
    assert server.started
    try:
        yield address, env, server
    finally:
        server.stop()


def _job(tmp_path, address, env, script: str, *args: str, n: int = 1, limit: int = 150) -> subprocess.Popen:
    path = tmp_path / f"job-{uuid.uuid4().hex[:6]}.py"
    path.write_text(script)
    return subprocess.Popen(
        ["timeout", "--kill-after=5", str(limit), mpiexec_path(), "-nameserver", address, "-n", str(n),
         sys.executable, str(path), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def _error(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=120)
    lines = [line for line in out.splitlines() if line.startswith("ERROR ")]
    assert lines, out + err
    return lines[0]


def test_name_service_stale_entry_queue_ghz_and_gone(tmp_path, names):
    address, env, server = names
    name = env["MPIQ_SERVICE_NAME"]
    # a service that ended without withdrawing: its entry is stale, and said so
    died = _job(tmp_path, address, env, ANNOUNCE_AND_DIE)
    out, err = died.communicate(timeout=120)
    assert "ANNOUNCED" in out, out + err
    stale = _error(_job(tmp_path, address, env, FAILING_CLIENT, "20"))
    assert stale.startswith(f"ERROR ServiceError: The entry of the name '{name}' at the name server {address} is stale"), stale
    assert "no longer exists" in stale
    # a real service replaces the stale entry; `mpiq serve` uses the name server that answers
    service = subprocess.Popen(
        ["timeout", "--kill-after=5", "200", sys.executable, "-m", "mpiq_magic.cli", "serve", "-q", "2", "--json",
         "--sessions", "2", "--idle-timeout", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    replaced = service.stderr.readline()  # before it publishes its own entry (a job starts in seconds)
    assert "replacing the stale entry" in replaced, replaced
    # two clients, no port directory: found by name, served one after the other
    first = _job(tmp_path, address, env, CLIENT, "-", "4.0", n=2, limit=200)
    second = _job(tmp_path, address, env, CLIENT, "-", "0", limit=200)
    try:
        a_out, a_err = first.communicate(timeout=220)
        b_out, b_err = second.communicate(timeout=220)
        assert first.returncode == 0 and second.returncode == 0, a_out + a_err + b_out + b_err
        s_out, s_err = service.communicate(timeout=60)
    finally:
        for proc in (first, second, service):
            if proc.poll() is None:
                proc.kill()
    assert service.returncode == 0, s_out + s_err
    a = sorted(_lines(a_out, "CLIENT"), key=lambda o: o["rank"])
    (b,) = _lines(b_out, "CLIENT")
    if b["attached"] < a[0]["attached"]:  # the second job claimed first: then it was served first
        a, b = [b], a[0]
        assert b["attached"] >= a[0]["released"]
    else:
        assert b["attached"] >= a[0]["released"]  # one at a time, in claim order
    for out in (a[0], b):
        assert out["rendezvous"] == "name service" and out["quantum"] == 2
        assert out["dispatch"] == [["00", "11"]] * 3
        assert set(out["ghz"]) == {"000000", "111111"} and sum(out["ghz"].values()) == 200
    (report,) = _lines(s_out, "SERVICE")
    assert report["rendezvous"] == f"the name '{name}' at the name server {address}"
    assert report["stopped"] == "sessions" and len(report["sessions"]) == 2
    # the service withdrew its name: a client now hears that nothing is published under it
    gone = _error(_job(tmp_path, address, env, FAILING_CLIENT, "2"))
    assert gone == (f"ERROR MPIQTimeoutError: No quantum service announced itself at the name '{name}' at the "
                    f"name server {address} within 2 s (nothing is published under that name); start one with "
                    "`mpiq serve` first."), gone
    # a name server that no longer answers is named, and the client's job survives to say so
    server.stop()
    dead = _error(_job(tmp_path, address, env, FAILING_CLIENT, "2"))
    assert dead.startswith(f"ERROR ServiceError: No name server answers at {address}"), dead


def test_without_a_port_directory_under_gforker_the_error_says_why(tmp_path):
    """mpiexec.gforker's PMI has no lookup_name (a Lookup_name there hangs): never tried."""
    path = tmp_path / "client.py"
    path.write_text(FAILING_CLIENT)
    forker = os.path.join(os.path.dirname(mpiexec_path()), "mpiexec.gforker")
    env = {k: v for k, v in os.environ.items() if k != "MPIQ_PORT_DIR"}
    t0 = time.monotonic()
    out = subprocess.run(["timeout", "60", forker, "-n", "1", sys.executable, str(path), "5"],
                         capture_output=True, text=True, env=env, timeout=90)
    assert "ERROR UsageError: No port directory given, and mpiexec.gforker has no name service" in out.stdout, out
    assert time.monotonic() - t0 < 50
