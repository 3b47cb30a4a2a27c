"""Post-processing: scores -> results and events, through a YAML-configured chain of stages."""

from edge.registry import Registry

STAGES = Registry("stage")

# Importing the stage modules registers them under their YAML names.
from edge.postprocess import (  # noqa: E402, F401
    filter,
    group,
    hysteresis,
    smooth,
    threshold,
    topk,
)
