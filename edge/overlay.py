"""Text drawn on frames for people to read: snapshot overlays and the web preview."""

from __future__ import annotations

import cv2


def draw_text(bgr, text: str, x: int, y: int, color: tuple[int, int, int], scale: float) -> None:
    """`text` on a dark band with its top-left at (x, y), kept inside the image (in place)."""
    thick = max(1, round(scale * 2))
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = max(2, round(4 * scale))
    y = min(max(0, y), bgr.shape[0] - h - base - 2 * pad)
    cv2.rectangle(bgr, (x, y), (x + w + 2 * pad, y + h + base + 2 * pad), (0, 0, 0), -1)
    cv2.putText(bgr, text, (x + pad, y + pad + h), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick,
                cv2.LINE_AA)
