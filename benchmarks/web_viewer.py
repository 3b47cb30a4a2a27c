"""Pipeline fps with one viewer of the web page attached vs none (target: within 5%).

    python benchmarks/web_viewer.py [--seconds 30] [--window 1] [--threads 2] [--preview-fps 5]

edge's Pipeline runs at full speed (no-drop, a 640x480 MJPG clip read as fast as it decodes)
with the web server started as `edge run` starts it. A viewer in another process does what the
page does — reads /stream.mjpg, polls /api/status 4 times a second and /api/events once a
second — and is switched on and off every `--window` seconds during one run. Comparing each
window with a viewer against the window just before it cancels the load of anything else on
the machine (on a shared machine separate runs differ by far more than 5%). The cost of one
preview frame (draw the boxes and labels, JPEG-encode 640x480) is also timed on its own.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from itertools import pairwise
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _assets import DEFAULT_MODEL, IMAGES  # noqa: E402

from edge import config  # noqa: E402
from edge.demo import make_clip  # noqa: E402
from edge.model import load_model  # noqa: E402
from edge.pipeline import Pipeline, make_regions  # noqa: E402
from edge.web import render, start_web  # noqa: E402

CHAIN = """
postprocess:
  - group: {cat: ["tabby*", "tiger cat", "Egyptian cat"], bird: [chickadee, macaw, magpie]}
  - smooth: {method: ema, alpha: 0.6}
  - hysteresis: {enter: 0.6, exit: 0.3, labels: [cat, bird]}
"""

VIEWER = """
import sys, threading, time, urllib.request
base, on = sys.argv[1], threading.Event()

def stream():
    while True:
        on.wait()
        try:
            with urllib.request.urlopen(base + "stream.mjpg", timeout=2) as r:
                while on.is_set():
                    r.readline()
        except OSError:
            pass

def poll(path, every):
    while True:
        on.wait()
        try:
            urllib.request.urlopen(base + path, timeout=2).read()
        except OSError:
            pass
        time.sleep(every)

for args in [(), ("api/status", 0.25), ("api/events?since=0", 1.0)]:
    threading.Thread(target=poll if args else stream, args=args, daemon=True).start()
for line in sys.stdin:
    on.set() if line.strip() == "on" else on.clear()
"""


def measure(model, clip: Path, seconds: float, window: float, preview_fps: float) -> dict:
    cfg = config.parse(f"web: {{bind: '127.0.0.1:0', preview_fps: {preview_fps}}}\n"
                       f"service: {{stats_every_s: 0}}\noutputs: []\n{CHAIN}")
    src = cfg.source.model_copy(
        update={"kind": "opencv", "device": str(clip), "loop": True, "realtime": False}
    )
    cfg = cfg.model_copy(update={"source": src})
    pipe = Pipeline(cfg, model, no_drop=True)
    web = start_web(cfg.web, pipe)
    viewer = subprocess.Popen([sys.executable, "-c", VIEWER, web.url], stdin=subprocess.PIPE,
                              text=True)
    marks: list[tuple[float, int, bool]] = []  # (time, frames classified, viewer on from then)
    done = threading.Event()

    def toggle() -> None:
        while pipe.stats.classified == 0 and not done.wait(0.05):
            pass
        done.wait(1.0)  # warm-up
        on = False
        while not done.is_set():
            on = not on
            viewer.stdin.write("on\n" if on else "off\n")
            viewer.stdin.flush()
            marks.append((time.monotonic(), pipe.stats.classified, on))
            done.wait(window)

    toggler = threading.Thread(target=toggle, daemon=True)
    toggler.start()
    try:
        pipe.run(duration=seconds)
    finally:
        done.set()
        toggler.join(5)
        viewer.kill()
        web.stop()
    windows = [((n1 - n0) / (t1 - t0), on)
               for (t0, n0, on), (t1, n1, _) in pairwise(marks)]
    pairs = [(a, b) for (a, a_on), (b, b_on) in pairwise(windows)
             if not a_on and b_on]
    return {
        "none": statistics.mean(a for a, _ in pairs),
        "one": statistics.mean(b for _, b in pairs),
        "ratio": statistics.median(b / a for a, b in pairs),
        "pairs": len(pairs),
        "encoded": web.app.preview.encoded,
        "on_s": len(pairs) * window,
    }


def render_ms(model, clip: Path, n: int = 200) -> float:
    """Milliseconds to draw and encode one preview frame from the clip."""
    import cv2

    from edge.capture.base import Frame

    cfg = config.parse(CHAIN + "rois: [{name: feeder, box: [0.1, 0.1, 0.6, 0.7]}]\n")
    regions = make_regions(cfg, model.labels, model.name)
    _, bgr = cv2.VideoCapture(str(clip)).read()
    frame = Frame(1, time.time(), time.monotonic(), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    t0 = time.perf_counter()
    for _ in range(n):
        render(frame, regions, {})
    return (time.perf_counter() - t0) / n * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--window", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--preview-fps", type=float, default=5.0)
    args = ap.parse_args()
    clip = Path(tempfile.mkdtemp()) / "bench.avi"
    make_clip(clip, IMAGES, frames_per_image=50, size=(640, 480), pan=True)
    model = load_model(args.model, threads=args.threads)
    load = os.getloadavg()[0]
    r = measure(model, clip, args.seconds, args.window, args.preview_fps)
    ms = render_ms(model, clip)
    print(f"# {platform.machine()}, {os.cpu_count()} cores (load average {load:.1f}); clip "
          f"640x480 MJPG, no-drop at full speed; {Path(args.model).name}, {args.threads} "
          f"threads; preview {args.preview_fps:g} fps; {r['pairs']} pairs of {args.window:g} s "
          "windows (without, then with a viewer)\n")
    print("| viewers | pipeline fps (mean of windows) |\n|---|---|")
    print(f"| 0 | {r['none']:.1f} |\n| 1 (stream + page polling) | {r['one']:.1f} |")
    print(f"\nratio with / without a viewer: {r['ratio']:.3f} (median of pairs; target >= 0.95)")
    print(f"preview frames encoded: {r['encoded']} in {r['on_s']:g} s with a viewer")
    print(f"preview frame (draw + JPEG 640x480): {ms:.2f} ms -> at {args.preview_fps:g} fps "
          f"{ms * args.preview_fps / 10:.1f}% of one core", flush=True)
    return 0 if r["ratio"] >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
