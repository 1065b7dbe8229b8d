"""The batch schedule of a pre-mixed dataset: which source images, in which batch, at which row.

A pure function of the source's size and the write's ``batch_size`` and ``epochs``: the write
plans its work from it, and every reader checks an index's sample counts (and a group's share)
against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Schedule"]


@dataclass(frozen=True)
class Schedule:
    """How ``num_images`` source images, ``epochs`` times over, split into batches."""

    num_images: int
    batch_size: int
    epochs: int

    @property
    def batches_per_epoch(self) -> int:
        """Number of batches in one epoch (the last one may be short)."""
        return math.ceil(self.num_images / self.batch_size)

    @property
    def total_batches(self) -> int:
        """Number of batches over all epochs."""
        return self.batches_per_epoch * self.epochs

    @property
    def total_samples(self) -> int:
        """Number of samples over all epochs."""
        return self.num_images * self.epochs

    def locate(self, global_batch: int) -> tuple[int, int]:
        """``(epoch, batch in epoch)`` of a global batch number."""
        return divmod(global_batch, self.batches_per_epoch)

    def batch_len(self, batch: int) -> int:
        """Number of samples in batch ``batch`` of any epoch."""
        return min(self.batch_size, self.num_images - batch * self.batch_size)

    def first_sample(self, global_batch: int) -> int:
        """Global sample position of the first row of a global batch."""
        epoch, batch = self.locate(global_batch)
        return epoch * self.num_images + batch * self.batch_size

    def group_range(self, num_groups: int, group: int) -> tuple[int, int]:
        """The contiguous global batch range ``[start, stop)`` that group ``group`` writes."""
        if not 0 <= group < num_groups:
            raise ValueError(f"group must lie in [0, {num_groups}), got {group}")
        total = self.total_batches
        return group * total // num_groups, (group + 1) * total // num_groups

    def tasks(self, start: int, stop: int, images_per_task: int = 2048) -> list[tuple[int, int, int]]:
        """Split global batches ``[start, stop)`` into ``(epoch, first, end)`` chunks of about
        ``images_per_task`` images (at least one batch each)."""
        per_task = max(1, images_per_task // self.batch_size)
        out = []
        g = start
        while g < stop:
            epoch, batch = self.locate(g)
            end = min(batch + per_task, self.batches_per_epoch, batch + stop - g)
            out.append((epoch, batch, end))
            g += end - batch
        return out
