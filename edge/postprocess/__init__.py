"""Post-processing: scores -> results and events, through a YAML-configured chain of stages.

Importing the package registers every stage (in `edge.postprocess.base.STAGES`) under its
YAML name.
"""

from edge.postprocess import (  # noqa: F401
    filter,
    group,
    hysteresis,
    smooth,
    threshold,
    topk,
)
from edge.postprocess.base import STAGES

__all__ = ["STAGES"]
