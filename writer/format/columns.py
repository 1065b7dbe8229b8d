"""The MDS columns of a pre-mixed dataset: one encoding per column, decided by the write's
``--encoding``, the image shape and the number of classes. The writer writes them and every
reader checks an index against them.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ENCODINGS", "column_encodings"]

ENCODINGS = ("raw", "png", "jpeg")


def column_encodings(encoding: str, image_shape: Sequence[int], num_classes: int) -> dict[str, str]:
    """The MDS columns of a pre-mixed dataset.

    Raw images get a fixed-shape ``ndarray:uint8:H,W,C`` encoding (no per-sample shape header).
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    image = "ndarray:uint8:" + ",".join(str(int(d)) for d in image_shape)
    return {
        "box": "ndarray:int32:4",
        "epoch": "int32",
        "image": image if encoding == "raw" else encoding,
        "index_a": "int64",
        "index_b": "int64",
        "label": f"ndarray:float32:{num_classes}",
        "lam": "float64",
    }
