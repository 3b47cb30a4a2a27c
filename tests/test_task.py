"""What a model is (classifier, segmenter, neither), each command's refusal, and label files."""

from __future__ import annotations

import pytest
from conftest import MODELS, TINY_MODEL
from helpers import run_edge

from edge import model as engine
from edge.errors import ModelError
from edge.task import CLASSIFIER, OTHER, SEGMENTER, classify_outputs, require

DEEPLAB_DM05 = MODELS / "deeplabv3_mnv2_dm05_pascal_quant.tflite"
EMBEDDING = MODELS / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
VOC_LABELS = MODELS / "pascal_voc_segmentation_labels.txt"


def _interp(path):
    _, mod, human, _ = engine.select_backend("auto")
    return engine._make_interpreter(mod, human, path, 1, True)


def test_real_models_say_what_they_are(assets):
    tiny = engine.task_of(_interp(TINY_MODEL))
    assert (tiny.kind, tiny.classes) == (CLASSIFIER, 1001)
    seg = engine.task_of(_interp(DEEPLAB_DM05))
    # 21 classes read from the ArgMax's input inside the graph, not from a labels file
    assert (seg.kind, seg.classes, seg.map_hw, seg.argmax) == (SEGMENTER, 21, (513, 513), False)
    emb = engine.task_of(_interp(EMBEDDING))
    assert emb.kind == OTHER and "embedding" in emb.what


@pytest.mark.parametrize("outputs,kind", [
    ([{"shape": [1, 1, 1, 1024], "dtype": "uint8", "index": 0}], OTHER),
    ([{"shape": [1, 10], "dtype": "float32", "index": 0}] * 3, OTHER),
    ([{"shape": [1, 64, 64, 21], "dtype": "float32", "index": 0}], SEGMENTER),
    ([{"shape": [1, 64, 64], "dtype": "uint8", "index": 0}], SEGMENTER),
    ([{"shape": [1, 64, 64], "dtype": "float32", "index": 0}], OTHER),
])
def test_output_shapes(outputs, kind):
    t = classify_outputs(outputs)
    assert t.kind == kind
    if kind == SEGMENTER and len(outputs[0]["shape"]) == 4:
        assert t.argmax and t.classes == 21


def test_require_names_model_and_need():
    seg = classify_outputs([{"shape": [1, 9, 9], "dtype": "int64", "index": 0}])
    with pytest.raises(ModelError, match=r"m.tflite: a segmenter .*classify` needs an image "
                       r"classifier.*use `edge segment`"):
        require(seg, "classify", "m.tflite")
    require(seg, "run", "m.tflite")
    require(seg, "segment", "m.tflite")
    cls = classify_outputs([{"shape": [1, 5], "dtype": "uint8", "index": 0}])
    with pytest.raises(ModelError, match="use `edge classify`"):
        require(cls, "segment", "m.tflite")


def test_classify_refuses_segmenter_and_embedding(assets):
    img = assets / "images" / "cat.bmp"
    for path, what in ((DEEPLAB_DM05, "a segmenter"), (EMBEDDING, "an embedding extractor")):
        r = run_edge("classify", img, "-m", path, "--threads", "1")
        assert r.returncode == 2, r.stderr
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith(f"edge: error: {path}: {what}")
        assert "needs an image classifier" in last


def test_multi_input_model_message(assets, tmp_path):
    """A second input (as a detector with image + size inputs has) is named as such."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    m = s.ModelT.InitFromPackedBuf(TINY_MODEL.read_bytes(), 0)
    sg = m.subgraphs[0]
    extra = s.TensorT()
    extra.shape, extra.type, extra.name = [1, 2], s.TensorType.INT32, b"size"
    extra.buffer = 0
    sg.tensors.append(extra)
    sg.inputs = list(sg.inputs) + [len(sg.tensors) - 1]
    b = flatbuffers.Builder(0)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    out = tmp_path / "two_inputs.tflite"
    out.write_bytes(bytes(b.Output()))
    with pytest.raises(ModelError, match=r"has 2 inputs \(1x128x128x3, 1x2\); edge feeds one"):
        engine.load_model(out, threads=1)


# ------------------------------------------------------------------ label files (issue 18 item 7)


def test_voc_labels_end_before_the_trailing_note(assets):
    labels = engine.parse_labels(VOC_LABELS.read_text())
    assert len(labels) == 21 and labels[0] == "background" and labels[-1] == "tvmonitor"


def test_id_label_file_with_a_blank_line():
    assert engine.parse_labels("0 cat\n\n1 dog\n2 cow\n") == ["cat", "dog", "cow"]
    assert engine.parse_labels("0: cat\n1: dog\n\n") == ["cat", "dog"]
    assert engine.parse_labels("1 person\n3 car\n") == ["class_0", "person", "class_2", "car"]


def test_plain_names_starting_with_numbers_stay_names():
    text = "7 Up\n3 Musketeers\n100 Grand\n"
    assert engine.parse_labels(text) == ["7 Up", "3 Musketeers", "100 Grand"]
    assert engine.parse_labels("cat\ndog\n\n") == ["cat", "dog"]
    # a blank line followed by more names (not prose) is not an end note
    assert engine.parse_labels("cat\n\ndog\n") == ["cat", "", "dog"]
