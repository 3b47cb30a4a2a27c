"""What flows between post-processing stages, and helpers shared by the stages.

A frame's scores pass through the chain as one `Scores`: the label list (shared, never copied
per frame) and a float32 vector aligned with it. Stages resolve label names and globs to index
arrays once, in `__init__`, so a frame costs a handful of numpy operations over the vector and
no Python loop over the labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from edge import labels as labelmatch
from edge.registry import Registry

STAGES = Registry("stage")  # YAML name -> stage class; the stage modules register here


@dataclass(slots=True)
class Scores:
    labels: list[str]  # names of the vector's entries (the stage's output label list)
    vec: np.ndarray  # float32 scores, one per label
    seq: int
    ts: float  # wall clock: stamps the events
    mono: float  # monotonic: every duration a stage measures (min_duration_s, hold_s, ...)
    k: int = 5  # how many labels Result.top lists (set by top_k)
    events: list[tuple[str, str, float]] = field(default_factory=list)  # (type, label, score)
    active: list[str] = field(default_factory=list)  # labels currently "in", best first
    # The labels and scores the last deciding stage (threshold, hysteresis) compared with its
    # levels: what the web page's score bars show against the enter/exit marks.
    judged: tuple[list[str], np.ndarray] | None = None
    ranked: tuple[np.ndarray, np.ndarray] | None = None  # (vec, its top-k indices) from top_k


class Stage:
    """What a stage may leave out: it names no labels, keeps the label list, holds no state,
    decides nothing.

    A stage is a small class registered under its YAML name with a `Params` model and one
    method, `__call__(scores) -> scores`; override these where the stage differs. Its role
    is declared, never inferred from its name: `decides` (it sets the active set and has
    enter/exit levels: `levels()`, `level_of(i)`), and `watches()` (labels it names that the
    web page's score bars should show).
    """

    name: str
    decides: ClassVar[bool] = False

    def watches(self) -> list[str]:
        return []

    @staticmethod
    def labels_in(params) -> list[tuple[tuple, str]]:
        return []

    @staticmethod
    def labels_out(params, labels: list[str]) -> list[str]:
        return labels

    def carry_over(self, old) -> None:
        """Stateless: nothing to take over on reload."""


def indices(patterns: list[str] | tuple[str, ...], labels: list[str]) -> np.ndarray:
    """Sorted indices of the labels any of the names or globs match."""
    found: set[int] = set()
    for p in patterns:
        found.update(labelmatch.resolve(p, labels))
    return np.array(sorted(found), dtype=np.intp)


def per_label(
    default: float, overrides: dict[str, float], labels: list[str], dtype=np.float32
) -> np.ndarray:
    """A per-label vector of `default`, with each name or glob's value; later entries win."""
    out = np.full(len(labels), default, dtype=dtype)
    for pattern, value in overrides.items():
        out[labelmatch.resolve(pattern, labels)] = value
    return out


def remap(old: list[str], new: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(new_idx, old_idx) of the labels both lists hold, to carry per-label state across."""
    where = {label: i for i, label in enumerate(old)}
    pairs = [(i, where[label]) for i, label in enumerate(new) if label in where]
    if not pairs:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    a = np.array(pairs, dtype=np.intp)
    return a[:, 0], a[:, 1]


def top_indices(vec: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first; ties go to the lower index.

    Quantized softmax outputs are full of equal values, on which argpartition is slow; for the
    usual small k, k argmax passes are several times faster.
    """
    n = len(vec)
    if k >= n:
        return np.argsort(-vec, kind="stable")
    if k > 16:
        best = np.argpartition(-vec, k - 1)[:k]
        return best[np.lexsort((best, -vec[best]))]
    w = vec.copy()
    out = np.empty(k, dtype=np.intp)
    for j in range(k):
        i = w.argmax()
        out[j] = i
        w[i] = -np.inf
    return out
