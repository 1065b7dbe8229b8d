"""Reordering a batch's box region in place, ``t[i] <- t[perm[i]]``: the memory-bound core of CutMix.

:func:`~cutmix_algo.functional.paste_box_` hands :func:`permute_batch_` the box region of a batch
(a strided view) and the permutation; it writes ``t[i] = t[perm[i]]`` (the values before the
call) for every ``i``, in place, with exactly the result of ``t.copy_(t.index_select(0, perm))``
for every dtype and memory layout. Only the way the bytes move depends on the path, chosen by
the device and the size of one image's region (:func:`choose_method`):

* ``"cycles"`` (CPU, one image's region of at least ``CYCLE_WALK_MIN_BYTES``): walk the
  permutation's cycles. For a cycle ``i0 -> i1 -> ... -> ik`` (``perm[i0] = i1``, ...), save
  ``t[i0]``, then copy ``t[i1] -> t[i0]``, ..., and the saved region into ``t[ik]``: each region
  is copied once, plus one saved region per cycle, half the bytes of a gather; fixed points are
  not touched. The copies are numpy's, on a view of ``t``'s memory as same-sized integers (every
  bit moves as it is, NaN payloads included), made on the calling thread.
* ``"index_select"`` (smaller regions, every other device, and any input the walk does not
  take): ``t.copy_(t.index_select(0, perm))``. On an accelerator it is one kernel; ``perm`` is
  moved there without blocking and never read on the host.

Why two paths: torch's CPU ``index_select`` copies each dim-0 slice of ``GRAIN_SIZE`` elements
or more in a parallel region of its own, which waits for every OpenMP thread, so where the cores
are busy (loader workers, the writer's pool) one preempted thread stalls it once per image; it
also moves every byte twice (gather into a temporary, copy back). Numpy's copies open no
parallel region, but cost about 2 µs of call per image, more than ``index_select``'s C++ loop
for small regions. The threshold, 16 KiB per image, is where the two cross on a 2-core CPU with
one thread (``python bench/op.py --sweep --threads 1``; see bench/README.md).

Inputs the walk does not take go to ``index_select``, with its result or its error: a ``perm``
that is not an int64/int32 permutation of ``range(N)``, a ``t`` whose images may share memory
(an expanded view), a ``t`` that requires grad with grad mode on (autograd records one op), and
a ``t`` numpy cannot view as it is (complex128; lazily conjugated or negated views; sparse,
quantized or nested tensors). Before its first write the walk calls :func:`mark_written_`, so
autograd sees the write as it sees ``copy_``: backward through a graph that saved ``t`` raises,
and an inference tensor outside inference mode is refused before a byte moves.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "CYCLE_WALK_MIN_BYTES",
    "GRAIN_SIZE",
    "METHODS",
    "choose_method",
    "gather_boxes_",
    "mark_written_",
    "permute_batch_",
]

#: torch's ``at::internal::GRAIN_SIZE``: TensorIterator ops on fewer elements run serially on
#: the calling thread, larger ones in a parallel region. Not exposed to Python; fixed since 1.x.
GRAIN_SIZE = 32768

#: One image's region of at least this many bytes takes the cycle walk on the CPU (see above).
CYCLE_WALK_MIN_BYTES = 16 * 1024

METHODS = ("auto", "cycles", "index_select")


def _cycles(p: list[int]) -> list[list[int]]:
    """The cycles of length >= 2 of the permutation ``p`` (a valid permutation of range(len(p)))."""
    seen = bytearray(len(p))
    out = []
    for start in range(len(p)):
        if seen[start]:
            continue
        seen[start] = 1
        if p[start] == start:
            continue
        cycle, i = [start], p[start]
        while i != start:
            seen[i] = 1
            cycle.append(i)
            i = p[i]
        out.append(cycle)
    return out


def _no_shared_memory(t: torch.Tensor) -> bool:
    """True if no two elements of ``t`` can share memory (a sufficient stride test)."""
    dims = sorted((s, n) for s, n in zip(t.stride(), t.shape, strict=True) if n > 1)
    extent = 1  # elements spanned by the dims seen so far
    for stride, size in dims:
        if stride < extent:
            return False
        extent = stride * size
    return True


#: The integer dtype of each element size: the cycle walk moves elements as these, bit for bit.
_SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _as_numpy(t: torch.Tensor) -> np.ndarray | None:
    """``t``'s memory as a numpy array of same-sized integers (a view, no copy), or ``None``.

    ``None`` for what numpy cannot view as it is: an element size with no integer type
    (complex128), lazily conjugated or negated tensors, and any tensor that is not a plain
    dense one (sparse, quantized, nested).
    """
    as_int = _SAME_SIZE_INT.get(t.element_size())
    if (
        as_int is None
        or t.layout != torch.strided
        or t.is_quantized
        or t.is_nested
        or t.is_conj()
        or t.is_neg()
    ):
        return None
    array = t.detach().view(as_int).numpy()
    return array.reshape(len(array), 1) if array.ndim == 1 else array


def _cycle_moves(p: list[int]) -> list[tuple[int, int]]:
    """The cycle walk's region copies ``(dst, src)`` in order, ``-1`` the saved region: every
    source is read before it is overwritten."""
    moves = []
    for cycle in _cycles(p):
        moves.append((-1, cycle[0]))
        moves.extend((i, p[i]) for i in cycle[:-1])
        moves.append((cycle[-1], -1))
    return moves


def _walk_cycles_(array: np.ndarray, p: list[int]) -> None:
    moves = _cycle_moves(p)
    if not moves:  # the identity, an empty batch included: nothing moves
        return
    images = list(array)  # one view per image
    saved = np.empty_like(images[0])
    for dst, src in moves:
        np.copyto(saved if dst < 0 else images[dst], saved if src < 0 else images[src])


def _numpy_target(t: torch.Tensor, perm: torch.Tensor) -> tuple[np.ndarray, list[int]] | None:
    """``t`` as numpy (:func:`_as_numpy`) and ``perm`` as a list, if numpy's copies may reorder ``t``.

    ``None`` where they may not: ``t`` off the CPU, whose images may share memory, or that
    requires grad with grad mode on (autograd must record the op); ``perm`` not a CPU int64/int32
    vector of one index per image (what ``index_select`` takes: a bool one would pass the
    caller's range checks).
    """
    if not (
        t.device.type == "cpu"
        and isinstance(perm, torch.Tensor)
        and perm.device.type == "cpu"
        and perm.shape == (t.shape[0],)
        and perm.dtype in (torch.int64, torch.int32)
        and not (t.requires_grad and torch.is_grad_enabled())
        and _no_shared_memory(t)
    ):
        return None
    array = _as_numpy(t)
    if array is None:
        return None
    mark_written_(t)  # numpy's writes bypass autograd
    return array, perm.tolist()


def mark_written_(t: torch.Tensor) -> None:
    """Tell autograd that ``t`` is about to be written in place, before anything is written.

    An empty in-place torch op on ``t`` makes the checks and the version-counter bump of a real
    one: a ``t`` that a graph saved for backward (through a detached view) then fails backward
    instead of giving wrong gradients, and an inference tensor outside inference mode raises
    here, before a byte moves (torch's own ``copy_`` raises only after writing it).
    """
    t.narrow(0, 0, 0).zero_()


def gather_boxes_(t: torch.Tensor, boxes: torch.Tensor, perm: torch.Tensor) -> bool:
    """Write ``t[i, ..., box_i] = t[perm[i], ..., box_i]`` (the old values) by numpy copies, if it may.

    Sample mode's paste (a box per image) on the CPU, for boxes of ``CYCLE_WALK_MIN_BYTES`` or
    more per image on average: every source region is copied into one buffer of the boxes'
    total size, then each into its place, so any ``perm`` in range works (repeats too), fixed
    points are skipped, and no copy opens a parallel region. Bounds are clipped to the image as
    a mask of them would be. Returns ``False``, having written nothing, for what it does not take
    (small boxes, the inputs :func:`_numpy_target` refuses, ``boxes`` that are not a CPU
    int64/int32 ``(N, 4)`` tensor, an index out of range); the caller then pastes through its
    mask.
    """
    if t.ndim < 3 or math.prod(t.shape[1:]) * t.element_size() < CYCLE_WALK_MIN_BYTES:
        return False  # no box can be that large: the mask's path, without looking further
    target = _numpy_target(t, perm)
    if (
        target is None
        or not isinstance(boxes, torch.Tensor)
        or boxes.device.type != "cpu"
        or boxes.dtype not in (torch.int64, torch.int32)
        or boxes.shape != (t.shape[0], 4)
    ):
        return False
    array, p = target
    n = len(p)
    if not all(0 <= j < n for j in p):
        return False
    # Bounds below 0 count from 0 (a slice would count them from the end); above the image, the
    # slice stops at its edge, as the mask does. A pair is the row's box region and its source's.
    pairs = []
    for i, (j, box) in enumerate(zip(p, boxes.tolist(), strict=True)):
        top, left, bottom, right = (max(bound, 0) for bound in box)
        region = array[i, ..., top:bottom, left:right]
        if j != i and region.size:
            pairs.append((region, array[j, ..., top:bottom, left:right]))
    total = sum(region.size for region, _ in pairs)
    if total * t.element_size() < CYCLE_WALK_MIN_BYTES * n:
        return False
    saved = np.empty(total, dtype=array.dtype)
    copies = []
    at = 0
    for _, source in pairs:
        copy = saved[at : at + source.size].reshape(source.shape)
        np.copyto(copy, source)
        copies.append(copy)
        at += source.size
    for (region, _), copy in zip(pairs, copies, strict=True):
        np.copyto(region, copy)
    return True


def choose_method(t: torch.Tensor) -> str:
    """The path ``method="auto"`` takes for ``t`` (before checking ``perm``): see the module doc."""
    if t.device.type != "cpu" or t.shape[0] < 2:
        return "index_select"
    per_image_bytes = math.prod(t.shape[1:]) * t.element_size()
    return "cycles" if per_image_bytes >= CYCLE_WALK_MIN_BYTES else "index_select"


def permute_batch_(t: torch.Tensor, perm: torch.Tensor, *, method: str = "auto") -> torch.Tensor:
    """Write ``t[i] = t[perm[i]]`` (the values before the call) for every ``i``, in place.

    Args:
        t: any tensor with the batch in dim 0, typically a strided view (the box region of a
            batch); any dtype and memory layout, which are kept.
        perm: integer indices of shape ``(N,)``, on the CPU or on ``t``'s device; on a non-CPU
            device it is never read on the host (no sync).
        method: ``"auto"`` (:func:`choose_method`), or force ``"cycles"`` or ``"index_select"``
            (for benchmarks and tests); a forced ``"cycles"`` still takes ``"index_select"`` for
            the inputs the walk does not take (see the module doc).

    Returns:
        ``t``, reordered in place.

    Raises:
        ValueError: if ``method`` is not one of ``METHODS``. Bad ``perm`` values raise what
            ``index_select`` raises.

    Example:
        >>> import torch
        >>> t = torch.arange(4.0).repeat_interleave(3).view(4, 3)
        >>> permute_batch_(t, torch.tensor([1, 2, 0, 3]), method="cycles")[:, 0].tolist()
        [1.0, 2.0, 0.0, 3.0]
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        method = choose_method(t)
    target = _numpy_target(t, perm) if method == "cycles" else None
    if target is not None:
        array, p = target
        if sorted(p) == list(range(len(p))):
            _walk_cycles_(array, p)
            return t
    if isinstance(perm, torch.Tensor) and perm.device != t.device:
        # Host to device without blocking (no sync); to the host, blocking, so perm is complete.
        perm = perm.to(t.device, non_blocking=t.device.type != "cpu")
    return t.copy_(t.index_select(0, perm))
