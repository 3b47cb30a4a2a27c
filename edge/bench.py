"""`edge bench`: invoke latency per backend, XNNPACK on/off and thread count, on this board.

Each configuration loads the model through `edge.model.load_model` (so the backend choice and
the XNNPACK switch are the ones `edge run` uses), then times bare `invoke()` calls for a fixed
wall-clock budget. With a clip, it also times the sequential decode -> preprocess -> invoke
loop, which is the ceiling the threaded pipeline can reach. The JSON schema is in docs/models.md.
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

from edge.errors import ModelError
from edge.model import BACKENDS, load_model, select_backend

SCHEMA = "edge.bench/1"
MIN_INVOKES = 5


def parse_threads(spec: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4]; 'auto' -> 1..cores (at most 8)."""
    if spec == "auto":
        return list(range(1, min(8, os.cpu_count() or 1) + 1))
    try:
        values = sorted({int(x) for x in spec.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"--threads {spec!r}: use a comma list like 1,2,4 or auto") from None
    if not values or values[0] < 1:
        raise ValueError(f"--threads {spec!r}: thread counts must be >= 1")
    return values


def installed_backends() -> list[str]:
    """Backends importable here, in `auto` order (tensorflow is skipped: too big to matter)."""
    found = []
    for name in BACKENDS:
        if name == "tensorflow":
            continue
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


def cpu_model() -> str:
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine()


def temperatures() -> dict[str, float]:
    """Thermal zones in degrees C (the Pi's SoC is `cpu-thermal`)."""
    out = {}
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        raw, kind = _read(str(zone / "temp")), _read(str(zone / "type")) or zone.name
        if raw and raw.lstrip("-").isdigit():
            out[kind] = int(raw) / 1000
    return out


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


def time_invokes(invoke: Callable[[], None], seconds: float) -> dict[str, Any]:
    """Latency percentiles of back-to-back invokes for `seconds` (at least MIN_INVOKES)."""
    times: list[float] = []
    end = time.perf_counter() + seconds
    while len(times) < MIN_INVOKES or time.perf_counter() < end:
        t0 = time.perf_counter()
        invoke()
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000
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


def time_pipeline(model, clip: Path, seconds: float) -> dict[str, Any]:
    """Sequential decode -> BGR2RGB -> preprocess -> invoke over the clip (looped), in fps."""
    import cv2

    cap = cv2.VideoCapture(str(clip))
    if not cap.isOpened():
        raise ValueError(f"{clip}: cannot open video source")
    frames, decode_s, t_start = 0, 0.0, time.perf_counter()
    try:
        while frames < MIN_INVOKES or time.perf_counter() - t_start < seconds:
            t0 = time.perf_counter()
            ok, bgr = cap.read()
            if not ok:
                if frames == 0 and not cap.isOpened():
                    raise ValueError(f"{clip}: no frames")
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, bgr = cap.read()
                if not ok:
                    raise ValueError(f"{clip}: no decodable frames")
            decode_s += time.perf_counter() - t0
            model.preprocess(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            model.invoke()
            frames += 1
    finally:
        cap.release()
    elapsed = time.perf_counter() - t_start
    return {
        "frames": frames,
        "fps": round(frames / elapsed, 1),
        "decode_fps": round(frames / decode_s, 1) if decode_s else None,
        "frame_size": [int(bgr.shape[1]), int(bgr.shape[0])],
    }


def _fill_input(model) -> None:
    """Feed a fixed pseudo-random image through the real preprocessing, once."""
    w, h = model.input_size
    rgb = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    model.preprocess(rgb)


def run_bench(
    model_path: str | Path,
    threads: list[int],
    seconds: float = 2.0,
    source: str | Path | None = None,
    backends: list[str] | None = None,
    xnnpack: tuple[bool, ...] = (True, False),
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time every (backend, XNNPACK, threads) configuration; returns the documented dict."""
    say = progress or (lambda msg: None)
    backends = backends or installed_backends()
    if not backends:
        raise ModelError("no TFLite runtime installed: pip install ai-edge-litert")
    if source is not None and not Path(source).exists():
        raise ValueError(f"{source}: --source clip not found")
    configs = [(b, x, n) for b in backends for x in xnnpack for n in threads]
    started = dt.datetime.now(dt.timezone.utc)
    results, pipeline, model = [], [], None
    for i, (backend, xnn, n) in enumerate(configs, 1):
        label = f"{backend} xnnpack={'on' if xnn else 'off'} threads={n}"
        say(f"[{i}/{len(configs)}] {label}: invoke for {seconds:g} s")
        model = load_model(model_path, backend=backend, threads=n, xnnpack=xnn)
        _fill_input(model)
        row = {"backend": backend, "backend_version": model.backend_version, "xnnpack": xnn,
               "xnnpack_partitions": model.partitions, "threads": n}
        row |= time_invokes(model.interpreter.invoke, seconds)
        results.append(row)
        say(f"[{i}/{len(configs)}] {label}: p50 {row['p50_ms']:.2f} ms, "
            f"p99 {row['p99_ms']:.2f} ms ({row['invokes']} invokes)")
        if source is not None and xnn:
            say(f"[{i}/{len(configs)}] {label}: pipeline on {Path(source).name} for {seconds:g} s")
            p = {"backend": backend, "xnnpack": xnn, "threads": n, "invoke_fps": row["fps"]}
            p |= time_pipeline(model, Path(source), seconds)
            pipeline.append(p)
            say(f"[{i}/{len(configs)}] {label}: pipeline {p['fps']:.1f} fps")
        del model
    return {
        "schema": SCHEMA,
        "model": {"path": str(model_path), "name": Path(model_path).stem},
        "started": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "seconds_per_config": seconds,
        "system": system_info(),
        "results": results,
        "pipeline": {"source": str(source), "mode": "sequential", "results": pipeline}
        if source is not None else None,
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
        f"{'backend':<16} {'XNNPACK':>7} {'thr':>3} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'fps':>7} {'invokes':>7}",
    ]
    for r in d["results"]:
        name = f"{r['backend']} {r['backend_version']}"
        xnn = f"on/{r['xnnpack_partitions']}" if r["xnnpack"] else "off"
        lines.append(
            f"{name:<16} {xnn:>7} {r['threads']:>3} {r['p50_ms']:>8.2f} {r['p90_ms']:>8.2f} "
            f"{r['p99_ms']:>8.2f} {r['fps']:>7.1f} {r['invokes']:>7}"
        )
    if d.get("pipeline"):
        p = d["pipeline"]
        lines += ["", f"pipeline ({p['mode']} decode -> preprocess -> invoke) on {p['source']}:",
                  f"{'backend':<16} {'thr':>3} {'pipeline fps':>12} {'invoke fps':>10} "
                  f"{'decode fps':>10}"]
        for r in p["results"]:
            lines.append(f"{r['backend']:<16} {r['threads']:>3} {r['fps']:>12.1f} "
                         f"{r['invoke_fps']:>10.1f} {r['decode_fps'] or 0:>10.1f}")
    return "\n".join(lines)


def plot_bench(d: dict[str, Any], out: str | Path) -> Path:
    """Latency (p50, p90-p99 band) versus threads, one line per backend and XNNPACK setting."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'edge-runtime[plot]'") from None
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
    p.add_argument("--source", help="a video clip: also time decode -> preprocess -> invoke")
    p.add_argument("--backend", action="append", choices=[b for b in BACKENDS if b != "tensorflow"],
                   help="only this backend (repeatable; default: every one installed)")
    p.add_argument("--no-xnnpack-off", action="store_true",
                   help="skip the XNNPACK-off (reference kernels) configurations")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--plot", metavar="PNG", help="write a latency-vs-threads plot")


def _default_model(args) -> str:
    from edge import config

    path = config.load(getattr(args, "config", None)).model.path
    if not Path(path).is_file():
        raise ValueError(f"model {path!r} from the config is not a file: give MODEL explicitly")
    return path


def cmd_bench(args) -> int:
    """`edge bench [MODEL] ...`: progress on stderr, figures (or JSON) on stdout."""
    import json

    if args.seconds <= 0:
        raise ValueError("--seconds must be > 0")
    d = run_bench(
        args.model or _default_model(args),
        threads=parse_threads(args.threads),
        seconds=args.seconds,
        source=args.source,
        backends=args.backend,
        xnnpack=(True,) if args.no_xnnpack_off else (True, False),
        progress=progress_to_stderr,
    )
    if args.plot:
        d["plot"] = str(plot_bench(d, args.plot))
    print(json.dumps(d, indent=1) if args.json else format_bench(d))
    return 0
