"""The motion gate (edge/motion.py): unchanged frames are not classified, a change is, and
the maximum skip time holds; off by default. Real photos, a real MJPG clip, the real loop."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import IMAGES, TINY_MODEL
from helpers import rgb

from edge import config
from edge.model import load_model
from edge.motion import MotionGate, difference, gate_for, thumbnail
from edge.pipeline import Pipeline


def noisy(img: np.ndarray, seed: int, sigma: float = 3.0) -> np.ndarray:
    """The same scene as a camera sees it twice: sensor noise, then JPEG."""
    rng = np.random.default_rng(seed)
    out = np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)
    return cv2.imdecode(cv2.imencode(".jpg", out)[1], cv2.IMREAD_COLOR)  # same channel order


@pytest.fixture(scope="module")
def photos(assets):
    return {n: cv2.resize(rgb(IMAGES / f"{n}.bmp"), (640, 480)) for n in ("cat", "bird")}


def test_noise_is_not_motion_but_another_scene_is(photos):
    cat, bird = photos["cat"], photos["bird"]
    assert thumbnail(cat).shape[:2] == (30, 40)
    same = difference(thumbnail(noisy(cat, 1)), thumbnail(noisy(cat, 2)))
    other = difference(thumbnail(cat), thumbnail(bird))
    assert same < 0.005 < 0.05 < other
    gate = MotionGate(threshold=0.02, max_skip_s=5.0)
    assert gate.wants(noisy(cat, 1), 0.0)  # the first frame is always classified
    assert not gate.wants(noisy(cat, 2), 0.1)
    assert not gate.wants(noisy(cat, 3), 4.9)
    assert gate.wants(noisy(cat, 4), 5.0)  # the maximum skip time
    assert not gate.wants(noisy(cat, 5), 5.1)
    assert gate.wants(bird, 5.2)  # the scene changed
    assert not gate.wants(noisy(bird, 6), 5.3)  # ... and the new scene is the reference


def test_a_small_moving_object_counts(photos):
    """Something a quarter of the frame wide entering a still scene is motion at 0.02."""
    cat = photos["cat"]
    gate = MotionGate(threshold=0.02, max_skip_s=60.0)
    assert gate.wants(cat, 0.0)
    moved = cat.copy()
    moved[160:320, 240:400] = photos["bird"][160:320, 240:400]
    assert gate.wants(moved, 0.1)


def test_off_by_default():
    cfg = config.parse("")
    assert cfg.inference.motion_threshold == 0 and gate_for(cfg.inference) is None
    on = config.parse("inference: {motion_threshold: 0.02, motion_max_skip_s: 3}\n")
    assert gate_for(on.inference) == MotionGate(0.02, 3.0)
    with pytest.raises(config.ConfigError, match="motion_max_skip_s"):
        config.parse("inference: {motion_max_skip_s: 0}\n")


@pytest.fixture(scope="module")
def still_then_change(tmp_path_factory, photos):
    """30 frames of a still cat (noise only), 30 of a still bird, 30 of the cat again."""
    path = tmp_path_factory.mktemp("motion") / "still.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 480))
    for i in range(90):
        scene = photos["bird"] if 30 <= i < 60 else photos["cat"]
        w.write(cv2.cvtColor(noisy(scene, i), cv2.COLOR_RGB2BGR))
    w.release()
    return path


def run_clip(clip, inference: str) -> tuple[Pipeline, list]:
    cfg = config.parse(f"web: {{enabled: false}}\noutputs: []\ninference: {inference}\n")
    cfg = cfg.model_copy(update={"source": cfg.source.model_copy(
        update={"kind": "opencv", "device": str(clip), "realtime": False})})
    seen = []
    pipe = Pipeline(cfg, load_model(TINY_MODEL, threads=1), no_drop=True,
                    printer=lambda results, events: seen.extend(results))
    pipe.run()
    return pipe, seen


def test_the_loop_classifies_only_changed_frames(still_then_change):
    pipe, results = run_clip(still_then_change, "{motion_threshold: 0.02}")
    s = pipe.stats.summary()
    seqs = [r.seq for r in results]
    assert s["frames_captured"] == 90
    # the first frame, and the first of each new scene; nothing else (no result for a skip)
    assert seqs == [0, 30, 60], seqs
    assert s["frames_classified"] == 3 and s["frames_skipped"] == 87
    assert pipe.live.frame.seq == 89  # the page shows the newest frame, with the last result
    assert pipe.live.results[None].seq == 60
    assert "skipped 87" in pipe.stats.line()


def test_without_the_gate_every_frame_is_classified(still_then_change):
    pipe, results = run_clip(still_then_change, "{}")
    assert len(results) == 90 and pipe.stats.summary()["frames_skipped"] == 0
