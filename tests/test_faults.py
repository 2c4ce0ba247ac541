"""Faults with real processes (issue 17): owners killed by any signal, failing ranks, a dead
controller, listeners, per-cell resources, validation and CLI edges.

Each test names the numbered item of the issue it covers; each fails on the code before the
reliability pass (orphans stay, ranks wait out the timeout, status hangs, listeners on 0.0.0.0,
widgets accumulate, bad devices files and arguments reach the job).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
MPIQ = [sys.executable, "-m", "mpiq_magic.cli"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}

pytestmark = [pytest.mark.mpi]


# ----------------------------------------------------------------------------- helpers
def _tree(pid: int) -> dict[int, float]:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    out = {}
    for p in procs:
        try:
            out[p.pid] = p.create_time()
        except psutil.Error:
            pass
    return out


def _alive(pids: dict[int, float]) -> list[int]:
    left = []
    for pid, created in pids.items():
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - created) < 1e-3 and p.status() != psutil.STATUS_ZOMBIE:
                left.append(pid)
        except psutil.Error:
            pass
    return left


def _wait_gone(pids: dict[int, float], seconds: float) -> list[int]:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        left = _alive(pids)
        if not left:
            return []
        time.sleep(0.2)
    return _alive(pids)


def _describe(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            out.append(f"{pid} {' '.join(psutil.Process(pid).cmdline())[:90]}")
        except psutil.Error:
            pass
    return out


def _is_rank(pid: int, module: str) -> bool:
    """A rank of the job: ``python -m module`` itself, not the mpiexec that launched it."""
    try:
        cmd = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    return module in cmd and "mpiexec" not in " ".join(cmd[:1])


def _kill_tree(pids: dict[int, float]) -> None:
    for pid in _alive(pids):
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass


def _wait_for_line(proc: subprocess.Popen, prefix: str, seconds: float) -> str:
    """Read proc's stdout until a line starts with ``prefix`` (the test fails after ``seconds``)."""
    found: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            if line.startswith(prefix):
                found.append(line)
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(seconds)
    assert found, f"no {prefix!r} line within {seconds} s"
    return found[0]


def _tmp_dirs(prefix: str) -> set[str]:
    base = Path(tempfile.gettempdir())
    return {str(p) for p in base.glob(prefix + "*")}


# ----------------------------------------------------------------------------- item 1: orphans
OWNER_SCRIPT = """
import os, time, psutil
from mpiq_magic.cluster import HybridCluster
c = HybridCluster(1, 1, prewarm=False, start_timeout=120)
c.start()
me = psutil.Process()
kids = [p.pid for p in me.children(recursive=True)]
print("READY", c._profile_dir, " ".join(map(str, kids)), flush=True)
time.sleep(300)
"""


@pytest.mark.timeout(150)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "term"])
def test_cluster_processes_die_with_their_owner(tmp_path, sig):
    """Item 1: kill -9 (or SIGTERM) of a script inside HybridCluster: within 10 s no process
    of the cluster is left and its profile directory (connection keys) is gone."""
    script = tmp_path / "owner.py"
    script.write_text(OWNER_SCRIPT)
    owner = subprocess.Popen(["timeout", "280", sys.executable, str(script)], stdout=subprocess.PIPE,
                             text=True, env=ENV)
    tree: dict[int, float] = {}
    try:
        line = _wait_for_line(owner, "READY", 120)
        tree = _tree(owner.pid)
        profile = line.split()[1]
        assert Path(profile).is_dir()
        python = [p for p in psutil.Process(owner.pid).children() if "owner.py" in " ".join(p.cmdline())][0]
        # processes of the cluster: everything under the owner script (controller, mpiexec, engines,
        # nannies, the controller's schedulers; not the watchdog, which must end by itself too)
        assert len(tree) >= 8
        python.send_signal(sig)
        left = _wait_gone({p: c for p, c in tree.items() if p != owner.pid}, 10)
        assert not left, f"left behind 10 s after the owner died: {_describe(left)}"
        assert not Path(profile).exists(), "the profile directory (connection keys) was left behind"
    finally:
        _kill_tree(tree)
        owner.kill()
        owner.wait()


