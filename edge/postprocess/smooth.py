"""`smooth`: average scores over time (EMA, or the mean/median of a window of frames)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from edge.postprocess.base import STAGES, Scores, Stage, remap
from edge.schema import Strict


class SmoothParams(Strict):
    method: Literal["ema", "mean", "median"] = Field(
        "ema",
        description="ema: exponential moving average (uses alpha); mean or median: of the last "
        "`window` frames (median shrugs off single-frame spikes)",
    )
    alpha: float = Field(
        0.5,
        gt=0,
        le=1,
        description="ema: weight of the newest frame (1: no smoothing; 0.2: about 5 frames of "
        "memory)",
    )
    window: int = Field(5, ge=1, le=300, description="mean/median: frames in the window")

    @model_validator(mode="after")
    def _options_fit_method(self):
        if self.method == "ema" and "window" in self.model_fields_set:
            raise ValueError("`window` applies to method mean or median; ema uses `alpha`")
        if self.method != "ema" and "alpha" in self.model_fields_set:
            raise ValueError(f"`alpha` applies to method ema; {self.method} uses `window`")
        return self


@STAGES.register("smooth")
class Smooth(Stage):
    """Smooth each label's score over frames: EMA (alpha) or a window mean/median of N frames.

    The first frame passes as is; a window averages over the frames seen so far until full.
    """

    Params = SmoothParams

    def __init__(self, params, labels: list[str]) -> None:
        self.params, self.labels = params, labels
        self.method = params.method
        self.alpha = np.float32(params.alpha)
        self.beta = np.float32(1.0 - params.alpha)
        self.last: np.ndarray | None = None  # the previous output (the EMA state)
        if self.method != "ema":
            self.buf = np.zeros((params.window, len(labels)), dtype=np.float32)
            self.pos = self.count = 0
        self.fill: np.ndarray | None = None  # labels new after a reload: seed from next frame

    def __call__(self, s: Scores) -> Scores:
        x = s.vec
        if self.fill is not None:
            self._seed_new_labels(x)
        if self.method == "ema":
            out = x.copy() if self.last is None else self.alpha * x + self.beta * self.last
        else:
            self.buf[self.pos] = x
            self.pos = (self.pos + 1) % len(self.buf)
            self.count = min(self.count + 1, len(self.buf))
            rows = self.buf[: self.count]
            if self.method == "mean":
                out = np.add.reduce(rows, axis=0) * np.float32(1 / self.count)
            else:
                out = median(rows)
        self.last = out
        s.vec = out
        return s

    def _seed_new_labels(self, x: np.ndarray) -> None:
        if self.last is not None:
            self.last[self.fill] = x[self.fill]
        if self.method != "ema":
            self.buf[: self.count, self.fill] = x[self.fill]
        self.fill = None

    def history(self) -> np.ndarray:
        """Window rows oldest first (for carry-over)."""
        if self.count < len(self.buf):
            return self.buf[: self.count]
        return np.roll(self.buf, -self.pos, axis=0)

    def carry_over(self, old: Smooth) -> None:
        """Keep the smoothed state per label; a new window keeps the newest frames that fit."""
        if old.last is None:
            return
        new_idx, old_idx = remap(old.labels, self.labels)
        missing = np.setdiff1d(np.arange(len(self.labels)), new_idx)
        self.last = np.zeros(len(self.labels), dtype=np.float32)
        self.last[new_idx] = old.last[old_idx]
        if self.method != "ema":
            rows = old.last[None, :] if old.method == "ema" else old.history()
            rows = rows[-len(self.buf) :]
            self.buf[: len(rows)][:, new_idx] = rows[:, old_idx]
            self.count, self.pos = len(rows), len(rows) % len(self.buf)
        self.fill = missing if len(missing) else None


def median(rows: np.ndarray) -> np.ndarray:
    """Per-column median of a few rows, equal to np.median(rows, axis=0) but faster.

    np.median partitions each of the ~1000 short columns separately; for small windows an
    odd-even transposition sort of whole rows (a few vectorized min/max passes) is 3-5x faster.
    """
    n = len(rows)
    if n > 7:
        srt = np.sort(rows, axis=0)
    else:
        srt = rows.copy()
        for r in range(n):
            lo, hi = srt[r % 2 : n - 1 : 2], srt[r % 2 + 1 : n : 2]
            m = min(len(lo), len(hi))
            lo, hi = lo[:m], hi[:m]
            low = np.minimum(lo, hi)
            np.maximum(lo, hi, out=hi)
            lo[...] = low
    mid = n // 2
    return srt[mid] if n % 2 else (srt[mid - 1] + srt[mid]) / np.float32(2)
