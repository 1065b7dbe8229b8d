"""Train and eval dataloaders for the recipes: CIFAR-10, scikit-learn digits, pre-mixed shards.

CIFAR-10 and digits are held in memory as uint8 ``(N, C, H, W)`` and served a whole batch per
index operation (``__getitems__``), untouched: augmentation runs on the device
(:mod:`cutmix_train.augment`) and normalization inside the model
(:class:`cutmix_train.models.InputNormalize`). Pre-mixed shards written by ``cutmix-writer``
stream through :class:`writer.PremixedDataset` and :class:`writer.read.dataset.PremixedLoader` (a
``StreamingDataLoader`` reading a whole batch per call), whose state Composer saves in
checkpoints, so a resumed run continues mid-epoch; their images come as uint8 too (normalized by
the same first layer), their labels as float ``(N, K)`` distributions.

Every failure to open data raises :class:`~cutmix_train.config.RecipeError` naming the recipe key
and the path, before any Trainer exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from composer.utils import dist
from torch.utils.data import DataLoader, Dataset

from cutmix_algo.sampling import subset_generator
from cutmix_train.config import DataConfig, RecipeError

__all__ = [
    "STATS",
    "DataBundle",
    "ImageBatchDataset",
    "already_batched",
    "build_data",
    "load_images",
    "per_rank_batch_size",
    "stratified_subset",
    "train_subset",
]

# Per-channel mean and std of the train split, for images in [0, 1].
STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "digits": ((0.3055, 0.3055, 0.3055), (0.3240, 0.3240, 0.3240)),  # measured on load_digits
}
# digits at data.image_size 8 and 16 (32 is STATS["digits"]), measured on writer.load_digits at each size
DIGITS_STATS: dict[int, tuple[tuple[float, ...], tuple[float, ...]]] = {
    8: ((0.3053,) * 3, (0.3762,) * 3),
    16: ((0.3053,) * 3, (0.3191,) * 3),
}


@dataclass(frozen=True)
class DataBundle:
    """What the Trainer assembly needs from the data side.

    Attributes:
        train: the training dataloader (uint8 images; int labels, or float pre-mixed ones).
        eval: the evaluation dataloader (uint8 batches, int labels).
        num_classes: number of classes.
        mean: per-channel normalization mean for images in ``[0, 1]``.
        std: per-channel normalization std.
        source: the image source, ``"cifar10"`` or ``"digits"``.
        premixed: whether training batches come pre-mixed (dense float targets).
        manifest: the pre-mixed shards' manifest (what the writer wrote), else None.
    """

    train: Any
    eval: DataLoader
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    premixed: bool
    manifest: dict | None = None


class ImageBatchDataset(Dataset):
    """In-memory images as a map-style dataset that also serves whole batches in one gather.

    Args:
        images: uint8 ``(N, H, W, C)``, stored once as ``(N, C, H, W)``.
        labels: int ``(N,)``.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        # DataLoader's fetcher calls this with a batch's indices; one index_select per tensor
        # replaces N __getitem__ calls and a collate.
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.images.index_select(0, index), self.labels.index_select(0, index)


def already_batched(batch: Any) -> Any:
    """``collate_fn`` for :class:`ImageBatchDataset`: its ``__getitems__`` returns a batch."""
    return batch


def per_rank_batch_size(global_batch_size: int, key: str) -> int:
    """Split a global batch across ranks, or raise ``RecipeError`` naming ``key``."""
    world = dist.get_world_size()
    if global_batch_size % world:
        raise RecipeError(f"{key}: {global_batch_size} does not split evenly across {world} processes")
    return global_batch_size // world


def _load_cifar10(cfg: DataConfig, split: str) -> Any:
    from writer import SourceError, load_cifar10

    root = Path(cfg.root)
    folder = root / "cifar-10-batches-py"
    if cfg.download and not folder.is_dir():
        _download_cifar10(root)
    try:
        return load_cifar10(root, split)
    except SourceError as e:
        raise RecipeError(f"data.root: {e}") from None


