"""Non-blocking MPI-Q operations and the progress engine that makes them advance.

An object receive cannot be posted to MPI ahead of time (its size is unknown until it
arrives), so each point-to-point context has an :class:`Engine`: the receives posted on it
(``irecv``, and ``Irecv``/``Recv``/``recv`` posted while others are pending), in posting order.
Every MPI-Q wait drives every engine (:func:`.waiting.progress`), so a posted receive keeps
matching messages while its process blocks in a send, a collective or another receive, as a
posted receive does in MPI. Matching follows MPI's rule: a message goes to the earliest posted
receive whose source and tag accept it, so the order between a pair on one tag is kept, with
``ANY_SOURCE``/``ANY_TAG`` too.

Requests have mpi4py's surface: ``test()``, ``wait(timeout=)``, ``cancel()``, and the
module-level :func:`waitall`, :func:`waitany`, :func:`testall`, :func:`testany`. A wait that
times out leaves the request active (as in MPI); the error names what is still missing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

from mpi4py import MPI

from .errors import MPIQTimeoutError
from .transfer import OOBHeader, loads, start_buffers
from .waiting import ENGINES, Deadline, poll

ANY_SOURCE = MPI.ANY_SOURCE
ANY_TAG = MPI.ANY_TAG
_Testall = MPI.Request.Testall

_QUEUED, _RECEIVING, _DONE = 0, 1, 2


def _copy_status(dst: MPI.Status, src: MPI.Status) -> None:
    dst.source = src.source
    dst.tag = src.tag
    dst.error = src.error
    dst.Set_elements(MPI.BYTE, src.Get_count(MPI.BYTE))


class Engine:
    """The pending receives of one point-to-point context, matched in posting order."""

    __slots__ = ("comm", "data", "queue", "draining", "_status")

    def __init__(self, comm: MPI.Comm, data: MPI.Comm):
        self.comm, self.data = comm, data
        self.queue: list[_Receive] = []
        self.draining: list[MPI.Request] = []  # buffer receives of abandoned receives
        self._status = MPI.Status()

    def post(self, entry: "_Receive") -> None:
        self.queue.append(entry)
        if self not in ENGINES:
            ENGINES.append(self)

    def withdraw(self, entry: "_Receive") -> None:
        if entry in self.queue:
            self.queue.remove(entry)
        self._idle_check()

    def _idle_check(self) -> None:
        if not self.queue and not self.draining and self in ENGINES:
            ENGINES.remove(self)

    def progress(self) -> None:
        """Match arrived messages to pending receives (earliest posted acceptor wins)."""
        queue, st, comm = self.queue, self._status, self.comm
        i = 0
        while i < len(queue):
            entry = queue[i]
            msg = comm.improbe(entry.source, entry.tag, st)
            if msg is None:
                i += 1
                continue
            s, t = st.Get_source(), st.Get_tag()
            target = entry
            for j in range(i):  # an earlier receive may accept it: it arrived after that one probed
                if queue[j].accepts(s, t):
                    target = queue[j]
                    break
            queue.remove(target)
            target.match(msg, st, s, t)
            if target is not entry:
                i -= 1  # ``entry`` moved one place up; probe it again
        if self.draining:
            self.draining = [r for r in self.draining if not r.Test()]
        self._idle_check()

    def abandon(self, reqs: list[MPI.Request]) -> None:
        """Keep buffer receives of a timed-out receive posted until they complete, so their data
        never lands in a later receive."""
        self.draining.extend(reqs)
        if self not in ENGINES:
            ENGINES.append(self)

    def close(self) -> None:
        self.queue.clear()
        self.draining.clear()
        if self in ENGINES:
            ENGINES.remove(self)


class Request(ABC):
    """A non-blocking MPI-Q operation: ``test()``, ``wait(timeout=)``, ``cancel()``."""

    __slots__ = ("_describe", "_timeout", "_state", "_value", "_consumed")

    def __init__(self, describe, timeout: float):
        self._describe = describe  # a str, or a callable making it (only errors need it)
        self._timeout = timeout
        self._state = _QUEUED
        self._value: Any = None
        self._consumed = False

    @property
    def describe(self) -> str:
        """What this request waits for, as error messages name it."""
        d = self._describe
        if callable(d):
            d = self._describe = d()
        return d

    @abstractmethod
    def _advance(self) -> bool:
        """Make progress; True once the request is complete."""

    @property
    def done(self) -> bool:
        return self._state == _DONE or self._advance()

    def test(self) -> tuple[bool, Any]:
        """``(True, value)`` once complete (value: the received object, or None), else ``(False, None)``."""
        if self._state == _DONE or self._advance():
            self._consumed = True
            return True, self._value
        return False, None

    def wait(self, timeout: float | None = None) -> Any:
        """Complete the request and return its value; MPIQTimeoutError (request still active) on expiry."""
        if self._state != _DONE and not self._advance():
            deadline = Deadline(self._timeout if timeout is None else timeout)
            if poll(lambda: True if self._advance() else None, deadline) is None:
                raise MPIQTimeoutError(
                    f"{self.describe} did not complete within {deadline.timeout:g} s.", [self.describe]
                )
        self._consumed = True
        return self._value

    def cancel(self) -> bool:
        """Withdraw a receive nothing has matched yet; True if withdrawn. Sends cannot be cancelled."""
        return False

    def __repr__(self) -> str:
        state = ("pending", "receiving", "complete")[self._state]
        return f"<mpiq Request {self.describe}: {state}>"


class SendRequest(Request):
    __slots__ = ("_reqs",)

    def __init__(self, reqs: list[MPI.Request], describe: str, timeout: float):
        super().__init__(describe, timeout)
        self._reqs = reqs

    def _advance(self) -> bool:
        if self._state != _DONE and _Testall(self._reqs):
            self._state, self._reqs = _DONE, []
        return self._state == _DONE


class _Receive(Request):
    """A receive waiting in an :class:`Engine` until a message matches it."""

    __slots__ = ("engine", "source", "tag", "status")

    def __init__(self, engine: Engine, source: int, tag: int, status: MPI.Status | None, describe: str, timeout: float):
        super().__init__(describe, timeout)
        self.engine, self.source, self.tag, self.status = engine, source, tag, status

    def accepts(self, source: int, tag: int) -> bool:
        return (self.source == ANY_SOURCE or self.source == source) and (self.tag == ANY_TAG or self.tag == tag)

    @abstractmethod
    def match(self, msg: MPI.Message, st: MPI.Status, source: int, tag: int) -> None:
        """Take the matched message ``msg`` (from ``source`` with ``tag``) off the wire."""

    def cancel(self) -> bool:
        if self._state == _QUEUED:
            self.engine.withdraw(self)
            self._state = _DONE
            self._consumed = True
            return True
        return False

    def abandon(self) -> None:
        """After a blocking call timed out: withdraw, or let the data drain in the background."""
        if self._state == _QUEUED:
            self.engine.withdraw(self)
        elif self._state == _RECEIVING:
            self.engine.abandon(self._pending())
        self._state = _DONE

    def _pending(self) -> list[MPI.Request]:
        return []


class ObjectReceive(_Receive):
    """``irecv``: the object, unpickled, with its out-of-band buffers received in place."""

    __slots__ = ("_header", "_bufs", "_reqs")

    def match(self, msg, st, source, tag):
        if self.status is not None:
            _copy_status(self.status, st)
        obj = msg.recv()
        if type(obj) is OOBHeader:
            self.match_header(obj, source, tag)
            self._advance()
        else:
            self._value, self._state = obj, _DONE

    def match_header(self, header: OOBHeader, source: int, tag: int) -> None:
        """Post the receives of the out-of-band buffers announced by ``header``."""
        self._header = header
        self._bufs, self._reqs = start_buffers(self.engine.data, header, source, tag)
        self._state = _RECEIVING

    def _advance(self) -> bool:
        state = self._state
        if state == _QUEUED:
            self.engine.progress()
            state = self._state
        if state == _RECEIVING and _Testall(self._reqs):
            self._value = loads(self._header.data, self._bufs)
            self._state = state = _DONE
            self._header = self._bufs = self._reqs = None
        return state == _DONE

    def _pending(self):
        return list(self._reqs)


class BufferReceive(_Receive):
    """``Irecv`` posted behind other pending receives: matched in order, then received in place."""

    __slots__ = ("_buf", "_req")

    def __init__(self, engine, buf, source, tag, status, describe, timeout):
        super().__init__(engine, source, tag, status, describe, timeout)
        self._buf = buf

    def match(self, msg, st, source, tag):
        if self.status is not None:
            _copy_status(self.status, st)
        self._req = msg.Irecv(self._buf)
        self._state = _RECEIVING
        self._advance()

    def _advance(self) -> bool:
        state = self._state
        if state == _QUEUED:
            self.engine.progress()
            state = self._state
        if state == _RECEIVING and self._req.Test():
            self._state = state = _DONE
            self._buf = self._req = None
        return state == _DONE

    def _pending(self):
        return [self._req]


class PostedReceive(Request):
    """``Irecv`` posted straight to MPI (nothing pending ahead of it on its context)."""

    __slots__ = ("_req", "_status")

    def __init__(self, req: MPI.Request, status: MPI.Status | None, describe: str, timeout: float):
        super().__init__(describe, timeout)
        self._req, self._status = req, status
        self._state = _RECEIVING

    def _advance(self) -> bool:
        if self._state != _DONE and self._req.Test(self._status):
            self._state = _DONE
        return self._state == _DONE

    def cancel(self) -> bool:
        if self._state == _DONE:
            return False
        self._req.Cancel()
        st = MPI.Status()
        self._req.Wait(st)
        self._state = _DONE
        return st.Is_cancelled()


# ---------------------------------------------------------------------- over lists


def _deadline(requests: Sequence[Request], timeout: float | None) -> Deadline:
    if timeout is None:
        timeout = max((r._timeout for r in requests), default=None)
    return Deadline(timeout)


def _missing_error(what: str, requests: Sequence[Request], deadline: Deadline) -> MPIQTimeoutError:
    missing = [r.describe for r in requests if not r.done]
    return MPIQTimeoutError(
        f"{what}: {len(missing)} of {len(requests)} request(s) did not complete within "
        f"{deadline.timeout:g} s: {'; '.join(missing)}.",
        missing,
    )


def testall(requests: Sequence[Request]) -> tuple[bool, list[Any] | None]:
    """``(True, values)`` if every request is complete, else ``(False, None)``."""
    if all([r.done for r in requests]):
        return True, [r.test()[1] for r in requests]
    return False, None


def waitall(requests: Sequence[Request], timeout: float | None = None) -> list[Any]:
    """Complete every request; their values in order. On expiry the error names the incomplete ones."""
    requests = list(requests)
    if not all([r.done for r in requests]):
        deadline = _deadline(requests, timeout)
        if poll(lambda: True if all([r.done for r in requests]) else None, deadline) is None:
            raise _missing_error("waitall", requests, deadline)
    return [r.test()[1] for r in requests]


def testany(requests: Sequence[Request]) -> tuple[int, bool, Any]:
    """``(index, True, value)`` for a complete request not reported before; ``(UNDEFINED, True, None)``
    if every request was reported already; else ``(UNDEFINED, False, None)``."""
    active = False
    for i, r in enumerate(requests):
        if r._consumed:
            continue
        active = True
        if r.done:
            return i, *r.test()
    return MPI.UNDEFINED, not active, None


def waitany(requests: Sequence[Request], timeout: float | None = None) -> tuple[int, Any]:
    """``(index, value)`` of a request that completes (one not reported before), as mpi4py's."""
    requests = list(requests)
    if all(r._consumed for r in requests):
        return MPI.UNDEFINED, None

    def any_done():
        i, flag, value = testany(requests)
        return (i, value) if flag else None

    deadline = _deadline(requests, timeout)
    got = poll(any_done, deadline)
    if got is None:
        raise _missing_error("waitany", [r for r in requests if not r._consumed], deadline)
    return got
