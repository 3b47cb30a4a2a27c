"""`edge classify`, `edge models`, `edge --version` as a user runs them, bad inputs included."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import (
    BROKEN_MODEL,
    DEFAULT_MODEL,
    IMAGES,
    MODELS,
    QAT_MODEL,
    TINY_MODEL,
)
from helpers import patch_input_channels, run_edge

THREE = [IMAGES / "cat.bmp", IMAGES / "bird.bmp", IMAGES / "grace_hopper.bmp"]
TOP1 = ["Egyptian cat", "chickadee", "military uniform"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, assets):
    """A model directory holding the default model, installed the way a user installs it."""
    d = tmp_path_factory.mktemp("models")
    r = run_edge("models", "fetch", "--from", MODELS, "--dir", d)
    assert r.returncode == 0, r.stderr
    return d


def top1_from_text(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    return [lines[i + 1].split(None, 2)[2] for i, ln in enumerate(lines) if "(invoke" in ln]


@pytest.mark.arm64
def test_classify_default_model_text(model_dir):
    r = run_edge("classify", *THREE, "--threads", "1", env={"EDGE_MODEL_DIR": str(model_dir)})
    assert r.returncode == 0, r.stderr
    assert top1_from_text(r.stdout) == TOP1
    assert "tf2_mobilenet_v2_1.0_224_ptq" in r.stdout.splitlines()[0]
    assert "XNNPACK:" in r.stdout.splitlines()[0]


@pytest.mark.parametrize("model", [QAT_MODEL, TINY_MODEL], ids=["qat", "v1-128"])
def test_classify_other_models(model):
    r = run_edge("classify", IMAGES / "bird.bmp", "--model", model, "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert top1_from_text(r.stdout) == ["chickadee"]


@pytest.mark.arm64
def test_classify_json_schema():
    r = run_edge("classify", *THREE, "--model", DEFAULT_MODEL, "--json", "-k", "3",
                 "--threads", "1")
    assert r.returncode == 0, r.stderr
    objs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [o["top"][0]["label"] for o in objs] == TOP1
    for o, image in zip(objs, THREE, strict=True):
        assert set(o) == {"image", "model", "backend", "xnnpack_partitions", "threads",
                          "invoke_ms", "top"}
        assert o["image"] == str(image) and o["model"] == "tf2_mobilenet_v2_1.0_224_ptq"
        assert isinstance(o["invoke_ms"], float) and o["invoke_ms"] > 0
        assert [t["rank"] for t in o["top"]] == [1, 2, 3]
        for t in o["top"]:
            assert set(t) == {"rank", "index", "label", "score"}
            assert 0 <= t["score"] <= 1 and isinstance(t["index"], int)
        scores = [t["score"] for t in o["top"]]
        assert scores == sorted(scores, reverse=True)


def _bad(*args, env=None):
    r = run_edge(*args, env=env)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("edge: error:")]
    assert len(errors) == 1, r.stderr
    return errors[0]


def test_bad_model_files(tmp_path):
    cat = IMAGES / "cat.bmp"
    msg = _bad("classify", cat, "--model", tmp_path / "nope.tflite")
    assert "nope.tflite: model file not found" in msg
    text = tmp_path / "notes.tflite"
    text.write_text("this is not a model\n")
    assert "notes.tflite: not a TFLite model" in _bad("classify", cat, "--model", text)
    cut = tmp_path / "truncated.tflite"
    cut.write_bytes(DEFAULT_MODEL.read_bytes()[:200_000])
    msg = _bad("classify", cat, "--model", cut, "--threads", "1")
    assert "truncated.tflite: model file is truncated or corrupt" in msg
    msg = _bad("classify", cat, "--model", BROKEN_MODEL, "--threads", "1")
    assert "model_invoking_error.tflite" in msg
    assert "cannot load the model (Encountered unresolved custom op: fake-op-double.)" in msg
    gray = patch_input_channels(TINY_MODEL, tmp_path / "gray.tflite", 1)
    msg = _bad("classify", cat, "--model", gray, "--threads", "1")
    assert "gray.tflite" in msg
    assert "input shape [1, 128, 128, 1] is not NHWC with 3 channels" in msg


def test_bad_images_and_labels(tmp_path):
    msg = _bad("classify", tmp_path / "missing.jpg", "--model", TINY_MODEL)
    assert "missing.jpg: image file not found" in msg
    fake = tmp_path / "fake.jpg"
    fake.write_text("not a jpeg")
    assert "fake.jpg: not a readable image" in _bad("classify", fake, "--model", TINY_MODEL)
    labels = tmp_path / "ten.txt"
    labels.write_text("\n".join(f"label{i}" for i in range(10)))
    msg = _bad("classify", IMAGES / "cat.bmp", "--model", TINY_MODEL, "--labels", labels,
               "--threads", "1")
    assert "ten.txt: 10 labels do not fit the model's 1001 outputs" in msg


def test_debug_shows_traceback(tmp_path):
    r = run_edge("--debug", "classify", tmp_path / "missing.jpg", "--model", TINY_MODEL)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_models_fetch_verifies_and_lists(tmp_path, assets):
    env = {"EDGE_MODEL_DIR": str(tmp_path / "m")}
    r = run_edge("models", "list", env=env)
    assert r.returncode == 0 and "mobilenet_v2_int8" in r.stdout and "installed" not in r.stdout
    r = run_edge("models", "fetch", "inat_bird", "--from", MODELS, env=env)
    assert r.returncode == 0, r.stderr
    got = tmp_path / "m" / "mobilenet_v2_1.0_224_inat_bird_quant.tflite"
    assert hashlib.sha256(got.read_bytes()).hexdigest().startswith("350fcd8c")
    assert (tmp_path / "m" / "inat_bird_labels.txt").exists()
    r = run_edge("models", "list", env=env)
    assert any("inat_bird" in ln and "installed" in ln for ln in r.stdout.splitlines())
    # a corrupt mirror is refused and nothing half-written is left behind
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "tf2_mobilenet_v2_1.0_224_ptq.tflite").write_bytes(QAT_MODEL.read_bytes())
    msg = _bad("models", "fetch", "mobilenet_v2_int8", "--from", mirror, env=env)
    assert "does not match the pinned" in msg
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "inat_bird_labels.txt", "mobilenet_v2_1.0_224_inat_bird_quant.tflite"]


def test_missing_default_model_says_how_to_fetch(tmp_path):
    msg = _bad("classify", IMAGES / "cat.bmp", env={"EDGE_MODEL_DIR": str(tmp_path)})
    assert "edge models fetch mobilenet_v2_int8" in msg


def test_version():
    r = run_edge("--version")
    assert r.returncode == 0 and r.stdout.startswith("edge 0.")
    r = run_edge("version")
    assert r.returncode == 0 and ("ai-edge-litert" in r.stdout or "tflite-runtime" in r.stdout)


def test_quiet_by_default_runtime_messages_with_v(model_dir):
    env = {"EDGE_MODEL_DIR": str(model_dir)}
    r = run_edge("classify", IMAGES / "cat.bmp", "--threads", "1", "-k", "1", env=env)
    # nothing but results (and, on tflite-runtime, edge's own warning that it is slow)
    noise = [ln for ln in r.stderr.splitlines() if "left the quantized model off XNNPACK" not in ln]
    assert r.returncode == 0 and noise == [], r.stderr
    cfg = model_dir / "edge.yaml"
    cfg.write_text("device: quiet\n")
    r = run_edge("config", "validate", cfg, env=env)
    assert r.returncode == 0 and not any(ln.startswith("INFO: ") for ln in r.stderr.splitlines())
    r = run_edge("classify", IMAGES / "cat.bmp", "--threads", "1", "-k", "1", "-v", env=env)
    assert r.returncode == 0
    from helpers import backend_name

    if backend_name() == "litert":  # the runtime's own line, passed on with -v only
        assert "INFO: Created TensorFlow Lite XNNPACK delegate" in r.stderr


def test_commands_a_new_user_types(model_dir, tmp_path):
    env = {"EDGE_MODEL_DIR": str(model_dir)}
    r = run_edge("models", env=env)  # no action: the list
    assert r.returncode == 0 and f"model directory: {model_dir}" in r.stdout
    assert r.stdout.count("(default)") == 1
    r = run_edge("config")  # no action: its help
    assert r.returncode == 0 and "validate" in r.stdout and "show" in r.stdout
    cfg = tmp_path / "edge.yaml"
    cfg.write_text("device: porch\n")
    r = run_edge("config", "show", "-c", cfg)  # -c as run and classify take it
    assert r.returncode == 0 and "device: porch" in r.stdout
    r = run_edge("classify", IMAGES, "--threads", "1", "-k", "1", "--json", "-v", env=env)
    assert r.returncode == 0, r.stderr  # a folder, and -v after the subcommand
    got = [json.loads(ln)["image"] for ln in r.stdout.splitlines()]
    assert len(got) == len([p for p in IMAGES.iterdir() if p.suffix in (".bmp", ".jpg")])
    bad = "mobilenet_v2_in8"
    for cmd in (["classify", IMAGES / "cat.bmp", "--model", bad], ["inspect", bad],
                ["run", "--max-frames", "1", "--model", bad]):
        r = run_edge(*cmd, env=env)
        assert r.returncode == 2
        assert "model 'mobilenet_v2_in8': no such file, and no model of that name" in r.stderr
        assert "did you mean 'mobilenet_v2_int8'?" in r.stderr
    r = run_edge("reload", "--pidfile", tmp_path / "none.pid")
    assert r.returncode == 2


def test_json_index_is_the_output_position_and_zero_scores_are_not_listed(model_dir):
    r = run_edge("classify", IMAGES / "cat.bmp", "--threads", "1", "-k", "1001", "--json",
                 env={"EDGE_MODEL_DIR": str(model_dir)})
    top = json.loads(r.stdout)["top"]
    assert 0 < len(top) < 1001 and all(t["score"] > 0 for t in top)
    labels = [ln.strip() for ln in (MODELS / "imagenet_labels.txt").read_text().splitlines()]
    assert all(labels[t["index"]] == t["label"] for t in top)
    cranes = [i for i, lb in enumerate(labels) if lb == "crane"]
    assert len(cranes) == 2  # why a name cannot give the index
