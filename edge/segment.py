"""Semantic segmentation (DeepLabV3): which classes cover each region, as scores, boxes and a mask.

A segmenter sees the whole frame in one invoke; each region's coverage is then read from its
part of the class map (`region_coverage`, a pure function), so N regions cost one invoke, not
N. The coverage vector (score = share of the region a class covers) is what the
post-processing chain already understands, so thresholds, smoothing, hysteresis and events work
unchanged; the largest blob's box rides along on the events. `edge segment` prints the same
figures for image files and can write the class mask and a colour overlay. See docs/segment.md.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.config import SEGMENTER_MAX_FPS
from edge.errors import EdgeError
from edge.overlay import draw_text
from edge.preprocess import Box, crop_box
from edge.task import SEGMENTER

IGNORE = 255  # mask value of pixels the model did not see (outside a centre crop)
COVERAGE_MODES = ("area", "largest_blob")


def palette(n: int = 256) -> np.ndarray:
    """The Pascal VOC colour map (RGB, n x 3 uint8): class i's bits spread over R, G, B."""
    cmap = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


# ------------------------------------------------------------------ the model's map


def class_map(model) -> np.ndarray:
    """The last invoke's class index per pixel (HxW uint8), taking the argmax when the graph
    ends in scores instead of an ArgMax."""
    out = model.interpreter.get_tensor(model.output_index)[0]
    if model.task.argmax:
        out = np.argmax(out, axis=-1)
    return out.astype(np.uint8) if int(out.max(initial=0)) < IGNORE else out.astype(np.int32)


def infer_map(model, tensor: np.ndarray) -> tuple[np.ndarray, float]:
    """One invoke on a whole-image tensor (from `model.input`): the class map and the
    invoke's duration in ms."""
    model.set_input(tensor)
    ms = model.invoke()
    return class_map(model), ms


def map_view(model, shape: tuple[int, ...]) -> Box:
    """The part of an image of `shape` the model's map covers (all of it, except with
    `resize: crop`), normalized to the image."""
    if not model.input.aspect:
        return (0.0, 0.0, 1.0, 1.0)
    h, w = shape[:2]
    ys, xs = crop_box(shape, None, model.input.aspect)
    return (xs.start / w, ys.start / h, xs.stop / w, ys.stop / h)


# ------------------------------------------------------------------ coverage per region


@dataclass
class Coverage:
    """One region's share per class, blob counts and each class's largest blob."""

    scores: np.ndarray  # (n_classes,) float32: the share of the region (see `mode`)
    area: np.ndarray  # (n_classes,) float32: share of the region's pixels, all blobs
    blobs: np.ndarray  # (n_classes,) int: connected blobs of at least min_blob
    boxes: dict[int, Box] = field(default_factory=dict)  # class -> largest blob, frame coords
    largest: dict[int, float] = field(default_factory=dict)  # class -> its share of the region


def _to_view(box: Box | None, view: Box) -> Box | None:
    """A frame-normalized box in the normalized coordinates of the map (None: outside it)."""
    x0, y0, x1, y1 = box or (0.0, 0.0, 1.0, 1.0)
    vx0, vy0, vx1, vy1 = view
    vw, vh = vx1 - vx0, vy1 - vy0
    m = (max(0.0, (x0 - vx0) / vw), max(0.0, (y0 - vy0) / vh),
         min(1.0, (x1 - vx0) / vw), min(1.0, (y1 - vy0) / vh))
    return m if m[0] < m[2] and m[1] < m[3] else None


def region_coverage(cmap: np.ndarray, boxes: list[Box | None], n_classes: int,
                    mode: str = "area", min_blob: float = 0.0,
                    view: Box = (0.0, 0.0, 1.0, 1.0)) -> list[Coverage]:
    """Per region box (frame-normalized, None: the whole frame): each class's share of it.

    `mode` area: the share of the region's pixels the class covers (in blobs of at least
    `min_blob` of the region); largest_blob: the share its largest blob covers. Blobs are
    8-connected (cv2.connectedComponentsWithStats); boxes are in frame coordinates. `view` is
    the part of the frame the map covers. Values >= n_classes (the ignore label) count as area
    but as no class.
    """
    if mode not in COVERAGE_MODES:
        raise ValueError(f"coverage mode {mode!r}: use one of {', '.join(COVERAGE_MODES)}")
    mh, mw = cmap.shape[:2]
    vx0, vy0, vx1, vy1 = view
    out = []
    for box in boxes:
        zero = np.zeros(n_classes, np.float32)
        cov = Coverage(zero, zero.copy(), np.zeros(n_classes, np.int32))
        mapped = _to_view(box, view)
        if mapped is None:
            out.append(cov)
            continue
        ys, xs = crop_box(cmap.shape, mapped, None)
        sub = cmap[ys, xs]
        total = float(sub.size)
        counts = np.bincount(sub.ravel(), minlength=n_classes)[:n_classes]
        cov.area[:] = counts / total
        for c in np.flatnonzero(counts):
            _, _, stats, _ = cv2.connectedComponentsWithStats((sub == c).astype(np.uint8),
                                                              connectivity=8)
            sizes = stats[1:, cv2.CC_STAT_AREA]
            keep = sizes >= min_blob * total
            if not keep.any():
                continue
            best = 1 + int(np.argmax(sizes))
            x, y, w, h = (int(v) for v in stats[best, :4])
            cov.blobs[c] = int(keep.sum())
            cov.largest[int(c)] = float(sizes.max()) / total
            px = np.array([xs.start + x, xs.start + x + w]) / mw * (vx1 - vx0) + vx0
            py = np.array([ys.start + y, ys.start + y + h]) / mh * (vy1 - vy0) + vy0
            cov.boxes[int(c)] = (float(px[0]), float(py[0]), float(px[1]), float(py[1]))
            kept = float(sizes[keep].sum()) if mode == "area" else float(sizes.max())
            cov.scores[c] = kept / total
        out.append(cov)
    return out


