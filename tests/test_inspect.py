"""`edge inspect` on the real asset models: bottlenecks recovered from the graph, checked
against MobileNetV2's Table 2 and against costs computed here from the paper's formulas."""

from __future__ import annotations

import json
import math

import pytest
from conftest import DEFAULT_MODEL, IMAGENET_LABELS, QAT_MODEL, TINY_MODEL

from edge.cli import main
from edge.errors import ModelError
from edge.graph import format_inspect, inspect_model

# MobileNetV2 paper, Table 2: expansion t, output channels c, repeats n, first stride s.
TABLE2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2), (6, 320, 1, 1)]


def mobilenet_v2_cost(res: int = 224, classes: int = 1001) -> tuple[int, int]:
    """(params, MACs) from the architecture spec: conv weights + bias (BN folded), SAME padding."""
    layers = []  # (kernel, c_in, c_out, groups, output side)
    side = math.ceil(res / 2)
    layers.append((3, 3, 32, 1, side))
    c_in = 32
    for t, c, n, s in TABLE2:
        for i in range(n):
            hidden = c_in * t
            if t != 1:
                layers.append((1, c_in, hidden, 1, side))
            side = math.ceil(side / (s if i == 0 else 1))
            layers.append((3, hidden, hidden, hidden, side))
            layers.append((1, hidden, c, 1, side))
            c_in = c
    layers.append((1, c_in, 1280, 1, side))
    layers.append((1, 1280, classes, 1, 1))  # classifier as a 1x1 conv after global pooling
    params = sum(k * k * ci * co // g + co for k, ci, co, g, _ in layers)
    macs = sum(h * h * k * k * ci * co // g for k, ci, co, g, h in layers)
    return params, macs


@pytest.fixture(scope="module")
def v2(assets):
    return inspect_model(DEFAULT_MODEL)


def test_v2_blocks_follow_table2(v2):
    blocks = v2["blocks"]
    assert len(blocks) == 17
    stages = [(s["t"], s["c"], s["n"], s["s"]) for s in v2["stages"]]
    assert stages == TABLE2
    assert blocks[0]["t"] == 1 and blocks[0]["c_in"] == 32  # first block has no expansion
    for b in blocks:
        assert b["residual"] == (b["stride"] == 1 and b["c_in"] == b["c_out"])
        assert b["kernel"] == "3x3"
    assert sum(b["residual"] for b in blocks) == v2["ops"]["ADD"] == 10
    assert [b["out_hw"] for b in blocks][::4] == [[112, 112], [28, 28], [14, 14], [14, 14],
                                                  [7, 7]]


def test_v2_totals_match_the_paper_formula(v2):
    params, macs = mobilenet_v2_cost()
    t = v2["totals"]
    assert abs(t["params"] - params) / params < 0.02
    assert abs(t["macs"] - macs) / macs < 0.02
    assert 3.4e6 <= t["params"] <= 3.55e6
    assert 290e6 <= t["macs"] <= 310e6
    # per block: expansion + depthwise + projection costs, from the spec
    b = v2["blocks"][1]  # t=6, 16 -> 24, stride 2, 112 -> 56
    assert b["params"] == (16 * 96 + 96) + (9 * 96 + 96) + (96 * 24 + 24)
    assert b["macs"] == 112 * 112 * 16 * 96 + 56 * 56 * 9 * 96 + 56 * 56 * 96 * 24
    assert b["weight_bytes"] == 16 * 96 + 9 * 96 + 96 * 24  # int8: one byte per weight


def test_v2_stem_head_io_and_quantization(v2):
    stem = [x for x in v2["stem"] if x["params"]]
    assert [(x["type"], x["kernel"], x["stride"], x["c_out"]) for x in stem] == [
        ("CONV_2D", "3x3", 2, 32)]
    head = [(x["type"], x["c_out"]) for x in v2["head"] if x["type"] in ("CONV_2D", "MEAN")]
    assert head == [("CONV_2D", 1280), ("MEAN", 1280), ("CONV_2D", 1001)]
    (inp,) = v2["inputs"]
    assert inp["shape"] == [1, 224, 224, 3] and inp["dtype"] == "uint8"
    assert inp["quantization"]["zero_point"] == 127
    assert v2["outputs"][0]["shape"] == [1, 1001]
    assert v2["quantization"]["weights"] == {"int8 per-channel (symmetric)": 53}
    assert "int8 per-tensor (asymmetric)" in v2["quantization"]["activations"]
    md = v2["metadata"]
    n_labels = len([x for x in IMAGENET_LABELS.read_text().splitlines() if x.strip()])
    assert md["labels_file"] == "imagenet_labels.txt" and md["labels_count"] == n_labels
    assert md["mean"] == [127.5] and md["std"] == [127.5]
    assert v2["runtime"]["backend"] == "litert"
    assert v2["runtime"]["xnnpack_partitions"] >= 1


def test_qat_model_same_structure(assets):
    d = inspect_model(QAT_MODEL, runtime=False)
    assert [(s["t"], s["c"], s["n"], s["s"]) for s in d["stages"]] == TABLE2
    assert d["quantization"]["weights"] == {"uint8 per-tensor (asymmetric)": 53}
    assert [x["type"] for x in d["head"]][:2] == ["CONV_2D", "AVERAGE_POOL_2D"]
    params, macs = mobilenet_v2_cost()
    assert abs(d["totals"]["macs"] - macs) / macs < 0.02


def test_v1_gives_a_plain_layer_table(assets):
    d = inspect_model(TINY_MODEL, runtime=False)
    assert d["blocks"] == [] and d["stages"] == [] and d["totals"]["blocks"] == 0
    assert len(d["layers"]) == sum(d["ops"].values()) == 31
    kinds = [x["type"] for x in d["layers"] if x["params"]]
    assert kinds == ["CONV_2D"] + ["DEPTHWISE_CONV_2D", "CONV_2D"] * 13 + ["CONV_2D"]
    # MobileNetV1 0.25 at 128: 3x3 stem to 8, then depthwise-separable pairs, 1001 classes
    assert d["layers"][0]["out_shape"] == [1, 64, 64, 8]
    assert d["layers"][28]["params"] == 256 * 1001 + 1001
    text = format_inspect(d)
    assert "no inverted-residual bottlenecks found" in text
    assert "DEPTHWISE_CONV_2D" in text and "bottlenecks: " not in text


def test_text_report_shows_table_and_totals(v2):
    text = format_inspect(v2)
    assert "inverted-residual bottlenecks: 17" in text
    assert "stages (MobileNetV2 Table 2 form)" in text
    assert f"{v2['totals']['params']:,} params" in text
    assert "XNNPACK partitions" in text and "imagenet_labels.txt (1001 labels)" in text


def test_json_schema(assets, capsys):
    assert main(["inspect", str(TINY_MODEL), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    for key, kind in [("path", str), ("file_bytes", int), ("sha256", str), ("inputs", list),
                      ("outputs", list), ("metadata", dict), ("runtime", dict), ("ops", dict),
                      ("quantization", dict), ("blocks", list), ("stages", list), ("stem", list),
                      ("head", list), ("layers", list), ("totals", dict)]:
        assert isinstance(d[key], kind), key
    assert set(d["totals"]) >= {"params", "macs", "weight_bytes", "bias_bytes", "ops", "blocks"}
    assert set(d["layers"][0]) >= {"op", "type", "kernel", "stride", "padding", "activation",
                                   "c_in", "c_out", "out_shape", "params", "macs",
                                   "weight_bytes", "weight_quant"}
    assert set(d["runtime"]) == {"backend", "backend_version", "xnnpack_partitions", "threads"}


def test_not_a_model_is_a_clear_error(assets, tmp_path, capsys):
    assert main(["inspect", str(IMAGENET_LABELS)]) == 2
    assert "not a TFLite flatbuffer" in capsys.readouterr().err
    with pytest.raises(ModelError, match="not a TFLite flatbuffer"):
        inspect_model(IMAGENET_LABELS)
    with pytest.raises(ModelError, match="no such model file"):
        inspect_model(tmp_path / "missing.tflite")
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(DEFAULT_MODEL.read_bytes()[:2000])
    with pytest.raises(ModelError, match="corrupt"):
        inspect_model(truncated)


# ------------------------------------------------ ReLU6 only in the quantization range; DeepLabV3


def _clear_fused_activations(src, dst) -> int:
    """Write `src` with every op's fused-activation field emptied (the clip stays only in the
    output quantization ranges, as some converters leave it); returns how many were cleared."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(src.read_bytes(), 0)
    n = 0
    for op in m.subgraphs[0].operators:
        if getattr(op.builtinOptions, "fusedActivationFunction", 0):
            op.builtinOptions.fusedActivationFunction = 0
            n += 1
    b = flatbuffers.Builder(0)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    dst.write_bytes(bytes(b.Output()))
    return n


def test_relu6_from_quantization_range(assets, tmp_path):
    v2, v1 = tmp_path / "v2.tflite", tmp_path / "v1.tflite"
    assert _clear_fused_activations(DEFAULT_MODEL, v2) > 30
    assert _clear_fused_activations(TINY_MODEL, v1) > 20
    fused, cleared = inspect_model(DEFAULT_MODEL, runtime=False), inspect_model(v2, runtime=False)
    assert all(x["activation"] is None or not x["activation_by_range"] for x in fused["layers"])
    assert [(s["t"], s["c"], s["n"], s["s"]) for s in cleared["stages"]] == TABLE2
    assert sum(b["residual"] for b in cleared["blocks"]) == 10
    assert cleared["stages"] == fused["stages"]
    assert "quantization range" in format_inspect(cleared)
    assert inspect_model(v1, runtime=False)["blocks"] == []  # MobileNetV1 has no bottlenecks


@pytest.mark.parametrize("name,widths", [
    ("deeplabv3_mnv2_pascal_quant", (16, 24, 32, 64, 96, 160, 160, 320)),
    ("deeplabv3_mnv2_dm05_pascal_quant", (8, 12, 16, 32, 48, 80, 80, 160)),
])
def test_deeplab_dilation_and_output_stride(assets, name, widths):
    d = inspect_model(assets / "models" / f"{name}.tflite", runtime=False)
    assert d["output_stride"] == {"stride": 16, "input": 513, "smallest_map": 33}
    # output stride 16: the last stride-2 block runs at stride 1, later blocks dilated by 2
    assert d["dilated"] == [{"dilation": 2, "blocks": [14, 15, 16], "ops": []}]
    assert tuple(s["c"] for s in d["stages"]) == widths
    assert [s["d"] for s in d["stages"]][-2:] == [2, 2]
    text = format_inspect(d)
    assert "output stride 16" in text and "blocks 14-16: dilation 2" in text
    assert inspect_model(DEFAULT_MODEL, runtime=False)["output_stride"]["stride"] == 32
