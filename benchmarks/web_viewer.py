"""Pipeline fps with one MJPEG preview viewer attached vs none (target: within 5%).

    python benchmarks/web_viewer.py [--seconds 6] [--repeats 3] [--threads 2] [--preview-fps 5]

edge's Pipeline runs at full speed (no-drop, the clip read as fast as it decodes) with the web
server started exactly as `edge run` starts it. Runs alternate: no viewer, then one viewer, a
separate process doing what the page does: reading /stream.mjpg, polling /api/status 4 times
a second and /api/events once a second. The medians are compared, and the
cost of one preview frame (draw the boxes and labels + JPEG-encode a 640x480 frame) is timed
on its own.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
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
base, end = sys.argv[1], time.monotonic() + float(sys.argv[2])

def poll(path, every):  # what the page does besides showing the stream
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(base + path, timeout=2).read()
        except OSError:
            pass
        time.sleep(every)

threading.Thread(target=poll, args=("api/status", 0.25), daemon=True).start()
threading.Thread(target=poll, args=("api/events?since=0", 1.0), daemon=True).start()
n = 0
try:
    with urllib.request.urlopen(base + "stream.mjpg", timeout=2) as r:
        while time.monotonic() < end:
            if r.readline().startswith(b"Content-Length"):
                n += 1
except OSError:
    pass  # the run ended: no new frames, or the server stopped
print(n)
"""


def run_once(model, clip: Path, seconds: float, preview_fps: float, viewer: bool) -> dict:
    cfg = config.parse(
        f"web: {{bind: '127.0.0.1:0', preview_fps: {preview_fps}}}\n"
        f"service: {{stats_every_s: 0}}\noutputs: []\n{CHAIN}"
    )
    src = cfg.source.model_copy(
        update={"kind": "opencv", "device": str(clip), "loop": True, "realtime": False}
    )
    cfg = cfg.model_copy(update={"source": src})
    pipe = Pipeline(cfg, model, no_drop=True)
    web = start_web(cfg.web, pipe)
    proc = None
    try:
        if viewer:
            proc = subprocess.Popen([sys.executable, "-c", VIEWER, web.url,
                                     str(seconds)], stdout=subprocess.PIPE, text=True)
        c0, t0 = time.process_time(), time.perf_counter()
        pipe.run(duration=seconds)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        received = int(proc.communicate(timeout=20)[0]) if proc else 0
    finally:
        if proc and proc.poll() is None:
            proc.kill()
        web.stop()
    n = pipe.stats.classified
    return {"fps": n / wall, "cpu_ms": cpu / n * 1000, "received": received,
            "encoded": web.app.preview.encoded}


def render_ms(model, clip: Path, n: int = 200) -> float:
    """Milliseconds to draw and encode one preview frame from the clip."""
    import cv2

    from edge.capture.base import Frame
    from edge.pipeline import make_regions

    cfg = config.parse(CHAIN + "rois: [{name: feeder, box: [0.1, 0.1, 0.6, 0.7]}]\n")
    regions = make_regions(cfg, model.labels, model.name)
    ok, bgr = cv2.VideoCapture(str(clip)).read()
    frame = Frame(1, time.time(), time.monotonic(), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    t0 = time.perf_counter()
    for _ in range(n):
        render(frame, regions, {})
    return (time.perf_counter() - t0) / n * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--preview-fps", type=float, default=5.0)
    args = ap.parse_args()
    clip = Path(tempfile.mkdtemp()) / "bench.avi"
    make_clip(clip, IMAGES, frames_per_image=50, size=(640, 480), pan=True)
    model = load_model(args.model, threads=args.threads)
    print(f"# {platform.machine()}, {os.cpu_count()} cores; clip 640x480 MJPG; "
          f"{Path(args.model).name}, {args.threads} threads; no-drop at full speed; "
          f"{args.seconds:g} s per run, {args.repeats} runs each, preview {args.preview_fps:g} fps",
          flush=True)
    runs: dict[bool, list[dict]] = {False: [], True: []}
    for _ in range(args.repeats):
        for viewer in (False, True):
            r = run_once(model, clip, args.seconds, args.preview_fps, viewer)
            runs[viewer].append(r)
            print(f"  {'1 viewer ' if viewer else 'no viewer'}: {r['fps']:7.1f} fps, "
                  f"{r['cpu_ms']:.2f} CPU ms/frame (preview frames sent {r['received']}, "
                  f"encoded {r['encoded']})", flush=True)
    med = {v: {k: statistics.median(r[k] for r in runs[v]) for k in ("fps", "cpu_ms")}
           for v in runs}
    pairs = statistics.median(b["fps"] / a["fps"] for a, b in zip(runs[False], runs[True],
                                                                   strict=True))
    ms = render_ms(model, clip)
    print("\n| viewers | pipeline fps (median) | process CPU ms per frame (median) |")
    print("|---|---|---|")
    for v in (False, True):
        print(f"| {int(v)} | {med[v]['fps']:.1f} | {med[v]['cpu_ms']:.2f} |")
    wall = med[True]["fps"] / med[False]["fps"]
    by_cpu = med[False]["cpu_ms"] / med[True]["cpu_ms"]
    print(f"\nfps ratio 1 viewer / none: {wall:.3f} (medians), {pairs:.3f} (median of "
          f"back-to-back pairs); from CPU per frame: {by_cpu:.3f} (target >= 0.95)")
    print("(the CPU figure is what a CPU-bound pipeline loses on an otherwise idle machine; "
          f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"preview frame (draw + JPEG 640x480): {ms:.2f} ms -> at {args.preview_fps:g} fps "
          f"{ms * args.preview_fps / 10:.1f}% of one core", flush=True)
    return 0 if max(wall, pairs) >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
