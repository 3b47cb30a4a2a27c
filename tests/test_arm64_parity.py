"""aarch64 / x86 parity: `edge classify` gives the same answers on both architectures.

scripts/arm64-emulated.sh first runs this module as a script with the x86 interpreter, which
writes the reference (`python tests/test_arm64_parity.py OUT.json`), then runs pytest under
emulated aarch64 with EDGE_X86_REFERENCE naming that file. Tolerance, per asset image: the same
top-1 label, and every top-5 score within SCORE_TOLERANCE of x86's (the default model's output
is uint8 with scale 1/256, so 0.02 is five quanta; measured: at most one quantum, given the
bit-identical INTER_LINEAR_EXACT resize, see docs/arm64.md).
The x86 side also writes the default resize's tensors for a set of frames (OUT.tensors.npz),
and JPEG frames with their decodes at full and reduced scale (OUT.jpeg.npz, OUT.decoded.npz),
which the emulated side must reproduce byte for byte.
The x86 suite also checks that the script's install step rejects an x86-only wheel.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import DEFAULT_MODEL, IMAGES, REPO

from edge.preprocess import ModelInput

SCORE_TOLERANCE = 0.02
TOP_K = 5
IMAGE_SUFFIXES = (".bmp", ".jpg", ".jpeg", ".png")
# Top-1 labels the assets README states for the default model with a plain resize.
KNOWN_TOP1 = {
    "cat.bmp": "Egyptian cat",
    "bird.bmp": "chickadee",
    "grace_hopper.bmp": "military uniform",
}

Top = list[dict]  # [{"label": str, "score": float, ...}, ...], best first


def asset_images() -> list[Path]:
    return sorted(p for p in IMAGES.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def classify_assets(python: str = sys.executable) -> dict[str, dict]:
    """Run `edge classify --json` on every asset image: image file name -> its JSON result."""
    images = asset_images()
    options = ["--json", "--top-k", str(TOP_K), "--model", str(DEFAULT_MODEL)]
    cmd = [python, "-m", "edge", "classify", *map(str, images), *options]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return {Path(res["image"]).name: res for res in results}


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


# Frames for the resize parity: seeded noise (numpy's PCG64 gives the same bits everywhere)
# and the BMP photos tiled to camera sizes (BMP decoding is a copy), at the shrink factors a
# camera meets: 640x480 -> 2x2, 1280x720 -> 5x3, 1920x1080 -> 8x4, 513x343 -> 2x1.
PARITY_FRAMES = [(640, 480), (1280, 720), (1920, 1080), (513, 343)]
PARITY_INPUTS = [((224, 224), None), ((128, 128), None), ((224, 224), (0.2, 0.1, 0.9, 0.8))]


def parity_frames() -> dict[str, np.ndarray]:
    import cv2

    frames = {}
    for w, h in PARITY_FRAMES:
        frames[f"noise{w}x{h}"] = np.random.default_rng(w * h).integers(0, 256, (h, w, 3),
                                                                        np.uint8)
        for photo in sorted(IMAGES.glob("*.bmp"))[:2]:
            img = cv2.imread(str(photo))
            reps = (-(-h // img.shape[0]), -(-w // img.shape[1]), 1)
            frames[f"{photo.stem}{w}x{h}"] = np.ascontiguousarray(np.tile(img, reps)[:h, :w])
    return frames


def parity_tensors() -> dict[str, np.ndarray]:
    """Every parity frame through the default `box` and the `linear` resize, raw uint8."""
    identity = np.arange(256, dtype=np.uint8)
    out = {}
    for name, frame in parity_frames().items():
        for size, box in PARITY_INPUTS:
            for mode in ("box", "linear"):
                key = f"{name}-{mode}-{size[0]}" + ("-roi" if box else "")
                out[key] = ModelInput.of(size, mode, identity)(frame, box)
    return out


def tensor_reference_path(json_path: Path) -> Path:
    return json_path.with_suffix(".tensors.npz")


def jpeg_reference_path(json_path: Path) -> Path:
    return json_path.with_suffix(".jpeg.npz")


# MJPG camera frames: the photos tiled to camera sizes and JPEG-encoded on x86 (the reference
# carries the bytes: an encoder need not match), decoded at full size and at the scale the
# capture thread uses for a 224x224 box-resized model (edge.capture.opencv.decode_scale).
JPEG_FRAMES = [(640, 480), (1280, 720), (1920, 1080)]


def parity_jpegs() -> dict[str, np.ndarray]:
    import cv2

    out = {}
    for name, frame in parity_frames().items():
        if not name.startswith("noise") and tuple(frame.shape[1::-1]) in JPEG_FRAMES:
            out[name] = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
    return out


def decoded_tensors(jpegs) -> dict[str, np.ndarray]:
    """Each JPEG decoded full and scaled, then through the box resize: raw uint8 tensors."""
    import cv2

    from edge.decode import decode_flags, decode_scale

    identity = np.arange(256, dtype=np.uint8)
    fit = ModelInput.of((224, 224), "box", identity)
    out = {}
    for name in jpegs.files if hasattr(jpegs, "files") else jpegs:
        jpg = jpegs[name]
        size = cv2.imdecode(jpg, cv2.IMREAD_COLOR).shape[1::-1]
        for scale in sorted({1, decode_scale(size, (224, 224))}):
            out[f"{name}-scale{scale}"] = fit(cv2.imdecode(jpg, decode_flags(scale)))
    return out


def assert_byte_identical(what: str, ref, ours: dict, machine: str, capsys) -> None:
    """Every tensor of `ours` is the very bytes of the reference's (printed as a count)."""
    assert set(ref.files) == set(ours)
    differing = {k: int(np.count_nonzero(ref[k] != v)) for k, v in ours.items()
                 if ref[k].shape != v.shape or not np.array_equal(ref[k], v)}
    with capsys.disabled():
        print(f"\n{what} parity with {machine}: {len(ours) - len(differing)}/{len(ours)} "
              "tensors byte-identical" + (f"; differing: {differing}" if differing else ""))
    assert not differing


