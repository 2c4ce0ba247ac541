"""The quantum-task link of a pilot: signed ZeroMQ messages straight to classical rank 0's event loop.

An ipyparallel ``apply`` travels client -> controller scheduler -> engine and back, and the
engine's kernel wraps it in IPython's execution machinery: several milliseconds per call even
on an idle host, tens under load. Quantum tasks are small and many, so they take a shorter
road over the same engines: when the pilot starts, rank 0 (one ``apply`` of
:func:`mpiq_magic.pilot.agent.open_channel`) connects two ZeroMQ sockets to this side and adds
them to the engine's own event loop (a pyzmq ``ZMQStream``). A batch then goes as one message
signed with the cluster's session key (``jupyter_client.Session``, exactly how ipyparallel signs
its own messages); rank 0 runs it between ipyparallel requests, on the same thread (function
tasks and quantum batches still take turns, and ``hc`` is never used from two threads) and sends
the outcomes back the same way. Unsigned or badly signed messages are dropped unread.

:class:`Channel` is this side: bound sockets, ``send`` (the pilot's agent thread only) and a
receiver thread that hands each batch's outcomes to a callback. It also notices when rank 0's
engine unregisters (ipyparallel's heartbeat), so a batch never waits forever on a dead engine.
"""

from __future__ import annotations

import pickle
import threading
from typing import Any, Callable
from urllib.parse import urlparse

#: How often the receiver checks that rank 0 is still registered while batches are out (seconds).
#: Only used to notice a dead engine; answers are received the moment they arrive.
LIVENESS_SECONDS = 1.0

TASKS = "pilot_batch"
#: jupyter_client signs a message's header and content, not its buffers: the content carries the
#: payload's digest, checked before anything is unpickled.
OUTCOMES = "pilot_outcomes"


def digest(payload: bytes) -> str:
    import hashlib

    return hashlib.sha256(payload).hexdigest()


def payload_of(msg: dict) -> bytes | None:
    """The message's one buffer if its digest matches the signed content, else None."""
    buffers = msg.get("buffers") or []
    if len(buffers) != 1:
        return None
    payload = bytes(buffers[0])
    return payload if digest(payload) == msg["content"].get("sha256") else None


def session_like(session: Any):
    """A new ``jupyter_client.Session`` with ``session``'s key, scheme and packers (Sessions keep
    replay history, so each thread signs with its own)."""
    from jupyter_client.session import Session

    return Session(
        key=session.key, signature_scheme=session.signature_scheme,
        packer=session.packer, unpacker=session.unpacker, username="mpiq-pilot",
    )


def bind_host(client: Any) -> str:
    """The address engines reach this side on: the host of the controller's interface."""
    iface = (getattr(client, "_config", None) or {}).get("interface", "tcp://127.0.0.1")
    host = urlparse(iface).hostname or "127.0.0.1"
    return "*" if host in ("0.0.0.0", "*") else host


def advertised(url: str) -> str:
    """A bound ``tcp://*:port`` as an address another host can connect to."""
    if "://*:" not in url and "://0.0.0.0:" not in url:
        return url
    import socket

    port = url.rsplit(":", 1)[1]
    return f"tcp://{socket.gethostbyname(socket.gethostname())}:{port}"


class Channel:
    """This side of the link; see the module docstring.

    ``on_outcomes(batch_id, outcomes)`` and ``on_lost(batch_ids, kind, text)`` (``kind``:
    ``"lost"``, rank 0 went away; ``"error"``, the batch or its answer could not be read) run on
    the receiver thread. ``alive()`` says whether rank 0's engine is still registered.
    """

    def __init__(self, client: Any, name: str, on_outcomes: Callable[[int, list], None],
                 on_lost: Callable[[list[int], str, str], None], alive: Callable[[], bool]):
        import zmq

        self._zmq = zmq
        self._ctx = zmq.Context.instance()
        self._send_session = session_like(client.session)
        self._recv_session = session_like(client.session)
        host = bind_host(client)
        self._tasks = self._ctx.socket(zmq.PUSH)
        self._results = self._ctx.socket(zmq.PULL)
        for sock in (self._tasks, self._results):
            sock.linger = 0
        self.tasks_url = advertised(f"tcp://{host}:{self._tasks.bind_to_random_port(f'tcp://{host}')}")
        self.results_url = advertised(f"tcp://{host}:{self._results.bind_to_random_port(f'tcp://{host}')}")
        # closing: the stopping thread writes to the wake pair the receiver polls
        self._wake_url = f"inproc://mpiq-pilot-{name}-{id(self)}"
        self._wake_r = self._ctx.socket(zmq.PAIR)
        self._wake_r.bind(self._wake_url)
        self._on_outcomes, self._on_lost, self._alive = on_outcomes, on_lost, alive
        self._out: set[int] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._receive, name=f"pilot-{name}-results", daemon=True)
        self._thread.start()

    def send(self, batch_id: int, items: list) -> None:
        """Send one batch (agent thread only). Raises what pickling the items raises."""
        payload = pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self._out.add(batch_id)
        self._send_session.send(self._tasks, TASKS, {"batch": batch_id, "sha256": digest(payload)}, buffers=[payload])

    def _receive(self) -> None:
        zmq = self._zmq
        poller = zmq.Poller()
        poller.register(self._results, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        while True:
            ready = dict(poller.poll(LIVENESS_SECONDS * 1000))
            with self._lock:
                waiting = bool(self._out)
            if self._wake_r in ready or self._closed:
                break
            if self._results in ready:
                try:
                    _, msg = self._recv_session.recv(self._results, mode=zmq.NOBLOCK)
                except Exception:  # unsigned, badly signed or malformed: dropped unread
                    continue
                if msg is None or msg["msg_type"] != OUTCOMES:
                    continue
                batch = int(msg["content"]["batch"])
                if "error" in msg["content"]:  # rank 0 could not read the batch
                    with self._lock:
                        self._out.discard(batch)
                    self._on_lost([batch], "error", str(msg["content"]["error"]))
                    continue
                payload = payload_of(msg)
                if payload is None:
                    continue
                with self._lock:
                    self._out.discard(batch)
                try:
                    outcomes = pickle.loads(payload)
                except Exception as exc:  # e.g. a result class this side cannot import
                    self._on_lost([batch], "error", f"its outcomes could not be unpickled here ({type(exc).__name__}: {exc})")
                    continue
                self._on_outcomes(batch, outcomes)
            elif waiting and not self._alive():
                with self._lock:
                    lost, self._out = sorted(self._out), set()
                self._on_lost(lost, "lost", "classical rank 0's engine unregistered (it died or was stopped)")
        for sock in (self._tasks, self._results, self._wake_r):
            sock.close(linger=0)

    def close(self) -> None:
        """Stop the receiver and close the sockets (idempotent)."""
        if self._closed:
            return
        self._closed = True
        wake = self._ctx.socket(self._zmq.PAIR)
        wake.linger = 0
        wake.connect(self._wake_url)
        wake.send(b"stop")
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        wake.close(linger=0)
