"""Per-region models, rates and gates (edge.regions) on real models and clips made here."""

from __future__ import annotations

import json
import threading

import pytest
from conftest import BIRD_LABELS, BIRD_MODEL, DEFAULT_MODEL, IMAGES, TINY_MODEL
from helpers import rgb as read_rgb
from helpers import run_edge, wait_for
from test_web import Edge, browser  # noqa: F401,F811  (the Chromium fixture)

from edge import config
from edge.capture.base import Frame
from edge.demo import make_clip
from edge.errors import ConfigError
from edge.model import load_model
from edge.pipeline import Pipeline
from edge.regions import Rate, effective

CHICKADEE = "Poecile atricapillus (Black-capped Chickadee)"  # iNat's name of bird.bmp
BIRD = f"{{path: {BIRD_MODEL}, labels: {BIRD_LABELS}}}"
FEEDER = f"""
web: {{enabled: false}}
service: {{stats_every_s: 0}}
model: {{path: {DEFAULT_MODEL}, threads: 1}}
outputs: []
rois:
  - {{name: scene, box: [0, 0, 1, 1]}}
  - name: feeder
    box: [0.1, 0.1, 0.9, 0.9]
    model: {BIRD}
    every_s: 1
    postprocess:
      - filter: {{deny: [background]}}
      - hysteresis: {{enter: 0.5, exit: 0.3, min_frames: 1}}
"""
GATED = FEEDER.replace(
    "every_s: 1", 'every_s: 0.5\n    when: {roi: scene, active: ["*chickadee*"]}'
) + "postprocess:\n  - hysteresis: {enter: 0.5, exit: 0.3, min_frames: 1}\n"


@pytest.fixture(scope="module")
def bird_clip(tmp_path_factory, assets):
    """8 s at 30 fps of bird.bmp (240 frames): the issue's "must show" clip."""
    out = tmp_path_factory.mktemp("regions") / "bird.avi"
    return make_clip(out, IMAGES, names=("bird.bmp",), frames_per_image=240, fps=30)


@pytest.fixture(scope="module")
def cat_bird_cat(tmp_path_factory, assets):
    """2 s cat, 2 s bird, 2 s cat at 30 fps."""
    out = tmp_path_factory.mktemp("regions") / "cbc.avi"
    return make_clip(out, IMAGES, names=("cat.bmp", "bird.bmp", "cat.bmp"), frames_per_image=60,
                     size=(320, 240), fps=30)


@pytest.fixture(scope="module")
def scene_model(assets):
    return load_model(DEFAULT_MODEL, threads=1)


def results_of(lines: list[dict], roi: str) -> list[dict]:
    return [x["result"] for x in lines if "result" in x and x["result"]["roi"] == roi]


