"""Per-region models, rates and gates: which model classifies a region, how often, and when.

A region may name its own model (`rois[].model`), rate (`every_s` / `max_fps`), chain
(`postprocess`) and gate (`when: {roi, active}`: run only while an earlier region has one of
these labels active). Each distinct model is loaded once, and regions naming it share its
interpreter. The frame loop runs the models one after another, never two at once, so the
threads rule only keeps idle thread pools from outnumbering the cores: the top-level model
keeps its threads, a region model with `threads: auto` gets the cores the top-level one leaves
free (at least 1), an explicit `threads: N` is used as given.

A rate is a schedule on a clock: the frame's `mono` time, or with `--no-drop` a file's own
time (frame number / frame rate, `Frame.media_s`), so evaluating a file gives the same results
on any machine at any speed. A region runs on the first frame at or after its due time; the
next due time is one period later (anchored, so 1 Hz on 30 fps runs every 30th frame), re-
anchored on the frame when it fell behind by more than a period or the clock went back (a new
source). A region whose rate or gate says no produces no result for that frame.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from edge import config as configmod
from edge import labels as labelmatch
from edge.errors import ConfigError, EdgeError
from edge.model import Model, load_configured, usable_cores
from edge.postprocess.base import STAGES
from edge.task import CLASSIFIER, require

EPS = 1e-6  # clock slack: 30 frames of 1/30 s are 1 s


def frame_clock(frame, no_drop: bool) -> float:
    """The time a region's rate is measured in: a file's own time with --no-drop, else mono."""
    media = getattr(frame, "media_s", None)
    return media if no_drop and media is not None else frame.mono


@dataclass
class Rate:
    """When a region runs next; `period` 0: every frame. The loop alone writes it; the capture
    thread only reads `next_due` (one float) to skip the resize of a region not due."""

    period: float = 0.0
    next_due: float = -math.inf

    @classmethod
    def of(cls, roi) -> Rate:
        every = roi.every_s if roi.every_s is not None else (
            1.0 / roi.max_fps if roi.max_fps is not None else 0.0)
        return cls(float(every))

    def due(self, clock: float) -> bool:
        if not self.period:
            return True
        nd = self.next_due
        return clock >= nd - EPS or nd - clock > self.period + EPS  # due, or the clock went back

    def ran(self, clock: float) -> None:
        if self.period:
            on_time = self.next_due - EPS <= clock < self.next_due + self.period
            self.next_due = self.next_due + self.period if on_time else clock + self.period

    def carry_over(self, old: Rate) -> None:
        """Keep the schedule across a reload: the last run stays the last run."""
        if self.period and old.period and math.isfinite(old.next_due):
            self.next_due = old.next_due - old.period + self.period

    def text(self) -> str:
        if not self.period:
            return "every frame"
        return f"every {self.period:g} s" if self.period >= 1 else f"{1 / self.period:g} fps"


@dataclass(frozen=True)
class Gate:
    """`when:` of a region: open while the gating region (at `index`, earlier in the list) has
    an active label matching one of `active`."""

    roi: str
    index: int
    active: tuple[str, ...]

    def open(self, active: list[str]) -> bool:
        return any(labelmatch.matches(p, a) for a in active for p in self.active)


# ------------------------------------------------------------------ models


def model_key(model_cfg) -> str:
    return model_cfg.model_dump_json()


def effective(model_cfg, top: Model):
    """A region model's section with the threads rule applied (see the module doc)."""
    if model_cfg.threads != "auto":
        return model_cfg
    return model_cfg.model_copy(update={"threads": max(1, usable_cores() - top.threads)})


def region_key(cfg, roi, top: Model) -> str | None:
    """The key of a region's own model in `Pipeline.models`; None: the top-level model."""
    if roi.model is None or roi.model == cfg.model:
        return None
    return model_key(effective(roi.model, top))


def load_region_models(cfg, top: Model, have: dict[str, Model] | None = None,
                       load: Callable = load_configured) -> dict[str, Model]:
    """Every model the config's regions name, by key: reused from `have` (the running ones)
    when their section is unchanged, else loaded (in the caller's thread: the reloader's)."""
    have = have or {}
    out: dict[str, Model] = {}
    for i, roi in enumerate(cfg.rois):
        key = region_key(cfg, roi, top)
        if key is None or key in out:
            continue
        model = have.get(key)
        if model is None:
            where = _where(cfg, ("rois", i, "model"))
            try:
                model = load(effective(roi.model, top))
                require(model.task, "run", model.path)
            except EdgeError as e:  # which region named it, and where
                raise ConfigError(f"{where}: {e}") from None
            if model.task.kind != CLASSIFIER:
                raise ConfigError(f"{where}: {model.path}: {model.task.what}; a region's own "
                                  "model must be a classifier")
        out[key] = model
    return out


def model_names(top: Model, models: dict[str, Model]) -> dict[str, str]:
    """A name per model key (None: the top-level model), unique: the file's stem, with -2, -3
    for a second section of the same file (other labels, say)."""
    names = {None: top.name}
    taken = {top.name}
    for key, m in models.items():
        name, n = m.name, 1
        while name in taken:
            n += 1
            name = f"{m.name}-{n}"
        names[key] = name
        taken.add(name)
    return names


# ------------------------------------------------------------------ checks


def _where(cfg, path: tuple) -> str:
    pos, where = cfg.__dict__.get("_pos", {}), cfg.__dict__.get("_where", "<config>")
    return f"{configmod._at(where, pos, path)}: {configmod._dotted(path)}"


