"""Encoding mixed batches into MDS sample rows: the exact bytes ``MDSWriter.encode_sample`` makes.

Rows are encoded in the worker processes (:mod:`writer.pool`), a whole batch at once, so the
parent only appends bytes and the output does not depend on the number of workers. A batch-mode
batch has one ``lam`` and ``box`` for every row, a sample-mode batch one per row; the columns are
the same (each row stores its own).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from writer.premix import MixedBatch

__all__ = ["ENCODINGS", "column_encodings", "encode_rows"]

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


def _fixed_rows(fields: list[tuple[str, object, tuple[int, ...]]], values: dict[str, object],
                n: int) -> np.ndarray:
    # One packed record per sample; its bytes are the fields' bytes back to back, which is how
    # MDS lays out fixed-size columns (sorted by name, native byte order).
    rows = np.empty(n, dtype=np.dtype([(name, dtype, shape) for name, dtype, shape in fields]))
    for name, _, _ in fields:
        rows[name] = values[name]
    return rows


def _split(buffer: bytes, n: int) -> list[bytes]:
    size = len(buffer) // n
    return [buffer[i * size:(i + 1) * size] for i in range(n)]


def _encode_image(image: np.ndarray, encoding: str) -> bytes:
    # The very call streaming's ``png``/``jpeg`` MDS encodings make (PIL defaults), done here so
    # worker processes need not import streaming (whose package import pulls in transformers).
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    out = io.BytesIO()
    pil.save(out, format="PNG" if encoding == "png" else "JPEG")
    return out.getvalue()


def encode_rows(batch: MixedBatch, encoding: str) -> list[bytes]:
    """Encode a mixed batch into MDS sample bytes, one ``bytes`` per row.

    The bytes equal ``MDSWriter.encode_sample`` of the row under :func:`column_encodings`
    (a test pins this), but are built for the whole batch at once.

    Args:
        batch: the mixed batch.
        encoding: ``"raw"``, ``"png"`` or ``"jpeg"``.

    Returns:
        list[bytes]: the encoded rows, in batch order.
    """
    n, height, width, channels = batch.images.shape
    num_classes = batch.labels.shape[1]
    values = {
        "box": np.asarray(batch.box, dtype=np.int32),
        "epoch": batch.epoch,
        "image": batch.images,
        "index_a": batch.index_a,
        "index_b": batch.index_b,
        "label": batch.labels,
        "lam": batch.lam,
    }
    head = [("box", np.int32, (4,)), ("epoch", np.int32, ())]
    tail = [
        ("index_a", np.int64, ()),
        ("index_b", np.int64, ()),
        ("label", np.float32, (num_classes,)),
        ("lam", np.float64, ()),
    ]
    if encoding == "raw":
        fields = head + [("image", np.uint8, (height, width, channels))] + tail
        return _split(_fixed_rows(fields, values, n).tobytes(), n)
    heads = _split(_fixed_rows(head, values, n).tobytes(), n)
    tails = _split(_fixed_rows(tail, values, n).tobytes(), n)
    rows = []
    for i in range(n):
        image = _encode_image(batch.images[i], encoding)
        # The only variable-size column: MDS puts its uint32 length before the fixed columns.
        size = np.uint32(len(image)).tobytes()
        rows.append(b"".join((size, heads[i], image, tails[i])))
    return rows
