"""The Pi camera's full-resolution `main` stream is copied only when something needs it
(edge/fullres.py): a region, an output that stores images, a preview viewer. Run on the
picamera2 stand-in (tests/fake_picamera2.py), whose `make_array` counts copies."""

from __future__ import annotations

import sys
import threading
import urllib.request

import fake_picamera2
import pytest
from conftest import TINY_MODEL
from helpers import wait_for

from edge import config
from edge.fullres import config_needs_full
from edge.model import load_model
from edge.pipeline import Pipeline
from edge.web import start_web


@pytest.fixture
def picam(monkeypatch, images):
    mod = fake_picamera2.make_module(
        [images / n for n in ("cat.bmp", "bird.bmp", "grace_hopper.bmp")], "VC4", None)
    monkeypatch.setitem(sys.modules, "picamera2", mod)
    mod.fake_arrays = []  # the stream of every make_array call, in order
    real = fake_picamera2.CompletedRequest.make_array

    def make_array(self, name):
        mod.fake_arrays.append(name)
        return real(self, name)

    monkeypatch.setattr(fake_picamera2.CompletedRequest, "make_array", make_array)
    return mod


@pytest.fixture(scope="module")
def tiny(assets):
    return load_model(TINY_MODEL, threads=1)


def pi_cfg(text: str = ""):
    return config.parse("source: {kind: picamera2, stall_timeout_s: 2, fps: 60}\n"
                        "web: {enabled: false, bind: '127.0.0.1:0'}\noutputs: []\n" + text)


def test_what_needs_the_full_image(tmp_path):
    assert not config_needs_full(config.parse(""))  # the default: a log output, no region
    assert config_needs_full(config.parse("rois: [{name: a, box: [0, 0, 0.5, 0.5]}]\n"))
    for out in ("snapshot", "collect", "clip"):
        cfg = config.parse(f"outputs: [{{{out}: {{dir: {tmp_path / out}}}}}]\n")
        assert config_needs_full(cfg), out
    assert not config_needs_full(config.parse(f"outputs: [{{jsonl: {{path: {tmp_path}/e}}}}]\n"))


def run(pipe: Pipeline, frames: int) -> list:
    seen = []
    pipe.printer = lambda results, events: seen.append(pipe.live.frame)
    pipe.run(max_frames=frames)
    return seen


def test_lores_only_when_nothing_needs_main(picam, tiny):
    pipe = Pipeline(pi_cfg(), tiny)
    frames = run(pipe, 8)
    assert len(frames) == 8 and all(f.full is None for f in frames)
    assert all(f.rgb.shape == (128, 128, 3) and f.image is f.rgb for f in frames)
    assert set(picam.fake_arrays) == {"lores"} and len(picam.fake_arrays) >= 8  # no main copy


def test_a_region_copies_main_and_crops_it(picam, tiny):
    pipe = Pipeline(pi_cfg("rois: [{name: left, box: [0, 0, 0.5, 1]}]\n"), tiny)
    frames = run(pipe, 8)
    assert all(f.full is not None and f.full.shape == (480, 640, 3) for f in frames)
    arrays = picam.fake_arrays
    assert arrays.count("main") == arrays.count("lores") >= 8


def test_a_reload_that_adds_a_region_turns_main_on(picam, tiny, tmp_path):
    pipe = Pipeline(pi_cfg(), tiny)
    assert not pipe.full_demand()
    path = tmp_path / "edge.yaml"
    path.write_text("source: {kind: picamera2, stall_timeout_s: 2, fps: 60}\n"
                    "web: {enabled: false}\noutputs: []\n"
                    "rois: [{name: left, box: [0, 0, 0.5, 1]}]\n")
    assert pipe.reload(str(path)) and pipe.full_demand()


def test_a_preview_viewer_turns_main_on_while_watching(picam, tiny):
    cfg = pi_cfg()
    cfg = cfg.model_copy(update={"web": cfg.web.model_copy(update={"enabled": True})})
    pipe = Pipeline(cfg, tiny)
    web = start_web(cfg.web, pipe)
    loop = threading.Thread(target=pipe.run, kwargs={"duration": 30}, daemon=True)
    try:
        loop.start()
        assert wait_for(lambda: pipe.stats.classified > 3, 20)
        assert pipe.live.frame.full is None and not pipe.full_demand()
        with urllib.request.urlopen(web.url + "stream.mjpg", timeout=15) as r:
            r.readline()  # the stream is open: a viewer
            assert pipe.full_demand()
            assert wait_for(lambda: pipe.live.frame.full is not None, 10)
            assert pipe.live.frame.image.shape == (480, 640, 3)  # what the preview shows
        assert wait_for(lambda: not pipe.full_demand(), 20)
        seq = pipe.live.frame.seq
        assert wait_for(lambda: pipe.live.frame.seq > seq + 2, 10)
        assert pipe.live.frame.full is None
    finally:
        pipe.stop_event.set()
        loop.join(10)
        web.stop()


# ------------------------------------------------------------------ MJPG files and cameras


def mjpg_cfg(clip, text: str = ""):
    return config.parse(f"source: {{kind: opencv, device: '{clip}', realtime: false}}\n"
                        "web: {enabled: false}\noutputs: []\n" + text)


@pytest.mark.parametrize("text, shape", [
    ("", (240, 320, 3)),  # nothing needs the full image: libjpeg decodes at 1/2
    ("rois: [{name: all, box: [0, 0, 1, 1]}]\n", (480, 640, 3)),  # a region is cut from full
    ("model: {resize: linear}\n", (480, 640, 3)),  # not the box resize: its input is full
])
def test_mjpg_frames_decode_at_the_size_the_pipeline_needs(demo_clip, assets, text, shape):
    cfg = mjpg_cfg(demo_clip, text)
    pipe = Pipeline(cfg, load_model(TINY_MODEL, threads=1, resize=cfg.model.resize),
                    no_drop=True)
    frames = run(pipe, 6)
    assert [f.rgb.shape for f in frames] == [shape] * 6 and all(f.full is None for f in frames)


def test_the_scaled_decode_keeps_the_labels_of_the_full_one(demo_clip, assets):
    """Decoding at 1/2 is the box resize's first halving done in the DCT: the same top-1 on
    the clip's frames as a whole-frame region (full decode, then box)."""
    def top1(text: str) -> list[str]:
        pipe = Pipeline(mjpg_cfg(demo_clip, text), load_model(TINY_MODEL, threads=1),
                        no_drop=True)
        got = []
        pipe.printer = lambda results, events: got.append(results[0].top[0][0])
        pipe.run(max_frames=60)
        return got

    scaled, full = top1(""), top1("rois: [{name: all, box: [0, 0, 1, 1]}]\n")
    assert len(scaled) == len(full) == 60
    assert sum(a == b for a, b in zip(scaled, full, strict=True)) >= 57
