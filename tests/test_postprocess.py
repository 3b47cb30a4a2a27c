"""Post-processing stages and the chain, on scripted score sequences with exact expected events."""

from __future__ import annotations

import json
import re
import textwrap

import cv2
import numpy as np
import pytest
from conftest import DEFAULT_MODEL, IMAGENET_LABELS, IMAGES, REPO

from edge import config
from edge.errors import ConfigError
from edge.model import parse_labels
from edge.postprocess import STAGES
from edge.postprocess.chain import Chain
from edge.postprocess.docs import options_table
from edge.postprocess.smooth import median

LABELS = ["cat", "dog", "bird", "car"]
DT = 0.1  # seconds between scripted frames
T0 = 1000.0


@pytest.fixture(scope="module")
def imagenet() -> list[str]:
    return parse_labels(IMAGENET_LABELS.read_text(encoding="utf-8"))


def make_chain(stages_yaml: str, labels=LABELS, **kw) -> Chain:
    """A chain built the way the runtime builds it: YAML -> validated config -> Chain."""
    text = "postprocess:\n" + textwrap.indent(textwrap.dedent(stages_yaml), "  ")
    cfg = config.parse(text, "test.yaml")
    config.check_labels(cfg, labels, "test.yaml")
    return Chain(config.spec_items(cfg.postprocess), labels, **kw)


def vec(labels=LABELS, **scores) -> np.ndarray:
    v = np.zeros(len(labels), dtype=np.float32)
    for name, x in scores.items():
        v[labels.index(name)] = x
    return v


def run(chain: Chain, cat_scores: list[float], label: str = "cat", start: int = 0):
    """Feed frames where only `label` scores; return (results, [(seq, type, label)])."""
    results, events = [], []
    for i, x in enumerate(cat_scores, start):
        r, ev = chain.process(i, T0 + i * DT, T0 + i * DT, vec(**{label: x}))
        results.append(r)
        events += [(e.seq, e.type, e.label) for e in ev]
    return results, events


# ---------------------------------------------------------------- no stages, top_k


def test_no_stages_gives_raw_top_k_and_no_events():
    ch = Chain([], LABELS)
    probs = vec(cat=0.1, dog=0.6, bird=0.3)
    r, ev = ch.process(7, T0, T0, probs)
    assert r.top == [("dog", pytest.approx(0.6)), ("bird", pytest.approx(0.3)),
                     ("cat", pytest.approx(0.1))]  # "car" scores 0: not listed
    assert ev == [] and r.active == [] and r.scores == {}
    assert (r.seq, r.ts, r.roi) == (7, T0, None)
    assert np.array_equal(probs, vec(cat=0.1, dog=0.6, bird=0.3))  # input left untouched


def test_top_k_stage_keeps_k_best_and_ties_go_to_the_lower_index():
    ch = make_chain("- top_k: 2\n")
    r, _ = ch.process(0, T0, T0, vec(cat=0.2, dog=0.5, bird=0.2, car=0.1))
    assert r.top == [("dog", 0.5), ("cat", pytest.approx(0.2))]
    # a later stage sees only the k kept: bird (0.2, tied with cat) was zeroed
    ch = make_chain("- top_k: 2\n- threshold: {default: 0.15}\n")
    r, _ = ch.process(0, T0, T0, vec(cat=0.2, dog=0.5, bird=0.2, car=0.1))
    assert r.active == ["dog", "cat"]


def test_chain_top_k_argument_is_the_default():
    r, _ = Chain([], LABELS, top_k=1).process(0, T0, T0, vec(cat=0.1, dog=0.6))
    assert r.top == [("dog", pytest.approx(0.6))]


# ---------------------------------------------------------------- hysteresis


def test_hysteresis_needs_n_frames_in_a_row_to_enter():
    ch = make_chain("- hysteresis: {enter: 0.6, exit: 0.4, min_frames: 3}\n")
    #            0    1    2 (run broken) 3    4    5 enter  6 (in band) 7 exit
    scores = [0.7, 0.7, 0.5, 0.7, 0.7, 0.7, 0.5, 0.3]
    results, events = run(ch, scores)
    assert events == [(5, "enter", "cat"), (7, "exit", "cat")]
    assert [r.active for r in results] == [[]] * 5 + [["cat"], ["cat"], []]


