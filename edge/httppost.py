"""One HTTP POST bounded by a deadline over the whole exchange, never following a redirect.

urllib's `timeout` applies to each socket operation, so a server trickling one byte a second
holds a request for as long as it likes; and urllib follows a 302 to any origin as a GET,
Authorization header included. Here every read and write of the request gets only the time
left until one deadline, and a 3xx is returned to the caller like any other status.
"""

from __future__ import annotations

import http.client
import io
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_BODY = 64 * 1024  # of the answer: read (and dropped) only so the connection ends cleanly


class DeadlineExceeded(TimeoutError):
    pass


class _DeadlineSocket:
    """A socket whose every call may only use the time left until `deadline`."""

    def __init__(self, sock: socket.socket, deadline: float, timeout: float) -> None:
        self._sock, self._deadline, self._timeout = sock, deadline, timeout

    def _arm(self) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"no complete answer within {self._timeout:g} s")
        self._sock.settimeout(left)

    def recv_into(self, buf, nbytes: int = 0) -> int:
        self._arm()
        try:
            return self._sock.recv_into(buf, nbytes)
        except TimeoutError:
            raise DeadlineExceeded(f"no complete answer within {self._timeout:g} s") from None

    def sendall(self, data) -> None:
        self._arm()
        try:
            self._sock.sendall(data)
        except TimeoutError:
            raise DeadlineExceeded(f"request not sent within {self._timeout:g} s") from None

    def makefile(self, mode: str = "rb", *args, **kwargs):
        return io.BufferedReader(socket.SocketIO(self, "rb"))

    def _decref_socketios(self) -> None:  # socket.SocketIO calls it on close
        pass

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._sock.close()

    def __getattr__(self, name):
        return getattr(self._sock, name)


@dataclass
class Answer:
    status: int
    reason: str
    location: str | None  # of a redirect


def post(url: str, body: bytes, headers: dict[str, str], timeout: float,
         context: ssl.SSLContext | None = None) -> Answer:
    """POST `body`; the whole exchange (connect, send, status, headers, body) ends within
    `timeout` seconds or raises TimeoutError. Redirects are returned, not followed.
    OSError and http.client.HTTPException for network failures and garbled answers."""
    deadline = time.monotonic() + timeout
    u = urlsplit(url)
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    host = u.hostname or ""
    if u.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, u.port, timeout=timeout, context=context or ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(host, u.port, timeout=timeout)
    try:
        conn.connect()  # create_connection (and the TLS handshake) with the timeout
        conn.sock = _DeadlineSocket(conn.sock, deadline, timeout)
        conn.request("POST", path, body, headers)
        resp = conn.getresponse()
        left = MAX_BODY
        while left > 0 and (chunk := resp.read(min(left, 8192))):
            left -= len(chunk)
        return Answer(resp.status, resp.reason, resp.getheader("Location"))
    finally:
        conn.close()