def write(tmp_path, text: str, name: str = "edge.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_scene_on_imagenet_feeder_on_inat_at_1_hz(tmp_path, bird_clip):
    """The issue's must-show, through `edge run --no-drop --json`: 240 scene results with the
    ImageNet name, 8 feeder results (one per second of clip time) with the iNat name, each
    naming its model; invokes per model follow the rates; one model line per model."""
    cfg = write(tmp_path, FEEDER)
    r = run_edge("run", "--config", cfg, "--source", bird_clip, "--no-drop", "--json",
                 env={"EDGE_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    scene, feeder = results_of(lines, "scene"), results_of(lines, "feeder")
    assert len(scene) == 240 >= 100
    assert {x["top"][0]["label"] for x in scene} == {"chickadee"}
    assert {x["model"] for x in scene} == {DEFAULT_MODEL.stem}
    assert len(feeder) == 8  # 8 s of clip at every_s: 1, counted in the clip's own time
    assert {x["top"][0]["label"] for x in feeder} == {CHICKADEE}
    assert {x["model"] for x in feeder} == {BIRD_MODEL.stem}
    assert [x["seq"] for x in feeder] == [0, 30, 60, 90, 120, 150, 180, 210]
    events = [x["event"] for x in lines if "event" in x]
    assert {(e["roi"], e["label"], e["model"]) for e in events if e["type"] == "enter"} == {
        ("scene", "chickadee", DEFAULT_MODEL.stem), ("feeder", CHICKADEE, BIRD_MODEL.stem)}
    model_lines = [ln for ln in r.stderr.splitlines() if "XNNPACK:" in ln]
    assert len(model_lines) == 2 and BIRD_MODEL.stem in model_lines[1]
    assert "1 thread" in model_lines[1]
    # deterministic: the clip's own time, not the machine's speed
    again = run_edge("run", "--config", cfg, "--source", bird_clip, "--no-drop", "--json",
                     env={"EDGE_CACHE_DIR": str(tmp_path)})
    strip = lambda out: [{k: v for k, v in json.loads(x).get("result", {}).items() if k != "ts"}  # noqa: E731
                         for x in out.splitlines()]
    assert strip(again.stdout) == strip(r.stdout)


def test_paced_invoke_counts_per_model_follow_the_rates(tmp_path, bird_clip, scene_model):
    """Played like a camera (realtime), the feeder at every_s 0.5 runs twice a second of wall
    time; the per-model invoke counter says so (+-1 per 10 s)."""
    cfg = config.parse(FEEDER.replace("every_s: 1", "every_s: 0.5") + "inference: {max_fps: 10}\n")
    cfg = cfg.model_copy(update={"source": cfg.source.model_copy(
        update={"kind": "opencv", "device": str(bird_clip), "realtime": True, "loop": True})})
    pipe = Pipeline(cfg, scene_model)
    pipe.run(duration=3.0)
    inv = pipe.stats.summary()["invokes"]
    assert 3 * 2 - 1 <= inv[BIRD_MODEL.stem] <= 3 * 2 + 1
    assert inv[DEFAULT_MODEL.stem] >= 20  # 10 fps, less the start


def test_feeder_runs_only_while_the_scene_sees_a_bird(cat_bird_cat, scene_model):
    got: list = []
    cfg = config.parse(GATED)
    cfg = cfg.model_copy(update={"source": cfg.source.model_copy(
        update={"kind": "opencv", "device": str(cat_bird_cat), "realtime": False})})
    pipe = Pipeline(cfg, scene_model, no_drop=True, printer=lambda res, ev: got.append(res))
    pipe.run()
    scene_active = {r.seq: r.active for res in got for r in res if r.roi == "scene"}
    feeder = [r for res in got for r in res if r.roi == "feeder"]
    assert len(scene_active) == 180
    bird_frames = [s for s, a in scene_active.items() if "chickadee" in a]
    assert bird_frames and min(bird_frames) >= 60 and max(bird_frames) < 120
    assert feeder, "the feeder never ran"
    for r in feeder:  # only on frames whose scene result had a bird active
        assert "chickadee" in scene_active[r.seq]
        assert r.top[0][0] == CHICKADEE and r.model == BIRD_MODEL.stem
    # 2 s of bird at every_s 0.5, the first at the frame the gate opened
    assert [r.seq for r in feeder] == [bird_frames[0] + 15 * i for i in range(4)]
    assert pipe.stats.summary()["invokes"][BIRD_MODEL.stem] == 4


def test_the_capture_thread_skips_the_crops_not_due(scene_model, tmp_path):
    cfg = config.parse(FEEDER)
    pipe = Pipeline(cfg, scene_model, no_drop=True)
    scene, feeder = pipe.regions
    assert pipe.plan.due is not None
    rgb = read_rgb(IMAGES / "bird.bmp")
    first = Frame(0, 0.0, 0.0, rgb, media_s=0.0)
    prepared = pipe.plan.prepare(first)
    assert prepared.tensors[scene.entry] is not None and prepared.tensors[feeder.entry] is not None
    pipe.classify(first)  # the feeder ran: next due at 1 s
    later = Frame(1, 0.0, 0.0, rgb, media_s=0.5)
    prepared = pipe.plan.prepare(later)
    assert prepared.tensors[scene.entry] is not None and prepared.tensors[feeder.entry] is None
    later.prepared = prepared
    out, _ = pipe.classify(later)
    assert [r.roi for r, _ in out] == ["scene"]  # no result, not a stale one
    due = Frame(2, 0.0, 0.0, rgb, media_s=1.0)
    assert pipe.plan.prepare(due).tensors[feeder.entry] is not None


def test_a_config_without_region_keys_has_no_rates_and_no_model_in_results(scene_model):
    cfg = config.parse(f"model: {{path: {DEFAULT_MODEL}}}\nrois:\n"
                       "  - {name: a, box: [0, 0, 0.5, 1]}\n  - {name: b, box: [0.5, 0, 1, 1]}\n")
    pipe = Pipeline(cfg, scene_model, no_drop=True)
    assert pipe.plan.due is None and pipe.models == {}
    rgb = read_rgb(IMAGES / "bird.bmp")
    out, _ = pipe.classify(Frame(0, 0.0, 0.0, rgb))
    assert [r.roi for r, _ in out] == ["a", "b"]
    assert all("model" not in r.to_dict() for r, _ in out)


def test_rate_is_anchored_and_re_anchors():
    r = Rate(1.0)
    ran = []
    for i in range(300):  # 10 s at 30 fps
        t = i / 30
        if r.due(t):
            r.ran(t)
            ran.append(i)
    assert ran == list(range(0, 300, 30))
    r = Rate(1.0)
    r.ran(0.0)
    assert not r.due(0.5) and r.due(1.0)
    r.ran(5.0)  # late by more than a period: re-anchored on the frame
    assert r.next_due == 6.0
    assert r.due(0.2)  # the clock went back (a new source): due at once


def test_threads_rule(scene_model, monkeypatch):
    import edge.regions

    cfg = config.parse(FEEDER)
    monkeypatch.setattr(edge.regions, "usable_cores", lambda: 4)
    assert effective(cfg.rois[1].model, scene_model).threads == 3  # what the scene leaves
    monkeypatch.setattr(edge.regions, "usable_cores", lambda: 1)
    assert effective(cfg.rois[1].model, scene_model).threads == 1  # at least one
    own = cfg.rois[1].model.model_copy(update={"threads": 2})
    assert effective(own, scene_model).threads == 2  # an explicit number is kept


def test_regions_naming_the_same_model_share_one_interpreter(scene_model):
    text = FEEDER + f"  - {{name: perch, box: [0, 0, 0.5, 0.5], model: {BIRD}, every_s: 1}}\n" \
        f"  - {{name: same, box: [0, 0, 1, 1], model: {{path: {DEFAULT_MODEL}, threads: 1}}}}\n"
    pipe = Pipeline(config.parse(text), scene_model)
    scene, feeder, perch, same = pipe.regions
    assert len(pipe.models) == 1 and feeder.model is perch.model is not None
    assert same.model is None and same.model_name == scene.model_name  # the top-level one


@pytest.mark.parametrize("text, error", [
    (FEEDER.replace(str(BIRD_MODEL), "/nonexistent/birds.tflite"),
     ":10:5: rois[1].model: /nonexistent/birds.tflite: model file not found"),
    (FEEDER.replace("deny: [background]", "deny: [background, tabby]"),
     ":13:37: rois[1].postprocess[0].filter.deny[1]: 'tabby' is not a label of the model"),
    (FEEDER + "    when: {roi: porch, active: [bird]}\n",
     ":15:12: rois[1].when.roi: 'porch' names no region (regions: scene, feeder)"),
    (FEEDER + "    when: {roi: feeder, active: [bird]}\n",
     ":15:12: rois[1].when.roi: 'feeder' is this region itself"),
    (FEEDER + "    when: {roi: scene, active: [\"*chickadee*\", finch]}\n",
     ":15:48: rois[1].when.active[1]: 'finch' is not a label region 'scene' can make active"),
    (FEEDER + "  - {name: porch, box: [0, 0, 1, 1], when: {roi: later, active: [x]}}\n"
     "  - {name: later, box: [0, 0, 1, 1]}\n",
     ":15:45: rois[2].when.roi: 'later' comes after this region"),
])
def test_validation_points_into_the_region(tmp_path, text, error):
    cfg = write(tmp_path, text)
    r = run_edge("config", "validate", cfg)
    if "model file not found" in error:  # validate warns when a model is not at hand...
        assert r.returncode == 0 and "labels not checked" in r.stderr
        r = run_edge("run", "--config", cfg, "--source", IMAGES / "bird.bmp", "--no-drop",
                     "--max-frames", "1", env={"EDGE_CACHE_DIR": str(tmp_path)})  # ...run refuses
    assert r.returncode == 2, r.stderr
    assert f"{cfg}{error}" in r.stderr, r.stderr


def test_every_s_and_max_fps_exclude_each_other():
    with pytest.raises(ConfigError, match="give every_s or max_fps, not both"):
        config.parse("rois:\n  - {name: a, box: [0, 0, 1, 1], every_s: 1, max_fps: 2}\n")
    cfg = config.parse("rois:\n  - {name: a, box: [0, 0, 1, 1], max_fps: 4, model: tiny}\n")
    assert Rate.of(cfg.rois[0]).period == 0.25 and cfg.rois[0].model.path == "tiny"


def test_reload_adds_and_removes_a_region_model_without_reopening_the_camera(
        tmp_path, bird_clip, scene_model):
    base = FEEDER.split("rois:")[0] + "source: {loop: true}\nrois:\n" \
        "  - {name: scene, box: [0, 0, 1, 1]}\n"
    path = write(tmp_path, base)
    cfg = config.load(path)
    cfg = cfg.model_copy(update={"source": cfg.source.model_copy(
        update={"kind": "opencv", "device": str(bird_clip)})})
    pipe = Pipeline(cfg, scene_model, overrides=lambda c: c.model_copy(
        update={"source": cfg.source}))
    t = threading.Thread(target=pipe.run, kwargs={"duration": 60, "config_path": str(path)})
    t.start()
    try:
        assert wait_for(lambda: pipe.capture is not None and pipe.stats.classified > 3, 20)
        capture, reader = pipe.capture, pipe.capture._conn.thread
        path.write_text(FEEDER.split("rois:")[0] + "source: {loop: true}\nrois:" +
                        FEEDER.split("rois:")[1].replace("every_s: 1", "every_s: 0.2"))
        pipe.reload_event.set()
        assert wait_for(lambda: pipe.models and "feeder" in pipe.live.results, 30)
        assert pipe.live.results["feeder"].top[0][0] == CHICKADEE
        assert pipe.live.results["feeder"].model == BIRD_MODEL.stem
        assert wait_for(lambda: pipe.stats.summary()["invokes"].get(BIRD_MODEL.stem, 0) >= 3, 20)
        bird = pipe.regions[1].model
        # an unchanged model section is reused on the next reload (a new rate only)
        path.write_text(path.read_text().replace("every_s: 0.2", "every_s: 0.25"))
        pipe.reload_event.set()
        assert wait_for(lambda: pipe.regions[1].rate.period == 0.25, 20)
        assert pipe.regions[1].model is bird
        path.write_text(base)  # and removed again
        pipe.reload_event.set()
        assert wait_for(lambda: pipe.models == {} and len(pipe.regions) == 1, 20)
        n = pipe.stats.classified
        assert wait_for(lambda: pipe.stats.classified > n + 3, 20)
        assert pipe.capture is capture and capture._conn.thread is reader and reader.is_alive()
        assert [r.name for r in pipe.view.regions] == ["scene"]
    finally:
        pipe.stop_event.set()
        t.join(10)


def test_page_and_metrics_name_each_regions_model_and_rate(scene_model, bird_clip):
    from prometheus_client import generate_latest

    from edge.web import App, access_from_config, regions_now

    cfg = config.parse(FEEDER)
    cfg = cfg.model_copy(update={"source": cfg.source.model_copy(
        update={"kind": "opencv", "device": str(bird_clip), "realtime": False})})
    pipe = Pipeline(cfg, scene_model, no_drop=True)
    pipe.run(max_frames=61)
    regions = {r["name"]: r for r in regions_now(pipe)}
    assert regions["scene"]["model"] == DEFAULT_MODEL.stem
    assert regions["scene"]["rate"] == "every frame" and regions["scene"]["every_s"] is None
    assert regions["feeder"]["model"] == BIRD_MODEL.stem
    assert regions["feeder"]["rate"] == "every 1 s" and regions["feeder"]["every_s"] == 1.0
    text = generate_latest(App(pipe, access_from_config(cfg.web), 5).registry).decode()
    assert f'edge_model_invokes_total{{model="{DEFAULT_MODEL.stem}"}} 61.0' in text
    assert f'edge_model_invokes_total{{model="{BIRD_MODEL.stem}"}} 3.0' in text  # 0, 30, 60


def test_tiny_region_model_gets_its_own_input_size(scene_model, tmp_path):
    """A region model with another input size: its crop is made at its size (128x128)."""
    text = f"model: {{path: {DEFAULT_MODEL}}}\nrois:\n  - {{name: a, box: [0, 0, 1, 1]}}\n" \
        f"  - {{name: b, box: [0, 0, 1, 1], model: {{path: {TINY_MODEL}, threads: 1}}}}\n"
    pipe = Pipeline(config.parse(text), scene_model, no_drop=True)
    rgb = read_rgb(IMAGES / "cat.bmp")
    p = pipe.plan.prepare(Frame(0, 0.0, 0.0, rgb))
    assert [t.shape for t in p.tensors] == [(224, 224, 3), (128, 128, 3)]
    out, _ = pipe.classify(Frame(0, 0.0, 0.0, rgb))
    assert [(r.roi, r.model) for r, _ in out] == [("a", DEFAULT_MODEL.stem), ("b", TINY_MODEL.stem)]


def test_page_heading_names_each_regions_model_and_rate(tmp_path, bird_clip,
                                                        browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    text = FEEDER.replace("web: {enabled: false}", 'web: {bind: "127.0.0.1:0"}') \
        + "source: {loop: true}\n"
    e = Edge(tmp_path, text, str(bird_clip))
    try:
        browser.get(e.wait_url())
        def heads() -> dict:
            cards = browser.find_elements(By.CSS_SELECTOR, "#regions .roi")
            return {c.get_attribute("data-roi"): c.find_element(By.CSS_SELECTOR, ".model")
                    for c in cards}

        assert wait_for(lambda: len(heads()) == 2, 30), e.log.read_text()
        shown = {roi: h.get_attribute("title") for roi, h in heads().items()}
        assert shown == {"scene": f"{DEFAULT_MODEL.stem} · every frame",
                         "feeder": f"{BIRD_MODEL.stem} · every 1 s"}
        assert all(h.text and h.size["width"] > 50 for h in heads().values())  # visible
    finally:
        e.stop()


def test_segmenter_regions_beside_a_classifier_region(assets):
    seg_path = assets / "models" / "deeplabv3_mnv2_dm05_pascal_quant.tflite"
    labels = assets / "models" / "pascal_voc_segmentation_labels.txt"
    seg = load_model(seg_path, labels=labels, threads=1)
    text = f"model: {{path: {seg_path}, labels: {labels}}}\npostprocess: []\nrois:\n" \
        "  - {name: whole, box: [0, 0, 1, 1]}\n" \
        f"  - {{name: crop, box: [0, 0, 1, 1], model: {{path: {DEFAULT_MODEL}, threads: 1}}}}\n"
    pipe = Pipeline(config.parse(text), seg, no_drop=True)
    assert len(pipe.plan.regions) == 2  # one whole-frame tensor for the segmenter, one crop
    out, _ = pipe.classify(Frame(0, 0.0, 0.0, read_rgb(IMAGES / "bird.bmp")))
    (whole, _), (crop, _) = out
    assert whole.top[0][0] == "background" and "bird" in [lb for lb, _ in whole.top]
    assert crop.top[0][0] == "chickadee" and crop.model == DEFAULT_MODEL.stem
    bad = f"rois:\n  - {{name: a, box: [0, 0, 1, 1], model: {{path: {seg_path}}}}}\n"
    with pytest.raises(ConfigError, match=r":2:34: rois\[0\].model: .*a region's own model must "
                                          "be a classifier"):
        Pipeline(config.parse(bad), load_model(DEFAULT_MODEL, threads=1))
