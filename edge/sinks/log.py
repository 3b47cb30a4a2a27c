"""Journald-friendly lines on stdout: one per event, plus a rate-limited status line."""

from __future__ import annotations

import json
import sys
import time
from typing import Literal

from pydantic import Field

from edge.events import event_line, status_line
from edge.sinks.base import SINKS, EventSinkParams, Item, Sink


class LogParams(EventSinkParams):
    format: Literal["text", "json"] = Field(
        "text", description="text: short human lines; json: the event JSON, one per line"
    )
    every_s: float = Field(
        10.0, ge=0, le=86400,
        description="status line (top labels per ROI) at most this often; 0: never",
    )
    stream: Literal["stdout", "stderr"] = Field("stdout", description="where lines go")


@SINKS.register("log")
class LogSink(Sink):
    """Print events (and a status line every few seconds) to stdout for the journal."""

    Params = LogParams
    per_frame = True

    def __init__(self, params: LogParams, ctx) -> None:
        super().__init__(params, ctx)
        self._last: dict[str | None, float] = {}  # per ROI, frame loop only
        self.per_frame = params.every_s > 0
        self.state = "ok"

    def offer(self, result, events, frame) -> Item | None:
        item = super().offer(result, events, frame)
        every = self.params.every_s
        if every:
            now = time.monotonic()
            if now - self._last.get(result.roi, -every) >= every:
                self._last[result.roi] = now
                item = item or Item()
                item.result = result
        return item

    def handle(self, item: Item) -> None:
        json_fmt = self.params.format == "json"
        lines = [json.dumps(e) if json_fmt else event_line(e) for e in item.events]
        if item.result is not None:
            r = item.result
            lines.append(json.dumps({"status": r.to_dict()}) if json_fmt else status_line(r))
        out = sys.stdout if self.params.stream == "stdout" else sys.stderr
        out.write("".join(line + "\n" for line in lines))
        out.flush()
        self.sent += len(item.events)
