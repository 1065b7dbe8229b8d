"""Reading pre-mixed datasets back: ``(image, label)`` tensors for training, and the manifest.

``PremixedDataset`` is a ``StreamingDataset``, so shuffling, sharding across ranks and workers,
and mid-epoch resumption (``state_dict``/``load_state_dict``, which Composer calls through
``StreamingDataLoader``) all come from streaming unchanged.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from streaming import StreamingDataset

from writer.premix import MANIFEST_NAME
from writer.uri import fetch, is_remote

__all__ = ["PremixedDataset", "read_manifest"]


def read_manifest(remote_or_local: str) -> dict:
    """Load the ``cutmix_manifest.json`` of a pre-mixed dataset.

    Args:
        remote_or_local: the dataset's folder, or its remote URI (``s3://…``, …).

    Returns:
        dict: the manifest; ``num_classes``, ``class_names``, ``args`` (alpha, batch_size,
        epochs, seed, encoding, …), ``source`` (fingerprint, num_images, image_shape),
        ``num_samples``.

    Raises:
        FileNotFoundError: if there is no manifest there.

    Example:
        >>> read_manifest("/data/cifar10-cutmix")["num_classes"]  # doctest: +SKIP
        10
    """
    if not is_remote(remote_or_local):
        path = os.path.join(remote_or_local, MANIFEST_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no {MANIFEST_NAME} in {remote_or_local}: not a pre-mixed "
                                    "dataset written by cutmix-writer")
        with open(path) as f:
            return json.load(f)
    with tempfile.TemporaryDirectory(prefix="cutmix-manifest-") as scratch:
        try:
            fetch(remote_or_local, [MANIFEST_NAME], scratch)
        except Exception as e:
            raise FileNotFoundError(
                f"cannot read {MANIFEST_NAME} from {remote_or_local}: {e}") from None
        with open(os.path.join(scratch, MANIFEST_NAME)) as f:
            return json.load(f)


def _image_tensor(image: Any) -> torch.Tensor:
    array = np.asarray(image)  # a raw ndarray, or a decoded PNG/JPEG PIL image
    if array.ndim == 2:
        array = array[..., None]
    # float32 division matches torch's ``uint8 tensor.float() / 255`` bit for bit.
    scaled = array.astype(np.float32)
    scaled /= np.float32(255.0)
    return torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 0, 1)))


class PremixedDataset(StreamingDataset):
    """A pre-mixed CutMix dataset yielding ``(image, label)``.

    ``image`` is a float32 ``C x H x W`` tensor in ``[0, 1]`` (PNG/JPEG samples are decoded);
    ``label`` is the float32 ``[K]`` mixed class distribution, ready for a soft-target loss.

    Args:
        remote: remote URI to stream from, or ``None`` for a local dataset.
        local: local folder (the dataset itself, or the cache for ``remote``). Use a fresh
            folder per concurrent dataset: streaming keys its shared memory by it.
        shuffle: shuffle samples (streaming's shuffle); the pre-mixed order is already
            random, so the default keeps it.
        shuffle_seed: streaming's shuffle seed.
        batch_size: the per-rank batch size of the loader, which streaming uses to partition
            samples for deterministic resumption.
        transform: applied to the image tensor.
        **kwargs: passed to ``StreamingDataset``.

    Example:
        >>> ds = PremixedDataset(local="/data/cifar10-cutmix", batch_size=128)  # doctest: +SKIP
        >>> image, label = ds[0]  # doctest: +SKIP
    """

    def __init__(
        self,
        remote: str | None = None,
        local: str | None = None,
        shuffle: bool = False,
        shuffle_seed: int = 9176,
        batch_size: int | None = None,
        transform: Callable[[torch.Tensor], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(remote=remote, local=local, shuffle=shuffle, shuffle_seed=shuffle_seed,
                         batch_size=batch_size, **kwargs)
        self.transform = transform

    def __getitem__(self, index: int) -> tuple[Any, torch.Tensor]:  # type: ignore[override]
        sample = super().__getitem__(index)
        image = _image_tensor(sample["image"])
        label = torch.from_numpy(np.array(sample["label"], dtype=np.float32))
        if self.transform is not None:
            image = self.transform(image)
        return image, label