def attach_boxes(events: list, cov: Coverage, labels: list[str]) -> None:
    """Give each event the box of its label's largest blob (labels of a group get none)."""
    index = {label: i for i, label in enumerate(labels)}
    for e in events:
        i = index.get(e.label)
        if i is not None and i in cov.boxes:
            e.box = tuple(round(v, 4) for v in cov.boxes[i])


# ------------------------------------------------------------------ masks and overlays


def image_mask(cmap: np.ndarray, shape: tuple[int, ...], view: Box = (0.0, 0.0, 1.0, 1.0)):
    """The class map at the image's resolution (nearest neighbour), 255 where the map does
    not reach (outside a centre crop)."""
    h, w = shape[:2]
    mask = np.full((h, w), IGNORE, np.uint8)
    x0, y0, x1, y1 = (round(v * s) for v, s in zip(view, (w, h, w, h), strict=True))
    small = np.minimum(cmap, IGNORE).astype(np.uint8)
    mask[y0:y1, x0:x1] = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    return mask


def blend(bgr: np.ndarray, mask: np.ndarray, alpha: float = 0.5, skip: int = 0) -> None:
    """Tint `bgr` (in place) with each class's palette colour where the mask (any size, scaled
    nearest-neighbour) holds it; class `skip` (background) and 255 stay untinted."""
    h, w = bgr.shape[:2]
    if mask.shape[:2] != (h, w):
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    colours = palette()[:, ::-1]  # BGR
    tinted = (mask != skip) & (mask != IGNORE)
    mixed = bgr[tinted] * (1 - alpha) + colours[mask[tinted]] * alpha
    bgr[tinted] = mixed.astype(np.uint8)


def legend(bgr: np.ndarray, mask: np.ndarray, labels: list[str], x: int = 0, y: int = 0):
    """Draw (in place) each class present in the mask but background, largest first, in its
    colour with its share; returns the y below the last line."""
    scale = max(0.4, bgr.shape[1] / 1100)
    share = np.bincount(mask.ravel(), minlength=256) / mask.size
    present = [int(c) for c in np.flatnonzero(share) if c != 0 and c != IGNORE]
    for c in sorted(present, key=lambda c: -share[c]):
        colour = tuple(int(v) for v in palette()[c][::-1])
        name = labels[c] if c < len(labels) else f"class_{c}"
        draw_text(bgr, f"{name} {share[c]:.1%}", x, y, colour, scale)
        y += round(32 * scale)
    return y


def overlay(rgb: np.ndarray, mask: np.ndarray, labels: list[str], alpha: float = 0.5):
    """BGR image: the photo tinted by class, with a legend of the classes present (not 0)."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    blend(bgr, mask, alpha)
    legend(bgr, mask, labels)
    return bgr


def output_name(template: str, image: str, several: bool) -> Path:
    """Where the mask/overlay of `image` goes: `template` itself for one image; with several,
    `{stem}` in it is replaced by the image's stem, else `_<stem>` goes before the suffix."""
    t = Path(template)
    if "{stem}" in template:
        return Path(template.replace("{stem}", Path(image).stem))
    if not several:
        return t
    return t.with_name(f"{t.stem}_{Path(image).stem}{t.suffix}")


def _write_image(path: Path, img: np.ndarray) -> None:
    """Encode by the file's suffix, write a temp file and rename (never a half file)."""
    import os

    ok, data = cv2.imencode(path.suffix or ".png", img)
    if not ok:
        raise EdgeError(f"{path}: cannot encode an image with suffix {path.suffix!r}")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data.tobytes())
        os.replace(tmp, path)
    except OSError as e:
        raise EdgeError(f"{path}: cannot write ({e.strerror})") from None


# ------------------------------------------------------------------ `edge run` glue


def max_fps(configured: float, model, no_drop: bool) -> float:
    """inference.max_fps, or for a segmenter left at 0 the default cap (not with --no-drop,
    where every frame of a file is wanted anyway)."""
    if configured or no_drop or model.task.kind != SEGMENTER:
        return configured
    return SEGMENTER_MAX_FPS


