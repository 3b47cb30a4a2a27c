"""`edge bench`: invoke latency per backend, XNNPACK on/off and thread count, on this board.

Each configuration loads the model through `edge.model.load_model` (so the backend choice and
the XNNPACK switch are the ones `edge run` uses), then times bare `invoke()` calls for a fixed
wall-clock budget. With a clip, it also runs the real pipeline (capture thread, latest-frame
slot, post-processing) over it, and the same work in one thread for comparison. The JSON
schema is in docs/models.md.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import EdgeError, ModelError
from edge.model import cpu_model, invoke_times
from edge.stats import temperatures

BENCH_BACKENDS = ("litert", "tflite-runtime")  # tensorflow is skipped: too big to matter here

SCHEMA = "edge.bench/1"
MIN_INVOKES = 5


def parse_threads(spec: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4]; 'auto' -> 1..cores (at most 8)."""
    if spec == "auto":
        return list(range(1, min(8, os.cpu_count() or 1) + 1))
    try:
        values = sorted({int(x) for x in spec.split(",") if x.strip()})
    except ValueError:
        raise EdgeError(f"--threads {spec!r}: use a comma list like 1,2,4 or auto") from None
    if not values or values[0] < 1:
        raise EdgeError(f"--threads {spec!r}: thread counts must be >= 1")
    return values


def installed_backends() -> list[str]:
    """Backends importable here, in `auto` order."""
    from edge.model import select_backend

    found = []
    for name in BENCH_BACKENDS:
        try:
            select_backend(name)
        except ModelError:
            continue
        found.append(name)
    return found


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def system_info() -> dict[str, Any]:
    """What the figures were measured on: they mean little without it."""
    from importlib.metadata import version

    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "temperature_c": temperatures(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "edge": version("edge-runtime"),
    }


def summarize(times_ms: list[float]) -> dict[str, Any]:
    ms = np.asarray(times_ms)
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "invokes": len(ms),
        "p50_ms": round(float(p50), 3),
        "p90_ms": round(float(p90), 3),
        "p99_ms": round(float(p99), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "min_ms": round(float(ms.min()), 3),
        "fps": round(1000 / float(ms.mean()), 1),
    }


