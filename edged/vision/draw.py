"""Drawing what edged sees on a picture: a box and a caption per face."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import cv2

from edged.vision.detector import Box, Image

if TYPE_CHECKING:
    from edged.vision.pipeline import FaceResult


def annotate(image: Image, box: Box, text: str) -> None:
    """Draw what the workshop drew: a box and a caption above it (in place).

    Line widths grow with the face, so the caption stays readable on a large photo.
    """
    scale = max(0.5, box.w / 250)
    thick = max(2, round(scale * 2))
    cv2.rectangle(image, (box.x, box.y), (box.x + box.w, box.y + box.h), (0, 255, 0), thick)
    (_, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    # Above the box when there is room, else just inside its top edge.
    y = box.y - thick - base if box.y - thick - base - th >= 0 else box.y + th + thick + 4
    org = (box.x, y)
    cv2.putText(
        image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 3, cv2.LINE_AA
    )
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 255, 0), thick, cv2.LINE_AA)


def caption(expression: str | None, confidence: float) -> str:
    """What a face's box is labelled with: "happy 87%", or "face" without a model."""
    return f"{expression} {100 * confidence:.0f}%" if expression else "face"


def draw_faces(image: Image, faces: Iterable[FaceResult]) -> None:
    """Every face's box and caption, as `edged detect` draws them (in place)."""
    for f in faces:
        annotate(image, f.box, caption(f.expression, f.confidence))
