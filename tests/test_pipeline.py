"""`edge run`'s loop on real videos and photo folders: flow, drops, max_fps, --no-drop."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import DEFAULT_MODEL, IMAGES, TINY_MODEL
from helpers import avi_jpegs, run_edge

from edge import config
from edge.model import load_model
from edge.pipeline import Pipeline


def make_cfg(text: str = "", **source):
    cfg = config.parse(text)
    return cfg.model_copy(update={"source": cfg.source.model_copy(update=source)})


@pytest.fixture(scope="module")
def tiny(assets):
    return load_model(TINY_MODEL, threads=1)


@pytest.mark.arm64
def test_frames_flow_from_a_video(tiny, demo_clip):
    cfg = make_cfg(kind="opencv", device=str(demo_clip), realtime=False)
    pipe = Pipeline(cfg, tiny, no_drop=True)
    assert pipe.run() == 0
    s = pipe.stats.summary()
    assert s["frames_classified"] == s["frames_captured"] == 60  # 6 stills x 10 frames
    assert s["frames_dropped"] == 0
    assert s["invoke_ms_p50"] > 0 and s["latency_ms_p99"] >= s["invoke_ms_p50"]


def test_slow_inference_drops_frames_and_counts_them(tiny, tmp_path):
    # a camera-like source at 200 fps, classified at most 20 times a second
    cfg = make_cfg("inference: {max_fps: 20}", kind="files", path=str(IMAGES), loop=True,
                   fps=200, realtime=True)
    pipe = Pipeline(cfg, tiny)
    t0 = time.monotonic()
    pipe.run(duration=1.5)
    elapsed = time.monotonic() - t0
    s = pipe.stats.summary()
    assert s["frames_dropped"] > 20  # far more frames came than 20 per second could take
    # every frame is classified or dropped, but for at most two at shutdown: the one left in
    # the slot and one the capture thread had in hand when the slot closed
    assert s["frames_captured"] - s["frames_classified"] - s["frames_dropped"] in (0, 1, 2)
    # max_fps is respected: 20/s over the run, give or take a frame or two of edges
    assert s["frames_classified"] <= 20 * elapsed + 2
    assert s["frames_classified"] >= 20 * 1.5 * 0.7


def test_max_fps_sleeps_instead_of_spinning(tiny):
    cfg = make_cfg("inference: {max_fps: 5}", kind="files", path=str(IMAGES), loop=True,
                   fps=100, realtime=True)
    pipe = Pipeline(cfg, tiny)
    cpu0 = time.process_time()
    pipe.run(duration=1.2)
    cpu = time.process_time() - cpu0
    assert 4 <= pipe.stats.classified <= 8
    assert cpu < 0.8, f"the loop burned {cpu:.2f} CPU-s while waiting"


def test_no_drop_results_equal_classify(tmp_path, demo_clip):
    """Every frame of the clip, in order, scored exactly as `edge classify` scores it."""
    frames = tmp_path / "frames"
    frames.mkdir()
    jpegs = avi_jpegs(demo_clip)  # the clip's frames as the JPEG files they are inside the AVI
    n = len(jpegs)
    for i in range(0, n, 5):  # a sample of the frames keeps the test quick
        (frames / f"f{i:04d}.jpg").write_bytes(jpegs[i])
    cfg = _cfg(tmp_path, "model: {threads: 1}\nweb: {enabled: false}\npostprocess: []\n")
    r = run_edge("run", "--source", demo_clip, "--model", DEFAULT_MODEL, "--no-drop", "--json",
                 "--config", cfg)
    assert r.returncode == 0, r.stderr
    results = [json.loads(ln)["result"] for ln in r.stdout.splitlines() if '"result"' in ln]
    assert [x["seq"] for x in results] == list(range(n))
    files = sorted(frames.iterdir())
    c = run_edge("classify", *files, "--model", DEFAULT_MODEL, "--json", "--threads", "1")
    assert c.returncode == 0, c.stderr
    for line, file in zip(c.stdout.splitlines(), files, strict=True):
        want = [t for t in json.loads(line)["top"] if t["score"] > 0]  # the chain omits zeros
        got = results[int(file.stem[1:])]["top"]
        assert [t["label"] for t in got] == [t["label"] for t in want]
        assert [t["score"] for t in got] == pytest.approx([t["score"] for t in want], abs=1e-4)


def _cfg(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "edge.yaml"
    p.write_text(text)
    return p


@pytest.mark.arm64
def test_edge_run_prints_label_changes(tmp_path, assets):
    r = run_edge("run", "--source", IMAGES, "--model", TINY_MODEL, "--no-drop",
                 "--config", _cfg(tmp_path, "web: {enabled: false}\nmodel: {threads: 1}\n"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    # one format with the log output's, labels with commas quoted so a line splits again
    assert any(ln.startswith("top ") and ln.endswith(" seq=0") for ln in lines)
    assert any(ln.startswith("top chickadee ") for ln in lines)
    assert all(ln.startswith(("top ", "event ", "status")) for ln in lines), lines
    assert "stats: capture" in r.stderr


def test_text_lines_quote_labels_that_hold_commas():
    from edge.events import Result, status_line, top_line

    r = Result(3, 0.0, "feeder", [("tabby, tabby cat", 0.5), ("tiger cat", 0.25)],
               active=["tabby, tabby cat"])
    assert top_line(r) == 'top "tabby, tabby cat" 0.50 roi=feeder seq=3'
    assert status_line(r) == ('status roi=feeder seq=3 top: "tabby, tabby cat" 0.50, '
                              'tiger cat 0.25; active: "tabby, tabby cat"')


def test_events_carry_the_snapshot_path_every_sink_sees(tiny, demo_clip, tmp_path):
    cfg = config.parse(f"""
