"""`top_k`: keep only the k best labels."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from edge.postprocess.base import STAGES, Scores, Stage, top_indices


@STAGES.register("top_k")
class TopK(Stage):
    """Keep the k highest scores (the rest become 0) and list k labels in each result."""

    Params = Annotated[
        int, Field(ge=1, le=1000, description="how many labels to keep, e.g. `- top_k: 3`")
    ]

    def __init__(self, params: int, labels: list[str]) -> None:
        self.k, self.labels = int(params), labels

    def __call__(self, s: Scores) -> Scores:
        s.k = self.k
        v = s.vec
        if self.k < len(v):
            out = np.zeros_like(v)
            best = top_indices(v, self.k)
            out[best] = v[best]
            s.vec, s.ranked = out, (out, best)
        return s

