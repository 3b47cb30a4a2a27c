"""`threads: auto` for the running pipeline, not for the bare invoke.

The bare invoke is fastest with every core, but in `edge run` the capture thread decodes and
resizes the next frame beside the invoke, and XNNPACK's spinning workers fight it for the same
cores: on 2 cores, 2 interpreter threads made the pipeline slower than 1. So on first use the
real pipeline (capture, decode, resize, invoke, chains; no outputs, no web page) runs for each
candidate thread count, in interleaved rounds, on the configured source:

- candidates: 1..min(4, cores), plus "leave one core to capture" (cores - 1) when the source
  decodes on the CPU (USB camera, file, stream) and "all cores" when it does not (the Pi
  camera's lores stream comes scaled by the ISP);
- paced source (a camera, a real-time file; not --no-drop): the fewest threads that keep up
  (classify >= 95 % of the frames the source delivers, or of `inference.max_fps`): spinning
  workers cost CPU and heat for nothing once every frame is classified;
- otherwise: the fastest, or fewer threads when within 3 % of it.

The choice and the figures are logged and cached per model digest + CPU + backend + source
kind and size + pacing in `paths.cache_dir()/pipeline-threads.json`, so only the first start
spends the few seconds (it says so: "tuning threads for this pipeline (~N s)"). This runs
before the frame loop starts (the composition root calls it). Not measured (the bare invoke's
choice, `edge.model.tune_threads`, stays): a bounded run (`--max-frames`, `--duration`: an
evaluation, which uses a cached choice but does not spend seconds making one), a source that
delivers no frames while tuning (no camera yet: tuned at the next start), and a reload that
loads another model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge import paths
from edge.atomic import read_json_map, store_json_entry
from edge.model import Model, cpu_id, load_configured, usable_cores
from edge.pipeline import Pipeline

log = logging.getLogger(__name__)

CACHE_NAME = "pipeline-threads.json"
# bump when the pipeline's use of the cores changes (choices measured before are stale):
# 2 = the capture thread decodes beside invokes on every core, JPEGs decode scaled
CACHE_FORMAT = 2
KEEP_UP = 0.95  # classified / delivered frames that counts as keeping up
WITHIN = 0.03  # fps this close to the fastest counts as as fast
WARMUP_FRAMES = 5  # per trial: the first frames (XNNPACK packing, the camera starting) excluded
ROUNDS = 2
SECONDS = 1.0  # per candidate and round, from the trial's first classified frame
OPEN_ALLOWANCE_S = 3.0  # a camera may take this long to deliver its first frame


class NoFrames(Exception):
    """A trial classified too few frames to time (no camera yet, a very short file)."""


@dataclass
class Trial:
    """One candidate's run of the real pipeline."""

    threads: int
    frames: int  # classified after the warm-up
    fps: float  # classified per second
    delivered_fps: float  # frames the source delivered per second (paced: its rate)
    cpu_ms: float  # process CPU (all threads) per classified frame
    latency_p99_ms: float | None
    keeps_up: bool = False


# Runs the pipeline of `cfg` with `model` for `seconds`; calls `on_frame()` per classified
# frame; returns (frames captured, frames classified, latencies in ms).
RunPipeline = Callable[[object, Model, float, Callable[[], None]], tuple[int, int, list]]


def decodes_on_cpu(source_cfg) -> bool:
    """False for the Pi camera (its lores stream arrives scaled, no JPEG to decode)."""
    return source_cfg.kind != "picamera2"


def candidates(cores: int, cpu_decode: bool) -> list[int]:
    """1..min(4, cores), with cores - 1 (a core left to capture) or all cores added."""
    extra = cores - 1 if cpu_decode else cores
    return sorted({*range(1, min(4, cores) + 1), max(1, extra)})


def paced(cfg, no_drop: bool) -> bool:
    """Frames come at the source's rate (a camera, a stream, a real-time file)."""
    if no_drop:
        return False
    src = cfg.source
    if src.kind == "files":
        return bool(src.realtime)
    device = str(src.device)
    is_file = src.kind == "opencv" and not device.isdigit() and not device.startswith(
        ("/dev/", "rtsp:", "http:", "https:", "rtmp:", "udp:", "tcp:"))
    return bool(src.realtime) if is_file else True


