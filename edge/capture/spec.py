"""The CLI's `--source S` string, turned into `source` config settings.

One string covers every kind, decided by its shape: a number or /dev/videoN is a USB camera,
a URL is a stream, a video extension is a video file, an image, folder or glob is `files`,
and `picamera2` (or `picamera2:1`) the Pi camera.
"""

from __future__ import annotations

from pathlib import Path

from edge.capture.files import IMAGE_EXTS, is_glob
from edge.capture.opencv import URL, VIDEO_EXTS
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
