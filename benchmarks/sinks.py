"""Frame-loop fps with no outputs vs outputs that block forever (and vs real file outputs).

    python benchmarks/sinks.py [--seconds 4] [--rounds 3] [--threads auto] [--model PATH]

The loop is the pipeline's work in one thread: decode a frame of a 640x480 MJPG demo clip,
classify it, derive enter/exit events from top-1 changes, and `Outbox.publish`. Conditions:
  none      no outbox at all
  blocked   a per-frame sink whose handle() never returns (sees every frame) and a webhook
            to a local server that accepts the request and never answers
  files     log (to /dev/null), jsonl, snapshot, clip and collect writing to a temp dir
Rounds alternate the conditions so drift (thermal, other load) hits each alike; the median
fps per condition and its ratio to `none` are printed.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2

sys.path.insert(0, os.path.dirname(__file__))
from _assets import DEFAULT_MODEL, IMAGES  # noqa: E402

from edge.capture.base import Frame  # noqa: E402
from edge.demo import make_clip  # noqa: E402
from edge.events import Event, Result  # noqa: E402
from edge.model import load_model  # noqa: E402
from edge.registry import Registry  # noqa: E402
from edge.sinks import SINKS  # noqa: E402
from edge.sinks.base import EventSinkParams, Sink  # noqa: E402
from edge.sinks.outbox import Outbox  # noqa: E402


class Forever(Sink):
    """Takes every frame, then blocks forever in handle()."""

    Params = EventSinkParams
    per_frame = True

    def offer(self, result, events, frame):
        from edge.sinks.base import Item

        return Item(events, result, frame)

    def handle(self, item) -> None:
        threading.Event().wait()


def hung_server() -> tuple[socket.socket, str]:
    """A TCP listener that accepts connections into its backlog and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s, f"http://127.0.0.1:{s.getsockname()[1]}/hook"


def registry_with_forever() -> Registry:
    reg = Registry("sink")
    reg.update(SINKS)
    reg.register("forever")(Forever)
    return reg


def run_loop(model, clip: Path, seconds: float, outbox: Outbox | None) -> float:
    """Frames per second of decode + classify + events + publish for `seconds`."""
    cap = cv2.VideoCapture(str(clip))
    seq, prev = 0, None
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ok, bgr = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        seq += 1
        frame = Frame(seq, time.time(), time.monotonic(), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        top = model.top(model.classify(frame.rgb), 3)
        label, score = top[0]
        events = []
        if label != prev:
            if prev is not None:
                events.append(Event("exit", prev, 0.0, None, seq, frame.ts))
            events.append(Event("enter", label, score, None, seq, frame.ts))
            prev = label
        if outbox is not None:
            outbox.publish(Result(seq, frame.ts, None, top, [label]), events, frame)
    elapsed = time.perf_counter() - t0
    cap.release()
    return seq / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--threads", default="auto")
    ap.add_argument("--seconds", type=float, default=4.0, help="per condition and round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    threads = args.threads if args.threads == "auto" else int(args.threads)
    model = load_model(args.model, threads=threads)
    tmp = Path(tempfile.mkdtemp(prefix="edge-bench-sinks-"))
    clip = make_clip(tmp / "demo.avi", IMAGES, frames_per_image=30, size=(640, 480))
    listener, url = hung_server()
    reg = registry_with_forever()
    devnull = open(os.devnull, "w")  # noqa: SIM115
    sys.stdout, real_stdout = devnull, sys.stdout  # the log sink prints to sys.stdout

    def outbox(kind: str) -> Outbox | None:
        if kind == "none":
            return None
        if kind == "blocked":
            specs = [("forever", {"queue": 8}), ("webhook", {"url": url, "timeout_s": 300})]
        else:
            specs = [
                ("log", {"every_s": 1}),
                ("jsonl", {"path": str(tmp / "events.jsonl")}),
                ("snapshot", {"dir": str(tmp / "snaps"), "max_mb": 50}),
                ("clip", {"dir": str(tmp / "clips"), "pre_s": 2, "post_s": 2, "max_mb": 100}),
                ("collect", {"dir": str(tmp / "collect"), "low": 0.3, "high": 0.7,
                             "every_s": 1}),
            ]
        ob = Outbox(specs, "bench", model.name, registry=reg)
        ob.start()
        return ob

    fps: dict[str, list[float]] = {"none": [], "blocked": [], "files": []}
    stats = {}
    try:
        for r in range(args.rounds):
            for kind in fps:
                ob = outbox(kind)
                fps[kind].append(run_loop(model, clip, args.seconds, ob))
                if ob is not None:
                    stats[kind] = ob.sink_stats()
                    ob.close(timeout=0.5)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in fps.items()),
                  file=real_stdout, flush=True)
    finally:
        sys.stdout = real_stdout
        listener.close()
    base = statistics.median(fps["none"])
    print(f"model {model.name}, {model.threads} threads, {os.cpu_count()} cores, "
          f"{args.rounds} rounds x {args.seconds:.0f} s")
    print("| outputs | fps (median) | vs none |")
    print("|---|---|---|")
    for kind, values in fps.items():
        m = statistics.median(values)
        print(f"| {kind} | {m:.1f} | {100 * (m / base - 1):+.1f}% |")
    for kind, s in stats.items():
        for key, v in s.items():
            print(f"{kind}/{key}: sent {v['sent']}, dropped {v['dropped']}, errors "
                  f"{v['errors']}, queued {v['queued']}/{v['capacity']}, state {v['state']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
