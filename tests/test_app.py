"""`edge run` as a whole: what is refused before anything starts, what a failed start leaves
behind (nothing), and reloads that never stall the frame loop or accept what a start refuses."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading

import pytest
from conftest import MODELS, TINY_MODEL
from helpers import run_edge, wait_for

from edge import app, config
from edge.errors import EdgeError
from edge.model import load_model
from edge.pipeline import Pipeline


@pytest.fixture(scope="module")
def tiny(assets):
    return load_model(TINY_MODEL, threads=1)


def _sink_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("sink-") and t.is_alive()]


def test_a_running_instance_is_refused_before_the_model_loads(tmp_path):
    # a live process whose command line says edge holds the pidfile
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "edge"])
    try:
        pidfile = tmp_path / "edge.pid"
        pidfile.write_text(f"{holder.pid}\n")
        r = run_edge("run", "--pidfile", pidfile, "--model", tmp_path / "missing.tflite",
                     "--source", MODELS.parent / "images")
        assert r.returncode == 2, r.stderr
        assert f"already running as pid {holder.pid}" in r.stderr
        assert "missing.tflite" not in r.stderr  # the model was never looked at
        assert "Traceback" not in r.stderr
        assert pidfile.read_text() == f"{holder.pid}\n"  # left to its owner
    finally:
        holder.kill()
        holder.wait()


def test_reload_without_an_instance_exits_2(tmp_path):
    r = run_edge("reload", "--pidfile", tmp_path / "none.pid")
    assert r.returncode == 2 and "no running edge instance" in r.stderr


def test_a_failed_start_stops_what_it_started(tiny, tmp_path):
    cfg = config.parse(
        "web: {enabled: false}\nsource: {kind: picamera2}\n"  # picamera2 is not installed here
        f"outputs: [{{jsonl: {{path: '{tmp_path / 'e.jsonl'}'}}}}]\n"
    )
    stopped = []

    class Hooks:
        def on_stop(self):
            stopped.append(True)

    pipe = Pipeline(cfg, tiny, hooks=Hooks())
    with pytest.raises(EdgeError, match="picamera2"):
        pipe.run()
    assert pipe.outbox is not None and pipe.outbox.started  # the outbox had started ...
    assert wait_for(lambda: not _sink_threads(), 5), _sink_threads()  # ... and is stopped
    assert stopped == [True]


class Hanging:
    """An HTTP server that accepts requests and never answers them."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def test_a_reload_closes_old_outputs_beside_the_loop(tiny, tmp_path, demo_clip):
    hang = Hanging()
    base = ("web: {enabled: false}\nservice: {stats_every_s: 0}\n"
            f"source: {{kind: opencv, device: '{demo_clip}', loop: true}}\n"
            "postprocess:\n  - hysteresis: {enter: 0.05, exit: 0.02, min_frames: 1}\n")
    path = tmp_path / "edge.yaml"
    path.write_text(base + f"outputs: [{{webhook: {{url: '{hang.url}', timeout_s: 30}}}}]\n")
    pipe = Pipeline(config.load(path), tiny)
    runner = threading.Thread(target=pipe.run, kwargs={"config_path": str(path)}, daemon=True)
    runner.start()
    try:
        assert wait_for(lambda: hang.conns, 30)  # the webhook is stuck inside a request
        path.write_text(base + "outputs: []\n")
        pipe.reload_event.set()
        assert wait_for(lambda: pipe._handover is not None, 30)
        before = pipe.stats.classified
        # frames keep coming while the old webhook output flushes (up to 5 s) and closes
        assert wait_for(lambda: pipe.stats.classified >= before + 10, 30)
        assert pipe._handover.is_alive()
        assert pipe.view.cfg.outputs == []
    finally:
        pipe.stop_event.set()
        runner.join(20)
        hang.close()
    assert not runner.is_alive()


def test_a_reload_refuses_what_a_start_refuses_and_reports_restart_only_changes(
        tiny, tmp_path, caplog):
    path = tmp_path / "edge.yaml"
    path.write_text("web: {bind: '127.0.0.1:8080'}\noutputs: []\n")
    pipe = Pipeline(config.load(path), tiny, checks=app.start_checks)
    path.write_text("web: {bind: '0.0.0.0:8080'}\noutputs: []\n")  # no token: start refuses
    with caplog.at_level(logging.INFO, logger="edge.pipeline"):
        assert pipe.reload(str(path)) is False
    assert "reload rejected" in caplog.text and "token" in caplog.text
    assert pipe.cfg.web.bind == "127.0.0.1:8080"
    caplog.clear()
    path.write_text("web: {bind: '127.0.0.1:9090'}\noutputs: []\n")
    with caplog.at_level(logging.INFO, logger="edge.pipeline"):
        assert pipe.reload(str(path)) is True
    assert "web changed; it applies at the next restart" in caplog.text


def test_fetch_of_an_installed_model_opens_no_download(tmp_path, assets):
    dest = tmp_path / "models"
    assert run_edge("models", "fetch", "mobilenet_v1_tiny", "--dir", dest,
                    "--from", MODELS).returncode == 0
    # offline now: any download attempt would fail at once on this dead proxy
    dead = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    r = run_edge("models", "fetch", "mobilenet_v1_tiny", "--dir", dest, env=dead)
    assert r.returncode == 0, r.stderr
    assert str(dest / TINY_MODEL.name) in r.stdout


