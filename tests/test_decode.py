"""JPEGs decode only as large as a box-resized model needs (edge/decode.py), on real photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge import decode
from edge.capture.files import FilesSource
from edge.decode import decode_image

MODEL_SIZE = (224, 224)


@pytest.fixture(scope="module")
def photos(tmp_path_factory, images):
    """bird.bmp at a camera's 1280x720 as a JPEG and as a PNG."""
    d = tmp_path_factory.mktemp("photos")
    bgr = cv2.resize(cv2.imread(str(images / "bird.bmp")), (1280, 720))
    cv2.imwrite(str(d / "bird.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    cv2.imwrite(str(d / "bird.png"), bgr)
    return d


def test_a_jpeg_decodes_toward_the_model_size_in_the_dct(photos):
    data = (photos / "bird.jpg").read_bytes()
    full = decode_image(data)
    scaled = decode_image(data, MODEL_SIZE)
    assert full.shape == (720, 1280, 3) and scaled.shape == (360, 640, 3)  # 720 / 4 < 224
    want = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_2)
    assert np.array_equal(scaled, cv2.cvtColor(want, cv2.COLOR_BGR2RGB))
    # a low-pass of the same picture: close to the full decode averaged 2x2
    area = cv2.resize(full, (640, 360), interpolation=cv2.INTER_AREA)
    assert np.abs(scaled.astype(int) - area).mean() < 2.0


def test_other_formats_and_no_target_decode_whole(photos):
    png = decode_image((photos / "bird.png").read_bytes(), MODEL_SIZE)
    assert png.shape == (720, 1280, 3)
    assert decode_image(b"not an image", MODEL_SIZE) is None


def test_without_opencvs_rgb_flag_the_pixels_are_the_same(photos, monkeypatch):
    """OpenCV before 4.11 has no IMREAD_COLOR_RGB: BGR, then one conversion."""
    data = (photos / "bird.jpg").read_bytes()
    want = decode_image(data, MODEL_SIZE)
    monkeypatch.setattr(decode, "_RGB", None)
    assert np.array_equal(decode_image(data, MODEL_SIZE), want)


def test_image_files_decode_scaled_unless_the_full_image_is_wanted(photos):
    wants = [False]
    src = FilesSource(str(photos / "*.jpg"), loop=True, decode_to=MODEL_SIZE,
                      wants_full=lambda: wants[0])
    src.open()
    assert src.read()[0].shape == (360, 640, 3)
    wants[0] = True  # a snapshot output, a preview viewer: the next frame is whole
    assert src.read()[0].shape == (720, 1280, 3)
    src.close()
