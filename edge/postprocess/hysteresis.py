"""`hysteresis`: turn noisy scores into clean enter/exit (and periodic status) events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
from pydantic import Field, model_validator

from edge import labels as labelmatch
from edge.postprocess.base import STAGES, Scores, Stage, indices
from edge.schema import Level, Strict

EnterLevel = Annotated[float, Field(gt=0, le=1)]  # 0 would make every label enter at once
Seconds = Annotated[float, Field(ge=0, le=86400)]
EXIT_RATIO = 0.7  # exit level when only enter is given: a band against flapping
EPS = 1e-9  # frame timestamps are sums of floats: 0.1 * 5 must count as 0.5 s


class LabelLevels(Strict):
    enter: EnterLevel = Field(..., description="this label's enter threshold")
    exit: Level | None = Field(
        None, description="this label's exit threshold; default: enter scaled like the stage's"
    )

    @model_validator(mode="after")
    def _ordered(self):
        if self.exit is not None and self.exit > self.enter:
            raise ValueError(f"exit ({self.exit}) must not be above enter ({self.enter})")
        return self


class HysteresisParams(Strict):
    enter: EnterLevel = Field(
        0.5, description="a label enters once its score is at least this"
    )
    exit: Level | None = Field(
        None,
        description="an active label exits once its score falls below this (<= enter); "
        f"default: {EXIT_RATIO} x enter",
    )
    per_label: dict[str, EnterLevel | LabelLevels] = Field(
        default_factory=dict,
        description="label name or glob -> its enter threshold, or {enter, exit}; a later "
        "entry overrides an earlier one",
    )
    labels: list[str] = Field(
        default_factory=list,
        description="track only these labels (names or globs); empty: every label",
    )
    min_frames: int = Field(
        1, ge=1, le=10000, description="frames in a row at or above enter before entering"
    )
    min_duration_s: Seconds = Field(
        0.0, description="seconds the score must stay at or above enter before entering"
    )
    hold_s: Seconds = Field(
        0.0, description="seconds the score must stay below exit before exiting"
    )
    cooldown_s: Seconds = Field(
        0.0, description="after a label exits, seconds before it may enter again"
    )
    status_every_s: Seconds = Field(
        0.0, description="while a label is active, a `status` event this often; 0: never"
    )

    @model_validator(mode="after")
    def _ordered(self):
        if self.exit is None:
            self.exit = round(self.enter * EXIT_RATIO, 6)
        if self.exit > self.enter:
            raise ValueError(f"exit ({self.exit}) must not be above enter ({self.enter})")
        return self


def _levels(params, labels: list[str]) -> tuple[np.ndarray, np.ndarray, set[int]]:
    """Per-label enter and exit vectors (enter is +inf for untracked labels), and the named."""
    enter = np.full(len(labels), params.enter, dtype=np.float64)
    exit_ = np.full(len(labels), params.exit, dtype=np.float64)
    ratio = params.exit / params.enter if params.enter else 1.0
    named: set[int] = set()
    for pattern, lv in params.per_label.items():
        idx = labelmatch.resolve(pattern, labels)
        named.update(idx)
        e = lv if isinstance(lv, float) else lv.enter
        x = None if isinstance(lv, float) else lv.exit
        enter[idx] = e
        exit_[idx] = e * ratio if x is None else x
    if params.labels:
        tracked = np.zeros(len(labels), dtype=bool)
        tracked[indices(params.labels, labels)] = True
        enter[~tracked] = np.inf
        named.update(np.flatnonzero(tracked).tolist())
    return enter, exit_, named


@STAGES.register("hysteresis")
class Hysteresis(Stage):
    """Decide the active labels: enter/exit thresholds, frames or time to enter, hold, cooldown.

    A label enters after `min_frames` frames in a row (and `min_duration_s` seconds) at or above
    `enter`, unless it exited less than `cooldown_s` ago; it exits once its score has stayed
    below `exit` for `hold_s`. Emits `enter`, `exit` and, every `status_every_s` while active,
    `status` events.
    """

    Params = HysteresisParams

    @staticmethod
    def labels_in(params) -> list[tuple[tuple, str]]:
        return [(("per_label", p), p) for p in params.per_label] + [
            (("labels", i), p) for i, p in enumerate(params.labels)
        ]

    def __init__(self, params, labels: list[str]) -> None:
        self.params, self.labels = params, labels
        self.enter64, self.exit64, self.named = _levels(params, labels)  # exact, for reports
        self.enter, self.exit = self.enter64.astype(np.float32), self.exit64.astype(np.float32)
        # Per-label state lives only for the few labels at/above enter or active, so a frame
        # costs one vector compare plus a loop over those few (at most 1/enter of them).
        self.runs: dict[int, tuple[int, float]] = {}  # label -> (frames in a row, first ts)
        self.active: dict[int, _Active] = {}
        self.cooldown_until: dict[int, float] = {}
        self.pending_exit: list[str] = []  # active labels a reload stopped tracking

    decides = True

    def watches(self) -> list[str]:
        return list(self.levels())

    def levels(self) -> dict[str, dict]:
        return {self.labels[i]: self.level_of(i) for i in sorted(self.named)}

    def level_of(self, i: int) -> dict:
        return {"enter": float(self.enter64[i]), "exit": float(self.exit64[i])}

    def __call__(self, s: Scores) -> Scores:
        p, v, ts, labels = self.params, s.vec, s.mono, s.labels  # durations: monotonic
        s.judged = (labels, v)
        if self.pending_exit:
            s.events += [("exit", name, 0.0) for name in self.pending_exit]
            self.pending_exit = []
        above = (v >= self.enter).nonzero()[0].tolist()
        if not above and not self.active and not self.runs:
            s.active = []  # the common idle frame: one vector compare
            return s
        runs = self.runs
        self.runs = {i: (runs[i][0] + 1, runs[i][1]) if i in runs else (1, ts) for i in above}
        exits, enters, status = [], [], []
        for i in sorted(self.active):
            st = self.active[i]
            if v[i] >= self.exit[i]:
                st.below_since = None
                continue
            if st.below_since is None:
                st.below_since = ts
            if ts - st.below_since >= p.hold_s - EPS:
                del self.active[i]
                self.cooldown_until[i] = ts + p.cooldown_s
                exits.append(i)
        for i in above:
            n, first = self.runs[i]
            if (
                i not in self.active
                and n >= p.min_frames
                and ts - first >= p.min_duration_s - EPS
                and ts >= self.cooldown_until.get(i, -np.inf) - EPS
            ):
                self.active[i] = _Active(last_status=ts)
                self.cooldown_until.pop(i, None)
                enters.append(i)
        if p.status_every_s > 0:
            for i in sorted(self.active):
                st = self.active[i]
                if i not in enters and ts - st.last_status >= p.status_every_s - EPS:
                    nxt = st.last_status + p.status_every_s
                    st.last_status = ts if ts - nxt >= p.status_every_s else nxt
                    status.append(i)
        for kind, idx in (("exit", exits), ("enter", enters), ("status", status)):
            s.events += [(kind, labels[i], float(v[i])) for i in idx]
        s.active = [labels[i] for i in sorted(self.active, key=lambda i: -v[i])]
        return s

    def carry_over(self, old: Hysteresis) -> None:
        """Keep active labels, runs, hold and cooldown timers for the labels still tracked."""
        where = {label: i for i, label in enumerate(self.labels)}

        def moved(d: dict) -> dict:
            out = {}
            for i, x in d.items():
                j = where.get(old.labels[i])
                if j is not None and np.isfinite(self.enter[j]):
                    out[j] = x
            return out

        self.runs, self.active = moved(old.runs), moved(old.active)
        self.cooldown_until = moved(old.cooldown_until)
        kept = {self.labels[i] for i in self.active}
        was = {old.labels[i] for i in old.active} | set(old.pending_exit)
        self.pending_exit = sorted(was - kept)


@dataclass(slots=True)
class _Active:
    last_status: float  # ts of the enter or the last status event
    below_since: float | None = None  # ts the score fell below exit (hold timer)
