"""The main job: capture thread -> latest-frame slot -> inference loop -> chains -> outbox.

The capture thread never waits for inference: a newer frame replaces an unread one (counted as
dropped), so latency stays one frame deep however slow the model is. It decodes a frame just
before inference will want it and resizes it to the model's input there (`Prepare`), so the
loop only writes the pixels into the interpreter's input buffer, invokes, runs one chain per
region of interest, and hands results to the outbox, whose sinks run in their own threads.
Reloads swap chains between two frames; the camera is reopened only when the source section
changed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from edge import config as configmod
from edge.capture.base import Frame
from edge.errors import EdgeError
from edge.events import Event, Result
from edge.stats import Stats

log = logging.getLogger(__name__)


@dataclass
class Region:
    name: str | None  # None: the whole frame
    box: tuple[float, float, float, float] | None
    chain: Any


@dataclass
class Live:
    """What the web page and metrics read: the latest frame, results and recent events."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    frame: Frame | None = None
    results: dict = field(default_factory=dict)  # roi -> Result
    events: list = field(default_factory=list)  # recent (id, event dict), newest last (bounded)
    event_seq: int = 0
    max_events: int = 200

    def update(self, frame: Frame, results: list[Result], events: list[dict]) -> None:
        with self.lock:
            self.frame = frame
            for r in results:
                self.results[r.roi] = r
            for e in events:
                self.event_seq += 1
                self.events.append((self.event_seq, e))
            if len(self.events) > self.max_events:
                del self.events[: len(self.events) - self.max_events]


def _file_stamp(path: str | None) -> tuple | None:
    """What tells a changed file: modification time and size (None if missing)."""
    try:
        st = os.stat(path) if path else None
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size) if st else None


