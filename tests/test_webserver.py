"""GatedHTTPServer in-process: idle connections take no thread, handler threads are bounded,
a server that cannot start a thread keeps serving (issue 20)."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler

import pytest

from edge.webserver import GatedHandler, GatedHTTPServer


class Slow(GatedHandler, BaseHTTPRequestHandler):
    gate = threading.Event()

    def do_GET(self) -> None:
        if self.path == "/wait":
            self.gate.wait(10)
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("EDGE_WEB_REQUEST_TIMEOUT_S", "1")
    monkeypatch.setenv("EDGE_WEB_MAX_WORKERS", "2")
    Slow.gate = threading.Event()
    httpd = GatedHTTPServer(("127.0.0.1", 0), Slow)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield httpd
    Slow.gate.set()
    httpd.shutdown()
    httpd.server_close()
    t.join(2)


def url(httpd, path: str) -> str:
    return f"http://127.0.0.1:{httpd.server_port}{path}"


def get(u: str) -> int:
    try:
        with urllib.request.urlopen(u, timeout=10) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_200_half_sent_connections_take_no_thread_and_close_at_the_deadline(server):
    before = threading.active_count()
    socks = [socket.create_connection(("127.0.0.1", server.server_port)) for _ in range(200)]
    for s in socks:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    t0 = time.monotonic()
    assert get(url(server, "/")) == 200  # a real client meanwhile
    assert threading.active_count() <= before + 1
    for s in socks:
        s.settimeout(10)
        data = b""
        while chunk := s.recv(4096):  # until the server closes it
            data += chunk
        assert data.startswith(b"HTTP/1.0 408 ")
        s.close()
    assert time.monotonic() - t0 < 6
    assert server.refused["timeout"] == 200 and server.pending == 0


def test_handler_threads_are_bounded_and_refuse_fast(server):
    results: list[int] = []
    waiting = [threading.Thread(target=lambda: results.append(get(url(server, "/wait"))))
               for _ in range(2)]
    for t in waiting:
        t.start()
    assert _wait(lambda: server.active == 2)
    t0 = time.monotonic()
    assert get(url(server, "/")) == 503  # both workers busy: refused at once, not queued
    assert time.monotonic() - t0 < 2
    Slow.gate.set()
    for t in waiting:
        t.join(5)
    assert results == [200, 200]
    assert _wait(lambda: server.active == 0)
    assert get(url(server, "/")) == 200


def test_one_request_per_connection(server):
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):  # EOF: the server closed after one answer
            data += chunk
    assert data.startswith(b"HTTP/1.0 200 ") and data.endswith(b"ok\n")


def test_a_failed_thread_start_is_a_503_and_serving_goes_on(server, monkeypatch):
    real = threading.Thread.start

    def start(self):
        if self.name == "web-request":
            raise RuntimeError("can't start new thread")
        return real(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    assert get(url(server, "/")) == 503
    monkeypatch.setattr(threading.Thread, "start", real)
    assert get(url(server, "/")) == 200
    assert server.refused["no_thread"] == 1 and _wait(lambda: server.active == 0)


def _wait(pred, timeout: float = 5) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False
