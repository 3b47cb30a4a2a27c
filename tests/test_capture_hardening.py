"""Capture under faults (issue 20): the supervisor survives failed thread starts; file sources
that cannot be read end `edge run` with a clear error and exit 2; live sources keep retrying."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import TINY_MODEL
from helpers import REPO, wait_for
from test_capture import MODEL_SIZE, collect, fast

from edge.capture.runner import CaptureThread, LatestFrame
from edge.capture.spec import open_source
from edge.stats import Stats


def test_supervisor_survives_failed_reader_thread_starts(images, monkeypatch):
    """At a thread limit Thread.start raises RuntimeError("can't start new thread"); the
    supervisor used to die of it and the state stayed 'reconnecting' for good."""
    real_start = threading.Thread.start
    failures = {"left": 3}

    def start(self):
        if self.name.endswith("-reader") and failures["left"] > 0:
            failures["left"] -= 1
            raise RuntimeError("can't start new thread")
        return real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    cfg = fast(kind="files", path=str(images / "cat.bmp"), loop=True, realtime=True, fps=50)
    stats = Stats()
    slot = LatestFrame(stats)
    cap = CaptureThread(lambda: open_source(cfg, MODEL_SIZE), slot, stats, cfg).start()
    try:
        assert wait_for(lambda: "can't start new thread" in (cap.error or ""), 5)
        assert wait_for(lambda: cap.state == "running", 10), (cap.state, cap.error)
        assert failures["left"] == 0 and cap.is_alive()
        assert len(collect(slot, 3)) == 3  # frames flow again
    finally:
        cap.stop()


# ------------------------------------------------------------------ edge run on bad files


@pytest.fixture(scope="module")
def quiet_cfg(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "edge.yaml"
    p.write_text("web: {enabled: false}\nmodel: {threads: 1}\n")
    return p


def run_on(source, cfg: Path) -> subprocess.CompletedProcess:
    """`edge run` on SOURCE; stderr decoded leniently: OpenCV's AVI parser prints raw bytes
    of a truncated file ("Unexpected element. Expected: LIST. Got: \\xfb\\x7f")."""
    r = subprocess.run(
        [sys.executable, "-m", "edge", "run", "--config", str(cfg), "--source", str(source),
         "--model", str(TINY_MODEL), "--no-drop"], capture_output=True, timeout=60, cwd=REPO)
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(errors="replace"),
                                       r.stderr.decode(errors="replace"))


def test_folder_of_junk_or_mixed_junk_ends_run_with_exit_2(tmp_path, images, quiet_cfg):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.jpg").write_bytes(b"not a jpeg")
    (junk / "b.png").write_bytes(os.urandom(500))
    r = run_on(junk, quiet_cfg)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == (
        f"edge: error: source failed: {junk / 'a.jpg'}: cannot read this file as an image")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(images / "cat.bmp", mixed / "a.bmp")
    (mixed / "b.jpg").write_bytes(b"garbage")
    r = run_on(mixed, quiet_cfg)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].endswith("b.jpg: cannot read this file as an image")
    (mixed / "b.jpg").unlink()
    assert run_on(mixed, quiet_cfg).returncode == 0  # a readable folder still ends with 0


def test_corrupt_videos_end_run_with_exit_2(tmp_path, demo_clip, quiet_cfg):
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(b"this is not a video, only text named like one\n" * 400)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(demo_clip.read_bytes()[:3000])  # the header, no frame
    for video in (noise, cut):
        r = run_on(video, quiet_cfg)
        assert r.returncode == 2, (video, r.stderr[-2000:])
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith(f"edge: error: source failed: {video}: "), last
        assert "cannot open" in last or "no frame could be read" in last


def test_missing_video_or_empty_glob_is_an_error_at_start(tmp_path, quiet_cfg):
    r = run_on(tmp_path / "typo.mp4", quiet_cfg)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith(
        f"edge: error: source.device {tmp_path / 'typo.mp4'}: no such video file")
    r = run_on(str(tmp_path / "*.jpg"), quiet_cfg)
    assert r.returncode == 2
    assert f"edge: error: source.path {tmp_path / '*.jpg'}: matches no files" in r.stderr
