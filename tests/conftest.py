"""Shared fixtures: real assets from EDGE_ASSETS (default ../shared/assets beside the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("EDGE_ASSETS", REPO.parent / "shared" / "assets")).resolve()
MODELS = ASSETS / "models"
IMAGES = ASSETS / "images"

DEFAULT_MODEL = MODELS / "tf2_mobilenet_v2_1.0_224_ptq.tflite"
QAT_MODEL = MODELS / "mobilenet_v2_1.0_224_quant.tflite"
TINY_MODEL = MODELS / "mobilenet_v1_0.25_128_quant.tflite"
BIRD_MODEL = MODELS / "mobilenet_v2_1.0_224_inat_bird_quant.tflite"
BROKEN_MODEL = MODELS / "model_invoking_error.tflite"
IMAGENET_LABELS = MODELS / "imagenet_labels.txt"
BIRD_LABELS = MODELS / "inat_bird_labels.txt"


def pytest_report_header(config):
    return f"edge assets: {ASSETS}"


@pytest.fixture(scope="session")
def assets() -> Path:
    if not (MODELS / "tf2_mobilenet_v2_1.0_224_ptq.tflite").exists():
        pytest.fail(f"test assets not found at {ASSETS}: set EDGE_ASSETS to the assets folder")
    return ASSETS


@pytest.fixture(scope="session")
def images(assets) -> Path:
    return IMAGES


@pytest.fixture(scope="session")
def demo_clip(tmp_path_factory, assets) -> Path:
    """A 640x480 MJPG clip made from the asset stills (cuts between photos, 10 frames each)."""
    from edge.demo import make_clip

    out = tmp_path_factory.mktemp("clips") / "demo.avi"
    make_clip(out, IMAGES, frames_per_image=10, size=(640, 480), fps=30)
    return out
