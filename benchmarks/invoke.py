"""Invoke latency p50/p90 per backend x threads for the default model.

    python benchmarks/invoke.py [--seconds 2] [--threads 1,2] [--model PATH]

Runs every backend installed in this interpreter; run it once per venv (e.g. the LiteRT dev
venv and the legacy tflite-runtime one) and keep the table in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _assets import DEFAULT_MODEL  # noqa: E402

from edge.model import BACKENDS, ModelError, load_model  # noqa: E402


def measure(model, seconds: float) -> list[float]:
    model.invoke()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        model.interpreter.invoke()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--seconds", type=float, default=2.0, help="per configuration")
    cores = min(4, os.cpu_count() or 1)
    ap.add_argument("--threads", default=",".join(str(n) for n in range(1, cores + 1)))
    args = ap.parse_args()
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"# model {os.path.basename(args.model)}, {args.seconds:g} s per row")
    print("| backend | version | threads | XNNPACK partitions | invokes | p50 ms | p90 ms |")
    print("|---|---|---|---|---|---|---|")
    for backend in BACKENDS:
        for n in [int(x) for x in args.threads.split(",")]:
            try:
                m = load_model(args.model, backend=backend, threads=n)
            except ModelError as e:
                if "not installed" in str(e):
                    break
                raise
            t = measure(m, args.seconds)
            print(f"| {backend} | {m.backend_version} | {n} | {m.partitions} | {len(t)} "
                  f"| {np.percentile(t, 50):.2f} | {np.percentile(t, 90):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
