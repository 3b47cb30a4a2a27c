"""The web server against hostile clients (issue 20), on a real `edge run`: idle half-sent
connections, foreign Host headers (DNS rebinding), secrets in webhook URLs."""

from __future__ import annotations

import json
import os
import socket
import time
from http.client import HTTPConnection
from pathlib import Path

import pytest
from test_web import Edge, http, wait_for

REQUEST_TIMEOUT_S = 1.0  # the server's head deadline, shortened for the test (10 s by default)
HOOK = "https://hooks.example.com/services/T0ABC1234/B0DEF5678/Xy9zQ7wVbN3mK2pL8sR4tU6v"


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads: line")


@pytest.fixture(scope="module")
def edge(tmp_path_factory, demo_clip):
    tmp = tmp_path_factory.mktemp("webhard")
    config = f"""
device: hard-test
source: {{loop: true}}
model: {{threads: 1}}
outputs:
  - webhook: {{url: "{HOOK}?token=qs-secret", retries: 0, events: [status]}}
web: {{bind: "127.0.0.1:0", hosts: [edge.test]}}
"""
    old = os.environ.get("EDGE_WEB_REQUEST_TIMEOUT_S")
    os.environ["EDGE_WEB_REQUEST_TIMEOUT_S"] = str(REQUEST_TIMEOUT_S)
    try:
        e = Edge(tmp, config, str(demo_clip))
    finally:
        if old is None:
            os.environ.pop("EDGE_WEB_REQUEST_TIMEOUT_S")
        else:
            os.environ["EDGE_WEB_REQUEST_TIMEOUT_S"] = old
    try:
        e.wait_url()
        wait_for(lambda: http(e.url + "healthz")[0] == 200, 30, "healthz 200")
        yield e
    finally:
        e.stop()


def get(edge, path: str, host: str) -> tuple[int, bytes]:
    port = int(edge.url.rstrip("/").rsplit(":", 1)[1])
    c = HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.putrequest("GET", path, skip_host=True)
        c.putheader("Host", host)
        c.endheaders()
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_idle_half_sent_connections_take_no_threads_and_are_dropped(edge):
    port = int(edge.url.rstrip("/").rsplit(":", 1)[1])
    pid = edge.proc.pid
    before = threads(pid)
    socks = []
    for _ in range(200):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")  # never finished
        socks.append(s)
    opened = time.monotonic()
    peak = threads(pid)
    code, _, body = http(edge.url + "healthz")  # a real client is served meanwhile
    assert code == 200 and body.startswith(b"ok:")
    peak = max(peak, threads(pid))
    assert peak <= before + 2, (before, peak)  # none of the 200 got a thread
    answers = []
    for s in socks:
        s.settimeout(REQUEST_TIMEOUT_S + 10)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        answers.append(data.split(b"\r\n", 1)[0])
        s.close()
    closed_after = time.monotonic() - opened
    assert set(answers) == {b"HTTP/1.0 408 Request Timeout"}
    assert closed_after < REQUEST_TIMEOUT_S + 5, closed_after  # all dropped at the deadline
    assert threads(pid) <= before + 2


def test_too_large_request_head_is_refused(edge):
    port = int(edge.url.rstrip("/").rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 40_000)
        assert s.recv(100).startswith(b"HTTP/1.0 431 ")


@pytest.mark.parametrize("host,ok", [
    ("127.0.0.1", True), ("localhost:8080", True), ("[::1]:8080", True), ("edge.test", True),
    ("EDGE.TEST.", True), ("evil.example", False), ("evil.example:8080", False),
    ("127.0.0.1.evil.example", False), ("10.0.0.5", False),
])
def test_host_header_must_name_this_page(edge, host, ok):
    code, body = get(edge, "/api/status", host)
    if ok:
        assert code == 200
    else:
        assert code == 421
        assert b"is not a name of this page (add it to web.hosts in the config)" in body
        assert b"hard-test" not in body


def test_api_config_masks_secrets_in_the_webhook_url(edge):
    code, _, body = http(edge.url + "api/config")
    assert code == 200
    for secret in (b"Xy9zQ7wVbN3mK2pL8sR4tU6v", b"qs-secret", b"T0ABC1234"):
        assert secret not in body
    url = json.loads(body)["outputs"][0]["webhook"]["url"]
    assert url.startswith("https://hooks.example.com/services/***/") and "token=***" in url