def segment_frame(model, tensor: np.ndarray, shape: tuple[int, ...], boxes: list,
                  model_cfg) -> tuple[list[Coverage], np.ndarray, float]:
    """`edge run`'s step for a segmenter: one invoke on the whole frame's tensor, coverage
    per region of a frame of `shape`; returns (coverages, class map, invoke ms)."""
    cmap, ms = infer_map(model, tensor)
    covs = region_coverage(cmap, boxes, len(model.labels), model_cfg.coverage,
                           model_cfg.min_blob, map_view(model, shape))
    return covs, cmap, ms


# ------------------------------------------------------------------ `edge segment`


def parse_roi(spec: str) -> tuple[str, Box]:
    """NAME=x0,y0,x1,y1 (fractions of the image)."""
    name, _, coords = spec.partition("=")
    try:
        box = tuple(float(v) for v in coords.split(","))
    except ValueError:
        box = ()
    if not name or len(box) != 4 or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
        raise EdgeError(f"--roi {spec!r}: use NAME=x0,y0,x1,y1 with 0 <= x0 < x1 <= 1 and "
                        "0 <= y0 < y1 <= 1")
    return name, box  # type: ignore[return-value]


def add_segment_arguments(p: argparse.ArgumentParser) -> None:
    """`edge segment`'s own options (edge.cli adds the images and the model options)."""
    p.add_argument("--mask", metavar="OUT.png",
                   help="write the class index of every pixel as an 8-bit PNG at the image's "
                   "size; with several images `{stem}` in the name is the image's stem, else "
                   "_<stem> is added before the suffix")
    p.add_argument("--overlay", metavar="OUT.jpg",
                   help="write a colour overlay with a legend (names as for --mask)")
    p.add_argument("--roi", action="append", default=[], metavar="NAME=x0,y0,x1,y1",
                   help="also report this region (repeatable; default: the config's rois)")
    p.add_argument("--min-blob", type=float, help="ignore blobs smaller than this share of the "
                   "region (default: the config's model.min_blob)")
    p.add_argument("--json", action="store_true", help="one JSON object per image")


def _class_rows(cov: Coverage, labels: list[str]) -> list[dict]:
    order = np.argsort(-cov.area, kind="stable")
    return [
        {"index": int(c), "label": labels[c], "share": round(float(cov.area[c]), 6),
         "blobs": int(cov.blobs[c]),
         "largest_share": round(cov.largest.get(int(c), 0.0), 6),
         "box": [round(v, 4) for v in cov.boxes[int(c)]] if int(c) in cov.boxes else None}
        for c in order if cov.area[c] > 0
    ]


def run_segment(args: argparse.Namespace, model, images: dict, cfg) -> int:
    """`edge segment`: figures per image and region; --mask and --overlay files."""
    rois = [parse_roi(s) for s in args.roi] or [(r.name, tuple(r.box)) for r in cfg.rois]
    min_blob = cfg.model.min_blob if args.min_blob is None else args.min_blob
    several = len(images) > 1
    for path, rgb in images.items():
        cmap, invoke_ms = infer_map(model, model.input(rgb))
        view = map_view(model, rgb.shape)
        regions = [(None, None), *rois]
        covs = region_coverage(cmap, [b for _, b in regions], len(model.labels), "area",
                               min_blob, view)
        written = {}
        if args.mask or args.overlay:
            mask = image_mask(cmap, rgb.shape, view)
            if args.mask:
                written["mask"] = output_name(args.mask, path, several)
                _write_image(written["mask"], mask)
            if args.overlay:
                written["overlay"] = output_name(args.overlay, path, several)
                _write_image(written["overlay"], overlay(rgb, mask, model.labels))
        if args.json:
            print(json.dumps({
                "image": path, "model": model.name, "invoke_ms": round(invoke_ms, 3),
                "size": [rgb.shape[1], rgb.shape[0]], "map": list(cmap.shape),
                "regions": [{"roi": name, "box": list(box) if box else None,
                             "classes": _class_rows(cov, model.labels)}
                            for (name, box), cov in zip(regions, covs, strict=True)],
                **{k: str(v) for k, v in written.items()},
            }), flush=True)
            continue
        print(f"\n{path}  ({rgb.shape[1]}x{rgb.shape[0]}, map {cmap.shape[1]}x{cmap.shape[0]}, "
              f"invoke {invoke_ms:.1f} ms)")
        for (name, _), cov in zip(regions, covs, strict=True):
            print(f"  [{name}]" if name else "  image:")
            for row in _class_rows(cov, model.labels):
                box = " ".join(f"{v:.3f}" for v in row["box"]) if row["box"] else "-"
                print(f"    {row['share']:7.2%}  {row['label']:<14} blobs {row['blobs']:<3} "
                      f"largest {row['largest_share']:6.2%} box {box}")
        for k, v in written.items():
            print(f"  {k}: {v}")
    return 0
