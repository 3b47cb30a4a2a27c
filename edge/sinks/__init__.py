"""Outputs: each sink runs in its own worker with a bounded queue; see `edge.sinks.outbox`.

Importing the package registers every sink (in `edge.sinks.base.SINKS`) under its YAML name;
the order here is the order in the docs.
"""

from edge.sinks import (  # noqa: F401, I001
    log,
    jsonl,
    mqtt,
    webhook,
    snapshot,
    clip,
    collect,
)
from edge.sinks.base import SINKS

__all__ = ["SINKS"]
