"""Sampling CutMix parameters: λ, the box and the permutation, from an explicit generator.

Everything here is cheap, runs on the CPU and depends only on the generator it is given, so the
online algorithm (on any device) and the offline writer draw the same numbers from the same seed.

Coordinates: rows run along H (dim -2) and are named ``top``/``bottom``; columns run along W
(dim -1) and are named ``left``/``right``. Boxes are half-open: ``x[..., top:bottom, left:right]``.

Generator keys are the reproducibility contract: every random draw of the project's own code
comes from a generator made here (from ``derive_generator(*key)`` with one of these keys, or,
for the training subset, a plain seed), and nowhere else. (Model initialization and the loader's
shuffle are Composer's and streaming's, from the Trainer's seed.)

=====================  ================================  ==========================================
Draw                   Key                               Where
=====================  ================================  ==========================================
online CutMix batch    ``(seed, rank, batch)``           :func:`online_generator` (the Composer
                                                         Algorithm's ``batch_generator``)
online extra stream    ``(seed, rank, batch, stream)``   ``stream`` = :data:`AUGMENT_STREAM` for
                                                         ``cutmix_train.augment``'s crops and flips
writer batch           ``(seed, epoch, batch)``          :func:`writer_batch_generator`: λ, box(es)
                                                         and permutation of one pre-mixed batch
writer epoch order     ``(seed, epoch, ORDER_KEY)``      :func:`epoch_order_generator`,
                                                         ``ORDER_KEY = 2**32 - 1``
verify's sample pick   ``(VERIFY_KEY,)``                 :func:`verify_generator`,
                                                         ``VERIFY_KEY = 2**32 - 2``
training subset        ``manual_seed(seed)``             :func:`subset_generator` (``cutmix_train``'s
                                                         ``data.train_per_class``), not derived
=====================  ================================  ==========================================

``ORDER_KEY`` and ``VERIFY_KEY`` cannot be batch numbers (an epoch would need 4 billion batches)
and ``derive_generator`` prefixes the key count, so the epoch order, verify's pick and the
augmentation stream share no stream with a batch's draws or with each other. One overlap is by
form, not by accident of hashing: the online key ``(seed, rank, batch)`` and the writer's
``(seed, epoch, batch)`` have the same shape, so for one seed, global rank ``r``'s online batch
``b`` draws the same λ, box and permutation as the writer's epoch ``r``, batch ``b`` (in batch
mode). The two are separate products; changing either key would change every output written
or trained so far, so both stay as they are.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from cutmix_algo.options import MAX_ALPHA, check_alpha, check_minmax

__all__ = [
    "AUGMENT_STREAM",
    "MAX_ALPHA",
    "ORDER_KEY",
    "VERIFY_KEY",
    "Box",
    "CutMixParams",
    "RowParams",
    "box_area",
    "check_alpha",
    "check_box",
    "derive_generator",
    "epoch_order_generator",
    "kept_fraction",
    "label_lam",
    "check_generator",
    "check_minmax",
    "sample_box",
    "sample_box_minmax",
    "sample_lam",
    "sample_params",
    "sample_row_params",
    "online_generator",
    "subset_generator",
    "verify_generator",
    "writer_batch_generator",
]


class Box(NamedTuple):
    """A half-open pixel box: rows ``[top, bottom)`` along H, columns ``[left, right)`` along W."""

    top: int
    left: int
    bottom: int
    right: int


class CutMixParams(NamedTuple):
    """Everything one CutMix of one batch needs: the kept fraction, the box and the permutation."""

    lam: float
    box: Box
    perm: torch.Tensor


class RowParams(NamedTuple):
    """Per-sample CutMix parameters: a kept fraction and a box for every row, and the permutation.

    Attributes:
        lam: ``(N,)`` float64, row ``i``'s exact kept fraction (1 where ``perm[i] == i``).
        boxes: ``(N, 4)`` int64 rows ``(top, left, bottom, right)``, half-open.
        perm: row ``i`` receives the box region of row ``perm[i]``.
    """

    lam: torch.Tensor
    boxes: torch.Tensor
    perm: torch.Tensor


def derive_generator(*keys: int) -> torch.Generator:
    """Return a CPU ``torch.Generator`` seeded from a tuple of non-negative integers.

    The keys are hashed with numpy's ``SeedSequence``, so nearby keys (batch 7 and batch 8, rank 0
    and rank 1) give statistically independent streams, and the result depends on nothing but the
    keys: no global state, no call order.

    Example:
        >>> g = derive_generator(42, 0, 7)  # seed 42, rank 0, batch 7
        >>> torch.randint(10, (3,), generator=g).tolist() == \\
        ...     torch.randint(10, (3,), generator=derive_generator(42, 0, 7)).tolist()
        True
    """
    if not keys:
        raise ValueError("derive_generator needs at least one key")
    # SeedSequence pads with zeros and splits big ints into 32-bit words, so (42,), (42, 0) and
    # (2**32,) vs (0, 1) would collide; a length prefix and two fixed words per key prevent it.
    words = [len(keys)]
    for key in keys:
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or not 0 <= key < 2**64:
            raise ValueError(f"generator keys must be integers in [0, 2**64), got {key!r}")
        words += [int(key) & 0xFFFFFFFF, int(key) >> 32]
    (state,) = np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)
    return torch.Generator(device="cpu").manual_seed(int(state))


#: Last key of a writer epoch's visiting order (never a batch number).
ORDER_KEY = 2**32 - 1
#: The one key of ``verify``'s choice of samples to check (never a seed's batch number).
VERIFY_KEY = 2**32 - 2
#: Fourth key of the per-batch augmentation draws, apart from CutMix's ``(seed, rank, batch)``.
AUGMENT_STREAM = 0xA06


def online_generator(seed: int, rank: int, batch: int, *stream: int) -> torch.Generator:
    """The online generator of training batch ``batch`` on global rank ``rank``."""
    return derive_generator(seed, rank, batch, *stream)


def writer_batch_generator(seed: int, epoch: int, batch: int) -> torch.Generator:
    """The writer's generator for batch ``batch`` of epoch ``epoch`` (λ, box(es), permutation)."""
    return derive_generator(seed, epoch, batch)


