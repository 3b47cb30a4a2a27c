"""Outbox and file sinks on real frames from the asset photos: never blocking, budgets, no
torn JSON lines after kill -9, clips readable by OpenCV."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import IMAGES, REPO

from edge.capture.base import Frame
from edge.config import parse, spec_items
from edge.errors import ConfigError
from edge.events import Event, Result
from edge.registry import Registry
from edge.sinks import SINKS
from edge.sinks.base import EventSinkParams, Sink
from edge.sinks.outbox import Outbox

PHOTOS = ("cat.bmp", "bird.bmp", "grace_hopper.bmp", "parrot.jpg", "cat_720p.jpg")


def photo(name: str) -> np.ndarray:
    img = cv2.imread(str(IMAGES / name))
    assert img is not None, name
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def make_frame(seq: int, full: np.ndarray, ts: float | None = None, mono: float | None = None):
    """A frame as the capture thread makes it: a small image to classify, the full one kept."""
    small = cv2.resize(full, (224, 224), interpolation=cv2.INTER_AREA)
    now = time.time() if ts is None else ts
    return Frame(seq, now, time.monotonic() if mono is None else mono, small, full)


def make_event(kind: str, label: str, frame: Frame, roi: str | None = None, score=0.9):
    return Event(kind, label, score, roi, frame.seq, frame.ts)


def make_result(frame: Frame, top: list[tuple[str, float]], roi: str | None = None) -> Result:
    return Result(frame.seq, frame.ts, roi, top, [top[0][0]] if top else [])


def wait_for(cond, timeout: float = 10.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def photos(assets) -> list[np.ndarray]:
    return [photo(n) for n in PHOTOS]


# ------------------------------------------------------------------------- never blocking

class BlockParams(EventSinkParams):
    pass


class BlockSink(Sink):
    """A sink whose I/O never returns (a hung NFS mount, a dead TCP peer)."""

    Params = BlockParams

    def __init__(self, params, ctx) -> None:
        super().__init__(params, ctx)
        self.release = threading.Event()
        self.entered = threading.Event()

    def handle(self, item) -> None:
        self.entered.set()
        self.release.wait()


BLOCKING = Registry("sink")
BLOCKING.register("block")(BlockSink)


def test_publish_stays_fast_and_counts_drops_when_a_sink_blocks_forever(photos):
    frame = make_frame(1, photos[0])
    res = make_result(frame, [("cat", 0.9)])
    events = [make_event("enter", "cat", frame)]
    n = 5000
    # what a publish costs beside a stuck sink (vs none) is a wall-clock figure:
    # benchmarks/sinks.py measures it ("publish us p50 / p99"); here, that n publishes return
    ob = Outbox([("block", {"queue": 16})], "dev", "m", registry=BLOCKING)
    ob.start()
    sink = ob.workers[0].sink
    ob.publish(res, events, frame)
    assert sink.entered.wait(10)  # the worker took the first item and is stuck with it
    for _ in range(n - 1):
        ob.publish(res, events, frame)
    s = ob.sink_stats()["block"]
    # the first item is stuck inside handle(), the queue is full, every other one was dropped
    assert s["capacity"] == 16 and s["queued"] == 16
    assert s["dropped"] == n - 17
    t0 = time.monotonic()
    ob.close(timeout=0.3)
    assert time.monotonic() - t0 < 2.0
    assert ob.sink_stats()["block"]["state"] == "stuck"
    sink.release.set()


def test_frames_without_events_only_reach_per_frame_sinks(tmp_path, photos):
    ob = Outbox(
        [("jsonl", {"path": str(tmp_path / "e.jsonl")}), ("snapshot", {"dir": str(tmp_path)})],
        "dev", "m",
    )
    assert ob._per_frame == []  # nothing to do in the loop for a frame without events
    frame = make_frame(1, photos[0])
    ob.start()
    for _ in range(100):
        ob.publish(make_result(frame, [("cat", 0.2)]), [], frame)
    ob.close()
    assert all(s["sent"] == 0 and s["dropped"] == 0 for s in ob.sink_stats().values())


def test_outputs_from_yaml_build_an_outbox(tmp_path):
    cfg = parse(
        f"""
device: porch
outputs:
  - log: {{every_s: 0}}
  - jsonl: {{path: {tmp_path}/events.jsonl, max_mb: 1, keep: 2}}
  - snapshot: {{dir: {tmp_path}/snaps, on: [enter, exit], overlay: true}}
  - clip: {{dir: {tmp_path}/clips, pre_s: 1}}
  - collect: {{dir: {tmp_path}/collect, low: 0.2, high: 0.5}}
  - webhook: {{url: "http://127.0.0.1:9/hook", retries: 0}}
