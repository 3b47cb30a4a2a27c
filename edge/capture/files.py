"""Still images as a source: one image, a folder, or a glob, in sorted order.

Used for offline evaluation (with the no-drop slot every image is classified, in order) and
for demos. A file that cannot be decoded raises an error naming it rather than being skipped,
so an evaluation never silently covers fewer images than the folder holds.
"""

from __future__ import annotations

import glob
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from edge.capture.base import Pacer, SourceError
from edge.decode import decode_image, target
from edge.errors import EdgeError
from edge.imagesize import too_large

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def is_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def list_images(path: str) -> list[Path]:
    """The image files `path` names (a file, a folder's images, or a glob's matches), sorted."""
    if is_glob(path):
        return sorted(Path(p) for p in glob.glob(path, recursive=True) if Path(p).is_file())
    p = Path(path)
    if p.is_dir():
        return sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
    return [p] if p.is_file() else []


def read_rgb(path: Path, decode_to: tuple[int, int] | None = None) -> np.ndarray:
    """An image file as HxWx3 RGB uint8 (a JPEG scaled toward `decode_to`, edge.decode);
    SourceError naming the file when it cannot be read."""
    try:
        if problem := too_large(path):
            raise SourceError(f"{path}: {problem}")
        rgb = decode_image(np.fromfile(path, np.uint8), decode_to)
    except (OSError, cv2.error) as e:  # cv2.error: OpenCV's own size guard
        raise SourceError(f"{path}: cannot read this file as an image ({_short(e)})") from None
    if rgb is None:
        raise SourceError(f"{path}: cannot read this file as an image")
    return rgb


def _short(e: Exception) -> str:
    """The last line of an OpenCV error (its first names the C++ source file)."""
    return str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__


class FilesSource:
    """Images from disk; finite unless `loop` (then it starts again at the first image)."""

    live = False

    def __init__(self, path: str, loop: bool = False, fps: float | None = None,
                 frame_rate: float | None = None, decode_to: tuple[int, int] | None = None,
                 wants_full: Callable[[], bool] | None = None) -> None:
        """`decode_to`, `wants_full`: JPEGs decode toward the model's size when nothing
        needs them whole (edge.decode, edge.fullres)."""
        self.path = path
        self.decode_to = decode_to
        self.wants_full = wants_full
        self.loop = loop
        self.fps = fps  # None: as fast as they can be read
        self.frame_rate = frame_rate or fps  # the images' own time (Frame.media_s)
        self.name = f"files:{path}"
        self.files: list[Path] = []
        self.index = 0
        self.pacer: Pacer | None = None

    def check(self) -> None:
        """EdgeError now when the path names no images (open raises the same, later)."""
        try:
            self.open()
        except SourceError as e:
            raise EdgeError(f"source.path {e}") from None
        finally:
            self.close()

    def open(self) -> None:
        self.files = list_images(self.path)
        if not self.files:
            what = "matches no files" if is_glob(self.path) else "has no images"
            if not is_glob(self.path) and not Path(self.path).exists():
                what = "does not exist"
            raise SourceError(
                f"{self.path}: {what} (give an image, a folder of images or a glob such as "
                f"'photos/*.jpg'; image types: {', '.join(IMAGE_EXTS)})"
            )
        self.index = 0
        self.pacer = Pacer(self.fps) if self.fps else None

    def read(self) -> tuple[np.ndarray, None] | None:
        if self.index >= len(self.files):
            if not self.loop:
                return None
            self.index = 0
        path = self.files[self.index]
        self.index += 1
        return read_rgb(path, target(self.decode_to, self.wants_full)), None

    def close(self) -> None:
        self.files = []