@pytest.mark.arm64
def test_resize_tensors_are_byte_identical_to_x86(reference, capsys):
    """The default resize gives the very bytes x86 gave (not merely close scores)."""
    ref = np.load(tensor_reference_path(Path(os.environ["EDGE_X86_REFERENCE"])))
    assert_byte_identical("resize", ref, parity_tensors(), reference["machine"], capsys)


@pytest.mark.arm64
def test_jpeg_decodes_full_and_scaled_are_byte_identical_to_x86(reference, capsys):
    """libjpeg's decode, at full size and DCT-scaled (the capture thread's reduced decode),
    gives x86's very bytes after the box resize."""
    path = Path(os.environ["EDGE_X86_REFERENCE"])
    ours = decoded_tensors(np.load(jpeg_reference_path(path)))
    assert any(k.endswith("-scale2") for k in ours) and any(k.endswith("-scale4") for k in ours)
    assert_byte_identical("JPEG decode", np.load(path.with_suffix(".decoded.npz")), ours,
                          reference["machine"], capsys)


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
    for name, res in results.items():
        scores = [t["score"] for t in res["top"]]
        assert 1 <= len(scores) <= TOP_K, (name, res)  # labels scoring 0 are not listed
        assert all(0.0 < s <= 1.0 for s in scores), (name, scores)
        assert scores == sorted(scores, reverse=True), (name, scores)
        assert res["model"] == DEFAULT_MODEL.stem, res
    for name, label in KNOWN_TOP1.items():
        assert results[name]["top"][0]["label"] == label, (name, results[name]["top"])


