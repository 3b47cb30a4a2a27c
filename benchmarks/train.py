"""`edge train` cost: embedding throughput, end-to-end time for 200 images x 10 classes, the
ratio to the base model's bare invoke time for the same count, int8 vs float head agreement.

    python benchmarks/train.py [--per-class 200] [--classes 10] [--threads 2]

The dataset is made from the asset photos (crops, scales, brightness, JPEG quality), 320x240.
`edge train` runs as a subprocess with an empty embedding cache (every photo is embedded), then
once more with the cache warm; medians over rounds. "Time beyond the embedding invokes" is the
run's wall time minus the time inside its own embedding invokes (which it reports), so load
from other processes on a shared machine counts against neither side; the ratio to the base
model's bare invoke time (timed around each run) is printed too.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
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


def run_train(dataset: Path, out: Path, env: dict, threads: str) -> tuple[float, float, str]:
    """Wall time of `edge train` (a new process), the time inside its embedding invokes (as
    it reports them), and its summary line."""
    cmd = [sys.executable, "-m", "edge", "train", str(dataset), "-o", str(out), "--force",
           "--base", str(DEFAULT_MODEL), "--threads", threads]
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    elapsed = time.monotonic() - t0
    if r.returncode:
        raise SystemExit(f"edge train failed:\n{r.stderr[-2000:]}")
    summary = r.stdout.strip().splitlines()[-1]
    invokes = float(re.search(r"\(invokes ([\d.]+) s\)", summary).group(1))
    return elapsed, invokes, summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--threads", default="2")
    ap.add_argument("--rounds", type=int, default=3, help="medians over this many rounds")
    args = ap.parse_args()
    cold, inside, warm, bare = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_dataset(tmp / "ds", args.per_class, args.classes)
        n = args.per_class * min(args.classes, len(subjects()))
        base = load_model(DEFAULT_MODEL, threads=int(args.threads))
        for r in range(args.rounds):
            env = {**os.environ, "EDGE_CACHE_DIR": str(tmp / f"cache{r}")}
            bare.append(float(np.median(invoke_times(base.interpreter.invoke, 1.0, 50, 400))))
            t, inv, summary = run_train(tmp / "ds", tmp / "m.tflite", env, args.threads)
            cold.append(t)
            inside.append(inv)
            bare.append(float(np.median(invoke_times(base.interpreter.invoke, 1.0, 50, 400))))
            warm.append(run_train(tmp / "ds", tmp / "m.tflite", env, args.threads)[0])
        record = training_record((tmp / "m.tflite").read_bytes())
        agreement = summary.split("int8/float agreement ")[1].split(",")[0]
    med = {k: float(np.median(v)) for k, v in
           {"cold": cold, "inside": inside, "warm": warm, "bare": bare}.items()}
    bare_s = n * med["bare"] / 1000
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"threads {args.threads}, {time.strftime('%Y-%m-%d')}, medians of {args.rounds} rounds")
    print("| figure | value |")
    print("|---|---|")
    print(f"| images x classes | {args.per_class} x {len(record['classes'])} = {n} |")
    print(f"| `edge train`, empty cache (end to end, incl. Python start) | {med['cold']:.2f} s "
          f"(rounds: {', '.join(f'{t:.2f}' for t in cold)}) |")
    print(f"| embedding throughput (end to end) | {n / med['cold']:.0f} images/s |")
    print(f"| time inside the {n} embedding invokes (reported by the run) | "
          f"{med['inside']:.2f} s |")
    beyond = [(c - i) / i for c, i in zip(cold, inside, strict=True)]
    print(f"| time beyond the embedding invokes | {100 * float(np.median(beyond)):+.1f} % "
          f"(rounds: {', '.join(f'{100 * b:+.0f} %' for b in beyond)}) |")
    print(f"| base model bare invoke (median, timed around each run) | {med['bare']:.2f} ms |")
    print(f"| ratio to {n} bare invokes ({bare_s:.2f} s) | {med['cold'] / bare_s:.2f} |")
    print(f"| `edge train`, warm cache (retrain, no photo added) | {med['warm']:.2f} s |")
    print(f"| int8 vs float head top-1 agreement | {agreement} |")
    print(f"| validation accuracy ({record['validation']['method']}) | "
          f"{record['validation']['accuracy']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
