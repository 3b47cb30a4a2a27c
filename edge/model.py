"""The inference engine: backend choice, XNNPACK check, thread tuning, input and scores.

A model states what its input wants once, at load (`input`, an `edge.preprocess.ModelInput`:
size, crop, interpolation and the 256-entry table that maps a uint8 pixel to the tensor's
value, since any affine normalization of uint8 pixels is a table). A frame then costs one copy
of a finished tensor into the interpreter, one invoke and one small dequantize; `run` returns
the scores with the invoke's own duration.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import re
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge import catalog, paths
from edge.atomic import read_json_map, store_json_entry
from edge.errors import EdgeError, ModelError
from edge.limits import MAX_LABELS_BYTES, read_capped
from edge.metadata import Metadata, check_structure, embedded_files, read_metadata
from edge.preprocess import Box, ModelInput
from edge.schema import RESIZE_MODES
from edge.task import SEGMENTER, task_of

log = logging.getLogger(__name__)

BACKENDS = {  # config name -> (module, human name), in `auto` order
    "litert": ("ai_edge_litert.interpreter", "ai-edge-litert"),
    "tflite-runtime": ("tflite_runtime.interpreter", "tflite-runtime"),
    "tensorflow": ("tensorflow.lite", "tensorflow"),
}
XNNPACK_WARNING = (
    "{backend} {version} left the quantized model off XNNPACK (0 delegate partitions): its "
    "default XNNPACK options do not enable 8-bit ops, so the reference kernels run it, about "
    "20x slower. Fix: pip install ai-edge-litert (the maintained LiteRT runtime)."
)



def _import_backend(name: str):
    module, human = BACKENDS[name]
    mod = importlib.import_module(module)
    pkg = importlib.import_module(module.split(".")[0])
    version = getattr(pkg, "__version__", None)
    if version is None:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        try:
            version = dist_version(human)
        except PackageNotFoundError:
            version = "?"
    return mod, human, version


def select_backend(name: str = "auto"):
    """Import the interpreter module: the named backend, or the first one installed."""
    if name != "auto":
        if name not in BACKENDS:
            raise ModelError(f"unknown backend {name!r}: use auto, {', '.join(BACKENDS)}")
        try:
            return (name, *_import_backend(name))
        except ImportError as e:
            raise ModelError(
                f"backend {name!r} is not installed ({e}); pip install {BACKENDS[name][1]}"
            ) from None
    for candidate in BACKENDS:
        try:
            return (candidate, *_import_backend(candidate))
        except ImportError:
            continue
    raise ModelError("no TFLite runtime installed: pip install ai-edge-litert")


def _is_prose(line: str) -> bool:
    """A sentence, not a label: ends like one or runs to many words."""
    return line.endswith((".", ";", ":")) or len(line.split()) >= 6


def parse_labels(text: str) -> list[str]:
    """Labels in any common format: `0 cat`, `0: cat`, or one label per line.

    A blank line followed by prose ends the list (the Pascal VOC file ends with a note about
    the ignore label). `ID label` lines count as IDs only when every non-blank line has one and
    the IDs rise from 0 or 1, so a plain list whose names start with digits ("7 Up") stays plain;
    blank lines between `ID label` lines are skipped.
    """
    lines = [ln.strip() for ln in text.splitlines()]
    for i, ln in enumerate(lines):
        if not ln and any(_is_prose(x) for x in lines[i + 1:] if x):
            lines = lines[:i]
            break
    while lines and not lines[-1]:
        lines.pop()
    indexed = re.compile(r"^(\d+)\s*[:\s]\s*(.+)$")
    matches = [indexed.match(ln) for ln in lines if ln]
    ids = [int(m.group(1)) for m in matches if m]
    if (matches and all(matches) and ids[0] <= 1
            and all(a < b for a, b in zip(ids, ids[1:], strict=False))):
        labels: dict[int, str] = {int(m.group(1)): m.group(2).strip() for m in matches}
        n = max(labels) + 1
        return [labels.get(i, f"class_{i}") for i in range(n)]
    return lines


def fit_labels(labels: list[str], n_out: int, source: str) -> list[str]:
    """Align labels with the output size, allowing for a background class either way."""
    if len(labels) == n_out:
        return labels
    if len(labels) == n_out - 1:
        return ["background", *labels]
    if len(labels) == n_out + 1 and labels[0].lower() in ("background", "???", "unknown"):
        return labels[1:]
    raise ModelError(
        f"{source}: {len(labels)} labels do not fit the model's {n_out} outputs "
        f"(expected {n_out}, or {n_out - 1} without a background class)"
    )


def input_lut(dtype: np.dtype, quant: tuple[float, int], mean: float, std: float) -> np.ndarray:
    """The 256-entry table mapping a uint8 pixel to the model's input value."""
    real = (np.arange(256, dtype=np.float64) - mean) / std
    if dtype == np.float32:
        return real.astype(np.float32)
    scale, zero = quant
    info = np.iinfo(dtype)
    # Round half up, with a little slack for the float32 scale (1/127.5 is not exact in float32)
    # so that a normalization that matches the quantization maps pixel p to exactly p.
    q = np.floor(real / scale + zero + 0.5 + 1e-3) if scale else np.arange(256) + info.min
    return np.clip(q, info.min, info.max).astype(dtype)


