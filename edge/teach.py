"""Teach from the web page: the collect output's frames -> labels -> `edge train` -> deploy.

The dataset is the folder of the running config's first `collect` output in `interval` mode:
`DIR/unlabelled/` (what the camera saw) and one folder per class beside it, the layout `edge
train` reads. The page only moves files inside that folder (one rename each, directories
fsynced), so labels survive restarts and a script or a shell can do the same. Training is a
child process (`python -m edge train`) at the lowest CPU priority (nice 19 and SCHED_IDLE):
it never holds the frame loop's GIL and only gets the CPU the pipeline leaves. Deploy writes
the model into the model directory, sets `model.path` in the config file `edge run` was
started with and sets the reload event: the ordinary reload path builds and checks it beside
the loop. The previous config and model are kept for one rollback. Nothing here runs on the
frame loop; the handlers run in the web server's bounded pool and hold one lock while they
change files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from edge import config as configmod
from edge.atomic import write_atomic
from edge.errors import EdgeError
from edge.paths import UNLABELLED
from edge.preprocess import crop_box
from edge.sinks.files import MB, jpeg
from edge.train import ENOUGH, IMAGE_SUFFIXES
from edge.yamlbound import compose_and_load

STATE = ".teach"  # inside the dataset (hidden: `edge train` ignores it): job output, rollback
CLASS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")  # also a deployed model's name
MAX_BODY = 64 * 1024
MAX_IDS = 5000  # frames per request
MAX_META = 64 * 1024  # a collect .json read for its scores
MAX_IMAGE_BYTES = 20 * MB
FOLD_BITS = 6  # difference hashes this close (of 64 bits) are near-duplicates: one tile
OUTPUT_LINES = 200  # of the training's output kept
APPLY_TIMEOUT_S = 30.0  # for the reload to take a deployed model
# the training child: lowest priority first, then the ordinary CLI
LOW_PRIORITY = ("import os, sys\n"
                "os.nice(19)\n"
                "try:\n"
                "    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
                "except (AttributeError, OSError):\n"
                "    pass\n"
                "from edge.cli import main\n"
                "sys.exit(main(sys.argv[1:]))\n")
PROGRESS = re.compile(r"^(\w[\w ]*): \[[# ]*\] (\d+)/(\d+)")


class TeachError(Exception):
    """A request that cannot be done: its HTTP status and a one-line reason (nothing changed)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Setup:
    """What the composition root knows and the web page cannot: the config file `edge run`
    was started with, the model directory, and whether --model overrides the file's model."""

    config_path: str | None
    model_dir: Path
    model_flag: str | None = None


@dataclass(frozen=True)
class Reply:
    code: int
    body: bytes
    ctype: str = "application/json"


def reply(data: Any, code: int = 200) -> Reply:
    return Reply(code, json.dumps(data, default=str).encode())


# ---------------------------------------------------------------- names and paths


def check_name(name: Any, what: str = "class") -> str:
    if not isinstance(name, str) or not name:
        raise TeachError(400, f"{what} name: give a non-empty name")
    if name == UNLABELLED:
        raise TeachError(400, f"{what} name {name!r} is reserved (the collect output's folder)")
    if not CLASS_NAME.match(name):
        raise TeachError(400, f"{what} name {name[:60]!r}: use letters, digits, _ and - "
                         "(at most 48, starting with a letter or digit; no paths)")
    return name


def plain_file_name(name: Any) -> str:
    """A file name directly inside a folder: no separators, no `..`, not hidden, an image."""
    if (not isinstance(name, str) or not name or len(name) > 255 or "/" in name
            or "\\" in name or "\0" in name or name.startswith(".")
            or Path(name).suffix.lower() not in IMAGE_SUFFIXES):
        raise TeachError(400, f"frame {str(name)[:80]!r}: not a plain image file name")
    return name


def _is_image(p: Path) -> bool:
    return not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES


def _regular(p: Path) -> bool:
    try:
        return stat.S_ISREG(p.lstat().st_mode)  # a symlink is not followed out of the dataset
    except OSError:
        return False


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def collect_output(cfg):
    """The first `collect` output in interval mode: its params (dir, budget), or None."""
    for name, params in configmod.spec_items(cfg.outputs):
        if name == "collect" and params.mode == "interval":
            return params
    return None


# ---------------------------------------------------------------- ordering