def _download_cifar10(root: Path) -> None:
    from torchvision.datasets import CIFAR10

    # Local rank 0 downloads while the others wait; every rank then checks the unpacked folder,
    # so a failed download fails all ranks instead of leaving some at the barrier.
    error: Exception | None = None
    if dist.get_local_rank() == 0:
        try:
            CIFAR10(str(root), train=True, download=True)
        except Exception as e:  # offline: URLError, or whatever the mirror answers
            error = e
    dist.barrier()
    if error is not None or not (root / "cifar-10-batches-py").is_dir():
        raise RecipeError(
            f"data.download: could not download CIFAR-10 into {root} ({error}); offline, put the "
            f"unpacked 'cifar-10-batches-py' folder inside {root} and set data.download=false"
        )


def load_images(cfg: DataConfig, dataset: str, split: str) -> Any:
    """Load ``split`` of an image source (``cifar10``, or ``digits`` at ``cfg.image_size``) as a ``writer.ImageSet``."""
    if dataset == "cifar10":
        return _load_cifar10(cfg, split)
    if dataset == "digits":
        from writer import load_digits

        return load_digits(split, cfg.image_size)
    raise RecipeError(f"data.dataset: unknown image source {dataset!r}")


def stratified_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of ``per_class`` randomly chosen samples of every class, in ascending order.

    Each class's members are shuffled by one ``torch.randperm`` from a generator seeded with
    ``seed`` (classes in label order), and the first ``per_class`` kept: the same seed gives the
    same subset on any machine, and a larger ``per_class`` keeps a smaller one's images.

    Args:
        labels: int ``(N,)`` class labels.
        per_class: how many samples of each class to keep (``> 0``).
        seed: the subset's seed.

    Returns:
        np.ndarray: int64 indices into ``labels``, sorted, ``per_class`` of each present class.

    Raises:
        ValueError: if ``per_class`` is not positive or a class has fewer than ``per_class`` samples.

    Example:
        >>> stratified_subset(np.array([0, 1, 0, 1, 0, 1]), 2, seed=0).tolist()
        [0, 3, 4, 5]
    """
    if per_class <= 0:
        raise ValueError(f"per_class must be > 0, got {per_class}")
    labels = np.asarray(labels)
    generator = subset_generator(seed)
    keep = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise ValueError(f"class {int(c)} has {len(members)} samples, fewer than {per_class}")
        order = torch.randperm(len(members), generator=generator).numpy()
        keep.append(members[order[:per_class]])
    return np.sort(np.concatenate(keep)).astype(np.int64)


def train_subset(images: Any, per_class: int, seed: int) -> Any:
    """The ``writer.ImageSet`` of :func:`stratified_subset`'s images, in source order.

    Raises:
        RecipeError: naming ``data.train_per_class`` if a class is too small.
    """
    from writer import ImageSet

    try:
        index = stratified_subset(images.labels, per_class, seed)
    except ValueError as e:
        raise RecipeError(f"data.train_per_class: {e} in the train split") from None
    return ImageSet(images.images[index], images.labels[index], list(images.class_names))


def _in_memory_loader(images: Any, batch_size: int, *, train: bool, cfg: DataConfig, seed: int) -> DataLoader:
    dataset = ImageBatchDataset(images.images, images.labels)
    sampler = dist.get_sampler(dataset, shuffle=train, drop_last=train, seed=seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=train,
        collate_fn=already_batched,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


def _premixed_manifest(cfg: DataConfig) -> dict:
    where = cfg.remote or cfg.local
    key = "data.remote" if cfg.remote else "data.local"
    from writer import read_manifest
    from writer.errors import DatasetNotFoundError

    try:
        return read_manifest(where)
    except DatasetNotFoundError as e:
        raise RecipeError(f"{key}: no pre-mixed dataset at {where} ({e}); write one with "
                          "`cutmix-writer write --source ... --out DIR`") from None
    except Exception as e:  # a foreign or unreadable manifest, an unreachable bucket
        raise RecipeError(f"{key}: cannot read the pre-mixed dataset's manifest at {where}: {e}") from None


def _eval_source(cfg: DataConfig, manifest: dict) -> str:
    if cfg.eval_dataset is not None:
        return cfg.eval_dataset
    spec = str(manifest.get("args", {}).get("source", ""))
    name = spec.partition(":")[0]
    if name not in STATS:
        raise RecipeError(
            f"data.eval_dataset: the shards' source {spec!r} has no built-in test split; "
            "set data.eval_dataset to cifar10 or digits"
        )
    return name


def _premixed_loader(cfg: DataConfig, batch_size: int) -> DataLoader:
    from streaming.base.util import clean_stale_shared_memory

    from writer.read.dataset import PremixedDataset, PremixedLoader

    # A run killed earlier leaves shared memory behind that would block this one.
    clean_stale_shared_memory()
    try:
        dataset = PremixedDataset(
            remote=cfg.remote,
            local=cfg.local,
            shuffle=cfg.shuffle,
            shuffle_seed=cfg.shuffle_seed,
            batch_size=batch_size,
        )
    except Exception as e:  # streaming's errors: a bad index, an unreachable bucket, a busy cache
        key, where = ("data.remote", cfg.remote) if cfg.remote else ("data.local", cfg.local)
        raise RecipeError(f"{key}: cannot open the pre-mixed dataset at {where}: {e}") from None
    # A batch's ids at once, read in a few array operations (the same batches as streaming's
    # StreamingDataLoader with a stacking collate, without its per-sample Python).
    return PremixedLoader(
        dataset,
        drop_last=True,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


def build_data(cfg: DataConfig, train_batch_size: int, eval_batch_size: int, seed: int) -> DataBundle:
    """Open the recipe's data: a train loader, an eval loader on the test split, and its stats.

    Args:
        cfg: the recipe's ``data`` section.
        train_batch_size: the global train batch size (split evenly across ranks).
        eval_batch_size: the global eval batch size.
        seed: the shuffling seed for in-memory data (the run's seed), and the subset's seed when
            ``cfg.train_per_class`` is set and ``cfg.subset_seed`` is not.

    Returns:
        DataBundle: loaders, class count, normalization and the image source.

    Raises:
        RecipeError: naming the key and the path, if data cannot be found or opened.
    """
    train_bs = per_rank_batch_size(train_batch_size, "train.batch_size")
    eval_bs = per_rank_batch_size(eval_batch_size, "eval.batch_size")
    if cfg.dataset == "premixed":
        manifest = _premixed_manifest(cfg)
        source = _eval_source(cfg, manifest)
        train = _premixed_loader(cfg, train_bs)
        num_classes = int(manifest["num_classes"])
    else:
        source = cfg.dataset
        train_images = load_images(cfg, source, "train")
        if cfg.train_per_class is not None:
            subset_seed = seed if cfg.subset_seed is None else cfg.subset_seed
            train_images = train_subset(train_images, cfg.train_per_class, subset_seed)
        train = _in_memory_loader(train_images, train_bs, train=True, cfg=cfg, seed=seed)
        num_classes = train_images.num_classes
    eval_images = load_images(cfg, source, "test")
    if eval_images.num_classes != num_classes:
        raise RecipeError(
            f"data.eval_dataset: {source} has {eval_images.num_classes} classes but the training data has {num_classes}"
        )
    if cfg.dataset == "premixed":
        shape = [int(d) for d in manifest["source"]["image_shape"]]
        if shape != list(eval_images.images.shape[1:]):
            # The model pools globally, so other sizes would train and evaluate without an error.
            raise RecipeError(
                f"data.image_size: the shards hold {shape[0]}x{shape[1]} images but the {source} test split is "
                f"{eval_images.images.shape[1]}x{eval_images.images.shape[2]}; set data.image_size={shape[0]}"
            )
    eval_loader = _in_memory_loader(eval_images, eval_bs, train=False, cfg=cfg, seed=seed)
    mean, std = DIGITS_STATS[cfg.image_size] if source == "digits" and cfg.image_size != 32 else STATS[source]
    return DataBundle(
        train=train,
        eval=eval_loader,
        num_classes=num_classes,
        mean=tuple(cfg.mean) if cfg.mean is not None else mean,
        std=tuple(cfg.std) if cfg.std is not None else std,
        source=source,
        premixed=cfg.dataset == "premixed",
        manifest=manifest if cfg.dataset == "premixed" else None,
    )
