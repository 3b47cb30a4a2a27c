"""The engine on the real models and photos: answers, XNNPACK, threads, pre/post-processing."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
from conftest import (
    BIRD_LABELS,
    BIRD_MODEL,
    DEFAULT_MODEL,
    IMAGENET_LABELS,
    IMAGES,
    QAT_MODEL,
    TINY_MODEL,
)
from helpers import backend_name, rgb

from edge import model as engine
from edge.errors import ModelError
from edge.preprocess import box_shrink, crop_box, lut_is_identity

EXPECTED = {
    "cat.bmp": "Egyptian cat",
    "bird.bmp": "chickadee",
    "grace_hopper.bmp": "military uniform",
}


@pytest.fixture(scope="module")
def default_model(assets):
    return engine.load_model(DEFAULT_MODEL, threads=2)


@pytest.mark.arm64
@pytest.mark.parametrize("path", [DEFAULT_MODEL, QAT_MODEL], ids=["ptq", "qat"])
def test_top1_on_asset_photos(assets, path):
    m = engine.load_model(path, threads=2)
    for image, label in EXPECTED.items():
        top = m.top(m.classify(rgb(IMAGES / image)), 1)[0]
        assert top[0] == label, (image, top)
        assert top[1] > 0.5


def test_tiny_model_has_its_own_input_size(assets):
    m = engine.load_model(TINY_MODEL, threads=1)
    assert m.input_size == (128, 128)
    assert m.input(rgb(IMAGES / "bird.bmp")).shape == (128, 128, 3)
    assert m.top(m.classify(rgb(IMAGES / "bird.bmp")), 1)[0][0] == "chickadee"


def test_bird_model_names_a_chickadee_species(assets):
    m = engine.load_model(BIRD_MODEL, labels=BIRD_LABELS, threads=1)
    assert len(m.labels) == 965
    label, score = m.top(m.classify(rgb(IMAGES / "bird.bmp")), 1)[0]
    assert "Chickadee" in label and label.startswith("Poecile"), label


@pytest.mark.arm64
def test_xnnpack_partitions_reported(assets, caplog):
    caplog.set_level(logging.DEBUG, logger="edge.model")  # `edge run` says it once, at INFO
    m = engine.load_model(DEFAULT_MODEL, threads=1)
    if backend_name() == "litert":
        assert m.partitions == 1
        assert "XNNPACK: 1 partition" in caplog.text
        assert "20x slower" not in caplog.text
    else:  # tflite-runtime 2.14 leaves int8 ops to the reference kernels: say so, and the fix
        assert m.partitions == 0
        assert "0 delegate partitions" in caplog.text
        assert "pip install ai-edge-litert" in caplog.text


def test_xnnpack_off_leaves_no_partition(assets, caplog):
    if backend_name() != "litert":
        pytest.skip("OpResolverType needs LiteRT")
    m = engine.load_model(DEFAULT_MODEL, threads=1, xnnpack=False)
    assert m.partitions == 0
    assert "20x slower" not in caplog.text  # turning it off on purpose is not a warning
    assert m.top(m.classify(rgb(IMAGES / "cat.bmp")), 1)[0][0] == "Egyptian cat"


def test_backend_selection(assets):
    name, _, human, version = engine.select_backend("auto")
    assert name in engine.BACKENDS and version
    with pytest.raises(ModelError, match="unknown backend 'tpu'"):
        engine.select_backend("tpu")
    missing = "tflite-runtime" if name == "litert" else "litert"
    with pytest.raises(ModelError, match=r"not installed.*pip install"):
        engine.select_backend(missing)


def test_metadata_normalization_and_lut(default_model):
    m = default_model
    assert (m.mean, m.std) == (127.5, 127.5)
    # scale 1/127.5, zero point 127: (p - 127.5) / 127.5 * 127.5 + 127 rounds half up to p
    assert m.input.lut is None  # the table maps p to p: pixels go into the tensor as they are
    int8 = engine.input_lut(np.dtype(np.int8), (1 / 127.5, -1), 127.5, 127.5)
    assert int8[0] == -128 and int8[255] == 127
    f32 = engine.input_lut(np.dtype(np.float32), (0.0, 0), 127.5, 127.5)
    # only a uint8 p -> p table lets pixels go into the tensor as they are
    assert lut_is_identity(engine.input_lut(np.dtype(np.uint8), (1 / 127.5, 127), 127.5, 127.5))
    raw_f32 = engine.input_lut(np.dtype(np.float32), (0.0, 0), 0.0, 1.0)
    assert np.array_equal(raw_f32, np.arange(256)) and not lut_is_identity(raw_f32)
    assert not lut_is_identity(int8)
    assert f32[0] == -1.0 and f32[255] == 1.0


@pytest.mark.parametrize("name", ["tf2_ptq", "quant"])
def test_model_input_makes_the_input_tensor(assets, name):
    """Resized pixels reach the tensor through the LUT, or as they are when it maps p to p
    (the default model's input quantization is the pixel range: scale 1/127.5, zero 127)."""
    m = engine.load_model(DEFAULT_MODEL if name.startswith("tf2") else QAT_MODEL, threads=1)
    assert (m.input.lut is None) == name.startswith("tf2")
    img = rgb(IMAGES / "grace_hopper.bmp")
    expect = cv2.resize(box_shrink(img, (224, 224)), (224, 224),
                        interpolation=cv2.INTER_LINEAR_EXACT)  # the default resize: box
    lut = engine.input_lut(m.input_dtype, m.input_quant, m.mean, m.std)
    m.interpreter.set_tensor(m.input_index, np.zeros((1, 224, 224, 3), np.uint8))
    m.set_input(m.input(img))
    assert np.array_equal(m.interpreter.get_tensor(m.input_index)[0], lut[expect])


def test_crop_and_roi(default_model):
    wide = np.zeros((100, 300, 3), np.uint8)
    assert crop_box(wide.shape, None, 1.0) == (slice(0, 100), slice(100, 200))
    assert crop_box(wide.shape, (0.5, 0.0, 1.0, 1.0), None) == (slice(0, 100),
                                                                       slice(150, 300))
    # the cat photo inside a black canvas: the ROI on it classifies as the photo alone does
    cat = rgb(IMAGES / "cat.bmp")
    h, w = cat.shape[:2]
    canvas = np.zeros((h * 2, w * 2, 3), np.uint8)
    canvas[h:, w:] = cat
    m = default_model
    assert m.top(m.classify(canvas, (0.5, 0.5, 1.0, 1.0)), 1)[0][0] == "Egyptian cat"


def test_softmax_detected_through_quantize(default_model):
    assert default_model.ends_in_softmax
    s = default_model.classify(rgb(IMAGES / "cat.bmp"))
    # one softmax: a confident top score (a second softmax would flatten it to ~1/1001)
    assert s.max() > 0.5 and 0.8 < float(s.sum()) <= 1.05


def test_labels_formats_and_fit(tmp_path):
    assert engine.parse_labels("0 cat\n1 dog\n") == ["cat", "dog"]
    assert engine.parse_labels("0: cat\n1: dog\n") == ["cat", "dog"]
    assert engine.parse_labels("cat\ndog\n\n") == ["cat", "dog"]
    assert engine.fit_labels(["cat"], 2, "x") == ["background", "cat"]
    assert engine.fit_labels(["background", "cat", "dog"], 2, "x") == ["cat", "dog"]
    with pytest.raises(ModelError, match="x: 5 labels do not fit the model's 2 outputs"):
        engine.fit_labels(["a"] * 5, 2, "x")


def test_threads_auto_is_measured_once_then_cached(assets, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_CACHE_DIR", str(tmp_path))
    calls = []
    real = engine._time_invokes
    monkeypatch.setattr(engine, "_time_invokes", lambda *a, **k: calls.append(1) or real(*a, **k))
    m = engine.load_model(TINY_MODEL, threads="auto")
    assert 1 <= m.threads <= 4
    assert calls, "auto must time the candidates"
    cache = json.loads((tmp_path / "threads.json").read_text())
    assert list(cache.values()) == [m.threads]
    assert next(iter(cache)).startswith(m.digest)
    calls.clear()
    again = engine.load_model(TINY_MODEL, threads="auto")
    assert again.threads == m.threads and not calls


def test_a_model_cut_short_of_its_embedded_labels_is_refused(tmp_path, assets):
    """The labels are a zip at the end of the file: a download cut by its last bytes still
    loads, so the loss must be noticed, not answered with class_286."""
    buf = DEFAULT_MODEL.read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(buf[:-100])
    with pytest.raises(ModelError, match="truncated or corrupt.*labels_file|labels file"):
        engine.load_model(cut, threads=1)
    m = engine.load_model(cut, labels=IMAGENET_LABELS, threads=1)  # its own labels: fine
    assert m.top(m.classify(rgb(IMAGES / "cat.bmp")), 1)[0][0] == "Egyptian cat"
