"""Pre-mixing: epochs → batches → the shared sampler and applier → mixed numpy batches.

The schedule is a pure function of the arguments (the generator keys are
:mod:`cutmix_algo.sampling`'s key table):

* epoch ``e`` visits the source in the order ``torch.randperm(N, generator=
  epoch_order_generator(seed, e))``;
* batch ``b`` of epoch ``e`` is positions ``[b * batch_size, (b + 1) * batch_size)`` of that order
  (the last batch may be shorter) and is mixed with the draws of ``writer_batch_generator(seed,
  e, b)``: in batch mode ``sample_params`` (one λ, one box and one permutation per batch), in
  sample mode ``sample_row_params`` (a λ and a box per row, one permutation);
* batches are numbered globally ``g = e * batches_per_epoch + b``; samples are stored in the order
  (epoch, batch, position in batch), so sample ``e * N + b * batch_size + j`` is row ``j`` of
  batch ``b`` of epoch ``e``.

Mixing goes through :func:`cutmix_algo.functional.apply_params` (channels-last), the applier the
online algorithm uses. Row encoding is :mod:`writer.pipeline.encode`, the worker pool :mod:`writer.pipeline.pool`,
the manifest :mod:`writer.format.manifest`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from cutmix_algo.functional import MODES, apply_params, check_mode
from cutmix_algo.sampling import (
    EXACT_SUM_ROWS,
    Box,
    CutMixParams,
    RowParams,
    epoch_order_generator,
    label_lam,
    sample_params,
    sample_row_params,
    writer_batch_generator,
)
from writer.format.schedule import Schedule
from writer.pipeline.imageset import ImageSet

__all__ = [
    "MODES",
    "EpochOrders",
    "MixedBatch",
    "Provenance",
    "Schedule",
    "ScheduleLookup",
    "draw_params",
    "epoch_order",
    "mix_batch",
    "mix_pair",
]

# Roughly how many images one worker task mixes and encodes: big enough to amortize the
# inter-process hop, small enough to keep every worker busy and the progress bar moving.
_IMAGES_PER_TASK = 2048


@dataclass(frozen=True)
class MixedBatch:
    """One mixed batch, numpy throughout, ready to encode.

    Attributes:
        images: uint8 ``(B, H, W, C)``, mixed.
        labels: float32 ``(B, K)``, mixed.
        index_a: int64 ``(B,)`` source index of each row's base image.
        index_b: int64 ``(B,)`` source index of the image pasted into each row's box.
        lam: the label weight of each row's own class: one float shared by every row (batch
            mode), or float64 ``(B,)``, one per row (sample mode).
        box: ``(top, left, bottom, right)`` shared by every row (batch mode), or int64
            ``(B, 4)``, one per row (sample mode).
        epoch: the epoch the batch belongs to.
    """

    images: np.ndarray
    labels: np.ndarray
    index_a: np.ndarray
    index_b: np.ndarray
    lam: float | np.ndarray
    box: Box | np.ndarray
    epoch: int


def epoch_order(seed: int, epoch: int, num_images: int) -> np.ndarray:
    """The int64 order in which epoch ``epoch`` visits the source."""
    return torch.randperm(num_images, generator=epoch_order_generator(seed, epoch)).numpy()


class EpochOrders:
    """:func:`epoch_order`, keeping the last epoch's: callers walk the schedule epoch by epoch."""

    def __init__(self, seed: int, num_images: int) -> None:
        self.seed, self.num_images = seed, num_images
        self._last: tuple[int, np.ndarray] | None = None

    def __call__(self, epoch: int) -> np.ndarray:
        if self._last is None or self._last[0] != epoch:
            self._last = (epoch, epoch_order(self.seed, epoch, self.num_images))
        return self._last[1]


def draw_params(mode: str, n: int, height: int, width: int, alpha: float, seed: int, epoch: int,
                batch: int) -> CutMixParams | RowParams:
    """The draws of batch ``batch`` of epoch ``epoch`` (``n`` rows), from the writer's batch key."""
    generator = writer_batch_generator(seed, epoch, batch)
    if check_mode(mode) == "sample":
        return sample_row_params(n, height, width, alpha, generator)
    return sample_params(n, height, width, alpha, generator)


