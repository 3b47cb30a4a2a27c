"""`threads: auto` for the pipeline (edge/tuning.py): candidates, the choice, the cache, and
the real pipeline timed on a real clip. No figure is asserted: which count wins is the
machine's business; what is checked is that every candidate ran the real loop, the rule
picked by the figures it logged, and the cache spares the next start."""

from __future__ import annotations

import json
import logging

import pytest
from conftest import TINY_MODEL
from helpers import run_edge

from edge import config, tuning
from edge.model import load_model
from edge.tuning import Trial


def cfg_for(clip, threads="auto", **source):
    cfg = config.parse(f"model: {{path: {TINY_MODEL}, threads: {threads}}}\n"
                       "web: {enabled: false}\noutputs: []\n")
    src = cfg.source.model_copy(update={"kind": "opencv", "device": str(clip), "loop": True,
                                        **source})
    return cfg.model_copy(update={"source": src})


def test_candidates_leave_a_core_to_capture_or_use_all():
    assert tuning.candidates(1, True) == [1]
    assert tuning.candidates(2, True) == [1, 2]
    assert tuning.candidates(8, True) == [1, 2, 3, 4, 7]  # one core left to decode
    assert tuning.candidates(8, False) == [1, 2, 3, 4, 8]  # the ISP scaled the frame


def trial(threads, fps, delivered, cpu=3.0):
    return Trial(threads, 100, fps, delivered, cpu, 5.0)


def test_paced_source_takes_the_fewest_threads_that_keep_up():
    trials = [trial(1, 29.8, 30.0, 3.0), trial(2, 30.0, 30.0, 4.5), trial(3, 30.0, 30.0, 6.0)]
    assert tuning.choose(trials, is_paced=True).threads == 1
    assert [t.keeps_up for t in trials] == [True, True, True]
    slow = [trial(1, 20.0, 30.0), trial(2, 29.0, 30.0), trial(3, 29.5, 30.0)]
    assert tuning.choose(slow, is_paced=True).threads == 2
    # a max_fps cap below the camera's rate: keeping up means reaching the cap
    capped = [trial(1, 9.9, 30.0), trial(2, 10.0, 30.0)]
    assert tuning.choose(capped, is_paced=True, max_fps=10).threads == 1


def test_unpaced_takes_the_fastest_or_fewer_threads_when_close():
    assert tuning.choose([trial(1, 400, 400), trial(2, 500, 500)], is_paced=False).threads == 2
    assert tuning.choose([trial(1, 495, 495), trial(2, 500, 500)], is_paced=False).threads == 1
    # nobody keeps up with a paced source: the fastest
    assert tuning.choose([trial(1, 10, 30), trial(2, 15, 30)], is_paced=True).threads == 2


def test_paced_is_a_camera_or_a_realtime_file(tmp_path):
    clip = tmp_path / "x.avi"
    clip.write_bytes(b"")
    assert tuning.paced(cfg_for(clip, realtime=True), no_drop=False)
    assert not tuning.paced(cfg_for(clip, realtime=False), no_drop=False)
    assert not tuning.paced(cfg_for(clip, realtime=True), no_drop=True)
    camera = config.parse("source: {kind: opencv, device: 0}\n")
    assert tuning.paced(camera, no_drop=False)
    assert tuning.decodes_on_cpu(camera.source)
    assert not tuning.decodes_on_cpu(config.parse("source: {kind: picamera2}\n").source)


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(tuning, "SECONDS", 0.4)


def test_the_real_pipeline_is_timed_per_candidate_and_cached(tmp_path, monkeypatch, demo_clip,
                                                             fast, caplog):
    monkeypatch.setenv("EDGE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "candidates", lambda cores, cpu_decode: [1, 2])
    cfg = cfg_for(demo_clip, realtime=False)
    model = load_model(TINY_MODEL, threads=2)
    runs = []
    real = tuning.pipeline_runner(no_drop=True)

    def counting(c, m, seconds, on_frame):
        runs.append(m.threads)
        return real(c, m, seconds, on_frame)

    with caplog.at_level(logging.INFO, logger="edge.tuning"):
        chosen = tuning.for_pipeline(cfg, model, no_drop=True, run=counting)
    assert runs == [1, 2, 1, 2]  # interleaved rounds of the real pipeline
    text = caplog.text
    assert "tuning threads for this pipeline (~2 s" in text
    assert f"threads auto for this pipeline: {chosen.threads}" in text
    entry = json.loads((tmp_path / tuning.CACHE_NAME).read_text())
    key = tuning.cache_key(cfg, model, no_drop=True)
    assert key.endswith(":file:640x480:unpaced") and set(entry) == {key}
    trials = {t["threads"]: t for t in entry[key]["trials"]}
    assert set(trials) == {1, 2} and entry[key]["threads"] == chosen.threads
    assert all(t["frames"] > 10 and t["fps"] > 0 and t["cpu_ms"] > 0 for t in trials.values())
    best = tuning.choose([Trial(**t) for t in trials.values()], is_paced=False)
    assert best.threads == chosen.threads  # the rule, applied to the figures it logged
    # the next start: from the cache, no pipeline run
    runs.clear()
    again = tuning.for_pipeline(cfg, load_model(TINY_MODEL, threads=2), no_drop=True,
                                run=counting)
    assert runs == [] and again.threads == chosen.threads


def test_explicit_threads_and_bounded_runs_are_not_tuned(tmp_path, monkeypatch, demo_clip):
    monkeypatch.setenv("EDGE_CACHE_DIR", str(tmp_path))

    def never(*a):
        raise AssertionError("the pipeline was run")

    model = load_model(TINY_MODEL, threads=1)
    assert tuning.for_pipeline(cfg_for(demo_clip, threads=2), model, True, run=never) is model
    assert tuning.for_pipeline(cfg_for(demo_clip), model, True, run=never,
                               measure_now=False) is model


def test_a_source_without_frames_keeps_the_bare_choice(tmp_path, monkeypatch, fast, caplog):
    monkeypatch.setenv("EDGE_CACHE_DIR", str(tmp_path))
    cfg = config.parse(f"model: {{path: {TINY_MODEL}}}\nweb: {{enabled: false}}\noutputs: []\n"
                       "source: {kind: files, path: /nonexistent/*.jpg}\n")
    model = load_model(TINY_MODEL, threads=1)

    def nothing(c, m, seconds, on_frame):
        return 0, 0, []

    with caplog.at_level(logging.WARNING, logger="edge.tuning"):
        assert tuning.for_pipeline(cfg, model, False, run=nothing) is model
    assert "cannot tune threads for this pipeline" in caplog.text
    assert not (tmp_path / tuning.CACHE_NAME).exists()  # tried again at the next start


def test_edge_run_tunes_once_then_uses_the_cache(tmp_path, demo_clip):
    env = {"EDGE_CACHE_DIR": str(tmp_path)}
    args = ("run", "--source", demo_clip, "--model", TINY_MODEL, "--no-drop", "--json")
    r = run_edge(*args, env=env)
    assert r.returncode == 0, r.stderr
    assert "tuning threads for this pipeline" in r.stderr
    assert "threads auto for this pipeline:" in r.stderr
    assert sum(1 for line in r.stdout.splitlines() if '"result"' in line) == 60  # the clip
    r = run_edge(*args, env=env)
    assert r.returncode == 0 and "tuning threads" not in r.stderr