AFFINITY = """
import json, os, sys
os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
from edge.model import cpu_id, load_model
m = load_model(sys.argv[1], threads="auto")
print(json.dumps({"threads": m.threads, "cpu": cpu_id()}))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_thread_tuning_counts_the_cores_this_process_may_use(tmp_path, assets):
    r = subprocess.run([sys.executable, "-c", AFFINITY, str(TINY_MODEL)], capture_output=True,
                       text=True, env={**os.environ, "EDGE_CACHE_DIR": str(tmp_path)}, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["threads"] == 1 and got["cpu"].endswith("/1")


def test_validate_runs_every_start_check_and_lists_every_problem(tmp_path, assets):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "web: {bind: '0.0.0.0:8080'}\n"
        "outputs:\n"
        "  - snapshot: {dir: /proc/nope/snaps}\n"
        f"  - mqtt: {{host: 127.0.0.1, username: u, password_file: {tmp_path / 'no-pw'}}}\n"
        "postprocess:\n  - hysteresis: {enter: 0.5, labels: [catt]}\n"
    )
    env = {"EDGE_MODEL_DIR": str(MODELS)}
    r = run_edge("config", "validate", bad, env={**env})
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    wanted = ["'catt' is not a label", "needs a token", "cannot create directory /proc/nope",
              "cannot read " + str(tmp_path / "no-pw")]
    assert all(any(w in ln for ln in lines) for w in wanted), r.stderr
    assert all(ln.startswith(f"edge: error: {bad}") for ln in lines)
    # and `edge run` refuses the same file (here at its first problem)
    r = run_edge("run", "--config", bad, "--model", TINY_MODEL, "--max-frames", "1",
                 env={**env, "EDGE_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 2 and "edge: error:" in r.stderr


def test_run_with_auto_and_no_camera_waits_instead_of_exiting(tmp_path, assets):
    if os.path.exists("/dev/video0"):
        pytest.skip("this machine has a camera")
    cfg = tmp_path / "edge.yaml"
    cfg.write_text("web: {enabled: false}\nsource: {kind: auto, backoff_max_s: 0.5}\n")
    r = run_edge("run", "--config", cfg, "--model", TINY_MODEL, "--duration", "3",
                 env={"EDGE_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr  # ran its 3 s, waiting for a camera
    assert "no camera found" in r.stderr  # said, and retried until the run's end


def test_demo_finds_its_photos_from_any_working_directory(tmp_path, assets):
    env = {k: v for k, v in os.environ.items() if k != "EDGE_ASSETS"}
    env["EDGE_CACHE_DIR"] = str(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "edge", "run", "--demo", "--model", str(TINY_MODEL),
         "--max-frames", "3", "--no-drop", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert len([ln for ln in r.stdout.splitlines() if '"result"' in ln]) == 3


def test_the_demo_pan_slides_over_the_scene_without_a_seam(tmp_path, assets):
    import cv2
    import numpy as np

    from edge.demo import make_clip

    clip = make_clip(tmp_path / "pan.avi", MODELS.parent / "images", names=("cat.bmp",),
                     frames_per_image=12, pan=True)
    cap = cv2.VideoCapture(str(clip))
    frames = []
    while (got := cap.read())[0]:
        frames.append(got[1].astype(np.int16))
    assert len(frames) == 12
    for a, b in zip(frames, frames[1:], strict=False):
        assert np.abs(b[:, :-2] - a[:, 2:]).mean() < 6  # the same scene, 2 px further on
        # what comes in at the right edge is new scene, not what left at the left edge
        assert np.abs(b[:, -2:] - a[:, :2]).mean() > 10


HOSTILE = {
    "alias bomb": "a: &a [x, x, x, x, x, x, x, x, x]\n"
                  + "".join(f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
                            for p, c in zip("abcdefgh", "bcdefghi", strict=True)),
    "recursive alias": "source: {device: &x [*x]}\n",
    "inf": "source: {backoff_max_s: .inf}\n",
    "tiny max_fps": "inference: {max_fps: 1e-300}\n",
    "too large": "device: x\n" + "# padding\n" * 200_000,
}


def test_a_hostile_reload_is_rejected_and_the_loop_keeps_running(tiny, tmp_path, demo_clip,
                                                                 caplog):
    path = tmp_path / "edge.yaml"
    good = (f"web: {{enabled: false}}\nservice: {{stats_every_s: 0}}\noutputs: []\n"
            f"source: {{kind: opencv, device: '{demo_clip}', loop: true}}\n")
    path.write_text(good)
    pipe = Pipeline(config.load(path), tiny, checks=app.start_checks)
    runner = threading.Thread(target=pipe.run, kwargs={"config_path": str(path)}, daemon=True)
    caplog.set_level(logging.ERROR, logger="edge.pipeline")
    runner.start()
    try:
        assert wait_for(lambda: pipe.stats.classified > 0, 30)
        for i, (what, text) in enumerate(HOSTILE.items(), 1):
            path.write_text(text)
            pipe.reload_event.set()
            assert wait_for(lambda i=i: caplog.text.count("reload rejected") >= i, 30), what
            before = pipe.stats.classified
            assert wait_for(lambda b=before: pipe.stats.classified > b + 5, 30), what
        assert runner.is_alive() and pipe.cfg.source.device == str(demo_clip)
    finally:
        pipe.stop_event.set()
        runner.join(20)
