"""Where edge keeps things on this machine: one rule for models, state and cache.

Under systemd the unit's StateDirectory=/CacheDirectory= win ($STATE_DIRECTORY,
$CACHE_DIRECTORY); from a shell, the system directory /var/lib/edge when this user may use it
(so `edge classify` on a Pi finds the service's models), else the user's XDG directories.
EDGE_MODEL_DIR / EDGE_CACHE_DIR override each for tests and unusual layouts. `edge models
fetch`, `edge run`, the service, scripts/demo.sh and scripts/install.sh all go through here.
"""

from __future__ import annotations

import os
from pathlib import Path

SYSTEM_STATE = Path("/var/lib/edge")
UNLABELLED = "unlabelled"  # inside a dataset: the collect output's folder, never a class


def _first(var: str) -> Path | None:
    value = os.environ.get(var, "").split(":")[0]  # systemd lists several dirs with ':'
    return Path(value) if value else None


def _home(var: str, *default: str) -> Path:
    return Path(os.environ.get(var) or Path.home().joinpath(*default)) / "edge"


def state_dir() -> Path:
    """Persistent state (spools, models): the service's, /var/lib/edge, or ~/.local/state."""
    if env := _first("STATE_DIRECTORY"):
        return env
    if SYSTEM_STATE.is_dir() and os.access(SYSTEM_STATE, os.W_OK | os.X_OK):
        return SYSTEM_STATE
    return _home("XDG_STATE_HOME", ".local", "state")


def model_dir() -> Path:
    """EDGE_MODEL_DIR, else the service's state dir/models, else /var/lib/edge/models when
    this user can read it, else ~/.local/share/edge/models."""
    if env := _first("EDGE_MODEL_DIR"):
        return env
    if env := _first("STATE_DIRECTORY"):
        return env / "models"
    system = SYSTEM_STATE / "models"
    if system.is_dir() and os.access(system, os.R_OK | os.X_OK):
        return system
    return _home("XDG_DATA_HOME", ".local", "share") / "models"


def cache_dir() -> Path:
    """Disposable measurements (the thread choice): EDGE_CACHE_DIR, the service's cache, or
    ~/.cache/edge."""
    return _first("EDGE_CACHE_DIR") or _first("CACHE_DIRECTORY") or _home("XDG_CACHE_HOME",
                                                                           ".cache")
