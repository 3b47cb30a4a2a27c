"""aarch64 / x86 parity: `edge classify` gives the same answers on both architectures.

scripts/arm64-emulated.sh first runs this module as a script with the x86 interpreter, which
writes the reference (`python tests/test_arm64_parity.py OUT.json`), then runs pytest under
emulated aarch64 with EDGE_X86_REFERENCE naming that file. Tolerance, per asset image: the same
top-1 label, and every top-5 score within SCORE_TOLERANCE of x86's (the default model's output
is uint8 with scale 1/256, so 0.02 is five quanta; measured differences are a few quanta).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DEFAULT_MODEL, IMAGES, REPO

SCORE_TOLERANCE = 0.02
TOP_K = 5
IMAGE_SUFFIXES = (".bmp", ".jpg", ".jpeg", ".png")
# Top-1 labels the assets README states for the default model with a plain resize.
KNOWN_TOP1 = {
    "cat.bmp": "Egyptian cat",
    "bird.bmp": "chickadee",
    "grace_hopper.bmp": "military uniform",
}

Top = list[dict]  # [{"label": str, "score": float}, ...], best first


def asset_images() -> list[Path]:
    return sorted(p for p in IMAGES.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def classify_assets(python: str = sys.executable) -> dict[str, Top]:
    """Run `edge classify --json` on every asset image; image file name -> top-k list."""
    images = asset_images()
    cmd = [
        python,
        "-m",
        "edge",
        "classify",
        *map(str, images),
        "--json",
        "--top-k",
        str(TOP_K),
        "--model",
        str(DEFAULT_MODEL),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    if len(results) != len(images):
        raise RuntimeError(f"{len(images)} images but {len(results)} JSON results:\n{proc.stdout}")
    return {img.name: res["top"] for img, res in zip(images, results, strict=True)}


def top5_differences(ref: Top, got: Top) -> dict[str, float]:
    """Per label in either top-5: |score difference|. A label in only one list is compared
    with the other list's lowest score, the most its missing score can be (a near-tie at the
    fifth place swaps labels without any score moving far)."""
    ref_d = {t["label"]: t["score"] for t in ref}
    got_d = {t["label"]: t["score"] for t in got}
    diffs = {}
    for label in ref_d.keys() | got_d.keys():
        if label in ref_d and label in got_d:
            diffs[label] = abs(ref_d[label] - got_d[label])
        elif label in ref_d:
            diffs[label] = max(0.0, ref_d[label] - min(got_d.values()))
        else:
            diffs[label] = max(0.0, got_d[label] - min(ref_d.values()))
    return diffs


@pytest.fixture(scope="module")
def results(assets) -> dict[str, Top]:
    return classify_assets()


@pytest.fixture(scope="module")
def reference() -> dict:
    path = os.environ.get("EDGE_X86_REFERENCE")
    if not path:
        if platform.machine() == "x86_64":
            pytest.skip("no x86 reference: scripts/arm64-emulated.sh makes one for this test")
        pytest.fail("EDGE_X86_REFERENCE is not set: run this through scripts/arm64-emulated.sh")
    return json.loads(Path(path).read_text())


@pytest.mark.arm64
def test_classify_json_on_every_asset(results):
    assert set(results) == {p.name for p in asset_images()}
    for name, top in results.items():
        scores = [t["score"] for t in top]
        assert len(top) == TOP_K, name
        assert all(0.0 <= s <= 1.0 for s in scores), (name, scores)
        assert scores == sorted(scores, reverse=True), (name, scores)
    for name, label in KNOWN_TOP1.items():
        assert results[name][0]["label"] == label, (name, results[name])


@pytest.mark.arm64
def test_top1_and_top5_match_x86(results, reference, capsys):
    assert reference["model"] == DEFAULT_MODEL.name
    ref = reference["results"]
    assert set(ref) == set(results), "the x86 reference covers other images"
    rows, failures = [], []
    for name in sorted(ref):
        diffs = top5_differences(ref[name], results[name])
        x86_top1, our_top1 = ref[name][0]["label"], results[name][0]["label"]
        rows.append(
            f"  {name:18} x86 {x86_top1!r:22} {platform.machine()} {our_top1!r:22} "
            f"max top-5 |diff| {max(diffs.values()):.4f}"
        )
        if our_top1 != x86_top1 or max(diffs.values()) > SCORE_TOLERANCE:
            failures.append((name, ref[name], results[name]))
    with capsys.disabled():
        print(
            f"\nparity with the {reference['machine']} reference "
            f"(same top-1, top-5 scores within {SCORE_TOLERANCE}):\n" + "\n".join(rows)
        )
    assert not failures


def write_reference(out: Path) -> None:
    """The reference the emulated run compares with, made by this (x86) interpreter."""
    data = {
        "machine": platform.machine(),
        "model": DEFAULT_MODEL.name,
        "results": classify_assets(),
    }
    out.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    write_reference(Path(sys.argv[1]))
