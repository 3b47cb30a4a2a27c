"""Where benchmarks find the test assets: EDGE_ASSETS, default ../shared/assets."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("EDGE_ASSETS", REPO.parent / "shared" / "assets")).resolve()
DEFAULT_MODEL = ASSETS / "models" / "tf2_mobilenet_v2_1.0_224_ptq.tflite"
IMAGES = ASSETS / "images"
