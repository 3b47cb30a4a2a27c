"""`threshold`: zero the scores below a threshold (a default and per-label values)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from edge import labels as labelmatch
from edge.postprocess.base import STAGES, Scores, Stage, per_label
from edge.schema import Level, Strict


class ThresholdParams(Strict):
    default: Level = Field(0.5, description="threshold for every label not listed (0..1)")
    per_label: dict[str, Level] = Field(
        default_factory=dict,
        description="label name or glob -> its threshold (0..1); a later entry overrides an "
        "earlier one for the labels both match",
    )


@STAGES.register("threshold")
class Threshold(Stage):
    """Keep the labels whose score reaches a threshold (a default and per-label ones).

    Scores below their label's threshold become 0. The labels passing (with a threshold above
    0) form the active set, unless a later hysteresis stage decides it.
    """

    Params = ThresholdParams

    @staticmethod
    def labels_in(params) -> list[tuple[tuple, str]]:
        return [(("per_label", p), p) for p in params.per_label]

    def __init__(self, params, labels: list[str]) -> None:
        self.params, self.labels = params, labels
        self.thr64 = per_label(params.default, params.per_label, labels, np.float64)  # reports
        self.thr = self.thr64.astype(np.float32)
        self.counts = self.thr > 0  # a 0 threshold passes everything without making it active

    decides = True

    def watches(self) -> list[str]:
        return list(self.levels())

    def levels(self) -> dict[str, dict]:
        """label -> {"enter", "exit"} for the labels per_label names (web score bars)."""
        named = {i for p in self.params.per_label for i in labelmatch.resolve(p, self.labels)}
        return {self.labels[i]: self.level_of(i) for i in sorted(named)}

    def level_of(self, i: int) -> dict:
        return {"enter": float(self.thr64[i]), "exit": float(self.thr64[i])}

    def __call__(self, s: Scores) -> Scores:
        v = s.vec
        keep = v >= self.thr
        s.judged, s.vec = (s.labels, v), v * keep
        passed = keep.nonzero()[0]  # few labels: the active set works on their indices only
        if len(passed):
            passed = passed[self.counts[passed] & (v[passed] > 0)]
            if len(passed) > 1:
                passed = passed[np.argsort(-v[passed], kind="stable")]
        s.active = [s.labels[i] for i in passed]
        return s