def test_hysteresis_min_duration_to_enter():
    ch = make_chain("- hysteresis: {enter: 0.6, exit: 0.4, min_duration_s: 0.25}\n")
    # above from t=0.0: 0.1, 0.2 too soon; 0.3 s after the run began it enters (seq 3)
    _, events = run(ch, [0.7, 0.7, 0.7, 0.7, 0.7])
    assert events == [(3, "enter", "cat")]
    # both conditions: 2 frames and 0.25 s -> still seq 3
    ch = make_chain("- hysteresis: {enter: 0.6, min_frames: 2, min_duration_s: 0.25}\n")
    assert run(ch, [0.7] * 5)[1] == [(3, "enter", "cat")]


def test_hysteresis_hold_time_before_exit():
    ch = make_chain("- hysteresis: {enter: 0.6, exit: 0.4, hold_s: 0.2}\n")
    #  0 enter, 1-2 below (0.1 s), 3 back above exit (hold restarts), 4,5,6 below: exits at 6
    scores = [0.7, 0.3, 0.3, 0.5, 0.3, 0.3, 0.3, 0.3]
    _, events = run(ch, scores)
    assert events == [(0, "enter", "cat"), (6, "exit", "cat")]


def test_hysteresis_cooldown_between_events_of_a_label():
    ch = make_chain("- hysteresis: {enter: 0.6, exit: 0.4, cooldown_s: 0.35}\n")
    # exit at seq 1 (t=0.1); seq 2..4 high but cooling down until t=0.45; enters at seq 5
    scores = [0.7, 0.1, 0.7, 0.7, 0.7, 0.7, 0.7]
    _, events = run(ch, scores)
    assert events == [(0, "enter", "cat"), (1, "exit", "cat"), (5, "enter", "cat")]
    # cooldown is per label: dog enters at once while cat cools down
    ch = make_chain("- hysteresis: {enter: 0.6, exit: 0.4, cooldown_s: 10}\n")
    evs = []
    for i, v in enumerate([vec(cat=0.7), vec(cat=0.1), vec(cat=0.7, dog=0.7)]):
        evs += [(e.seq, e.type, e.label) for e in ch.process(i, T0 + i * DT, T0 + i * DT, v)[1]]
    assert evs == [(0, "enter", "cat"), (1, "exit", "cat"), (2, "enter", "dog")]


def test_hysteresis_status_events_while_active():
    ch = make_chain("- hysteresis: {enter: 0.6, exit: 0.4, status_every_s: 0.3}\n")
    # enter at 0 (t=0.0); status at t=0.3, 0.6; exit at seq 7
    _, events = run(ch, [0.7] * 7 + [0.1, 0.1, 0.1])
    assert events == [
        (0, "enter", "cat"), (3, "status", "cat"), (6, "status", "cat"), (7, "exit", "cat")
    ]


def test_hysteresis_per_label_levels_and_tracked_labels():
    ch = make_chain(
        """
        - hysteresis:
            enter: 0.6
            exit: 0.3
            per_label: {dog: 0.4, bird: {enter: 0.8, exit: 0.7}}
            labels: [dog, bird]
        """
    )
    # exit scales with enter (0.3/0.6) unless given; cat is not tracked at all
    assert ch.watched() == {
        "dog": {"enter": pytest.approx(0.4), "exit": pytest.approx(0.2)},
        "bird": {"enter": pytest.approx(0.8), "exit": pytest.approx(0.7)},
    }
    evs = []
    frames = [vec(cat=0.9, dog=0.45, bird=0.75), vec(dog=0.25, bird=0.85), vec(dog=0.1, bird=0.6)]
    for i, v in enumerate(frames):
        evs += [(e.seq, e.type, e.label) for e in ch.process(i, T0 + i * DT, T0 + i * DT, v)[1]]
    assert evs == [(0, "enter", "dog"), (1, "enter", "bird"), (2, "exit", "dog"),
                   (2, "exit", "bird")]


