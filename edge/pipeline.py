"""The main job: capture thread -> latest-frame slot -> inference loop -> chains -> outbox.

The capture thread never waits for inference: a newer frame replaces an unread one (counted as
dropped), so latency stays one frame deep however slow the model is. It decodes a frame just
before inference will want it and makes its input tensors there (the `InputPlan`), so the
loop only copies them into the interpreter, invokes, runs one chain per region and hands the
results to the outbox, whose sinks run in their own threads.

A reload is parsed and built beside the loop, in the reloader thread: the config, a new model
if it changed, the chains, the input plan, new outputs. Nothing is swapped until all of it
stands, so a bad file (or one the next start would refuse) leaves the running pipeline as it
was; the loop then swaps between two frames. Old outputs are flushed and closed beside the loop
too, and the camera is reopened only when the source section changed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from edge import config as configmod
from edge.capture.base import Frame
from edge.capture.runner import CaptureThread, LatestFrame
from edge.capture.spec import open_source
from edge.errors import EdgeError
from edge.events import Event, Result
from edge.fullres import FullDemand, config_needs_full
from edge.model import Model, load_configured, usable_cores
from edge.motion import gate_for
from edge.postprocess.chain import Chain
from edge.preprocess import Box, InputPlan
from edge.segment import attach_boxes, segment_frame
from edge.segment import max_fps as capped_fps
from edge.sinks.outbox import Outbox
from edge.stats import Stats
from edge.task import SEGMENTER, require

log = logging.getLogger(__name__)

# Settings read once at start: a reload reports a change to them instead of applying it.
RESTART_ONLY = ("web", "service.pidfile", "service.status_every_s")


@dataclass
class Region:
    name: str | None  # None: the whole frame
    box: Box | None
    chain: Chain


@dataclass(frozen=True)
class RegionView:
    name: str | None
    box: Box | None
    watched: dict[str, dict]  # label -> {"enter", "exit"}: the levels the chain applies
    levels_of: Callable[[list[str]], dict[str, dict]]


@dataclass(frozen=True)
class View:
    """What the web page may read of the running configuration, replaced whole on start and
    on each reload (never mutated): readers need no lock and never see half a reload."""

    cfg: Any
    source: dict  # the source settings, credentials masked (the page's header)
    model: dict  # Model.info of the model running
    labels: list[str]  # its labels
    regions: tuple[RegionView, ...]
    served_dirs: tuple[Path, ...]  # folders whose files the page may serve (snapshots)
    sink_stats: Callable[[], dict]


@dataclass
class Live:
    """What changes per frame for the web page and metrics: the latest frame, results and
    recent events. Written by the loop under the lock; readers copy references under it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    frame: Frame | None = None
    results: dict = field(default_factory=dict)  # roi -> Result
    events: list = field(default_factory=list)  # recent (id, event dict), newest last (bounded)
    event_seq: int = 0
    max_events: int = 200
    mask: tuple | None = None  # segmenters: (frame seq, class map) of the latest frame

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


@dataclass
class Swap:
    """Everything a reload built, ready to take over between two frames."""

    cfg: Any
    model: Model
    regions: list[Region]
    plan: InputPlan
    outbox: Outbox | None  # None: the outputs did not change
    source_changed: bool


def _file_stamp(path: str | None) -> tuple | None:
    """What tells a changed file: modification time and size (None if missing)."""
    try:
        st = os.stat(path) if path else None
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size) if st else None


def make_regions(cfg, labels: list[str], model_name: str, top_k: int = 5) -> list[Region]:
    specs = configmod.spec_items(cfg.postprocess)
    rois = [(r.name, tuple(r.box)) for r in cfg.rois] or [(None, None)]
    return [
        Region(name, box, Chain(specs, labels, roi=name, device=cfg.device, model=model_name,
                                top_k=top_k))
        for name, box in rois
    ]


def input_plan(model: Model, regions: list[Region]) -> InputPlan:
    if model.task.kind == SEGMENTER:  # one tensor, the whole frame, for every region
        return InputPlan(((None, model.input),))
    return InputPlan(tuple((r.box, model.input) for r in regions))


def build_outbox(cfg, model_name: str) -> Outbox:
    """The outputs a config names, built (and checked) but not started."""
    return Outbox(configmod.spec_items(cfg.outputs), cfg.device, model_name)


