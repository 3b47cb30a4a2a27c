"""Config loading: malformed files give one clear line each, naming file:line:col and the key."""

from __future__ import annotations

import textwrap

import pytest
from conftest import BIRD_LABELS, IMAGENET_LABELS

from edge import config
from edge.errors import ConfigError
from edge.model import parse_labels

F = "edge.yaml"


@pytest.fixture(scope="module")
def imagenet() -> list[str]:
    return parse_labels(IMAGENET_LABELS.read_text(encoding="utf-8"))


def error_of(text: str, labels: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as e:
        cfg = config.parse(textwrap.dedent(text), F)
        if labels is not None:
            config.check_labels(cfg, labels)
    return str(e.value)


STAGES = "filter, group, hysteresis, smooth, threshold, top_k"

MALFORMED = {
    "bad YAML": (
        """
        source:
          fps: [1, 2
        """,
        f"{F}:4:1: not valid YAML: expected ',' or ']', but got '<stream end>'",
    ),
    "tab indent": (
        "source:\n\tfps: 3\n",
        f"{F}:2:1: not valid YAML: found character '\\t' that cannot start any token",
    ),
    "not a mapping": ("- a\n- b\n", f"{F}:1:1: the top level must be a mapping of options"),
    "unknown top-level key": (
        "sorce: {fps: 3}\n",
        f"{F}:1:1: sorce: unknown key; did you mean 'source'? (allowed: device, source, model,",
    ),
    "unknown nested key": (
        """
        source:
          width: 640
          hieght: 480
        """,
        f"{F}:4:3: source.hieght: unknown key; did you mean 'height'? (allowed: kind, device,",
    ),
    "wrong type": (
        "source:\n  fps: fast\n",
        f"{F}:2:3: source.fps: Input should be a valid number, unable to parse string as a "
        "number (given: 'fast')",
    ),
    "out of range": (
        "source: {width: 8}\n",
        f"{F}:1:10: source.width: Input should be greater than or equal to 16 (given: 8)",
    ),
    "not an allowed value": (
        "model:\n  resize: bilinear\n",
        f"{F}:2:3: model.resize: must be one of 'box', 'linear', 'area' or 'crop' "
        "(given: 'bilinear')",
    ),
    "threads 0 (int or 'auto')": (
        "model:\n  threads: 0\n",
        f"{F}:2:3: model.threads: should be greater than or equal to 1 or 'auto' (given: 0)",
    ),
    "threads a word": (
        "model:\n  threads: fast\n",
        f"{F}:2:3: model.threads: should be a valid integer or 'auto' (given: 'fast')",
    ),
    "bad ROI box": (
        """
        rois:
          - name: flap
            box: [0.5, 0.0, 0.2, 1.0]
        """,
        f"{F}:4:5: rois[0].box: box must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 "
        "(given: [0.5, 0.0, 0.2, 1.0])",
    ),
    "ROI without a name": (
        "rois:\n  - box: [0, 0, 1, 1]\n",
        f"{F}:2:5: rois[0].name: Field required",
    ),
    "misspelt stage": (
        """
        postprocess:
          - smooth: {alpha: 0.3}
          - treshold: {default: 0.5}
        """,
        f"{F}:4:5: postprocess[1].treshold: unknown stage 'treshold'; did you mean "
        f"'threshold'? (known: {STAGES})",
    ),
    "two stages in one item": (
        "postprocess:\n  - {smooth: {}, top_k: 3}\n",
        f"{F}:2:5: postprocess[0]: each item is one `stage_name: {{options}}` mapping; "
        f"stages: {STAGES}",
    ),
    "misspelt stage option": (
        "postprocess:\n  - smooth: {method: mean, windw: 3}\n",
        f"{F}:2:28: postprocess[0].smooth.windw: unknown key; did you mean 'window'? "
        "(allowed: method, alpha, window)",
    ),
    "stage option out of range": (
        "postprocess:\n  - threshold:\n      per_label: {cat: 1.5}\n",
        f"{F}:3:19: postprocess[0].threshold.per_label.cat: Input should be less than or "
        "equal to 1 (given: 1.5)",
    ),
    "stage options inconsistent": (
        "postprocess:\n  - hysteresis: {enter: 0.3, exit: 0.5}\n",
        f"{F}:2:5: postprocess[0].hysteresis: exit (0.5) must not be above enter (0.3)",
    ),
    "option for another method": (
        "postprocess:\n  - smooth: {method: ema, window: 5}\n",
        f"{F}:2:5: postprocess[0].smooth: `window` applies to method mean or median; "
        "ema uses `alpha`",
    ),
    "per-label levels inverted": (
        "postprocess:\n  - hysteresis:\n      per_label:\n        cat: {enter: 0.3, exit: 0.5}\n",
        f"{F}:4:9: postprocess[0].hysteresis.per_label.cat: exit (0.5) must not be above "
        "enter (0.3)",
    ),
    "misspelt key in a group": (
        "postprocess:\n  - group:\n      cat: {labels: ['*cat'], mod: max}\n",
        f"{F}:3:31: postprocess[0].group.cat.mod: unknown key; did you mean 'mode'? "
        "(allowed: labels, mode)",
    ),
    "group member of the wrong type": (
        "postprocess:\n  - group: {cat: 3}\n",
        f"{F}:2:13: postprocess[0].group.cat: should be a valid string or a valid list or a "
        "mapping (given: 3)",
    ),
    "empty group": (
        "postprocess:\n  - group: {cat: []}\n",
        f"{F}:2:13: postprocess[0].group.cat: List should have at least 1 item after "
        "validation, not 0 (given: [])",
    ),
    "per-label enter of 0": (
        "postprocess:\n  - hysteresis: {per_label: {cat: 0}}\n",
        f"{F}:2:30: postprocess[0].hysteresis.per_label.cat: Input should be greater than 0 "
        "(given: 0)",
    ),
    "top_k zero": (
        "postprocess:\n  - top_k: 0\n",
        f"{F}:2:5: postprocess[0].top_k: Input should be greater than or equal to 1 (given: 0)",
    ),
    "duplicate key": (
        "source: {fps: 10}\nmodel: {}\nsource: {fps: 30}\n",
        f"{F}:3:1: source: key given twice",
    ),
    "missing environment variable": (
        "device: porch\nweb:\n  token: ${EDGE_TEST_UNSET_TOKEN}\n",
        f"{F}:3:3: web.token: environment variable EDGE_TEST_UNSET_TOKEN is not set (set it, "
        "or write ${EDGE_TEST_UNSET_TOKEN:-default})",
    ),
}


@pytest.mark.arm64
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_config_names_file_line_and_key(case, monkeypatch):
    monkeypatch.delenv("EDGE_TEST_UNSET_TOKEN", raising=False)
    text, expected = MALFORMED[case]
    message = error_of(text)
    assert "\n" not in message, message  # one problem, one line
    assert message.startswith(expected), f"\n{message}\n{expected}"


def test_several_problems_each_get_their_line():
    message = error_of(
        """
        source: {width: 8}
        model: {resize: bilinear}
        postprocess:
          - smoth: {}
        """
    )
    lines = message.splitlines()
    assert [ln.split(": ")[0] for ln in lines] == [f"{F}:2:10", f"{F}:3:9", f"{F}:5:5"]


@pytest.mark.arm64
def test_unknown_labels_are_named_with_line_and_suggestions(imagenet):
    message = error_of(
        """
        postprocess:
          - group:
              cat: ["tabby*", "tiger cat", "Egyptain cat"]
          - threshold:
              per_label: {cat: 0.3, "*kitten*": 0.2, tabbby: 0.4}
          - hysteresis: {labels: [cat, dog]}
        """,
        imagenet,
    )
    assert message.splitlines() == [
        f"{F}:4:36: postprocess[0].group.cat[2]: 'Egyptain cat' is not a label of the model; "
        "did you mean 'Egyptian cat', 'Persian cat', 'barrow, garden cart, lawn cart, "
        "wheelbarrow'?",
        f"{F}:6:29: postprocess[1].threshold.per_label.*kitten*: '*kitten*' matches no label "
        "of the model",
        f"{F}:6:46: postprocess[1].threshold.per_label.tabbby: 'tabbby' is not a label of the "
        "model; did you mean 'tray'?",  # 'tabby, tabby cat' went into the group
        f"{F}:7:32: postprocess[2].hysteresis.labels[1]: 'dog' is not a label of the model; "
        "did you mean 'dough', 'hotdog, hot dog, red hot', 'hog, pig, grunter, squealer, Sus "
        "scrofa'?",
    ]


def test_labels_follow_the_chain(imagenet):
    """A group's name is a label for later stages; a label filtered out is gone."""
    ok = """
        postprocess:
          - group: {cat: "*cat"}
          - threshold: {per_label: {cat: 0.3}}
        """
    config.check_labels(config.parse(textwrap.dedent(ok), F), imagenet)
    before = "postprocess:\n  - threshold: {per_label: {cat: 0.3}}\n  - group: {cat: '*cat'}\n"
    assert "'cat' is not a label" in error_of(before, imagenet)
    gone = "postprocess:\n  - filter: {deny: [tench]}\n  - threshold: {per_label: {tench: 1}}\n"
    assert error_of(gone, imagenet) == (
        f"{F}:3:29: postprocess[1].threshold.per_label.tench: 'tench' names labels an "
        "earlier group or filter stage took out of the list"
    )


def test_group_named_like_a_remaining_label(imagenet):
    message = error_of("postprocess:\n  - group:\n      tench: [goldfish]\n", imagenet)
    assert message == (
        f"{F}:3:7: postprocess[0].group.tench: 'tench' is already a label here: choose another "
        "name"
    )
    # ImageNet's own two 'crane' labels are no problem
    assert [lb for lb in imagenet if lb == "crane"] == ["crane", "crane"]
    config.check_labels(config.parse("postprocess:\n  - group: {crane: [crane]}\n", F), imagenet)


def test_bird_model_labels(assets):
    birds = parse_labels(BIRD_LABELS.read_text(encoding="utf-8"))
    text = "postprocess:\n  - group: {tit: ['*Parus*', '*Poecile*']}\n  - top_k: 3\n"
    config.check_labels(config.parse(text, F), birds)
    assert "'Parus majr' is not a label of the model; did you mean 'Parus major" in error_of(
        "postprocess:\n  - threshold: {per_label: {Parus majr: 0.2}}\n", birds
    )


def test_env_interpolation(monkeypatch):
    monkeypatch.setenv("EDGE_TEST_TOKEN", "s3cret")
    monkeypatch.setenv("EDGE_TEST_DEVICE", "porch")
    monkeypatch.delenv("EDGE_TEST_UNSET", raising=False)
    cfg = config.parse(
        textwrap.dedent(
            """
            device: ${EDGE_TEST_DEVICE}-pi
            web: {token: "${EDGE_TEST_TOKEN}"}
            model: {path: "${EDGE_TEST_UNSET:-/var/lib/edge/models}/m.tflite"}
            rois: [{name: "${EDGE_TEST_DEVICE}", box: [0, 0, 1, 1]}]
            """
        ),
        F,
    )
    assert cfg.device == "porch-pi"
    assert cfg.web.token == "s3cret"
    assert cfg.model.path == "/var/lib/edge/models/m.tflite"
    assert cfg.rois[0].name == "porch"
    assert config.masked(cfg)["web"]["token"] == "***"
    # the value is text, not YAML: an interpolated number stays a string where one is wanted
    monkeypatch.setenv("EDGE_TEST_FPS", "15")
    assert config.parse("source: {fps: '${EDGE_TEST_FPS}'}\n", F).source.fps == 15.0


def test_empty_file_means_defaults(tmp_path):
    p = tmp_path / "edge.yaml"
    p.write_text("# nothing yet\n")
    cfg = config.load(p)
    assert cfg.model.threads == "auto" and cfg.source.fps == 30.0
    assert [name for name, _ in config.spec_items(cfg.postprocess)] == ["smooth", "hysteresis"]
    assert config.parse("postprocess: []\n", F).postprocess == []  # no stages: raw top-5


def test_load_names_the_real_file(tmp_path):
    p = tmp_path / "edge.yaml"
    p.write_text("source:\n  fps: 0\n")
    with pytest.raises(ConfigError) as e:
        config.load(p)
    assert str(e.value) == (
        f"{p}:2:3: source.fps: Input should be greater than or equal to 0.01 (given: 0)")
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(tmp_path / "missing.yaml")


def test_stage_defaults_and_spec_items():
    cfg = config.parse(
        "postprocess:\n  - smooth:\n  - hysteresis: {enter: 0.7}\n  - top_k: 3\n", F
    )
    items = config.spec_items(cfg.postprocess)
    assert [name for name, _ in items] == ["smooth", "hysteresis", "top_k"]
    assert items[0][1].method == "ema" and items[0][1].alpha == 0.5
    assert items[1][1].enter == 0.7 and items[1][1].exit == pytest.approx(0.49)
    assert items[2][1] == 3


def test_schema_offers_every_stage_and_its_options():
    schema = config.config_model().model_json_schema()
    text = str(schema)
    for stage in STAGES.split(", "):
        assert f"'{stage}'" in text
    for option in ("min_frames", "cooldown_s", "status_every_s", "per_label", "window"):
        assert option in text
