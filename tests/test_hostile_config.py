"""Hostile config and labels files: exit 2 with one line, fast, in bounded memory (issue 20).

Each case runs `edge config validate` in a child process under an address-space limit (so an
unbounded parse fails the test instead of swapping the machine) and reads that child's own
peak RSS from wait4: the case must stay within a few MB of a plain config's run.
"""

from __future__ import annotations

import pytest
from conftest import IMAGES, TINY_MODEL
from helpers import run_edge_measured


@pytest.fixture(scope="module")
def baseline_rss(tmp_path_factory) -> int:
    ok = tmp_path_factory.mktemp("ok") / "ok.yaml"
    ok.write_text(f"model: {{path: {TINY_MODEL}}}\n")
    code, err, _, rss = run_edge_measured(ok)
    assert code == 0, err
    return rss


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
) + "device: *i\n"

HOSTILE = {
    "alias bomb": (BOMB, "aliases expand to more than"),
    "recursive alias": ("device: &x [*x]\n", "recursive YAML alias"),
    "deep nesting": ("device: " + "[" * 3000 + "]" * 3000 + "\n", "nested"),
    "50 MB file": (None, "more than the 1 MB limit"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_config_exits_2_with_one_line_fast_and_small(case, tmp_path, baseline_rss):
    text, expected = HOSTILE[case]
    path = tmp_path / "edge.yaml"
    if text is None:
        line = "- {threshold: {per_label: {'tabby': 0.5}}}\n"
        path.write_text("postprocess:\n" + line * (50 * 1024 * 1024 // len(line)))
    else:
        path.write_text(text)
    code, err, seconds, rss = run_edge_measured(path)
    assert code == 2, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge: error: "), err[-2000:]
    assert expected in lines[0]
    assert "Traceback" not in err
    assert rss - baseline_rss < 8 * 1024, f"peak RSS {rss} KB vs {baseline_rss} KB for a plain one"
    assert seconds < 10  # generous: the CPU is shared; a plain validate takes ~1 s here


def test_config_that_is_not_a_regular_file(tmp_path):
    code, err, _, _ = run_edge_measured("/dev/zero")
    assert code == 2
    assert err.strip() == "edge: error: /dev/zero: cannot use this config file (not a regular file)"


def classify_with_labels(labels) -> tuple[int, str, float, int]:
    image = IMAGES / "cat.bmp"
    return run_edge_measured(None, "classify", str(image), "--model", str(TINY_MODEL),
                         "--labels", str(labels))


def test_labels_file_dev_zero_and_huge(tmp_path, baseline_rss):
    code, err, seconds, rss = classify_with_labels("/dev/zero")
    assert code == 2, err
    assert err.strip().splitlines()[-1] == (
        "edge: error: /dev/zero: cannot read labels (not a regular file)")
    assert rss - baseline_rss < 40 * 1024  # classify loads the model: ~ 20 MB more than validate
    big = tmp_path / "labels.txt"
    with big.open("wb") as f:
        f.truncate(200 * 1024 * 1024)  # sparse: 200 MB of NULs that take no disk
    code, err, seconds, rss = classify_with_labels(big)
    assert code == 2, err
    assert "cannot read labels (209715200 bytes, more than the 4 MB limit)" in err
    assert rss - baseline_rss < 40 * 1024