def restart_only_changes(old, new) -> list[str]:
    """The restart-only settings (RESTART_ONLY) that differ between two configs."""
    changed = []
    for dotted in RESTART_ONLY:
        a, b = old, new
        for part in dotted.split("."):
            a, b = getattr(a, part), getattr(b, part)
        if a != b:
            changed.append(dotted)
    return changed


class Pipeline:
    """Owns the capture thread, the slot, the model, the chains and the outbox.

    `checks(cfg)` is what a start would refuse beyond what the pipeline builds itself (the
    web page's bind and token): a reload runs it too, so it never accepts a config that the
    next start would refuse. `on_swap(cfg)` runs on the loop after each swap (the printer).
    """

    def __init__(self, cfg, model: Model, *, no_drop: bool = False, printer=None, hooks=None,
                 overrides=None, checks: Callable[[Any], None] | None = None,
                 on_swap: Callable[[Any], None] | None = None) -> None:
        self.cfg, self.model = cfg, model
        self.no_drop = no_drop
        self.printer = printer
        self.hooks = hooks  # edge.service.ServiceHooks, or None outside the service
        self.overrides = overrides or (lambda c: c)  # command-line flags, re-applied on reload
        self.checks = checks
        self.on_swap = on_swap
        self.stats = Stats()
        self.live = Live()
        self.stop_event = threading.Event()
        self.reload_event = threading.Event()
        self.regions = make_regions(cfg, model.labels, model.name)
        self.plan = input_plan(model, self.regions)
        self.motion = gate_for(cfg.inference)  # None: every frame classified
        self.full_demand = FullDemand(config_needs_full(cfg))  # the Pi camera's main stream
        self.slot = LatestFrame(self.stats, no_drop=no_drop)
        self.capture: CaptureThread | None = None
        self.outbox: Outbox | None = None
        self.view = self._make_view()
        self._pending: Swap | None = None
        self._applied = threading.Event()
        self._handover: threading.Thread | None = None

    # --------------------------------------------------------------- parts that reopen
    def _start_capture(self) -> None:
        src_cfg = self.cfg.source
        size = self.model.input_size
        open_source(src_cfg, size)  # settings that can never work fail now, not in a retry loop
        self.capture = CaptureThread(lambda: open_source(src_cfg, size, self.full_demand),
                                     self.slot, self.stats, src_cfg)
        self._tune_capture()
        self.capture.start()

    def _tune_capture(self) -> None:
        """What the capture thread does for the current model: its tensors, and whether it may
        decode beside an invoke (only when inference leaves a core free)."""
        self.capture.prepare = self.plan.prepare
        self.capture.overlap = self.model.threads < usable_cores()

    def _make_view(self) -> View:
        outbox = self.outbox
        return View(
            cfg=self.cfg,
            source=configmod.masked(self.cfg)["source"],
            model=self.model.info,
            labels=self.model.labels,
            regions=tuple(RegionView(r.name, r.box, r.chain.watched(), r.chain.levels_of)
                          for r in self.regions),
            served_dirs=outbox.served_dirs() if outbox else (),
            sink_stats=outbox.sink_stats if outbox else dict,
        )

    def make_outbox(self, cfg, model: Model) -> Outbox:
        return build_outbox(cfg, model.name)

    # --------------------------------------------------------------- reload
    def build(self, path: str | None) -> Swap:
        """Everything a config file needs, built beside the running pipeline (which it does
        not touch); raises EdgeError for a file that fails anywhere."""
        new = self.overrides(configmod.load(path))
        model = self.model
        if new.model != self.cfg.model:
            model = load_configured(new.model)
            require(model.task, "run", model.path)
        configmod.check_labels(new, model.labels, str(path))
        if self.checks is not None:
            self.checks(new)
        regions = make_regions(new, model.labels, model.name)
        source_changed = (new.source != self.cfg.source
                          or model.input_size != self.model.input_size)
        if source_changed:
            open_source(new.source, model.input_size)
        outputs_changed = (new.outputs != self.cfg.outputs or new.device != self.cfg.device
                           or model.name != self.model.name)
        outbox = self.make_outbox(new, model) if outputs_changed else None
        return Swap(new, model, regions, input_plan(model, regions), outbox, source_changed)

    def _built(self, path: str | None) -> Swap | None:
        try:
            swap = self.build(path)
        except EdgeError as e:
            log.error("reload rejected, keeping the running config:\n%s", e)
            return None
        for setting in restart_only_changes(self.cfg, swap.cfg):
            log.warning("reload: %s changed; it applies at the next restart", setting)
        return swap

    def reload(self, path: str | None) -> bool:
        """Build and apply at once: for a pipeline whose loop is not running. False if
        rejected."""
        swap = self._built(path)
        if swap is not None:
            self._apply(swap)
        return swap is not None

    def _reloader(self, path: str | None) -> None:
        """Waits for reload requests; builds each beside the loop and hands it over."""
        while not self.stop_event.is_set():
            if not self.reload_event.wait(0.2):
                continue
            self.reload_event.clear()
            if self.hooks:
                self.hooks.on_reload()
            swap = self._built(path)
            if swap is None:
                continue
            self._applied.clear()
            self._pending = swap
            # the next build compares against what this one swapped in
            while not self._applied.wait(0.2):
                if self.stop_event.is_set():
                    if swap.outbox is not None:
                        swap.outbox.close()
                    return

    def _apply(self, swap: Swap) -> None:
        """Swap what a reload built; runs between two frames, and only assigns and starts."""
        # Stages remap their state by label name, so it carries over a new model too (labels
        # that are gone get their `exit`).
        old = {r.name: r.chain for r in self.regions}
        for r in swap.regions:
            if r.name in old:
                r.chain.carry_over(old[r.name])
        if swap.cfg.inference != self.cfg.inference:
            self.motion = gate_for(swap.cfg.inference)
        self.cfg, self.model, self.regions = swap.cfg, swap.model, swap.regions
        self.full_demand.by_config = config_needs_full(swap.cfg)
        self.plan = swap.plan
        if self.capture is not None:
            self._tune_capture()
        if swap.source_changed and self.capture is not None:
            log.info("source changed: reopening the camera")
            self.capture.stop()  # closes the old slot: the loop reads from the new one
            self.slot = LatestFrame(self.stats, no_drop=self.no_drop)
            self._start_capture()
        if swap.outbox is not None:
            old_outbox, self.outbox = self.outbox, swap.outbox
            if old_outbox is None:
                self.outbox.start()
            else:  # flushing can take seconds: never on the loop
                self._handover = threading.Thread(target=_hand_over,
                                                  args=(old_outbox, self.outbox),
                                                  name="outbox-handover", daemon=True)
                self._handover.start()
        self.view = self._make_view()
        if self.on_swap is not None:
            self.on_swap(swap.cfg)
        log.info("config reloaded")

    # --------------------------------------------------------------- the loop
    def classify(self, frame: Frame) -> tuple[list[tuple[Result, list[Event]]], float]:
        """One invoke and one chain step per region: ((result, events) per region, invoke
        ms in all)."""
        out = []
        invoke_ms = 0.0
        tensors = self.plan.tensors(frame)
        if self.model.task.kind == SEGMENTER:  # one invoke sees the whole frame (edge.segment)
            covs, cmap, invoke_ms = segment_frame(self.model, tensors[0], frame.rgb.shape,
                                                  [r.box for r in self.regions], self.cfg.model)
            self.live.mask = (frame.seq, cmap)
            for region, cov in zip(self.regions, covs, strict=True):
                out.append(region.chain.process(frame.seq, frame.ts, frame.mono, cov.scores))
                attach_boxes(out[-1][1], cov, self.model.labels)
            return out, invoke_ms
        for region, tensor in zip(self.regions, tensors, strict=True):
            inference = self.model.run(tensor)
            invoke_ms += inference.invoke_ms
            out.append(region.chain.process(frame.seq, frame.ts, frame.mono, inference.scores))
        return out, invoke_ms

    def run(self, max_frames: int | None = None, duration: float | None = None,
            config_path: str | None = None) -> int:
        # OpenCV's own worker pool would split each resize across every core and spin waiting
        # for it: that steals the core the capture thread and XNNPACK's workers run on (0.8 ms
        # of CPU per frame here). Every OpenCV call here is small and already runs beside
        # inference, so one thread each is faster in sum.
        cv2.setNumThreads(1)
        reloader = threading.Thread(target=self._reloader, args=(config_path,),
                                    name="reloader", daemon=True)
        try:
            self.outbox = self.make_outbox(self.cfg, self.model)
            self.outbox.start()
            self.view = self._make_view()
            self._start_capture()
            reloader.start()
            self._loop(max_frames, duration, config_path)
        finally:
            self.stop_event.set()
            if self.hooks:
                self.hooks.on_stop()
            if self.capture is not None:
                self.capture.stop()
            if reloader.is_alive():
                reloader.join(1.0)
            if self._handover is not None:
                self._handover.join(10.0)  # the old outputs' flush is bounded (5 s)
            if self.outbox is not None:
                self.outbox.close()
            log.info(self.stats.line())
        if self.capture is not None and self.capture.fatal:  # a file that cannot be read
            raise EdgeError(f"source failed: {self.capture.fatal}")
        return 0

    def _loop(self, max_frames: int | None, duration: float | None,
              config_path: str | None) -> None:
        deadline = time.monotonic() + duration if duration else None
        next_due = 0.0
        done = 0
        self._config_path = config_path
        self._config_stamp = _file_stamp(config_path)
        self._next_housekeeping = time.monotonic() + 1.0
        self._last_stats = self._last_status = time.monotonic()
        cpu0 = time.process_time()
        while not self.stop_event.is_set():
            if self._pending is not None:
                swap, self._pending = self._pending, None
                self._apply(swap)
                self._applied.set()
            if deadline and time.monotonic() >= deadline:
                break
            # read each time: a reload may change it (a segmenter has a default cap)
            max_fps = capped_fps(self.cfg.inference.max_fps, self.model, self.no_drop)
            min_period = 1.0 / max_fps if max_fps else 0.0
            if min_period:
                wait = next_due - time.monotonic()
                if wait > 0 and self.stop_event.wait(wait):
                    break
            frame = self.slot.get(timeout=0.5)
            if frame is None:
                if self.slot.closed and self._pending is None:
                    break  # a finite source ended
                self._housekeeping()
                continue
            if self.motion is not None and not self.motion.wants(frame.rgb, frame.mono):
                self._skipped(frame)  # unchanged: no invoke, no result (edge.motion)
                continue
            next_due = max(next_due + min_period, time.monotonic()) if min_period else 0.0
            per_region, invoke_ms = self.classify(frame)
            results = [r for r, _ in per_region]
            now = time.monotonic()
            cpu = time.process_time()
            self.stats.frame_classified(invoke_ms, (now - frame.mono) * 1000, cpu - cpu0)
            cpu0 = cpu
            events = [d for r, evs in per_region for d in self.outbox.publish(r, evs, frame)]
            for e in events:
                self.stats.event(e["label"], e["type"])
            self.stats.set_active(sorted({f"{r.roi}:{a}" if r.roi else a
                                          for r in results for a in r.active}))
            self.live.update(frame, results, events)
            if self.printer:
                self.printer(results, events)
            if self.hooks:
                self.hooks.on_frame_classified(self.status_text)
            done += 1
            if max_frames and done >= max_frames:
                break
            self._housekeeping()

    def _skipped(self, frame: Frame) -> None:
        """A frame the motion gate skipped: counted, shown on the page, the watchdog fed."""
        self.stats.frame_skipped()
        self.live.update(frame, [], [])
        if self.hooks:
            self.hooks.on_frame_classified(self.status_text)
        self._housekeeping()

    def _housekeeping(self) -> None:
        """Once a second at most: the stats log line, the config file watch, and STATUS= while
        no frame comes (the per-frame hook cannot say "waiting for the camera")."""
        now = time.monotonic()
        if now < self._next_housekeeping:
            return
        self._next_housekeeping = now + 1.0
        state = self.stats.source_state
        if self.hooks and state != "running" and now - self._last_status >= \
                self.cfg.service.status_every_s:
            error = self.capture.error if self.capture is not None else None
            self.hooks.on_status(f"source {state}" + (f": {error}" if error else ""))
            self._last_status = now
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
        s = self.stats.summary()
        active = ", ".join(s["active"]) or "none"
        return f"{s['classify_fps']:.1f} fps, dropped {s['frames_dropped']}, active: {active}"


def _hand_over(old: Outbox, new: Outbox) -> None:
    """Flush and close the old outputs, then start the new ones (whose bounded queues hold
    what the loop publishes meanwhile): never two MQTT sessions of one client id at once."""
    old.close()
    new.start()