def epoch_order_generator(seed: int, epoch: int) -> torch.Generator:
    """The writer's generator for epoch ``epoch``'s visiting order (one ``torch.randperm``)."""
    return derive_generator(seed, epoch, ORDER_KEY)


def subset_generator(seed: int) -> torch.Generator:
    """The generator of a training recipe's per-class subset: ``torch.Generator().manual_seed(seed)``."""
    return torch.Generator().manual_seed(seed)


def verify_generator() -> torch.Generator:
    """The generator of ``verify``'s choice of samples (the same for every dataset)."""
    return derive_generator(VERIFY_KEY)


def sample_lam(alpha: float, generator: torch.Generator | None = None) -> float:
    """Draw λ ~ Beta(alpha, alpha) from ``generator``; ``alpha == 0`` gives λ = 0, as Composer does.

    torch's Beta sampler takes no generator, so one 63-bit seed is drawn from ``generator`` and
    handed to numpy's PCG64, whose Beta sampler is exact; the draw thus depends on ``generator``
    alone.
    """
    alpha = check_alpha(alpha)
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator).item())
    if alpha == 0:
        return 0.0
    return float(np.random.Generator(np.random.PCG64(seed)).beta(alpha, alpha))


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(low, high, (1,), generator=generator).item())


def sample_box(
    height: int,
    width: int,
    lam: float,
    generator: torch.Generator | None = None,
    uniform_sampling: bool = False,
) -> Box:
    """Draw the paste box for a given λ, as in the paper's reference code.

    The cut is ``cut = int(side * sqrt(1 - lam))`` pixels along each side, placed as ``cut // 2``
    either side of a center drawn uniformly over pixel positions and clipped to the image, so
    before clipping the box spans ``2 * (cut // 2)`` pixels (one fewer than ``cut`` when ``cut``
    is odd, as in the reference code). With ``uniform_sampling`` the center is drawn from
    ``[-cut // 2, side + cut // 2)`` instead, so every pixel is equally likely to be covered
    (Composer's option).
    """
    if not (isinstance(lam, (int, float, np.floating)) and 0.0 <= lam <= 1.0):  # rejects NaN too
        raise ValueError(f"lam must be a number in [0, 1], got {lam!r}")
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    half_h, half_w = cut_h // 2, cut_w // 2
    if uniform_sampling:
        cy = _randint(-half_h, height + half_h, generator)
        cx = _randint(-half_w, width + half_w, generator)
    else:
        cy = _randint(0, height, generator)
        cx = _randint(0, width, generator)
    top, bottom = min(max(cy - half_h, 0), height), min(max(cy + half_h, 0), height)
    left, right = min(max(cx - half_w, 0), width), min(max(cx + half_w, 0), width)
    return Box(top, left, bottom, right)


