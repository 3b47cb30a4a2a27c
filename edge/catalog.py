"""Known models with pinned URLs and digests, and where models live on this machine.

`edge models fetch` downloads with a progress bar, verifies the sha256 and writes atomically
(temp file + rename), so a power cut never leaves a half model under the final name.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from edge.errors import EdgeError
from edge.metadata import training_record

_CORAL = "https://github.com/google-coral/test_data/raw/104342d2d3480b3e66203073dac24f4e2dbb4c41/"


@dataclass(frozen=True)
class KnownModel:
    name: str
    file: str
    sha256: str
    description: str
    labels: str | None = None  # a separate labels file (name in the same folder), if needed
    labels_sha256: str | None = None

    @property
    def url(self) -> str:
        return _CORAL + self.file


CATALOG = {
    m.name: m
    for m in (
        KnownModel(
            "mobilenet_v2_int8",
            "tf2_mobilenet_v2_1.0_224_ptq.tflite",
            "5d3137241276e79c86d14a74fe43581398ae0e815191d3dba45495b810840e8c",
            "MobileNetV2 1.0 224, int8 post-training quantized, ImageNet (default)",
        ),
        KnownModel(
            "mobilenet_v2_quant",
            "mobilenet_v2_1.0_224_quant.tflite",
            "7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776",
            "MobileNetV2 1.0 224, uint8 quantization-aware trained, ImageNet",
        ),
        KnownModel(
            "mobilenet_v1_tiny",
            "mobilenet_v1_0.25_128_quant.tflite",
            "cb273c23ee76374b05b9583177e28aa19744858a7679c56a250e83d0333da785",
            "MobileNetV1 0.25 128, uint8, ImageNet: tiny and fast, less accurate",
        ),
        KnownModel(
            "inat_bird",
            "mobilenet_v2_1.0_224_inat_bird_quant.tflite",
            "350fcd8cf1df1560060d464595dfed8b174b05792788052896004848d9ad04f9",
            "MobileNetV2 1.0 224, uint8, iNaturalist birds (965 species): the bird feeder",
            labels="inat_bird_labels.txt",
            labels_sha256="a16108dfe3f8daff015b87a97ab6a17e717b9b1bccd719f6d8f747746d7b9277",
        ),
    )
}
DEFAULT_MODEL = "mobilenet_v2_int8"


def model_dir() -> Path:
    """EDGE_MODEL_DIR, else the service's state dir, else /var/lib/edge/models if writable,
    else the user's data dir."""
    if env := os.environ.get("EDGE_MODEL_DIR"):
        return Path(env)
    if state := os.environ.get("STATE_DIRECTORY"):
        return Path(state.split(":")[0]) / "models"
    system = Path("/var/lib/edge/models")
    if system.is_dir() and os.access(system, os.W_OK | os.R_OK):
        return system
    if system.is_dir() and not os.access(system, os.W_OK) and os.access(system, os.R_OK):
        return system
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "edge" / "models"


def resolve(name_or_path: str) -> Path:
    """A config's model.path: an existing file, or a catalog name/file in the model dir."""
    p = Path(name_or_path).expanduser()
    if p.exists() or "/" in name_or_path:
        return p
    known = CATALOG.get(name_or_path)
    candidate = model_dir() / (known.file if known else name_or_path)
    if not known and not candidate.exists() and (model_dir() / f"{name_or_path}.tflite").exists():
        candidate = model_dir() / f"{name_or_path}.tflite"  # a custom model (edge train) by name
    if not candidate.exists() and known:
        raise EdgeError(
            f"model {name_or_path!r} is not installed in {model_dir()}: "
            f"run `edge models fetch {name_or_path}`"
        )
    return candidate


def labels_for(name_or_path: str) -> Path | None:
    """The separate labels file a catalog model needs, if it is installed beside it."""
    known = CATALOG.get(name_or_path) or next(
        (m for m in CATALOG.values() if m.file == Path(name_or_path).name), None
    )
    if known and known.labels:
        p = resolve(name_or_path).parent / known.labels
        return p if p.exists() else None
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_changed(name_or_path: str, digest: str) -> bool:
    """Whether the model a config names is no longer the file with this sha256 (e.g. `edge
    train` wrote a new one under the same name): a reload then loads it again."""
    try:
        return _sha256(resolve(name_or_path)) != digest
    except (OSError, EdgeError):
        return False  # the reload's own load reports a missing model


def _progress(done: int, total: int | None, name: str) -> None:
    if not sys.stderr.isatty() and total and done < total:
        return
    if total:
        bar = "#" * int(30 * done / total)
        sys.stderr.write(f"\r{name}: [{bar:<30}] {done / 1e6:5.1f}/{total / 1e6:.1f} MB")
    else:
        sys.stderr.write(f"\r{name}: {done / 1e6:5.1f} MB")
    if total and done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _install(src_open, file: str, sha256: str, dest_dir: Path, total: int | None = None) -> Path:
    """Stream into a temp file in dest_dir, verify the digest, then rename into place."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / file
    if final.exists() and _sha256(final) == sha256:
        return final
    fd, tmp = tempfile.mkstemp(prefix=f".{file}.", dir=dest_dir)
    h = hashlib.sha256()
    done = 0
    try:
        with os.fdopen(fd, "wb") as out, src_open() as src:
            while chunk := src.read(1 << 16):
                out.write(chunk)
                h.update(chunk)
                done += len(chunk)
                _progress(done, total, file)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != sha256:
            raise EdgeError(
                f"{file}: sha256 {h.hexdigest()} does not match the pinned {sha256}; "
                "the download is corrupt or the source changed (nothing was installed)"
            )
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return final


def fetch(name: str, source_dir: Path | None = None, dest_dir: Path | None = None) -> Path:
    """Install a catalog model (and its labels) from its URL or a local mirror folder."""
    if name not in CATALOG:
        raise EdgeError(f"unknown model {name!r}: known models are {', '.join(CATALOG)}")
    m = CATALOG[name]
    dest = dest_dir or model_dir()
    files = [(m.file, m.sha256)] + ([(m.labels, m.labels_sha256)] if m.labels else [])
    path = None
    for file, digest in files:
        if source_dir is not None:
            src = Path(source_dir) / file
            if not src.exists():
                raise EdgeError(f"{src}: not found in the mirror folder {source_dir}")
            got = _install(lambda s=src: open(s, "rb"), file, digest, dest, src.stat().st_size)
        else:
            try:
                resp = urllib.request.urlopen(_CORAL + file, timeout=30)  # noqa: S310
            except OSError as e:
                raise EdgeError(
                    f"cannot download {file} ({e}); on an offline machine use "
                    "`edge models fetch NAME --from DIR` with a folder holding the file"
                ) from None
            total = int(resp.headers.get("Content-Length") or 0) or None
            got = _install(lambda r=resp: r, file, digest, dest, total)
        path = path or got
    return path


def custom_models() -> list[tuple[Path, dict]]:
    """Models `edge train` wrote into the model dir, with their embedded training records."""
    found = []
    known = {m.file for m in CATALOG.values()}
    folder = model_dir()
    for p in sorted(folder.glob("*.tflite")) if folder.is_dir() else []:
        if p.name in known:
            continue
        try:
            record = training_record(p.read_bytes())
        except OSError:
            continue
        if record is not None:
            found.append((p, record))
    return found


def installed(name: str) -> Path | None:
    p = model_dir() / CATALOG[name].file
    return p if p.exists() else None


