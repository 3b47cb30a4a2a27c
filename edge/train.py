"""`edge train`: custom classes from a folder of photos, on the device, with numpy and LiteRT.

The base MobileNet stays frozen: a copy of it exposes its global-pool embedding (edge.surgery),
each photo is preprocessed exactly as `edge run` does (Model.fit: same ROI crop, same resize)
and embedded once (cached on disk per image digest, base model digest and preprocessing), a
softmax-regression head is fitted in numpy, validated, quantized and appended to the base graph
as one standalone .tflite that carries its labels and a training record.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import math
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path

import cv2
import numpy as np

from edge import surgery
from edge.atomic import replacing, write_atomic
from edge.config import ModelConfig
from edge.errors import EdgeError, ModelError
from edge.model import Model, load_model
from edge.paths import UNLABELLED, cache_dir
from edge.preprocess import Box, crop_box
from edge.schema import RESIZE_MODES

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
ENOUGH = 10  # images per class below which we say more would help
AUG_TARGET = 20  # augment small classes up to about this many training samples per class
MAX_AUG = 9
EXPOSE_FORMAT = 1  # bump when edge.surgery.expose changes: cached exposed models are remade
STEPS = 120  # Adam steps per fit (from the nearest-class-mean start)
AGREEMENT = 0.99
TIME_MARGIN = 1.10


# ---------------------------------------------------------------- progress


class Progress:
    """A one-line progress bar on stderr (redrawn at most 10 times a second, always at the end)."""

    def __init__(self, name: str, total: int, stream=None) -> None:
        self.name, self.total, self.done = name, max(total, 1), 0
        self.stream = stream or sys.stderr
        self.t0 = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= 0.1 or self.done >= self.total:
            self.last = now
            bar = "#" * int(30 * self.done / self.total)
            self.stream.write(f"\r{self.name}: [{bar:<30}] {self.done}/{self.total} "
                              f"{now - self.t0:5.1f}s")
            if self.done >= self.total:
                self.stream.write("\n")
            self.stream.flush()


# ---------------------------------------------------------------- dataset


@dataclass
class Image:
    path: Path
    label: int
    digest: str

    def read(self) -> np.ndarray | None:
        """Its pixels (RGB), or None when unreadable; the bytes are not kept in memory."""
        try:
            return decode(self.path.read_bytes())
        except OSError:
            return None


@dataclass
class Dataset:
    root: Path
    classes: list[str]
    images: list[Image]
    skipped: dict[str, list[str]]  # class -> unreadable file names

    def counts(self) -> dict[str, int]:
        c = dict.fromkeys(self.classes, 0)
        for im in self.images:
            c[self.classes[im.label]] += 1
        return c


_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"BM", b"RIFF", b"II*\x00", b"MM\x00*", b"P2", b"P3",
          b"P5", b"P6")


def plausible(data: bytes) -> bool:
    """Cheap check before decoding: a known image signature, and for JPEG/PNG the end marker
    (a cut-short file decodes to a grey-filled picture without an error)."""
    if not data.startswith(_MAGIC):
        return False
    tail = data.rstrip(b"\x00\r\n ")
    if data.startswith(b"\xff\xd8"):
        return tail.endswith(b"\xff\xd9")
    if data.startswith(b"\x89PNG"):
        return b"IEND" in data[-32:]
    return True


def decode(data: bytes) -> np.ndarray | None:
    """RGB pixels, or None for a corrupt or truncated file."""
    if not plausible(data):
        return None
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def no_readable(d: Path, files: int, bad: int) -> EdgeError:
    return EdgeError(f"{d}: class {d.name!r} has no readable image "
                     f"({files} image files, {bad} unreadable)")


def scan(root: str | Path) -> Dataset:
    """The class subfolders of `root` (not hidden ones, not `unlabelled`) and their images;
    unreadable images are skipped and counted (decoding happens once, when embedding)."""
    root = Path(root)
    if not root.is_dir():
        raise EdgeError(f"{root}: dataset folder not found (one subfolder per class)")
    dirs = sorted(d for d in root.iterdir()
                  if d.is_dir() and not d.name.startswith(".") and d.name != UNLABELLED)
    if not dirs:
        raise EdgeError(f"{root}: empty dataset: no class subfolders (one folder per class)")
    if len(dirs) < 2:
        raise EdgeError(f"{root}: only one class ({dirs[0].name}); a classifier needs at least "
                        "two (add a `none` folder of photos without the subject)")
    classes = [d.name for d in dirs]
    images: list[Image] = []
    skipped: dict[str, list[str]] = {}
    for label, d in enumerate(dirs):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        good = 0
        for f in files:
            try:
                data = f.read_bytes()
            except OSError:
                data = b""
            if not plausible(data):
                skipped.setdefault(d.name, []).append(f.name)
                continue
            images.append(Image(f, label, hashlib.sha256(data).hexdigest()))
            good += 1
        if not good:
            raise no_readable(d, len(files), len(skipped.get(d.name, [])))
    return Dataset(root, classes, images, skipped)


# ---------------------------------------------------------------- embeddings


def augment(rgb: np.ndarray, roi: Box | None, aspect: float | None, seed: int) -> np.ndarray:
    """A camera-like variant of the ROI: small crop/scale, maybe a flip, brightness, JPEG."""
    rng = np.random.default_rng(seed)
    ys, xs = crop_box(rgb.shape, roi, aspect)
    img = rgb[ys, xs]
    h, w = img.shape[:2]
    s = rng.uniform(0.8, 1.0)
    ch, cw = max(1, int(h * s)), max(1, int(w * s))
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    img = img[y0 : y0 + ch, x0 : x0 + cw]
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = np.clip(img.astype(np.float32) * rng.uniform(0.75, 1.25), 0, 255).astype(np.uint8)
    ok, enc = cv2.imencode(".jpg", np.ascontiguousarray(img), [cv2.IMWRITE_JPEG_QUALITY,
                                                                int(rng.integers(40, 91))])
    return cv2.imdecode(enc, cv2.IMREAD_UNCHANGED) if ok else img


class EmbeddingCache:
    """Quantized embeddings by (image digest, variant), one .npz per base model digest and
    preprocessing; written temp + rename so a crash keeps the previous state."""

    def __init__(self, path: Path, channels: int, dtype: str) -> None:
        self.path, self.channels, self.dtype = path, channels, np.dtype(dtype)
        self.rows: dict[str, np.ndarray] = {}
        self.dirty = 0
        try:
            with np.load(path) as z:
                keys, emb = z["keys"], z["emb"]
            if emb.dtype == self.dtype and emb.shape[1:] == (channels,):
                self.rows = {str(k): e for k, e in zip(keys, emb, strict=True)}
        except (OSError, ValueError, KeyError):
            pass

    def get(self, key: str) -> np.ndarray | None:
        return self.rows.get(key)

    def put(self, key: str, emb: np.ndarray) -> None:
        self.rows[key] = emb
        self.dirty += 1
        if self.dirty >= 200:
            self.save()

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with replacing(self.path) as tmp, open(tmp, "wb") as f:
                keys = np.array(list(self.rows), dtype=str)
                emb = np.stack(list(self.rows.values())) if self.rows else np.zeros((0, 0))
                np.savez(f, keys=keys, emb=emb)
            self.dirty = 0
        except OSError:
            pass  # a cache that cannot be written only costs time next run


@dataclass
class Embedder:
    """The base model with its embedding exposed, plus what the cache key needs."""

    model: Model
    base_path: Path
    base_buf: bytes
    pooled: surgery.Pooled
    roi: Box | None
    cache: EmbeddingCache
    invokes: int = 0
    invoke_s: float = 0.0  # time inside those invokes (the rest of a run is overhead)

    def __post_init__(self) -> None:
        self.emb_index = self.model.interpreter.get_output_details()[-1]["index"]

    def _invoke(self, tensor: np.ndarray) -> np.ndarray:
        self.model.set_input(tensor)
        self.invoke_s += self.model.invoke() / 1000
        self.invokes += 1
        return self.model.interpreter.get_tensor(self.emb_index).reshape(-1).copy()

    def prepare(self, image: Image, variants: int):
        """The cached rows, and the model inputs still to embed: (variant, fitted image).
        None when the photo cannot be decoded. Runs in a worker thread (OpenCV releases the
        GIL), so the next photos are decoded and resized while this one is invoked."""
        keys = [f"{image.digest}:{v}" for v in range(variants)]
        rows = [self.cache.get(k) for k in keys]
        if all(r is not None for r in rows):
            return rows, []
        rgb = image.read()
        if rgb is None:
            return None
        todo = []
        for v in range(variants):
            if rows[v] is not None:
                continue
            if v == 0:
                fitted = self.model.input(rgb, self.roi)  # exactly what `edge run` feeds it
            else:
                aug = augment(rgb, self.roi, self.model.input.aspect,
                              int(image.digest[:12], 16) + v)
                fitted = self.model.input(aug)
            todo.append((v, fitted))
        return rows, todo

    def finish(self, image: Image, prepared) -> list[np.ndarray] | None:
        """Invoke what `prepare` left to embed (in the calling thread) and cache it."""
        if prepared is None:
            return None
        rows, todo = prepared
        for v, fitted in todo:
            rows[v] = self._invoke(fitted)
            self.cache.put(f"{image.digest}:{v}", rows[v])
        return rows

    def embed_all(self, images: list[Image], variants, progress: Progress | None = None,
                  ahead: int = 4):
        """(image, rows or None) for each image in order; decoding runs `ahead` photos ahead
        in one worker thread (bounded: at most `ahead` prepared photos in memory)."""
        with ThreadPoolExecutor(max_workers=1) as pool:
            window: deque = deque()
            todo = iter(images)
            for im in islice(todo, ahead):
                window.append((im, pool.submit(self.prepare, im, variants(im))))
            while window:
                im, fut = window.popleft()
                if (nxt := next(todo, None)) is not None:
                    window.append((nxt, pool.submit(self.prepare, nxt, variants(nxt))))
                rows = self.finish(im, fut.result())
                if progress:
                    progress.update(variants(im))
                yield im, rows

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return (q.astype(np.float64) - self.pooled.zero) * self.pooled.scale


def make_embedder(base: Path, roi: Box | None, resize: str, threads) -> Embedder:
    """The base model with its embedding exposed, cached by the base's digest (a warm run
    parses no flatbuffer: the embedding tensor is the exposed model's last output)."""
    try:
        buf = base.read_bytes()
    except OSError as e:
        raise ModelError(f"{base}: cannot read the base model ({e.strerror})") from None
    digest = hashlib.sha256(buf).hexdigest()
    folder = cache_dir() / "embeddings"
    path = folder / f"{digest[:16]}-exposed{EXPOSE_FORMAT}.tflite"
    model = None
    if path.exists():
        try:
            model = load_model(path, threads=threads, resize=resize)
        except ModelError:
            model = None  # a damaged cache file: made again below
    if model is None:
        exposed, _ = surgery.expose(buf, str(base))
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_atomic(path, exposed)
        except OSError as e:
            raise EdgeError(f"cannot write the embedding model to {folder} ({e.strerror}); "
                            "set EDGE_CACHE_DIR to a writable folder") from None
        model = load_model(path, threads=threads, resize=resize)
    out = model.interpreter.get_output_details()[-1]
    scale, zero = out["quantization"]
    pooled = surgery.Pooled(int(out["index"]), int(out["shape"][-1]),
                            np.dtype(out["dtype"]).name, float(scale), int(zero))
    prep = json.dumps([model.input_size, model.resize, roi, model.mean, model.std])
    key = hashlib.sha256(prep.encode()).hexdigest()[:16]
    cache = EmbeddingCache(folder / f"{digest[:16]}-{key}.npz", pooled.channels, pooled.dtype)
    return Embedder(model, base, buf, pooled, roi, cache)