def check_generator(generator: object) -> torch.Generator | None:
    """Return ``generator`` if it is ``None`` or a CPU ``torch.Generator``, else raise ``ValueError``.

    Every draw is made on the CPU (so a seed gives the same draws on any device); a seed is not a
    generator: :func:`derive_generator` makes one from integer keys.
    """
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        got = (f"a {generator.device.type} torch.Generator" if isinstance(generator, torch.Generator)
               else f"{generator!r} ({type(generator).__name__})")
        raise ValueError(
            "generator must be None or a CPU torch.Generator (for a seed, pass "
            f"cutmix_algo.sampling.derive_generator(seed)), got {got}"
        )
    return generator


def _cut_range(side: int, minmax: tuple[float, float]) -> tuple[int, int]:
    return int(side * minmax[0]), int(side * minmax[1])


def sample_box_minmax(
    height: int, width: int, minmax: tuple[float, float], generator: torch.Generator | None = None
) -> Box:
    """Draw a box whose sides are uniform fractions of the image's, placed wholly inside it.

    Like timm's ``cutmix_minmax``: the cut height is a uniform integer in
    ``[int(H * low), int(H * high)]`` (both ends included), the width likewise and independently,
    and the top-left corner is uniform over every position that keeps the box inside the image,
    the bottom and right edges included (timm's exclusive bound never reaches them).
    """
    minmax = check_minmax(minmax)
    assert minmax is not None
    low_h, high_h = _cut_range(height, minmax)
    low_w, high_w = _cut_range(width, minmax)
    cut_h = _randint(low_h, high_h + 1, generator)
    cut_w = _randint(low_w, high_w + 1, generator)
    top = _randint(0, height - cut_h + 1, generator)
    left = _randint(0, width - cut_w + 1, generator)
    return Box(top, left, top + cut_h, left + cut_w)


def box_area(box: Box) -> int:
    """Number of pixels inside ``box``."""
    return (box.bottom - box.top) * (box.right - box.left)


def kept_fraction(box: Box, height: int, width: int) -> float:
    """The exact fraction of its own pixels an image keeps when ``box`` is pasted over it."""
    return 1.0 - box_area(box) / (height * width)


#: Rows for which pre-mixed (offline) label rows sum exactly: the writer cannot know the training
#: batch size, so it puts λ on the grid that keeps any batch of up to this many rows exact.
EXACT_SUM_ROWS = 65536


def label_grid_bits(rows: int) -> int:
    """Bits of the dyadic grid for λ that keeps a sum over ``rows`` label rows exact in float32.

    Every label row holds λ and 1 - λ (or a single 1). If λ is a multiple of ``2**-k``, every
    partial sum of a batch's targets is a multiple of ``2**-k`` no larger than ``rows``, which
    float32's 24-bit significand holds exactly while ``rows * 2**k <= 2**24``: the total is then
    exactly ``rows`` in any summation order.
    """
    rows = int(rows)
    if rows < 1:
        raise ValueError(f"rows must be a positive integer, got {rows!r}")
    if rows > 2**24:
        raise ValueError(f"rows must be at most 2**24 for an exact float32 sum, got {rows}")
    return 24 - (rows - 1).bit_length()


def label_lam(lam: float | torch.Tensor, rows: int) -> float | torch.Tensor:
    """λ rounded to the nearest multiple of ``2**-k``, ``k = label_grid_bits(rows)``.

    This is the weight label rows use, so a batch of ``rows`` targets sums to exactly ``rows`` in
    float32 (Composer's ``soft_cross_entropy`` checks that total). It is within ``2**-(k+1)`` of
    ``lam``: ``2**-17`` for 256 rows, ``2**-9`` for 65,536.

    Example:
        >>> label_lam(0.3, 256) == round(0.3 * 2**16) / 2**16
        True
    """
    scale = float(1 << label_grid_bits(rows))
    if isinstance(lam, torch.Tensor):  # one λ per row (sample mode): the same grid, elementwise
        return torch.round(lam.to(torch.float64) * scale) / scale
    return round(float(lam) * scale) / scale


def check_box(box: object, height: int, width: int) -> Box:
    """Return ``box`` as a :class:`Box`, or raise ``ValueError`` if it is not inside the image."""
    try:
        values = [v.item() if isinstance(v, (torch.Tensor, np.generic)) else v for v in box]  # type: ignore[union-attr]
    except TypeError:
        values = None
    if (
        values is None
        or len(values) != 4
        or any(isinstance(v, bool) or not isinstance(v, int) for v in values)
    ):
        raise ValueError(f"box must be 4 integers (top, left, bottom, right), got {box!r}")
    top, left, bottom, right = values
    if not (0 <= top <= bottom <= height and 0 <= left <= right <= width):
        raise ValueError(
            f"box must satisfy 0 <= top <= bottom <= H={height} and 0 <= left <= right <= W={width}, "
            f"got (top={top}, left={left}, bottom={bottom}, right={right})"
        )
    return Box(top, left, bottom, right)