""",
        "edge.yaml",
    )
    ob = Outbox(spec_items(cfg.outputs), cfg.device, "m")
    assert list(ob.sink_stats()) == ["log", "jsonl", "snapshot", "clip", "collect", "webhook"]
    ob.close()
    with pytest.raises(ConfigError, match=r"edge.yaml:3:.*outputs\[0\].snapshot.max_mbb.*max_mb"):
        parse("outputs:\n  - snapshot:\n      max_mbb: 3\n", "edge.yaml")
    with pytest.raises(ConfigError, match="low .* must not exceed high"):
        parse("outputs:\n  - collect: {low: 0.8, high: 0.2}\n", "edge.yaml")
    with pytest.raises(ConfigError, match="cannot create directory"):
        Outbox([("snapshot", {"dir": "/proc/nope/snaps"})], "dev", "m")


def test_docs_describe_every_sink_option():
    text = (REPO / "docs" / "outputs.md").read_text()
    for name, cls in SINKS.items():
        assert f"### `{name}`" in text, name
        for field in cls.Params.model_fields:
            assert f"`{field}`" in text, f"{name}.{field} is not documented"
    keys = ("type", "label", "score", "roi", "device", "model", "seq", "ts", "snapshot", "clip")
    for key in keys:
        assert f"`{key}`" in text


# ----------------------------------------------------------------------------------- log

def test_log_lines_and_rate_limited_status(capsys, photos):
    ob = Outbox([("log", {"every_s": 60}), ("log", {"format": "json", "every_s": 0})], "d", "m")
    ob.start()
    frame = make_frame(7, photos[0])
    for _ in range(50):
        ob.publish(make_result(frame, [("cat", 0.8), ("dog", 0.1)], "feeder"), [], frame)
    ob.publish(
        make_result(frame, [("cat", 0.8)], "feeder"), [make_event("enter", "cat", frame, "feeder")],
        frame,
    )
    ob.close()
    lines = capsys.readouterr().out.splitlines()
    status = [x for x in lines if x.startswith("status")]
    assert status == ["status roi=feeder seq=7 top: cat 0.80, dog 0.10; active: cat"]
    assert "event enter cat 0.90 roi=feeder seq=7" in lines
    js = [json.loads(x) for x in lines if x.startswith("{")]
    assert js == [{**make_event("enter", "cat", frame, "feeder").to_dict(), "device": "d",
                   "model": "m"}]


# --------------------------------------------------------------------------------- jsonl

def read_lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path} ends in a torn line"
    return [json.loads(x) for x in data.splitlines()]


def test_jsonl_rotation_keeps_n_files_of_whole_lines(tmp_path, photos):
    path = tmp_path / "events.jsonl"
    ob = Outbox([("jsonl", {"path": str(path), "max_mb": 2 / 1024, "keep": 2})], "d", "m")
    ob.start()
    for seq in range(100):
        f = make_frame(seq, photos[0])
        ob.publish(make_result(f, [("cat", 0.9)]), [make_event("enter", "cat", f)], f)
    ob.close()
    files = sorted(tmp_path.iterdir())
    assert [p.name for p in files] == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    assert all(p.stat().st_size <= 2048 for p in files)
    seqs = [e["seq"] for p in (files[2], files[1], files[0]) for e in read_lines(p)]
    assert seqs == list(range(100 - len(seqs), 100))  # newest kept, in order, none missing
    assert ob.sink_stats()["jsonl"]["rotations"] > 2


def test_jsonl_repairs_a_torn_last_line(tmp_path, photos):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"seq": 1}\n{"seq": 2}\n{"type": "ent')  # a power cut mid-line
    ob = Outbox([("jsonl", {"path": str(path)})], "d", "m")
    ob.start()
    f = make_frame(3, photos[0])
    ob.publish(make_result(f, [("cat", 0.9)]), [make_event("enter", "cat", f)], f)
    ob.close()
    assert [e["seq"] for e in read_lines(path)] == [1, 2, 3]
    assert ob.sink_stats()["jsonl"]["repaired_bytes"] == len('{"type": "ent')


WRITER = """
import sys, time
import numpy as np
from edge.capture.base import Frame
from edge.events import Event, Result
from edge.sinks.outbox import Outbox
ob = Outbox([("jsonl", {"path": sys.argv[1], "max_mb": 0.05, "keep": 3, "fsync": "never",
                        "queue": 100000})], "d", "m")
ob.start()
img = np.zeros((8, 8, 3), np.uint8)
seq = 0
while True:
    seq += 1
    f = Frame(seq, time.time(), time.monotonic(), img)
    ob.publish(Result(seq, f.ts, None, [("cat", 0.5)]),
               [Event("enter", "cat with a longer label " * 4, 0.5, "roi", seq, f.ts)], f)
    if seq % 200 == 0:
        time.sleep(0.001)