def time_sequential(model, clip: Path, seconds: float) -> dict[str, Any]:
    """Decode -> BGR2RGB -> preprocess -> invoke in one thread over the clip (looped)."""
    import cv2

    cap = cv2.VideoCapture(str(clip))
    if not cap.isOpened():
        raise EdgeError(f"{clip}: cannot open the --source video")
    frames, decode_s, t_start = 0, 0.0, time.perf_counter()
    try:
        while frames < MIN_INVOKES or time.perf_counter() - t_start < seconds:
            t0 = time.perf_counter()
            ok, bgr = cap.read()
            if not ok:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, bgr = cap.read()
                if not ok:
                    raise EdgeError(f"{clip}: no decodable frames in the --source video")
            decode_s += time.perf_counter() - t0
            model.set_input(model.input(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
            model.invoke()
            frames += 1
    finally:
        cap.release()
    return {
        "sequential_fps": round(frames / (time.perf_counter() - t_start), 1),
        "decode_fps": round(frames / decode_s, 1),
        "frame_size": [int(bgr.shape[1]), int(bgr.shape[0])],
    }


def time_pipeline(model, clip: Path, seconds: float) -> dict[str, Any]:
    """The real `edge run` pipeline (capture thread, latest-frame slot, default post-processing
    chain, no outputs) on the clip, looped, unpaced, every frame classified (no_drop)."""
    from edge import config
    from edge.pipeline import Pipeline

    cfg = config.parse("", "<bench>")
    src = cfg.source.model_copy(
        update={"kind": "opencv", "device": str(clip), "loop": True, "realtime": False}
    )
    pipe = Pipeline(cfg.model_copy(update={"source": src, "outputs": []}), model, no_drop=True)
    t0 = time.perf_counter()
    pipe.run(duration=seconds)
    elapsed = time.perf_counter() - t0
    frames = pipe.stats.summary()["frames_classified"]
    if not frames:
        raise EdgeError(f"{clip}: the pipeline classified no frames (see the log above)")
    return {"pipeline_fps": round(frames / elapsed, 1), "frames": frames}


def time_auto(model_path: str | Path, clip: Path, seconds: float, backend: str) -> dict[str, Any]:
    """What `threads: auto` picks for `edge run --no-drop` on the clip, measured the way
    `edge run` does on first use (edge.tuning), with the figures behind it."""
    from dataclasses import asdict

    from edge import config, tuning
    from edge.model import load_model

    cfg = config.parse("", "<bench>")
    src = cfg.source.model_copy(
        update={"kind": "opencv", "device": str(clip), "loop": True, "realtime": False})
    cfg = cfg.model_copy(update={"source": src, "outputs": [], "model": cfg.model.model_copy(
        update={"path": str(model_path), "backend": backend})})
    model = load_model(model_path, backend=backend, threads=1)
    best, trials = tuning.measure(tuning.pipeline_runner(no_drop=True), cfg, model,
                                  no_drop=True, seconds=seconds)
    return {"backend": backend, "threads": best.threads, "table": tuning.table(trials, best),
            "trials": [asdict(t) for t in trials]}


def _fill_input(model) -> None:
    """Feed a fixed pseudo-random image through the real preprocessing, once."""
    w, h = model.input_size
    rgb = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    model.set_input(model.input(rgb))


def _label(backend: str, xnnpack: bool, threads: int) -> str:
    return f"{backend} xnnpack={'on' if xnnpack else 'off'} threads={threads}"


def run_bench(
    model_path: str | Path,
    threads: list[int],
    seconds: float = 2.0,
    source: str | Path | None = None,
    backends: list[str] | None = None,
    xnnpack: tuple[bool, ...] = (True, False),
    progress: Callable[[str], None] | None = None,
    rounds: int = 3,
) -> dict[str, Any]:
    """Time every (backend, XNNPACK, threads) configuration; returns the documented dict."""
    from edge.model import load_model

    say = progress or (lambda msg: None)
    backends = backends or installed_backends()
    if not backends:
        raise ModelError("no TFLite runtime installed: pip install ai-edge-litert")
    if source is not None and not Path(source).exists():
        raise EdgeError(f"{source}: --source clip not found")
    configs = [(b, x, n) for b in backends for x in xnnpack for n in threads]
    started = dt.datetime.now(dt.timezone.utc)
    models = {}
    for i, (backend, xnn, n) in enumerate(configs, 1):
        say(f"loading {i}/{len(configs)}: {_label(backend, xnn, n)}")
        models[backend, xnn, n] = load_model(model_path, backend=backend, threads=n, xnnpack=xnn)
        _fill_input(models[backend, xnn, n])
    # Interleaved rounds: a burst of load from elsewhere spreads over every configuration
    # instead of landing on whichever one happened to be running.
    samples: dict[tuple, list[float]] = {c: [] for c in configs}
    for r in range(1, rounds + 1):
        for c in configs:
            samples[c] += invoke_times(models[c].interpreter.invoke, seconds / rounds,
                                         -(-MIN_INVOKES // rounds))
            say(f"round {r}/{rounds}: {_label(*c)}: p50 {np.median(samples[c]):.2f} ms "
                f"({len(samples[c])} invokes)")
    results = []
    for (backend, xnn, n), model in models.items():
        row = {"backend": backend, "backend_version": model.backend_version, "xnnpack": xnn,
               "xnnpack_partitions": model.partitions, "threads": n}
        results.append(row | summarize(samples[backend, xnn, n]))
    pipeline = []
    for row in results if source is not None else []:
        if not row["xnnpack"]:
            continue
        c = (row["backend"], True, row["threads"])
        say(f"pipeline on {Path(source).name}: {_label(*c)}, {seconds:g} s threaded + "
            f"{seconds:g} s sequential")
        p = {"backend": c[0], "xnnpack": True, "threads": c[2], "invoke_fps": row["fps"]}
        p |= time_pipeline(models[c], Path(source), seconds)
        p |= time_sequential(models[c], Path(source), seconds)
        pipeline.append(p)
        say(f"pipeline on {Path(source).name}: {_label(*c)}: {p['pipeline_fps']:.1f} fps "
            f"(sequential {p['sequential_fps']:.1f})")
    auto = None
    if source is not None:
        say(f"threads auto: the real pipeline per candidate on {Path(source).name}")
        auto = time_auto(model_path, Path(source), seconds / 2, backends[0])
    models.clear()
    return {
        "schema": SCHEMA,
        "model": {"path": str(model_path), "name": Path(model_path).stem},
        "started": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "seconds_per_config": seconds,
        "rounds": rounds,
        "system": system_info(),
        "results": results,
        "pipeline": ({"source": str(source), "results": pipeline, "auto": auto}
                     if source is not None else None),
    }


def format_bench(d: dict[str, Any]) -> str:
    """Plain-text tables: the system line, invoke latency, then pipeline fps."""
    s = d["system"]
    temps = ", ".join(f"{k} {v:.0f} C" for k, v in s["temperature_c"].items()) or "n/a"
    lines = [
        f"model {d['model']['name']}   {d['started']}   {d['seconds_per_config']:g} s per config",
        f"system {s['cpu']} ({s['machine']}, {s['cores']} cores), governor "
        f"{s['governor'] or 'n/a'}, temperature {temps}, load {s['load_avg'][0]:.2f}",
        "",
        f"{'backend':<22} {'XNNPACK':>7} {'thr':>3} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'fps':>7} {'invokes':>7}",
    ]
    for r in d["results"]:
        name = f"{r['backend']} {r['backend_version']}"
        xnn = f"on/{r['xnnpack_partitions']}" if r["xnnpack"] else "off"
        lines.append(
            f"{name:<22} {xnn:>7} {r['threads']:>3} {r['p50_ms']:>8.2f} {r['p90_ms']:>8.2f} "
            f"{r['p99_ms']:>8.2f} {r['fps']:>7.1f} {r['invokes']:>7}"
        )
    lines.append("XNNPACK on/N: the delegate took N partitions of the graph (on/0: it took "
                 "nothing, the builtin kernels ran)")
    if d.get("pipeline"):
        p = d["pipeline"]
        lines += ["", f"full pipeline on {p['source']} (every frame classified, unpaced):",
                  f"{'backend':<16} {'thr':>3} {'pipeline fps':>12} {'sequential fps':>14} "
                  f"{'invoke fps':>10} {'decode fps':>10}"]
        for r in p["results"]:
            lines.append(f"{r['backend']:<16} {r['threads']:>3} {r['pipeline_fps']:>12.1f} "
                         f"{r['sequential_fps']:>14.1f} {r['invoke_fps']:>10.1f} "
                         f"{r['decode_fps']:>10.1f}")
        if p.get("auto"):
            lines += ["", f"threads auto for this pipeline ({p['auto']['backend']}, "
                      "the table `edge run` logs on first use): "
                      f"{p['auto']['threads']}", p["auto"]["table"]]
    return "\n".join(lines)


def _matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise EdgeError("--plot needs matplotlib: pip install matplotlib") from None
    return matplotlib


def plot_bench(d: dict[str, Any], out: str | Path) -> Path:
    """Latency (p50, p90-p99 band) versus threads, one line per backend and XNNPACK setting."""
    matplotlib = _matplotlib()
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    series: dict[tuple[str, bool], list[dict]] = {}
    for r in d["results"]:
        series.setdefault((r["backend"], r["xnnpack"]), []).append(r)
    for (backend, xnn), rows in series.items():
        rows = sorted(rows, key=lambda r: r["threads"])
        x = [r["threads"] for r in rows]
        label = f"{backend} {rows[0]['backend_version']}, XNNPACK {'on' if xnn else 'off'}"
        (line,) = ax.plot(x, [r["p50_ms"] for r in rows], "o-", label=f"{label} (p50)")
        ax.fill_between(x, [r["p90_ms"] for r in rows], [r["p99_ms"] for r in rows],
                        color=line.get_color(), alpha=0.2)
    ax.set_yscale("log")
    ax.set_xlabel("interpreter threads")
    ax.set_ylabel("invoke latency, ms (log; band p90-p99)")
    ax.set_xticks(sorted({r["threads"] for r in d["results"]}))
    s = d["system"]
    ax.set_title(f"{d['model']['name']}\n{s['cpu']}, {s['cores']} cores", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    plt.close(fig)
    return out


def progress_to_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def add_bench_arguments(p) -> None:
    p.add_argument("model", nargs="?", help="a .tflite model (default: the config's model.path)")
    p.add_argument("--threads", default="auto", help="comma list like 1,2,4, or auto (1..cores)")
    p.add_argument("--seconds", type=float, default=3.0, help="timing budget per configuration")
    p.add_argument("--rounds", type=int, default=3,
                   help="split each budget into this many interleaved rounds (default 3)")
    p.add_argument("--source", help="a video clip: also measure the full pipeline fps on it")
    p.add_argument("--backend", action="append", choices=BENCH_BACKENDS,
                   help="only this backend (repeatable; default: every one installed)")
    p.add_argument("--no-xnnpack-off", action="store_true",
                   help="skip the XNNPACK-off (reference kernels) configurations")
    p.add_argument("--config", "-c", help="config file whose model.path is the default MODEL")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--plot", metavar="PNG", help="write a latency-vs-threads plot")


def _model_path(args) -> Path:
    """MODEL as given (file or catalog name), else the config's model.path."""
    from edge import catalog, config

    return catalog.resolve(args.model or config.load(getattr(args, "config", None)).model.path)


def cmd_bench(args) -> int:
    """`edge bench [MODEL] ...`: progress on stderr, figures (or JSON) on stdout."""
    import json

    if args.seconds <= 0:
        raise EdgeError("--seconds must be > 0")
    if args.rounds < 1:
        raise EdgeError("--rounds must be >= 1")
    if args.plot:
        _matplotlib()  # fail before the long run, not after it
    d = run_bench(
        _model_path(args),
        threads=parse_threads(args.threads),
        seconds=args.seconds,
        source=args.source,
        backends=args.backend,
        xnnpack=(True,) if args.no_xnnpack_off else (True, False),
        progress=progress_to_stderr,
        rounds=args.rounds,
    )
    if args.plot:
        d["plot"] = str(plot_bench(d, args.plot))
    print(json.dumps(d, indent=1) if args.json else format_bench(d))
    return 0