def dhash(gray: np.ndarray) -> int:
    """64-bit difference hash: which of two neighbouring pixels is brighter, on 9x8."""
    small = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def _distances(h: int, others: np.ndarray) -> np.ndarray:
    x = np.bitwise_xor(others, np.uint64(h))
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def top_pairs(top: Any) -> list[list]:
    """A collect .json's `top` ([{label, score}, ...]) as [[label, score], ...]; [] if odd."""
    out = []
    for t in top if isinstance(top, list) else []:
        try:
            out.append([str(t["label"]), float(t["score"])] if isinstance(t, dict)
                       else [str(t[0]), float(t[1])])
        except (KeyError, IndexError, TypeError, ValueError):
            return []
    return out


def uncertainty(top: list[list]) -> float:
    """1 - (top score - second score): 1 when the model could not tell, 0 when sure; 0.5
    when the frame has no scores (no .json beside it)."""
    s = [t[1] for t in top[:2]]
    if not s:
        return 0.5
    margin = s[0] - (s[1] if len(s) > 1 else 0.0)
    return float(min(1.0, max(0.0, 1.0 - margin)))


def order_groups(items: list[dict], fold_bits: int = FOLD_BITS) -> list[dict]:
    """Near-duplicates folded into one group (greedy, most uncertain first as its face), then
    the groups ordered most uncertain and most distinct first: each next group maximises its
    uncertainty plus its distance to the groups already listed (a diversity ranking)."""
    items = sorted(items, key=lambda f: (-f["uncertainty"], f["name"]))
    groups: list[dict] = []
    reps = np.zeros(0, np.uint64)
    for f in items:
        if len(reps):
            d = _distances(f["hash"], reps)
            j = int(d.argmin())
            if d[j] <= fold_bits:
                groups[j]["members"].append(f["id"])
                continue
        groups.append({**{k: v for k, v in f.items() if k != "hash"}, "members": [f["id"]],
                       "_hash": f["hash"]})
        reps = np.append(reps, np.uint64(f["hash"]))
    if not groups:
        return []
    unc = np.array([g["uncertainty"] for g in groups])
    nearest = np.full(len(groups), 64.0)
    left = np.ones(len(groups), bool)
    out = []
    for _ in range(len(groups)):
        score = np.where(left, unc + np.minimum(nearest, 32) / 32, -np.inf)
        j = int(score.argmax())
        left[j] = False
        g = groups[j]
        nearest = np.minimum(nearest, _distances(g.pop("_hash"), reps))
        g["distinct"] = None if not out else round(float(min(score[j] - unc[j], 1.0)), 3)
        out.append(g)
    return out


# ---------------------------------------------------------------- the training child


