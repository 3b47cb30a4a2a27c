"""Live retuning: SIGHUP swaps the chain between two frames without touching the camera."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import cv2
from conftest import DEFAULT_MODEL, IMAGES, QAT_MODEL, TINY_MODEL
from helpers import REPO, wait_for

from edge import config
from edge.capture.base import Frame
from edge.model import load_model
from edge.pipeline import Pipeline

STRICT = """
web: {enabled: false}
model: {threads: 1}
service: {stats_every_s: 0}
source: {loop: true}
postprocess:
  - hysteresis: {enter: 1.0, exit: 0.99, min_frames: 1}
"""
LOOSE = STRICT.replace("{enter: 1.0, exit: 0.99, min_frames: 1}",
                       "{enter: 0.2, exit: 0.1, min_frames: 1}")
BROKEN = STRICT.replace("min_frames: 1", "min_frame: 1")


class Reader:
    """Collects a subprocess's stdout JSON lines and stderr lines in background threads."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[dict] = []
        self.log: list[str] = []
        self.threads = [
            threading.Thread(target=self._out, args=(proc.stdout,), daemon=True),
            threading.Thread(target=self._err, args=(proc.stderr,), daemon=True),
        ]
        for t in self.threads:
            t.start()

    def _out(self, f) -> None:
        for line in f:
            self.lines.append(json.loads(line))

    def _err(self, f) -> None:
        for line in f:
            self.log.append(line.rstrip())

    def wait_for(self, pred, timeout: float = 20.0) -> bool:
        return wait_for(pred, timeout, every=0.05)

    def events(self) -> list[dict]:
        return [x["event"] for x in self.lines if "event" in x]

    def seqs(self) -> list[int]:
        return [x["result"]["seq"] for x in self.lines if "result" in x]


def start(cfg, clip, tmp_path) -> tuple[subprocess.Popen, Reader]:
    """`edge run --json` on the clip with the tiny model, its output collected."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(cfg), "--source", str(clip),
         "--model", str(TINY_MODEL), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "EDGE_CACHE_DIR": str(tmp_path)},
    )
    return proc, Reader(proc)


def test_sighup_retunes_without_restarting_capture(tmp_path, demo_clip):
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(STRICT)
    proc, r = start(cfg, demo_clip, tmp_path)
    try:
        # the clip loops at its own 30 fps, like a camera
        assert r.wait_for(lambda: len(r.seqs()) > 30), r.log
        assert r.events() == []  # nothing reaches an enter threshold of 1.0

        cfg.write_text(LOOSE)
        before = max(r.seqs())
        proc.send_signal(signal.SIGHUP)
        assert r.wait_for(lambda: any("config reloaded" in ln for ln in r.log)), r.log
        assert r.wait_for(lambda: len(r.events()) >= 2), r.log
        first = r.events()[0]
        assert first["type"] == "enter" and first["seq"] > before

        cfg.write_text(BROKEN)
        n_events = len(r.events())
        proc.send_signal(signal.SIGHUP)
        assert r.wait_for(lambda: any("reload rejected" in ln for ln in r.log)), r.log
        rejected = "\n".join(r.log)
        assert f"{cfg}:7:" in rejected and "min_frame" in rejected and "min_frames" in rejected
        # the loose chain keeps running: more events come as the clip cuts between photos
        assert r.wait_for(lambda: len(r.events()) > n_events, timeout=30), r.log
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        for t in r.threads:
            t.join(timeout=5)
    seqs = r.seqs()
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # one capture, never restarted
    assert sum("source running" in ln for ln in r.log) == 1, r.log


def test_watch_config_reloads_on_file_change(tmp_path, demo_clip):
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(STRICT.replace("service: {stats_every_s: 0}",
                                  "service: {stats_every_s: 0, watch_config: true}"))
    proc, r = start(cfg, demo_clip, tmp_path)
    try:
        assert r.wait_for(lambda: len(r.seqs()) > 10), r.log
        assert r.events() == []
        cfg.write_text(LOOSE.replace("service: {stats_every_s: 0}",
                                     "service: {stats_every_s: 0, watch_config: true}"))
        assert r.wait_for(lambda: any("changed: reloading" in ln for ln in r.log)), r.log
        assert r.wait_for(lambda: len(r.events()) >= 1), r.log
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def _frame(seq: int, path) -> Frame:
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return Frame(seq, time.time(), time.monotonic(), rgb)


def test_reload_to_another_model_keeps_state_and_a_bad_output_is_rejected(tmp_path, assets):
    chain = "postprocess:\n  - hysteresis: {enter: 0.5, exit: 0.3, min_frames: 2}\n"
    cfg_file = tmp_path / "edge.yaml"
    cfg_file.write_text(f"model: {{path: '{DEFAULT_MODEL}', threads: 1}}\n{chain}outputs: []\n")
    cfg = config.load(cfg_file)
    pipe = Pipeline(cfg, load_model(DEFAULT_MODEL, threads=1))
    pipe.outbox = pipe.make_outbox(cfg, pipe.model)
    for seq in range(3):
        ((result, events),), _ = pipe.classify(_frame(seq, IMAGES / "cat.bmp"))
    assert result.active == ["Egyptian cat"]

    # an output that cannot be opened: rejected before anything is swapped
    cfg_file.write_text(cfg_file.read_text().replace(
        "outputs: []", "outputs:\n  - jsonl: {path: /proc/nope/events.jsonl}"))
    outbox = pipe.outbox
    assert pipe.reload(str(cfg_file)) is False
    assert pipe.outbox is outbox and pipe.cfg is cfg

    # another model with the same labels: the active label carries over, then exits
    cfg_file.write_text(f"model: {{path: '{QAT_MODEL}', threads: 1}}\n{chain}outputs: []\n")
    assert pipe.reload(str(cfg_file)) is True
    assert pipe.model.name == "mobilenet_v2_1.0_224_quant"
    ((result, events),), _ = pipe.classify(_frame(3, IMAGES / "cat.bmp"))
    assert result.active == ["Egyptian cat"] and events == []  # still in: no second enter
    ((result, events),), _ = pipe.classify(_frame(4, IMAGES / "bird.bmp"))
    assert [(e.type, e.label) for e in events] == [("exit", "Egyptian cat")]
    pipe.outbox.close()
