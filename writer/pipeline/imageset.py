"""The writer's in-memory image set: what every source loader returns and every step after reads.

A leaf module (numpy and the writer's error base only), so the schedule, the mixing and the
manifest can name the type without importing the loaders.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from writer.errors import SourceError

__all__ = ["ImageSet", "SourceError"]



@dataclass(frozen=True)
class ImageSet:
    """An in-memory labelled image set; an image's position is its source index.

    Attributes:
        images: uint8 ``(N, H, W, C)``.
        labels: int64 ``(N,)``, each in ``[0, len(class_names))``.
        class_names: one name per class, in label order.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise SourceError(
                f"images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise SourceError(
                f"labels must have shape ({self.images.shape[0]},), got {self.labels.shape}"
            )
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= self.num_classes):
            raise SourceError(
                f"labels must lie in [0, {self.num_classes}), "
                f"got values in [{self.labels.min()}, {self.labels.max()}]"
            )

    @property
    def num_classes(self) -> int:
        """Number of classes (the length of ``class_names``)."""
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def fingerprint(self) -> str:
        """A sha256 hex digest of the pixels, shape, labels and class names; stable across runs."""
        digest = hashlib.sha256()
        digest.update(repr(tuple(self.images.shape)).encode())
        digest.update(np.ascontiguousarray(self.images).data)  # hashed in place, not copied
        digest.update(np.ascontiguousarray(self.labels, dtype="<i8").tobytes())
        digest.update("\n".join(self.class_names).encode())
        return digest.hexdigest()
