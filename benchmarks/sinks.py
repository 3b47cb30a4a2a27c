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
per condition and its difference to `none` are printed as a markdown table. On a busy
machine wall-clock fps is noisy, so two load-independent figures are printed too: the CPU
time of the inference-loop thread per frame (from /proc), and the time spent inside
`Outbox.publish` per frame (p50/p99) -- the only way an output can cost the loop time.
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


class TimedPipeline(Pipeline):
    """The real pipeline, with a stopwatch around each `Outbox.publish` call."""

    publish_s: list[float]

    def make_outbox(self, cfg, model):
        outbox = super().make_outbox(cfg, model)
        self.publish_s = []
        inner = outbox.publish

        def publish(*args) -> list[dict]:
            t0 = time.perf_counter()
            out = inner(*args)
            self.publish_s.append(time.perf_counter() - t0)
            return out

        outbox.publish = publish
        return outbox


def thread_cpu_s(tid: int) -> float:
    """User+system CPU seconds of one thread of this process."""
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(model, cfg_data: dict, seconds: float) -> dict:
    """Steady-state fps, loop-thread CPU per frame, publish times, the outputs' counters."""
    cfg = config.parse(json.dumps(cfg_data), "<bench>")
    pipe = TimedPipeline(cfg, model, no_drop=True)
    runner = threading.Thread(target=pipe.run, daemon=True)
    runner.start()
    time.sleep(1.0)  # warm-up: capture thread running, first clips opened
    n0, t0, c0 = pipe.stats.summary()["frames_classified"], time.perf_counter(), 0.0
    c0, p0 = thread_cpu_s(runner.native_id), len(pipe.publish_s)
    time.sleep(seconds)
    n1, t1 = pipe.stats.summary()["frames_classified"], time.perf_counter()
    c1, pub = thread_cpu_s(runner.native_id), pipe.publish_s[p0:]
    sinks = pipe.outbox.sink_stats()
    pipe.stop_event.set()
    runner.join(30)
    frames = max(1, n1 - n0)
    pub.sort()
    return {
        "fps": frames / (t1 - t0),
        "cpu_ms": (c1 - c0) * 1000 / frames,
        "pub_p50_us": pub[len(pub) // 2] * 1e6 if pub else 0.0,
        "pub_p99_us": pub[int(len(pub) * 0.99)] * 1e6 if pub else 0.0,
        "sinks": sinks,
    }


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
    runs: dict[str, list[dict]] = {"none": [], "blocked": [], "files": []}
    real_stdout, sys.stdout = sys.stdout, open(os.devnull, "w")  # noqa: SIM115 (log output)
    try:
        for r in range(args.rounds):
            for kind in runs:
                data = {**base_cfg, "outputs": outputs(kind, tmp, url)}
                runs[kind].append(measure(model, data, args.seconds))
            line = ", ".join(f"{k} {v[-1]['fps']:.1f}" for k, v in runs.items())
            print(f"round {r + 1} fps: {line}", file=real_stdout, flush=True)
    finally:
        sys.stdout = real_stdout
        listener.close()
    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[kind])

    base_fps, base_cpu = med("none", "fps"), med("none", "cpu_ms")
    print(f"model {model.name}, {model.threads} threads, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}, {args.rounds} rounds x {args.seconds:.0f} s")
    print("| outputs | fps (median) | vs none | loop CPU ms/frame | vs none "
          "| publish us p50 / p99 |")
    print("|---|---|---|---|---|---|")
    for kind in runs:
        fps, cpu = med(kind, "fps"), med(kind, "cpu_ms")
        print(f"| {kind} | {fps:.1f} | {100 * (fps / base_fps - 1):+.1f}% | {cpu:.2f} "
              f"| {100 * (cpu / base_cpu - 1):+.1f}% | {med(kind, 'pub_p50_us'):.1f} / "
              f"{med(kind, 'pub_p99_us'):.1f} |")
    for kind, r in runs.items():
        for key, v in r[-1]["sinks"].items():
            print(f"{kind}/{key}: sent {v['sent']}, dropped {v['dropped']}, errors "
                  f"{v['errors']}, queued {v['queued']}/{v['capacity']}, state {v['state']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
