"""Frame -> tensor: the one place that decides which pixels a model sees.

A model says what its input wants once, at load (`ModelInput`: size, crop to its aspect or
not, interpolation, the 256-entry pixel table into its tensor type). An `InputPlan` pairs each
region with the input of the model that classifies it and is built once per config; the
capture thread calls `plan.prepare(frame)` for the next frame while the current one is being
classified, so the frame loop only copies finished tensors into the interpreter and invokes.

Each prepared frame gets new arrays (a 224x224x3 tensor is 150 KB): the frame may wait in the
slot, be dropped or be taken by the loop at any moment, and fresh arrays need no ownership
protocol between the two threads. The loop's own path (`Model.classify`, for an image at hand)
goes through the same `ModelInput`, so `edge classify` and `edge run` see identical pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from edge.capture.base import Frame

Box = tuple[float, float, float, float]  # x0, y0, x1, y1, normalized to the frame


def crop_box(shape: tuple[int, ...], box: Box | None, aspect: float | None) -> tuple[slice, slice]:
    """Pixel slices of a normalized box, optionally centre-cropped to `aspect` (w/h)."""
    h, w = shape[:2]
    x0, y0, x1, y1 = box or (0.0, 0.0, 1.0, 1.0)
    px0, py0 = int(round(x0 * w)), int(round(y0 * h))
    px1, py1 = max(px0 + 1, int(round(x1 * w))), max(py0 + 1, int(round(y1 * h)))
    if aspect:
        bw, bh = px1 - px0, py1 - py0
        if bw / bh > aspect:
            nw = max(1, int(round(bh * aspect)))
            px0 += (bw - nw) // 2
            px1 = px0 + nw
        else:
            nh = max(1, int(round(bw / aspect)))
            py0 += (bh - nh) // 2
            py1 = py0 + nh
    return slice(py0, py1), slice(px0, px1)


def lut_is_identity(lut: np.ndarray) -> bool:
    """True when the LUT maps uint8 pixel p to uint8 p: the pixels can be used as they are.

    A float LUT with the same values is not: its tensor needs the conversion to float.
    """
    return lut.dtype == np.uint8 and bool(np.array_equal(lut, np.arange(256)))


def box_factors(shape: tuple[int, ...], size: tuple[int, int]) -> tuple[int, int]:
    """Per axis, the power of two `box_shrink` divides by: the largest that keeps the image at
    least `size` (w, h)."""
    kx = ky = 1
    while shape[1] // (2 * kx) >= size[0]:
        kx *= 2
    while shape[0] // (2 * ky) >= size[1]:
        ky *= 2
    return kx, ky


def box_shrink(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Halve each axis while it stays at least the model's `size` (w, h), averaging 2x2
    pixels: the low-pass that bilinear lacks when it shrinks by 2 or more (it reads 2x2
    pixels, so the rest alias); the bilinear step after it shrinks by less than 2.

    Each halving is OpenCV's INTER_AREA at exactly half size, which is integer arithmetic,
    (a + b + c + d + 2) >> 2, on x86 and aarch64 alike (tests/test_preprocess.py pins the
    formula, the emulated aarch64 run checks it there) and fast (~0.1 ms for 640x480; its
    other integer factors take a slow float path). An axis that needs no halving while the
    other does has its pixels doubled first, so the step is still 2x2. An odd last row or
    column is left out.
    """
    while True:
        h, w = img.shape[:2]
        fx, fy = w >= 2 * size[0], h >= 2 * size[1]
        if not (fx or fy):
            return img
        img = img[: h - h % 2 if fy else h, : w - w % 2 if fx else w]
        if not fx:
            img = np.repeat(img, 2, axis=1)
        elif not fy:
            img = np.repeat(img, 2, axis=0)
        img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2),
                         interpolation=cv2.INTER_AREA)


