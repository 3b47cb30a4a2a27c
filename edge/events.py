"""The one JSON shape every output gets: per-frame results and state-change events."""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field

from edge.schema import EventType


def iso_time(ts: float) -> str:
    """ISO-8601 UTC with milliseconds and a Z, e.g. 2026-11-28T22:10:00.123Z."""
    t = _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


@dataclass(slots=True)
class Event:
    type: EventType
    label: str
    score: float
    roi: str | None
    seq: int
    ts: float  # wall clock (time.time()) of the frame that caused it
    device: str = ""
    model: str = ""
    snapshot: str | None = None
    clip: str | None = None
    box: tuple[float, float, float, float] | None = None  # segmenters: the label's largest blob

    def to_dict(self) -> dict:
        d = {
            "type": self.type,
            "label": self.label,
            "score": round(float(self.score), 4),
            "roi": self.roi,
            "seq": self.seq,
            "ts": iso_time(self.ts),
            "device": self.device,
            "model": self.model,
            "snapshot": self.snapshot,
            "clip": self.clip,
        }
        if self.box is not None:  # x0, y0, x1, y1 as fractions of the frame
            d["box"] = list(self.box)
        return d


@dataclass(slots=True)
class Result:
    """What the chain says about one frame (per ROI): the current top labels and active set."""

    seq: int
    ts: float
    roi: str | None
    top: list[tuple[str, float]]  # (label, score) best first, after the post-processing chain
    active: list[str] = field(default_factory=list)  # labels currently "in" (hysteresis)
    scores: dict[str, float] = field(default_factory=dict)  # watched labels' scores (web bars)
    model: str | None = None  # set when regions run models of their own: which one this is

    def to_dict(self) -> dict:
        d = {
            "seq": self.seq,
            "ts": iso_time(self.ts),
            "roi": self.roi,
            "top": [{"label": lb, "score": round(float(s), 4)} for lb, s in self.top],
            "active": list(self.active),
        }
        if self.model is not None:  # one model for all: the output stays as it always was
            d["model"] = self.model
        return d


# ------------------------------------------------------------------ one text format
# `edge run`'s stdout and the log output share it: `WHAT LABEL SCORE key=value...`. A label
# is quoted (JSON-style) when it holds a comma, a semicolon or a quote, as ImageNet's
# "tabby, tabby cat" does, so a list of labels can always be split again.


def label_text(label: str) -> str:
    return json.dumps(label) if any(c in label for c in ',;"') else label


def _where(roi: str | None, seq: int) -> str:
    return (f" roi={roi}" if roi else "") + f" seq={seq}"


def event_line(e: dict) -> str:
    files = "".join(f" {k}={e[k]}" for k in ("snapshot", "clip") if e.get(k))
    return f"event {e['type']} {label_text(e['label'])} {e['score']:.2f}" \
        f"{_where(e['roi'], e['seq'])}{files}"


def top_line(r: Result) -> str:
    """The region's best label, printed when it changes."""
    best = f"{label_text(r.top[0][0])} {r.top[0][1]:.2f}" if r.top else "-"
    return f"top {best}{_where(r.roi, r.seq)}"


def status_line(r: Result) -> str:
    top = ", ".join(f"{label_text(lb)} {s:.2f}" for lb, s in r.top) or "-"
    active = ", ".join(label_text(a) for a in r.active) or "-"
    return f"status{_where(r.roi, r.seq)} top: {top}; active: {active}"
