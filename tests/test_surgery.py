"""Graph surgery on the real asset models: the embedding exposed without changing the base
outputs, and a custom head appended, all still one XNNPACK partition."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import BIRD_MODEL, DEFAULT_MODEL, IMAGES, MODELS, QAT_MODEL

from edge import surgery
from edge.errors import ModelError
from edge.metadata import embedded_files, read_metadata, training_record
from edge.model import load_model

EXTRACTOR = MODELS / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
BASES = [DEFAULT_MODEL, QAT_MODEL, BIRD_MODEL, EXTRACTOR]
PHOTOS = ["cat.bmp", "bird.bmp", "grace_hopper.bmp"]


def rgb(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(IMAGES / name)), cv2.COLOR_BGR2RGB)


def raw_outputs(model, img) -> list[np.ndarray]:
    model.classify(img)
    return [model.interpreter.get_tensor(d["index"]).copy()
            for d in model.interpreter.get_output_details()]


# under emulated aarch64 (scripts/arm64-emulated.sh): the int8 and the uint8 QAT model, ~8 s each
ARM64_BASES = [pytest.param(b, marks=pytest.mark.arm64) if b in (DEFAULT_MODEL, QAT_MODEL) else b
               for b in BASES]


@pytest.mark.parametrize("base", ARM64_BASES, ids=lambda p: p.stem)
def test_exposed_embedding_leaves_outputs_byte_identical(base, tmp_path, assets):
    buf = base.read_bytes()
    exposed, pooled = surgery.expose(buf, base.name)
    path = tmp_path / "exposed.tflite"
    path.write_bytes(exposed)
    ref, got = load_model(base, threads=1), load_model(path, threads=1)
    assert got.partitions == ref.partitions
    assert got.labels == ref.labels  # the embedded label file survives the re-pack
    for name in PHOTOS:
        want, outs = raw_outputs(ref, rgb(name)), raw_outputs(got, rgb(name))
        assert len(outs) == len(want) + (0 if base == EXTRACTOR else 1)
        for a, b in zip(want, outs, strict=False):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
        emb = outs[-1]
        assert emb.shape[-1] == pooled.channels and emb.dtype.name == pooled.dtype
        assert emb.any()


@pytest.mark.parametrize("base", BASES, ids=lambda p: p.stem)
def test_custom_model_is_one_partition_and_matches_its_head(base, tmp_path, assets):
    buf = base.read_bytes()
    exposed, pooled = surgery.expose(buf, base.name)
    (tmp_path / "exposed.tflite").write_bytes(exposed)
    ex = load_model(tmp_path / "exposed.tflite", threads=1)
    rng = np.random.default_rng(1)
    head = surgery.Head(rng.normal(0, 0.05, (3, pooled.channels)), np.array([0.1, 0, -0.1]),
                        (-6.0, 6.0))
    labels = ["mimi", "other_cat", "none"]
    record = {"classes": labels, "base": {"name": base.name}}
    custom = surgery.custom_model(buf, head, labels, record, ex.mean, ex.std, base.name)
    (tmp_path / "custom.tflite").write_bytes(custom)
    model = load_model(tmp_path / "custom.tflite", threads=1)
    assert model.partitions == 1
    assert model.labels == labels and model.ends_in_softmax
    assert (model.mean, model.std) == (ex.mean, ex.std)
    assert read_metadata(custom).label_file == surgery.LABELS_FILE
    assert training_record(custom) == record
    assert set(embedded_files(custom)) == {surgery.LABELS_FILE, surgery.RECORD_FILE}
    if base != EXTRACTOR:  # the base classifier's ~1000 x C weights are dropped
        assert len(custom) < len(buf) - 1000 * pooled.channels // 2
    # the head alone (real kernels) gives the full model's output from the same embedding
    head_only = surgery.head_model(pooled, head)
    for name in PHOTOS:
        emb = raw_outputs(ex, rgb(name))[-1]
        probs = model.classify(rgb(name))
        raw = surgery.run_head(head_only, emb.reshape(1, -1))
        assert raw.tobytes() == model.interpreter.get_tensor(model.output_index).tobytes()
        e = (emb.reshape(-1).astype(np.float64) - pooled.zero) * pooled.scale
        logits = head.weights @ e + head.bias
        want = np.exp(logits - logits.max())
        assert np.abs(probs - want / want.sum()).max() < 0.03  # int8 head ~ float head


def test_segmentation_model_has_no_embedding(assets):
    seg = MODELS / "deeplabv3_mnv2_dm05_pascal_quant.tflite"
    with pytest.raises(ModelError, match="looked for a MEAN or AVERAGE_POOL_2D"):
        surgery.expose(seg.read_bytes(), seg.name)


def test_not_a_model(tmp_path):
    with pytest.raises(ModelError, match="not a TFLite model"):
        surgery.expose(b"hello world, not a model", "x.tflite")