@dataclass(frozen=True, eq=False)
class ModelInput:
    """What one model's input tensor wants, fixed at load; calling it makes that tensor."""

    size: tuple[int, int]  # (w, h)
    aspect: float | None  # centre-crop to this w/h first (resize: crop), else None
    interpolation: int  # a cv2.INTER_* flag
    lut: np.ndarray | None  # uint8 pixel -> tensor value; None: the pixels are the values
    prefilter: bool = False  # box-average by whole factors first (resize: box)

    @classmethod
    def of(cls, size: tuple[int, int], resize: str, lut: np.ndarray) -> ModelInput:
        # INTER_LINEAR_EXACT: bilinear in fixed point, bit-identical on x86 and aarch64 (plain
        # INTER_LINEAR is off by one on most pixels between the two with OpenCV 5), so a Pi
        # gives the answers the tests saw here; it costs ~0.2 ms more per 640x480 frame.
        interpolation = cv2.INTER_AREA if resize == "area" else cv2.INTER_LINEAR_EXACT
        aspect = size[0] / size[1] if resize == "crop" else None
        # A uint8 model whose quantization is the pixel range itself needs no table: the
        # resized pixels are the tensor (saves a pass per frame).
        return cls(size, aspect, interpolation, None if lut_is_identity(lut) else lut,
                   prefilter=resize == "box")

    @property
    def decode_to(self) -> tuple[int, int] | None:
        """The size a JPEG may be decoded down to for this input (edge.decode): the box
        resize's halvings, done by the decoder; None for the other resizes (they take the
        whole image)."""
        return self.size if self.prefilter else None

    def fit(self, rgb: np.ndarray, box: Box | None = None) -> np.ndarray:
        """Crop `box` (and to the model's aspect) and resize to the input size: RGB uint8."""
        ys, xs = crop_box(rgb.shape, box, self.aspect)
        img = box_shrink(rgb[ys, xs], self.size) if self.prefilter else rgb[ys, xs]
        return cv2.resize(img, self.size, interpolation=self.interpolation)

    def __call__(self, rgb: np.ndarray, box: Box | None = None) -> np.ndarray:
        """The input tensor's contents (HxWx3, the tensor's dtype) for `box` of `rgb`."""
        fitted = self.fit(rgb, box)
        return fitted if self.lut is None else cv2.LUT(fitted, self.lut)


def source_image(frame: Frame, box: Box | None) -> np.ndarray:
    """The image a region is cut from: the full-resolution one when the source has one (a Pi
    camera's lores stream is already at the model's size: too coarse to crop)."""
    return frame.full if box and frame.full is not None else frame.rgb


@dataclass(frozen=True, slots=True)
class Prepared:
    """A frame's tensors, one per region (None: skipped, not due), and the plan that made them."""

    plan: InputPlan
    tensors: tuple[np.ndarray | None, ...]


@dataclass(frozen=True, eq=False)
class InputPlan:
    """Per region, its box and the input of the model that classifies it; built per config.

    `due(frame)`, when given, says which entries the loop will want for the frame (a region
    whose rate or gate says no): `prepare` skips the others' resize. It is a forecast; `tensor`
    makes any entry it skipped that the loop does want.
    """

    regions: tuple[tuple[Box | None, ModelInput], ...]
    due: Callable[[Frame], Sequence[bool]] | None = None

    def prepare(self, frame: Frame) -> Prepared:
        """Make every (due) region's tensor; thread-safe (the capture thread calls it)."""
        want = self.due(frame) if self.due is not None else None
        return Prepared(self, tuple(inp(source_image(frame, box), box)
                                    if want is None or want[i] else None
                                    for i, (box, inp) in enumerate(self.regions)))

    def tensor(self, frame: Frame, i: int) -> np.ndarray:
        """Entry `i`'s tensor for the frame: the capture thread's, if it made it under this
        plan, else made now."""
        p = frame.prepared
        t = p.tensors[i] if p is not None and p.plan is self else None
        if t is None:
            box, inp = self.regions[i]
            t = inp(source_image(frame, box), box)
        return t

    def tensors(self, frame: Frame) -> tuple[np.ndarray, ...]:
        """The frame's tensors: made by the capture thread if it used this plan, else now.

        A frame prepared under another plan (before a reload) is never trusted: the plan is
        compared by identity.
        """
        return tuple(self.tensor(frame, i) for i in range(len(self.regions)))
