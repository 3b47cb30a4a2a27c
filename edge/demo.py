"""Demo and test clips made from still photos, so nothing has to be downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from edge import paths
from edge.atomic import replacing
from edge.errors import EdgeError

DEMO_IMAGES = ("cat.bmp", "bird.bmp", "grace_hopper.bmp", "parrot.jpg", "sunflower.bmp", "owl.jpg")


def fit(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Letterbox `img` (BGR) into size=(w, h) keeping its aspect."""
    w, h = size
    s = min(w / img.shape[1], h / img.shape[0])
    nw, nh = max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))
    out = np.zeros((h, w, 3), np.uint8)
    x0, y0 = (w - nw) // 2, (h - nh) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


def cover(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`img` scaled to cover size=(w, h) and centre-cropped to it (nothing letterboxed)."""
    w, h = size
    s = max(w / img.shape[1], h / img.shape[0])
    nw, nh = max(w, round(img.shape[1] * s)), max(h, round(img.shape[0] * s))
    big = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    x0, y0 = (nw - w) // 2, (nh - h) // 2
    return big[y0 : y0 + h, x0 : x0 + w]


def make_clip(
    out: Path,
    image_dir: Path,
    names: tuple[str, ...] = DEMO_IMAGES,
    frames_per_image: int = 30,
    size: tuple[int, int] = (640, 480),
    fps: float = 30.0,
    pan: bool = False,
) -> Path:
    """Write an MJPG .avi cutting between the stills (with a slow pan when `pan`)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"cannot write video {out}")
    try:
        for name in names:
            img = cv2.imread(str(Path(image_dir) / name))
            if img is None:
                raise FileNotFoundError(f"{Path(image_dir) / name}: not a readable image")
            if not pan:
                base = fit(img, size)
                for _ in range(frames_per_image):
                    writer.write(base)
                continue
            # a camera panning across the scene: a window sliding over a wider view of it
            # (no wrap-around seam, as rolling the picture would leave)
            step = 2
            wide = cover(img, (size[0] + step * frames_per_image, size[1]))
            for i in range(frames_per_image):
                writer.write(np.ascontiguousarray(wide[:, i * step : i * step + size[0]]))
    finally:
        writer.release()
    return out


def assets_dir() -> Path:
    """The photos for the demo: EDGE_ASSETS, else ../shared/assets beside the checkout."""
    if env := os.environ.get("EDGE_ASSETS"):
        return Path(env)
    # beside the checkout the package runs from, wherever the command is started
    return Path(__file__).resolve().parents[2] / "shared" / "assets"


def demo_clip() -> Path:
    """The demo clip, made once from the asset photos and cached."""
    out = paths.cache_dir() / "demo.avi"
    if not out.exists():
        images = assets_dir() / "images"
        if not images.is_dir():
            raise EdgeError(
                f"{images}: demo photos not found; set EDGE_ASSETS to the assets folder "
                "or give a --source"
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        with replacing(out) as tmp:
            make_clip(tmp, images, frames_per_image=45, pan=True)
    return out
