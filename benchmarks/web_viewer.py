"""Pipeline fps with one viewer of the web page attached vs none (target: within 5%).

    python benchmarks/web_viewer.py [--seconds 60] [--window 1] [--threads 2] [--preview-fps 5]
                                    [--viewer page|stream|idle]

edge's Pipeline runs at full speed (no-drop, a 640x480 MJPG clip read as fast as it decodes)
with the web server started as `edge run` starts it. A viewer in another process does what the
page does — reads /stream.mjpg, polls /api/status 4 times a second and /api/events once a
second (`--viewer stream`: only the stream; `idle`: connected to nothing, the A/A control) —
and is switched on and off every `--window` seconds during one run. Each window with a viewer
is compared with the mean of the windows on either side, which cancels the load of anything
else on the machine (on a shared machine separate runs differ by far more than 5%); the same
comparison among windows without a viewer gives the noise floor. The cost of one preview frame
(draw the boxes and labels, JPEG-encode 640x480) is also timed on its own.
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
from edge.pipeline import Pipeline  # noqa: E402
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

for args in [(), ("api/status", 0.25), ("api/events?since=0", 1.0)][:int(sys.argv[2])]:
    threading.Thread(target=poll if args else stream, args=args, daemon=True).start()
for line in sys.stdin:
    on.set() if line.strip() == "on" else on.clear()
"""


PARTS = {"page": 3, "stream": 1, "idle": 0}  # how many of the viewer's threads run


def measure(model, clip: Path, seconds: float, window: float, preview_fps: float,
            viewer_kind: str = "page", camera: bool = False) -> dict:
    """Alternate windows without/with a viewer in one run; camera: the clip paced at 30 fps."""
    cfg = config.parse(f"web: {{bind: '127.0.0.1:0', preview_fps: {preview_fps}}}\n"
                       f"service: {{stats_every_s: 0}}\noutputs: []\n{CHAIN}")
    src = cfg.source.model_copy(
        update={"kind": "opencv", "device": str(clip), "loop": True, "realtime": camera}
    )
    cfg = cfg.model_copy(update={"source": src})
    pipe = Pipeline(cfg, model, no_drop=not camera)
    web = start_web(cfg.web, pipe)
    viewer = subprocess.Popen([sys.executable, "-c", VIEWER, web.url, str(PARTS[viewer_kind])],
                              stdin=subprocess.PIPE, text=True)
    marks: list[tuple] = []  # (time, frames classified, process CPU s, viewer on from then)
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
            marks.append((time.monotonic(), pipe.stats.classified, time.process_time(), on))
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
    fps = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in pairwise(marks)]
    cpu = [(b[2] - a[2]) / (b[0] - a[0]) for a, b in pairwise(marks)]  # cores busy
    on = [m[3] for m in marks[:-1]]
    # A window with a viewer against the mean of its two neighbours (without); a window
    # without against the two nearest windows without (two away): the noise floor.
    ratio = {True: [], False: []}
    for i in range(2, len(fps) - 2):
        gap = 1 if on[i] else 2  # off windows: compare with the off windows two away
        ratio[on[i]].append(fps[i] / ((fps[i - gap] + fps[i + gap]) / 2))
    mean = lambda xs, state: statistics.mean(  # noqa: E731
        x for x, o in zip(xs, on, strict=True) if o == state)
    return {
        "none": mean(fps, False),
        "one": mean(fps, True),
        "cpu_none": mean(cpu, False),
        "cpu_one": mean(cpu, True),
        "ratio": statistics.median(ratio[True]),
        "noise": statistics.median(abs(r - 1) for r in ratio[False]),
        "windows": len(ratio[True]),
        "encoded": web.app.preview.encoded,
        "on_s": sum(on) * window,
    }


def render_ms(model, clip: Path, n: int = 200) -> float:
    """Milliseconds to draw and encode one preview frame from the clip."""
    import cv2

    from edge.capture.base import Frame

    cfg = config.parse(CHAIN + "rois: [{name: feeder, box: [0.1, 0.1, 0.6, 0.7]}]\n")
    regions = Pipeline(cfg, model).view.regions
    _, bgr = cv2.VideoCapture(str(clip)).read()
    frame = Frame(1, time.time(), time.monotonic(), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    t0 = time.perf_counter()
    for _ in range(n):
        render(frame, regions, {})
    return (time.perf_counter() - t0) / n * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--window", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--preview-fps", type=float, default=5.0)
    ap.add_argument("--viewer", choices=list(PARTS), default="page")
    args = ap.parse_args()
    clip = Path(tempfile.mkdtemp()) / "bench.avi"
    make_clip(clip, IMAGES, frames_per_image=50, size=(640, 480), pan=True)
    model = load_model(args.model, threads=args.threads)
    load = os.getloadavg()[0]
    full = measure(model, clip, args.seconds, args.window, args.preview_fps, args.viewer)
    cam = measure(model, clip, args.seconds / 2, args.window, args.preview_fps, args.viewer,
                  camera=True)
    ms = render_ms(model, clip)
    print(f"# {platform.machine()}, {os.cpu_count()} cores (load average {load:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after); clip 640x480 MJPG; {Path(args.model).name}, "
          f"{args.threads} threads; preview {args.preview_fps:g} fps; viewer: {args.viewer}; "
          f"{args.window:g} s windows alternating without / with it\n")
    print("| run | fps without | fps with | ratio (median of windows) | noise floor "
          "| CPU cores busy without | with |")
    print("|---|---|---|---|---|---|---|")
    for name, r in (("full speed (no-drop)", full), ("camera 30 fps", cam)):
        print(f"| {name} | {r['none']:.1f} | {r['one']:.1f} | {r['ratio']:.3f} "
              f"| +-{r['noise']:.3f} | {r['cpu_none']:.2f} | {r['cpu_one']:.2f} |")
    extra = (cam["cpu_one"] - cam["cpu_none"]) / cam["cpu_none"]
    print(f"\nfull speed: {full['windows']} windows with a viewer, ratio {full['ratio']:.3f} "
          "(target >= 0.95)")
    print(f"camera 30 fps: the viewer adds {extra:+.1%} process CPU "
          f"({(cam['cpu_one'] - cam['cpu_none']) * 100:+.1f}% of one core)")
    print(f"preview frames encoded: {full['encoded']} in {full['on_s']:g} s with a viewer")
    print(f"preview frame (draw + JPEG 640x480): {ms:.2f} ms -> at {args.preview_fps:g} fps "
          f"{ms * args.preview_fps / 10:.1f}% of one core", flush=True)
    return 0 if full["ratio"] >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
