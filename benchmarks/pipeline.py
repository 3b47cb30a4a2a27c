"""Pipeline throughput: bare invoke vs the sequential loop of the public Pi examples vs edge.

    python benchmarks/pipeline.py [--seconds 5] [--threads 1,2] [--model PATH]

One run, same model and threads for each row: a 640x480 MJPG clip is made from the asset
photos, then measured three ways:
  bare        interpreter.invoke() in a loop: the bound no pipeline can beat
  sequential  read -> BGR2RGB -> resize -> set_tensor -> invoke -> get_tensor, one thread
  edge        edge's Pipeline: capture thread || inference loop (latest-frame slot, no-drop
              so every decoded frame is classified, as fast as frames decode)
  edge, 30 fps camera   the same fed at the clip's 30 fps like a camera (drop mode): the
              latency a live camera sees
CPU-s per frame is process CPU time (all threads) over frames classified.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _assets import DEFAULT_MODEL, IMAGES  # noqa: E402

from edge import config  # noqa: E402
from edge.demo import make_clip  # noqa: E402
from edge.model import load_model  # noqa: E402
from edge.pipeline import Pipeline  # noqa: E402


def row(name, frames, wall, cpu, lat_ms):
    lat = np.asarray(lat_ms) if len(lat_ms) else np.asarray([np.nan])
    return {
        "loop": name,
        "fps": frames / wall,
        "cpu_ms_per_frame": cpu / frames * 1000,
        "lat_p50": float(np.percentile(lat, 50)),
        "lat_p99": float(np.percentile(lat, 99)),
    }


def bare(model, seconds):
    interp = model.interpreter
    model.preprocess(np.zeros((480, 640, 3), np.uint8))
    lat = []
    c0, t0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        s = time.perf_counter()
        interp.invoke()
        lat.append((time.perf_counter() - s) * 1000)
    return row("bare invoke", len(lat), time.perf_counter() - t0, time.process_time() - c0, lat)


def sequential(model, clip, seconds):
    interp = model.interpreter
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    w, h = model.input_size
    cap = cv2.VideoCapture(str(clip))
    lat = []
    c0, t0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        s = time.perf_counter()
        ok, bgr = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        x = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (w, h))
        interp.set_tensor(inp["index"], x[None])
        interp.invoke()
        interp.get_tensor(out["index"])
        lat.append((time.perf_counter() - s) * 1000)
    return row("sequential", len(lat), time.perf_counter() - t0, time.process_time() - c0, lat)


def edge(model, clip, seconds, camera: bool = False):
    """`edge run` as fast as frames decode (no-drop), or fed like a 30 fps camera."""
    cfg = config.parse("web: {enabled: false}\nservice: {stats_every_s: 0}\noutputs: []\n")
    src = cfg.source.model_copy(
        update={"kind": "opencv", "device": str(clip), "loop": True, "realtime": camera}
    )
    cfg = cfg.model_copy(update={"source": src})
    pipe = Pipeline(cfg, model, no_drop=not camera)
    c0, t0 = time.process_time(), time.perf_counter()
    pipe.run(duration=seconds)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    name = "edge run, 30 fps camera" if camera else "edge run"
    return row(name, pipe.stats.classified, wall, cpu, list(pipe.stats.latency_ms))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--threads", default="1,2")
    args = ap.parse_args()
    clip = Path(tempfile.mkdtemp()) / "bench.avi"
    make_clip(clip, IMAGES, frames_per_image=50, size=(640, 480), pan=True)
    print(f"# {platform.machine()}, {os.cpu_count()} cores; clip 640x480 MJPG, 300 frames; "
          f"{Path(args.model).name}; {args.seconds:g} s per row", flush=True)
    for n in [int(t) for t in args.threads.split(",")]:
        model = load_model(args.model, threads=n)
        rows = [bare(model, args.seconds), sequential(model, clip, args.seconds),
                edge(model, clip, args.seconds), edge(model, clip, args.seconds, camera=True)]
        b, s, e, cam = rows
        print(f"\n## interpreter threads = {n} (+1 capture thread in edge run)")
        print("| loop | fps | CPU ms/frame | latency p50 ms | latency p99 ms |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['loop']} | {r['fps']:.1f} | {r['cpu_ms_per_frame']:.2f} "
                  f"| {r['lat_p50']:.2f} | {r['lat_p99']:.2f} |")
        print(f"\ntargets: edge/bare fps {e['fps'] / b['fps']:.2f} (>= 0.95), "
              f"edge/sequential fps {e['fps'] / s['fps']:.2f} (>= 1.3), "
              f"edge p99 / invoke p50 {e['lat_p99'] / b['lat_p50']:.2f} (<= 2), "
              f"edge/bare CPU per frame {e['cpu_ms_per_frame'] / b['cpu_ms_per_frame']:.2f} "
              f"(<= 1.1); 30 fps camera: p99 / invoke p50 {cam['lat_p99'] / b['lat_p50']:.2f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
