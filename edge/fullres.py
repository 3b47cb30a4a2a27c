"""Who needs the full-resolution image: the capture thread copies it only then.

A Pi camera delivers two streams: `lores` at the model's size (what is classified) and `main`
at the configured size. Copying `main` out of its DMA buffer (640x480x3: 0.9 MB per frame, 27
MB/s at 30 fps) is wasted when nothing looks at it. It is needed for: a region's crop (a box
cut from the model-size lores stream would be too coarse), the outputs that store frame
images (`snapshot`, `clip`, `collect`), and the web page's live preview while someone watches
it. The pipeline keeps a `FullDemand` (the config's part set on start and on each reload, the
preview's part by the web page as viewers come and go); the source asks it per frame. A frame
without the full image has `full = None`, and `Frame.image` is then the lores one.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge import config as configmod

IMAGE_OUTPUTS = frozenset({"snapshot", "clip", "collect"})  # outputs that store frame images


def config_needs_full(cfg) -> bool:
    """Regions cut from the frame, or an output that stores frame images."""
    if cfg.rois:
        return True
    return any(name in IMAGE_OUTPUTS for name, _ in configmod.spec_items(cfg.outputs))


@dataclass
class FullDemand:
    """Asked by the capture thread per frame; written by the loop (on a reload) and by the web
    page (viewers): single attribute assignments, read without a lock."""

    by_config: bool = True
    viewers: int = 0  # live preview streams open

    def __call__(self) -> bool:
        return self.by_config or self.viewers > 0
