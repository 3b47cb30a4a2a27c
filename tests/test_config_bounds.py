"""Every number in the schema has finite bounds the code can use; inf/nan never validate
(issue 20: `.inf` in max_mb or backoff_*_s, max_fps: 1e-300 passed and crashed the run)."""

from __future__ import annotations

import json
import math

import pytest
from helpers import run_edge

from edge import config
from edge.errors import ConfigError

# numbers without both bounds, and why that is fine
JUSTIFIED = {
    "MqttParams.qos": "an enum (0, 1, 2)",
}


def numbers(schema: dict):
    """(dotted name, JSON-schema of a number) for every number or integer the schema has."""
    defs = schema.get("$defs", {})

    def walk(x, where):
        if isinstance(x, dict):
            if x.get("type") in ("number", "integer"):
                yield where, x
            for k, v in x.items():
                if k in ("properties", "$defs"):
                    for name, sub in v.items():
                        yield from walk(sub, f"{where}.{name}" if k == "properties" else name)
                elif isinstance(v, (dict, list)):
                    yield from walk(v, where)
        elif isinstance(x, list):
            for v in x:
                yield from walk(v, where)

    yield from walk({"$defs": defs}, "")
    yield from walk({k: v for k, v in schema.items() if k != "$defs"}, "Config")


@pytest.fixture(scope="module")
def schema() -> dict:
    r = run_edge("config", "schema")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_every_number_in_the_schema_is_bounded(schema):
    found = list(numbers(schema))
    assert len(found) > 40  # the walk reaches the stage and sink Params models too
    unbounded = []
    for name, s in found:
        lo = s.get("minimum", s.get("exclusiveMinimum"))
        hi = s.get("maximum", s.get("exclusiveMaximum"))
        if "enum" in s or "const" in s or name in JUSTIFIED:
            continue
        if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
            unbounded.append(f"{name}: [{lo}, {hi}]")
    assert not unbounded, "numbers without finite bounds:\n" + "\n".join(unbounded)


HOSTILE = {
    "source:\n  backoff_max_s: .inf\n": "source.backoff_max_s",
    "source:\n  backoff_initial_s: .nan\n": "source.backoff_initial_s",
    "source:\n  fps: 1.0e-300\n": "source.fps",
    "inference:\n  max_fps: 1.0e-300\n": "inference.max_fps: must be 0 (no cap) or at least 0.001",
    "outputs:\n  - snapshot: {max_mb: .inf}\n": "outputs[0].snapshot.max_mb",
    "outputs:\n  - jsonl: {max_mb: .nan}\n": "outputs[0].jsonl.max_mb",
    "outputs:\n  - mqtt: {spool_mb: 1.0e+300}\n": "outputs[0].mqtt.spool_mb",
    "outputs:\n  - webhook: {url: 'http://x/', backoff_max_s: .inf}\n":
        "outputs[0].webhook.backoff_max_s",
    "outputs:\n  - log: {every_s: .inf}\n": "outputs[0].log.every_s",
    "postprocess:\n  - hysteresis: {cooldown_s: .inf}\n": "postprocess[0].hysteresis.cooldown_s",
    "postprocess:\n  - smooth: {alpha: .nan}\n": "postprocess[0].smooth.alpha",
    "rois:\n  - {name: a, box: [0, 0, .nan, 1]}\n": "rois[0].box",
    "web:\n  preview_fps: 1.0e-300\n": "web.preview_fps",
    "service:\n  stats_every_s: .inf\n": "service.stats_every_s",
}


@pytest.mark.parametrize("text", HOSTILE, ids=[v.split(":")[0] for v in HOSTILE.values()])
def test_inf_nan_and_tiny_rates_are_config_errors(text):
    with pytest.raises(ConfigError) as e:
        config.parse(text, "edge.yaml")
    assert HOSTILE[text] in str(e.value)


def test_a_hostile_number_exits_2_before_running(tmp_path):
    cfg = tmp_path / "edge.yaml"
    cfg.write_text("source:\n  backoff_max_s: .inf\n")
    r = run_edge("run", "--config", cfg, "--source", tmp_path, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("edge: error: ")
    assert "backoff_max_s" in r.stderr
