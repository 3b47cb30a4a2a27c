"""Errors a user can act on: the CLI prints their message on one line and exits 2."""


class EdgeError(Exception):
    """A problem with user input (file, config, model, labels) with a message saying what to do."""


class ModelError(EdgeError):
    """The model file cannot be used: the message names the file and the cause."""


class ConfigError(EdgeError):
    """The config is invalid: the message names the file, line, key and what is allowed."""
