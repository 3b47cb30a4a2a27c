"""Frames the model was unsure about, saved with their scores for relabelling later; or, in
`interval` mode, a frame per region every `every_s` whatever its score, into the dataset's
`unlabelled` folder (sorted into class folders by hand, then `edge train`)."""

from __future__ import annotations

import json
from typing import Literal

import cv2
from pydantic import Field, model_validator

from edge.atomic import write_atomic
from edge.events import iso_time
from edge.paths import UNLABELLED
from edge.sinks.base import SINKS, Item, Sink, SinkParams, frame_queue
from edge.sinks.files import MB, DiskBudget, budget_files, budget_mb, jpeg, make_dir, slug


class CollectParams(SinkParams):
    queue: int = frame_queue()
    mode: Literal["uncertain", "interval"] = Field(
        "uncertain", description="uncertain: frames whose top score is in [low, high]; "
        f"interval: a frame per region every every_s whatever its score, into DIR/{UNLABELLED} "
        "(DIR being the dataset of `edge train`)",
    )
    dir: str = Field("/var/lib/edge/collect", description="where the JPEGs and .json go")
    low: float = Field(0.3, ge=0, le=1, description="collect when the top score is >= low ...")
    high: float = Field(0.6, ge=0, le=1, description="... and <= high (the uncertainty band)")
    labels: list[str] = Field(
        default_factory=list, description="only when the top label is one of these; []: any"
    )
    every_s: float = Field(
        5.0, ge=0, le=86400,
        description="at most one frame per ROI this often (consecutive frames repeat)",
    )
    max_mb: float = budget_mb(200.0, "disk budget; the oldest files go first")
    max_files: int = budget_files(1000, "image count limit; 0: only max_mb applies")
    quality: int = Field(92, ge=1, le=100, description="JPEG quality")

    @model_validator(mode="after")
    def _band(self):
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        return self


@SINKS.register("collect")
class CollectSink(Sink):
    """Save frames whose top score falls in an uncertainty band, for relabelling."""

    Params = CollectParams
    per_frame = True

    def __init__(self, params: CollectParams, ctx) -> None:
        super().__init__(params, ctx)
        folder = params.dir if params.mode == "uncertain" else f"{params.dir}/{UNLABELLED}"
        self.dir = make_dir(folder, "outputs.collect.dir")
        self.budget = DiskBudget(
            self.dir, ".jpg", int(params.max_mb * MB), params.max_files, companions=(".json",)
        )
        self.labels = set(params.labels)
        self._last: dict[str | None, float] = {}  # frame loop: per ROI
        self.state = "ok"

    def offer(self, result, events, frame) -> Item | None:
        if not result.top:
            return None
        label, score = result.top[0]
        p = self.params
        in_band = p.low <= score <= p.high and (not self.labels or label in self.labels)
        if p.mode == "uncertain" and not in_band:
            return None
        if frame.mono - self._last.get(result.roi, -p.every_s) < p.every_s:
            return None
        self._last[result.roi] = frame.mono
        return Item([], result, frame)

    def handle(self, item: Item) -> None:
        r, frame = item.result, item.frame
        label, score = r.top[0]
        stem = f"{iso_time(r.ts).replace(':', '')}_{slug(r.roi)}_{slug(label)}_{score:.2f}_{r.seq}"
        meta = {**r.to_dict(), "device": self.ctx.device, "model": self.ctx.model}
        meta["image"] = f"{stem}.jpg"
        bgr = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
        write_atomic(self.dir / f"{stem}.json", (json.dumps(meta, indent=1) + "\n").encode())
        write_atomic(self.dir / f"{stem}.jpg", jpeg(bgr, self.params.quality))
        self.budget.add(self.dir / f"{stem}.jpg")
        self.sent += 1
        self.state = "ok"

    def extra(self) -> dict:
        return self.budget.stats()
