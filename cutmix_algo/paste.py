"""Reordering a batch's box region in place, ``t[i] <- t[perm[i]]``: the memory-bound core of CutMix.

:func:`~cutmix_algo.functional.paste_box_` hands this module the box region of a batch (a strided
view) and the permutation; :func:`permute_batch_` writes ``t[i] = t[perm[i]]`` (the old values)
for every ``i``, in place. The result is exactly that of ``t.copy_(t.index_select(0, perm))``
for every dtype and memory layout; only the way the bytes move differs.

Why not just ``index_select``: on the CPU, torch's ``index_select`` copies a dim-0 slice of at
least ``GRAIN_SIZE`` (32,768) elements with one parallel region *per slice*. Each parallel region
waits for every OpenMP thread; on a machine whose cores are busy with other processes (a training
box whose loader workers are busy, the writer's worker pool), a thread that has been preempted
stalls it for a scheduler time slice, once per image (``bench/op.py --load``, 2 threads, a busy
loop per core, median of 3 runs: 1,942 ms for the box of a 128x3x224² float32 batch, against 50 ms
for the cycle walk below). It also moves every byte twice (gather into a temporary, copy back).

The paths (the choice depends only on the device, the region's size per image and ``method``):

* ``"cycles"`` (CPU, one image's region ``>= CYCLE_WALK_MIN_BYTES``): walk the permutation's
  cycles. For a cycle ``i0 -> i1 -> ... -> ik`` (``perm[i0] = i1``, ...), save ``t[i0]``, then
  copy ``t[i1] -> t[i0]``, ``t[i2] -> t[i1]``, ..., and the saved one into ``t[ik]``: each
  region is copied once, plus one saved region per cycle, about half the bytes of a gather. Every
  copy is of fewer than ``GRAIN_SIZE`` elements (an image's region is split into pieces below
  that), which torch runs on the calling thread: no parallel region at all, so it does not degrade
  when the CPU is oversubscribed. The price is a few microseconds of Python per copy, which is why
  small regions take the other path. Fixed points (``perm[i] == i``) are not touched.
* ``"index_select"`` (small regions on the CPU, every other device, and any input the cycle walk
  does not take): ``t.copy_(t.index_select(0, perm))``. For regions below ``GRAIN_SIZE`` elements
  torch's CPU ``index_select`` runs its per-image copies in one parallel region (as any single
  torch op does), and for small regions its C++ loop beats the cycle walk's Python loop (256
  images of a 32² batch's box, 3 KiB each: 0.30 ms against 1.51 ms, one thread). On CUDA it is
  one kernel and needs no host sync; ``perm`` is moved to the device (without blocking) if it is
  not there, and never read on the host.

The threshold, 16 KiB of region per image, comes from ``python bench/op.py --sweep --threads 1``
on the project's 2-core CPU (256 images; float32 and uint8 behave alike, so the rule is in bytes,
not elements): up to 12 KiB per image ``index_select`` is 1.6-5x faster; from 18.8 KiB the cycle
walk ties or wins (at 27 KiB 2.40 against 2.47 ms for float32, 2.13 against 2.52 for uint8, best
of 25; at 108 KiB 6.1 against 52.6 ms), and by the medians on a busy machine it wins from 18.8
KiB. At ``GRAIN_SIZE`` elements or more per image (at least 32 KiB, so always above the
threshold) ``index_select`` would open a parallel region per image.

Inputs the cycle walk does not take go to ``index_select`` unchanged, so they behave exactly as
before (same result, or the same error): ``perm`` that is not an int64/int32 permutation of
``range(N)`` (a gather with repeats, an index out of range, a bool or float tensor), a ``t``
whose images may share memory (an expanded view), and a ``t`` that requires grad with grad mode
on (autograd records one op, as before).
"""

from __future__ import annotations

import math

import torch

