"""`edge train` cost: embedding throughput, end-to-end time for 200 images x 10 classes, the
ratio to the base model's bare invoke time for the same count, int8 vs float head agreement.

    python benchmarks/train.py [--per-class 200] [--classes 10] [--threads 2]

The dataset is made from the asset photos (crops, scales, brightness, JPEG quality), 320x240.
`edge train` runs as a subprocess with an empty embedding cache (every photo is embedded), then
once more with the cache warm. The bare invoke time is the base model's median invoke, timed in
the same run right after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _assets import DEFAULT_MODEL, IMAGES, REPO  # noqa: E402

from edge.metadata import training_record  # noqa: E402
from edge.model import invoke_times, load_model  # noqa: E402


def subjects() -> list[tuple[str, np.ndarray]]:
    """Ten visually distinct subjects: the asset photos and two crops of the bigger ones."""
    out = [(p.stem, cv2.imread(str(p))) for p in sorted(IMAGES.iterdir())
           if p.suffix.lower() in (".bmp", ".jpg")]
    street = cv2.imread(str(IMAGES / "cityscapes_segmentation.bmp"))
    cat = cv2.imread(str(IMAGES / "cat_720p.jpg"))
    if street is not None:
        out.append(("street_left", street[:, : street.shape[1] // 3]))
    if cat is not None:
        out.append(("cat_corner", cat[: cat.shape[0] // 2, : cat.shape[1] // 2]))
    return out


def make_dataset(root: Path, per_class: int, classes: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name, bgr in subjects()[:classes]:
        d = root / name
        d.mkdir(parents=True)
        h, w = bgr.shape[:2]
        for i in range(per_class):
            s = rng.uniform(0.6, 1.0)
            ch, cw = int(h * s), int(w * s)
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            v = cv2.resize(bgr[y0 : y0 + ch, x0 : x0 + cw], (320, 240),
                           interpolation=cv2.INTER_AREA)
            v = np.clip(v.astype(np.float32) * rng.uniform(0.7, 1.3), 0, 255).astype(np.uint8)
            cv2.imwrite(str(d / f"{i:04d}.jpg"), v,
                        [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(50, 95))])


def run_train(dataset: Path, out: Path, env: dict, threads: str) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "edge", "train", str(dataset), "-o", str(out), "--force",
           "--base", str(DEFAULT_MODEL), "--threads", threads]
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    elapsed = time.monotonic() - t0
    if r.returncode:
        raise SystemExit(f"edge train failed:\n{r.stderr[-2000:]}")
    return elapsed, r.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--threads", default="2")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_dataset(tmp / "ds", args.per_class, args.classes)
        n = args.per_class * min(args.classes, len(subjects()))
        env = {**os.environ, "EDGE_CACHE_DIR": str(tmp / "cache")}
        cold, stdout = run_train(tmp / "ds", tmp / "m.tflite", env, args.threads)
        warm, _ = run_train(tmp / "ds", tmp / "m.tflite", env, args.threads)
        base = load_model(DEFAULT_MODEL, threads=int(args.threads))
        bare = float(np.median(invoke_times(base.interpreter.invoke, 5.0, 50, 400)))
        record = training_record((tmp / "m.tflite").read_bytes())
        summary = stdout.strip().splitlines()[-1]
        agreement = summary.split("int8/float agreement ")[1].split(",")[0]
    invokes_s = n * bare / 1000
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"threads {args.threads}, {time.strftime('%Y-%m-%d')}")
    print(json.dumps({"images": n, "classes": len(record["classes"]),
                      "validation": record["validation"]}))
    print("| figure | value |")
    print("|---|---|")
    print(f"| images x classes | {args.per_class} x {len(record['classes'])} = {n} |")
    print(f"| base model bare invoke (median) | {bare:.2f} ms |")
    print(f"| {n} bare invokes | {invokes_s:.2f} s |")
    print(f"| `edge train`, empty cache (end to end, incl. Python start) | {cold:.2f} s |")
    print(f"| embedding throughput (end to end) | {n / cold:.0f} images/s |")
    print(f"| ratio to the bare invokes | {cold / invokes_s:.2f} "
          f"(time beyond the invokes: {100 * (cold - invokes_s) / invokes_s:+.1f} %) |")
    print(f"| `edge train`, warm cache (retrain, no photo added) | {warm:.2f} s |")
    print(f"| int8 vs float head top-1 agreement | {agreement} |")
    print(f"| validation accuracy ({record['validation']['method']}) | "
          f"{record['validation']['accuracy']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
