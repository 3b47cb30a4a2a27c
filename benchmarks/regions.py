"""Per-region rates: CPU per second of a whole-frame model plus a feeder model at falling rates.

    python benchmarks/regions.py [--rounds 3] [--seconds 6] [--threads 1]

A 640x480 MJPG clip of the bird photo is played like a 30 fps camera (realtime, looping) into
edge's Pipeline with a whole-frame region on the default ImageNet model and a feeder region
on the iNat bird model, its rate falling: every frame, every_s 0.2, every_s 1; then the scene
alone, and the feeder alone at every_s 1 (the loop then takes no frame before one is due).
Printed per variant: process CPU-s per wall-s (all threads: capture, decode, invokes), the
invokes per model per second, and the CPU ratio to "scene + feeder every frame". The variants
take turns `--rounds` times and the median of each ratio within a round is printed with its
range: the machine is shared, so absolute figures drift, ratios within one run do not.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _assets import ASSETS, DEFAULT_MODEL, IMAGES  # noqa: E402

from edge import config  # noqa: E402
from edge.demo import make_clip  # noqa: E402
from edge.model import load_model, usable_cores  # noqa: E402
from edge.pipeline import Pipeline  # noqa: E402
from edge.regions import prepare_models  # noqa: E402

BIRD = ASSETS / "models" / "mobilenet_v2_1.0_224_inat_bird_quant.tflite"
BIRD_LABELS = ASSETS / "models" / "inat_bird_labels.txt"
SCENE = "  - {name: scene, box: [0, 0, 1, 1]}\n"
FEEDER = ("  - {{name: feeder, box: [0.1, 0.1, 0.9, 0.9], model: {{path: {m}, labels: {lb}}}"
          "{rate}}}\n")
VARIANTS = {  # name -> (scene?, feeder rate: None = no feeder, "" = every frame)
    "scene + feeder every frame": (True, ""),
    "scene + feeder every_s 0.2": (True, ", every_s: 0.2"),
    "scene + feeder every_s 1": (True, ", every_s: 1"),
    "scene alone": (True, None),
    "feeder alone, every_s 1": (False, ", every_s: 1"),
}


def config_for(clip: Path, threads: int, scene: bool, rate: str | None):
    rois = (SCENE if scene else "") + (
        "" if rate is None else FEEDER.format(m=BIRD, lb=BIRD_LABELS, rate=rate))
    text = (f"web: {{enabled: false}}\noutputs: []\nservice: {{stats_every_s: 0}}\n"
            f"model: {{path: {DEFAULT_MODEL}, threads: {threads}}}\n"
            f"source: {{kind: opencv, device: '{clip}', loop: true, realtime: true}}\n"
            f"postprocess: [{{hysteresis: {{enter: 0.5, exit: 0.3}}}}]\nrois:\n{rois}")
    return config.parse(text)


def measure(cfg, top, models, seconds: float) -> dict:
    pipe = Pipeline(cfg, top, models=models)
    c0, t0 = time.process_time(), time.monotonic()
    pipe.run(duration=seconds)
    wall, cpu = time.monotonic() - t0, time.process_time() - c0
    s = pipe.stats.summary()
    return {"cpu_per_s": cpu / wall, "wall": wall,
            "invokes": {k: v / wall for k, v in s["invokes"].items()},
            "dropped": s["frames_dropped"], "captured": s["frames_captured"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--threads", type=int, default=1, help="the scene model's threads")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    clip = make_clip(tmp / "bird.avi", IMAGES, names=("bird.bmp",), frames_per_image=300)
    top = load_model(DEFAULT_MODEL, threads=args.threads)
    cfgs = {name: config_for(clip, args.threads, *v) for name, v in VARIANTS.items()}
    models = prepare_models(cfgs["scene + feeder every frame"], top)  # loaded once, shared
    bird = next(iter(models.values()))
    print(f"{platform.processor() or platform.machine()}, {usable_cores()} usable cores "
          f"(shared with other developers: compare ratios, not absolute figures); "
          f"scene {top.name} {top.threads} thread(s), feeder {bird.name} {bird.threads} "
          f"thread(s); 30 fps camera-like clip, {args.seconds:g} s per variant, "
          f"{args.rounds} rounds")
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, cfg in cfgs.items():
            runs[name].append(measure(cfg, top, models if VARIANTS[name][1] is not None
                                      else {}, args.seconds))
    base = "scene + feeder every frame"
    print(f"\n| variant | CPU-s per s | ratio to every frame | {top.name} invokes/s | "
          f"{bird.name} invokes/s |\n|---|---|---|---|---|")
    for name, rs in runs.items():
        cpu = np.array([r["cpu_per_s"] for r in rs])
        ratio = cpu / np.array([r["cpu_per_s"] for r in runs[base]])
        scene_inv, bird_inv = (np.median([r["invokes"].get(m, 0.0) for r in rs])
                               for m in (top.name, bird.name))
        print(f"| {name} | {np.median(cpu):.2f} | {np.median(ratio):.2f} "
              f"({ratio.min():.2f}-{ratio.max():.2f}) | {scene_inv:.1f} | {bird_inv:.1f} |")


if __name__ == "__main__":
    main()
