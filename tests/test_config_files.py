"""The shipped configs: each validates against the model it names; generated docs are current."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import MODELS
from helpers import REPO, run_edge

from edge import confdoc

CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, assets) -> Path:
    d = tmp_path_factory.mktemp("models")
    for name in ("mobilenet_v2_int8", "inat_bird"):
        r = run_edge("models", "fetch", name, "--from", MODELS, "--dir", d)
        assert r.returncode == 0, r.stderr
    return d


@pytest.mark.arm64
@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_validates_against_its_model(path, model_dir, tmp_path):
    text = path.read_text()
    secrets = sorted(set(re.findall(r"_file: (/etc/edge/[\w.-]+)", text)))
    if secrets:  # a device's secret files: validate checks them as run would ...
        r = run_edge("config", "validate", path, env={"EDGE_MODEL_DIR": str(model_dir)})
        assert r.returncode == 2 and all(f"cannot read {s}" in r.stderr for s in secrets)
        for s in secrets:  # ... and passes once they are there
            (tmp_path / Path(s).name).write_text("secret\n")
            text = text.replace(s, str(tmp_path / Path(s).name))
        path = tmp_path / path.name
        path.write_text(text)
    r = run_edge("config", "validate", path, env={"EDGE_MODEL_DIR": str(model_dir)})
    assert r.returncode == 0, r.stderr
    assert "labels not checked" not in r.stderr  # the model was found and the labels checked


def test_at_least_the_three_examples():
    names = {p.name for p in CONFIGS}
    assert {"bird-feeder.yaml", "cat-flap.yaml", "porch.yaml", "default.yaml"} <= names


def test_default_yaml_and_reference_are_generated_from_the_schema():
    assert (REPO / "configs" / "default.yaml").read_text() == confdoc.default_yaml(), (
        "configs/default.yaml is stale: edge config default > configs/default.yaml")
    assert (REPO / "docs" / "config.md").read_text() == confdoc.markdown(), (
        "docs/config.md is stale: edge config docs > docs/config.md")


def test_unknown_label_in_a_config_is_caught_with_a_suggestion(tmp_path, model_dir):
    bad = tmp_path / "bad.yaml"
    bad.write_text("postprocess:\n  - threshold: {per_label: {egyptian kat: 0.3}}\n")
    r = run_edge("config", "validate", bad, env={"EDGE_MODEL_DIR": str(model_dir)})
    assert r.returncode == 2
    assert "'egyptian kat' is not a label of the model; did you mean 'Egyptian cat'" in r.stderr


def test_show_and_schema(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("source: {kind: opencv, device: 'rtsp://admin:pw1@cam/live'}\n"
                   "outputs:\n  - mqtt: {password: hunter2}\n"
                   "  - webhook: {url: 'https://hook.example/x', headers: {X-Api-Key: k3y}}\n")
    r = run_edge("config", "show", cfg)
    assert r.returncode == 0 and "***" in r.stdout
    assert "hunter2" not in r.stdout and "pw1" not in r.stdout and "k3y" not in r.stdout
    assert "rtsp://***@cam/live" in r.stdout
    assert "stall_timeout_s: 5.0" in r.stdout  # defaults are filled in
    r = run_edge("config", "schema")
    assert r.returncode == 0 and '"postprocess"' in r.stdout and '"hysteresis"' in r.stdout
