"""QQ barrier socket layer (paper §3.3, Algorithm 1): quantum processes release at one trigger instant.

qrank 0 (the coordinator) binds a zmq ROUTER on its host interface (127.0.0.1 when every quantum
process runs on its host) and shares ``(endpoint, key)`` over MPI; the others connect DEALERs.
Every message is one frame, ``header | int64 values | HMAC-SHA256(key, header | values)``, packed
with :mod:`struct` and never unpickled; a frame with a wrong length, magic, sender or MAC is
counted in :attr:`QQSync.rejected` and dropped.

Clocks: processes whose kernel (``boot_id``) and time namespace match the coordinator's share
``CLOCK_MONOTONIC`` and use offset 0 exactly; others estimate it NTP-style (min-RTT ping-pong).
All times exchanged are on the coordinator's monotonic clock, in nanoseconds.

Barrier ``seq``: each process sends ARRIVE(arrival); the coordinator, once all arrived, picks
``trigger = now + margin`` and sends RELEASE(trigger, arrivals); every process sleeps until the
trigger (absolute ``clock_nanosleep`` with 1 ns timer slack, then ``sched_yield`` polling of the
clock for the last ``spin``), records its release and sleeps a moment so late wakers on an
oversubscribed host get the CPU; during a barrier each process asks for a short scheduler slice
(Linux 6.12+) so its wake-up preempts busy neighbours. With ``record`` each reports
DONE(release, time RELEASE was received) and gets SUMMARY(releases); the coordinator adapts
``margin`` so RELEASE reaches everyone before the trigger. On timeout the coordinator raises and
sends ABORT (naming the missing qranks) to every process that arrived; the others time out on
their own a little later (naming qrank 0). ``seq`` must be the same on every process for one
barrier and should grow by one per call; a retry under the seq of a failed barrier also works.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import gc
import hmac
import math
import os
import secrets
import socket
import struct
import sys
import time
from typing import TYPE_CHECKING, Any

import zmq

from .errors import MPIQError, MPIQTimeoutError

if TYPE_CHECKING:
    from mpi4py import MPI

__all__ = ["QQSync", "encode", "decode", "host_identity", "sleep_until"]

MAGIC = b"MQQ1"
HEADER = struct.Struct("!4sBIq")  # magic, kind, sender qrank, seq
MAC_LEN = 32
PING, PONG, READY, ARRIVE, RELEASE, DONE, SUMMARY, ABORT = range(1, 9)
_KINDS = frozenset(range(1, 9))
_FROM_COORDINATOR = frozenset({PONG, RELEASE, SUMMARY, ABORT})

PING_ROUNDS = 8
MIN_MARGIN_NS = 200_000  # floor of the trigger margin
MAX_MARGIN_NS = 50_000_000  # cap of the trigger margin
SPIN_NS = 200_000  # poll the clock (yielding the CPU) this long before the trigger
QUIET_NS = 100_000  # after release, sleep until trigger + this so late wakers get the CPU


# --------------------------------------------------------------------------- wire format


def encode(key: bytes, kind: int, qrank: int, seq: int, values: tuple[int, ...] | list[int] = ()) -> bytes:
    """One authenticated frame: header, big-endian int64 ``values``, HMAC-SHA256 of both."""
    body = HEADER.pack(MAGIC, kind, qrank, seq) + struct.pack(f"!{len(values)}q", *values)
    return body + hmac.digest(key, body, "sha256")


def decode(key: bytes, frame: bytes) -> tuple[int, int, int, tuple[int, ...]] | None:
    """``(kind, qrank, seq, values)`` of a frame made by :func:`encode` with ``key``, else None."""
    n = len(frame) - HEADER.size - MAC_LEN
    if n < 0 or n % 8:
        return None
    body, mac = frame[:-MAC_LEN], frame[-MAC_LEN:]
    if not hmac.compare_digest(mac, hmac.digest(key, body, "sha256")):
        return None
    magic, kind, qrank, seq = HEADER.unpack_from(body)
    if magic != MAGIC or kind not in _KINDS:
        return None
    return kind, qrank, seq, struct.unpack_from(f"!{n // 8}q", body, HEADER.size)


# --------------------------------------------------------------------------- clocks


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def host_identity() -> tuple[str, str]:
    """``(hostname, clock id)``; equal non-empty clock ids mean one shared ``CLOCK_MONOTONIC``."""
    boot = _read("/proc/sys/kernel/random/boot_id")
    clock = f"{boot}|{' '.join(_read('/proc/self/timens_offsets').split())}" if boot else ""
    return socket.gethostname(), clock


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _load_libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.clock_nanosleep.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Timespec), ctypes.c_void_p]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _load_libc()
_CLOCK_MONOTONIC, _TIMER_ABSTIME, _PR_SET_TIMERSLACK = 1, 1, 29


def reduce_timer_slack() -> None:
    """Ask Linux for 1 ns timer slack on the calling thread so sleeps end on time; ignore failure."""
    if _LIBC is not None:
        try:
            _LIBC.prctl(_PR_SET_TIMERSLACK, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
        except (OSError, AttributeError):
            pass


_yield = getattr(os, "sched_yield", lambda: None)


def sleep_until(target_ns: int, spin_ns: int = 0) -> int:
    """Sleep until ``target_ns`` on ``time.monotonic_ns``; return the wake time.

    Sleeps (absolute ``clock_nanosleep``) until ``spin_ns`` before the target, then polls the
    clock calling ``sched_yield`` so that on an oversubscribed host every waiting process gets
    the CPU in turn and sees the target within a few microseconds.
    """
    wake = target_ns - spin_ns
    if _LIBC is not None:
        ts = _Timespec(wake // 1_000_000_000, wake % 1_000_000_000)
        while time.monotonic_ns() < wake and _LIBC.clock_nanosleep(_CLOCK_MONOTONIC, _TIMER_ABSTIME, ts, None) == 4:
            pass  # EINTR: sleep again
    else:
        left = wake - time.monotonic_ns()
        if left > 0:
            time.sleep(left / 1e9)
    now = time.monotonic_ns()
    while now < target_ns:
        _yield()
        now = time.monotonic_ns()
    return now

_SCHED_ATTR = struct.Struct("=IIQiIQQQ")  # struct sched_attr, SCHED_ATTR_SIZE_VER0
_SCHED_SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275)}.get(os.uname().machine if hasattr(os, "uname") else "")
SLICE_NS = 100_000  # EEVDF slice asked for during a barrier (Linux >= 6.12; the kernel clamps it)


def _sched_attr(runtime_ns: int | None = None) -> int | None:
    """Set the calling thread's EEVDF slice to ``runtime_ns`` if given; return the previous slice.

    A short slice lets a process woken at the trigger preempt busy neighbours at once (Linux
    6.12+ custom slices, no privilege needed). None where unsupported or not SCHED_OTHER.
    """
    if _LIBC is None or _SCHED_SYSCALLS is None:
        return None
    set_nr, get_nr = _SCHED_SYSCALLS
    buf = ctypes.create_string_buffer(_SCHED_ATTR.size)
    if _LIBC.syscall(get_nr, 0, buf, _SCHED_ATTR.size, 0) != 0:
        return None
    _, policy, flags, nice, _, runtime, _, _ = _SCHED_ATTR.unpack(buf.raw)
    if policy != 0 or not runtime:  # only SCHED_OTHER, only kernels that report the slice
        return None
    if runtime_ns is not None and runtime_ns != runtime:
        new = _SCHED_ATTR.pack(_SCHED_ATTR.size, 0, flags & 1, nice, 0, runtime_ns, 0, 0)  # keep reset-on-fork
        if _LIBC.syscall(set_nr, 0, ctypes.create_string_buffer(new, len(new)), 0) != 0:
            return None
    return runtime


def _bind_address(identities: list[tuple[str, str]]) -> str:
    """The coordinator's address on the cluster's interface: the one named by ``$MPIQ_INTERFACE``
    (``HybridCluster(interface=...)``, ``mpiq run --interface``), else loopback when all share its
    host, else the interface that routes to a peer."""
    if os.environ.get("MPIQ_INTERFACE"):
        from .hosts import interface_address

        return interface_address(os.environ["MPIQ_INTERFACE"])
    me = identities[0][0]
    peers = {h for h, _ in identities if h != me}
    if not peers:
        return "127.0.0.1"
    for peer in sorted(peers):  # the interface that routes to a peer is the cluster's interface
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((socket.gethostbyname(peer), 9))
                addr = probe.getsockname()[0]
            if not addr.startswith("127."):
                return addr
        except OSError:
            continue
    addr = socket.gethostbyname(socket.getfqdn())
    if addr.startswith("127."):
        raise MPIQError(
            f"Cannot find a non-loopback address of host {me!r} for the QQ socket layer reachable from "
            f"{sorted(peers)}; pass host= to QQSync.create."
        )
    return addr


def _names(qranks: list[int]) -> list[str]:
    return [f"qrank {q}" for q in qranks]


def _timeout_message(seq: int, phase: int, timeout_ns: int, missing: list[int]) -> str:
    what = "" if phase == 0 else "the release report of "
    return f"QQ barrier #{seq} timed out after {_seconds(timeout_ns)} s waiting for {what}{', '.join(_names(missing))}."


def _seconds(ns: int) -> str:
    return str(round(ns / 1e9, 6))


# --------------------------------------------------------------------------- the barrier


class QQSync:
    """Socket layer of ``barrier(QQ)`` among the processes of one quantum communicator."""

    def __init__(self, qrank: int, size: int) -> None:
        self.qrank, self.size = qrank, size
        self.endpoint: str | None = None
        self.offset_ns = 0  # add to local monotonic_ns to get coordinator time
        self.same_clock = True
        self.rejected = 0  # frames dropped: bad length, magic, MAC, sender or routing id
        self.margin_ns = MIN_MARGIN_NS
        self.spin_ns = SPIN_NS
        self.slice_ns = SLICE_NS  # 0: leave the scheduler slice alone
        self._key = b""
        self._ctx: zmq.Context | None = None
        self._sock: zmq.Socket | None = None
        self._ids: dict[int, bytes] = {}  # coordinator: qrank -> routing id
        self._pending: dict[tuple[int, int], dict[int, tuple[int, ...]]] = {}
        self._aborted: dict[int, tuple[int, ...]] = {}  # coordinator: seq -> ABORT values
        self._leads: collections.deque[int] = collections.deque(maxlen=32)
        self._seq = -1

    # ----------------------------------------------------------------- setup

    @classmethod
    def create(
        cls, qcomm: "MPI.Intracomm", *, timeout: float, host: str | None = None, spin: float | None = None
    ) -> "QQSync":
        """Collective over ``qcomm`` (only quantum processes, rank == qrank): connect and sync clocks.

        ``host`` overrides the coordinator's bind address; ``spin`` (seconds, default 200 us) is
        how long before the trigger a process stops sleeping and polls the clock.
        """
        self = cls(qcomm.Get_rank(), qcomm.Get_size())
        reduce_timer_slack()
        if self.size == 1:
            return self
        identities = qcomm.allgather(host_identity())
        mine = identities[self.qrank]
        self.same_clock = bool(mine[1]) and mine[1] == identities[0][1]
        self.spin_ns = SPIN_NS if spin is None else int(spin * 1e9)
        setup: tuple[str | None, bytes, str | None] = (None, b"", None)
        if self.qrank == 0:
            try:
                addr = host or _bind_address(identities)
                self._ctx = zmq.Context(io_threads=1)
                self._sock = self._ctx.socket(zmq.ROUTER)
                self._sock.setsockopt(zmq.LINGER, 0)
                if ":" in addr:
                    self._sock.setsockopt(zmq.IPV6, 1)
                self._sock.bind(f"tcp://[{addr}]:*" if ":" in addr else f"tcp://{addr}:*")
                setup = (self._sock.getsockopt_string(zmq.LAST_ENDPOINT), secrets.token_bytes(32), None)
            except Exception as exc:  # tell the others instead of leaving them in bcast
                setup = (None, b"", f"The QQ coordinator (qrank 0) could not bind its socket: {exc}")
        endpoint, self._key, error = qcomm.bcast(setup, root=0)
        if error is not None:
            self.close()
            raise MPIQError(error)
        self.endpoint = endpoint
        deadline = time.monotonic_ns() + int(timeout * 1e9)
        try:
            if self.qrank == 0:
                self._serve_setup(deadline, timeout)
            else:
                self._ctx = zmq.Context(io_threads=1)
                self._sock = self._ctx.socket(zmq.DEALER)
                self._sock.setsockopt(zmq.LINGER, 0)
                self._sock.setsockopt(zmq.ROUTING_ID, b"q%d-" % self.qrank + secrets.token_bytes(8))
                if endpoint.startswith("tcp://["):
                    self._sock.setsockopt(zmq.IPV6, 1)
                self._sock.connect(endpoint)
                self._sync_clock(deadline, timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _serve_setup(self, deadline: int, timeout: float) -> None:
        """Coordinator: answer PINGs until every other qrank sent READY; set the first margin."""
        ready = self._collect(READY, 0, deadline)
        missing = [q for q in range(1, self.size) if q not in ready]
        if missing:
            names = ", ".join(_names(missing))
            raise MPIQTimeoutError(
                f"QQ socket setup timed out after {_seconds(int(timeout * 1e9))} s waiting for {names}.",
                missing=_names(missing),
            )
        rtt = max(v[1] for v in ready.values())
        self.margin_ns = min(MAX_MARGIN_NS, max(MIN_MARGIN_NS, 4 * rtt + MIN_MARGIN_NS))
        del self._pending[(READY, 0)]

    def _sync_clock(self, deadline: int, timeout: float) -> None:
        """Client: ping-pong with the coordinator; keep the min-RTT offset sample; send READY."""
        samples: list[tuple[int, int]] = []  # (rtt, offset)
        for i in range(PING_ROUNDS):
            t0 = time.monotonic_ns()
            self._send(PING, i, [t0])
            t_0, t1, t2 = self._await(PONG, i, deadline, timeout, setup=True)[:3]
            t3 = time.monotonic_ns()
            if t_0 == t0:
                samples.append(((t3 - t0) - (t2 - t1), ((t1 - t0) + (t2 - t3)) // 2))
        rtt, offset = min(samples)
        self.offset_ns = 0 if self.same_clock else offset
        typical = sorted(r for r, _ in samples)[len(samples) // 2]
        self._send(READY, 0, [self.offset_ns, typical, rtt])

    # ----------------------------------------------------------------- messaging

    def _send(self, kind: int, seq: int, values: list[int] | tuple[int, ...], to: int | None = None) -> None:
        frame = encode(self._key, kind, self.qrank, seq, values)
        assert self._sock is not None
        if to is None:
            self._sock.send(frame)
        else:
            self._sock.send_multipart([self._ids[to], frame])

    def _poll(self, deadline: int) -> tuple[int, int, int, tuple[int, ...]] | None:
        """Next valid frame before ``deadline`` (sleeping in zmq poll), or None at the deadline."""
        sock = self._sock
        assert sock is not None
        while True:
            left = deadline - time.monotonic_ns()
            if left <= 0 or not sock.poll(max(1, math.ceil(left / 1e6)), zmq.POLLIN):
                if left <= 0 or time.monotonic_ns() >= deadline:
                    return None
                continue
            frames = sock.recv_multipart(zmq.NOBLOCK)
            if self.qrank == 0:
                msg = decode(self._key, frames[1]) if len(frames) == 2 else None
                if msg is None or msg[0] in _FROM_COORDINATOR or not 0 < msg[1] < self.size:
                    self.rejected += 1
                    continue
                known = self._ids.setdefault(msg[1], frames[0]) if msg[0] in (PING, READY) else self._ids.get(msg[1])
                if known != frames[0]:
                    self.rejected += 1
                    continue
            else:
                msg = decode(self._key, frames[0]) if len(frames) == 1 else None
                if msg is None or msg[0] not in _FROM_COORDINATOR or msg[1] != 0:
                    self.rejected += 1
                    continue
            return msg

    def _collect(self, kind: int, seq: int, deadline: int) -> dict[int, tuple[int, ...]]:
        """Coordinator: gather ``kind``/``seq`` messages from every other qrank until ``deadline``."""
        box = self._pending.setdefault((kind, seq), {})
        while len(box) < self.size - 1:
            msg = self._poll(deadline)
            if msg is None:
                break
            k, q, s, values = msg
            if k == PING:
                self._send(PONG, s, [values[0], time.monotonic_ns(), time.monotonic_ns()], to=q)
            elif k == ARRIVE and s in self._aborted:
                self._send(ABORT, s, self._aborted[s], to=q)
            elif k == READY or s >= self._seq:
                self._pending.setdefault((k, s), {})[q] = values
        return box

    def _await(self, kind: int, seq: int, deadline: int, timeout: float, *, setup: bool = False) -> tuple[int, ...]:
        """Client: the coordinator's ``kind``/``seq`` message; raise on ABORT or at ``deadline``."""
        while True:
            abort = self._pending.pop((ABORT, seq), None)
            if abort is not None:
                phase, timeout_ns, *missing = abort[0]
                raise MPIQTimeoutError(_timeout_message(seq, phase, timeout_ns, missing), missing=_names(missing))
            box = self._pending.pop((kind, seq), None)
            if box is not None:
                return box[0]
            msg = self._poll(deadline)
            if msg is None:
                stage = "setup" if setup else f"barrier #{seq}"
                raise MPIQTimeoutError(
                    f"QQ {stage} timed out after {_seconds(int(timeout * 1e9))} s on qrank {self.qrank} waiting "
                    f"for qrank 0 (the coordinator); qrank 0 did not arrive or did not answer.",
                    missing=["qrank 0"],
                )
            k, _, s, values = msg
            if s >= seq or k == PONG:
                self._pending[(k, s)] = {0: values}

    def _abort(self, seq: int, phase: int, timeout: float, got: dict[int, tuple[int, ...]]) -> MPIQTimeoutError:
        """Coordinator: tell every process that arrived which qranks are missing; return the error."""
        missing = [q for q in range(1, self.size) if q not in got]
        values = (phase, int(timeout * 1e9), *missing)
        self._aborted[seq] = values
        self._pending = {k: v for k, v in self._pending.items() if k[1] != seq}  # a retry starts afresh
        for q in got:
            self._send(ABORT, seq, values, to=q)
        return MPIQTimeoutError(_timeout_message(seq, phase, int(timeout * 1e9), missing), missing=_names(missing))

    # ----------------------------------------------------------------- barrier

    def barrier(self, seq: int, *, timeout: float, record: bool = True) -> dict:
        """Block until every quantum process arrived, then release all at one trigger instant.

        Returns ``{"seq", "trigger", "arrivals", "releases", "local_arrival", "local_release",
        "offset", "skew"}``; times in seconds on the coordinator's monotonic clock; ``releases``
        and ``skew`` (max - min release) are None unless ``record``.
        """
        if self._sock is None and self.size > 1:
            raise MPIQError(f"QQ barrier #{seq} was called on qrank {self.qrank} after close().")
        if self.size == 1:
            now = time.monotonic_ns()
            return self._record(seq, now, [now], [now] if record else None, now, now)
        was_enabled = gc.isenabled()
        gc.disable()  # no collector pause between RELEASE and the trigger
        slice_ns = _sched_attr(self.slice_ns) if self.slice_ns else None
        try:
            if self.qrank == 0:
                return self._coordinate(seq, timeout, record)
            return self._follow(seq, timeout, record)
        finally:
            if slice_ns is not None:
                _sched_attr(slice_ns)
            if was_enabled:
                gc.enable()

    def _coordinate(self, seq: int, timeout: float, record: bool) -> dict:
        arrival = time.monotonic_ns()
        timeout_ns = int(timeout * 1e9)
        self._seq = seq
        self._aborted.pop(seq, None)  # a retry under the same seq starts afresh
        for key in [k for k in self._pending if k[1] < seq]:
            del self._pending[key]
        got = self._collect(ARRIVE, seq, arrival + timeout_ns)
        if len(got) < self.size - 1:
            raise self._abort(seq, 0, timeout, got)
        arrivals = [arrival] + [got[q][0] for q in range(1, self.size)]
        decided = time.monotonic_ns()
        trigger = decided + self.margin_ns
        frame = encode(self._key, RELEASE, 0, seq, [trigger, *arrivals])
        assert self._sock is not None
        for q in range(1, self.size):
            self._sock.send_multipart([self._ids[q], frame])
        release = sleep_until(trigger, self.spin_ns)
        sleep_until(trigger + QUIET_NS)
        if not record:
            return self._record(seq, trigger, arrivals, None, arrival, release)
        done = self._collect(DONE, seq, release + timeout_ns)
        if len(done) < self.size - 1:
            raise self._abort(seq, 1, timeout, done)
        releases = [release] + [done[q][0] for q in range(1, self.size)]
        self._adapt(max(done[q][1] for q in done) - decided)
        self._send_all(SUMMARY, seq, releases)
        self._pending.pop((ARRIVE, seq), None)
        self._pending.pop((DONE, seq), None)
        return self._record(seq, trigger, arrivals, releases, arrival, release)

    def _follow(self, seq: int, timeout: float, record: bool) -> dict:
        arrival = time.monotonic_ns()
        timeout_ns = int(timeout * 1e9)
        grace = min(1_000_000_000, timeout_ns // 2) + 50_000_000  # let the coordinator's ABORT arrive first
        for key in [k for k in self._pending if k[1] <= seq]:  # e.g. an ABORT of an earlier try of seq
            del self._pending[key]
        self._send(ARRIVE, seq, [arrival + self.offset_ns])
        trigger, *arrivals = self._await(RELEASE, seq, arrival + timeout_ns + grace, timeout)
        received = time.monotonic_ns()
        release = sleep_until(trigger - self.offset_ns, self.spin_ns)
        sleep_until(trigger - self.offset_ns + QUIET_NS)
        arrival, release = arrival + self.offset_ns, release + self.offset_ns
        if not record:
            return self._record(seq, trigger, arrivals, None, arrival, release)
        self._send(DONE, seq, [release, received + self.offset_ns])
        releases = list(self._await(SUMMARY, seq, received + timeout_ns + grace, timeout))
        return self._record(seq, trigger, arrivals, releases, arrival, release)

    def _send_all(self, kind: int, seq: int, values: list[int]) -> None:
        frame = encode(self._key, kind, 0, seq, values)
        assert self._sock is not None
        for q in range(1, self.size):
            self._sock.send_multipart([self._ids[q], frame])

    def _adapt(self, lead_ns: int) -> None:
        """Margin = twice the slowest recent RELEASE delivery plus a floor, within [floor, cap]."""
        self._leads.append(lead_ns)
        self.margin_ns = min(MAX_MARGIN_NS, max(MIN_MARGIN_NS, 2 * max(self._leads) + MIN_MARGIN_NS))

    def _record(
        self, seq: int, trigger: int, arrivals: list[int], releases: list[int] | None, arrival: int, release: int
    ) -> dict:
        return {
            "seq": seq,
            "trigger": trigger / 1e9,
            "arrivals": [t / 1e9 for t in arrivals],
            "releases": None if releases is None else [t / 1e9 for t in releases],
            "local_arrival": arrival / 1e9,
            "local_release": release / 1e9,
            "offset": self.offset_ns / 1e9,
            "skew": None if releases is None else (max(releases) - min(releases)) / 1e9,
        }

    # ----------------------------------------------------------------- properties / teardown

    @property
    def offset(self) -> float:
        """Seconds to add to this process's ``time.monotonic()`` to get the coordinator's."""
        return self.offset_ns / 1e9

    @property
    def margin(self) -> float:
        """Current trigger margin in seconds (meaningful on the coordinator)."""
        return self.margin_ns / 1e9

    def close(self) -> None:
        """Close the socket (linger 0) and its zmq context; idempotent."""
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def __enter__(self) -> "QQSync":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