def source_key(cfg, model_size: tuple[int, int]) -> str:
    """What the choice depends on in the source: its kind and frame size."""
    src = cfg.source
    if src.kind == "picamera2":
        return f"picamera2:{model_size[0]}x{model_size[1]}"
    if src.kind == "files":
        return "files"
    device = str(src.device)
    if src.kind == "opencv" and Path(device).is_file():
        import cv2

        cap = cv2.VideoCapture(device)
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        cap.release()
        return f"file:{size[0]}x{size[1]}"
    return f"{src.kind}:{src.width}x{src.height}:{src.fourcc}"


def cache_key(cfg, model: Model, no_drop: bool) -> str:
    pacing = "paced" if paced(cfg, no_drop) else "unpaced"
    cap = f":max{cfg.inference.max_fps:g}" if cfg.inference.max_fps else ""
    return (f"v{CACHE_FORMAT}:{model.digest}:{cpu_id()}:{model.backend}-{model.backend_version}:"
            f"{'xnn' if model.xnnpack else 'ref'}:{source_key(cfg, model.input_size)}:"
            f"{pacing}{cap}")


def _cache_path() -> Path:
    return paths.cache_dir() / CACHE_NAME


def cached(key: str) -> dict | None:
    entry = read_json_map(_cache_path()).get(key)
    return entry if isinstance(entry, dict) and isinstance(entry.get("threads"), int) else None


def _store(key: str, entry: dict) -> None:
    if not store_json_entry(_cache_path(), key, entry):
        log.debug("cannot cache the pipeline thread choice in %s", _cache_path())


def run_trial(run: RunPipeline, cfg, model: Model, seconds: float) -> Trial:
    """The pipeline for `seconds` after its warm-up frames; figures from then on."""
    marks: list[tuple[float, float]] = []

    def on_frame() -> None:
        marks.append((time.perf_counter(), time.process_time()))

    captured, classified, latency = run(cfg, model, seconds, on_frame)
    used = marks[WARMUP_FRAMES:]
    if len(used) < 2:
        return Trial(model.threads, 0, 0.0, 0.0, float("nan"), None)
    (ta, ca), (tb, cb) = used[0], used[-1]
    n = len(used) - 1
    lat = latency[WARMUP_FRAMES:]
    fps = n / (tb - ta)
    # the source's rate: what was classified, scaled by captured / classified (drops)
    delivered = fps * captured / max(1, classified)
    return Trial(model.threads, n, fps, delivered, (cb - ca) / n * 1000,
                 float(np.percentile(lat, 99)) if lat else None)


def choose(trials: list[Trial], is_paced: bool, max_fps: float = 0.0) -> Trial:
    """Paced: the fewest threads that keep up; else the fastest (fewer threads if close)."""
    if is_paced:
        for t in trials:
            target = min(t.delivered_fps, max_fps) if max_fps else t.delivered_fps
            t.keeps_up = t.frames > 0 and t.fps >= KEEP_UP * target
        up = [t for t in trials if t.keeps_up]
        if up:
            return min(up, key=lambda t: t.threads)
    fastest = max(t.fps for t in trials)
    return min((t for t in trials if t.fps >= (1 - WITHIN) * fastest), key=lambda t: t.threads)


def measure(run: RunPipeline, cfg, model: Model, no_drop: bool, *, rounds: int = ROUNDS,
            seconds: float = SECONDS, threads: list[int] | None = None,
            load: Callable[[int], Model] | None = None) -> tuple[Trial, list[Trial]]:
    """Time every candidate in interleaved rounds; (the choice, one merged Trial each)."""
    threads = threads or candidates(usable_cores(), decodes_on_cpu(cfg.source))
    load = load or (lambda n: with_threads(cfg, n))
    models = {n: model if n == model.threads else load(n) for n in threads}
    per: dict[int, list[Trial]] = {n: [] for n in threads}
    for _ in range(rounds):
        for n in threads:
            trial = run_trial(run, cfg, models[n], seconds)
            if not trial.frames:
                raise NoFrames(f"the source delivered too few frames in {seconds:g} s")
            per[n].append(trial)
    merged = [merge(ts) for ts in per.values()]
    best = choose(merged, paced(cfg, no_drop), cfg.inference.max_fps)
    return best, merged


def merge(trials: list[Trial]) -> Trial:
    """A candidate's rounds as one: medians of the rates, worst p99."""
    ok = [t for t in trials if t.frames] or trials
    lat = [t.latency_p99_ms for t in ok if t.latency_p99_ms is not None]
    return Trial(ok[0].threads, sum(t.frames for t in ok),
                 float(np.median([t.fps for t in ok])),
                 float(np.median([t.delivered_fps for t in ok])),
                 float(np.median([t.cpu_ms for t in ok])), max(lat) if lat else None)


