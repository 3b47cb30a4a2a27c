"""File helpers the sinks share: whole-line appends that survive kill -9, event file names,
and a disk budget pruned oldest-first (whole files are written by `edge.atomic`)."""

from __future__ import annotations

import os
import re
import time
from collections import deque
from pathlib import Path

import cv2
import numpy as np
from pydantic import Field

from edge.atomic import TEMP_GLOB
from edge.errors import ConfigError

MB = 1024 * 1024  # the unit of every *_mb option
MAX_DISK_MB = 10_000_000  # 10 TB: the upper bound of every disk budget (finite, fits an int)
MAX_FILES = 100_000_000  # the upper bound of every max_files
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def slug(text: str | None, default: str = "all") -> str:
    """A file- and topic-safe name part: 'tiger cat' -> 'tiger_cat'."""
    s = _UNSAFE.sub("_", text or "").strip("._")
    return s or default


def event_filename(event: dict, ext: str) -> str:
    """Sortable, unique per event: 2026-11-28T221000.123Z_feeder_cat_1234.jpg."""
    ts = event["ts"].replace(":", "")
    return f"{ts}_{slug(event['roi'])}_{slug(event['label'])}_{event['seq']}{ext}"


def make_dir(path: str | Path, what: str) -> Path:
    """Create an output directory now, so a bad path is a clear error at startup."""
    p = Path(path).expanduser()
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{what}: cannot create directory {p} ({e.strerror})") from None
    if not os.access(p, os.W_OK):
        raise ConfigError(f"{what}: directory {p} is not writable")
    return p


def scale_to_width(img: np.ndarray, width: int, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """`img` scaled down to `width`, aspect kept; as it is when narrower already (or width 0)."""
    if not width or img.shape[1] <= width:
        return img
    h = round(img.shape[0] * width / img.shape[1])
    return cv2.resize(img, (width, h), interpolation=interpolation)


def jpeg(bgr: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def repair_tail(path: Path) -> int:
    """Cut a torn last line (power cut mid-write) so every line parses; returns bytes removed."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    try:
        size = os.fstat(fd).st_size
        end = size
        while end > 0:
            start = max(0, end - 65536)
            chunk = os.pread(fd, end - start, start)
            if end == size and chunk.endswith(b"\n"):
                return 0
            i = chunk.rfind(b"\n")
            if i >= 0:
                end = start + i + 1
                break
            end = start
        os.ftruncate(fd, end)
        return size - end
    finally:
        os.close(fd)


class LineFile:
    """Append-only file of whole lines: one os.write per line on an O_APPEND descriptor.

    A process killed between writes leaves only whole lines; a torn tail (power cut, full
    disk) is cut off on open and after a short write.
    """

    def __init__(self, path: Path, fsync: str = "interval", fsync_every_s: float = 1.0) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.fsync_every_s = fsync_every_s
        self.repaired = repair_tail(self.path)
        self.fd = -1
        self.size = 0
        self._dirty = False
        self._synced = time.monotonic()
        self.open()

    def open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.size = os.fstat(self.fd).st_size

    def write(self, line: bytes) -> None:
        n = os.write(self.fd, line)
        if n != len(line):  # disk full: take the partial line back
            os.ftruncate(self.fd, self.size)
            raise OSError(f"{self.path}: short write ({n} of {len(line)} bytes)")
        self.size += n
        self._dirty = True
        due = time.monotonic() - self._synced >= self.fsync_every_s
        if self.fsync == "always" or (self.fsync == "interval" and due):
            self.sync()

    def sync(self) -> None:
        if self._dirty and self.fd >= 0:
            os.fsync(self.fd)
            self._dirty = False
        self._synced = time.monotonic()

    def close(self) -> None:
        if self.fd >= 0:
            if self.fsync != "never":
                self.sync()
            os.close(self.fd)
            self.fd = -1


def budget_mb(default: float, description: str):
    """A disk-budget option (`max_mb`): bounded by what a DiskBudget can hold."""
    return Field(default, gt=0, le=MAX_DISK_MB, description=description)


def budget_files(default: int, description: str):
    """A file-count option (`max_files`, 0: none): bounded like budget_mb."""
    return Field(default, ge=0, le=MAX_FILES, description=description)


class DiskBudget:
    """The files of one output directory, oldest first; prunes past a size or count limit."""

    def __init__(
        self,
        directory: Path,
        suffix: str,
        max_bytes: int,
        max_files: int = 0,
        companions: tuple[str, ...] = (),
    ) -> None:
        self.dir = Path(directory)
        self.suffix = suffix
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.companions = companions
        self.pruned = 0
        for stale in self.dir.glob(TEMP_GLOB):
            stale.unlink(missing_ok=True)
        found = []
        for p in self.dir.iterdir():
            if p.name.endswith(suffix) and not p.name.startswith("."):
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                found.append((st.st_mtime, p.name, self._size(p, st.st_size)))
        found.sort()
        self.files: deque[tuple[Path, int]] = deque((self.dir / n, s) for _, n, s in found)
        self.total = sum(s for _, s in self.files)
        self.prune()

    def _size(self, path: Path, size: int) -> int:
        for ext in self.companions:
            try:
                size += path.with_suffix(ext).stat().st_size
            except FileNotFoundError:
                pass
        return size

    def add(self, path: Path) -> None:
        """Record a file just written (with its companions), then enforce the budget."""
        size = self._size(path, path.stat().st_size)
        self.files.append((path, size))
        self.total += size
        self.prune()

    def prune(self) -> None:
        while self.files and (
            self.total > self.max_bytes or (self.max_files and len(self.files) > self.max_files)
        ):
            path, size = self.files.popleft()
            path.unlink(missing_ok=True)
            for ext in self.companions:
                path.with_suffix(ext).unlink(missing_ok=True)
            self.total -= size
            self.pruned += 1

    def stats(self) -> dict:
        return {"files": len(self.files), "bytes": self.total, "pruned": self.pruned}
