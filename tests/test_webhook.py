"""The webhook sink against a real local HTTP server that fails, hangs, then recovers."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from test_sinks import make_event, make_frame, make_result, photo, wait_for

from edge.errors import ConfigError
from edge.sinks.outbox import Outbox


class Server:
    """Answers POSTs by a script: 'ok', '500', '404' or 'hang' (no answer for `hang_s`)."""

    def __init__(self, script: list[str], then: str = "ok", hang_s: float = 1.0) -> None:
        self.script, self.then, self.hang_s = list(script), then, hang_s
        self.received: list[dict] = []  # bodies answered 200
        self.requests: list[tuple[str, dict]] = []  # every request: (behaviour, headers)
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    mode = outer.script.pop(0) if outer.script else outer.then
                    outer.requests.append((mode, dict(self.headers)))
                if mode == "hang":
                    time.sleep(outer.hang_s)
                    return
                code = 200 if mode == "ok" else int(mode)
                if code == 200:
                    with outer.lock:
                        outer.received.append(json.loads(body))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def img(assets):
    return photo("bird.bmp")


def send(ob: Outbox, seqs, img) -> float:
    """Publish one event per seq; returns the longest publish() call in seconds."""
    worst = 0.0
    for seq in seqs:
        f = make_frame(seq, img)
        t0 = time.perf_counter()
        ob.publish(make_result(f, [("chickadee", 0.8)]), [make_event("enter", "chickadee", f)], f)
        worst = max(worst, time.perf_counter() - t0)
    return worst


def test_webhook_retries_through_500s_and_timeouts_then_recovers(img, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    server = Server(["500", "500", "hang", "500", "hang"], hang_s=1.0)
    ob = Outbox(
        [("webhook", {"url": server.url, "timeout_s": 0.3, "retries": 8,
                      "backoff_initial_s": 0.05, "backoff_max_s": 0.2,
                      "headers": {"X-Edge": "test"}, "token_file": str(token)})],
        "feeder", "bird_model",
    )
    ob.start()
    worst = send(ob, [1, 2, 3], img)
    assert worst < 0.05  # the frame loop never waits for the server
    wait_for(lambda: len(server.received) == 3, 20, "3 delivered events")
    ob.close()
    assert [e["seq"] for e in server.received] == [1, 2, 3]
    assert server.received[0]["device"] == "feeder" and server.received[0]["label"] == "chickadee"
    modes = [m for m, _ in server.requests]
    assert modes[:5] == ["500", "500", "hang", "500", "hang"]  # the first event was retried
    headers = server.requests[0][1]
    assert headers["Authorization"] == "Bearer s3cret" and headers["X-Edge"] == "test"
    assert headers["Content-Type"] == "application/json"
    s = ob.sink_stats()["webhook"]
    assert s["sent"] == 3 and s["lost"] == 0 and s["attempts"] == 8 and s["state"] == "closed"
    server.close()


def test_webhook_gives_up_after_bounded_retries_and_counts(img):
    server = Server([], then="500")
    ob = Outbox(
        [("webhook", {"url": server.url, "timeout_s": 0.3, "retries": 2,
                      "backoff_initial_s": 0.01})],
        "feeder", "m",
    )
    ob.start()
    send(ob, [1, 2], img)
    wait_for(lambda: ob.sink_stats()["webhook"]["lost"] == 2, 10, "2 lost events")
    s = ob.sink_stats()["webhook"]
    assert s["attempts"] == 6 and s["errors"] == 2 and "HTTP 500" in s["state"]
    # a client error is not retried
    server.then = "404"
    send(ob, [3], img)
    wait_for(lambda: ob.sink_stats()["webhook"]["lost"] == 3, 10, "the 404")
    assert ob.sink_stats()["webhook"]["attempts"] == 7
    server.then = "ok"
    send(ob, [4], img)
    wait_for(lambda: ob.sink_stats()["webhook"]["sent"] == 1, 10, "recovery")
    ob.close()
    assert [e["seq"] for e in server.received] == [4]
    server.close()


def test_a_hung_server_fills_only_the_webhook_queue(img):
    server = Server([], then="hang", hang_s=5.0)
    ob = Outbox(
        [("webhook", {"url": server.url, "timeout_s": 5, "retries": 0, "queue": 4})], "f", "m"
    )
    ob.start()
    worst = send(ob, range(50), img)
    assert worst < 0.05
    wait_for(lambda: server.requests, 5, "the first request")
    s = ob.sink_stats()["webhook"]  # one event is stuck in the request, the rest queued or dropped
    assert s["queued"] <= 4 and s["queued"] + s["dropped"] == 50 - 1 and s["dropped"] >= 45
    t0 = time.monotonic()
    ob.close(timeout=0.2)
    assert time.monotonic() - t0 < 1.5
    server.close()


def test_webhook_config_errors(tmp_path):
    with pytest.raises(ValueError, match="should match pattern"):
        Outbox([("webhook", {"url": "ftp://x"})], "d", "m")
    with pytest.raises(ConfigError, match="cannot read"):
        Outbox([("webhook", {"url": "http://127.0.0.1/", "token_file": str(tmp_path / "no")})],
               "d", "m")
