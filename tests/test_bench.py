"""`edge bench` with the real runtime on the tiny model: schema, progress, plot, pipeline fps."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import TINY_MODEL

from edge.bench import (
    SCHEMA,
    format_bench,
    parse_threads,
    run_bench,
)
from edge.cli import main
from edge.errors import EdgeError

RESULT_KEYS = {"backend", "backend_version", "xnnpack", "xnnpack_partitions", "threads",
               "invokes", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "fps"}


def test_json_schema_plot_and_progress(assets, demo_clip, tmp_path, capsys):
    png = tmp_path / "bench.png"
    assert main(["bench", str(TINY_MODEL), "--threads", "1,2", "--seconds", "0.3", "--json",
            "--source", str(demo_clip), "--plot", str(png)]) == 0
    out = capsys.readouterr()
    d = json.loads(out.out)
    assert d["schema"] == SCHEMA
    assert d["model"]["name"] == TINY_MODEL.stem
    assert set(d["system"]) >= {"cpu", "machine", "cores", "governor", "temperature_c", "load_avg"}
    assert d["system"]["cores"] >= 1
    configs = {(r["backend"], r["xnnpack"], r["threads"]) for r in d["results"]}
    assert configs == {("litert", x, n) for x in (True, False) for n in (1, 2)}
    for r in d["results"]:
        assert set(r) == RESULT_KEYS
        assert 0 < r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["invokes"] >= 5
        assert (r["xnnpack_partitions"] > 0) == r["xnnpack"]
    pipe = d["pipeline"]
    assert pipe["source"] == str(demo_clip)
    assert [(r["threads"], r["xnnpack"]) for r in pipe["results"]] == [(1, True), (2, True)]
    for r in pipe["results"]:
        assert set(r) == {"backend", "xnnpack", "threads", "invoke_fps", "pipeline_fps",
                          "frames", "sequential_fps", "decode_fps", "frame_size"}
        assert r["frames"] >= 5 and r["frame_size"] == [640, 480]
        assert 0 < r["sequential_fps"] < r["invoke_fps"]  # decode + preprocess cost something
        assert 0 < r["pipeline_fps"] < r["invoke_fps"]
        assert r["decode_fps"] > r["sequential_fps"]
    auto = pipe["auto"]  # what `edge run` would pick, and the table it logs
    trials = {t["threads"]: t for t in auto["trials"]}
    assert auto["threads"] in trials and set(trials) >= {1}
    assert all(t["frames"] > 0 and t["fps"] > 0 and t["cpu_ms"] > 0 for t in trials.values())
    assert "<- chosen" in auto["table"] and "CPU ms/frame" in auto["table"]
    assert "threads auto: the real pipeline per candidate on demo.avi" in out.err
    # progress went to stderr: loading, then one line per configuration and round
    assert "loading 4/4" in out.err
    assert out.err.count("litert xnnpack=off threads=2: p50") == d["rounds"] == 3
    assert out.err.count("pipeline on demo.avi") == 4
    assert d["plot"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 200 and img.shape[1] > 300
    assert np.std(img) > 10  # something was drawn


def test_text_output_names_the_system(assets):
    d = run_bench(TINY_MODEL, threads=[1], seconds=0.2, xnnpack=(True,))
    text = format_bench(d)
    assert d["pipeline"] is None
    assert "governor" in text and "temperature" in text and d["system"]["cpu"] in text
    assert "litert" in text and " on/" in text


def test_bad_arguments(assets, tmp_path, capsys):
    assert main(["bench", str(TINY_MODEL), "--seconds", "0"]) == 2
    assert "--seconds must be > 0" in capsys.readouterr().err
    assert parse_threads("4,1,2") == [1, 2, 4]
    assert parse_threads("auto")[0] == 1
    for bad in ("0", "x", ""):
        with pytest.raises(EdgeError, match="--threads"):
            parse_threads(bad)
    with pytest.raises(EdgeError, match="clip not found"):
        run_bench(TINY_MODEL, [1], 0.1, source=tmp_path / "none.avi")
