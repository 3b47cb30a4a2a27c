"""The webhook keeps its token and its timeout (issue 20), against real local HTTP servers:
a target that 302s to a second server (a different origin), and one that trickles bytes."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest
from test_sinks import wait_for
from test_webhook import Server, send

from edge.sinks.outbox import Outbox


class Redirector(Server):
    """Answers every POST with a 302 to `location`."""

    def __init__(self, location: str, code: int = 302) -> None:
        super().__init__([], then=str(code))
        self.location = location
        handler = self.httpd.RequestHandlerClass
        outer = self

        def do_POST(h) -> None:
            h.rfile.read(int(h.headers["Content-Length"]))
            with outer.lock:
                outer.requests.append(("redirect", dict(h.headers)))
            h.send_response(code)
            h.send_header("Location", outer.location)
            h.send_header("Content-Length", "0")
            h.end_headers()

        handler.do_POST = do_POST


@pytest.fixture(scope="module")
def img(assets):
    from test_sinks import photo

    return photo("bird.bmp")


@pytest.mark.parametrize("code", [302, 307])
def test_a_redirect_is_not_followed_and_the_token_never_leaves(img, code, caplog):
    other = Server([], then="ok")  # another origin: another port
    sneaky = Redirector(other.url + "?stolen=1", code)
    ob = Outbox([("webhook", {"url": sneaky.url + "?token=urlsecret", "token": "s3cret",
                              "retries": 3, "backoff_initial_s": 0.01})], "porch", "m")
    caplog.set_level(logging.WARNING)
    ob.start()
    send(ob, [1, 2, 3], img)
    wait_for(lambda: ob.sink_stats()["webhook"]["lost"] == 3, 10, "3 events counted lost")
    ob.close()
    s = ob.sink_stats()["webhook"]
    assert s["sent"] == 0 and s["lost"] == 3 and s["redirects"] == 3
    assert s["attempts"] == 3  # a configuration error: not retried
    assert f"HTTP {code} redirect to http://127.0.0.1:" in s["state"]
    assert len(sneaky.requests) == 3
    assert sneaky.requests[0][1]["Authorization"] == "Bearer s3cret"
    assert other.requests == []  # the second origin never saw a request, let alone the token
    reports = [r.getMessage() for r in caplog.records if "redirect" in r.getMessage()]
    assert len(reports) == 1, reports  # reported once, not once per event
    assert "configuration error" in reports[0] and "urlsecret" not in reports[0]
    other.close()
    sneaky.close()


class Trickler:
    """Reads a request, then sends an answer one byte every `every` seconds, forever."""

    def __init__(self, every: float = 0.3) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.every, self.stop = every, threading.Event()
        self.bytes_sent = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        answer = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 10_000
        with conn:
            conn.recv(65536)
            for byte in answer:
                if self.stop.wait(self.every):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return
                self.bytes_sent += 1

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def test_timeout_covers_the_whole_request_against_a_trickling_server(img):
    slow = Trickler(every=0.2)  # each byte well inside the timeout: per-read timeouts never fire
    ob = Outbox([("webhook", {"url": slow.url, "timeout_s": 1.0, "retries": 1,
                              "backoff_initial_s": 0.01})], "porch", "m")
    ob.start()
    t0 = time.monotonic()
    send(ob, [1], img)
    wait_for(lambda: ob.sink_stats()["webhook"]["lost"] == 1, 15, "the event given up")
    took = time.monotonic() - t0
    ob.close()
    s = ob.sink_stats()["webhook"]
    assert s["attempts"] == 2 and s["sent"] == 0
    assert "within 1 s" in s["state"]
    assert took < 6, took  # 2 attempts x 1 s, plus slack for a shared CPU
    slow.close()