def table(trials: list[Trial], best: Trial) -> str:
    """The figures behind the choice, one line per candidate (the log and `edge bench`)."""
    lines = [f"{'threads':>7} {'fps':>8} {'source fps':>10} {'CPU ms/frame':>12} "
             f"{'p99 ms':>7} {'keeps up':>8}"]
    for t in trials:
        p99 = "-" if t.latency_p99_ms is None else f"{t.latency_p99_ms:.1f}"
        mark = " <- chosen" if t.threads == best.threads else ""
        lines.append(f"{t.threads:>7} {t.fps:>8.1f} {t.delivered_fps:>10.1f} {t.cpu_ms:>12.2f} "
                     f"{p99:>7} {'yes' if t.keeps_up else 'no':>8}{mark}")
    return "\n".join(lines)


def for_pipeline(cfg, model: Model, no_drop: bool, run: RunPipeline | None = None,
                 measure_now: bool = True) -> Model:
    """The model with the thread count `threads: auto` picks for this pipeline: cached, or
    measured now (a few seconds, logged; not when `measure_now` is false: a bounded run).
    An explicit thread count is kept as it is."""
    if cfg.model.threads != "auto":
        return model
    run = run or pipeline_runner(no_drop)
    key = cache_key(cfg, model, no_drop)
    entry = cached(key)
    if entry is None and not measure_now:
        log.debug("threads auto: no pipeline timing cached for this source; a bounded run "
                  "uses the bare invoke's best, %d", model.threads)
        return model
    if entry is None:
        threads = candidates(usable_cores(), decodes_on_cpu(cfg.source))
        budget = ROUNDS * SECONDS * len(threads)
        log.info("tuning threads for this pipeline (~%.0f s, once per model, CPU and source): "
                 "candidates %s", budget, threads)
        try:
            best, trials = measure(run, cfg, model, no_drop, threads=threads)
        except NoFrames as e:
            log.warning("cannot tune threads for this pipeline: %s; using the bare invoke's "
                        "best, %d (tuning again at the next start)", e, model.threads)
            return model
        log.info("threads auto for this pipeline: %d (%s)\n%s", best.threads,
                 "fewest that keep up" if best.keeps_up else "fastest", table(trials, best))
        entry = {"threads": best.threads, "trials": [asdict(t) for t in trials]}
        _store(key, entry)
    threads = entry["threads"]
    if threads == model.threads:
        return model
    log.info("threads auto: %d for this pipeline (the bare invoke's best was %d)", threads,
             model.threads)
    return with_threads(cfg, threads)


def with_threads(cfg, n: int) -> Model:
    """The config's model, loaded with `n` interpreter threads."""
    return load_configured(cfg.model.model_copy(update={"threads": n}))


def pipeline_runner(no_drop: bool) -> RunPipeline:
    """The real pipeline on the configured source, without outputs, web page, stats lines or
    motion gate, for `seconds` from its first classified frame."""

    def run(cfg, model: Model, seconds: float, on_frame: Callable[[], None]):
        quiet = cfg.model_copy(update={
            "outputs": [],
            "web": cfg.web.model_copy(update={"enabled": False}),
            # timing the invoke path: a still scene must not skip it
            "inference": cfg.inference.model_copy(update={"motion_threshold": 0.0}),
            "service": cfg.service.model_copy(update={"stats_every_s": 0,
                                                      "watch_config": False}),
        })
        first: list[float] = []

        def frame_done(results, events) -> None:
            on_frame()
            now = time.monotonic()
            if not first:
                first.append(now)
            if now - first[0] >= seconds:  # `seconds` of frames, however long opening took
                pipe.stop_event.set()

        pipe = Pipeline(quiet, model, no_drop=no_drop, printer=frame_done)
        quieted = [logging.getLogger(n) for n in ("edge.pipeline", "edge.capture")]
        levels = [q.level for q in quieted]
        for q in quieted:  # no "stats:" or "source running" lines per trial
            q.setLevel(logging.WARNING)
        try:
            pipe.run(duration=seconds + OPEN_ALLOWANCE_S)
        finally:
            for q, level in zip(quieted, levels, strict=True):
                q.setLevel(level)
        return pipe.stats.captured, pipe.stats.classified, list(pipe.stats.latency_ms)

    return run