def cpu_model() -> str:
    """A human name for the CPU: `model name` on x86, the board's `Model` on a Pi."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    for key in ("model name", "Model", "Hardware", "CPU part"):
        if fields.get(key):
            return fields[key]
    return os.uname().machine


def usable_cores() -> int:
    """Cores this process may run on (a systemd CPUAffinity= or taskset counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_id() -> str:
    """CPU model and usable cores: the key under which a thread choice stays valid."""
    return f"{cpu_model()}/{usable_cores()}"


@dataclass(frozen=True, slots=True)
class Inference:
    scores: np.ndarray  # class probabilities, float32
    invoke_ms: float  # the invoke alone


@dataclass
class Model:
    """A loaded model, ready to classify RGB frames."""

    path: Path
    backend: str
    backend_version: str
    threads: int
    labels: list[str]
    metadata: Metadata
    digest: str
    resize: str = "box"
    xnnpack: bool = True
    partitions: int | None = None
    interpreter: object = field(repr=False, default=None)

    def __post_init__(self) -> None:
        inp = self.interpreter.get_input_details()[0]
        out = self.interpreter.get_output_details()[0]
        shape = tuple(int(x) for x in inp["shape"])
        dtype = np.dtype(inp["dtype"])
        self.input_index, self.output_index = inp["index"], out["index"]
        self.input_dtype = dtype
        self.input_size = (shape[2], shape[1])  # (w, h)
        self.input_quant = tuple(inp["quantization"])
        self.mean, self.std = self._normalization()
        lut = input_lut(dtype, self.input_quant, self.mean, self.std)
        self.input = ModelInput.of(self.input_size, self.resize, lut)
        self.output_quant = tuple(out["quantization"])
        self.output_size = int(np.prod(out["shape"]))
        self.ends_in_softmax = self._ends_in_softmax()
        self.task = task_of(self.interpreter)  # classifier, segmenter or other (edge.task)

    @property
    def name(self) -> str:
        return self.path.stem

    def _normalization(self) -> tuple[float, float]:
        md = self.metadata
        if md.mean and md.std:
            return float(np.mean(md.mean)), float(np.mean(md.std))
        if self.input_dtype == np.float32:
            log.info("%s: no normalization in metadata, assuming [-1, 1] input", self.path.name)
            return 127.5, 127.5
        # Quantized input without metadata: raw pixels are the calibrated range, so choose the
        # normalization that maps pixel p to the quantized value p (uint8) or p - 128 (int8).
        scale, zero = self.input_quant
        if not scale:
            return 0.0, 1.0
        return float(zero - np.iinfo(self.input_dtype).min), 1.0 / scale

    def _ends_in_softmax(self) -> bool:
        """Whether the output comes from SOFTMAX, looking through (de)quantize and reshape."""
        try:
            ops = self.interpreter._get_ops_details()
        except AttributeError:
            return True
        producer = {int(o): op for op in ops if op["op_name"] != "DELEGATE" for o in op["outputs"]}
        tensor = self.output_index
        while (op := producer.get(tensor)) is not None:
            if op["op_name"] == "SOFTMAX":
                return True
            if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE", "RESHAPE") or not len(op["inputs"]):
                return False
            tensor = int(op["inputs"][0])
        return False

    @property
    def info(self) -> dict:
        return {
            "model": self.name,
            "path": str(self.path),
            "digest": self.digest,
            "backend": self.backend,
            "backend_version": self.backend_version,
            "xnnpack": self.xnnpack,
            "xnnpack_partitions": self.partitions,
            "threads": self.threads,
            "input": {
                "shape": [1, self.input_size[1], self.input_size[0], 3],
                "dtype": self.input_dtype.name,
                "quantization": list(self.input_quant),
                "mean": self.mean,
                "std": self.std,
            },
            "outputs": self.output_size,
            "labels": len(self.labels),
            "resize": self.resize,
        }

    def set_input(self, tensor: np.ndarray) -> None:
        """Copy a finished tensor (from `self.input`) into the interpreter's input."""
        view = self.interpreter.tensor(self.input_index)()
        np.copyto(view[0], tensor)
        del view  # the interpreter refuses to invoke while a view of its memory is alive

    def invoke(self) -> float:
        """Run the graph on the current input; returns the invoke's duration in ms."""
        t0 = time.perf_counter()
        try:
            self.interpreter.invoke()
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise ModelError(f"{self.path}: invoke failed: {first}") from None
        return (time.perf_counter() - t0) * 1000

    def scores(self) -> np.ndarray:
        """Dequantized class probabilities (softmax applied only if the graph lacks one)."""
        raw = self.interpreter.get_tensor(self.output_index).reshape(-1)
        scale, zero = self.output_quant
        x = (raw.astype(np.float32) - zero) * scale if scale else raw.astype(np.float32)
        if not self.ends_in_softmax:
            e = np.exp(x - x.max())
            x = e / e.sum()
        return x

    def run(self, tensor: np.ndarray) -> Inference:
        """Scores for a finished input tensor, with the invoke's duration."""
        self.set_input(tensor)
        ms = self.invoke()
        return Inference(self.scores(), ms)

    def classify(self, rgb: np.ndarray, roi: Box | None = None) -> np.ndarray:
        """Scores for an RGB image at hand (or its region `roi`): what `edge classify` does."""
        return self.run(self.input(rgb, roi)).scores

    def top(self, scores: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        idx = np.argsort(-scores, kind="stable")[:k]
        return [(self.labels[i], float(scores[i])) for i in idx]


QUIET_RUNTIME = False  # the CLI sets it unless -v: keep the runtime's INFO lines off stderr
_STDERR_LOCK = threading.Lock()


@contextmanager
def _runtime_info_filtered():
    """While the runtime loads a model, its C++ INFO lines (written straight to fd 2) go to
    the debug log instead of stderr; anything else written meanwhile, by any thread, is passed
    on to stderr, so nothing is lost."""
    if not QUIET_RUNTIME:
        yield
        return
    with _STDERR_LOCK, tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = []
            for line in tmp.read().splitlines(keepends=True):
                if line.startswith(b"INFO: "):
                    log.debug("%s", line.decode(errors="replace").strip())
                else:
                    kept.append(line)
            if kept:
                os.write(2, b"".join(kept))


def _make_interpreter(mod, human: str, path: Path, threads: int, xnnpack: bool):
    with _runtime_info_filtered():
        return _new_interpreter(mod, human, path, threads, xnnpack)


def _new_interpreter(mod, human: str, path: Path, threads: int, xnnpack: bool):
    kwargs: dict = {"model_path": str(path), "num_threads": threads}
    if not xnnpack:
        resolver = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        kwargs["experimental_op_resolver_type"] = resolver
    interp = None
    try:
        interp = mod.Interpreter(**kwargs)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        also = ""
        try:
            if interp is not None:
                check_input(interp, path)
        except ModelError as bad:
            also = "; " + str(bad).split(": ", 1)[1]
        raise ModelError(f"{path}: {human} cannot load the model ({first}){also}") from None
    check_input(interp, path)
    return interp


def check_input(interp, path: Path) -> None:
    """Refuse a model that is not an image classifier (one 1xHxWx3 input)."""
    inp = interp.get_input_details()
    shape = [int(x) for x in inp[0]["shape"]] if inp else []
    if len(inp) > 1:
        shapes = ", ".join("x".join(str(int(x)) for x in i["shape"]) for i in inp)
        raise ModelError(
            f"{path}: the model has {len(inp)} inputs ({shapes}); edge feeds one 1xHxWx3 image"
        )
    if len(inp) != 1 or len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
        raise ModelError(
            f"{path}: input shape {shape} is not NHWC with 3 channels "
            "(an image classifier takes one 1xHxWx3 input)"
        )
    dtype = np.dtype(inp[0]["dtype"])
    if dtype not in (np.uint8, np.int8, np.float32):
        raise ModelError(f"{path}: input type {dtype} unsupported (uint8, int8, float32)")


def delegate_partitions(interp) -> int | None:
    """How many subgraphs a delegate took: DELEGATE nodes in the execution plan."""
    try:
        return sum(op["op_name"] == "DELEGATE" for op in interp._get_ops_details())
    except (AttributeError, RuntimeError, ValueError):
        return None


def _is_quantized(interp) -> bool:
    try:
        return any(
            np.dtype(t["dtype"]) in (np.int8, np.uint8) and t["quantization"][0]
            for t in interp.get_tensor_details()
        )
    except (ValueError, RuntimeError):
        return False


def invoke_times(invoke, seconds: float, at_least: int = 1, at_most: int | None = None):
    """Durations (ms) of back-to-back calls for about `seconds`: at least `at_least` of them,
    at most `at_most`. Thread tuning and `edge bench` both time invokes with it."""
    times: list[float] = []
    end = time.perf_counter() + seconds
    while len(times) < at_least or (time.perf_counter() < end
                                     and (at_most is None or len(times) < at_most)):
        t0 = time.perf_counter()
        invoke()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def _time_invokes(interp, budget_s: float, n: int = 8) -> float:
    """Median invoke time in ms over up to `n` invokes within `budget_s`."""
    return float(np.median(invoke_times(interp.invoke, budget_s, 1, n)))


def tune_threads(mod, human, version, path, digest, xnnpack, budget_s: float = 1.0) -> int:
    """Fastest thread count in 1..min(4, cores), cached per model digest, CPU and backend."""
    key = f"{digest}:{cpu_id()}:{human}-{version}:{'xnn' if xnnpack else 'ref'}"
    cache = paths.cache_dir() / "threads.json"
    known = read_json_map(cache).get(key)
    if isinstance(known, int):
        return known
    candidates = list(range(1, min(4, usable_cores()) + 1))
    timings = {}
    for n in candidates:
        interp = _make_interpreter(mod, human, path, n, xnnpack)
        interp.invoke()  # warm-up: the first invoke packs weights
        timings[n] = _time_invokes(interp, budget_s / len(candidates))
    best = min(timings, key=timings.get)
    log.info("threads auto: %s -> %d", {k: round(v, 2) for k, v in timings.items()}, best)
    if not store_json_entry(cache, key, best):
        log.debug("cannot cache the thread choice in %s", cache)
    return best


def check_model_file(path: Path) -> bytes:
    if not path.exists():
        raise ModelError(f"{path}: model file not found (edge models fetch downloads the default)")
    if path.is_dir():
        raise ModelError(f"{path}: is a directory, not a .tflite model file")
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise ModelError(f"{path}: cannot read model ({e.strerror})") from None
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelError(f"{path}: not a TFLite model (no TFL3 identifier in its header)")
    if problem := check_structure(buf):
        raise ModelError(f"{path}: model file is truncated or corrupt ({problem}); fetch it again")
    return buf


def label_count(interp) -> int | None:
    """How many labels the model answers with: its classes (a segmenter's ArgMax input), else
    the output size; None for a class map whose class count the graph does not say."""
    task = task_of(interp)
    if task.kind == SEGMENTER:
        return task.classes
    return int(np.prod(interp.get_output_details()[0]["shape"]))


def load_labels(path: Path | None, buf: bytes, md: Metadata, n_out: int | None,
                model: Path) -> list[str]:
    if path is not None:
        try:
            text = read_capped(path, MAX_LABELS_BYTES).decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ModelError(f"{path}: cannot read labels ({e})") from None
        labels = parse_labels(text)
        return labels if n_out is None else fit_labels(labels, n_out, str(path))
    files = embedded_files(buf)
    if md.label_file and md.label_file not in files:  # the zip at the file's end is cut off
        raise ModelError(
            f"{model}: its metadata names the labels file {md.label_file!r}, which the file "
            "does not hold: the model is truncated or corrupt (fetch it again, or give "
            "--labels / model.labels)"
        )
    name = md.label_file if md.label_file in files else next(
        (n for n in files if n.endswith(".txt")), None
    )
    if name is None and n_out is None:
        raise ModelError(f"{model}: the model's class map does not say how many classes it has "
                         "and it embeds no labels: give a labels file (--labels / model.labels)")
    if name is None:
        log.warning("%s: no labels in the model; use --labels / model.labels", model.name)
        return [f"class_{i}" for i in range(n_out)]
    text = files[name].decode("utf-8", "replace")
    labels = parse_labels(text)
    return labels if n_out is None else fit_labels(labels, n_out, f"{model}:{name}")


def read_labels(path: str | Path, labels: str | Path | None = None) -> list[str]:
    """The labels a model answers with, without tuning it for inference (config checks)."""
    path = Path(path)
    buf = check_model_file(path)
    _, mod, human, _ = select_backend("auto")
    interp = _make_interpreter(mod, human, path, 1, True)
    n_out = label_count(interp)
    return load_labels(Path(labels) if labels else None, buf, read_metadata(buf), n_out, path)


def load_model(
    path: str | Path,
    labels: str | Path | None = None,
    backend: str = "auto",
    threads: int | str = "auto",
    resize: str = "box",
    xnnpack: bool = True,
) -> Model:
    """Load, verify and warm up a model; raises ModelError with a one-line cause."""
    path = Path(path)
    buf = check_model_file(path)
    if resize not in RESIZE_MODES:
        raise ModelError(f"unknown resize mode {resize!r}: use one of {', '.join(RESIZE_MODES)}")
    name, mod, human, version = select_backend(backend)
    digest = hashlib.sha256(buf).hexdigest()
    if threads == "auto":  # a bad model fails in the first timing (or below, when cached)
        n_threads = tune_threads(mod, human, version, path, digest, xnnpack)
    else:
        n_threads = int(threads)
    interp = _make_interpreter(mod, human, path, n_threads, xnnpack)
    md = read_metadata(buf)
    n_out = label_count(interp)
    model = Model(
        path=path,
        backend=name,
        backend_version=version,
        threads=n_threads,
        labels=load_labels(Path(labels) if labels else None, buf, md, n_out, path),
        metadata=md,
        digest=digest,
        resize=resize,
        xnnpack=xnnpack,
        partitions=delegate_partitions(interp),
        interpreter=interp,
    )
    model.invoke()  # a model whose invoke fails is refused now, not on the first frame
    log.debug(
        "model %s: backend %s %s, %d threads, XNNPACK: %s partition%s",
        model.name, human, version, n_threads, model.partitions,
        "" if model.partitions == 1 else "s",
    )
    if xnnpack and model.partitions == 0 and _is_quantized(interp):
        log.warning(XNNPACK_WARNING.format(backend=human, version=version))
    return model


def load_configured(model_cfg) -> Model:
    """The model a config's `model:` section names: a file, or a name in the model dir."""
    path = model_cfg.path
    return load_model(
        catalog.resolve(path),
        labels=model_cfg.labels or catalog.labels_for(path),
        backend=model_cfg.backend,
        threads=model_cfg.threads,
        resize=model_cfg.resize,
        xnnpack=model_cfg.xnnpack,
    )


def model_file_changed(model_cfg, model: Model) -> bool:
    """Whether the file `model_cfg` names, the one `model` was loaded from, now holds another
    model (e.g. `edge train` wrote a new one under the same name): a reload then loads it."""
    try:
        same_file = catalog.resolve(model_cfg.path).resolve() == model.path.resolve()
    except (OSError, EdgeError):
        return False  # the reload's own load reports a missing model
    return same_file and catalog.file_changed(model_cfg.path, model.digest)


def model_line(model: Model) -> str:
    """One line saying what runs: model, input, backend, XNNPACK partitions, threads."""
    info = model.info
    parts = info["xnnpack_partitions"]
    xnn = "off" if not model.xnnpack else f"{parts} partition{'' if parts == 1 else 's'}"
    return (
        f"model {info['model']} ({info['input']['shape'][2]}x{info['input']['shape'][1]} "
        f"{info['input']['dtype']}), backend {info['backend']} {info['backend_version']}, "
        f"XNNPACK: {xnn}, {info['threads']} thread{'' if info['threads'] == 1 else 's'}"
    )
