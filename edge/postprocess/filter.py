"""`filter`: drop labels by allow and deny lists of names or globs."""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from edge.postprocess.base import STAGES, Scores, Stage, indices
from edge.schema import Strict


class FilterParams(Strict):
    allow: list[str] = Field(
        default_factory=list,
        description="keep only the labels these names or globs match; empty: keep all",
    )
    deny: list[str] = Field(
        default_factory=list, description="drop the labels these names or globs match"
    )

    @model_validator(mode="after")
    def _something(self):
        if not self.allow and not self.deny:
            raise ValueError("give `allow`, `deny` or both (a filter without lists does nothing)")
        return self


@STAGES.register("filter")
class Filter(Stage):
    """Keep only the allowed labels and drop the denied ones (names or globs).

    Later stages, results and events never see the labels dropped.
    """

    Params = FilterParams

    @staticmethod
    def labels_in(params) -> list[tuple[tuple, str]]:
        return [(("allow", i), p) for i, p in enumerate(params.allow)] + [
            (("deny", i), p) for i, p in enumerate(params.deny)
        ]

    @staticmethod
    def _keep(params, labels: list[str]) -> np.ndarray:
        keep = np.ones(len(labels), dtype=bool)
        if params.allow:
            keep[:] = False
            keep[indices(params.allow, labels)] = True
        keep[indices(params.deny, labels)] = False
        return np.flatnonzero(keep)

    @staticmethod
    def labels_out(params, labels: list[str]) -> list[str]:
        return [labels[i] for i in Filter._keep(params, labels)]

    def __init__(self, params, labels: list[str]) -> None:
        self.params, self.labels = params, labels
        self.keep = self._keep(params, labels)
        self.out_labels = [labels[i] for i in self.keep]

    def __call__(self, s: Scores) -> Scores:
        s.labels, s.vec = self.out_labels, s.vec[self.keep]
        return s

