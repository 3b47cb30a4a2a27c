"""Known models with pinned URLs and digests, and where models live on this machine.

`edge models fetch` downloads with a progress bar, verifies the sha256 and writes atomically
(temp file + rename), so a power cut never leaves a half model under the final name.
"""

from __future__ import annotations

import difflib
import hashlib
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from edge.atomic import replacing
from edge.errors import EdgeError
from edge.metadata import training_record
from edge.paths import model_dir

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
            "MobileNetV2 1.0 224, int8 post-training quantized, ImageNet",
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
        KnownModel(
            "deeplabv3_mnv2",
            "deeplabv3_mnv2_pascal_quant.tflite",
            "350af47fd346ea6d74b58833a351f583ba860e9806ec5bd292ff8d8f1f249398",
            "DeepLabV3 MobileNetV2 1.0 513, uint8, Pascal VOC segmentation (21 classes)",
            labels="pascal_voc_segmentation_labels.txt",
            labels_sha256="7337a2b06728385fb3e1106416c67bfddf69628598b1f2f0db6a63cd63fb6b1e",
        ),
        KnownModel(
            "deeplabv3_mnv2_dm05",
            "deeplabv3_mnv2_dm05_pascal_quant.tflite",
            "0470d2a782aa54eeeb99d32e7b6b3fb7722905c7c4f5d26bd957ec861366d48b",
            "DeepLabV3 MobileNetV2 0.5 513, uint8, Pascal VOC segmentation: ~3x cheaper",
            labels="pascal_voc_segmentation_labels.txt",
            labels_sha256="7337a2b06728385fb3e1106416c67bfddf69628598b1f2f0db6a63cd63fb6b1e",
        ),
    )
}
DEFAULT_MODEL = "mobilenet_v2_int8"


def resolve(name_or_path: str) -> Path:
    """A config's model.path (or --model): a file path, or a name in the model directory (a
    catalog name, or a file there with or without .tflite). Every command says the same when
    it names nothing: what was looked for, and the nearest names."""
    p = Path(name_or_path).expanduser()
    if p.exists() or "/" in name_or_path:
        return p
    known = CATALOG.get(name_or_path)
    here = model_dir()
    if known:
        candidate = here / known.file
        if not candidate.exists():
            raise EdgeError(
                f"model {name_or_path!r} is not installed in {here}: "
                f"run `edge models fetch {name_or_path}`"
            )
        return candidate
    for candidate in (here / name_or_path, here / f"{name_or_path}.tflite"):
        if candidate.is_file():
            return candidate
    names = list(CATALOG)
    if here.is_dir():
        names += sorted(f.stem for f in here.glob("*.tflite"))
    close = difflib.get_close_matches(name_or_path, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise EdgeError(
        f"model {name_or_path!r}: no such file, and no model of that name in {here} "
        f"({hint}known: {', '.join(dict.fromkeys(names))}; `edge models list` shows them)"
    )


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


def _install(src, file: str, sha256: str, final: Path, total: int | None = None) -> Path:
    """Stream `src` into a temp file beside `final`, verify the digest, then rename."""
    final.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    done = 0
    with replacing(final, fsync=True) as tmp, open(tmp, "wb") as out:
        while chunk := src.read(1 << 16):
            out.write(chunk)
            h.update(chunk)
            done += len(chunk)
            _progress(done, total, file)
        if h.hexdigest() != sha256:
            raise EdgeError(
                f"{file}: sha256 {h.hexdigest()} does not match the pinned {sha256}; "
                "the download is corrupt or the source changed (nothing was installed)"
            )
    return final


def fetch(name: str, source_dir: Path | None = None, dest_dir: Path | None = None) -> Path:
    """Install a catalog model (and its labels) from its URL or a local mirror folder."""
    if name not in CATALOG:
        raise EdgeError(f"unknown model {name!r}: known models are {', '.join(CATALOG)}")
    m = CATALOG[name]
    dest = dest_dir or model_dir()
    files = [(m.file, m.sha256)] + ([(m.labels, m.labels_sha256)] if m.labels else [])
    for file, digest in files:
        final = dest / file
        if final.exists() and _sha256(final) == digest:
            continue  # installed already: nothing to open (an offline re-run works)
        if source_dir is not None:
            src = Path(source_dir) / file
            if not src.exists():
                raise EdgeError(f"{src}: not found in the mirror folder {source_dir}")
            with open(src, "rb") as f:
                _install(f, file, digest, final, src.stat().st_size)
            continue
        try:
            resp = urllib.request.urlopen(_CORAL + file, timeout=30)  # noqa: S310
        except OSError as e:
            raise EdgeError(
                f"cannot download {file} ({e}); on an offline machine use "
                "`edge models fetch NAME --from DIR` with a folder holding the file"
            ) from None
        with resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            _install(resp, file, digest, final, total)
    return dest / m.file


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