postprocess:
  - hysteresis: {{enter: 0.3, exit: 0.1, min_frames: 1}}
outputs:
  - snapshot: {{dir: "{tmp_path}/snaps", events: [enter]}}
  - jsonl: {{path: "{tmp_path}/events.jsonl"}}
""")
    cfg = cfg.model_copy(update={"source": cfg.source.model_copy(
        update={"kind": "opencv", "device": str(demo_clip), "realtime": False})})
    pipe = Pipeline(cfg, tiny, no_drop=True)
    pipe.run()
    enters = [e for _, e in pipe.live.events if e["type"] == "enter"]
    assert enters and all(e["snapshot"] for e in enters)
    written = [json.loads(ln) for ln in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["snapshot"] for e in written if e["type"] == "enter"] == [
        e["snapshot"] for e in enters]
    for e in enters:
        img = cv2.imread(e["snapshot"])
        assert img is not None and img.shape == (480, 640, 3)  # the full-resolution frame


@pytest.mark.arm64
def test_each_roi_is_classified_on_its_own(tmp_path, assets):
    cat, bird = cv2.imread(str(IMAGES / "cat.bmp")), cv2.imread(str(IMAGES / "bird.bmp"))
    h = min(cat.shape[0], bird.shape[0])
    side = [cv2.resize(x, (round(x.shape[1] * h / x.shape[0]), h)) for x in (cat, bird)]
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "both.png"), np.hstack(side))
    split = side[0].shape[1] / (side[0].shape[1] + side[1].shape[1])
    cfg = config.parse(f"""
rois:
  - {{name: left, box: [0, 0, {split:.4f}, 1]}}
  - {{name: right, box: [{split:.4f}, 0, 1, 1]}}
postprocess:
  - hysteresis: {{enter: 0.5, min_frames: 2}}
outputs: []
""")
    cfg = cfg.model_copy(update={"source": cfg.source.model_copy(
        update={"kind": "files", "path": str(frames), "loop": True, "realtime": False})})
    model = load_model(DEFAULT_MODEL, threads=1)
    pipe = Pipeline(cfg, model, no_drop=True)
    pipe.run(max_frames=3)
    left, right = pipe.live.results["left"], pipe.live.results["right"]
    assert left.top[0][0] == "Egyptian cat" and right.top[0][0] == "chickadee"
    assert left.active == ["Egyptian cat"] and right.active == ["chickadee"]  # own chain state
    events = {(e["roi"], e["label"]) for _, e in pipe.live.events}
    assert events == {("left", "Egyptian cat"), ("right", "chickadee")}


def test_tensors_made_by_the_capture_thread_are_used_only_if_current(tiny, tmp_path):
    """The loop uses the tensors the capture thread made, unless a reload replaced the plan."""
    from edge.capture.base import Frame
    from edge.preprocess import Prepared

    cat = cv2.cvtColor(cv2.imread(str(IMAGES / "cat.bmp")), cv2.COLOR_BGR2RGB)
    bird = cv2.cvtColor(cv2.imread(str(IMAGES / "bird.bmp")), cv2.COLOR_BGR2RGB)
    path = _cfg(tmp_path, f"postprocess: []\nsource: {{kind: files, path: '{IMAGES}'}}\n")
    pipe = Pipeline(config.load(path), tiny)
    by_rgb = {name: tiny.top(tiny.classify(img), 1)[0] for name, img in (("cat", cat),
                                                                           ("bird", bird))}
    assert by_rgb["cat"][0] != by_rgb["bird"][0]

    frame = Frame(0, 0.0, 0.0, cat)
    frame.prepared = pipe.plan.prepare(frame)
    assert frame.prepared.plan is pipe.plan and frame.prepared.tensors[0].shape == (128, 128, 3)
    ((result, _),), _ = pipe.classify(frame)
    assert result.top[0] == pytest.approx(by_rgb["cat"])  # same as resizing in the loop

    frame.prepared = Prepared(pipe.plan, (tiny.input(bird),))  # the prepared tensor is what runs
    ((result, _),), _ = pipe.classify(frame)
    assert result.top[0] == pytest.approx(by_rgb["bird"])

    old = pipe.plan
    assert pipe.reload(path)  # a new chain and a new plan: tensors made before are not trusted
    assert pipe.plan is not old
    frame.prepared = Prepared(old, (tiny.input(bird),))
    ((result, _),), _ = pipe.classify(frame)
    assert result.top[0] == pytest.approx(by_rgb["cat"])


@pytest.mark.parametrize("cores, threads, overlap", [(1, 1, False), (2, 2, True), (4, 1, True)])
def test_capture_decodes_beside_the_invoke_only_with_another_core(assets, monkeypatch, cores,
                                                                  threads, overlap):
    """Even beside interpreter threads on every core: XNNPACK's workers share out the tiles
    of one the decode preempts (benchmarks/pipeline.py --auto: faster than between)."""
    import edge.pipeline

    monkeypatch.setattr(edge.pipeline, "usable_cores", lambda: cores)
    cfg = make_cfg(kind="files", path=str(IMAGES), realtime=False)
    pipe = Pipeline(cfg, load_model(TINY_MODEL, threads=threads), no_drop=True)
    pipe.run(max_frames=3)
    assert pipe.capture.overlap is overlap
    assert (pipe.capture._lead() > 0) is overlap  # no lead: read when the loop asks
    assert pipe.stats.classified == 3
