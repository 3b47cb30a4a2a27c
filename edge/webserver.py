"""An HTTP server that idle or slow clients cannot exhaust.

`http.server.ThreadingHTTPServer` starts a thread per connection before a byte of the request
has arrived, with no timeout: 300 half-sent requests held 312 threads for ever, and at the
thread limit the capture thread could not start its reader. Here one thread (the server's own)
accepts connections and collects each request head (request line and headers) with a
selector; only a complete head gets a handler thread, and at most `max_workers` run at once.
A head must arrive within `request_timeout` seconds and fit in `max_head` bytes; at most
`max_pending` connections may be waiting for theirs (beyond that the oldest is dropped).
Refusals are a short 503/408/431 written without blocking, then the socket is closed.
Connections are not kept alive (HTTP/1.0 handler): each serves one request and closes.
"""

from __future__ import annotations

import io
import logging
import os
import selectors
import socket
import threading
import time
from http.server import ThreadingHTTPServer
from socketserver import _SocketWriter

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 10.0  # for the request head to arrive
MAX_WORKERS = 32  # handler threads at once
MAX_PENDING = 256  # connections waiting for their request head


def _env_float(name: str, default: float) -> float:
    """Internal tuning (tests use ~1 s); not a config option."""
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


class _Prefixed(io.RawIOBase):
    """The bytes already read from a connection, then the connection itself."""

    def __init__(self, head: bytes, sock: socket.socket) -> None:
        self.head, self.sock = memoryview(head), sock

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self.head:
            n = min(len(buf), len(self.head))
            buf[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        return self.sock.recv_into(buf)


def _answer(sock: socket.socket, code: int, text: str) -> None:
    """A short refusal, never blocking (a client that does not read loses it), then close."""
    body = (text + "\n").encode()
    msg = (f"HTTP/1.0 {code} {text}\r\nContent-Type: text/plain; charset=utf-8\r\n"
           f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    try:
        sock.setblocking(False)
        sock.send(msg)
        sock.shutdown(socket.SHUT_WR)
        # Bytes the client sent that were never read would turn the close into a reset, and
        # a reset can discard the answer before the client reads it: take what has arrived
        # (bounded, never waiting) first.
        for _ in range(8):
            if not sock.recv(8192):
                break
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Pending:
    __slots__ = ("sock", "addr", "data", "deadline")

    def __init__(self, sock, addr, deadline: float) -> None:
        self.sock, self.addr, self.data, self.deadline = sock, addr, bytearray(), deadline


class GatedHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer whose handler threads start only for complete request heads."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # listen() backlog: a burst of connections waits in the kernel

    def __init__(self, *args, **kwargs) -> None:
        self.request_timeout = _env_float("EDGE_WEB_REQUEST_TIMEOUT_S", REQUEST_TIMEOUT_S)
        self.max_workers = int(_env_float("EDGE_WEB_MAX_WORKERS", MAX_WORKERS))
        self.max_pending = int(_env_float("EDGE_WEB_MAX_PENDING", MAX_PENDING))
        self.max_head = 32 * 1024
        self.refused = {"busy": 0, "timeout": 0, "too_large": 0, "evicted": 0, "no_thread": 0}
        self._workers = threading.BoundedSemaphore(self.max_workers)
        self._active = 0
        self._active_lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        super().__init__(*args, **kwargs)

    @property
    def active(self) -> int:
        """Handler threads running now."""
        return self._active

    @property
    def pending(self) -> int:
        return len(self._pending)

    # ---------------------------------------------------------------- the accept loop
    def serve_forever(self, poll_interval: float = 0.2) -> None:
        self._stopped.clear()
        sel = selectors.DefaultSelector()
        self.socket.setblocking(False)
        sel.register(self.socket, selectors.EVENT_READ, None)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(poll_interval):
                    if key.data is None:
                        self._accept(sel)
                    else:
                        self._read(sel, key.data)
                self._expire(sel)
        finally:
            for p in list(self._pending.values()):
                self._drop(sel, p)
                p.sock.close()
            sel.close()
            self._stopped.set()

    def shutdown(self) -> None:
        self._stop.set()
        self._stopped.wait()

    def _accept(self, sel) -> None:
        for _ in range(64):  # all that wait (up to a bound), so a burst does not overflow
            try:
                sock, addr = self.socket.accept()
            except OSError:  # BlockingIOError: none left
                return
            self._add(sel, sock, addr)

    def _add(self, sel, sock: socket.socket, addr) -> None:
        if len(self._pending) >= self.max_pending:  # drop the oldest waiting one, not the new
            oldest = min(self._pending.values(), key=lambda p: p.deadline)
            self._drop(sel, oldest)
            oldest.sock.close()
            self.refused["evicted"] += 1
        sock.setblocking(False)
        p = _Pending(sock, addr, time.monotonic() + self.request_timeout)
        self._pending[sock.fileno()] = p
        sel.register(sock, selectors.EVENT_READ, p)

    def _drop(self, sel, p: _Pending) -> None:
        self._pending.pop(p.sock.fileno(), None)
        try:
            sel.unregister(p.sock)
        except (KeyError, ValueError):
            pass

    def _read(self, sel, p: _Pending) -> None:
        try:
            chunk = p.sock.recv(8192)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(sel, p)
            p.sock.close()
            return
        p.data += chunk
        if b"\r\n\r\n" in p.data or b"\n\n" in p.data:
            self._drop(sel, p)
            self._dispatch(p)
        elif len(p.data) > self.max_head:
            self._drop(sel, p)
            self.refused["too_large"] += 1
            _answer(p.sock, 431, "Request Header Fields Too Large")

    def _expire(self, sel) -> None:
        now = time.monotonic()
        for p in [p for p in self._pending.values() if p.deadline <= now]:
            self._drop(sel, p)
            self.refused["timeout"] += 1
            _answer(p.sock, 408, "Request Timeout")

    def _dispatch(self, p: _Pending) -> None:
        if not self._workers.acquire(blocking=False):
            self.refused["busy"] += 1
            _answer(p.sock, 503, "Service Unavailable: too many requests at once")
            return
        p.sock.setblocking(True)
        p.sock.settimeout(self.request_timeout)  # writes to a client that stops reading
        t = threading.Thread(target=self._work, args=(p.sock, p.addr, bytes(p.data)),
                             name="web-request", daemon=True)
        self._count(+1)
        try:
            t.start()
        except RuntimeError:  # "can't start new thread": refuse this one, keep serving
            self._count(-1)
            self._workers.release()
            self.refused["no_thread"] += 1
            _answer(p.sock, 503, "Service Unavailable: no thread")

    def _work(self, sock, addr, head: bytes) -> None:
        try:
            self.finish_request((sock, head), addr)
        except Exception:
            self.handle_error(sock, addr)
        finally:
            try:
                sock.close()
            except OSError:
                pass
            self._count(-1)
            self._workers.release()

    def _count(self, n: int) -> None:
        with self._active_lock:
            self._active += n

    def finish_request(self, request, client_address) -> None:
        sock, head = request
        self.RequestHandlerClass(sock, client_address, self, head=head)

    def handle_error(self, request, client_address) -> None:
        log.debug("web: error serving %s", client_address, exc_info=True)


class GatedHandler:
    """Mixin for a BaseHTTPRequestHandler served by GatedHTTPServer: reads the request head
    the server already collected, then the connection."""

    def __init__(self, request, client_address, server, head: bytes = b"") -> None:
        self._head = head
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        self.connection = self.request
        self.rfile = io.BufferedReader(_Prefixed(self._head, self.request))
        self.wfile = _SocketWriter(self.request)
