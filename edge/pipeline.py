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
from edge.model import Model, load_configured, model_file_changed, model_line, usable_cores
from edge.motion import gate_for
from edge.postprocess.chain import Chain
from edge.preprocess import Box, InputPlan
from edge.regions import (
    Gate,
    Rate,
    earliest_due,
    forecast,
    frame_clock,
    gate_open,
    gates,
    has_own_models,
    model_names,
    prepare_models,
    region_key,
)
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
    model: Model | None = None  # its own model (edge.regions); None: the pipeline's model
    model_name: str = ""  # the name results, events and /metrics give its model
    rate: Rate = field(default_factory=Rate)
    gate: Gate | None = None
    entry: int = 0  # its tensor's index in the input plan
    active: list[str] = field(default_factory=list)  # its active set at its last run (gates)


@dataclass(frozen=True)
class RegionView:
    name: str | None
    box: Box | None
    watched: dict[str, dict]  # label -> {"enter", "exit"}: the levels the chain applies
    levels_of: Callable[[list[str]], dict[str, dict]]
    model: str = ""  # the name of the model that classifies it
    rate: str = "every frame"  # how often it runs, for people
    every_s: float | None = None  # the same as a period; None: every frame
    model_digest: str = ""  # sha256 of its model's file (a deploy waits for it)


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
    models: dict = field(default_factory=dict)  # the regions' own models, by edge.regions key


def _file_stamp(path: str | None) -> tuple | None:
    """What tells a changed file: modification time and size (None if missing)."""
    try:
        st = os.stat(path) if path else None
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size) if st else None


def make_regions(cfg, top: Model, models: dict[str, Model] | None = None,
                 top_k: int = 5) -> list[Region]:
    """A region per `rois:` entry (or the whole frame): its chain, model, rate and gate."""
    specs = configmod.spec_items(cfg.postprocess)
    if not cfg.rois:
        chain = Chain(specs, top.labels, roi=None, device=cfg.device, model=top.name, top_k=top_k)
        return [Region(None, None, chain, model_name=top.name)]
    models = models or {}
    names = model_names(top, models)
    out = []
    for roi, gate in zip(cfg.rois, gates(cfg), strict=True):
        key = region_key(cfg, roi, top)
        model = None if key is None else models[key]
        own = configmod.spec_items(roi.postprocess) if roi.postprocess is not None else specs
        chain = Chain(own, (model or top).labels, roi=roi.name, device=cfg.device,
                      model=names[key], top_k=top_k)
        out.append(Region(roi.name, tuple(roi.box), chain, model, names[key], Rate.of(roi),
                          gate))
    return out


