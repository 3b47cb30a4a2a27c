"""The default resize (`box`): anti-aliased, and the same bits on x86 and aarch64.

`box_shrink` halves the frame with OpenCV's INTER_AREA at exactly half size until the next
halving would go below the model's size; `block_average` below is that computation written out
in numpy integers (the same on every machine), so a test that holds on both architectures
proves the pre-shrink bit-identical. The bilinear step after it is INTER_LINEAR_EXACT (fixed
point, already bit-identical: docs/arm64.md); tests/test_arm64_parity.py compares the finished
tensors byte for byte with ones the x86 side wrote.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import BIRD_MODEL
from helpers import rgb

from edge import model as engine
from edge.preprocess import ModelInput, box_factors, box_shrink

IDENTITY = np.arange(256, dtype=np.uint8)


def halve(img: np.ndarray, fx: bool, fy: bool) -> np.ndarray:
    """One halving in integers: (a + b + c + d + 2) >> 2 over 2x2 blocks, where an axis not
    halved contributes each pixel twice ((a + b + 1) >> 1 along the other axis)."""
    h, w = img.shape[0] // (2 if fy else 1), img.shape[1] // (2 if fx else 1)
    x = img.astype(np.uint32)
    x = x[: 2 * h].reshape(h, 2, -1, 3).sum(axis=1) if fy else 2 * x
    x = x[:, : 2 * w].reshape(h, w, 2, 3).sum(axis=2) if fx else 2 * x
    return ((x + 2) >> 2).astype(np.uint8)


def block_average(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`box_shrink` written out in numpy integers: the same bits on every machine."""
    while img.shape[1] >= 2 * size[0] or img.shape[0] >= 2 * size[1]:
        img = halve(img, img.shape[1] >= 2 * size[0], img.shape[0] >= 2 * size[1])
    return img


@pytest.mark.arm64
@pytest.mark.parametrize("frame", [(640, 480), (1280, 720), (1920, 1080), (513, 343), (643, 479)])
def test_box_shrink_is_the_integer_block_average(frame):
    img = np.random.default_rng(frame[0]).integers(0, 256, (frame[1], frame[0], 3), np.uint8)
    for size in [(224, 224), (128, 128), (96, 160), (300, 300)]:
        kx, ky = box_factors(img.shape, size)
        got = box_shrink(img, size)
        assert got.shape[1] >= size[0] and got.shape[0] >= size[1]
        if (kx, ky) == (1, 1):
            assert got is img
            continue
        assert got.shape[:2] == (img.shape[0] // ky, img.shape[1] // kx)
        assert got.shape[1] < 2 * size[0] and got.shape[0] < 2 * size[1]
        assert np.array_equal(got, block_average(img, size)), (frame, size, (kx, ky))
        exact = img[: got.shape[0] * ky, : got.shape[1] * kx].astype(np.float64)
        exact = exact.reshape(got.shape[0], ky, got.shape[1], kx, 3).mean(axis=(1, 3))
        halvings = (kx * ky).bit_length() - 1
        assert np.abs(got - exact).max() <= 0.5 * halvings + 1e-6  # rounded once per halving


@pytest.mark.arm64
def test_box_is_the_default_and_removes_aliasing():
    """One-pixel stripes (finer than a 224 input can show) must come out flat grey, not as
    a coarser false pattern: plain bilinear keeps ~2/3 of the contrast; box leaves none."""
    stripes = np.zeros((480, 640, 3), np.uint8)
    stripes[:, ::2] = 255
    box = ModelInput.of((224, 224), "box", IDENTITY)
    linear = ModelInput.of((224, 224), "linear", IDENTITY)
    assert box.prefilter and not linear.prefilter
    smooth, aliased = box(stripes), linear(stripes)
    assert smooth.shape == aliased.shape == (224, 224, 3)
    assert int(smooth.max()) - int(smooth.min()) <= 1
    assert int(aliased.max()) - int(aliased.min()) > 100
    from edge.config import ModelConfig

    assert ModelConfig().resize == "box"


def test_box_on_a_region_crop_matches_cropping_first():
    img = np.random.default_rng(3).integers(0, 256, (720, 1280, 3), np.uint8)
    box = ModelInput.of((224, 224), "box", IDENTITY)
    roi = (0.25, 0.0, 1.0, 0.75)
    ys, xs = slice(0, 540), slice(320, 1280)
    expect = cv2.resize(block_average(img[ys, xs], (224, 224)), (224, 224),
                        interpolation=cv2.INTER_LINEAR_EXACT)
    assert np.array_equal(box.fit(img, roi), expect)


def test_bird_scores_above_half_with_the_default_resize(assets):
    """The issue's case: bird.bmp (512x343) on the iNat bird model scores 0.49 with plain
    bilinear; the anti-aliased default brings it to the area-averaging figure."""
    img = rgb(assets / "images" / "bird.bmp")
    scores = {}
    for mode in ("box", "linear", "area"):
        m = engine.load_model(BIRD_MODEL, threads=1, resize=mode)
        s = m.classify(img)
        scores[mode] = float(s.max())
        assert "Poecile atricapillus" in m.labels[int(np.argmax(s))], mode
    assert scores["linear"] < 0.5 < scores["box"], scores
    assert scores["box"] >= scores["area"] - 0.05, scores
