"""Writing a file so that a reader, a crash or a power cut never sees half of it.

Every writer of a whole file (models, spools, snapshots, clips, the pidfile, caches) writes a
hidden temp file beside the target and renames it over the target: the rename is atomic on
one filesystem. The temp file keeps the target's extension (OpenCV picks a video container by
it) and is removed when the write fails, so a full disk leaves no debris behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_GLOB = ".*.tmp*"  # what temp_path names look like: stale ones may be removed at start


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


@contextmanager
def replacing(path: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """Yields a temp path to write by any means; on success it replaces `path` (after an
    fsync when asked: for what must survive a power cut), on failure it is removed."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def write_atomic(path: str | os.PathLike, data: bytes, fsync: bool = False,
                 mode: int = 0o644) -> None:
    """Replace `path` with `data` in one step (`mode`: e.g. a config's 0o600, kept)."""
    with replacing(path, fsync) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)


def read_json_map(path: str | os.PathLike) -> dict:
    """A JSON object kept in a file (a cache of measurements); {} when missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def store_json_entry(path: str | os.PathLike, key: str, value) -> bool:
    """Set one entry of such a file, written whole and atomically; False when it cannot be
    written (a cache that cannot be kept only costs time next run)."""
    path = Path(path)
    known = read_json_map(path)
    known[key] = value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(known, indent=1).encode())
    except OSError:
        return False
    return True
