"""Post-processing: scores -> results and events, through a YAML-configured chain of stages."""

from edge.registry import Registry

STAGES = Registry("stage")