RUN_SCRIPT = """
import time
from mpiq_magic import kernel as mpiq
hc = mpiq.init()
if hc.rank == 0:
    print("RUNNING", flush=True)
time.sleep(120)
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "term"])
def test_mpiq_run_job_dies_with_the_launcher(tmp_path, sig):
    """Item 1: the MPI job of `mpiq run` ends within 10 s of its parent dying by any signal."""
    script = tmp_path / "sleepy.py"
    script.write_text(RUN_SCRIPT)
    parent = subprocess.Popen([*MPIQ, "run", "-c", "1", "-q", "2", str(script)], stdout=subprocess.PIPE,
                              text=True, env=ENV)
    tree: dict[int, float] = {}
    try:
        _wait_for_line(parent, "RUNNING", 90)
        tree = _tree(parent.pid)
        ranks = [p for p in tree if psutil.Process(p).cmdline()[1:3] == ["-m", "mpiq_magic.runner"]]
        assert len(ranks) == 3, _describe(list(tree))
        parent.send_signal(sig)
        left = _wait_gone({p: c for p, c in tree.items() if p != parent.pid}, 10)
        assert not left, f"left behind 10 s after `mpiq run` died: {_describe(left)}"
    finally:
        _kill_tree(tree)
        parent.kill()
        parent.wait()


@pytest.mark.timeout(120)
def test_mpiq_ghz_spec_dir_and_job_die_with_the_launcher(tmp_path):
    """Item 1: kill -9 of `mpiq ghz` leaves neither its MPI job nor its spec directory."""
    before = _tmp_dirs("mpiq-ghz-")
    parent = subprocess.Popen(
        [*MPIQ, "ghz", "--qubits", "4000", "--nodes", "2", "--blocks", "400", "--shots", "100000", "--timeout", "100"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
    )
    tree: dict[int, float] = {}
    try:
        end = time.monotonic() + 60
        ranks: list[int] = []
        while time.monotonic() < end and len(ranks) < 3:
            tree = _tree(parent.pid)
            ranks = [p for p in tree if _is_rank(p, "mpiq_magic.ghz.job")]
            time.sleep(0.3)
        assert len(ranks) == 3, _describe(list(tree))
        new = _tmp_dirs("mpiq-ghz-") - before
        assert new, "no spec directory was made"
        parent.kill()
        left = _wait_gone({p: c for p, c in tree.items() if p != parent.pid}, 10)
        assert not left, f"left behind: {_describe(left)}"
        assert not any(Path(d).exists() for d in new), "the spec directory was left behind"
    finally:
        _kill_tree(tree)
        parent.kill()
        parent.wait()


def test_stale_directories_of_dead_owners_are_reaped_at_start(tmp_path):
    """Item 1: a directory whose owner died before it could clean up goes at the next start."""
    from mpiq_magic.cluster.processes import make_temp_dir, mark_owner, reap_stale

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / "mpiq-cluster-stale"
    stale.mkdir()
    (stale / ".mpiq-owner").write_text(json.dumps({"pid": dead.pid, "created": 1.0}))
    live = tmp_path / "mpiq-cluster-live"
    live.mkdir()
    mark_owner(live)
    assert reap_stale(str(tmp_path)) == [str(stale)]
    assert live.exists() and not stale.exists()
    d = make_temp_dir("mpiq-run-")
    assert Path(d, ".mpiq-owner").exists()
    os.remove(Path(d, ".mpiq-owner"))
    os.rmdir(d)


# ----------------------------------------------------------------------------- item 2: failing ranks
@pytest.mark.timeout(120)
@pytest.mark.parametrize("failure, code, expected", [
    ("1 / 0", 1, "rank 2 (qrank 1) failed: ZeroDivisionError: division by zero"),
    ("sys.exit(3)", 3, "rank 2 (qrank 1) failed: SystemExit: the script exited with status 3"),
], ids=["raise", "sys.exit"])
def test_failing_rank_ends_the_job_at_once_with_its_error(tmp_path, failure, code, expected):
    """Item 2: a rank that raises or exits ends the `mpiq run` job within seconds (not the 120 s
    timeout the others would wait), and its error is printed once, naming the rank."""
    script = tmp_path / "fails.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from mpiq_magic import kernel as mpiq
        hc = mpiq.init(timeout=120)
        if hc.qrank == 1:
            {failure}
        hc.barrier(mpiq.ALL)
        print("barrier passed")
    """))
    t0 = time.monotonic()
    proc = subprocess.run(["timeout", "110", *MPIQ, "run", "-c", "1", "-q", "2", str(script)],
                          capture_output=True, text=True, env=ENV)
    elapsed = time.monotonic() - t0
    assert proc.returncode == code, proc.stderr
    assert elapsed < 60, f"the job took {elapsed:.0f} s: the others waited for the dead rank"
    assert proc.stderr.count(expected) == 1, proc.stderr
    assert "barrier passed" not in proc.stdout
    if failure == "1 / 0":
        assert proc.stderr.count("Traceback") == 1 and "fails.py" in proc.stderr


