"""Pipeline fps with no outputs vs outputs that block forever (and vs the file outputs).

    python benchmarks/sinks.py [--seconds 4] [--rounds 3] [--threads auto] [--model PATH]

Runs the real `edge.pipeline.Pipeline` (capture thread, latest-frame slot, hysteresis chain,
outbox) unpaced over a looped 640x480 MJPG demo clip, every frame classified. Conditions:
  none      outputs: []
  blocked   a per-frame output whose handle() never returns (it is offered every frame),
            plus a webhook to a local server that accepts and never answers
  files     log (to /dev/null), jsonl, snapshot, clip and collect writing to a temp dir
The fps is counted over `--seconds` after a 1 s warm-up, from the pipeline's own counter.
Rounds alternate the conditions so drift (thermal, other load) hits each alike; the median
per condition and its difference to `none` are printed as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
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
from edge.sinks import SINKS  # noqa: E402
from edge.sinks.base import EventSinkParams, Item, Sink  # noqa: E402


@SINKS.register("forever")  # registered in this process only, before the schema is built
class Forever(Sink):
    """Takes every frame, then blocks forever in handle()."""

    Params = EventSinkParams
    per_frame = True

    def offer(self, result, events, frame):
        return Item(events, result, frame)

    def handle(self, item) -> None:
        threading.Event().wait()


def hung_server() -> tuple[socket.socket, str]:
    """A TCP listener whose backlog accepts connections that are never answered."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s, f"http://127.0.0.1:{s.getsockname()[1]}/hook"


def outputs(kind: str, tmp: Path, url: str) -> list[dict]:
    if kind == "none":
        return []
    if kind == "blocked":
        return [{"forever": {"queue": 8}}, {"webhook": {"url": url, "timeout_s": 300}}]
    return [
        {"log": {"every_s": 1}},
        {"jsonl": {"path": str(tmp / "events.jsonl")}},
        {"snapshot": {"dir": str(tmp / "snaps"), "max_mb": 50}},
        {"clip": {"dir": str(tmp / "clips"), "pre_s": 2, "post_s": 2, "max_mb": 100}},
        {"collect": {"dir": str(tmp / "collect"), "low": 0.3, "high": 0.7, "every_s": 1}},
    ]


def measure(model, cfg_data: dict, seconds: float) -> tuple[float, dict]:
    """Classified frames per second in steady state, and the outputs' counters."""
    cfg = config.parse(json.dumps(cfg_data), "<bench>")
    pipe = Pipeline(cfg, model, no_drop=True)
    runner = threading.Thread(target=pipe.run, daemon=True)
    runner.start()
    time.sleep(1.0)  # warm-up: capture thread running, first clips opened
    n0, t0 = pipe.stats.snapshot()["frames_classified"], time.perf_counter()
    time.sleep(seconds)
    n1, t1 = pipe.stats.snapshot()["frames_classified"], time.perf_counter()
    sinks = pipe.outbox.sink_stats() if pipe.outbox else {}
    pipe.stop_event.set()
    runner.join(30)
    return (n1 - n0) / (t1 - t0), sinks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--threads", default="auto")
    ap.add_argument("--seconds", type=float, default=4.0, help="per condition and round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    threads = args.threads if args.threads == "auto" else int(args.threads)
    model = load_model(args.model, threads=threads)
    tmp = Path(tempfile.mkdtemp(prefix="edge-bench-sinks-"))
    clip = make_clip(tmp / "demo.avi", IMAGES, frames_per_image=30, size=(640, 480))
    listener, url = hung_server()
    base_cfg = {
        "device": "bench",
        "source": {"kind": "opencv", "device": str(clip), "loop": True, "realtime": False},
        "model": {"path": args.model, "threads": model.threads},
        "postprocess": [{"hysteresis": {"enter": 0.3, "exit": 0.2}}],
        "web": {"enabled": False},
    }
    fps: dict[str, list[float]] = {"none": [], "blocked": [], "files": []}
    stats: dict[str, dict] = {}
    real_stdout, sys.stdout = sys.stdout, open(os.devnull, "w")  # noqa: SIM115 (log output)
    try:
        for r in range(args.rounds):
            for kind in fps:
                data = {**base_cfg, "outputs": outputs(kind, tmp, url)}
                value, stats[kind] = measure(model, data, args.seconds)
                fps[kind].append(value)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in fps.items()),
                  file=real_stdout, flush=True)
    finally:
        sys.stdout = real_stdout
        listener.close()
    base = statistics.median(fps["none"])
    print(f"model {model.name}, {model.threads} threads, {os.cpu_count()} cores, "
          f"{args.rounds} rounds x {args.seconds:.0f} s")
    print("| outputs | fps (median) | all rounds | vs none |")
    print("|---|---|---|---|")
    for kind, values in fps.items():
        m = statistics.median(values)
        rounds = " ".join(f"{v:.1f}" for v in values)
        print(f"| {kind} | {m:.1f} | {rounds} | {100 * (m / base - 1):+.1f}% |")
    for kind, s in stats.items():
        for key, v in s.items():
            print(f"{kind}/{key}: sent {v['sent']}, dropped {v['dropped']}, errors "
                  f"{v['errors']}, queued {v['queued']}/{v['capacity']}, state {v['state']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