def gates(cfg) -> list[Gate | None]:
    """Each region's gate; ConfigError unless names are unique and each `when.roi` names a
    region listed before it (so it is evaluated first in the frame, and no cycle can form)."""
    index: dict[str, int] = {}
    out: list[Gate | None] = []
    problems = []
    for i, roi in enumerate(cfg.rois):
        if roi.name in index:
            problems.append(f"{_where(cfg, ('rois', i, 'name'))}: {roi.name!r} names an earlier "
                            "region too: region names must be unique")
        w = roi.when
        if w is not None and w.roi not in index:
            names = [r.name for r in cfg.rois]
            if w.roi == roi.name:
                what = "is this region itself: a region cannot gate itself"
            elif w.roi in names:
                what = ("comes after this region: list the gating region first (regions run in "
                        "order, so a gate is evaluated first in each frame and cannot form a "
                        "cycle)")
            else:
                what = f"names no region (regions: {', '.join(names)})"
            problems.append(f"{_where(cfg, ('rois', i, 'when', 'roi'))}: {w.roi!r} {what}")
        out.append(None if w is None or w.roi not in index else
                   Gate(w.roi, index[w.roi], tuple(w.active)))
        index.setdefault(roi.name, i)
    if problems:
        raise ConfigError("\n".join(problems))
    return out


def chain_of(cfg, roi) -> list:
    return roi.postprocess if roi.postprocess is not None else cfg.postprocess


def _chain_labels(specs, labels: list[str]) -> list[str]:
    """Every label any stage of a chain sees (groups add theirs): what `active` can hold."""
    seen = list(labels)
    cur = list(labels)
    for name, params in configmod.spec_items(specs):
        cur = STAGES[name].labels_out(params, cur)
        seen += [lb for lb in cur if lb not in seen]
    return seen


def check_region_labels(cfg, labels_of: Callable[[object], list[str]]) -> None:
    """Every region's chain against its own model's labels, and each gate's globs against the
    labels its gating region's chain can make active. `labels_of(model_cfg)`: a model's labels
    (the top-level chain on the top-level model is `config.check_labels`'s, done before)."""
    where = cfg.__dict__.get("_where", "<config>")
    problems = []
    region_labels: list[list[str]] = []
    for i, roi in enumerate(cfg.rois):
        own_model = roi.model is not None and roi.model != cfg.model
        labels = labels_of(roi.model if own_model else cfg.model)
        try:
            if roi.postprocess is not None:
                configmod.check_labels(cfg, labels, where, roi.postprocess,
                                       ("rois", i, "postprocess"))
            elif own_model:
                configmod.check_labels(cfg, labels, where)
        except ConfigError as e:
            if roi.postprocess is None:
                e = ConfigError(f"{_where(cfg, ('rois', i, 'model'))}: {roi.name!r} runs "
                                f"{roi.model.path} with the top-level postprocess, which names "
                                "labels it does not have (give the region its own "
                                f"postprocess):\n{e}")
            problems.append(str(e))
        region_labels.append(_chain_labels(chain_of(cfg, roi), labels))
    for i, gate in enumerate(gates(cfg)):
        if gate is None:
            continue
        known = region_labels[gate.index]
        for j, pattern in enumerate(gate.active):
            if not labelmatch.resolve(pattern, known):
                glob = labelmatch.GLOB_CHARS & set(pattern)
                close = [] if glob else labelmatch.suggest(pattern, known)
                hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
                problems.append(
                    f"{_where(cfg, ('rois', i, 'when', 'active', j))}: {pattern!r} "
                    f"{'matches no label' if glob else 'is not a label'} region {gate.roi!r} "
                    f"can make active{hint}")
    if problems:
        raise ConfigError("\n".join(problems))


def prepare_models(cfg, top: Model, have: dict[str, Model] | None = None) -> dict[str, Model]:
    """Check the regions' structure, load (or reuse) their models, check their labels: what
    `edge run` and a reload do before anything starts or swaps."""
    gates(cfg)
    models = load_region_models(cfg, top, have)

    def labels_of(model_cfg) -> list[str]:
        key = None if model_cfg == cfg.model else model_key(effective(model_cfg, top))
        return top.labels if key is None else models[key].labels

    check_region_labels(cfg, labels_of)
    return models


def has_own_models(cfg) -> bool:
    """Whether some region runs a model of its own (results then name their model)."""
    return any(r.model is not None and r.model != cfg.model for r in cfg.rois)


# ------------------------------------------------------------------ the loop's questions


def gate_open(region, regions) -> bool:
    g = region.gate
    return g is None or g.open(regions[g.index].active)


def forecast(regions, entries: int, no_drop: bool) -> Callable | None:
    """`InputPlan.due` for these regions: which plan entries the loop will want for a frame,
    judged in the capture thread from each rate's `next_due` and each gate's last active set
    (a gate that opens on the very frame makes the loop resize that crop itself). None when
    every region runs on every frame (the plan then makes every tensor, as always)."""
    if all(not r.rate.period and r.gate is None for r in regions):
        return None

    def due(frame) -> list[bool]:
        clock = frame_clock(frame, no_drop)
        want = [False] * entries
        for r in regions:
            if r.rate.due(clock) and gate_open(r, regions):
                want[r.entry] = True
        return want

    return due


def earliest_due(regions) -> float:
    """The monotonic time before which no region can run (0: any frame may run one), so the
    loop need not take frames before it. A closed gate opens only when its gating region runs,
    and that region is in the list."""
    t = math.inf
    for r in regions:
        if not r.rate.period:
            return 0.0
        if gate_open(r, regions):
            t = min(t, r.rate.next_due)
    return t if math.isfinite(t) else 0.0
