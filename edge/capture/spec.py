"""What a source setting means: the CLI's `--source S` string as `source` config settings,
and those settings as a `Source`.

One string covers every kind, decided by its shape: a number or /dev/videoN is a USB camera,
a URL is a stream, a video extension is a video file, an image, folder or glob is `files`,
and `picamera2` (or `picamera2:1`) the Pi camera. `open_source` builds the configured source
without touching the device (the capture thread opens it, and reopens it after failures); it
raises EdgeError for settings that can never work, so a caller can report those before
starting.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edge.capture.base import Source
from edge.capture.files import IMAGE_EXTS, FilesSource, is_glob
from edge.capture.opencv import URL, VIDEO_EXTS, OpenCVSource
from edge.config import SourceConfig
from edge.errors import EdgeError


def parse_source(text: str) -> dict:
    """Settings (kind, device/path) for a --source string; EdgeError when it fits no kind."""
    s = text.strip()
    low = s.lower()
    if low in ("auto", "picamera2"):
        return {"kind": low, "device": 0} if low == "picamera2" else {"kind": "auto"}
    if low.startswith("picamera2:") and s.split(":", 1)[1].isdigit():
        return {"kind": "picamera2", "device": int(s.split(":", 1)[1])}
    if s.isdigit():
        return {"kind": "opencv", "device": int(s)}
    if s.startswith("/dev/") or URL.match(s):
        return {"kind": "opencv", "device": s}
    suffix = Path(s).suffix.lower()
    if suffix in VIDEO_EXTS:
        return {"kind": "opencv", "device": s}
    if is_glob(s) or suffix in IMAGE_EXTS or Path(s).is_dir():
        return {"kind": "files", "path": s}
    if not Path(s).exists():
        raise EdgeError(
            f"--source {text!r}: no such file or folder (give a camera number, /dev/videoN, "
            "a URL, a video file, an image, a folder, a glob, or picamera2)"
        )
    raise EdgeError(
        f"--source {text!r}: cannot tell what kind of file this is from its name (video: "
        f"{', '.join(VIDEO_EXTS)}; image: {', '.join(IMAGE_EXTS)})"
    )


def apply_source(cfg: SourceConfig, text: str) -> SourceConfig:
    """A copy of `cfg` with the --source string's settings (the rest kept, validated)."""
    return SourceConfig.model_validate({**cfg.model_dump(), **parse_source(text)})


def open_source(cfg: SourceConfig, model_size: tuple[int, int],
                wants_full: Callable[[], bool] | None = None,
                decode_to: tuple[int, int] | None = None) -> Source:
    """The source `cfg` describes; model_size (w, h) sizes the Pi camera's lores stream, and
    `wants_full` tells it per frame whether to copy its full-resolution stream too (None:
    always; edge.fullres). `decode_to` (a `box`-resized model's input): JPEG frames nothing
    wants whole decode toward it (edge.decode)."""
    kind = cfg.kind
    if kind == "auto":  # which camera is decided on each connect: one plugged in later counts
        from edge.capture.auto import AutoSource

        return AutoSource(lambda kind, device: open_source(
            cfg.model_copy(update={"kind": kind, "device": device}), model_size, wants_full,
            decode_to))
    if kind == "picamera2":
        from edge.capture.picamera2 import Picamera2Source, import_picamera2

        import_picamera2()  # not installed: say how now, not at every reconnect
        return Picamera2Source(cfg, model_size, wants_full)
    if kind == "opencv":
        source = OpenCVSource(cfg, decode_to=decode_to, wants_full=wants_full)
        if source.kind == "file" and not Path(str(cfg.device)).is_file():
            raise EdgeError(f"source.device {cfg.device}: no such video file (a camera is a "
                            "number or /dev/videoN, a stream a URL)")
        return source
    if not cfg.path:
        raise EdgeError("source.path is required with kind: files (an image, folder or glob)")
    source = FilesSource(cfg.path, loop=cfg.loop, fps=cfg.fps if cfg.realtime else None,
                         frame_rate=cfg.fps, decode_to=decode_to, wants_full=wants_full)
    source.check()  # a path with no images can never work: say so now, not in a retry loop
    return source