def input_plan(model: Model, regions: list[Region], no_drop: bool = False) -> InputPlan:
    """An entry per region on a classifier (its crop at its model's input), one whole-frame
    entry shared by the regions on a segmenter; sets each region's `entry`."""
    entries: list = []
    whole: int | None = None
    for r in regions:
        m = r.model or model
        if m.task.kind == SEGMENTER:  # one tensor, the whole frame, for all its regions
            if whole is None:
                whole = len(entries)
                entries.append((None, m.input))
            r.entry = whole
        else:
            r.entry = len(entries)
            entries.append((r.box, m.input))
    return InputPlan(tuple(entries), forecast(regions, len(entries), no_drop))


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
                 on_swap: Callable[[Any], None] | None = None,
                 models: dict[str, Model] | None = None) -> None:
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
        self.models = prepare_models(cfg, model) if models is None else models
        self.regions = make_regions(cfg, model, self.models)
        self.plan = input_plan(model, self.regions, no_drop)
        self.tag_models = has_own_models(cfg)  # results then name their model
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
        decode_to = self.model.input.decode_to  # JPEGs decode toward it (edge.decode)
        self.capture = CaptureThread(
            lambda: open_source(src_cfg, size, self.full_demand, decode_to), self.slot,
            self.stats, src_cfg)
        self._tune_capture()
        self.capture.start()

    def _tune_capture(self) -> None:
        """What the capture thread does for the current model: its tensors, and whether it may
        decode beside an invoke (not on a single core: it would only take turns with it)."""
        self.capture.prepare = self.plan.prepare
        self.capture.overlap = usable_cores() > 1

    def _make_view(self) -> View:
        outbox = self.outbox
        return View(
            cfg=self.cfg,
            source=configmod.masked(self.cfg)["source"],
            model=self.model.info,
            labels=self.model.labels,
            regions=tuple(RegionView(r.name, r.box, r.chain.watched(), r.chain.levels_of,
                                     r.model_name, r.rate.text(), r.rate.period or None,
                                     (r.model or self.model).digest)
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
        if new.model != self.cfg.model or model_file_changed(new.model, model):
            model = load_configured(new.model)  # (a changed file: retrained under its name)
            require(model.task, "run", model.path)
        configmod.check_labels(new, model.labels, str(path))
        if self.checks is not None:
            self.checks(new)
        models = prepare_models(new, model, self.models)  # reuses the unchanged ones
        for key, m in models.items():
            if self.models.get(key) is not m:
                log.info("reload: %s", model_line(m))
        regions = make_regions(new, model, models)
        source_changed = (new.source != self.cfg.source
                          or model.input_size != self.model.input_size
                          or model.input.decode_to != self.model.input.decode_to)
        if source_changed:
            open_source(new.source, model.input_size)
        outputs_changed = (new.outputs != self.cfg.outputs or new.device != self.cfg.device
                           or model.name != self.model.name)
        outbox = self.make_outbox(new, model) if outputs_changed else None
        return Swap(new, model, regions, input_plan(model, regions, self.no_drop), outbox,
                    source_changed, models)

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
        """Waits for reload requests; builds each beside the loop and hands it over. The run's
        end sets the reload event too, so this thread leaves at once, not at a poll."""
        while True:
            self.reload_event.wait()
            if self.stop_event.is_set():
                return
            self.reload_event.clear()
            if self.hooks:
                self.hooks.on_reload()
            swap = self._built(path)
            if swap is None:
                continue
            self._applied.clear()
            self._pending = swap
            # the next build compares against what this one swapped in
            while not self._applied.wait(0.05):
                if self.stop_event.is_set():
                    if swap.outbox is not None:
                        swap.outbox.close()
                    return

    def _apply(self, swap: Swap) -> None:
        """Swap what a reload built; runs between two frames, and only assigns and starts."""
        # Stages remap their state by label name, so it carries over a new model too (labels
        # that are gone get their `exit`).
        # Rates keep their schedule; a gate keeps reading the active set of the same model.
        old = {r.name: r for r in self.regions}
        for r in swap.regions:
            if r.name in old:
                was = old[r.name]
                r.chain.carry_over(was.chain)
                r.rate.carry_over(was.rate)
                if r.model_name == was.model_name:
                    r.active = was.active
        if swap.cfg.inference != self.cfg.inference:
            self.motion = gate_for(swap.cfg.inference)
        self.cfg, self.model, self.regions = swap.cfg, swap.model, swap.regions
        self.models, self.tag_models = swap.models, has_own_models(swap.cfg)
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
        """One invoke and one chain step per region due on this frame (its rate and gate,
        edge.regions): ((result, events) per region that ran, invoke ms in all)."""
        out = []
        invoke_ms = 0.0
        invokes: dict[str, int] = {}
        clock = frame_clock(frame, self.no_drop)
        seg: dict | None = None  # the segmenter's coverage per region, once per frame
        for region in self.regions:
            if not (region.rate.due(clock) and gate_open(region, self.regions)):
                continue  # no result for this frame, not a stale one
            model = region.model or self.model
            if model.task.kind == SEGMENTER:  # one invoke sees the whole frame (edge.segment)
                if seg is None:
                    on_it = [r for r in self.regions if r.model is None]
                    covs, cmap, ms = segment_frame(model, self.plan.tensor(frame, region.entry),
                                                   frame.rgb.shape, [r.box for r in on_it],
                                                   self.cfg.model)
                    self.live.mask = (frame.seq, cmap)
                    seg = {id(r): cov for r, cov in zip(on_it, covs, strict=True)}
                    invoke_ms += ms
                    invokes[region.model_name] = invokes.get(region.model_name, 0) + 1
                cov = seg[id(region)]
                result, events = region.chain.process(frame.seq, frame.ts, frame.mono,
                                                      cov.scores)
                attach_boxes(events, cov, model.labels)
            else:
                inference = model.run(self.plan.tensor(frame, region.entry))
                invoke_ms += inference.invoke_ms
                invokes[region.model_name] = invokes.get(region.model_name, 0) + 1
                result, events = region.chain.process(frame.seq, frame.ts, frame.mono,
                                                      inference.scores)
            region.rate.ran(clock)
            region.active = result.active
            if self.tag_models:
                result.model = region.model_name
            out.append((result, events))
        self.stats.invoked(invokes)
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
            self.reload_event.set()  # wakes the reloader to leave
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
            # every region on a rate (edge.regions): no frame is wanted before the first is due
            wake = 0.0 if self.no_drop else earliest_due(self.regions) - time.monotonic()
            if wake > 0.001:
                if self.stop_event.wait(min(wake, 0.25)):
                    break
                self._housekeeping()
                continue  # (a reload's swap is applied meanwhile)
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
            if per_region:  # some region ran (its rate or gate may have said no to all)
                cpu = time.process_time()
                self.stats.frame_classified(invoke_ms, (now - frame.mono) * 1000, cpu - cpu0)
                cpu0 = cpu
            events = [d for r, evs in per_region for d in self.outbox.publish(r, evs, frame)]
            for e in events:
                self.stats.event(e["label"], e["type"])
            self.stats.set_active(sorted({f"{r.name}:{a}" if r.name else a
                                          for r in self.regions for a in r.active}))
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
