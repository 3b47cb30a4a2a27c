"""`group`: combine the labels a set of names or globs match into one label."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from edge.errors import ConfigError
from edge.labels import new_clashes
from edge.postprocess.base import STAGES, Scores, Stage, indices
from edge.schema import Strict

Patterns = Annotated[
    list[Annotated[str, Field(min_length=1)]],
    Field(min_length=1, description="label names or globs (e.g. 'tabby*', '*cat')"),
]


class GroupDef(Strict):
    labels: Patterns
    mode: Literal["sum", "max"] = Field(
        "sum",
        description="sum: the members' total probability (softmax scores add up); "
        "max: the best member's score",
    )


Member = Annotated[str, Field(min_length=1)] | Patterns | GroupDef

GroupParams = Annotated[
    dict[Annotated[str, Field(min_length=1)], Member],
    Field(
        min_length=1,
        description="group name -> a glob, a list of names/globs (summed), or "
        "{labels: [...], mode: sum|max}",
    ),
]


def _parts(member) -> tuple[list[str], str, tuple]:
    """(patterns, mode, location of the patterns inside the group's value)."""
    if isinstance(member, str):
        return [member], "sum", ()
    if isinstance(member, list):
        return list(member), "sum", ()
    return list(member.labels), member.mode, ("labels",)


@STAGES.register("group")
class Group(Stage):
    """Combine the labels matching names or globs into one label (sum or max of their scores).

    The member labels are replaced by the group's label, appended after the remaining labels.
    """

    Params = GroupParams

    def watches(self) -> list[str]:
        return list(self.params)  # the groups it makes

    @staticmethod
    def labels_in(params) -> list[tuple[tuple, str]]:
        out = []
        for name, member in params.items():
            patterns, _, loc = _parts(member)
            if isinstance(member, str):
                out.append(((name,), member))
            else:
                out += [((name, *loc, j), p) for j, p in enumerate(patterns)]
        return out

    @staticmethod
    def _members(params, labels: list[str]) -> list[np.ndarray]:
        return [indices(_parts(m)[0], labels) for m in params.values()]

    @staticmethod
    def labels_out(params, labels: list[str]) -> list[str]:
        members = Group._members(params, labels)
        gone = set(np.concatenate(members).tolist()) if members else set()
        return [lb for i, lb in enumerate(labels) if i not in gone] + list(params)

    def __init__(self, params, labels: list[str]) -> None:
        self.params, self.labels = params, labels
        members = self._members(params, labels)
        self.out_labels = self.labels_out(params, labels)
        if clash := new_clashes(labels, self.out_labels):
            raise ConfigError(
                f"postprocess: group name {clash[0]!r} is already a label: choose another name"
            )
        gone = np.concatenate(members) if members else np.empty(0, np.intp)
        self.keep = np.setdiff1d(np.arange(len(labels)), gone).astype(np.intp)
        # All groups' members in one gather, reduced per segment: no loop over groups per frame.
        nonempty = [i for i, m in enumerate(members) if len(m)]
        self.slots = np.array(nonempty, dtype=np.intp)
        self.gather = np.concatenate([members[i] for i in nonempty]) if nonempty else self.keep[:0]
        sizes = [len(members[i]) for i in nonempty]
        self.starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        modes = [_parts(m)[1] for m in params.values()]
        self.is_max = np.array([modes[i] == "max" for i in nonempty], dtype=bool)
        self.need_sum, self.need_max = (~self.is_max).any(), self.is_max.any()
        self.n_groups = len(params)

    def __call__(self, s: Scores) -> Scores:
        v = s.vec
        out = np.zeros(len(self.keep) + self.n_groups, dtype=np.float32)
        out[: len(self.keep)] = v[self.keep]
        if len(self.slots):
            vals = v[self.gather]
            if self.need_sum and self.need_max:
                g = np.where(
                    self.is_max,
                    np.maximum.reduceat(vals, self.starts),
                    np.add.reduceat(vals, self.starts),
                )
            elif self.need_max:
                g = np.maximum.reduceat(vals, self.starts)
            else:
                g = np.add.reduceat(vals, self.starts)
            out[len(self.keep) + self.slots] = g
        s.labels, s.vec = self.out_labels, out
        return s