__all__ = ["CYCLE_WALK_MIN_BYTES", "GRAIN_SIZE", "METHODS", "choose_method", "permute_batch_"]

#: torch's ``at::internal::GRAIN_SIZE``: TensorIterator copies of fewer elements run serially on
#: the calling thread, larger ones in a parallel region. Not exposed to Python; fixed since 1.x.
GRAIN_SIZE = 32768

#: One image's region of at least this many bytes takes the cycle walk on the CPU (see above).
CYCLE_WALK_MIN_BYTES = 16 * 1024

METHODS = ("auto", "cycles", "index_select")


def _pieces_plan(shape: tuple[int, ...], prefix: tuple = ()) -> list[tuple]:
    """Index tuples that split one image's region of ``shape`` into pieces of < GRAIN_SIZE elements.

    The pieces tile the region exactly (every element in exactly one piece), in memory-friendly
    order: whole leading-dim slabs first, splitting deeper only when one slab is already too big.
    """
    numel = math.prod(shape)
    if numel < GRAIN_SIZE:
        return [prefix]
    if len(shape) == 1:
        step = GRAIN_SIZE - 1
        return [prefix + (slice(a, a + step),) for a in range(0, shape[0], step)]
    per_slab = numel // shape[0]
    if per_slab >= GRAIN_SIZE:
        return [piece for j in range(shape[0]) for piece in _pieces_plan(shape[1:], prefix + (j,))]
    step = (GRAIN_SIZE - 1) // per_slab
    return [prefix + (slice(a, a + step),) for a in range(0, shape[0], step)]


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


def _walk_cycles_(t: torch.Tensor, p: list[int]) -> None:
    plan = _pieces_plan(tuple(t.shape[1:]))
    if plan == [()]:
        pieces = [(image,) for image in t.unbind(0)]
    else:
        # One view per piece for the whole batch, then one per image: a few C++ calls, not N*pieces.
        pieces = list(zip(*(t[(slice(None), *index)].unbind(0) for index in plan), strict=True))
    saved = [torch.empty(piece.shape, dtype=t.dtype, device=t.device) for piece in pieces[0]]
    for cycle in _cycles(p):
        for buf, piece in zip(saved, pieces[cycle[0]], strict=True):
            buf.copy_(piece)
        for i in cycle[:-1]:  # t[i] <- t[p[i]] while t[p[i]] still holds its old value
            for dst, src in zip(pieces[i], pieces[p[i]], strict=True):
                dst.copy_(src)
        for dst, buf in zip(pieces[cycle[-1]], saved, strict=True):
            dst.copy_(buf)


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
        method: ``"auto"`` (the module doc's rule), or force ``"cycles"`` or ``"index_select"``
            (for benchmarks and tests). A forced ``"cycles"`` still defers to ``"index_select"``
            for the inputs it does not take (non-CPU ``t``, ``perm`` not a permutation, ``t``
            whose images may share memory, ``t`` requiring grad).

    Returns:
        ``t``, reordered in place.

    Raises:
        ValueError: if ``method`` is not one of ``METHODS``. Bad ``perm`` values raise what
            ``index_select`` raises, as before.

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
    if (
        method == "cycles"
        and t.device.type == "cpu"
        and isinstance(perm, torch.Tensor)
        and perm.device.type == "cpu"
        and perm.shape == (t.shape[0],)
        and perm.dtype in (torch.int64, torch.int32)  # what index_select takes; bool would pass sorted()
        and not (t.requires_grad and torch.is_grad_enabled())
        and _no_shared_memory(t)
    ):
        p = perm.tolist()
        if sorted(p) == list(range(len(p))):
            _walk_cycles_(t, p)
            return t
    if isinstance(perm, torch.Tensor) and perm.device != t.device:
        # Host to device without blocking (no sync); to the host, blocking, so perm is complete.
        perm = perm.to(t.device, non_blocking=t.device.type != "cpu")
    return t.copy_(t.index_select(0, perm))
