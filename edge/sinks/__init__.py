"""Outputs: each sink runs in its own worker with a bounded queue; see `edge.sinks.outbox`."""

from edge.registry import Registry

SINKS = Registry("sink")