@pytest.mark.arm64
def test_top1_and_top5_match_x86(results, reference, capsys):
    ref = reference["results"]
    assert set(ref) == set(results), "the x86 reference covers other images"
    rows, failures = [], []
    for name in sorted(ref):
        x86, ours = ref[name], results[name]
        worst = max(top5_differences(x86["top"], ours["top"]).values())
        x86_top1, our_top1 = x86["top"][0]["label"], ours["top"][0]["label"]
        rows.append(f"  {name:17} {x86_top1[:24]:24} {our_top1[:24]:24} {worst:.4f}")
        same_setup = (x86["backend"], x86["xnnpack_partitions"]) == (
            ours["backend"],
            ours["xnnpack_partitions"],
        )
        if our_top1 != x86_top1 or worst > SCORE_TOLERANCE or not same_setup:
            failures.append(name)
    here, there = platform.machine(), reference["machine"]
    header = f"  {'image':17} {'top-1 ' + there:24} {'top-1 ' + here:24} max top-5 |diff|"
    with capsys.disabled():
        setup = next(iter(results.values()))
        print(
            f"\nparity with the {there} reference: same top-1, top-5 scores within "
            f"{SCORE_TOLERANCE} ({here}: backend {setup['backend']}, XNNPACK partitions "
            f"{setup['xnnpack_partitions']}, threads {setup['threads']})\n{header}\n"
            + "\n".join(rows)
        )
    assert not failures, f"outside tolerance or another backend/XNNPACK setup: {failures}"


def test_top5_differences_bounds_a_label_that_left_the_top5():
    ref = [
        {"label": a, "score": s}
        for a, s in [("a", 0.5), ("b", 0.2), ("c", 0.1), ("d", 0.05), ("e", 0.04)]
    ]
    got = [*ref[:4], {"label": "f", "score": 0.035}]  # "e" fell to sixth, "f" rose to fifth
    assert top5_differences(ref, ref) == dict.fromkeys("abcde", 0.0)
    diffs = top5_differences(ref, got)
    assert diffs["e"] == pytest.approx(0.005) and diffs["f"] == 0.0
    moved = [{"label": "a", "score": 0.53}, *ref[1:]]
    assert SCORE_TOLERANCE < top5_differences(ref, moved)["a"] == pytest.approx(0.03)


def x86_only_wheel(folder: Path) -> Path:
    """A wheel that installs on x86_64 Linux only, like a dependency pinned to an x86 build."""
    tag = "cp311-cp311-manylinux_2_17_x86_64"
    wheel = folder / f"x86only-0.1-{tag}.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("x86only/__init__.py", "")
        z.writestr(
            "x86only-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: x86only\nVersion: 0.1\n"
        )
        z.writestr(
            "x86only-0.1.dist-info/WHEEL",
            f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {tag}\n",
        )
        z.writestr("x86only-0.1.dist-info/RECORD", "")
    return wheel


def can_isolate_network() -> bool:
    return (
        bool(shutil.which("unshare"))
        and subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0
    )


@pytest.mark.skipif(platform.machine() != "x86_64", reason="checks the x86 side's install step")
@pytest.mark.skipif(not shutil.which("qemu-aarch64-static"), reason="needs qemu-user-static")
def test_an_x86_only_wheel_fails_the_aarch64_install(tmp_path):
    if not can_isolate_network():
        pytest.skip("needs `unshare --net` (root) to show the check makes no download")
    wheel = x86_only_wheel(tmp_path)
    env = {
        **os.environ,
        "EDGE_ARM64_CACHE": str(tmp_path / "cache"),
        "EDGE_HOST_PYTHON": sys.executable,
        "EDGE_ARM64_EXTRA_REQS": f"x86only@{wheel.as_uri()}",
    }
    script = REPO / "scripts" / "arm64-emulated.sh"
    proc = subprocess.run(
        ["unshare", "--net", "bash", str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert f"{wheel.name} is not a supported wheel on this platform" in out
    assert "pip found no aarch64 build of a requirement" in out
    assert not list((tmp_path / "cache").glob("sysroot-*")), "failed only after building more"


def write_reference(out: Path) -> None:
    """The reference the emulated run compares with, made by this (x86) interpreter."""
    data = {"machine": platform.machine(), "results": classify_assets()}
    out.write_text(json.dumps(data, indent=1) + "\n")
    with open(tensor_reference_path(out), "wb") as f:
        np.savez_compressed(f, **parity_tensors())
    jpegs = parity_jpegs()
    with open(jpeg_reference_path(out), "wb") as f:
        np.savez_compressed(f, **jpegs)
    with open(out.with_suffix(".decoded.npz"), "wb") as f:
        np.savez_compressed(f, **decoded_tensors(jpegs))


if __name__ == "__main__":
    write_reference(Path(sys.argv[1]))