def augment_count(n: int) -> int:
    """Augmented variants per image: small classes up to ~AUG_TARGET samples, big ones none
    (so adding five photos to a well-filled dataset costs five invokes)."""
    return int(min(MAX_AUG, max(0, math.ceil(AUG_TARGET / max(n, 1)) - 1)))


# ---------------------------------------------------------------- head


@dataclass
class Trained:
    weights: np.ndarray  # [K, C] on raw (dequantized) embeddings
    bias: np.ndarray

    def logits(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weights.T + self.bias


@contextmanager
def blas_threads(n: int):
    """numpy's OpenBLAS limited to `n` threads for a while. Its threads synchronise on every
    product: with another process on a core (`edge run` on the Pi, other jobs here) a 2-thread
    fit measured 2.5-3 s against 0.5 s on one thread. Best effort (ctypes, no threadpoolctl):
    without an OpenBLAS found, nothing changes."""
    funcs = None
    try:
        maps = Path("/proc/self/maps").read_text()
        for lib in {ln.split()[-1] for ln in maps.splitlines() if "openblas" in ln.lower()}:
            dll = ctypes.CDLL(lib)
            for suffix in ("64_", "", "_"):
                for prefix in ("scipy_openblas", "openblas"):
                    get = getattr(dll, f"{prefix}_get_num_threads{suffix}", None)
                    put = getattr(dll, f"{prefix}_set_num_threads{suffix}", None)
                    if get and put and funcs is None:
                        funcs = (get, put)
    except OSError:
        funcs = None
    before = funcs[0]() if funcs else None
    if funcs:
        funcs[1](ctypes.c_int(n))
    try:
        yield
    finally:
        if funcs:
            funcs[1](ctypes.c_int(before))


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def fit_head(x: np.ndarray, y: np.ndarray, k: int, l2: float = 1e-3, steps: int = STEPS,
             progress: Progress | None = None) -> Trained:
    """Class-balanced, L2-regularized softmax regression (Adam, full batch) on standardized
    embeddings, started from the nearest-class-mean classifier; folded back to raw inputs.
    float32 throughout: its matrix products are ~10x faster than float64's here."""
    x = np.asarray(x, np.float32)
    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    sd = np.sqrt(sd**2 + 1e-2 * float(np.mean(sd**2)) + 1e-12).astype(np.float32)
    z = (x - mu) / sd
    n, c = z.shape
    counts = np.bincount(y, minlength=k).astype(np.float32)
    sample_w = (n / (k * np.maximum(counts, 1)))[y].astype(np.float32)
    onehot = np.eye(k, dtype=np.float32)[y]
    means = np.stack([z[y == j].mean(axis=0) if counts[j] else np.zeros(c, np.float32)
                      for j in range(k)])
    scale = np.float32(1.0 / math.sqrt(c))
    w = means * scale
    b = -0.5 * (means**2).sum(axis=1) * scale
    params = [w, b]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    lr, beta1, beta2 = 0.02, 0.9, 0.999
    for t in range(1, steps + 1):
        p = softmax(z @ w.T + b)
        g = np.ascontiguousarray(((p - onehot) * (sample_w / n)[:, None]).T)
        grads = [g @ z + l2 * w, g.sum(axis=1)]
        for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
            m1[i] = beta1 * m1[i] + (1 - beta1) * grad
            m2[i] = beta2 * m2[i] + (1 - beta2) * grad**2
            param -= lr * (m1[i] / (1 - beta1**t)) / (np.sqrt(m2[i] / (1 - beta2**t)) + 1e-8)
        if progress:
            progress.update()
    weights = (w / sd).astype(np.float64)
    return Trained(weights, b.astype(np.float64) - weights @ mu.astype(np.float64))


# ---------------------------------------------------------------- validation


@dataclass
class Report:
    confusion: np.ndarray  # [true, predicted] counts over held-out images
    method: str
    predicted: np.ndarray | None = None  # per photo: its held-out prediction (-1: not held out)

    @property
    def accuracy(self) -> float:
        total = self.confusion.sum()
        return float(np.trace(self.confusion) / total) if total else float("nan")

    def precision_recall(self) -> list[tuple[float, float]]:
        cm = self.confusion.astype(np.float64)
        pred, true = cm.sum(axis=0), cm.sum(axis=1)
        d = np.diag(cm)
        with np.errstate(invalid="ignore", divide="ignore"):
            return list(zip(np.where(pred > 0, d / pred, np.nan).tolist(),
                            np.where(true > 0, d / true, np.nan).tolist(), strict=True))


def folds_for(y: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """Fold number per image: stratified k-fold when small, else one 20 % held-out split."""
    counts = np.bincount(y, minlength=k)
    rng = np.random.default_rng(seed)
    small = counts.min() < 25
    n_folds = int(min(5, max(2, counts.min()))) if small else 5
    fold = np.zeros(len(y), np.int64)
    for j in range(k):
        idx = np.flatnonzero(y == j)
        rng.shuffle(idx)
        fold[idx] = np.arange(len(idx)) % n_folds
    if small:
        return fold, f"{n_folds}-fold cross-validation"
    return fold, "a 20 % held-out split"


def validate(x_orig, y_orig, x_aug, y_aug, src_aug, k: int, progress: Progress) -> Report:
    cm = np.zeros((k, k), np.int64)
    predicted = np.full(len(y_orig), -1, np.int64)
    if np.bincount(y_orig, minlength=k).min() < 2:
        return Report(cm, "none: a class has a single photo, nothing to hold out")
    fold, method = folds_for(y_orig, k)
    folds = range(fold.max() + 1) if method.endswith("cross-validation") else [0]
    for f in folds:
        test = fold == f
        train_aug = ~test[src_aug]  # an augmented copy of a held-out photo stays out too
        xt = np.concatenate([x_orig[~test], x_aug[train_aug]])
        yt = np.concatenate([y_orig[~test], y_aug[train_aug]])
        head = fit_head(xt, yt, k, progress=progress)
        pred = head.logits(x_orig[test]).argmax(axis=1)
        np.add.at(cm, (y_orig[test], pred), 1)
        predicted[test] = pred
    return Report(cm, method, predicted)


def advice(counts: dict[str, int], report: Report) -> list[str]:
    """Which classes have too few images, and about how many more would help."""
    lines = []
    for (name, n), (_, recall) in zip(counts.items(), report.precision_recall(), strict=True):
        if n < ENOUGH:
            lines.append(f"{name}: only {n} image{'s' * (n != 1)}; about {ENOUGH - n} more "
                         "would help (aim for 10+ per class, in different light and poses)")
        elif not math.isnan(recall) and recall < 0.9 and n < 100:
            lines.append(f"{name}: recall {recall:.0%} with {n} images; about {n} more "
                         "would help")
    return lines


def format_report(report: Report, counts: dict[str, int]) -> str:
    names = list(counts)
    width = max(8, *(len(c) for c in names))
    if not report.confusion.sum():
        return f"validation: {report.method}"
    out = [f"validation ({report.method}): accuracy {report.accuracy:.1%} on "
           f"{int(report.confusion.sum())} photos",
           f"  {'class':<{width}} {'images':>6} {'precision':>9} {'recall':>6}"]
    for name, (p, r) in zip(names, report.precision_recall(), strict=True):
        ps = "-" if math.isnan(p) else f"{p:.2f}"
        rs = "-" if math.isnan(r) else f"{r:.2f}"
        out.append(f"  {name:<{width}} {counts[name]:>6} {ps:>9} {rs:>6}")
    out.append("confusion matrix (rows: true class, columns: predicted):")
    out.append("  " + " " * width + " " + " ".join(f"{c[:6]:>6}" for c in names))
    for name, row in zip(names, report.confusion, strict=True):
        out.append(f"  {name:<{width}} " + " ".join(f"{v:>6}" for v in row))
    return "\n".join(out)


def plot_confusion(report: Report, classes: list[str], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EdgeError("--plot needs matplotlib (pip install matplotlib); "
                        "the text report above has the same figures") from None
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(classes), 1 + 0.6 * len(classes)))
    ax.imshow(report.confusion, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for (i, j), v in np.ndenumerate(report.confusion):
        ax.text(j, i, str(v), ha="center", va="center")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{report.method}: accuracy {report.accuracy:.1%}")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise EdgeError(f"{path}: cannot write the plot ({e.strerror})") from None
    finally:
        plt.close(fig)


# ---------------------------------------------------------------- export checks


def interleaved_medians(a: Model, b: Model, seconds: float = 0.3,
                        rounds: int = 15) -> tuple[float, float]:
    """Median invoke ms of two models timed alternately (the same load for both), for at
    least `rounds` pairs and about `seconds`."""
    ta, tb = [], []
    a.invoke()
    b.invoke()
    end = time.monotonic() + seconds
    while len(ta) < rounds or time.monotonic() < end:
        ta.append(a.invoke())
        tb.append(b.invoke())
    return float(np.median(ta)), float(np.median(tb))


def timing_ok(base: Model, custom: Model, attempts: int = 3) -> tuple[bool, float, float]:
    """Custom invoke within 10 % of the base's. The head is less work than the base's own
    classifier, so a slower median is load from other processes (a shared 2-core machine
    swings more than 10 % within a second): measured up to `attempts` times, the best kept."""
    best = (math.inf, 0.0, 0.0)
    for _ in range(attempts):
        t_base, t_custom = interleaved_medians(base, custom)
        best = min(best, (t_custom / t_base, t_base, t_custom))
        if best[0] <= TIME_MARGIN:
            break
    return best[0] <= TIME_MARGIN, best[1], best[2]


def check_export(path: Path, name: str, emb: Embedder, head_buf: bytes,
                 float_top1: np.ndarray, q_orig: np.ndarray, images: list[Image]) -> dict:
    """The export's promises, each failing loudly: int8 top-1 equals the float head's on
    >= 99 % of the photos; one XNNPACK partition; invoke time within 10 % of the base."""
    raw = surgery.run_head(head_buf, q_orig)
    agree = float(np.mean(raw.argmax(axis=1) == float_top1))
    if agree < AGREEMENT:
        raise ModelError(f"{name}: the quantized head agrees with the float head on only "
                         f"{agree:.1%} of the photos (< {AGREEMENT:.0%}); nothing was written")
    model = load_model(path, threads=emb.model.threads, resize=emb.model.resize)
    if model.partitions != 1:
        raise ModelError(f"{name}: {model.partitions} XNNPACK partitions instead of 1; "
                         "nothing was written")
    for i in np.linspace(0, len(images) - 1, min(4, len(images))).astype(int):
        rgb = images[i].read()
        if rgb is not None and model.classify(rgb, emb.roi).argmax() != raw[i].argmax():
            raise ModelError(f"{name}: the exported model disagrees with its head on "
                             f"{images[i].path.name}; nothing was written")
    base = load_model(emb.base_path, threads=emb.model.threads, resize=emb.model.resize)
    ok, t_base, t_custom = timing_ok(base, model)
    if not ok:
        raise ModelError(f"{name}: invoke {t_custom:.2f} ms, more than 10 % over the base "
                         f"model's {t_base:.2f} ms; nothing was written")
    return {"int8_float_agreement": round(agree, 4), "xnnpack_partitions": model.partitions,
            "invoke_ms": round(t_custom, 3), "base_invoke_ms": round(t_base, 3)}


def write_checked(out: Path, data: bytes, check) -> dict:
    """Write to a temp file beside `out`, run `check(temp)`, then rename: never a partial or
    unchecked model under the final name (a full disk included)."""
    try:
        with replacing(out, fsync=True) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
            return check(tmp)  # a check that raises leaves nothing under the final name
    except OSError as e:
        raise EdgeError(f"{out}: cannot write the model ({e.strerror or e}); "
                        "nothing was written") from None


# ---------------------------------------------------------------- the command


def parse_roi(text: str | None) -> Box | None:
    if not text:
        return None
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
        raise EdgeError(f"--roi {text!r}: use x0,y0,x1,y1 as fractions of the frame, "
                        "0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
    return box  # type: ignore[return-value]


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    from edge.catalog import DEFAULT_MODEL

    p.add_argument("dataset", metavar="DATASET", help="folder with one subfolder of photos per "
                   f"class (a `{UNLABELLED}` folder is ignored)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.tflite",
                   help="the model to write (refused if it exists, unless --force)")
    p.add_argument("--base", default=DEFAULT_MODEL, metavar="NAME|FILE",
                   help=f"base model: catalog name or .tflite file (default {DEFAULT_MODEL})")
    p.add_argument("--roi", metavar="x0,y0,x1,y1",
                   help="train on this region of each photo (the ROI `edge run` will classify)")
    default_resize = ModelConfig.model_fields["resize"].default
    p.add_argument("--resize", choices=RESIZE_MODES, default=default_resize,
                   help="resize mode, as model.resize in the config that will run the model "
                   f"(default {default_resize}, the config's default)")
    p.add_argument("--threads", default="auto", help="invoke threads (default auto)")
    p.add_argument("--force", action="store_true", help="overwrite OUT")
    p.add_argument("--plot", metavar="PNG", help="also draw the confusion matrix (matplotlib)")
    p.add_argument("--keep-base-classes", action="store_true",
                   help="the base model's classes plus the new ones")
    p.add_argument("--report", metavar="JSON", help="also write the validation report as JSON "
                   "(per-class precision/recall, confusion matrix, advice, the photos it got "
                   "wrong)")


def cmd_train(args: argparse.Namespace) -> int:
    from edge import catalog

    out = Path(args.output)
    if out.exists() and not args.force:
        raise EdgeError(f"{out}: exists; use --force to overwrite it")
    if not out.parent.is_dir():
        raise EdgeError(f"{out.parent}: output folder not found")
    roi = parse_roi(args.roi)
    threads = args.threads
    if threads != "auto":
        if not str(threads).isdigit() or int(threads) < 1:
            raise EdgeError(f"--threads {threads!r}: use a number (1, 2, ...) or auto")
        threads = int(threads)
    data = scan(args.dataset)
    base = catalog.resolve(args.base)
    emb = make_embedder(base, roi, args.resize, threads)
    result = train(data, emb, out, plot=Path(args.plot) if args.plot else None,
                   keep_base=args.keep_base_classes)
    print(result["summary"])
    if args.report:
        write_report(Path(args.report), data, result)
    return 0


def report_dict(data: Dataset, result: dict) -> dict:
    """The validation report for scripts and the web page's Teach view: per class its images,
    precision, recall and advice; the confusion matrix; each held-out photo predicted wrong
    (path relative to the dataset, true and predicted class)."""
    report: Report = result["report"]
    counts = data.counts()
    lines = advice(counts, report)
    nan = lambda v: None if math.isnan(v) else round(v, 4)  # noqa: E731
    classes = []
    for name, (p, r) in zip(data.classes, report.precision_recall(), strict=True):
        tip = next((ln for ln in lines if ln.startswith(f"{name}: ")), None)
        classes.append({"name": name, "images": counts[name], "precision": nan(p),
                        "recall": nan(r), "enough": tip is None, "advice": tip})
    wrong = []
    if report.predicted is not None:
        for im, pred in zip(data.images, report.predicted, strict=True):
            if pred >= 0 and pred != im.label:
                wrong.append({"path": im.path.relative_to(data.root).as_posix(),
                              "true": data.classes[im.label], "predicted": data.classes[pred]})
    return {"classes": classes, "method": report.method, "accuracy": nan(report.accuracy),
            "confusion": report.confusion.tolist(), "wrong": wrong,
            "checks": result["checks"], "summary": result["summary"],
            "record": result["record"], "seconds": round(result["seconds"], 2)}


def write_report(path: Path, data: Dataset, result: dict) -> None:
    try:
        write_atomic(path, (json.dumps(report_dict(data, result), indent=1) + "\n").encode())
    except OSError as e:
        raise EdgeError(f"{path}: cannot write the report ({e.strerror or e})") from None


def train(data: Dataset, emb: Embedder, out: Path, plot: Path | None = None,
          keep_base: bool = False) -> dict:
    """Embed, fit, validate, export and check; returns the record and a printable summary."""
    t0 = time.monotonic()
    k = len(data.classes)
    counts = data.counts()
    n_aug = {j: augment_count(n) for j, n in enumerate(counts.values())}
    bar = Progress("embedding", sum(1 + n_aug[im.label] for im in data.images))
    rows, variant, owner, kept = [], [], [], []
    for im, got in emb.embed_all(data.images, lambda im: 1 + n_aug[im.label], bar):
        if got is None:
            data.skipped.setdefault(data.classes[im.label], []).append(im.path.name)
            continue
        rows += got
        variant += range(len(got))
        owner += [len(kept)] * len(got)
        kept.append(im)
    emb.cache.save()
    data.images = kept
    for j, name in enumerate(data.classes):
        if not any(im.label == j for im in kept):
            d = data.root / name
            raise no_readable(d, counts[name], len(data.skipped.get(name, [])))
    counts = data.counts()
    for cls, files in data.skipped.items():
        print(f"skipped {len(files)} unreadable image{'s' * (len(files) != 1)} in {cls}: "
              f"{', '.join(files[:5])}{' ...' if len(files) > 5 else ''}", file=sys.stderr)
    q = np.stack(rows)
    variant, owner = np.array(variant), np.array(owner)
    y_all = np.array([data.images[i].label for i in owner])
    x_all = emb.dequantize(q)
    orig = variant == 0
    x_orig, y_orig, q_orig = x_all[orig], y_all[orig], q[orig]
    x_aug, y_aug, src_aug = x_all[~orig], y_all[~orig], owner[~orig]
    fold, _ = folds_for(y_orig, k)
    smallest = np.bincount(y_orig, minlength=k).min()
    n_fits = (0 if smallest < 2 else fold.max() + 1 if smallest < 25 else 1) + 1
    bar = Progress("training", STEPS * n_fits)
    with blas_threads(1):
        report = validate(x_orig, y_orig, x_aug, y_aug, src_aug, k, bar)
        head = fit_head(x_all, y_all, k, progress=bar)
    text = format_report(report, counts)
    print(text)
    for line in advice(counts, report):
        print(f"too few images: {line}")
    if plot:
        plot_confusion(report, data.classes, plot)
    labels = list(data.classes)
    weights, bias = head.weights, head.bias
    if keep_base:
        weights, bias, labels = with_base_classes(emb, x_all, y_all, k, labels)
    logits = x_all @ weights.T + bias
    f_head = surgery.Head(weights, bias, (float(logits.min()), float(logits.max())))
    record = {
        "edge_train": 1,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "base": {"name": emb.base_path.name, "sha256": hashlib.sha256(emb.base_buf).hexdigest()},
        "classes": labels,
        "images": counts,
        "skipped": {c: len(v) for c, v in data.skipped.items()},
        "augmented_per_image": {data.classes[j]: n for j, n in n_aug.items()},
        "validation": {"method": report.method, "accuracy": None if math.isnan(
            report.accuracy) else round(report.accuracy, 4)},
        "preprocessing": {"roi": list(emb.roi) if emb.roi else None,
                          "resize": emb.model.resize, "input": list(emb.model.input_size)},
        "keep_base_classes": keep_base,
    }
    if keep_base:
        record["validation"]["note"] = ("of the trained head on the new classes; the exported "
                                        "head imprints them beside the base classes")
    buf = surgery.custom_model(emb.base_buf, f_head, labels, record, emb.model.mean,
                               emb.model.std, str(emb.base_path))
    head_buf = surgery.head_model(emb.pooled, f_head)
    float_top1 = (x_orig @ weights.T + bias).argmax(axis=1)
    checks = write_checked(out, buf, lambda tmp: check_export(
        tmp, str(out), emb, head_buf, float_top1, q_orig, data.images))
    elapsed = time.monotonic() - t0
    summary = (f"wrote {out}: {k} classes ({', '.join(data.classes)}), base {emb.base_path.name}, "
               f"validation accuracy {_pct(report.accuracy)}, int8/float agreement "
               f"{checks['int8_float_agreement']:.1%}, invoke {checks['invoke_ms']:.2f} ms "
               f"(base {checks['base_invoke_ms']:.2f} ms), {emb.invokes} new embeddings "
               f"(invokes {emb.invoke_s:.2f} s), {elapsed:.1f} s")
    return {"record": record, "checks": checks, "report": report, "summary": summary,
            "invokes": emb.invokes, "seconds": elapsed}


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.1%}"


def with_base_classes(emb: Embedder, x: np.ndarray, y: np.ndarray, k: int,
                      labels: list[str]):
    """The base classifier's weights (dequantized) plus the new classes imprinted on its scale:
    each new row is the class's mean embedding, normalised to the base rows' mean norm."""
    bw, bb = surgery.base_classifier(emb.base_buf, str(emb.base_path))
    base_labels = emb.model.labels if len(emb.model.labels) == bw.shape[0] else [
        f"class_{i}" for i in range(bw.shape[0])]
    norm = float(np.linalg.norm(bw, axis=1).mean())
    rows, biases = [], []
    base_logits = x @ bw.T + bb
    for j in range(k):
        m = x[y == j].mean(axis=0)
        w = m / (np.linalg.norm(m) + 1e-12) * norm
        rows.append(w)
        # bias: the class wins on (nearly) all its own photos and their augmented copies by
        # 2 logits over the best base class (e^2: ~7x more probable)
        gap = base_logits[y == j].max(axis=1) - x[y == j] @ w
        biases.append(float(np.quantile(gap, 0.9)) + 2.0)
    weights = np.concatenate([bw, np.stack(rows)])
    bias = np.concatenate([bb, np.array(biases)])
    return weights, bias, [*base_labels, *labels]
