"""The web page, API, /metrics and /healthz, against `edge run` on a real video.

Everything goes through real HTTP (urllib) and a real headless Chromium (selenium with the
Debian chromium and chromedriver); the stall test feeds `edge run` a live MJPEG stream over
HTTP and then stops sending frames, which is what a dead network camera does.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import DEFAULT_MODEL, REPO
from helpers import stop_process
from prometheus_client.parser import text_string_to_metric_families

from edge.config import WebConfig
from edge.errors import EdgeError
from edge.web import access_from_config, is_loopback, parse_bind, token_ok

CHAIN = """
postprocess:
  - group:
      cat: ["tabby*", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"]
      bird: ["chickadee", "macaw", "ruffed grouse*", "house finch*", "magpie"]
  - smooth: {method: ema, alpha: 0.6}
  - hysteresis: {enter: 0.6, exit: 0.3, labels: [cat, bird, daisy], min_frames: 2}
"""
URL_LINE = re.compile(r"web: serving (http://\S+)")


# ------------------------------------------------------------------ helpers


class Edge:
    """`python -m edge run` in the background; `url` is read from its log line."""

    def __init__(self, tmp: Path, config: str, source: str, *extra: str) -> None:
        self.cfg = tmp / "edge.yaml"
        self.cfg.write_text(config)
        self.log = tmp / "edge.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--config", str(self.cfg), "--source", source,
             "--model", str(DEFAULT_MODEL), *extra],
            stdout=subprocess.DEVNULL, stderr=self.log.open("w"), cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.url = ""

    def wait_url(self, timeout: float = 40) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = URL_LINE.search(self.log.read_text())
            if m:
                self.url = m.group(1)
                return self.url
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"edge run did not start its web server:\n{self.log.read_text()}")

    def stop(self) -> None:
        stop_process(self.proc)


def http(url: str, token: str | None = None, method: str = "GET", timeout: float = 10):
    """(status, headers, body) for one request; error statuses are returned, not raised."""
    req = urllib.request.Request(url, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def get_json(url: str, token: str | None = None):
    code, _, body = http(url, token)
    assert code == 200, (url, code, body)
    return json.loads(body)


def wait_for(check, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def metrics(url: str, token: str | None = None) -> dict[str, list]:
    code, headers, body = http(url + "metrics", token)
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(body.decode())}


def value(fams: dict, family: str, sample: str | None = None, **labels) -> float:
    for s in fams[family]:
        if (sample is None or s.name == sample) and all(s.labels.get(k) == v
                                                        for k, v in labels.items()):
            return s.value
    raise KeyError(f"{family} {sample} {labels}")


def read_mjpeg_frames(url: str, n: int, timeout: float = 15) -> list[np.ndarray]:
    """The first `n` JPEG parts of a multipart/x-mixed-replace stream, decoded."""
    frames = []
    with urllib.request.urlopen(url, timeout=timeout) as r:
        assert r.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        while len(frames) < n:
            line = r.readline()
            if line.lower().startswith(b"content-length:"):
                size = int(line.split(b":")[1])
                r.readline()  # blank line after the part headers
                img = cv2.imdecode(np.frombuffer(r.read(size), np.uint8), cv2.IMREAD_COLOR)
                assert img is not None
                frames.append(img)
    return frames


# ------------------------------------------------------------------ the running service


@pytest.fixture(scope="module")
def edge(tmp_path_factory, demo_clip):
    tmp = tmp_path_factory.mktemp("web")
    config = f"""
device: web-test
source: {{loop: true}}
model: {{threads: 1}}
{CHAIN}
outputs:
  - snapshot: {{dir: {tmp / "snaps"}, max_mb: 20}}
  - mqtt: {{host: 127.0.0.1, port: 9, password: hunter2-secret}}
web: {{bind: "127.0.0.1:0", preview_fps: 5}}
"""
    e = Edge(tmp, config, str(demo_clip))
    try:
        e.wait_url()
        wait_for(lambda: http(e.url + "healthz")[0] == 200, 20, "healthz 200")
        yield e
    finally:
        e.stop()


def test_status_regions_and_health(edge):
    s = get_json(edge.url + "api/status")
    assert s["device"] == "web-test" and s["health"]["ok"], s["health"]
    assert s["stats"]["source_state"] == "running" and s["stats"]["frames_classified"] > 0
    assert s["model"]["backend"] and s["model"]["xnnpack_partitions"] >= 1
    (region,) = s["regions"]
    assert region["name"] is None
    assert region["watched"] == {lb: {"enter": 0.6, "exit": 0.3} for lb in ("cat", "bird", "daisy")}
    assert set(region["scores"]) == {"cat", "bird", "daisy"} and region["top"]
    assert set(s["sinks"]) == {"snapshot", "mqtt"}
    code, _, body = http(edge.url + "healthz")
    assert code == 200 and body.startswith(b"ok:")


def test_events_since_and_snapshots(edge):
    first = wait_for(lambda: get_json(edge.url + "api/events?since=0")["events"], 20, "events")
    ids = [e["id"] for e in first]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    later = get_json(edge.url + f"api/events?since={ids[-1]}")
    assert all(e["id"] > ids[-1] for e in later["events"])
    assert later["last"] >= ids[-1]
    assert {e["type"] for e in first} <= {"enter", "exit"}
    assert {e["label"] for e in first} <= {"cat", "bird", "daisy"}

    def snapshot():
        for e in get_json(edge.url + "api/events?since=0")["events"]:
            if e["snapshot_url"]:
                code, headers, body = http(edge.url + e["snapshot_url"])
                if code == 200:
                    return e, headers, body
        return None

    event, headers, body = wait_for(snapshot, 20, "a snapshot served")
    assert event["type"] == "enter" and headers["Content-Type"] == "image/jpeg"
    img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (480, 640, 3)
    # Only files directly in a snapshot directory: no traversal, no other files.
    (edge.cfg.parent / "snaps" / "notes.txt").write_text("x")
    for bad in ("..%2Fedge.yaml", "../edge.yaml", "%2E%2E/edge.yaml", "notes.txt",
                "..%2F..%2Fetc%2Fpasswd", "missing.jpg"):
        assert http(edge.url + "snapshots/" + bad)[0] == 404, bad
    assert http(edge.url + "api/events?since=abc")[0] == 400


def test_config_is_masked_and_nothing_changes_state(edge):
    code, _, body = http(edge.url + "api/config")
    assert code == 200 and b"hunter2-secret" not in body
    cfg = json.loads(body)
    assert cfg["outputs"][1]["mqtt"]["password"] == "***"
    assert cfg["postprocess"][2]["hysteresis"]["enter"] == 0.6
    for method in ("POST", "PUT", "DELETE"):
        assert http(edge.url + "api/config", method=method)[0] == 405
    assert http(edge.url + "nope")[0] == 404


def test_metrics_parse_and_counters_increase(edge):
    wait_for(lambda: any(s.labels == {"type": "enter", "label": "bird"}
                         for s in metrics(edge.url)["edge_events"]), 20, "a bird event")
    a = metrics(edge.url)
    moving = (("edge_frames_captured",), ("edge_frames_classified",),
              ("edge_invoke_seconds", "edge_invoke_seconds_count"),
              ("edge_latency_seconds", "edge_latency_seconds_count"))

    def moved():
        m = metrics(edge.url)
        return m if all(value(m, *k) > value(a, *k) for k in moving) else None

    b = wait_for(moved, 20, "the frame counters to move")
    for fam in ("edge_frames_captured", "edge_frames_classified"):
        assert value(b, fam) > value(a, fam) > 0
    # every captured frame is classified, counted as dropped or still in flight (in the
    # reader's hands, in the slot, being classified): the three counters come from one lock
    for m in (a, b):
        in_flight = (value(m, "edge_frames_captured") - value(m, "edge_frames_classified")
                     - value(m, "edge_frames_dropped"))
        assert 0 <= in_flight <= 3, in_flight
    assert value(b, "edge_frames_dropped") >= value(a, "edge_frames_dropped")
    for hist in ("edge_invoke_seconds", "edge_latency_seconds"):
        count = value(b, hist, f"{hist}_count")
        assert count > value(a, hist, f"{hist}_count")
        assert value(b, hist, f"{hist}_bucket", le="+Inf") == count
        assert value(b, hist, f"{hist}_sum") > 0
        buckets = [s.value for s in b[hist] if s.name.endswith("_bucket")]
        assert buckets == sorted(buckets)  # cumulative
    # one observation per classified frame; the histograms are read just after the counters
    invoked = value(b, "edge_invoke_seconds", "edge_invoke_seconds_count")
    assert 0 <= invoked - value(b, "edge_frames_classified") <= 2
    assert value(b, "edge_latency_seconds", "edge_latency_seconds_count") == invoked
    assert value(b, "edge_source_state", state="running") == 1
    assert value(b, "edge_source_state", state="reconnecting") == 0
    assert value(b, "edge_healthy") == 1
    assert value(b, "edge_events", "edge_events_total", type="enter", label="bird") >= 1
    assert value(b, "edge_sink_queue_capacity", sink="snapshot") == 8
    # the snapshot output writes one JPEG per enter event: once its queue is empty, all are
    # written and none dropped
    def snapshots_done():
        m = metrics(edge.url)
        enters = sum(x.value for x in m["edge_events"]
                     if x.name == "edge_events_total" and x.labels["type"] == "enter")
        sink = {f: value(m, f, sink="snapshot") for f in ("edge_sink_queue_depth",
                                                           "edge_sink_sent")}
        return sink["edge_sink_queue_depth"] == 0 and sink["edge_sink_sent"] == enters > 0 and m

    m = wait_for(snapshots_done, 20, "every enter event's snapshot written")
    assert value(m, "edge_sink_dropped", sink="snapshot") == 0
    assert value(m, "edge_sink_errors", sink="snapshot") == 0
    # no broker on port 9: mqtt delivers nothing and spools every event, it drops none
    assert value(m, "edge_sink_sent", sink="mqtt") == 0
    assert value(m, "edge_sink_dropped", sink="mqtt") == 0
    assert value(b, "edge_xnnpack_partitions") >= 1
    assert {s.labels["label"] for s in b["edge_score"]} == {"cat", "bird", "daisy"}


def test_mjpeg_stream_and_snapshot(edge):
    frames = read_mjpeg_frames(edge.url + "stream.mjpg", 3)
    assert all(f.shape == (480, 640, 3) for f in frames)
    assert any(np.abs(f.astype(int) - frames[0]).mean() > 0.5 for f in frames[1:])
    code, headers, body = http(edge.url + "snapshot.jpg")
    assert code == 200 and headers["Content-Type"] == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).std() > 10


def test_preview_encodes_only_for_viewers_and_shares_frames(edge):
    encoded = lambda: value(metrics(edge.url), "edge_web_preview_frames")  # noqa: E731
    wait_for(lambda: value(metrics(edge.url), "edge_web_viewers") == 0, 15, "no viewers")
    idle = encoded()
    classified = lambda: value(metrics(edge.url), "edge_frames_classified")  # noqa: E731
    seen = classified()
    wait_for(lambda: classified() >= seen + 15, 20, "15 more frames classified")
    assert encoded() == idle  # nobody watches: no JPEG work at all

    def watch():
        read_mjpeg_frames(edge.url + "stream.mjpg", 8)

    viewers = [threading.Thread(target=watch) for _ in range(3)]
    t0 = time.monotonic()
    for v in viewers:
        v.start()
    for v in viewers:
        v.join(30)
    spent = time.monotonic() - t0
    made = encoded() - idle
    # Three viewers got 8 frames each, from one shared encoding at <= preview_fps (5/s).
    assert 8 <= made <= 5 * spent + 2, (made, spent)


# ------------------------------------------------------------------ the page in Chromium


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        pytest.skip("chromium and chromedriver are not installed")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    opts.page_load_strategy = "eager"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(flag)
    d = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        yield d
    finally:
        d.quit()


def test_page_preview_updates_and_bars_move(edge, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(edge.url)
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, ".row.watched .fill")) == 3, 20,
             "three score bars")
    header = browser.find_element(By.ID, "model").text
    assert "XNNPACK 1 partition" in header and "tf2_mobilenet_v2_1.0_224_ptq" in header
    assert browser.find_element(By.ID, "health").text == "healthy"
    marks = browser.execute_script(
        "return [...document.querySelectorAll('.row .mark.enter, .row .mark.exit')]"
        ".map(m => m.style.left)")
    assert sorted(set(marks)) == ["30%", "60%"]

    preview = browser.find_element(By.ID, "preview")
    wait_for(lambda: browser.execute_script("return arguments[0].naturalWidth", preview) == 640,
             20, "the preview image")
    first = cv2.imdecode(np.frombuffer(preview.screenshot_as_png, np.uint8), cv2.IMREAD_COLOR)
    wait_for(lambda: np.abs(cv2.imdecode(np.frombuffer(preview.screenshot_as_png, np.uint8),
                                         cv2.IMREAD_COLOR).astype(int) - first).mean() > 1,
             10, "the preview to change")

    widths = "return [...document.querySelectorAll('.row.watched .fill')].map(f => f.style.width)"
    before = browser.execute_script(widths)
    wait_for(lambda: browser.execute_script(widths) != before, 10, "the score bars to move")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#events li.visit"), 10,
             "events listed")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#events li img"), 10,
             "an event snapshot")
    assert browser.find_element(By.ID, "stats").text.count("fps") == 2

    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot))
    img = cv2.imread(str(shot))
    assert img.shape[0] > 500 and img.std() > 20  # not blank
    assert np.abs(img.astype(int) - img.mean(axis=(0, 1))).mean() > 10


def test_reload_moves_the_thresholds(edge):
    """Retune on a live service: after SIGHUP the API (and so the page's marks) show new levels."""
    edge.cfg.write_text(edge.cfg.read_text().replace("enter: 0.6, exit: 0.3",
                                                     "enter: 0.7, exit: 0.2"))
    edge.proc.send_signal(signal.SIGHUP)
    levels = lambda: get_json(edge.url + "api/status")["regions"][0]["watched"]  # noqa: E731
    wait_for(lambda: levels()["cat"] == {"enter": 0.7, "exit": 0.2}, 20, "the new levels")
    assert http(edge.url + "healthz")[0] == 200


# ------------------------------------------------------------------ token and stall


class MjpegCamera:
    """A network camera: serves the clip's frames as MJPEG over HTTP until `stall()`."""

    def __init__(self, clip: Path, fps: float = 15) -> None:
        cap = cv2.VideoCapture(str(clip))
        self.jpegs = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            self.jpegs.append(cv2.imencode(".jpg", frame)[1].tobytes())
        cap.release()
        self.stalled = threading.Event()
        self.closing = threading.Event()
        cam = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if cam.stalled.is_set():  # accept, then never answer
                    cam.closing.wait()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=f")
                self.end_headers()
                i = 0
                try:
                    while not cam.stalled.is_set():
                        data = cam.jpegs[i % len(cam.jpegs)]
                        i += 1
                        self.wfile.write(b"--f\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         b"%d\r\n\r\n" % len(data) + data + b"\r\n")
                        time.sleep(1 / fps)
                    cam.closing.wait()  # the connection stays open, silent
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/video.mjpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stall(self) -> None:
        self.stalled.set()

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


def test_token_required_off_loopback_and_healthz_flips_on_stall(tmp_path, demo_clip):
    token = "s3cret-token-for-tests"
    (tmp_path / "token").write_text(token + "\n")
    camera = MjpegCamera(demo_clip)
    e = Edge(tmp_path, f"""
source: {{stall_timeout_s: 1, backoff_initial_s: 0.5}}
model: {{threads: 1}}
{CHAIN}
web: {{bind: "0.0.0.0:0", token_file: {tmp_path / "token"}}}
""", camera.url.replace("http://", "http://viewer:pa55word@"))
    try:
        url = e.wait_url().replace("0.0.0.0", "127.0.0.1")
        for path in ("", "healthz", "api/status", "api/config", "metrics", "stream.mjpg",
                     "snapshot.jpg", "api/events?since=0", "snapshots/x.jpg"):
            code, headers, _ = http(url + path)
            assert code == 401 and headers["WWW-Authenticate"].startswith("Bearer"), path
            assert http(url + path, token="wrong")[0] == 401, path
        assert http(url + "api/events?since=0&token=" + token)[0] == 200
        code, _, page = http(url + "?token=" + token)
        assert code == 200 and b"<title>edge</title>" in page
        wait_for(lambda: http(url + "healthz", token)[0] == 200, 30, "healthz 200 on the stream")
        cfg = get_json(url + "api/config", token)
        assert cfg["web"]["token"] is None and cfg["web"]["token_file"]
        source = get_json(url + "api/status", token)["source"]  # what the page's header shows
        assert source == {"kind": "opencv", "device": camera.url.replace("http://", "http://***@"),
                          "path": None, "width": 640, "height": 480}, source
        frames = read_mjpeg_frames(url + "stream.mjpg?token=" + token, 2)
        assert frames[0].shape == (480, 640, 3)

        camera.stall()
        t0 = time.monotonic()
        code, body = wait_for(lambda: (lambda r: r[0] == 503 and (r[0], r[2]))(
            http(url + "healthz", token)), 15, "healthz 503 after the stall")
        assert "source reconnecting" in body.decode() or "no frame" in body.decode()
        assert time.monotonic() - t0 < 15
        m = metrics(url, token)
        assert value(m, "edge_healthy") == 0
        assert value(m, "edge_source_state", state="running") == 0
    finally:
        e.stop()
        camera.close()
    assert e.proc.returncode == 0, e.log.read_text()


def test_refuses_public_bind_without_token(tmp_path, demo_clip):
    e = Edge(tmp_path, 'web: {bind: "0.0.0.0:0"}\n', str(demo_clip), "--max-frames", "5")
    try:
        assert e.proc.wait(60) == 2
    finally:
        e.stop()
    err = e.log.read_text()
    assert "web.token" in err and "0.0.0.0:0" in err
    assert "web: serving" not in err


def test_port_taken_costs_only_the_page(edge, tmp_path, demo_clip):
    port = edge.url.rstrip("/").rsplit(":", 1)[1]
    e = Edge(tmp_path, f'web: {{bind: "127.0.0.1:{port}"}}\n', str(demo_clip),
             "--max-frames", "3")
    try:
        assert e.proc.wait(60) == 0
    finally:
        e.stop()
    err = e.log.read_text()
    assert f"web: cannot listen on 127.0.0.1:{port}" in err and "running without" in err
    assert http(edge.url + "healthz")[0] == 200  # the first service is untouched


def test_bind_rules():
    assert parse_bind("[::1]:8080") == ("::1", 8080)
    assert parse_bind("0.0.0.0:80") == ("0.0.0.0", 80)
    for host in ("127.0.0.1", "127.3.2.1", "::1", "localhost"):
        assert is_loopback(host)
    for host in ("0.0.0.0", "::", "192.168.1.5", "edge.local"):
        assert not is_loopback(host)
    assert access_from_config(WebConfig()).token is None
    with pytest.raises(EdgeError, match="web.token"):
        access_from_config(WebConfig(bind="192.168.1.5:8080"))
    with pytest.raises(EdgeError, match="empty"):
        access_from_config(WebConfig(bind="0.0.0.0:8080", token=" "))
    assert access_from_config(WebConfig(bind="0.0.0.0:8080", token="t")).token == "t"
    assert token_ok(None, None, None)
    assert token_ok("t", "Bearer t", None) and token_ok("t", None, ["t"])
    assert not token_ok("t", None, None) and not token_ok("t", "Bearer x", ["t"])


def test_offline_json_run_starts_no_web_server_unless_asked(tmp_path, demo_clip):
    """`--no-drop --json` evaluates a file: no server (and no port taken) unless `--web`."""
    from conftest import TINY_MODEL
    from helpers import run_edge

    cfg = tmp_path / "edge.yaml"
    cfg.write_text('web: {bind: "127.0.0.1:0"}\n')
    base = ("run", "-c", cfg, "--source", demo_clip, "--model", TINY_MODEL, "--no-drop",
            "--max-frames", "3")
    offline = run_edge(*base, "--json")
    assert offline.returncode == 0, offline.stderr
    assert len([ln for ln in offline.stdout.splitlines() if '"result"' in ln]) == 3
    assert "web: serving" not in offline.stderr
    for extra in (("--json", "--web"), ()):  # asked for, or not an offline --json run
        r = run_edge(*base, *extra)
        assert r.returncode == 0 and "web: serving http://127.0.0.1:" in r.stderr, (extra, r.stderr)


# ------------------------------------------------------------------ the page: issue 18


ROWS_JS = """const b = document.getElementById('regions');
return [[...b.querySelectorAll('.row')].map(r => [r.dataset.label, r.dataset.kind]),
        +(b.dataset.setChanges || 0), +(b.dataset.polls || 0)];"""
DURATION = re.compile(r"^(\d\.\d s|\d+ s|\d+ min \d+ s|\d+ h \d+ min|\d+ d \d+ h)$")
HMS = re.compile(r"\b\d\d:\d\d:\d\d\b")


def iso(ts: str) -> datetime.datetime:
    return datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ")


def next_poll(browser, after: int) -> tuple[list, int, int]:
    """The score rows, the sticky-set change count and the poll count once a new poll rendered."""
    return wait_for(lambda: (lambda got: got if got[2] > after else None)(
        browser.execute_script(ROWS_JS)), 10, "the next status poll", every=0.05)


def test_score_bars_keep_a_stable_set_and_pins_stay(edge, browser):
    """On the clip that cuts between photos the top-5 reshuffles constantly; the bars do not."""
    from selenium.webdriver.common.by import By

    browser.get(edge.url)
    rows, changes, poll = next_poll(browser, 0)
    sticky = browser.execute_script("return STICKY")
    samples, tops = [], []
    t0 = time.monotonic()
    for _ in range(40):
        rows, changes, poll = next_poll(browser, poll)
        samples.append(([label for label, _ in rows], changes))
        tops.append([lb for lb, _ in get_json(edge.url + "api/status")["regions"][0]["top"]])
    spent = time.monotonic() - t0
    top_changes = sum(a != b for a, b in zip(tops, tops[1:], strict=False))
    assert top_changes >= 10, tops  # the clip does reshuffle the top labels
    order_changes = 0
    for (a, ca), (b, cb) in zip(samples, samples[1:], strict=False):
        assert a[:3] == ["cat", "bird", "daisy"]  # the watched labels, in the chain's order
        if a != b:
            order_changes += 1
            assert cb > ca, (a, b)  # rows move only when the sticky set changes, never by score
    # each slot fills once and is replaced at most once per hold time; a drop follows a join
    bound = 2 * sticky["n"] * (1 + int(spent // sticky["holdS"]) + 1)
    assert order_changes <= samples[-1][1] - samples[0][1] <= bound < top_changes, (
        order_changes, samples[-1][1] - samples[0][1], bound, top_changes)
    assert len(samples[-1][0]) > 3  # the sticky top-N is there beside the watched labels

    # Pin a sticky label by a click: it stays, across a reload (the sticky set starts empty).
    label = next(lb for lb, kind in rows if kind == "sticky")
    browser.find_element(By.CSS_SELECTOR, f'.row[data-label="{label}"] .name').click()
    rows, _, poll = next_poll(browser, poll)
    assert [label, "pinned"] in rows
    browser.refresh()
    poll = 0
    for _ in range(8):
        rows, _, poll = next_poll(browser, poll)
        assert rows[3] == [label, "pinned"], rows  # right after the watched labels
    browser.find_element(By.CSS_SELECTOR, f'.row[data-label="{label}"] .name').click()
    rows, _, poll = next_poll(browser, poll)
    assert [label, "pinned"] not in rows


def test_long_pinned_label_is_ellipsised_and_sparklines_break_at_gaps(edge, browser):
    long = "a label far too long to fit in the name column of the score bars"
    browser.get(edge.url)
    browser.execute_script(
        "localStorage.setItem('edge.pins', JSON.stringify({'': [arguments[0]]}))", long)
    browser.refresh()
    next_poll(browser, 1)
    name = browser.execute_script(
        "const n = document.querySelector(`.row[data-label='${arguments[0]}'] .name`);"
        "return [n.scrollWidth, n.clientWidth, n.title, getComputedStyle(n).textOverflow,"
        "n.closest('.row').querySelector('.val').textContent]", long)
    assert name[0] > name[1] and name[2].startswith(long) and name[3] == "ellipsis", name
    assert name[4] == "–"  # never in the top: no score, not a made-up 0.00
    # The sparkline of a label without data has no line; bird's (watched) has one.
    blue = """const c = document.querySelector(`.row[data-label='${arguments[0]}'] .spark`);
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
      for (let i = 0; i < d.length; i += 4) n += d[i] < 110 && d[i + 2] > 180; return n;"""
    assert browser.execute_script(blue, long) == 0
    wait_for(lambda: browser.execute_script(blue, "bird") > 50, 10, "bird's sparkline")
    # Split where a sample is missing (null) or none came for longer than GAP_S.
    segs = browser.execute_script(
        "return segments([[0, .1], [.25, .2], [.5, null], [.75, .3], [1, .4], [9, .5]])")
    assert segs == [[[0, 0.1], [0.25, 0.2]], [[0.75, 0.3], [1, 0.4]], [[9, 0.5]]]


def test_phone_first_screen_shows_preview_scores_and_visits(edge, browser, tmp_path):
    from selenium.webdriver.common.by import By

    from edge.web import text_scale

    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
    browser.get(edge.url)
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#regions .row")) > 3, 20,
             "the score bars")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#events li.visit"), 20, "visits")
    preview = browser.find_element(By.ID, "preview")
    wait_for(lambda: browser.execute_script("return arguments[0].naturalWidth", preview), 20,
             "the preview image")
    top = "return document.getElementById(arguments[0]).getBoundingClientRect().top"
    height = browser.execute_script("return innerHeight")
    assert height == 844 and browser.execute_script("return innerWidth") == 390
    tops = {k: browser.execute_script(top, k) for k in ("preview", "scores", "visits", "stats")}
    assert tops["preview"] < tops["scores"] < tops["visits"] < height < tops["stats"], tops
    # the preview's text (drawn into the JPEG) is still ~11 CSS px at the phone's width
    natural, shown = browser.execute_script(
        "const i = arguments[0]; return [i.naturalWidth, i.getBoundingClientRect().width]",
        preview)
    scale = text_scale(natural)
    (_, text_px), _ = cv2.getTextSize("cat 0.84", cv2.FONT_HERSHEY_SIMPLEX, scale,
                                      max(1, round(scale * 2)))
    assert text_px * shown / natural >= 10, (text_px, shown, natural)
    assert browser.save_screenshot(str(tmp_path / "phone.png"))


def test_header_tiles_and_visits(edge, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(edge.url)
    wait_for(lambda: "640×480" in browser.find_element(By.ID, "source").text, 20, "the source")
    assert f"source: {edge.cfg.parent.parent}" in browser.find_element(By.ID, "source").text
    # tiles: the n/a ones hidden (no SoC temperature or vcgencmd here), one height, no reflow
    system = get_json(edge.url + "api/status")["system"]
    tiles = """return [...document.querySelectorAll('#stats .tile')].filter(t => !t.hidden)
      .map(t => [t.dataset.key, t.querySelector('.v').textContent, t.offsetHeight])"""
    seen = []
    for _ in range(3):
        got = wait_for(lambda: browser.execute_script(tiles), 10, "tiles")
        seen.append(got)
        time.sleep(0.3)  # a few polls apart
    keys = [k for k, _, _ in seen[0]]
    assert ("temperature" in keys) == (system["cpu_temperature_c"] is not None)
    assert ("throttling" in keys) == (system["throttled"] is not None)
    assert len({h for s in seen for _, _, h in s}) == 1  # one height, poll after poll
    assert all(v != "n/a" for s in seen for _, v, _ in s)
    uptime = dict((k, v) for k, v, _ in seen[-1])["uptime"]
    assert DURATION.match(uptime), uptime
    fd = "return [0.4, 24, 192, 7500, 90000].map(fmtDuration)"
    assert browser.execute_script(fd) == ["0.4 s", "24 s", "3 min 12 s", "2 h 5 min", "1 d 1 h"]

    # visits: one row per enter -> exit, with its duration; 24-hour times
    def closed():
        return browser.execute_script("""return [...document.querySelectorAll('#events li.visit')]
          .filter(li => li.dataset.enter && li.dataset.exit)
          .map(li => [+li.dataset.enter, +li.dataset.exit, li.dataset.label,
                      li.querySelector('.type').textContent,
                      li.querySelector('.when').textContent])""")
    rows = wait_for(lambda: len(closed()) >= 3 and closed(), 20, "closed visits")
    events = {e["id"]: e for e in get_json(edge.url + "api/events?since=0")["events"]}
    checked = 0
    for enter_id, exit_id, label, dur, when in rows:
        assert HMS.search(when) and not re.search(r"\b[AP]M\b", when), when
        if enter_id not in events or exit_id not in events:
            continue  # older than the API's window
        a, b = events[enter_id], events[exit_id]
        assert (a["type"], b["type"], a["label"], b["label"]) == ("enter", "exit", label, label)
        between = [e for i, e in events.items() if enter_id < i < exit_id
                   and e["label"] == label and e["roi"] == a["roi"]]
        assert not between  # the exit closes that enter, nothing in between
        spent = (iso(b["ts"]) - iso(a["ts"])).total_seconds()
        assert DURATION.match(dur) and (spent >= 10 or dur == f"{spent:.1f} s"), (dur, spent)
        checked += 1
    assert checked >= 2
    assert len({r[0] for r in rows}) == len(rows)  # one row per visit
    # filter by label
    Select(browser.find_element(By.ID, "filter-label")).select_by_value("bird")
    shown = browser.execute_script("""return [...document.querySelectorAll('#events li.visit')]
      .map(li => [li.dataset.label, li.hidden])""")
    assert {lb for lb, hidden in shown if not hidden} == {"bird"}
    assert any(hidden for _, hidden in shown)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_open_visits_region_filter_and_a_stopped_server(tmp_path, images, browser):
    """A cat that stays: an open visit per ROI ("since"); then the server stops and returns."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    port = free_port()
    config = f"""
source: {{loop: true, fps: 10}}
model: {{threads: 1}}
rois:
  - {{name: left, box: [0, 0, 0.7, 1]}}
  - {{name: right, box: [0.3, 0, 1, 1]}}
postprocess:
  - group: {{cat: ["tabby*", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"]}}
  - hysteresis: {{enter: 0.5, exit: 0.3, labels: [cat], min_frames: 2}}
web: {{bind: "127.0.0.1:{port}"}}
"""
    cat = str(images / "cat.bmp")
    e = Edge(tmp_path, config, cat)
    try:
        url = e.wait_url()
        browser.get(url)
        visits = """return [...document.querySelectorAll('#events li.visit')].map(li =>
          [li.dataset.roi, li.dataset.exit, li.querySelector('.when').textContent, li.hidden])"""
        rows = wait_for(lambda: (lambda v: len(v) == 2 and v)(browser.execute_script(visits)), 20,
                        "an open visit per ROI")
        assert {r[0] for r in rows} == {"left", "right"}
        for _, exit_id, when, _ in rows:
            assert exit_id == "" and re.match(r"since \d\d:\d\d:\d\d · ROI (left|right)", when)
        Select(browser.find_element(By.ID, "filter-roi")).select_by_value("right")
        assert [r[0] for r in browser.execute_script(visits) if not r[3]] == ["right"]

        e.stop()
        banner = wait_for(lambda: browser.execute_script(
            "return document.body.classList.contains('offline') && "
            "document.getElementById('offline').textContent"), 15, "the disconnected state")
        assert re.match(r"disconnected since \d\d:\d\d:\d\d ", banner), banner
        assert browser.find_element(By.ID, "health").text == "disconnected"
        assert browser.execute_script("return document.getElementById('preview').src") == ""
        # retries back off: 0.5 s, 1 s, 2 s, ... (10 s at most)
        wait_for(lambda: "retrying in 2.0 s" in browser.find_element(By.ID, "offline").text, 15,
                 "the third retry")

        e = Edge(tmp_path, config, cat)  # the same port
        e.wait_url()
        wait_for(lambda: browser.execute_script(
            "return !document.body.classList.contains('offline') && "
            "document.getElementById('offline').hidden"), 30, "the page to recover")
        wait_for(lambda: browser.find_element(By.ID, "health").text == "healthy", 20, "healthy")
        wait_for(lambda: browser.execute_script(
            "return document.getElementById('preview').naturalWidth") == 512, 20,
            "the preview again")
    finally:
        e.stop()


def test_lan_addresses_and_token_form_for_browsers(tmp_path, demo_clip, browser):
    """Bound to 0.0.0.0: the log names this machine's LAN URLs; a browser gets a token form."""
    from selenium.webdriver.common.by import By

    from edge.netaddr import ipv4_addresses

    token = "form-token-for-tests"
    e = Edge(tmp_path, f'model: {{threads: 1}}\nweb: {{bind: "0.0.0.0:0", token: {token}}}\n',
             str(demo_clip))
    try:
        url = e.wait_url().replace("0.0.0.0", "127.0.0.1")
        port = url.rstrip("/").rsplit(":", 1)[1]
        line = wait_for(lambda: re.search(r"web: from another device: (.*)", e.log.read_text()),
                        10, "the LAN addresses line").group(1)
        listed = re.findall(r"http://([\d.]+):(\d+)/", line)
        assert listed == [(a, port) for a in ipv4_addresses()] and listed, line
        ip = shutil.which("ip")
        if ip:  # the same addresses as iproute2 reports (all read locally, nothing sent)
            out = subprocess.run([ip, "-o", "-4", "addr", "show"], capture_output=True,
                                 text=True).stdout
            theirs = {m for m in re.findall(r"inet ([\d.]+)/", out) if not m.startswith("127.")}
            assert {a for a, _ in listed} == theirs

        html_accept = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
        for path in ("", "api/status"):
            req = urllib.request.Request(url + path, headers=html_accept)
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=10)
            body = err.value.read().decode()
            assert err.value.code == 401 and err.value.headers["Content-Type"].startswith(
                "text/html") and 'name="token"' in body and token not in body
        # API and metrics clients (no text/html in Accept) keep the plain 401
        for path, accept in (("metrics", "text/plain;version=0.0.4;q=0.9,*/*;q=0.1"),
                             ("api/status", "*/*"), ("healthz", None)):
            req = urllib.request.Request(url + path, headers={"Accept": accept} if accept else {})
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=10)
            assert err.value.code == 401 and err.value.headers["Content-Type"].startswith(
                "text/plain") and err.value.read().startswith(b"unauthorized"), path

        browser.get(url)
        box = wait_for(lambda: browser.find_elements(By.NAME, "token"), 10, "the token form")[0]
        box.send_keys("wrong\n")
        wait_for(lambda: "wrong token" in browser.page_source, 10, "'wrong token'")
        browser.find_element(By.NAME, "token").send_keys(token + "\n")
        wait_for(lambda: browser.find_elements(By.ID, "health")
                 and browser.find_element(By.ID, "health").text == "healthy", 20,
                 "the page, with the token")
        assert f"token={token}" in browser.current_url
        wait_for(lambda: browser.execute_script(
            "return document.getElementById('preview').naturalWidth") == 640, 20, "the preview")
    finally:
        e.stop()


def test_netaddr_reads_the_kernel_tables(tmp_path):
    from edge.netaddr import ipv4_addresses, ipv6_addresses

    fib = tmp_path / "fib_trie"
    fib.write_text("""Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
           |-- 127.0.0.1
              /32 host LOCAL
     +-- 192.168.1.0/24 2 0 2
           |-- 192.168.1.0
              /24 link UNICAST
           |-- 192.168.1.23
              /32 host LOCAL
        |-- 192.168.1.255
           /32 link BROADCAST
Local:
           |-- 192.168.1.23
              /32 host LOCAL
           |-- 10.0.0.5
              /32 host LOCAL
""")
    assert ipv4_addresses(fib) == ["192.168.1.23", "10.0.0.5"]
    inet6 = tmp_path / "if_inet6"
    inet6.write_text("fd000000000000000000000000000002 04 40 00 82     eth0\n"
                     "00000000000000000000000000000001 01 80 10 80       lo\n"
                     "fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n")
    assert ipv6_addresses(inet6) == ["fd00::2"]
    assert ipv4_addresses(tmp_path / "missing") == [] == ipv6_addresses(tmp_path / "missing")
