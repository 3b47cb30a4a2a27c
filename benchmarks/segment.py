"""DeepLabV3 MobileNetV2 dm1.0 vs dm0.5: invoke time and how far their class maps agree.

    python benchmarks/segment.py [--rounds 5] [--invokes 5] [--threads 2]

Invokes alternate between the two models in rounds (so a busy shared machine slows both
alike); the figures are medians over every invoke and the ratio of the medians. Agreement is
`equal / (a.size + b.size - equal)` of the two class maps, per asset photo, through
`edge segment`'s own path (edge.segment.infer_map). Paste the output into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _assets import ASSETS, IMAGES  # noqa: E402

from edge.model import load_model  # noqa: E402
from edge.segment import infer_map  # noqa: E402

MODELS = {
    "dm1.0": ASSETS / "models" / "deeplabv3_mnv2_pascal_quant.tflite",
    "dm0.5": ASSETS / "models" / "deeplabv3_mnv2_dm05_pascal_quant.tflite",
}
LABELS = ASSETS / "models" / "pascal_voc_segmentation_labels.txt"
PHOTOS = ("cat.bmp", "bird.bmp", "cityscapes_segmentation.bmp", "grace_hopper.bmp",
          "parrot.jpg", "owl.jpg", "sunflower.bmp", "cat_720p.jpg")


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    equal = int(np.count_nonzero(a == b))
    return equal / (a.size + b.size - equal)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--invokes", type=int, default=5, help="per model per round")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    models = {k: load_model(p, labels=LABELS, threads=args.threads) for k, p in MODELS.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    for m in models.values():
        m.invoke()  # warm-up
    for _ in range(args.rounds):
        for k, m in models.items():
            for _ in range(args.invokes):
                t0 = time.perf_counter()
                m.interpreter.invoke()
                times[k].append((time.perf_counter() - t0) * 1000)
    print(f"# {platform.machine()}, {os.cpu_count()} cores, {args.threads} threads, "
          f"{args.rounds} rounds x {args.invokes} invokes per model, interleaved")
    print("| model | invokes | median ms | p90 ms |")
    print("|---|---|---|---|")
    for k, t in times.items():
        print(f"| {k} | {len(t)} | {np.median(t):.1f} | {np.percentile(t, 90):.1f} |")
    ratio = np.median(times["dm1.0"]) / np.median(times["dm0.5"])
    print(f"\ndm1.0 / dm0.5 median invoke time: {ratio:.2f}x\n")
    print("| photo | agreement dm0.5 vs dm1.0 | classes dm1.0 (share) | classes dm0.5 (share) |")
    print("|---|---|---|---|")
    scores = []
    for name in PHOTOS:
        bgr = cv2.imread(str(IMAGES / name))
        if bgr is None:
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        maps = {k: infer_map(m, rgb) for k, m in models.items()}
        a = agreement(maps["dm1.0"], maps["dm0.5"])
        scores.append(a)

        def top(k: str, cmap: np.ndarray) -> str:
            share = np.bincount(cmap.ravel(), minlength=21) / cmap.size
            order = [c for c in np.argsort(-share) if share[c] >= 0.01][:3]
            return ", ".join(f"{models[k].labels[c]} {share[c]:.0%}" for c in order)

        print(f"| {name} | {a:.3f} | {top('dm1.0', maps['dm1.0'])} | "
              f"{top('dm0.5', maps['dm0.5'])} |")
    print(f"\nmean agreement over {len(scores)} photos: {np.mean(scores):.3f} "
          f"(min {min(scores):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