def test_events_carry_device_model_roi_seq_ts():
    ch = make_chain("- hysteresis: {enter: 0.5}\n", roi="flap", device="porch", model="m1")
    _, events = ch.process(42, 1764368000.123, 1764368000.123, vec(cat=0.83))
    (e,) = events
    d = e.to_dict()
    assert d == {
        "type": "enter", "label": "cat", "score": 0.83, "roi": "flap", "device": "porch",
        "model": "m1", "seq": 42, "ts": "2025-11-28T22:13:20.123Z", "snapshot": None,
        "clip": None,
    }
    json.dumps(d)


# ---------------------------------------------------------------- threshold, filter


def test_threshold_default_and_per_label():
    ch = make_chain("- threshold: {default: 0.5, per_label: {cat: 0.2, '*r*': 0.1, car: 0.9}}\n")
    # later entries win: 'car' (0.9) overrides the glob '*r*' (0.1) for car; bird keeps 0.1
    r, ev = ch.process(0, T0, T0, vec(cat=0.25, dog=0.4, bird=0.15, car=0.2))
    assert r.top == [("cat", pytest.approx(0.25)), ("bird", pytest.approx(0.15))]
    assert r.active == ["cat", "bird"] and ev == []
    assert ch.watched() == {
        "cat": {"enter": pytest.approx(0.2), "exit": pytest.approx(0.2)},
        "bird": {"enter": pytest.approx(0.1), "exit": pytest.approx(0.1)},
        "car": {"enter": pytest.approx(0.9), "exit": pytest.approx(0.9)},
    }
    # the web bars show what the threshold compared, not the zeroed output
    assert r.scores == {"cat": pytest.approx(0.25), "bird": pytest.approx(0.15),
                        "car": pytest.approx(0.2)}


def test_filter_allow_and_deny():
    ch = make_chain("- filter: {allow: ['*'], deny: [c*]}\n")
    r, _ = ch.process(0, T0, T0, vec(cat=0.5, dog=0.3, bird=0.1, car=0.1))
    assert [lb for lb, _ in r.top] == ["dog", "bird"]
    ch = make_chain("- filter: {allow: [bird, dog]}\n")
    assert ch.out_labels == ["dog", "bird"]
    with pytest.raises(ConfigError, match="give `allow`, `deny` or both"):
        make_chain("- filter: {}\n")


# ---------------------------------------------------------------- smooth


def smooth_outputs(stage_yaml: str, xs: list[float]) -> list[float]:
    ch = make_chain(stage_yaml + "- top_k: 4\n")
    return [dict(ch.process(i, T0 + i * DT, T0 + i * DT, vec(cat=x))[0].top).get("cat", 0.0)
            for i, x in enumerate(xs)]


def test_smooth_ema_is_exact():
    out = smooth_outputs("- smooth: {method: ema, alpha: 0.25}\n", [0.8, 0.0, 0.4, 0.4])
    expect, y = [], None
    for x in [0.8, 0.0, 0.4, 0.4]:
        y = np.float32(x) if y is None else np.float32(0.25) * np.float32(x) + np.float32(
            0.75) * y
        expect.append(float(y))
    assert out == expect == pytest.approx([0.8, 0.6, 0.55, 0.5125])


def test_smooth_window_mean_and_median():
    xs = [0.3, 0.6, 0.9, 0.0, 0.6]
    assert smooth_outputs("- smooth: {method: mean, window: 3}\n", xs) == pytest.approx(
        [0.3, 0.45, 0.6, 0.5, 0.5], abs=1e-6)
    xs = [0.1, 0.9, 0.2, 0.3, 0.8]
    assert smooth_outputs("- smooth: {method: median, window: 3}\n", xs) == pytest.approx(
        [0.1, 0.5, 0.2, 0.3, 0.3], abs=1e-6)


