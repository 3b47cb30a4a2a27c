"""What a loaded model does, read from its outputs: classifier, segmenter, or neither.

Commands need a particular kind (`classify` a 1xN score vector, `segment` a per-pixel class
map, `run` either), so each asks `require()` and a model that does not fit is refused with one
line saying what the model is and what the command needs, instead of printing softmaxed pixels
or embedding values as classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import ModelError

CLASSIFIER, SEGMENTER, OTHER = "classifier", "segmenter", "other"
MAP_DTYPES = (np.int64, np.int32, np.uint8)  # a class index per pixel (ArgMax in the graph)

NEEDS = {  # command -> (kinds it accepts, what it needs, in words)
    "classify": ((CLASSIFIER,), "an image classifier: one 1xN score output"),
    "segment": ((SEGMENTER,), "a segmentation model: one 1xHxW class map (int64, int32 or "
                "uint8) or 1xHxWxC class scores"),
    "run": ((CLASSIFIER, SEGMENTER), "a classifier (one 1xN score output) or a segmentation "
            "model (one 1xHxW class map or 1xHxWxC scores)"),
}


@dataclass(frozen=True)
class Task:
    kind: str  # classifier | segmenter | other
    what: str  # the model in words, for messages: "a segmenter (1x513x513 int64 class map)"
    classes: int | None  # scores per frame (classifier) or classes in the map; None: unknown
    map_hw: tuple[int, int] | None = None  # segmenter: (h, w) of its output map
    argmax: bool = False  # segmenter whose output is 1xHxWxC scores: take the argmax here


def _shape(s) -> str:
    return "x".join(str(int(x)) for x in s)


def _argmax_classes(interp, out_index: int) -> int | None:
    """Classes of an in-graph ARG_MAX: the last dimension of its input (None if not found)."""
    try:
        ops = interp._get_ops_details()
        producer = next((op for op in ops if out_index in [int(x) for x in op["outputs"]]), None)
        if producer is None or producer["op_name"] != "ARG_MAX":
            return None
        src = int(producer["inputs"][0])
        shape = next(t["shape"] for t in interp.get_tensor_details() if t["index"] == src)
        return int(shape[-1]) if len(shape) and int(shape[-1]) > 1 else None
    except (AttributeError, StopIteration, RuntimeError, ValueError, KeyError):
        return None


def classify_outputs(outputs: list[dict], interp=None) -> Task:
    """The task from the interpreter's output details (`interp` finds an ArgMax's classes)."""
    if len(outputs) != 1:
        shapes = ", ".join(_shape(o["shape"]) for o in outputs)
        return Task(OTHER, f"a model with {len(outputs)} outputs ({shapes}), such as a detector",
                    None)
    out = outputs[0]
    s = [int(x) for x in out["shape"]]
    dtype = np.dtype(out["dtype"])
    if len(s) == 2 and s[0] == 1 and s[1] > 1:
        return Task(CLASSIFIER, f"a classifier (1x{s[1]} scores)", s[1])
    if len(s) == 3 and s[0] == 1 and s[1] > 1 and s[2] > 1 and dtype in MAP_DTYPES:
        classes = _argmax_classes(interp, int(out["index"])) if interp is not None else None
        return Task(SEGMENTER, f"a segmenter ({_shape(s)} {dtype.name} class map)", classes,
                    (s[1], s[2]))
    if len(s) == 4 and s[0] == 1 and s[1] > 1 and s[2] > 1 and s[3] > 1:
        return Task(SEGMENTER, f"a segmenter ({_shape(s)} class scores)", s[3], (s[1], s[2]),
                    argmax=True)
    if len(s) == 4 and s[:3] == [1, 1, 1]:
        return Task(OTHER, f"an embedding extractor ({_shape(s)} features, no classes)", None)
    return Task(OTHER, f"a model with one {_shape(s)} {dtype.name} output", None)


def task_of(interp) -> Task:
    return classify_outputs(interp.get_output_details(), interp)


def require(task: Task, command: str, path: str | Path) -> None:
    """Refuse a model the command cannot use, saying what it is and what is needed."""
    kinds, needs = NEEDS[command]
    if task.kind not in kinds:
        hint = {SEGMENTER: "; use `edge segment`", CLASSIFIER: "; use `edge classify`"}
        also = hint.get(task.kind, "") if command != "run" else ""
        raise ModelError(f"{path}: {task.what}; `edge {command}` needs {needs}{also}")
