"""Standard CIFAR augmentation on the device: pad-and-random-crop plus horizontal flip, batched.

The dataloader hands over uint8 ``(N, C, H, W)`` batches untouched; :class:`DeviceAugment` moves
each training batch to the trainer's device at ``Event.AFTER_DATALOADER`` and crops and flips it
there with one gather, so the input pipeline is a memory copy and never the bottleneck. Offsets
and flips come from a generator derived from ``(seed, rank, batch index)``, like CutMix's draws:
reproducible, resumable from a checkpoint, different on every rank.

Composer runs ``AFTER_*`` events in reverse algorithm order; :func:`augment_before_mixing` is an
algorithm pass that puts augmentation back in front of CutMix at ``AFTER_DATALOADER``, so the
mixed boxes are cut from augmented images whatever the order of the ``algorithms`` list.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from composer.core import Algorithm, Event, State
from composer.core.passes import sort_to_front
from composer.loggers import Logger

from cutmix_algo.algorithm import batch_generator
from cutmix_algo.sampling import AUGMENT_STREAM

__all__ = ["DeviceAugment", "augment_before_mixing", "random_crop_flip"]


def random_crop_flip(
    x: torch.Tensor,
    pad: int,
    hflip: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Crop every image at a random offset of its zero-padded self and flip half of them.

    Equivalent to torchvision's ``RandomCrop(H, padding=pad)`` then ``RandomHorizontalFlip()``
    per sample, done for the whole batch as one gather: no padded copy is materialized.

    Args:
        x: ``(N, C, H, W)`` images, any dtype, on any device.
        pad: zero padding on each side, below the image's shorter side; offsets are drawn from
            ``[0, 2 * pad]``.
        hflip: flip each image left-right with probability 1/2.
        generator: CPU generator for the offsets and flips.

    Returns:
        torch.Tensor: a new ``(N, C, H, W)`` tensor of ``x``'s dtype and device.

    Raises:
        ValueError: if ``x`` is not 4-D, or ``pad`` is negative or not below the shorter side.
    """
    if x.ndim != 4:
        raise ValueError(f"expected a batch (N, C, H, W), got shape {tuple(x.shape)}")
    n, c, height, width = x.shape
    if not 0 <= pad < min(height, width):  # a crop wholly in the padding would be a blank image
        raise ValueError(f"pad must be in [0, {min(height, width) - 1}] for {height}x{width} images, got {pad}")
    # Draws on the CPU (cheap, generator-exact on any device), then one small copy over.
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator)
    flip = torch.rand(n, 1, generator=generator) < 0.5 if hflip else torch.zeros(n, 1, dtype=torch.bool)
    rows = dy + torch.arange(height) - pad  # (N, H): source row of each output row
    cols = dx + torch.arange(width) - pad  # (N, W): source column of each output column
    cols = torch.where(flip, cols.flip(1), cols)
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    index = rows.clamp(0, height - 1)[:, :, None] * width + cols.clamp(0, width - 1)[:, None, :]

    index = index.view(n, 1, height * width).to(x.device, non_blocking=True)
    inside = inside.view(n, 1, height, width).to(x.device, non_blocking=True)
    out = x.reshape(n, c, height * width).gather(2, index.expand(n, c, height * width))
    return out.view(n, c, height, width).mul_(inside)


class DeviceAugment(Algorithm):
    """Move each training batch's images to the device, then random-crop and flip them there.

    Runs at ``Event.AFTER_DATALOADER`` on training batches only (eval batches never pass that
    event). Register :func:`augment_before_mixing` as an algorithm pass so it runs before CutMix.

    Args:
        pad: zero padding for the random crop; ``0`` disables the crop.
        hflip: random horizontal flips.
        seed: seed for the draws; ``None`` uses the trainer's ``rank_zero_seed``.
        input_key: the input's index or key in the batch.

    Example:
        >>> from composer import Trainer
        >>> trainer = Trainer(  # doctest: +SKIP
        ...     model=model, train_dataloader=dl, max_duration="1ep",
        ...     algorithms=[DeviceAugment(pad=4), CutMix(alpha=1.0)],
        ...     algorithm_passes=augment_before_mixing,
        ... )
    """

    def __init__(
        self,
        pad: int = 4,
        hflip: bool = True,
        seed: int | None = None,
        input_key: int | str = 0,
    ) -> None:
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        self.pad = pad
        self.hflip = hflip
        self.seed = seed
        self.input_key = input_key

    def __repr__(self) -> str:
        return f"{type(self).__name__}(pad={self.pad}, hflip={self.hflip}, seed={self.seed})"

    def match(self, event: Event, state: State) -> bool:
        return event == Event.AFTER_DATALOADER

    def apply(self, event: Event, state: State, logger: Logger) -> None:
        # Only the images move here: the labels stay on the host, where CutMix checks their range
        # for free before it moves the rest of the batch (Composer moves it otherwise).
        images = state.device.tensor_to_device(state.batch_get_item(self.input_key))
        if self.pad or self.hflip:
            generator = batch_generator(state, self.seed, AUGMENT_STREAM)  # see sampling's key table
            images = random_crop_flip(images, self.pad, self.hflip, generator)
        state.batch_set_item(self.input_key, images)


def augment_before_mixing(algorithms: Sequence[Algorithm], event: Event) -> Sequence[Algorithm]:
    """Algorithm pass: at ``AFTER_DATALOADER``, run :class:`DeviceAugment` before the others.

    Composer's default passes reverse the algorithm order for ``AFTER_*`` events; this pass runs
    after them and pulls augmentation to the front again.
    """
    if event == Event.AFTER_DATALOADER:
        return sort_to_front(algorithms, DeviceAugment)
    return algorithms
