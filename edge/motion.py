"""The motion gate: skip the invoke while the frame has not changed (optional, off by default).

A fixed camera watching an empty scene classifies the same picture 30 times a second. With
`inference.motion_threshold` set, each frame is reduced to a ~40x30 thumbnail (the same 2x2
halvings as the default resize: ~0.15 ms for 640x480) and compared with the thumbnail of the
last frame that was classified: while the mean absolute difference stays below the threshold
(a share of full scale), the frame is skipped. At least one frame every
`inference.motion_max_skip_s` is classified anyway, so a slow change (dusk) or a stuck gate
never hides the scene for long.

A skipped frame produces no result and no event: like a region whose model did not run, it
has no result for that frame; the chains keep their state (the active labels stay active)
and the web page keeps the last results beside the newest frame. Skipped frames are counted
(`frames_skipped` in the stats, the log line, /metrics and the page).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge.preprocess import box_shrink

THUMB = (40, 30)  # (w, h): the size halving stops at (up to 2x larger)


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """A small int16 copy of the frame: block averages remove sensor noise and JPEG grain."""
    return box_shrink(rgb, THUMB).astype(np.int16)


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails, as a share of full scale (0..1)."""
    return float(np.abs(a - b).mean()) / 255.0


@dataclass
class MotionGate:
    threshold: float  # skip while the difference stays below this share of full scale
    max_skip_s: float  # classify at least this often
    _ref: np.ndarray | None = field(default=None, repr=False)  # last classified thumbnail
    _ref_mono: float = 0.0

    def wants(self, rgb: np.ndarray, mono: float) -> bool:
        """True: classify this frame (and it becomes the reference); False: skip it."""
        thumb = thumbnail(rgb)
        ref = self._ref
        if (ref is not None and ref.shape == thumb.shape
                and mono - self._ref_mono < self.max_skip_s
                and difference(thumb, ref) < self.threshold):
            return False
        self._ref, self._ref_mono = thumb, mono
        return True


def gate_for(inference_cfg) -> MotionGate | None:
    """The config's gate, or None when it is off (every frame classified)."""
    if not inference_cfg.motion_threshold:
        return None
    return MotionGate(inference_cfg.motion_threshold, inference_cfg.motion_max_skip_s)
