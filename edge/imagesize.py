"""An image file's dimensions from its header, read before anything decodes it.

A 900 KB PNG can declare 30000 x 30000 pixels: OpenCV then allocates and inflates 2.7 GB
per decode (its own guard, OPENCV_IO_MAX_IMAGE_PIXELS, defaults to 2^30 pixels and is read
only once, when the library loads). So the few header bytes of PNG (IHDR), JPEG (SOFn),
BMP, GIF, WebP, TIFF and PNM files are parsed here and the size checked against
MAX_IMAGE_PIXELS; a format not recognised is left to OpenCV and its guard.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

MAX_IMAGE_PIXELS = 40_000_000  # 40 MP (120 MB as RGB): 4.8x a 4K frame, above any Pi camera
MAX_SIDE = 32_768
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): C4, C8, CC are not
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(f: BinaryIO) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header (the file positioned anywhere)."""
    f.seek(2)
    for _ in range(10_000):  # segments before the frame header (EXIF, ICC, tables...)
        b = f.read(1)
        while b == b"\xff":
            b = f.read(1)
        if not b:
            return None
        marker = b[0]
        if marker in (0x01, *range(0xD0, 0xD8)):
            continue  # no length
        head = f.read(2)
        if len(head) < 2:
            return None
        length = struct.unpack(">H", head)[0]
        if marker in _SOF:
            body = f.read(5)
            if len(body) < 5:
                return None
            h, w = struct.unpack(">HH", body[1:5])
            return w, h
        if marker == 0xD9 or length < 2:
            return None
        f.seek(length - 2, 1)
        if f.read(1) != b"\xff":
            return None
    return None


def _tiff(f: BinaryIO, head: bytes) -> tuple[int, int] | None:
    e = "<" if head[:2] == b"II" else ">"
    f.seek(4)
    (ifd,) = struct.unpack(e + "I", f.read(4))
    f.seek(ifd)
    raw = f.read(2)
    if len(raw) < 2:
        return None
    (n,) = struct.unpack(e + "H", raw)
    size = {}
    for _ in range(min(n, 1000)):
        entry = f.read(12)
        if len(entry) < 12:
            break
        tag, kind = struct.unpack(e + "HH", entry[:4])
        if tag in (256, 257):
            value = struct.unpack(e + ("H" if kind == 3 else "I"), entry[8:10 if kind == 3 else 12])
            size[tag] = value[0]
    return (size[256], size[257]) if 256 in size and 257 in size else None


def _pnm(head: bytes) -> tuple[int, int] | None:
    tokens: list[int] = []
    for line in head[2:].split(b"\n"):
        for tok in line.split(b"#")[0].split():
            if not tok.isdigit():
                return None
            tokens.append(int(tok))
            if len(tokens) == 2:
                return tokens[0], tokens[1]
    return None


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) the file's header declares; None when the format is not one known here
    or the header is cut short (the decoder then reports the file)."""
    with open(path, "rb") as f:
        head = f.read(64)
        try:
            if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                return struct.unpack(">II", head[16:24])
            if head[:2] == b"\xff\xd8":
                return jpeg_size(f)
            if head[:2] == b"BM" and len(head) >= 26:
                if struct.unpack("<I", head[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER
                    return struct.unpack("<HH", head[18:22])
                w, h = struct.unpack("<ii", head[18:26])
                return abs(w), abs(h)
            if head[:4] in (b"GIF8",) and len(head) >= 10:
                return struct.unpack("<HH", head[6:10])
            if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                kind = head[12:16]
                if kind == b"VP8 ":
                    w, h = struct.unpack("<HH", head[26:30])
                    return w & 0x3FFF, h & 0x3FFF
                if kind == b"VP8L":
                    bits = int.from_bytes(head[21:25], "little")
                    return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
                if kind == b"VP8X":
                    return (int.from_bytes(head[24:27], "little") + 1,
                            int.from_bytes(head[27:30], "little") + 1)
                return None
            if head[:4] in (b"II*\0", b"MM\0*"):
                return _tiff(f, head)
            if head[:1] == b"P" and head[1:2] in b"123456" and len(head) > 2:
                return _pnm(head + f.read(960))
        except struct.error:
            return None
    return None


def too_large(path: str | Path, limit: int = MAX_IMAGE_PIXELS) -> str | None:
    """Why the file must not be decoded (its declared size is over the limit), or None."""
    size = image_size(path)
    if size is None:
        return None
    w, h = size
    if w * h > limit or w > MAX_SIDE or h > MAX_SIDE:
        return (f"declares {w}x{h} pixels, more than the {limit / 1e6:g} megapixel limit "
                "(a decompression bomb, or a photo to scale down first)")
    return None