"""


@pytest.mark.parametrize("delay", [0.6, 1.1])
def test_jsonl_sigkill_mid_write_leaves_every_file_parseable(tmp_path, delay):
    path = tmp_path / "events.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=REPO)
    try:
        wait_for(lambda: path.with_name("events.jsonl.1").exists(), 20, "a rotation")
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    files = sorted(tmp_path.glob("events.jsonl*"))
    assert 2 <= len(files) <= 4
    total = 0
    for p in files:
        rows = read_lines(p)
        assert all(r["type"] == "enter" for r in rows)
        total += len(rows)
    assert total > 100


# ------------------------------------------------------------------------------ snapshot

def test_snapshot_paths_files_budget_and_overlay(tmp_path, photos):
    snaps, log = tmp_path / "snaps", tmp_path / "events.jsonl"
    ob = Outbox(
        [
            ("snapshot", {"dir": str(snaps), "max_files": 3, "queue": 50}),
            ("snapshot", {"dir": str(tmp_path / "ov"), "overlay": True, "events": ["exit"]}),
            ("jsonl", {"path": str(log)}),
        ],
        "d", "m",
    )
    ob.start()
    frames = [make_frame(i, photos[i % len(photos)]) for i in range(6)]
    for f in frames:
        ev = make_event("enter", "tabby cat", f, "feeder")
        ob.publish(make_result(f, [("cat", 0.9)]), [ev], f)
    exit_frame = frames[0]
    ob.publish(make_result(exit_frame, [("cat", 0.1)]),
               [make_event("exit", "tabby cat", exit_frame)], exit_frame)
    ob.close()
    events = read_lines(log)
    enters = [e for e in events if e["type"] == "enter"]
    # one JSON shape: the jsonl sink sees the snapshot path the snapshot sink writes
    assert all(Path(e["snapshot"]).parent == snaps for e in enters)
    assert "tabby_cat" in enters[0]["snapshot"] and enters[0]["clip"] is None
    kept = sorted(snaps.glob("*.jpg"))
    assert [str(p) for p in kept] == [e["snapshot"] for e in enters[-3:]]  # oldest pruned
    assert not list(snaps.glob(".*"))  # no temp files left
    for p, f in zip(kept, frames[-3:], strict=True):
        img = cv2.imread(str(p))
        assert img.shape == f.full.shape  # the full-resolution frame, not the model input
    ex = events[-1]
    assert ex["type"] == "exit" and Path(ex["snapshot"]).parent == tmp_path / "ov"
    drawn = cv2.cvtColor(cv2.imread(ex["snapshot"]), cv2.COLOR_BGR2RGB).astype(int)
    h = drawn.shape[0] // 20
    assert np.abs(drawn[:h, :100] - exit_frame.full[:h, :100]).mean() > 20  # the label band
    assert np.abs(drawn[-h:] - exit_frame.full[-h:]).mean() < 6  # the rest is the photo


def test_snapshot_disk_budget_in_bytes(tmp_path, photos):
    budget_mb = 0.15
    ob = Outbox([("snapshot", {"dir": str(tmp_path), "max_mb": budget_mb, "queue": 50})], "d", "m")
    ob.start()
    for i in range(12):
        f = make_frame(i, photos[i % len(photos)])
        ob.publish(make_result(f, [("cat", 0.9)]), [make_event("enter", "cat", f)], f)
    ob.close()
    sizes = [p.stat().st_size for p in tmp_path.glob("*.jpg")]
    s = ob.sink_stats()["snapshot"]
    assert 0 < sum(sizes) <= budget_mb * 1024 * 1024
    assert s["pruned"] == 12 - len(sizes) > 0 and s["sent"] == 12


# ---------------------------------------------------------------------------------- clip

def feed(ob: Outbox, photos, n: int, t0: float, events_at: dict[int, str], fps: float = 30.0):
    """Publish n frames at `fps` of stream time; events_at maps frame index to an event type."""
    for i in range(n):
        ts = t0 + i / fps
        f = make_frame(i, photos[(i // 15) % len(photos)], ts=ts, mono=ts)
        kind = events_at.get(i)
        ob.publish(make_result(f, [("cat", 0.9)]), [make_event(kind, "cat", f)] if kind else [], f)


def test_clip_covers_before_and_after_the_event(tmp_path, photos):
    log = tmp_path / "e.jsonl"
    ob = Outbox(
        [
            ("clip", {"dir": str(tmp_path / "clips"), "pre_s": 1, "post_s": 1, "fps": 10,
                      "width": 320, "queue": 1000}),
            ("jsonl", {"path": str(log)}),
        ],
        "d", "m",
    )
    ob.start()
    # stream time a minute ahead: the idle tick (which ends a clip whose frames stopped
    # coming) must not fire while a slow test machine is still encoding
    feed(ob, photos, 120, time.time() + 60, {45: "enter", 50: "enter"})
    wait_for(lambda: ob.sink_stats()["clip"]["clips"] == 1, 10, "the clip")
    ob.close()
    events = read_lines(log)
    assert events[0]["clip"] == events[1]["clip"]  # a second event extends the same clip
    clips = list((tmp_path / "clips").glob("*.avi"))
    assert [str(c) for c in clips] == [events[0]["clip"]]
    cap = cv2.VideoCapture(str(clips[0]))
    shapes = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        shapes.append(img.shape)
    n = len(shapes)
    assert set(shapes) == {shapes[0]} and shapes[0][1] == 320  # scaled to `width`
    # 1 s before frame 45 and 1 s after frame 50 at 10 fps: about 10 + 2 + 10 frames
    assert 19 <= n <= 25, n


def test_clip_memory_and_disk_budgets(tmp_path, photos):
    ob = Outbox(
        [("clip", {"dir": str(tmp_path), "pre_s": 2, "post_s": 0.5, "max_s": 1, "fps": 10,
                   "width": 0, "ring_mb": 0.4, "max_files": 2, "queue": 1000})],
        "d", "m",
    )
    ob.start()
    held = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            held.append(ob.sink_stats()["clip"]["held_bytes"])
            time.sleep(0.005)

    t = threading.Thread(target=watch)
    t.start()
    feed(ob, photos, 300, time.time() + 60, {40: "enter", 100: "enter", 160: "enter",
                                             220: "enter"})
    wait_for(lambda: ob.sink_stats()["clip"]["queued"] == 0, 20, "the queue to drain")
    ob.close()
    stop.set()
    t.join()
    s = ob.sink_stats()["clip"]
    assert max(held) <= 0.4 * 1024 * 1024
    assert s["clips"] == 4 and s["pruned"] == 2
    assert len(list(tmp_path.glob("*.avi"))) == 2


# ------------------------------------------------------------------------------- collect

def test_collect_saves_uncertain_frames_within_budget(tmp_path, photos):
    ob = Outbox(
        [("collect", {"dir": str(tmp_path), "low": 0.3, "high": 0.6, "every_s": 0,
                      "max_files": 3, "queue": 100})],
        "d", "m",
    )
    ob.start()
    scores = [0.1, 0.35, 0.9, 0.5, 0.59, 0.61, 0.45, 0.3]
    for i, s in enumerate(scores):
        f = make_frame(i, photos[i % len(photos)])
        ob.publish(make_result(f, [("cat", s), ("dog", round(1 - s, 2))], "feeder"), [], f)
    ob.close()
    in_band = [i for i, s in enumerate(scores) if 0.3 <= s <= 0.6]
    st = ob.sink_stats()["collect"]
    assert st["sent"] == len(in_band) and st["pruned"] == len(in_band) - 3
    metas = sorted(tmp_path.glob("*.json"))
    assert len(metas) == 3 and len(list(tmp_path.glob("*.jpg"))) == 3
    kept = [json.loads(p.read_text()) for p in metas]
    assert sorted(m["seq"] for m in kept) == in_band[-3:]
    for m in kept:
        assert m["top"][0]["label"] == "cat" and m["roi"] == "feeder" and m["device"] == "d"
        img = cv2.imread(str(tmp_path / m["image"]))
        assert img.shape == photos[m["seq"] % len(photos)].shape


def test_collect_rate_limit_per_roi(tmp_path, photos):
    ob = Outbox([("collect", {"dir": str(tmp_path), "low": 0, "high": 1, "every_s": 60,
                              "labels": ["cat"]})], "d", "m")
    ob.start()
    for i in range(20):
        f = make_frame(i, photos[0])
        for roi in ("a", "b"):
            ob.publish(make_result(f, [("cat", 0.5)], roi), [], f)
        ob.publish(make_result(f, [("dog", 0.5)], "c"), [], f)
    ob.close()
    assert ob.sink_stats()["collect"]["sent"] == 2


def test_close_flushes_queued_items(tmp_path, photos):
    path = tmp_path / "e.jsonl"
    ob = Outbox([("jsonl", {"path": str(path), "fsync": "always"})], "d", "m")
    f = make_frame(1, photos[0])
    for _ in range(200):
        ob.publish(make_result(f, [("cat", 0.9)]), [make_event("enter", "cat", f)], f)
    ob.start()
    ob.close(timeout=10)
    assert len(read_lines(path)) == 200
    assert os.path.getsize(path) > 0


def test_two_outputs_cannot_share_a_directory(tmp_path):
    from edge.errors import ConfigError

    specs = [("snapshot", {"dir": str(tmp_path / "s")}), ("clip", {"dir": str(tmp_path / "s")})]
    with pytest.raises(ConfigError, match="clip and snapshot both write into"):
        Outbox(specs, "dev", "model")