def _mix(source: ImageSet, index: np.ndarray, params: CutMixParams | RowParams,
         epoch: int) -> MixedBatch:
    images = source.images[index]  # fancy indexing copies: the source stays untouched
    # The training batch size is unknown here: λ goes on the grid that keeps the label rows of
    # any training batch of up to EXACT_SUM_ROWS samples summing exactly (see label_lam).
    out = apply_params(torch.from_numpy(images), torch.from_numpy(source.labels[index]), params,
                       source.num_classes, exact_rows=EXACT_SUM_ROWS, layout="NHWC")
    if isinstance(params, RowParams):
        lam: float | np.ndarray = out.lam.numpy()
        box: Box | np.ndarray = params.boxes.numpy()
    else:
        # The recorded λ is the box's kept fraction even for a one-row batch (where the applier
        # reports 1.0, nothing being mixed): its label row is the same either way, and verify
        # and the pinned bytes expect this value.
        lam, box = label_lam(params.lam, EXACT_SUM_ROWS), params.box
    return MixedBatch(
        images=images,
        labels=out.target.numpy(),
        index_a=index.astype(np.int64),
        index_b=index[params.perm.numpy()].astype(np.int64),
        lam=lam,
        box=box,
        epoch=epoch,
    )


def mix_batch(
    source: ImageSet,
    order: np.ndarray,
    seed: int,
    epoch: int,
    batch: int,
    batch_size: int,
    alpha: float,
    mode: str = "batch",
) -> MixedBatch:
    """Mix batch ``batch`` of epoch ``epoch`` (``order`` is that epoch's :func:`epoch_order`).

    Args:
        source: the source images.
        order: the epoch's visiting order.
        seed: the write's seed.
        epoch: the epoch number.
        batch: the batch number within the epoch.
        batch_size: the nominal batch size.
        alpha: Beta(alpha, alpha) parameter for λ.
        mode: ``"batch"`` (one λ and box for the batch) or ``"sample"`` (one per row).

    Returns:
        MixedBatch: the mixed rows with their provenance.
    """
    index = order[batch * batch_size:(batch + 1) * batch_size]
    _, height, width, _ = source.images.shape
    return _mix(source, index, draw_params(mode, len(index), height, width, alpha, seed, epoch,
                                           batch), epoch)


def mix_pair(source: ImageSet, index_a: int, index_b: int, lam: float, box: Box,
             epoch: int, mode: str = "batch") -> MixedBatch:
    """A one-row batch: ``index_a`` with ``box`` pasted from ``index_b`` (``verify`` uses it).

    ``lam`` is the row's recorded λ; in sample mode the row is built as a sample-mode row (its
    ``lam`` and ``box`` columns hold one row's values), so its bytes are those the write made.
    """
    index = np.array([index_a, index_b], dtype=np.int64)
    perm = torch.tensor([1, 0])
    if check_mode(mode) == "sample":
        params: CutMixParams | RowParams = RowParams(
            torch.tensor([lam, lam], dtype=torch.float64), torch.tensor([box, box]), perm)
    else:
        params = CutMixParams(lam, box, perm)
    pair = _mix(source, index, params, epoch)
    return MixedBatch(pair.images[:1], pair.labels[:1], pair.index_a[:1], pair.index_b[:1],
                      pair.lam[:1] if mode == "sample" else pair.lam,
                      pair.box[:1] if mode == "sample" else box, epoch)


class Provenance(NamedTuple):
    """Where a sample comes from: its place in the schedule and what was mixed into it."""

    epoch: int
    batch: int
    row: int
    index_a: int
    index_b: int
    lam: float
    box: Box


class ScheduleLookup:
    """What the schedule puts at each global sample position, for checking written samples.

    Keeps the last epoch's order and the last batch's parameters, so walking positions in order
    costs one draw of the batch's parameters per batch. In sample mode the row's own λ and box
    are looked up in the batch's per-row draws.
    """

    def __init__(self, schedule: Schedule, seed: int, alpha: float, height: int,
                 width: int, mode: str = "batch") -> None:
        self.schedule, self.seed, self.alpha = schedule, seed, alpha
        self.height, self.width, self.mode = height, width, check_mode(mode)
        self._order = EpochOrders(seed, schedule.num_images)
        self._params: tuple[tuple[int, int], CutMixParams | RowParams] | None = None

    def __call__(self, position: int) -> Provenance:
        schedule = self.schedule
        epoch, rest = divmod(position, schedule.num_images)
        batch, row = divmod(rest, schedule.batch_size)
        order = self._order(epoch)
        if self._params is None or self._params[0] != (epoch, batch):
            params = draw_params(self.mode, schedule.batch_len(batch), self.height, self.width,
                                 self.alpha, self.seed, epoch, batch)
            self._params = ((epoch, batch), params)
        params = self._params[1]
        first = batch * schedule.batch_size
        if isinstance(params, RowParams):
            lam = float(label_lam(params.lam[row : row + 1], EXACT_SUM_ROWS)[0])
            box = Box(*(int(v) for v in params.boxes[row]))
        else:
            lam, box = label_lam(params.lam, EXACT_SUM_ROWS), params.box
        return Provenance(epoch, batch, row, int(order[first + row]),
                          int(order[first + int(params.perm[row])]), lam, box)