def usable_cores() -> int:
    """Cores this process may run on (a systemd CPUAffinity= or taskset counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def region_image(frame: Frame, box) -> Any:
    """The image a region is cut from: the full-resolution one when the source has one (a Pi
    camera's lores stream is already at the model's size: too coarse to crop)."""
    return frame.full if box and frame.full is not None else frame.rgb


@dataclass(frozen=True, eq=False)
class Prepare:
    """Resizes a frame to the model's input for every region, run by the capture thread.

    The inference loop then only maps the pixels into the input tensor: crop and resize of
    the next frame overlap the current invoke instead of adding to it.
    """

    model: Any
    boxes: tuple

    @classmethod
    def of(cls, model, regions: list[Region]) -> Prepare:
        return cls(model, tuple(r.box for r in regions))

    def __call__(self, frame: Frame) -> None:
        frame.inputs = (self, [self.model.fit(region_image(frame, b), b) for b in self.boxes])


def make_regions(cfg, labels: list[str], model_name: str, top_k: int = 5) -> list[Region]:
    from edge.postprocess.chain import Chain

    specs = configmod.spec_items(cfg.postprocess)
    rois = [(r.name, tuple(r.box)) for r in cfg.rois] or [(None, None)]
    return [
        Region(name, box, Chain(specs, labels, roi=name, device=cfg.device, model=model_name,
                                top_k=top_k))
        for name, box in rois
    ]


class Printer:
    """`edge run` output: a line when the top label of a region changes, or JSON lines."""

    def __init__(self, as_json: bool, events: bool = True, out=sys.stdout) -> None:
        self.as_json, self.events, self.out = as_json, events, out
        self.last: dict = {}

    def __call__(self, results: list[Result], events: list[dict]) -> None:
        lines = []
        if self.as_json:
            lines += [json.dumps({"result": r.to_dict()}) for r in results]
            lines += [json.dumps({"event": e}) for e in events]
        else:
            for r in results:
                label = r.top[0][0] if r.top else None
                if label != self.last.get(r.roi):
                    self.last[r.roi] = label
                    where = f" [{r.roi}]" if r.roi else ""
                    score = f" {r.top[0][1]:.2f}" if r.top else ""
                    lines.append(f"#{r.seq}{where} {label}{score}")
            for e in events if self.events else ():
                where = f" [{e['roi']}]" if e["roi"] else ""
                kind, label = e["type"].upper(), e["label"]
                lines.append(f"#{e['seq']}{where} {kind} {label} {e['score']:.2f}")
        if lines:  # one write: lines from sink threads on the same stream never interleave
            self.out.write("".join(line + "\n" for line in lines))
            self.out.flush()


class Pipeline:
    def __init__(self, cfg, model, *, no_drop: bool = False, printer=None, hooks=None,
                 overrides=None) -> None:
        from edge.capture.runner import LatestFrame

        self.cfg, self.model = cfg, model
        self.no_drop = no_drop
        self.printer = printer
        self.hooks = hooks  # edge.service.ServiceHooks, or None outside the service
        self.overrides = overrides or (lambda c: c)  # command-line flags, re-applied on reload
        self.stats = Stats()
        self.stats.extra["model"] = model.info
        self.live = Live()
        self.stop_event = threading.Event()
        self.reload_event = threading.Event()
        self.regions = make_regions(cfg, model.labels, model.name)
        self.prepare = Prepare.of(model, self.regions)
        self.slot = LatestFrame(self.stats, no_drop=no_drop)
        self.capture = None
        self.outbox = None

    # --------------------------------------------------------------- parts that reopen
    def _start_capture(self) -> None:
        from edge.capture import open_source
        from edge.capture.runner import CaptureThread

        src_cfg = self.cfg.source
        size = self.model.input_size
        open_source(src_cfg, size)  # settings that can never work fail now, not in a retry loop
        self.capture = CaptureThread(lambda: open_source(src_cfg, size), self.slot, self.stats,
                                     src_cfg)
        self._tune_capture()
        self.capture.start()

    def _tune_capture(self) -> None:
        """What the capture thread does for the current model: its resize, and whether it may
        decode beside an invoke (only when inference leaves a core free)."""
        self.capture.prepare = self.prepare
        self.capture.overlap = self.model.threads < usable_cores()

    def _make_outbox(self, cfg, model):
        """The outputs a config names, built (and checked) but not started."""
        from edge.sinks.outbox import Outbox

        return Outbox(configmod.spec_items(cfg.outputs), cfg.device, model.name, self.stats)

    def reload(self, path: str | None) -> bool:
        """Re-read the config; swap what changed between two frames. False if rejected.

        Everything new is built before anything is swapped, so a file that fails anywhere
        (YAML, schema, labels, a model or an output that cannot be opened) leaves the running
        pipeline exactly as it was.
        """
        from edge import catalog
        from edge.capture import open_source
        from edge.cli import load_configured_model

        try:
            new = self.overrides(configmod.load(path))
            model = self.model
            if new.model != self.cfg.model or catalog.file_changed(new.model.path, model.digest):
                model = load_configured_model(new.model)  # (a retrained model: same path)
            configmod.check_labels(new, model.labels, str(path))
            regions = make_regions(new, model.labels, model.name)
            source_changed = (new.source != self.cfg.source
                              or model.input_size != self.model.input_size)
            if source_changed:
                open_source(new.source, model.input_size)
            outputs_changed = (new.outputs != self.cfg.outputs or new.device != self.cfg.device
                               or model.name != self.model.name)
            outbox = self._make_outbox(new, model) if outputs_changed else None
        except EdgeError as e:
            log.error("reload rejected, keeping the running config:\n%s", e)
            return False
        # Stages remap their state by label name, so it carries over a new model too (labels
        # that are gone get their `exit`).
        old = {r.name: r.chain for r in self.regions}
        for r in regions:
            if r.name in old:
                r.chain.carry_over(old[r.name])
        self.cfg, self.model, self.regions = new, model, regions
        self.prepare = Prepare.of(model, regions)
        if self.capture is not None:
            self._tune_capture()
        self.stats.extra["model"] = model.info
        if self.printer is not None:
            self.printer.events = not logs_events_to_stdout(new)
        if source_changed and self.capture is not None:
            from edge.capture.runner import LatestFrame

            log.info("source changed: reopening the camera")
            self.capture.stop()  # closes the old slot: the loop reads from the new one
            self.slot = LatestFrame(self.stats, no_drop=self.no_drop)
            self._start_capture()
        if outbox is not None:
            self.outbox.close()
            self.outbox = outbox
            self.outbox.start()
        log.info("config reloaded from %s", path)
        return True

    # --------------------------------------------------------------- the loop
    def classify(self, frame: Frame) -> list[tuple[Result, list[Event]]]:
        """One invoke and one chain step per region; returns (result, events) per region."""
        out = []
        invoke_ms = 0.0
        inputs = frame.inputs[1] if frame.inputs and frame.inputs[0] is self.prepare else None
        for i, region in enumerate(self.regions):
            probs = self.model.classify(region_image(frame, region.box), region.box,
                                        inputs[i] if inputs else None)
            invoke_ms += self.model.invoke_ms
            out.append(region.chain.process(frame.seq, frame.ts, probs))
        self._invoke_ms = invoke_ms
        return out

    def run(self, max_frames: int | None = None, duration: float | None = None,
            config_path: str | None = None) -> int:
        import cv2

        # OpenCV's own worker pool would split each resize across every core and spin waiting
        # for it: that steals the core the capture thread and XNNPACK's workers run on (0.8 ms
        # of CPU per frame here). Every OpenCV call here is small and already runs beside
        # inference, so one thread each is faster in sum.
        cv2.setNumThreads(1)
        self.outbox = self._make_outbox(self.cfg, self.model)
        self.outbox.start()
        self._start_capture()
        deadline = time.monotonic() + duration if duration else None
        next_due = 0.0
        done = 0
        self._config_path = config_path
        self._config_stamp = _file_stamp(config_path)
        self._next_housekeeping = time.monotonic() + 1.0
        self._last_stats = time.monotonic()
        cpu0 = time.process_time()
        try:
            while not self.stop_event.is_set():
                if self.reload_event.is_set():
                    self.reload_event.clear()
                    if self.hooks:
                        self.hooks.on_reload()
                    self.reload(config_path)
                if deadline and time.monotonic() >= deadline:
                    break
                max_fps = self.cfg.inference.max_fps  # read each time: a reload may change it
                min_period = 1.0 / max_fps if max_fps else 0.0
                if min_period:
                    wait = next_due - time.monotonic()
                    if wait > 0 and self.stop_event.wait(wait):
                        break
                frame = self.slot.get(timeout=0.5)
                if frame is None:
                    if self.slot.closed:
                        break  # a finite source ended
                    self._housekeeping()
                    continue
                next_due = max(next_due + min_period, time.monotonic()) if min_period else 0.0
                per_region = self.classify(frame)
                results = [r for r, _ in per_region]
                now = time.monotonic()
                cpu = time.process_time()
                self.stats.frame_classified(self._invoke_ms, (now - frame.mono) * 1000, cpu - cpu0)
                cpu0 = cpu
                events = [d for r, evs in per_region for d in self.outbox.publish(r, evs, frame)]
                for e in events:
                    self.stats.event(e["label"], e["type"])
                self.stats.active = sorted({f"{r.roi}:{a}" if r.roi else a
                                            for r in results for a in r.active})
                self.live.update(frame, results, events)
                if self.printer:
                    self.printer(results, events)
                if self.hooks:
                    self.hooks.on_frame_classified(self.status_text)
                done += 1
                if max_frames and done >= max_frames:
                    break
                self._housekeeping()
        finally:
            if self.hooks:
                self.hooks.on_stop()
            self.capture.stop()
            self.outbox.close()
            log.info(self.stats.line())
        return 0

    def _housekeeping(self) -> None:
        """Once a second at most: the stats log line, and the config file watch."""
        now = time.monotonic()
        if now < self._next_housekeeping:
            return
        self._next_housekeeping = now + 1.0
        every = self.cfg.service.stats_every_s
        if every and now - self._last_stats >= every:
            log.info(self.stats.line())
            self._last_stats = now
        if self.cfg.service.watch_config and self._config_path:
            stamp = _file_stamp(self._config_path)
            if stamp != self._config_stamp:
                self._config_stamp = stamp
                log.info("%s changed: reloading", self._config_path)
                self.reload_event.set()

    def status_text(self) -> str:
        s = self.stats.snapshot()
        active = ", ".join(s["active"]) or "none"
        return f"{s['classify_fps']:.1f} fps, dropped {s['frames_dropped']}, active: {active}"


def apply_overrides(cfg, args) -> Any:
    """--demo / --source / --model / --no-drop on top of the config file."""
    from edge.capture import apply_source

    source = cfg.source
    if getattr(args, "demo", False):
        from edge.demo import demo_clip

        source = apply_source(source, str(demo_clip())).model_copy(update={"loop": True})
    if getattr(args, "source", None):
        source = apply_source(source, args.source)
    if getattr(args, "no_drop", False):
        source = source.model_copy(update={"realtime": False})  # as fast as it can be read
    updates: dict = {"source": source} if source != cfg.source else {}
    if getattr(args, "model", None):
        updates["model"] = cfg.model.model_copy(update={"path": args.model})
    if getattr(args, "json", False):  # stdout carries the JSON lines: log sinks move to stderr
        outputs = [_log_to_stderr(spec) for spec in cfg.outputs]
        if outputs != cfg.outputs:
            updates["outputs"] = outputs
    return cfg.model_copy(update=updates) if updates else cfg


def _log_to_stderr(spec):
    name, params = configmod.spec_items([spec])[0]
    if name != "log" or params.stream != "stdout":
        return spec
    return spec.model_copy(update={"log": params.model_copy(update={"stream": "stderr"})})


def logs_events_to_stdout(cfg) -> bool:
    return any(
        name == "log" and "enter" in params.events and params.stream == "stdout"
        for name, params in configmod.spec_items(cfg.outputs)
    )


def run_from_args(args) -> int:
    """`edge run`: load config and model, start the service hooks and the web page, loop."""
    import faulthandler

    from edge import service
    from edge.cli import load_configured_model, model_line

    faulthandler.enable()  # a watchdog kill (SIGABRT) prints every thread's stack to the journal

    path = args.config or (str(configmod.DEFAULT_PATH) if configmod.DEFAULT_PATH.exists() else None)
    cfg = apply_overrides(configmod.load(path), args)
    model = load_configured_model(cfg.model)
    configmod.check_labels(cfg, model.labels, path or "<defaults>")
    log.info("%s", model_line(model))
    hooks = service.ServiceHooks(service.Notifier.from_env(), cfg.service.status_every_s)
    printer = Printer(args.json, events=not logs_events_to_stdout(cfg))
    pipe = Pipeline(cfg, model, no_drop=args.no_drop, printer=printer, hooks=hooks,
                    overrides=lambda c: apply_overrides(c, args))
    signals = service.install_signal_handlers(
        on_reload=pipe.reload_event.set, on_stop=pipe.stop_event.set
    )
    web = None
    try:
        if cfg.web.enabled:
            try:
                from edge.web import start_web
            except ImportError:
                start_web = None
            if start_web:
                web = start_web(cfg.web, pipe)
        pidfile = getattr(args, "pidfile", None) or cfg.service.pidfile
        with service.PidFile(service.pidfile_for_run(pidfile)):
            return pipe.run(args.max_frames, args.duration, path)
    finally:
        if web is not None:
            web.stop()
        signals.restore()
