"""Durations run on the monotonic clock: a wall-clock jump (NTP sync on a Pi without an RTC)
moves no enter or exit, and still stamps the events with the wall time."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import DEFAULT_MODEL, IMAGES

from edge import config
from edge.capture.base import Frame
from edge.model import load_model
from edge.pipeline import Pipeline

FPS = 30.0
CHAIN = """
web: {enabled: false}
outputs: []
postprocess:
  - group: {cat: ["*cat*"]}
  - hysteresis: {enter: 0.3, exit: 0.2, min_frames: 1, min_duration_s: 0.5, hold_s: 0.5,
                 labels: [cat]}
"""


@pytest.fixture(scope="module")
def model(assets):
    return load_model(DEFAULT_MODEL, threads=1)


def _frames() -> list[np.ndarray]:
    """1 s of nothing, 2 s of the cat, 2 s of the bird."""
    def rgb(name):
        return cv2.cvtColor(cv2.imread(str(IMAGES / name)), cv2.COLOR_BGR2RGB)

    blank = np.full((480, 640, 3), 127, np.uint8)
    return [blank] * 30 + [rgb("cat.bmp")] * 60 + [rgb("bird.bmp")] * 60


def _events(model, jumps: dict[int, float]) -> list[tuple[str, str, int, float]]:
    """(type, label, seq, wall ts) of each event, with the wall clock jumped by
    jumps[seq] seconds from frame seq on; the monotonic clock runs steadily at FPS."""
    pipe = Pipeline(config.parse(CHAIN), model)
    wall0, mono0, offset = 1_764_000_000.0, 1000.0, 0.0
    out = []
    for seq, img in enumerate(_frames()):
        offset += jumps.get(seq, 0.0)
        frame = Frame(seq, wall0 + seq / FPS + offset, mono0 + seq / FPS, img)
        per_region, _ = pipe.classify(frame)
        out += [(e.type, e.label, e.seq, e.ts) for _, evs in per_region for e in evs]
    return out


def test_a_wall_clock_jump_moves_no_enter_or_exit(model):
    steady = _events(model, {})
    kinds = [(t, label) for t, label, _, _ in steady]
    assert kinds == [("enter", "cat"), ("exit", "cat")]
    enter, exit_ = steady[0][2], steady[1][2]
    assert enter >= 30 + 15  # min_duration_s 0.5: 15 frames at 30 fps after the cat appears
    assert exit_ >= 90 + 15  # hold_s 0.5 after the bird replaces it
    # +1 h just after the cat appears (a wall-clock timer would enter at once), then -1 h
    # just after it leaves (a wall-clock timer would hold the exit for an hour)
    jumped = _events(model, {32: 3600.0, 92: -3600.0})
    assert [e[:3] for e in jumped] == [e[:3] for e in steady]
    # the stamps still tell the wall time, jump included
    assert jumped[0][3] == pytest.approx(steady[0][3] + 3600.0)
    assert jumped[1][3] == pytest.approx(steady[1][3])
