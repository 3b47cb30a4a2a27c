"""Decompression bombs: the header's declared size is checked before anything decodes (issue
20: a 900 KB PNG declaring 30000x30000 took 5.4 GB and 64 s)."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest
from conftest import IMAGES, TINY_MODEL
from helpers import run_edge_measured

from edge.capture.base import SourceError
from edge.capture.files import read_rgb
from edge.imagesize import MAX_IMAGE_PIXELS, image_size, too_large


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@pytest.fixture(scope="module")
def png_bomb(tmp_path_factory):
    """A real, complete 30000x30000 grey PNG of zeros: 870 KB that inflate to 900 MB."""
    side = 30000
    z = zlib.compressobj(9)
    row = b"\0" * (side + 1)
    data = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    p = tmp_path_factory.mktemp("bomb") / "bomb.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side,
                  8, 0, 0, 0, 0)) + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))
    assert p.stat().st_size < 1_000_000
    return p


EXTS = (".png", ".jpg", ".bmp", ".webp", ".tiff", ".ppm", ".pgm", ".gif")


@pytest.mark.parametrize("ext", EXTS)
def test_header_size_of_real_files(tmp_path, ext):
    img = np.random.default_rng(1).integers(0, 255, (23, 37, 3), np.uint8)
    p = tmp_path / f"x{ext}"
    if ext == ".pgm":
        img = img[:, :, 0]
    if not cv2.imwrite(str(p), img):
        pytest.skip(f"this OpenCV cannot write {ext}")
    assert image_size(p) == (37, 23)


@pytest.mark.parametrize("name", ["cat.bmp", "cat_720p.jpg", "owl.jpg", "parrot.jpg"])
def test_header_size_of_the_asset_photos(name):
    decoded = cv2.imread(str(IMAGES / name))
    assert image_size(IMAGES / name) == (decoded.shape[1], decoded.shape[0])
    assert too_large(IMAGES / name) is None


def test_forged_jpeg_and_bmp_headers(tmp_path):
    jpg = bytearray(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    sof = jpg.index(b"\xff\xc0")
    struct.pack_into(">HH", jpg, sof + 5, 30000, 30000)
    (tmp_path / "x.jpg").write_bytes(jpg)
    bmp = bytearray(cv2.imencode(".bmp", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    struct.pack_into("<ii", bmp, 18, 30000, -30000)
    (tmp_path / "x.bmp").write_bytes(bmp)
    for name in ("x.jpg", "x.bmp"):
        assert image_size(tmp_path / name) == (30000, 30000)
        assert "declares 30000x30000 pixels, more than the 40 megapixel limit" in too_large(
            tmp_path / name)


def test_bomb_is_refused_by_the_files_source_before_decoding(png_bomb):
    assert image_size(png_bomb) == (30000, 30000) and MAX_IMAGE_PIXELS < 30000**2
    with pytest.raises(SourceError, match="declares 30000x30000 pixels"):
        read_rgb(png_bomb)


def test_classify_a_bomb_exits_2_fast_and_small(png_bomb):
    code, err, seconds, rss = run_edge_measured(
        None, "classify", str(png_bomb), "--model", str(TINY_MODEL), timeout=120)
    assert code == 2, err[-2000:]
    assert err.strip().splitlines()[-1] == (
        f"edge: error: {png_bomb}: declares 30000x30000 pixels, more than the 40 megapixel "
        "limit (a decompression bomb, or a photo to scale down first)")
    assert rss < 300 * 1024, f"peak RSS {rss} KB"  # a decode would take 2.7 GB and more
    assert seconds < 30  # generous on a shared CPU; a decode took 17 s here
