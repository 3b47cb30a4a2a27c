"""Cost per frame of the default `box` resize against plain `linear` (and `area`).

    python benchmarks/resize.py [--rounds 5] [--seconds 0.5]

Frame -> 224x224 uint8 tensor through `edge.preprocess.ModelInput` (what the capture thread
runs per frame and region), one OpenCV thread as in `edge run`, for camera frame sizes. Modes
take turns within each round (a shared machine drifts); the median over rounds is printed, and
box's extra cost as a ratio and in ms within each round.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import cv2
import numpy as np

from edge.preprocess import ModelInput, box_factors

MODES = ("linear", "box", "area")
FRAMES = [(640, 480), (1280, 720), (1920, 1080)]


def ms_per_call(fn, frame, seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn(frame)
        n += 1
    return (time.perf_counter() - t0) / n * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.5, help="per mode, frame size and round")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    identity = np.arange(256, dtype=np.uint8)
    inputs = {m: ModelInput.of((224, 224), m, identity) for m in MODES}
    print(f"# {platform.machine()}, {os.cpu_count()} cores, OpenCV {cv2.__version__}, one "
          f"OpenCV thread; {args.rounds} rounds of {args.seconds:g} s per cell")
    print("| frame | box factors | linear ms | box ms | area ms | box - linear ms | box/linear |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for w, h in FRAMES:
        frame = rng.integers(0, 256, (h, w, 3), np.uint8)
        rounds = [{m: ms_per_call(inputs[m], frame, args.seconds) for m in MODES}
                  for _ in range(args.rounds)]
        med = {m: float(np.median([r[m] for r in rounds])) for m in MODES}
        extra = float(np.median([r["box"] - r["linear"] for r in rounds]))
        ratio = float(np.median([r["box"] / r["linear"] for r in rounds]))
        kx, ky = box_factors(frame.shape, (224, 224))
        print(f"| {w}x{h} | {kx}x{ky} | {med['linear']:.3f} | {med['box']:.3f} "
              f"| {med['area']:.3f} | {extra:+.3f} | {ratio:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