def sample_params(
    batch_size: int,
    height: int,
    width: int,
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
    uniform_sampling: bool = False,
    minmax: tuple[float, float] | None = None,
) -> CutMixParams:
    """Draw λ, then the box, then the permutation, in that order, all from ``generator``.

    The returned ``lam`` is the corrected one: the exact kept fraction of the drawn box. With
    ``minmax`` the box comes from :func:`sample_box_minmax` and no λ is drawn first.

    Example:
        >>> p = sample_params(8, 32, 32, alpha=1.0, generator=derive_generator(0))
        >>> p.lam == kept_fraction(p.box, 32, 32), sorted(p.perm.tolist()) == list(range(8))
        (True, True)
    """
    generator = check_generator(generator)
    if minmax is None:
        lam = sample_lam(alpha, generator)
        box = sample_box(height, width, lam, generator, uniform_sampling)
    else:
        box = sample_box_minmax(height, width, minmax, generator)
    perm = torch.randperm(batch_size, generator=generator)
    return CutMixParams(kept_fraction(box, height, width), box, perm)


def _uniform_ints(low: torch.Tensor, high: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One uniform integer in ``[low[i], high[i])`` per row (float64 keeps it exact for any image)."""
    u = torch.rand(low.shape, generator=generator, dtype=torch.float64)
    return low + (u * (high - low).to(torch.float64)).floor().long().clamp_max(high - low - 1)


def sample_row_params(
    batch_size: int,
    height: int,
    width: int,
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
    uniform_sampling: bool = False,
    minmax: tuple[float, float] | None = None,
) -> RowParams:
    """Draw a λ and a box for every row, vectorized, then the permutation, all from ``generator``.

    Each row follows the batch-mode rules (:func:`sample_box`, or :func:`sample_box_minmax` when
    ``minmax`` is given) with its own draws; the returned ``lam`` is each row's exact kept
    fraction, and 1 for rows that receive their own pixels (``perm[i] == i``).

    Example:
        >>> p = sample_row_params(8, 32, 32, alpha=1.0, generator=derive_generator(0))
        >>> tuple(p.lam.shape), tuple(p.boxes.shape), sorted(p.perm.tolist()) == list(range(8))
        ((8,), (8, 4), True)
    """
    n = batch_size
    generator = check_generator(generator)
    zeros = torch.zeros(n, dtype=torch.long)
    if minmax is None:
        alpha = check_alpha(alpha)
        seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator).item())
        if alpha == 0:
            lam = np.zeros(n)
        else:
            lam = np.random.Generator(np.random.PCG64(seed)).beta(alpha, alpha, size=n)
        ratio = torch.from_numpy(np.sqrt(1.0 - lam))
        cut_h, cut_w = (height * ratio).long(), (width * ratio).long()
        half_h, half_w = cut_h // 2, cut_w // 2
        if uniform_sampling:
            cy = _uniform_ints(-half_h, height + half_h, generator)
            cx = _uniform_ints(-half_w, width + half_w, generator)
        else:
            cy = _uniform_ints(zeros, zeros + height, generator)
            cx = _uniform_ints(zeros, zeros + width, generator)
        top, bottom = (cy - half_h).clamp(0, height), (cy + half_h).clamp(0, height)
        left, right = (cx - half_w).clamp(0, width), (cx + half_w).clamp(0, width)
    else:
        minmax = check_minmax(minmax)
        assert minmax is not None
        low_h, high_h = _cut_range(height, minmax)
        low_w, high_w = _cut_range(width, minmax)
        cut_h = _uniform_ints(zeros + low_h, zeros + high_h + 1, generator)
        cut_w = _uniform_ints(zeros + low_w, zeros + high_w + 1, generator)
        top = _uniform_ints(zeros, height - cut_h + 1, generator)
        left = _uniform_ints(zeros, width - cut_w + 1, generator)
        bottom, right = top + cut_h, left + cut_w
    perm = torch.randperm(n, generator=generator)
    boxes = torch.stack([top, left, bottom, right], dim=1)
    kept = 1.0 - ((bottom - top) * (right - left)).to(torch.float64) / (height * width)
    kept = torch.where(perm == torch.arange(n), torch.ones_like(kept), kept)
    return RowParams(kept, boxes, perm)
