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
