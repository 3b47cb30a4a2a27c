"""Per-frame cost of post-processing chains: `python -m edge.postprocess.bench [LABELS_FILE]`.

Feeds each chain a fixed cycle of score vectors shaped like a quantized softmax (many equal
small values, one clear winner that changes now and then) and prints the best-of-batches
microseconds per frame, of wall time and of this thread's CPU time (on a busy machine the
CPU figure is the chain's own cost; the wall figure also counts waiting for a core).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from edge import config
from edge.model import parse_labels
from edge.postprocess.chain import Chain

FULL = """
postprocess:
  - group: {{cat: ["tabby*", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"]}}
  - filter: {{deny: [background]}}
  - smooth: {{method: {method}}}
  - threshold: {{default: 0.5, per_label: {{cat: 0.35}}}}
  - hysteresis: {{enter: 0.6, exit: 0.4, min_frames: 3, cooldown_s: 30, status_every_s: 1}}
  - top_k: 3
"""
CHAINS = {
    "no stages (top-5 of the raw scores)": "postprocess: []",
    "default chain (smooth ema, hysteresis)": "",
    "6 stages, smooth ema": FULL.format(method="ema"),
    "6 stages, smooth mean (window 5)": FULL.format(method="mean"),
    "6 stages, smooth median (window 5)": FULL.format(method="median"),
}


def frames(n_labels: int, n: int = 30, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = rng.random(n_labels) ** 8
        p[[285, 281, 500][(i // 10) % 3]] += p.sum() * 3  # a clear winner, changing every 10
        q = np.round(p / p.sum() * 256) / 256  # uint8 softmax output, dequantized
        out.append(q.astype(np.float32))
    return out


def per_frame_us(chain: Chain, vecs: list[np.ndarray], batches: int = 30, size: int = 300):
    """(wall, cpu) microseconds per frame, each the best over the batches."""
    wall = cpu = float("inf")
    seq = 0
    for _ in range(batches):
        t0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(size):
            chain.process(seq, seq / 300, seq / 300, vecs[seq % len(vecs)])
            seq += 1
        wall = min(wall, (time.perf_counter() - t0) / size)
        cpu = min(cpu, (time.thread_time() - c0) / size)
    return wall * 1e6, cpu * 1e6


def main(argv: list[str]) -> None:
    assets = Path(os.environ.get("EDGE_ASSETS", Path(__file__).parents[3] / "shared/assets"))
    ap = argparse.ArgumentParser(prog="python -m edge.postprocess.bench",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("labels", nargs="?", type=Path,
                    default=assets / "models" / "imagenet_labels.txt",
                    help="labels file (default: the assets' imagenet_labels.txt)")
    path = ap.parse_args(argv).labels
    if not path.is_file():
        ap.error(f"{path}: no such labels file")
    labels = parse_labels(path.read_text(encoding="utf-8"))
    vecs = frames(len(labels))
    print(f"{len(labels)} labels ({path.name}); best of 30 batches of 300 frames")
    for name, text in CHAINS.items():
        cfg = config.parse(text, name)
        config.check_labels(cfg, labels, name)
        chain = Chain(config.spec_items(cfg.postprocess), labels)
        wall, cpu = per_frame_us(chain, vecs)
        print(f"  {name:42s} {wall:7.1f} us/frame wall {cpu:7.1f} us/frame cpu")


if __name__ == "__main__":
    main(sys.argv[1:])