@pytest.mark.parametrize("n", range(1, 12))
def test_fast_median_equals_numpy(n):
    rows = np.random.default_rng(n).random((n, 1001), dtype=np.float32)
    rows[:, :50] = np.round(rows[:, :50] * 4) / 4  # ties, as quantized scores have
    assert np.allclose(median(rows), np.median(rows, axis=0), rtol=0, atol=1e-7)


def test_smooth_options_must_fit_the_method():
    with pytest.raises(ConfigError, match="`window` applies to method mean or median"):
        make_chain("- smooth: {method: ema, window: 5}\n")
    with pytest.raises(ConfigError, match="`alpha` applies to method ema"):
        make_chain("- smooth: {method: median, alpha: 0.3}\n")
    assert make_chain("- smooth:\n").stages[0].params.method == "ema"  # empty: the defaults


# ---------------------------------------------------------------- group


def test_group_sum_and_max_with_globs_on_imagenet_labels(imagenet):
    members = ["tabby*", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"]
    ch = make_chain(
        f"""
        - group:
            cat: {json.dumps(members)}
            anycat: {{labels: ["*cat"], mode: max}}
        """,
        labels=imagenet,
        top_k=3,
    )
    first = [label.split(",")[0] for label in imagenet]
    idx = [first.index(n) for n in ("tabby", "tiger cat", "Persian cat", "Siamese cat",
                                    "Egyptian cat")]
    polecat = first.index("polecat")  # '*cat' matches it, the explicit list does not
    probs = np.zeros(1001, np.float32)
    probs[idx] = [0.1, 0.05, 0.02, 0.03, 0.6]
    probs[polecat] = 0.15
    probs[1] = 0.05
    r, _ = ch.process(0, T0, T0, probs)
    assert r.top == [("cat", pytest.approx(0.8)), ("anycat", pytest.approx(0.6)),
                     (imagenet[1], pytest.approx(0.05))]
    labels = ch.out_labels
    assert labels[-2:] == ["cat", "anycat"] and len(labels) == 1001 - 9 + 2
    assert not {imagenet[i] for i in [*idx, polecat]} & set(labels)  # members replaced


def test_group_name_clashing_with_a_label_is_refused():
    with pytest.raises(ConfigError, match="'dog' is already a label here"):
        make_chain("- group: {dog: [cat]}\n")  # validation says so, with the line
    cfg = config.parse("postprocess:\n  - group: {dog: [cat]}\n")
    with pytest.raises(ConfigError, match="group name 'dog' is already a label"):
        Chain(config.spec_items(cfg.postprocess), LABELS)  # and so does the chain itself


# ---------------------------------------------------------------- the chain


def test_chain_order_matters():
    frames = [0.8, 0.2, 0.2, 0.2, 0.2]
    hyst = "- hysteresis: {enter: 0.3, exit: 0.3}\n"
    # threshold first: 0.8 then zeros -> EMA 0.8, 0.4, 0.2: exits at seq 2
    a = make_chain("- threshold: {default: 0.3}\n- smooth: {alpha: 0.5}\n" + hyst)
    # smooth first: EMA 0.8, 0.5, 0.35, 0.275 -> thresholded 0 at seq 3: exits at seq 3
    b = make_chain("- smooth: {alpha: 0.5}\n- threshold: {default: 0.3}\n" + hyst)
    assert run(a, frames)[1] == [(0, "enter", "cat"), (2, "exit", "cat")]
    assert run(b, frames)[1] == [(0, "enter", "cat"), (3, "exit", "cat")]


def test_watched_and_result_scores():
    ch = make_chain(
        """
        - group: {pet: [cat, dog]}
        - threshold: {default: 0.5, per_label: {bird: 0.3}}
        - hysteresis: {enter: 0.6, exit: 0.4, per_label: {pet: 0.5}}
        """
    )
    assert ch.watched() == {
        "pet": {"enter": pytest.approx(0.5), "exit": pytest.approx(0.5 * 0.4 / 0.6)},
        "bird": {"enter": pytest.approx(0.6), "exit": pytest.approx(0.4)},
    }
    r, ev = ch.process(0, T0, T0, vec(cat=0.3, dog=0.3, bird=0.35))
    assert r.scores == {"pet": pytest.approx(0.6), "bird": pytest.approx(0.35)}
    assert r.active == ["pet"] and [e.type for e in ev] == ["enter"]
    assert r.top == [("pet", pytest.approx(0.6)), ("bird", pytest.approx(0.35))]


def test_watched_group_without_levels():
    ch = make_chain("- group: {pet: [cat, dog]}\n- filter: {deny: [bird]}\n")
    assert ch.watched() == {"pet": {"enter": None, "exit": None}}
    r, _ = ch.process(0, T0, T0, vec(cat=0.25, dog=0.5, bird=0.1))
    assert r.scores == {"pet": 0.75} and r.active == []


def test_carry_over_keeps_smoothing_history_and_active_labels():
    old = make_chain("- smooth: {alpha: 0.5}\n- hysteresis: {enter: 0.6, exit: 0.4}\n")
    _, events = run(old, [0.8, 0.8, 0.8])
    assert events == [(0, "enter", "cat")]
    # retune: lower exit, add a threshold in front; the EMA state and the active cat carry over
    new = make_chain(
        "- threshold: {default: 0.05}\n- smooth: {alpha: 0.5}\n"
        "- hysteresis: {enter: 0.7, exit: 0.2}\n"
    )
    new.carry_over(old)
    results, events = run(new, [0.0, 0.0, 0.0], start=3)
    assert [dict(r.top).get("cat") for r in results] == pytest.approx([0.4, 0.2, 0.1])
    assert events == [(5, "exit", "cat")]  # no second enter; exits when the EMA < 0.2
    # without carry-over the new chain starts from scratch: no exit (never entered)
    fresh = make_chain("- smooth: {alpha: 0.5}\n- hysteresis: {enter: 0.7, exit: 0.2}\n")
    assert run(fresh, [0.0, 0.0, 0.0], start=3)[1] == []


def test_carry_over_window_resize_and_method_change():
    old = make_chain("- smooth: {method: mean, window: 4}\n")
    run(old, [0.1, 0.2, 0.3, 0.4])
    new = make_chain("- smooth: {method: mean, window: 2}\n")
    new.carry_over(old)
    results, _ = run(new, [0.0], start=4)
    assert dict(results[0].top)["cat"] == pytest.approx(0.2)  # mean of 0.4 (kept) and 0.0
    ema = make_chain("- smooth: {method: ema, alpha: 0.5}\n")
    ema.carry_over(old)  # seeded with the window's last output, 0.25
    assert dict(run(ema, [0.75], start=4)[0][0].top)["cat"] == pytest.approx(0.5)


def test_carry_over_exits_labels_no_longer_tracked():
    old = make_chain("- hysteresis: {enter: 0.5, exit: 0.3}\n")
    ch_events = []
    for i, v in enumerate([vec(cat=0.6, dog=0.3), vec(cat=0.6, dog=0.6)]):
        ch_events += [(e.type, e.label) for e in old.process(i, T0 + i * DT, T0 + i * DT, v)[1]]
    assert ch_events == [("enter", "cat"), ("enter", "dog")]
    new = make_chain("- hysteresis: {enter: 0.5, exit: 0.3, labels: [dog]}\n")
    new.carry_over(old)
    r, ev = new.process(2, T0 + 0.2, T0 + 0.2, vec(cat=0.6, dog=0.6))
    assert [(e.type, e.label) for e in ev] == [("exit", "cat")] and r.active == ["dog"]


def test_carry_over_follows_labels_across_a_model_change():
    old = make_chain("- hysteresis: {enter: 0.5}\n")
    old.process(0, T0, T0, vec(dog=0.9))
    labels = ["car", "dog", "fish"]
    new = make_chain("- hysteresis: {enter: 0.5}\n", labels=labels)
    new.carry_over(old)
    r, ev = new.process(1, T0 + DT, T0 + DT, vec(labels, dog=0.9))
    assert r.active == ["dog"] and ev == []


# ---------------------------------------------------------------- real model


def test_real_model_cat_group_becomes_active_after_n_frames(assets):
    from edge.model import load_model

    model = load_model(DEFAULT_MODEL, threads=1)
    rgb = cv2.cvtColor(cv2.imread(str(IMAGES / "cat.bmp")), cv2.COLOR_BGR2RGB)
    probs = model.classify(rgb)
    cfg = config.parse(
        textwrap.dedent(
            """
            postprocess:
              - group: {cat: ["tabby*", "tiger cat", "Egyptian cat", "Persian cat",
                              "Siamese cat"]}
              - smooth: {method: ema, alpha: 0.4}
              - hysteresis: {enter: 0.6, exit: 0.4, min_frames: 3}
              - top_k: 3
            """
        ),
        "cat.yaml",
    )
    config.check_labels(cfg, model.labels, "cat.yaml")
    ch = Chain(config.spec_items(cfg.postprocess), model.labels, device="d", model=model.name)
    actives, events = [], []
    for i in range(4):
        r, ev = ch.process(i, T0 + i / 30, T0 + i / 30, probs)
        actives.append(r.active)
        events += ev
    assert actives == [[], [], ["cat"], ["cat"]]
    assert [(e.type, e.label, e.seq) for e in events] == [("enter", "cat", 2)]
    assert r.top[0][0] == "cat" and r.top[0][1] > 0.8  # Egyptian 0.68 + tabby + tiger cat
    assert events[0].model == "tf2_mobilenet_v2_1.0_224_ptq"


# ---------------------------------------------------------------- registry and docs


def test_every_stage_follows_the_contract():
    assert set(STAGES) == {"group", "filter", "smooth", "threshold", "hysteresis", "top_k"}
    for name, cls in STAGES.items():
        assert cls.__doc__ and cls.name == name
        for attr in ("labels_in", "labels_out", "__call__", "carry_over"):
            assert callable(getattr(cls, attr)), (name, attr)


def test_docs_list_every_option_as_the_schema_says():
    doc = (REPO / "docs" / "postprocess.md").read_text(encoding="utf-8")
    for name, cls in STAGES.items():
        assert f"## `{name}`" in doc, name
        table = options_table(cls)
        assert table in doc, f"docs/postprocess.md: the {name} table is stale:\n{table}"


def test_docs_state_the_default_chain():
    doc = (REPO / "docs" / "postprocess.md").read_text(encoding="utf-8")
    for item in config.DEFAULT_CHAIN:
        ((name, params),) = item.items()
        flow = ", ".join(f"{k}: {v}" for k, v in params.items())
        assert f"`{name}: {{{flow}}}`" in doc


def test_doc_examples_validate(imagenet):
    doc = (REPO / "docs" / "postprocess.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", doc, re.S)
    assert len(blocks) >= 4
    for block in blocks:
        cfg = config.parse(block, "docs/postprocess.md")
        config.check_labels(cfg, imagenet, "docs/postprocess.md")
        Chain(config.spec_items(cfg.postprocess), imagenet)



def test_levels_of_any_label_for_the_web_bars():
    labels = parse_labels(IMAGENET_LABELS.read_text())

    def chain(text):
        return Chain(config.spec_items(config.parse(text).postprocess), labels)

    on_all = chain("postprocess:\n  - hysteresis: {enter: 0.5, exit: 0.3}\n")
    assert on_all.watched() == {}  # the config names no label ...
    assert on_all.levels_of(["tabby, tabby cat", "nonsense"]) == {  # ... yet every label has levels
        "tabby, tabby cat": {"enter": 0.5, "exit": 0.3}}
    only_cat = chain("postprocess:\n  - hysteresis: {enter: 0.5, labels: ['Egyptian cat']}\n")
    assert list(only_cat.levels_of(["Egyptian cat", "tabby, tabby cat"])) == ["Egyptian cat"]
    assert chain("postprocess:\n  - smooth: {alpha: 0.5}\n").levels_of(["tabby, tabby cat"]) == {}