class TrainJob:
    """One `edge train` child at the lowest priority; its output kept in a bounded buffer,
    its progress parsed from the bars it draws."""

    def __init__(self, argv: list[str], env: dict, cwd: str | None = None) -> None:
        self.argv = argv
        self.lines: deque[str] = deque(maxlen=OUTPUT_LINES)
        self.progress: dict | None = None
        self.started = time.time()
        self.t0 = time.monotonic()
        self.seconds: float | None = None
        self.returncode: int | None = None
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                     start_new_session=True)
        self.reader = threading.Thread(target=self._read, name="teach-train", daemon=True)
        self.reader.start()

    def _line(self, text: str) -> None:
        text = text.rstrip()
        if not text.strip():
            return
        m = PROGRESS.match(text)
        if m:
            self.progress = {"stage": m.group(1), "done": int(m.group(2)),
                             "total": int(m.group(3))}
            if self.lines and PROGRESS.match(self.lines[-1]) and \
                    self.lines[-1].startswith(m.group(1) + ":"):
                self.lines[-1] = text  # a redrawn bar replaces itself
                return
        self.lines.append(text[:500])

    def _read(self) -> None:
        buf = b""
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, 4096):
            buf += chunk
            parts = re.split(rb"[\r\n]", buf)
            buf = parts.pop()[-4096:]
            for p in parts:
                self._line(p.decode("utf-8", "replace"))
        self._line(buf.decode("utf-8", "replace"))
        self.returncode = self.proc.wait()
        self.seconds = time.monotonic() - self.t0

    @property
    def running(self) -> bool:
        return self.returncode is None

    def error(self) -> str | None:
        if self.returncode in (None, 0):
            return None
        errs = [ln for ln in self.lines if ln.startswith("edge: error:")]
        return errs[-1] if errs else (self.lines[-1] if self.lines else
                                      f"exit {self.returncode}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# ---------------------------------------------------------------- the teach state


class Teach:
    """The Teach view's API over the running pipeline's dataset. Reads the pipeline only
    through `pipe.view` (and sets `pipe.reload_event`, as SIGHUP does)."""

    def __init__(self, pipe, setup: Setup) -> None:
        self.pipe, self.setup = pipe, setup
        self.lock = threading.Lock()  # every change of files, one at a time
        self.job: TrainJob | None = None
        self.job_meta: dict = {}
        self._hashes: dict[tuple, tuple[int, dict]] = {}

    # ------------------------------------------------------------ where things are
    def params(self):
        p = collect_output(self.pipe.view.cfg)
        if p is None:
            raise TeachError(409, "the running config has no `collect` output in interval "
                             "mode, so there is no dataset to teach from: add `- collect: "
                             "{mode: interval, dir: DIR}` to outputs (docs/train.md)")
        return p

    def root(self) -> Path:
        return Path(self.params().dir).expanduser().resolve()

    def state_dir(self) -> Path:
        d = self.root() / STATE
        d.mkdir(exist_ok=True)
        return d

    def classes(self, root: Path) -> list[str]:
        try:
            entries = list(root.iterdir())
        except OSError:
            return []
        return sorted(d.name for d in entries if not d.name.startswith(".")
                      and d.name != UNLABELLED and not d.is_symlink() and d.is_dir())

    def folder(self, root: Path, name: Any) -> Path:
        """`unlabelled` or an existing class folder (404 for an unknown class)."""
        if name != UNLABELLED:
            check_name(name)
        p = root / name
        if p.is_symlink() or not p.is_dir():
            if name == UNLABELLED:
                p.mkdir(exist_ok=True)
                return p
            raise TeachError(404, f"no class {name!r} (classes: "
                             f"{', '.join(self.classes(root)) or 'none yet'})")
        return p

    def frame_path(self, root: Path, frame_id: Any) -> Path:
        """`FOLDER/NAME` -> the file, only directly inside a folder of the dataset."""
        if not isinstance(frame_id, str) or frame_id.count("/") != 1:
            raise TeachError(400, f"frame id {str(frame_id)[:80]!r}: give FOLDER/NAME.jpg")
        folder, name = frame_id.split("/")
        d = self.folder(root, folder)
        p = d / plain_file_name(name)
        if not _regular(p) or p.resolve().parent != d.resolve():
            raise TeachError(404, f"no frame {frame_id!r}")
        return p

    @staticmethod
    def images(d: Path) -> list[Path]:
        try:
            return sorted(p for p in d.iterdir() if _is_image(p) and _regular(p))
        except OSError:
            return []

    def regions(self) -> list[dict]:
        cfg = self.pipe.view.cfg
        return [{"name": r.name, "box": list(r.box)} for r in cfg.rois] or [
            {"name": None, "box": None}]

    def box(self, region: Any):
        if region in (None, ""):
            return None
        for r in self.pipe.view.cfg.rois:
            if r.name == region:
                return tuple(r.box)
        names = ", ".join(r.name for r in self.pipe.view.cfg.rois) or "none: the whole frame"
        raise TeachError(404, f"no region {str(region)[:60]!r} in the running config "
                         f"(regions: {names})")

    def aspect(self) -> float | None:
        """The model's input aspect when it crops to it (model.resize: crop)."""
        view = self.pipe.view
        if view.cfg.model.resize != "crop":
            return None
        shape = view.model.get("input", {}).get("shape") or [1, 1, 1, 3]
        return shape[2] / shape[1]

    # ------------------------------------------------------------ reading
    def overview(self) -> dict:
        p = self.params()
        root = self.root()
        report = self._report()
        advice = {c["name"]: c for c in (report or {}).get("classes", [])}
        classes = []
        for name in self.classes(root):
            n = len(self.images(root / name))
            r = advice.get(name)
            if r is not None and r["images"] == n:
                enough, tip = r["enough"], r["advice"]
            else:  # not trained with this count yet: the report's first rule
                enough = n >= ENOUGH
                tip = None if enough else (f"{name}: only {n} image{'s' * (n != 1)}; about "
                                           f"{ENOUGH - n} more would help")
            classes.append({"name": name, "count": n, "enough": enough, "advice": tip})
        unl = root / UNLABELLED
        rb = self._rollback_meta()
        return {
            "dataset": str(root),
            "unlabelled": len(self.images(unl)) if unl.is_dir() else 0,
            "classes": classes,
            "enough": ENOUGH,
            "regions": self.regions(),
            "budget": {"max_mb": p.max_mb, "max_files": p.max_files},
            "config_path": self.setup.config_path,
            "model_dir": str(self.setup.model_dir),
            "model": self.pipe.view.model.get("model"),
            "per_region_models": True,  # a deploy may set one region's model
            "deploy_possible": self._deploy_blocker() is None,
            "deploy_blocker": self._deploy_blocker(),
            "rollback": rb and {"model": rb.get("previous_model"), "at": rb.get("at")},
            "train": self.train_status(),
        }

    def _meta(self, p: Path) -> dict:
        j = p.with_suffix(".json")
        try:
            if j.stat().st_size <= MAX_META and _regular(j):
                d = json.loads(j.read_bytes())
                return d if isinstance(d, dict) else {}
        except (OSError, ValueError):
            pass
        return {}

    def _info(self, folder: str, p: Path, box) -> dict | None:
        """A frame's id, region, scores and difference hash (cached by name, size, mtime)."""
        try:
            st = p.stat()
        except OSError:
            return None
        key = (str(p), st.st_mtime_ns, st.st_size, box)
        got = self._hashes.get(key)
        if got is None:
            gray = None
            if st.st_size <= MAX_IMAGE_BYTES:
                gray = cv2.imread(str(p), cv2.IMREAD_REDUCED_GRAYSCALE_4)
            if gray is None:
                return None
            ys, xs = crop_box(gray.shape, box, self.aspect())
            meta = self._meta(p)
            got = (dhash(gray[ys, xs]), {"roi": meta.get("roi"),
                                         "top": top_pairs(meta.get("top"))})
            self._hashes[key] = got
        h, meta = got
        return {"id": f"{folder}/{p.name}", "name": p.name, "roi": meta["roi"],
                "top": meta["top"][:3], "uncertainty": uncertainty(meta["top"]), "hash": h}

    def frames(self, folder: str, region, limit: int) -> dict:
        root = self.root()
        d = self.folder(root, folder)
        box = self.box(region)
        paths = self.images(d)
        items = []
        for p in paths:
            f = self._info(folder, p, box)
            if f is None:
                continue
            if folder == UNLABELLED and region not in (None, "") and f["roi"] not in (None,
                                                                                       region):
                continue  # saved for another region
            items.append(f)
        live = {(str(p)) for p in paths}
        if len(self._hashes) > 4 * max(len(live), 1000):  # bounded: drop files gone
            self._hashes = {k: v for k, v in self._hashes.items() if k[0] in live}
        # in a class every photo is its own tile
        groups = order_groups(items, fold_bits=FOLD_BITS if folder == UNLABELLED else -1)
        return {"folder": folder, "region": region, "total": len(items),
                "groups": groups[:limit], "shown": min(limit, len(groups)),
                "group_count": len(groups)}

    def image(self, frame_id: str, region, size: int) -> Reply:
        root = self.root()
        p = self.frame_path(root, frame_id)
        box = self.box(region)
        if p.stat().st_size > MAX_IMAGE_BYTES:
            raise TeachError(413, f"{frame_id}: larger than {MAX_IMAGE_BYTES // MB} MB")
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            raise TeachError(415, f"{frame_id}: not a readable image")
        ys, xs = crop_box(bgr.shape, box, self.aspect())
        crop = bgr[ys, xs]
        h, w = crop.shape[:2]
        scale = size / max(h, w)
        if scale < 1:
            crop = cv2.resize(crop, (max(1, round(w * scale)), max(1, round(h * scale))),
                              interpolation=cv2.INTER_AREA)
        return Reply(200, jpeg(crop, 85), "image/jpeg")

    # ------------------------------------------------------------ changing labels
    def _room(self, root: Path, adding: list[Path]) -> None:
        """Moving frames back into `unlabelled` keeps the collect output's disk budget."""
        p = self.params()
        unl = root / UNLABELLED
        have = [q for q in self.images(unl) if q.suffix == ".jpg"]
        size = 0
        for q in [*have, *adding]:
            for f in (q, q.with_suffix(".json")):
                try:
                    size += f.stat().st_size
                except OSError:
                    pass
        n = len(have) + sum(q.suffix == ".jpg" for q in adding)
        if (p.max_files and n > p.max_files) or size > p.max_mb * MB:
            raise TeachError(409, f"no room in {UNLABELLED}: {len(adding)} more frames would "
                             f"exceed the collect output's disk budget (max_files "
                             f"{p.max_files}, max_mb {p.max_mb:g}); delete some first")

    def _ids(self, root: Path, ids: Any) -> list[Path]:
        if not isinstance(ids, list) or not ids:
            raise TeachError(400, "ids: give a non-empty list of frame ids (FOLDER/NAME.jpg)")
        if len(ids) > MAX_IDS:
            raise TeachError(413, f"ids: at most {MAX_IDS} frames per request")
        paths = [self.frame_path(root, i) for i in ids]
        if len(set(paths)) != len(paths):
            raise TeachError(400, "ids: a frame is named twice")
        return paths

    def move(self, ids: Any, to: Any) -> dict:
        with self.lock:
            root = self.root()
            if not isinstance(to, str):
                raise TeachError(400, "to: give a class name or unlabelled")
            dest = self.folder(root, to)
            paths = self._ids(root, ids)
            moving = [p for p in paths if p.parent != dest]
            if to == UNLABELLED:
                self._room(root, moving)
            moved = []
            for p in moving:
                target = dest / p.name
                i = 1
                while target.exists() or target.with_suffix(".json").exists():
                    target = dest / f"{p.stem}_{i}{p.suffix}"
                    i += 1
                os.rename(p, target)
                j = p.with_suffix(".json")
                if _regular(j):
                    os.rename(j, target.with_suffix(".json"))
                moved.append({"from": f"{p.parent.name}/{p.name}", "to": f"{to}/{target.name}"})
            for d in {dest, *(p.parent for p in moving)}:
                _fsync_dir(d)
            return {"moved": moved}

    def delete(self, ids: Any) -> dict:
        with self.lock:
            root = self.root()
            paths = self._ids(root, ids)
            for p in paths:
                p.unlink(missing_ok=True)
                j = p.with_suffix(".json")
                if _regular(j):
                    j.unlink()
            for d in {p.parent for p in paths}:
                _fsync_dir(d)
            return {"deleted": len(paths)}

    def create_class(self, name: Any) -> dict:
        with self.lock:
            root = self.root()
            name = check_name(name)
            d = root / name
            if d.exists() or d.is_symlink():
                raise TeachError(409, f"class {name!r} exists")
            d.mkdir(parents=True)  # the dataset too, before the collect output's first frame
            _fsync_dir(root)
            return {"created": name}

    def rename_class(self, name: Any, to: Any) -> dict:
        with self.lock:
            root = self.root()
            src = self.folder(root, check_name(name))
            new = root / check_name(to, "new class")
            if new.exists() or new.is_symlink():
                raise TeachError(409, f"class {to!r} exists")
            os.rename(src, new)
            _fsync_dir(root)
            return {"renamed": name, "to": to}

    def delete_class(self, name: Any) -> dict:
        """Its frames go back to `unlabelled` (nothing is lost by a click), then the folder."""
        with self.lock:
            root = self.root()
            src = self.folder(root, check_name(name))
            frames = self.images(src)
            others = [p.name for p in src.iterdir() if not _is_image(p)
                      and not (p.suffix == ".json" and p.with_suffix(".jpg").exists())
                      and p.suffix != ".json"]
            if others:
                raise TeachError(409, f"class {name!r} holds other files ({', '.join(others[:3])}"
                                 "): remove them by hand")
            self._room(root, frames)
            unl = self.folder(root, UNLABELLED)
            for p in frames:
                target = unl / p.name
                i = 1
                while target.exists():
                    target = unl / f"{p.stem}_{i}{p.suffix}"
                    i += 1
                os.rename(p, target)
                if _regular(p.with_suffix(".json")):
                    os.rename(p.with_suffix(".json"), target.with_suffix(".json"))
            for j in src.glob("*.json"):  # companions whose image was gone already
                j.unlink()
            src.rmdir()
            _fsync_dir(unl)
            _fsync_dir(root)
            return {"deleted": name, "unlabelled": len(frames)}

    # ------------------------------------------------------------ training
    def _state(self) -> dict:
        try:
            d = json.loads((self.root() / STATE / "state.json").read_text())
            return d if isinstance(d, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save_state(self, **kw) -> None:
        state = {**self._state(), **kw}
        write_atomic(self.state_dir() / "state.json", json.dumps(state, indent=1).encode())

    def base_model(self, asked: Any) -> str:
        """The base to train on: asked (a catalog name), the last one used, the running model
        when it is a stock one, else the catalog default."""
        from edge import catalog

        if asked not in (None, ""):
            if asked not in catalog.CATALOG:
                raise TeachError(400, f"base {str(asked)[:60]!r}: give a catalog name "
                                 f"({', '.join(catalog.CATALOG)})")
            return catalog.resolve(asked).as_posix()
        last = self._state().get("base")
        if last and Path(last).is_file():
            return last
        path = self.pipe.view.model.get("path")
        if path and Path(path).is_file() and not is_custom(Path(path)):
            return path
        return catalog.resolve(catalog.DEFAULT_MODEL).as_posix()

    def train(self, body: dict) -> dict:
        with self.lock:
            if self.job is not None and self.job.running:
                raise TeachError(409, "a training is running already (one at a time)")
            root = self.root()
            classes = [c for c in self.classes(root) if self.images(root / c)]
            if len(classes) < 2:
                raise TeachError(409, "training needs at least two classes with frames "
                                 f"(have: {', '.join(classes) or 'none'})")
            region = body.get("region")
            box = self.box(region)
            base = self.base_model(body.get("base"))
            state = self.state_dir()
            out, report = state / "candidate.tflite", state / "report.json"
            report.unlink(missing_ok=True)
            argv = [sys.executable, "-c", LOW_PRIORITY, "train", str(root), "-o", str(out),
                    "--force", "--base", base, "--threads", "1",
                    "--resize", self.pipe.view.cfg.model.resize, "--report", str(report)]
            if box:
                argv += ["--roi", ",".join(f"{v:g}" for v in box)]
            env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                   "PYTHONUNBUFFERED": "1"}
            src = str(Path(__file__).resolve().parents[1])  # the same edge package
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
            self._save_state(base=base, region=region)
            self.job = TrainJob(argv, env)
            self.job_meta = {"region": region, "base": Path(base).name, "classes": classes}
            return self.train_status()

    def train_status(self) -> dict:
        job = self.job
        if job is None:
            return {"state": "idle"}
        if job.running:
            state = "running"
        else:
            state = "done" if job.returncode == 0 and self._report() else "failed"
        return {"state": state, **self.job_meta, "progress": job.progress,
                "started": job.started,
                "seconds": round(job.seconds if job.seconds is not None
                                 else time.monotonic() - job.t0, 1),
                "error": job.error(), "output": list(job.lines)[-30:]}

    def _report(self) -> dict | None:
        try:
            p = self.params()
            d = json.loads((Path(p.dir).expanduser() / STATE / "report.json").read_text())
            return d if isinstance(d, dict) else None
        except (OSError, ValueError, TeachError):
            return None

    def results(self) -> dict:
        r = self._report()
        if r is None:
            raise TeachError(404, "no training results yet: train first")
        root = self.root()
        for w in r.get("wrong", []):
            w["exists"] = (root / w["path"]).is_file()
            w["id"] = w["path"]
        return r

    def stop(self) -> None:
        if self.job is not None:
            self.job.stop()

    # ------------------------------------------------------------ deploy and rollback
    def _deploy_blocker(self) -> str | None:
        if not self.setup.config_path:
            return ("edge run was started without a config file (all defaults): there is no "
                    "file to deploy into; start it with --config FILE")
        if self.setup.model_flag:
            return (f"edge run was started with --model {self.setup.model_flag}, which "
                    "overrides the config's model on every reload: restart without --model "
                    "to deploy from the page")
        return None

    def _rollback_meta(self) -> dict | None:
        try:
            p = self.params()
            d = json.loads((Path(p.dir).expanduser() / STATE / "rollback" /
                            "meta.json").read_text())
            return d if isinstance(d, dict) else None
        except (OSError, ValueError, TeachError):
            return None

    def _running_digest(self, region: str | None) -> str | None:
        """sha256 of the model the whole frame (region None) or a region runs now."""
        view = self.pipe.view
        if region is None:
            return view.model.get("digest")
        return next((r.model_digest for r in view.regions if r.name == region), None)

    def _wait_applied(self, digest: str, region: str | None = None,
                      timeout: float = APPLY_TIMEOUT_S) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._running_digest(region) == digest:
                return True
            if self.pipe.stop_event.is_set():
                return False
            time.sleep(0.1)
        return False

    def deploy(self, body: dict) -> dict:
        with self.lock:
            if (blocker := self._deploy_blocker()) is not None:
                raise TeachError(409, blocker)
            region = body.get("region") or None
            if region is not None:
                self.box(region)  # a region of the running config (404 otherwise)
            name = check_name(body.get("name"), "model")
            if self.job is not None and self.job.running:
                raise TeachError(409, "a training is running: wait for it to finish")
            state = self.state_dir()
            cand = state / "candidate.tflite"
            if not cand.is_file() or self._report() is None:
                raise TeachError(409, "nothing to deploy: train first")
            cfg_path = Path(self.setup.config_path)
            try:
                old_cfg = cfg_path.read_bytes()
                mode = stat.S_IMODE(cfg_path.stat().st_mode)
                new_cfg = with_model_path(old_cfg.decode("utf-8"), name, str(cfg_path), region)
            except OSError as e:
                raise TeachError(409, f"{cfg_path}: cannot read the config ({e.strerror})") \
                    from None
            except EdgeError as e:
                raise TeachError(409, str(e)) from None
            mdir = self.setup.model_dir
            target = mdir / f"{name}.tflite"
            data = cand.read_bytes()
            rb = state / "rollback"
            rb.mkdir(exist_ok=True)
            meta = {"at": time.time(), "config_path": str(cfg_path), "mode": mode,
                    "model_path": str(target), "model_existed": target.is_file(),
                    "previous_model": self.pipe.view.cfg.model.path, "name": name,
                    "region": region, "digest": hashlib.sha256(data).hexdigest()}
            try:
                mdir.mkdir(parents=True, exist_ok=True)
                write_atomic(rb / "config.yaml", old_cfg, fsync=True, mode=0o600)
                if target.is_file():
                    write_atomic(rb / "model.tflite", target.read_bytes(), fsync=True)
                write_atomic(rb / "meta.json", json.dumps(meta, indent=1).encode(), fsync=True)
                write_atomic(target, data, fsync=True)
                write_atomic(cfg_path, new_cfg.encode(), fsync=True, mode=mode)
            except OSError as e:
                raise TeachError(500, f"cannot write {e.filename or 'a file'} "
                                 f"({e.strerror or e}): the running config is unchanged") \
                    from None
            digest = hashlib.sha256(data).hexdigest()
            self.pipe.reload_event.set()
            if not self._wait_applied(digest, region):
                self._restore(meta, rb)
                raise TeachError(409, "the reload did not take the new model (see the log: "
                                 "`reload rejected`, e.g. a label the chain names that the new "
                                 "classes lack); the previous config and model were restored")
            self._save_state(name=name)
            return {"deployed": name, "region": region, "model_path": str(target),
                    "config_path": str(cfg_path), "labels": self.pipe.view.labels}

    def _restore(self, meta: dict, rb: Path) -> None:
        cfg = Path(meta["config_path"])
        write_atomic(cfg, (rb / "config.yaml").read_bytes(), fsync=True, mode=meta["mode"])
        if meta["model_existed"] and (rb / "model.tflite").is_file():
            write_atomic(meta["model_path"], (rb / "model.tflite").read_bytes(), fsync=True)
        self.pipe.reload_event.set()

    def rollback(self) -> dict:
        with self.lock:
            meta = self._rollback_meta()
            if meta is None:
                raise TeachError(409, "nothing to roll back: no deploy from this page yet")
            if (blocker := self._deploy_blocker()) is not None:
                raise TeachError(409, blocker)
            rb = self.state_dir() / "rollback"
            try:
                self._restore(meta, rb)
            except OSError as e:
                raise TeachError(500, f"cannot restore ({e.strerror or e})") from None
            deadline = time.monotonic() + APPLY_TIMEOUT_S

            def applied() -> bool:  # the deployed model no longer runs where it was put
                return self._running_digest(meta.get("region")) != meta.get("digest")

            while time.monotonic() < deadline and not applied():
                time.sleep(0.1)
            applied = applied()
            shutil.rmtree(rb, ignore_errors=True)
            return {"rolled_back": True, "model": meta["previous_model"], "applied": applied}

    # ------------------------------------------------------------ HTTP
    def handle(self, method: str, path: str, query: dict, body: bytes | None) -> Reply:
        """One /api/teach request -> its reply; every refusal is JSON {"error": ...}."""
        try:
            route = ROUTES.get((method, path))
            if route is None:
                other = "POST" if method == "GET" else "GET"
                if (other, path) in ROUTES:
                    return reply({"error": f"{path}: use {other}"}, 405)
                return reply({"error": f"not found: {path}"}, 404)
            data: dict = {}
            if body is not None:
                try:
                    data = json.loads(body or b"{}")
                except ValueError:
                    raise TeachError(400, "the body is not JSON") from None
                if not isinstance(data, dict):
                    raise TeachError(400, "the body must be a JSON object")
            got = route(self, {k: v[0] for k, v in query.items()}, data)
            return got if isinstance(got, Reply) else reply(got)
        except TeachError as e:
            return reply({"error": str(e)}, e.code)
        except OSError as e:  # e.g. a frame the collect output pruned meanwhile
            return reply({"error": f"{e.strerror or e}: {Path(e.filename or '').name}"}, 409)


def _int(q: dict, key: str, default: int, lo: int, hi: int) -> int:
    try:
        v = int(q.get(key, default))
    except ValueError:
        raise TeachError(400, f"{key}: give an integer") from None
    return min(hi, max(lo, v))


ROUTES = {
    ("GET", "/api/teach"): lambda t, q, b: t.overview(),
    ("GET", "/api/teach/frames"): lambda t, q, b: t.frames(
        q.get("folder", UNLABELLED), q.get("region") or None, _int(q, "limit", 300, 1, 5000)),
    ("GET", "/api/teach/image"): lambda t, q, b: t.image(
        q.get("id"), q.get("region") or None, _int(q, "size", 192, 16, 640)),
    ("GET", "/api/teach/train"): lambda t, q, b: t.train_status(),
    ("GET", "/api/teach/results"): lambda t, q, b: t.results(),
    ("POST", "/api/teach/class"): lambda t, q, b: t.create_class(b.get("name")),
    ("POST", "/api/teach/class/rename"): lambda t, q, b: t.rename_class(b.get("name"),
                                                                        b.get("to")),
    ("POST", "/api/teach/class/delete"): lambda t, q, b: t.delete_class(b.get("name")),
    ("POST", "/api/teach/move"): lambda t, q, b: t.move(b.get("ids"), b.get("to")),
    ("POST", "/api/teach/delete"): lambda t, q, b: t.delete(b.get("ids")),
    ("POST", "/api/teach/train"): lambda t, q, b: t.train(b),
    ("POST", "/api/teach/deploy"): lambda t, q, b: t.deploy(b),
    ("POST", "/api/teach/rollback"): lambda t, q, b: t.rollback(),
}


# ---------------------------------------------------------------- config and models


def is_custom(path: Path) -> bool:
    """A model `edge train` wrote (it carries its training record): not a base to train on."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 65536))
            return b"edge_training.json" in f.read()
    except OSError:
        return False


def with_model_path(text: str, name: str, where: str, region: str | None = None) -> str:
    """The config text with `model.path: NAME` (or, for a region, that region's `model:`),
    checked as a config (the YAML is written again: its comments are not kept; the previous
    file is kept for the rollback)."""
    _, data = compose_and_load(text, where)
    data = data or {}
    if not isinstance(data, dict):
        raise EdgeError(f"{where}: the top level is not a mapping")
    if region is not None:
        rois = data.get("rois") or []
        roi = next((r for r in rois if isinstance(r, dict) and r.get("name") == region), None)
        if roi is None:
            raise EdgeError(f"{where}: no region {region!r} under rois:")
        own = roi.get("model")
        roi["model"] = {**own, "path": name} if isinstance(own, dict) else name
    else:
        model = data.get("model") or {}
        if not isinstance(model, dict):
            raise EdgeError(f"{where}: model: is not a mapping")
        data["model"] = {**model, "path": name}
    out = ("# written by the web page's Teach view (Deploy); the previous file is kept for "
           "Rollback\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    configmod.parse(out, where)  # a file the next start would refuse is never written
    return out
