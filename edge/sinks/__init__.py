"""Outputs: each sink runs in its own worker with a bounded queue; see `edge.sinks.outbox`."""

from edge.registry import Registry

SINKS = Registry("sink")

# Importing a sink module registers it under its YAML name (order = order in the docs).
from edge.sinks import (  # noqa: E402, F401, I001
    log,
    jsonl,
    mqtt,
    webhook,
    snapshot,
    clip,
    collect,
)
