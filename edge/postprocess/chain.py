"""The post-processing chain: the configured stages in order, turning scores into results."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.events import Event, Result
from edge.postprocess.base import STAGES, Scores, top_indices


class Chain:
    """One ROI's stages and their state; `process` is called once per classified frame."""

    def __init__(
        self,
        specs: list[tuple[str, Any]],
        labels: list[str],
        roi: str | None = None,
        device: str = "",
        model: str = "",
        top_k: int = 5,
    ) -> None:
        self.specs, self.labels = list(specs), list(labels)
        self.roi, self.device, self.model, self.top_k = roi, device, model, top_k
        self.stages = []
        cur = self.labels
        for name, params in self.specs:
            cls = STAGES[name]
            self.stages.append(cls(params, cur))
            cur = cls.labels_out(params, cur)
        self.out_labels = cur
        self._watch = self._watched()
        # the last deciding stage: its labels are what Result.scores and the web bars show
        self._judge = next((st for st in reversed(self.stages) if st.decides), None)
        judged_labels = self._judge.labels if self._judge else self.out_labels
        self._judged_pos = pos = {label: i for i, label in enumerate(judged_labels)}
        names = [label for label in self._watch if label in pos]
        self._watch = {label: self._watch[label] for label in names}  # none filtered out later
        self._watch_names = names
        self._watch_idx = np.array([pos[label] for label in names], dtype=np.intp)

    def _watched(self) -> dict[str, dict]:
        """Labels the config names, with the levels the last deciding stage applies to them."""
        names = [label for st in self.stages for label in st.watches()]
        levels: dict[str, dict] = {}
        for st in self.stages:
            if st.decides:
                pos = {label: i for i, label in enumerate(st.labels)}
                for label in names:
                    if label in pos:
                        levels[label] = st.level_of(pos[label])
        out = {}
        for label in dict.fromkeys(names):
            lv = levels.get(label, {"enter": None, "exit": None})
            if lv["enter"] is not None and not np.isfinite(lv["enter"]):
                continue  # a hysteresis stage does not track it
            out[label] = lv
        return out

    def levels_of(self, labels: list[str]) -> dict[str, dict]:
        """Enter/exit levels the last deciding stage applies to any labels (e.g. the current
        top ones, when the config names none), so the web page can mark them too."""
        if self._judge is None:
            return {}
        out = {}
        for label in labels:
            if label in self._judged_pos:
                lv = self._judge.level_of(self._judged_pos[label])
                if np.isfinite(lv["enter"]):
                    out[label] = lv
        return out

    def watched(self) -> dict[str, dict]:
        """{label: {"enter": x, "exit": y}} for the labels the stages name (web score bars)."""
        return {k: dict(v) for k, v in self._watch.items()}

    def process(self, seq: int, ts: float, mono: float,
                probs: np.ndarray) -> tuple[Result, list[Event]]:
        """One frame's scores through the stages; `ts` stamps, `mono` times (see Scores)."""
        s = Scores(self.labels, np.asarray(probs, dtype=np.float32), seq, ts, mono,
                   k=self.top_k)
        for stage in self.stages:
            s = stage(s)
        v = s.vec
        ranked = s.ranked is not None and s.ranked[0] is v
        best = s.ranked[1] if ranked else top_indices(v, s.k)
        pairs = zip(best.tolist(), v[best].tolist(), strict=True)
        top = [(s.labels[i], x) for i, x in pairs if x > 0]
        jv = s.judged[1] if s.judged is not None else v
        scores = dict(zip(self._watch_names, jv[self._watch_idx].tolist(), strict=True))
        result = Result(seq, ts, self.roi, top, s.active, scores)
        events = [
            Event(t, label, score, self.roi, seq, ts, self.device, self.model)
            for t, label, score in s.events
        ]
        return result, events

    def carry_over(self, old: Chain) -> None:
        """Take over the state of `old` (the chain being replaced on reload), stage by stage.

        A stage takes the state of the old stage of the same type at the same position, else
        of the old stage of that type at the same rank (the 2nd smooth from the 2nd smooth).
        """
        for i, st in enumerate(self.stages):
            prev = _counterpart(old.stages, self.stages, i)
            if prev is not None:
                st.carry_over(prev)


def _counterpart(old: list, new: list, i: int):
    name = new[i].name
    if i < len(old) and old[i].name == name:
        return old[i]
    rank = sum(1 for st in new[:i] if st.name == name)
    same = [st for st in old if st.name == name]
    return same[rank] if rank < len(same) else None