# ----------------------------------------------------------------------------- item 3: unpicklable data
UNPICKLABLE = """
import json, time
from mpiq_magic import kernel as mpiq
hc = mpiq.init(classical=1, timeout=60)
out = {}
for name, call in [
    ("scatter", lambda: hc.scatter([1, lambda: 0] if hc.rank == 0 else None)),
    ("bcast", lambda: hc.bcast((lambda: 0) if hc.rank == 0 else None)),
    ("gather", lambda: hc.gather((lambda: 0) if hc.qrank == 1 else hc.qrank)),
]:
    t0 = time.monotonic()
    try:
        call()
        error = None
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    out[name] = [error, time.monotonic() - t0]
with open(f"unpicklable-{hc.comm_rank}.json", "w") as f:  # files: lines of 3 ranks interleave
    json.dump(out, f)
hc.free()
"""


@pytest.mark.timeout(120)
def test_unpicklable_data_fails_every_member_at_once(tmp_path):
    """Item 3: an object that does not pickle fails the collective on the sender before anything
    is sent, and every receiver learns it at once (not after its 60 s timeout)."""
    script = tmp_path / "unpicklable.py"
    script.write_text(UNPICKLABLE)
    proc = subprocess.run(["timeout", "100", *MPIQ, "run", "-c", "1", "-q", "2", str(script)],
                          capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = {int(p.stem.split("-")[1]): json.loads(p.read_text()) for p in tmp_path.glob("unpicklable-*.json")}
    assert set(got) == {0, 1, 2}, proc.stdout + proc.stderr
    pickle_error = "Can't pickle"
    for rank in (0, 1, 2):
        for op in ("scatter", "bcast"):
            error, seconds = got[rank][op]
            assert error and pickle_error in error and seconds < 10, (rank, op, error, seconds)
            if rank:
                assert f"{op} failed on rank 0" in error
    # gather: qrank 1 (comm rank 2) cannot pickle its contribution; the root learns it at once
    assert pickle_error in got[2]["gather"][0]
    error, seconds = got[0]["gather"]
    assert "gather failed on qrank 1" in error and pickle_error in error and seconds < 10, error


# ----------------------------------------------------------------------------- items 4 and 5: controller, listeners
def _listeners(pids: set[int]) -> list[str]:
    out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines()[1:]:
        if any(f"pid={p}," in line for p in pids):
            found.append(line.split()[3])
    return found


def _loopback(addr: str) -> bool:
    host = addr.rsplit(":", 1)[0].strip("[]")
    return host.startswith("127.") or host == "::1"


@pytest.mark.timeout(180)
def test_single_host_cluster_listens_on_loopback_and_survives_a_dead_controller():
    """Item 5: every listener of a single-host cluster (controller, engines' MPI netmod, process
    manager, QQ sockets, this client) is on loopback, and the client never initialises MPI.
    Item 4: after kill -9 of the controller, status answers at once (reporting it dead) and
    stop() still removes every process."""
    code = "import sys, mpiq_magic.cluster, mpiq_magic.magics; print('mpi4py.MPI' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert out.stdout.strip() == "False", out.stderr

    from mpiq_magic.cluster import HybridCluster

    me = psutil.Process()
    before = _tree(me.pid)  # processes of other tests' clusters (a session fixture) are not ours
    # listeners this test process had already (earlier in-process tests may have started MPI
    # here); that the client never initialises MPI itself is checked in a fresh process above
    own_before = set(_listeners({me.pid}))
    cluster = HybridCluster(1, 2, prewarm=False, timeout=30, start_timeout=120)
    cluster.start()
    tree: dict[int, float] = {}
    try:
        cluster.barrier("QQ")  # the QQ coordinator's socket is open now
        tree = {p: c for p, c in _tree(me.pid).items() if p != me.pid and p not in before}
        addrs = [a for a in _listeners(set(tree) | {me.pid}) if a not in own_before]
        assert addrs, "no listener found at all"
        outside = [a for a in addrs if not _loopback(a)]
        assert not outside, f"listeners beyond loopback: {outside}"

        os.kill(cluster._controller_pid, signal.SIGKILL)
        time.sleep(0.5)
        result: list = []
        t = threading.Thread(target=lambda: result.append(cluster.status()), daemon=True)
        t0 = time.monotonic()
        t.start()
        t.join(20)
        assert result, "status() blocked on the dead controller"
        assert time.monotonic() - t0 < 15
        assert "controller" in str(result[0]) and "dead" in str(result[0])
        with pytest.raises(Exception, match="controller"):
            cluster.barrier("CC", timeout=10)
        cluster.stop()
        left = _wait_gone(tree, 10)
        assert not left, f"stop() left behind: {_describe(left)}"
    finally:
        cluster.stop()
        _kill_tree(tree)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("extra", [[], ["--interface", "lo"]], ids=["default", "interface-lo"])
def test_mpiq_run_job_listens_on_loopback_only(tmp_path, extra):
    """Item 5: the ranks and the process manager of `mpiq run` listen on loopback only (by
    default, and when the user names ``lo`` as the cluster interface)."""
    script = tmp_path / "listen.py"
    script.write_text(textwrap.dedent("""
        import subprocess, psutil
        from mpiq_magic import kernel as mpiq
        hc = mpiq.init()
        hc.barrier(mpiq.ALL)
        if hc.rank == 0:
            me = psutil.Process()
            top = me.parent()
            pids = {top.pid, *(p.pid for p in top.children(recursive=True))}
            out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
            print("LISTEN", [l.split()[3] for l in out.splitlines()[1:] if any(f"pid={p}," in l for p in pids)])
        hc.barrier(mpiq.ALL)
    """))
    proc = subprocess.run(["timeout", "100", *MPIQ, "run", *extra, "-c", "1", "-q", "2", str(script)],
                          capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr
    line = next(l for l in proc.stdout.splitlines() if l.startswith("LISTEN"))
    addrs = eval(line[len("LISTEN"):])
    assert not [a for a in addrs if not _loopback(a)], addrs


def _other_interface() -> tuple[str, str] | None:
    """A non-loopback interface of this host with an IPv4 address, and that address."""
    import socket

    for name, addrs in sorted(psutil.net_if_addrs().items()):
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return name, a.address
    return None


@pytest.mark.timeout(180)
def test_named_interface_binds_every_listener_of_the_cluster_there():
    """Item 5, multi-host: ``HybridCluster(interface=IF)`` binds every listener (controller,
    MPI netmod, QQ coordinator) to that interface's address, not loopback, not 0.0.0.0 (on
    one host, with a non-loopback interface standing in for the cluster network)."""
    from mpiq_magic.cluster import HybridCluster

    found = _other_interface() or ("lo", "127.0.0.1")
    name, address = found
    me = psutil.Process()
    before = _tree(me.pid)
    own_before = set(_listeners({me.pid}))
    cluster = HybridCluster(1, 2, prewarm=False, timeout=30, start_timeout=120, interface=name)
    tree: dict[int, float] = {}
    try:
        cluster.start()
        cluster.barrier("QQ")  # the QQ coordinator's socket is open now
        tree = {p: c for p, c in _tree(me.pid).items() if p != me.pid and p not in before}
        addrs = [a for a in _listeners(set(tree) | {me.pid}) if a not in own_before]
        # on the interface, or on loopback (reachable from this host only); nowhere else
        outside = [a for a in addrs if not _loopback(a) and a.rsplit(":", 1)[0].strip("[]") != address]
        assert not outside, f"listeners beyond {name} ({address}): {outside}"
        on_it = {p for p in tree if any(not _loopback(a) for a in _listeners({p}))}
        engines = {info.pid for info in cluster.engines}
        assert cluster._controller_pid in on_it, f"the controller does not listen on {address}: {addrs}"
        assert engines <= on_it, f"engines (MPI netmod, QQ coordinator) not listening on {address}: {addrs}"
    finally:
        cluster.stop()
        _kill_tree(tree)


def test_unknown_interface_is_refused_before_anything_starts(tmp_path):
    """Item 5: a cluster interface that does not exist is one clear error (naming it and the
    interfaces there are) from ``HybridCluster``, ``%mpiq start`` and ``mpiq run``; no job starts."""
    from mpiq_magic.cluster import HybridCluster
    from mpiq_magic.kernel.errors import ConfigError

    with pytest.raises(ConfigError, match=r"'nosuch9' does not exist.*lo \(127\.0\.0\.1\)"):
        HybridCluster(1, 1, interface="nosuch9")
    script = tmp_path / "never.py"
    script.write_text("open('ran', 'w').write('yes')\n")
    proc = subprocess.run(["timeout", "60", *MPIQ, "run", "--interface", "nosuch9", str(script)],
                          capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert proc.returncode not in (0, 124), proc.stderr
    assert "'nosuch9' does not exist" in proc.stderr and "lo (127.0.0.1)" in proc.stderr, proc.stderr
    assert not (tmp_path / "ran").exists()


# ----------------------------------------------------------------------------- item 6: start/stop cycles
def _resources() -> tuple[list[str], list[str]]:
    """This process's threads (names) and open descriptors (what they point at)."""
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass  # the descriptor listdir itself used
    return sorted(t.name for t in threading.enumerate()), sorted(fds)


@pytest.mark.timeout(300)
def test_start_stop_cycles_leave_no_threads_or_descriptors():
    """Item 6: HybridCluster start/stop cycles, run (like in a notebook kernel) from inside a
    running asyncio event loop, leave no thread and no file descriptor behind. ipyparallel runs
    its ``*_sync`` calls on an IOLoop thread there that it never ends: one thread and three
    descriptors per cycle before the fix."""
    import asyncio

    from mpiq_magic.cluster import HybridCluster

    def cycle() -> None:
        cluster = HybridCluster(1, 1, prewarm=False, timeout=30, start_timeout=120)
        try:
            cluster.start()
            cluster.barrier("ALL")
        finally:
            cluster.stop()

    async def in_a_running_loop() -> tuple:
        cycle()  # warm-up: first-use imports, zmq's context and its threads are not leaks
        before = _resources()
        for _ in range(2):
            cycle()
        time.sleep(0.5)
        return before, _resources()

    (threads0, fds0), (threads1, fds1) = asyncio.run(in_a_running_loop())
    assert len(threads1) <= len(threads0), f"threads before {threads0}, after {threads1}"
    extra = list(fds1)
    for fd in fds0:
        if fd in extra:
            extra.remove(fd)
    assert len(fds1) <= len(fds0), f"descriptors grew from {len(fds0)} to {len(fds1)}; new ones: {extra}"


# ----------------------------------------------------------------------------- items 6 and 8: per-cell resources, timeouts
_PROBE = (
    "import gc, warnings, psutil, ipywidgets, plotly.graph_objects as _go\n"
    "gc.collect()\n"
    "with warnings.catch_warnings():\n"
    "    warnings.simplefilter('ignore')\n"
    "    _w = len(ipywidgets.Widget.widgets)\n"
    "import ctypes; ctypes.CDLL('libc.so.6').malloc_trim(0)  # freed memory back to the system\n"
    "print('PROBE', _w, sum(isinstance(o, _go.FigureWidget) for o in gc.get_objects()),\n"
    "      psutil.Process().memory_info().rss / 2**20, 'END')"
)


def _probe(k) -> tuple[int, int, float]:
    """(live widgets, live plotly FigureWidgets, RSS in MiB) of the kernel."""
    widgets, figures, rss = k.run(_PROBE).text.split("PROBE")[1].split("END")[0].split()
    return int(widgets), int(figures), float(rss)


@pytest.fixture(scope="module")
def kernel_cluster(kernel_session):
    """The session kernel with a 1 + 2 cluster started by `%mpiq start`, dashboards as widgets."""
    k = kernel_session
    r = k.run("import os; os.environ['MPIQ_WIDGETS'] = 'widget'\n%mpiq start -c 1 -q 2")
    assert r.error is None, r.error_text
    try:
        yield k
    finally:
        k.run("%mpiq stop\nimport os; os.environ.pop('MPIQ_WIDGETS', None)")


@pytest.mark.timeout(300)
def test_barrier_cells_leave_widgets_figures_and_memory_flat(kernel_cluster):
    """Item 6: `%mpiq barrier` cells in widget mode leave the kernel's live widgets, plotly
    figures and memory flat. Each cell's dashboard holds a plotly FigureWidget (~0.3 MiB), which
    anywidget's hot-reload hook kept alive for ever: +0.1 to 0.3 MiB per cell before the fix.
    The first cells fill caches and the allocator's pools (a plateau of a few MiB), so memory is
    compared after them."""
    k = kernel_cluster
    cells = ["%mpiq barrier QQ", "%mpiq barrier CC"]
    for i in range(24):  # first-use imports, caches, allocator pools: not growth
        assert k.run(cells[i % 2]).error is None
    widgets0, figures0, rss0 = _probe(k)
    count = 60
    for i in range(count):
        r = k.run(cells[i % 2])
        assert r.error is None, r.error_text
    widgets1, figures1, rss1 = _probe(k)
    assert widgets1 <= widgets0, f"live widgets grew from {widgets0} to {widgets1} over {count} cells"
    assert rss1 - rss0 < 3.0, f"kernel RSS grew {rss1 - rss0:.1f} MiB over {count} cells ({(rss1 - rss0) / count * 1024:.0f} KiB per cell)"
    assert figures1 <= figures0, f"live plotly figures grew from {figures0} to {figures1} over {count} cells"


@pytest.mark.timeout(180)
def test_scatter_past_its_timeout_stops_rank_0_and_does_not_delay_the_next_cell(kernel_cluster):
    """Item 8: a `%%mpiq scatter` whose cell is still running on classical rank 0 at its
    `--timeout` raises a timeout error naming the rank that did not answer and that no circuit
    ran; rank 0 is interrupted, so the next cells run at once instead of after the remainder."""
    k = kernel_cluster
    sleep, timeout = 40, 4
    cell = (f"%%mpiq scatter --timeout {timeout}\nimport time\ntime.sleep({sleep})\n"
            "from qiskit import QuantumCircuit\ncircuits = QuantumCircuit(1)\ncircuits.measure_all()")
    t0 = time.monotonic()
    r = k.run(cell)
    took = time.monotonic() - t0
    assert r.error is not None, r.text
    assert "Timeout" in r.error["ename"], r.error_text
    assert "classical rank 0" in r.error_text and f"did not answer within {timeout} s" in r.error_text, r.error_text
    assert "no circuit ran" in r.error_text, r.error_text
    assert took < timeout + 12, f"the cell took {took:.1f} s with --timeout {timeout}"
    # rank 0 is free: the next cells answer well before the remainder of the sleep is over
    t0 = time.monotonic()
    r = k.run("%%mpiq run --targets classical\nprint('rank 0 free')")
    assert r.error is None and "rank 0 free" in r.text, r.error_text
    r = k.run("%%mpiq scatter --timeout 30\nfrom qiskit import QuantumCircuit\n"
              "circuits = [QuantumCircuit(1), QuantumCircuit(1)]\nfor c in circuits: c.x(0); c.measure_all()")
    assert r.error is None, r.error_text
    took = time.monotonic() - t0
    assert took < (sleep - timeout) / 2, f"the next cells took {took:.1f} s: rank 0 was still running the old one"


# ----------------------------------------------------------------------------- item 7: validation
@pytest.mark.parametrize("entry, message", [
    ("noise = { generic = true, depolarizing = 0.01 }", "sets generic = true together with ['depolarizing']"),
    ("basis_gates = ['rz', 'sx', 'frobnicate', 'measure']", "['frobnicate'] that Qiskit does not know"),
    ("num_qubits = 4\ncoupling = [[0, 1], [1, 1]]", "self-loop(s) [[1, 1]]"),
    ("num_qubits = 4\ncoupling = [[0, 1], [1, 7]]", "pair(s) [[1, 7]] outside the device's 4 qubits"),
], ids=["generic+rates", "unknown-gate", "self-loop", "outside-width"])
def test_bad_device_fields_refused_once_before_the_job(tmp_path, entry, message):
    """Item 7: every device field is validated at load; under `mpiq run` the error is printed
    once, and no MPI job is started."""
    devices = tmp_path / "d.toml"
    devices.write_text(f"[[devices]]\nhost = '127.0.0.1'\ndevice_id = 0\n{entry}\n"
                       "[[devices]]\nhost = '127.0.0.1'\ndevice_id = 1\n")
    script = tmp_path / "s.py"
    script.write_text("from mpiq_magic import kernel\nkernel.init()\n")
    t0 = time.monotonic()
    proc = subprocess.run(["timeout", "60", *MPIQ, "run", "-q", "2", "--devices", str(devices), str(script)],
                          capture_output=True, text=True, env=ENV)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count(message) == 1, proc.stderr
    assert time.monotonic() - t0 < 30


def test_error_raised_by_every_rank_printed_once(tmp_path):
    """Item 7: an init error every rank agrees on is printed once (not once per rank, each
    message joined once per rank)."""
    script = tmp_path / "s.py"
    script.write_text("from mpiq_magic import kernel\nkernel.init(classical=7)\n")
    proc = subprocess.run(["timeout", "100", *MPIQ, "run", "-q", "2", str(script)],
                          capture_output=True, text=True, env=ENV)
    assert proc.returncode != 0
    assert proc.stderr.count("classical=7 is impossible") == 1, proc.stderr


def test_circuit_without_measurements_refused():
    """Item 7: the sampler path refuses a circuit with no measurements (it would "succeed"
    with {'': shots})."""
    from qiskit import QuantumCircuit

    from monitor_engine.errors import CompileError
    from monitor_engine.payload import CompileCache, compile_for
    from mpiq_magic.kernel.config import DeviceSpec

    qc = QuantumCircuit(2, name="nomeasure")
    qc.h(0)
    qc.cx(0, 1)
    with pytest.raises(CompileError, match="'nomeasure' has no measurements"):
        compile_for(DeviceSpec("127.0.0.1", 0, num_qubits=4), qc, cache=CompileCache())


# ----------------------------------------------------------------------------- item 8: CLI edges
@pytest.mark.parametrize("argv, message", [
    (["run", "--timeout", "-5", "SCRIPT"], "--timeout must be a number of seconds >= 0"),
    (["ghz", "-n", "8", "-m", "2", "--timeout", "-5"], "--timeout must be a positive number of seconds, got -5"),
    (["ghz", "-n", "8", "-m", "2", "--timeout", "0"], "--timeout must be a positive number of seconds, got 0"),
    (["ghz", "-n", "8", "-m", "2", "--json", "/nonexistent-dir/out.json"], "the directory '/nonexistent-dir' does not exist"),
    (["ghz", "-n", "60000", "-m", "1", "--method", "statevector", "--devices", "WIDE"], "60000-qubit statevector needs 2^60004 bytes"),
    (["ghz", "-n", "2000", "-m", "1", "--method", "statevector", "--devices", "WIDE"], "2000-qubit statevector needs 2^2004 bytes"),
], ids=["run-negative-timeout", "ghz-negative-timeout", "ghz-zero-timeout", "ghz-bad-json", "ghz-60000", "ghz-2000"])
def test_cli_arguments_checked_before_anything_starts(tmp_path, argv, message):
    """Item 8: bad timeouts, output paths and sizes are refused by the launcher in integer
    arithmetic (no OverflowError, no 300-digit figure), before any process starts."""
    script = tmp_path / "s.py"
    script.write_text("print('ran')\n")
    wide = tmp_path / "wide.toml"
    wide.write_text("[[devices]]\nhost = '127.0.0.1'\ndevice_id = 0\nnum_qubits = 60000\n")
    argv = [str(script) if a == "SCRIPT" else str(wide) if a == "WIDE" else a for a in argv]
    t0 = time.monotonic()
    proc = subprocess.run(["timeout", "60", *MPIQ, *argv], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "ran" not in proc.stdout
    assert max((len(w) for w in proc.stderr.split()), default=0) < 40  # no 300-digit figure
    assert time.monotonic() - t0 < 20
