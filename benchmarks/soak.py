"""Memory soak: run the pipeline on a looping clip and watch the process RSS.

    python benchmarks/soak.py [--minutes 60] [--every 60] [--model PATH]

Prints RSS after start-up (model loaded, first frames through), then every `--every` seconds,
and at the end the drift: (end - steady) in MB and per hour. Steady is the RSS after the
first interval, once every buffer has been made. Target: no growth over 1 h; steady RSS
<= 120 MB with the default model. The clip is paced like a 30 fps camera and every sink
that needs no network runs (jsonl, snapshot, clip, collect) so their
buffers are part of what is measured (with --all-sinks).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _assets import DEFAULT_MODEL, IMAGES  # noqa: E402

from edge import config  # noqa: E402
from edge.demo import make_clip  # noqa: E402
from edge.model import load_model  # noqa: E402
from edge.pipeline import Pipeline  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--every", type=float, default=60.0, help="seconds between RSS lines")
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--all-sinks", action="store_true",
                    help="also run jsonl, snapshot, clip and collect (default: no outputs)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edge-soak-"))
    clip = make_clip(work / "soak.avi", IMAGES, frames_per_image=30, pan=True)
    cfg = config.parse(f"""
web: {{enabled: false}}
service: {{stats_every_s: 0}}
source: {{kind: opencv, device: "{clip}", loop: true, realtime: true}}
postprocess:
  - smooth: {{alpha: 0.5}}
  - hysteresis: {{enter: 0.5, exit: 0.3, min_frames: 2}}
""" + (f"""outputs:
  - jsonl: {{path: "{work}/events.jsonl", max_mb: 1, keep: 2}}
  - snapshot: {{dir: "{work}/snapshots", max_mb: 5}}
  - clip: {{dir: "{work}/clips", max_mb: 20, pre_s: 1, post_s: 1}}
  - collect: {{dir: "{work}/collect", max_mb: 5, every_s: 1}}
""" if args.all_sinks else "outputs: []\n"))
    model = load_model(args.model, threads=args.threads)
    pipe = Pipeline(cfg, model)
    runner = threading.Thread(target=pipe.run, kwargs={"duration": args.minutes * 60})
    t0 = time.monotonic()
    runner.start()
    time.sleep(min(5.0, args.every))
    start = rss_mb()
    print(f"t={time.monotonic() - t0:7.0f}s  RSS {start:6.1f} MB  (after start-up)", flush=True)
    samples = []
    while runner.is_alive():
        runner.join(args.every)
        s = pipe.stats.summary()
        samples.append(rss_mb())
        print(f"t={time.monotonic() - t0:7.0f}s  RSS {samples[-1]:6.1f} MB  "
              f"classified {s['frames_classified']}  dropped {s['frames_dropped']}  "
              f"events {sum(s['events'].values())}", flush=True)
    hours = (time.monotonic() - t0) / 3600
    steady = samples[0] if samples else start
    end = samples[-1] if samples else start
    print(f"\nRSS start {start:.1f} MB, steady {steady:.1f} MB, end {end:.1f} MB, "
          f"max {max(samples or [start]):.1f} MB; drift {end - steady:+.1f} MB "
          f"({(end - steady) / max(hours, 1e-9):+.1f} MB/h over {hours:.2f} h)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
