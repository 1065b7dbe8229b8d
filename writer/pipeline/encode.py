"""Encoding mixed batches into MDS sample rows: the exact bytes ``MDSWriter.encode_sample`` makes.

Rows are encoded in the worker processes (:mod:`writer.pipeline.pool`), a whole batch at once; raw rows
are filled straight into one packed array per piece of work. A batch-mode
batch has one ``lam`` and ``box`` for every row, a sample-mode batch one per row; the columns are
the same (each row stores its own).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from writer.format.columns import ENCODINGS, column_encodings
from writer.pipeline.premix import MixedBatch

__all__ = ["ENCODINGS", "column_encodings", "encode_batch", "encode_rows", "fill_raw_rows", "raw_record"]

def _layout(image_shape: Sequence[int], num_classes: int) -> tuple[list, list, list]:
    """The fixed-size fields before and after the image, and the raw row's fields.

    MDS lays out fixed-size columns sorted by name, in native byte order: a raw row is one packed
    record of the fields back to back.
    """
    head = [("box", np.int32, (4,)), ("epoch", np.int32, ())]
    tail = [
        ("index_a", np.int64, ()),
        ("index_b", np.int64, ()),
        ("label", np.float32, (num_classes,)),
        ("lam", np.float64, ()),
    ]
    return head, tail, head + [("image", np.uint8, tuple(int(d) for d in image_shape))] + tail


def _values(batch: MixedBatch) -> dict[str, object]:
    return {
        "box": np.asarray(batch.box, dtype=np.int32),
        "epoch": batch.epoch,
        "image": batch.images,
        "index_a": batch.index_a,
        "index_b": batch.index_b,
        "label": batch.labels,
        "lam": batch.lam,
    }


def _fill(rows: np.ndarray, values: dict[str, object]) -> None:
    for name in rows.dtype.names or ():
        rows[name] = values[name]


def _fixed_rows(fields: list[tuple[str, object, tuple[int, ...]]], values: dict[str, object],
                n: int) -> np.ndarray:
    rows = np.empty(n, dtype=np.dtype(fields))
    _fill(rows, values)
    return rows


def raw_record(image_shape: Sequence[int], num_classes: int) -> np.dtype:
    """The packed record of one raw row (its ``itemsize`` is the row's size in bytes)."""
    return np.dtype(_layout(image_shape, num_classes)[2])


def fill_raw_rows(batch: MixedBatch, out: np.ndarray) -> None:
    """Encode a mixed batch as raw rows into ``out``, a :func:`raw_record` array of its length.

    ``out``'s bytes are then the rows of :func:`encode_rows` back to back, with no per-row copy.
    """
    _fill(out, _values(batch))


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
    data, sizes = encode_batch(batch, encoding)
    ends = np.cumsum(sizes).tolist()
    return [data[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)]


def encode_batch(batch: MixedBatch, encoding: str) -> tuple[bytes, np.ndarray]:
    """Encode a mixed batch into its MDS rows back to back: ``(bytes, int64 size of each row)``.

    The rows are those of :func:`encode_rows`.
    """
    n = len(batch.images)
    head, tail, raw = _layout(batch.images.shape[1:], batch.labels.shape[1])
    values = _values(batch)
    if encoding == "raw":
        rows = _fixed_rows(raw, values, n)
        return rows.tobytes(), np.full(n, rows.dtype.itemsize, dtype=np.int64)
    heads = [row.tobytes() for row in _fixed_rows(head, values, n)]
    tails = [row.tobytes() for row in _fixed_rows(tail, values, n)]
    parts = []
    sizes = np.empty(n, dtype=np.int64)
    for i in range(n):
        image = _encode_image(batch.images[i], encoding)
        # The only variable-size column: MDS puts its uint32 length before the fixed columns.
        parts += (np.uint32(len(image)).tobytes(), heads[i], image, tails[i])
        sizes[i] = 4 + len(heads[i]) + len(image) + len(tails[i])
    return b"".join(parts), sizes
