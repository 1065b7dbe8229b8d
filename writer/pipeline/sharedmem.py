"""Source pixels in memory the writer's worker processes map instead of receiving a copy.

The loaders put their pixels in a :func:`multiprocessing.RawArray` (:func:`shared_empty`): on
Linux its memory is a file that is unlinked as soon as it is made, so nothing outlives the
process, however it dies. A ``RawArray`` passed to a starting worker (as the pool's
``initargs``) reaches it as the same memory, not a copy (multiprocessing hands the worker the
file's descriptor). A write with ``--workers > 1`` then shares the loaded pixels as they are; an
array from anywhere else is copied to a scratch file once per write (see :mod:`writer.pipeline.pool`).
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
from typing import Any

import numpy as np

__all__ = ["attach", "shareable", "shared_empty"]


def shared_empty(shape: tuple[int, ...], dtype: Any = np.uint8) -> np.ndarray:
    """A zeroed C-contiguous array of ``shape`` in memory worker processes can map."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes == 0:
        return np.zeros(shape, dtype)
    raw = multiprocessing.RawArray(ctypes.c_uint8, nbytes)
    return np.frombuffer(raw, dtype=dtype, count=math.prod(shape)).reshape(shape)


def shareable(array: np.ndarray) -> tuple[Any, int] | None:
    """``(raw, offset)`` when ``array`` lies, C-contiguous, in a :func:`shared_empty` buffer.

    ``raw`` is the ``RawArray`` to hand a starting worker and ``offset`` the array's first
    byte in it; ``None`` for any other array (views that skip or reorder bytes included).
    """
    if not array.flags.c_contiguous:
        return None
    owner: Any = array
    while isinstance(owner, np.ndarray):
        owner = owner.base
    # RawArray's ctypes arrays carry the heap block that multiprocessing pickles for a child.
    if not isinstance(owner, ctypes.Array) or not hasattr(owner, "_wrapper"):
        return None
    offset = array.ctypes.data - ctypes.addressof(owner)
    if offset < 0 or offset + array.nbytes > ctypes.sizeof(owner):
        return None
    return owner, offset


def attach(raw: Any, offset: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """The array :func:`shareable` described, read-only, in a worker that received ``raw``."""
    dtype = np.dtype(dtype)
    array = np.frombuffer(raw, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)
    array.flags.writeable = False
    return array
