"""Image sources for the writer: CIFAR-10, scikit-learn digits, an image folder, an MDS dataset.

Every loader returns an :class:`ImageSet`: uint8 ``(N, H, W, C)`` pixels, int64 labels and the
class names, fully in memory. The position of an image in ``images`` is its *source index*, the
number the writer records as ``index_a``/``index_b`` and ``verify`` looks images up by.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from writer.uri import is_remote

__all__ = [
    "SPLITS",
    "ImageSet",
    "SourceError",
    "load_cifar10",
    "load_digits",
    "load_imagefolder",
    "load_mds",
    "open_source",
]

SPLITS = ("train", "test")
SOURCE_FORMS = "cifar10:DIR, imagefolder:DIR, mds:URI or digits"
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


class SourceError(ValueError):
    """A source that cannot be opened: missing files, a bad spec, images of mixed sizes."""


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
        digest.update(np.ascontiguousarray(self.images).tobytes())
        digest.update(np.ascontiguousarray(self.labels, dtype="<i8").tobytes())
        digest.update("\n".join(self.class_names).encode())
        return digest.hexdigest()


def _make(images: np.ndarray, labels: Sequence[int] | np.ndarray, names: list[str]) -> ImageSet:
    return ImageSet(
        np.ascontiguousarray(images, dtype=np.uint8),
        np.asarray(labels, dtype=np.int64),
        [str(n) for n in names],
    )


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise SourceError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    return split


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except FileNotFoundError:
        raise
    except Exception as e:  # a truncated or foreign file: say which one
        raise SourceError(f"cannot read CIFAR-10 file {path}: {e}") from None


def _get(d: dict, key: str) -> object:
    # The official data pickles use bytes keys; batches.meta has been seen with both.
    if key.encode() in d:
        return d[key.encode()]
    return d[key]


def load_cifar10(root: str | Path, split: str) -> ImageSet:
    """Load CIFAR-10 from ``root/cifar-10-batches-py`` as the official python tarball unpacks.

    Train is ``data_batch_1`` … ``data_batch_5`` concatenated in that order (50,000 images in the
    real set), test is ``test_batch``; rows are 3072 channel-major bytes.

    Args:
        root: the directory that holds ``cifar-10-batches-py/``.
        split: ``"train"`` or ``"test"``.

    Returns:
        ImageSet: ``(N, 32, 32, 3)`` images, their labels and the ten class names.

    Raises:
        SourceError: if the folder or one of its files is missing or unreadable.
    """
    _check_split(split)
    folder = Path(root) / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    where = (
        f"put the unpacked official tarball's 'cifar-10-batches-py' folder inside {Path(root)} "
        "(from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz)"
    )
    if not folder.is_dir():
        raise SourceError(f"CIFAR-10 not found: {folder} does not exist; {where}")
    data, labels = [], []
    try:
        meta = _unpickle(folder / "batches.meta")
        for name in names:
            batch = _unpickle(folder / name)
            data.append(np.asarray(_get(batch, "data"), dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(int(v) for v in _get(batch, "labels"))  # type: ignore[union-attr]
        class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in _get(meta, "label_names")]
    except FileNotFoundError as e:
        raise SourceError(f"CIFAR-10 file missing: {e.filename}; {where}") from None
    except (KeyError, ValueError, TypeError) as e:
        if isinstance(e, SourceError):
            raise
        raise SourceError(f"malformed CIFAR-10 file in {folder}: {e!r}") from None
    return _make(np.concatenate(data).transpose(0, 2, 3, 1), labels, class_names)


def load_digits(split: str) -> ImageSet:
    """Load scikit-learn's bundled 8×8 digits as 32×32 RGB uint8 images (no download).

    Values 0..16 are scaled to 0..255, upscaled with PIL bilinear and copied to three channels.
    The split is fixed: test holds the samples whose index ``% 5 == 0`` (360 of 1797), train the
    other 1437, each in their original order.

    Args:
        split: ``"train"`` or ``"test"``.

    Returns:
        ImageSet: ``(N, 32, 32, 3)`` images and class names ``"0"`` … ``"9"``.
    """
    from PIL import Image
    from sklearn.datasets import load_digits as sk_digits

    _check_split(split)
    bunch = sk_digits()
    index = np.arange(len(bunch.target))
    keep = index % 5 == 0 if split == "test" else index % 5 != 0
    small = np.rint(bunch.images[keep] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    big = np.stack(
        [np.asarray(Image.fromarray(im).resize((32, 32), Image.BILINEAR)) for im in small]
    )
    rgb = np.repeat(big[..., None], 3, axis=-1)
    return _make(rgb, bunch.target[keep], [str(d) for d in range(10)])


def _fit_square(image: object, size: int) -> object:
    from PIL import Image

    w, h = image.size  # type: ignore[attr-defined]
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((nw, nh), Image.BILINEAR)  # type: ignore[attr-defined]
    left, top = (nw - size) // 2, (nh - size) // 2
    return image.crop((left, top, left + size, top + size))  # type: ignore[attr-defined]


def load_imagefolder(root: str | Path, image_size: int | None = None) -> ImageSet:
    """Load ``root/<class>/<image>`` files: classes and files in sorted order, converted to RGB.

    Args:
        root: a folder with one sub-folder per class.
        image_size: resize the shorter side to this and center-crop a square; ``None`` keeps the
            files' size, which must then be the same for all.

    Returns:
        ImageSet: the images in (class, file name) order.

    Raises:
        SourceError: if ``root`` is missing, holds no images, a file cannot be decoded, or sizes
            differ without ``image_size``.
    """
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"image folder not found: {root} is not a directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(
            p for p in (root / name).iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES
        )
        for path in files:
            try:
                with Image.open(path) as im:
                    im = im.convert("RGB")
                    if image_size is not None:
                        im = _fit_square(im, image_size)
                    array = np.asarray(im, dtype=np.uint8)
            except OSError as e:
                raise SourceError(f"cannot decode image {path}: {e}") from None
            if images and array.shape != images[0].shape:
                raise SourceError(
                    f"images differ in size: {path} is {array.shape[1]}x{array.shape[0]} but "
                    f"the first image is {images[0].shape[1]}x{images[0].shape[0]}; "
                    "pass --image-size N to resize and center-crop them all to N x N"
                )
            images.append(array)
            labels.append(label)
    if not images:
        raise SourceError(f"no images found under {root} (expected {root}/<class>/<image file>)")
    return _make(np.stack(images), labels, classes)


def _to_hwc(value: object) -> np.ndarray:
    array = np.asarray(value)  # PIL images and ndarrays alike
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise SourceError(f"MDS image column must hold H x W (x C) images, got shape {array.shape}")
    return array.astype(np.uint8, copy=False)


def load_mds(
    uri: str,
    split: str | None = None,
    image_key: str = "image",
    label_key: str = "label",
    class_names: list[str] | None = None,
) -> ImageSet:
    """Load an existing MDS dataset (a local folder or a remote URI) read through streaming.

    Args:
        uri: the dataset root (``index.json`` there, or under ``split``).
        split: an optional sub-folder of ``uri`` (streaming's ``split``).
        image_key: the column holding images (``ndarray`` or a PIL-decoded encoding).
        label_key: the column holding int labels.
        class_names: names of the classes; default ``"0"`` … ``str(max label)``.

    Returns:
        ImageSet: the samples in dataset order.

    Raises:
        SourceError: if the dataset cannot be opened or lacks the columns.
    """
    import tempfile

    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    remote = is_remote(uri)
    if not remote and not (Path(uri) / (split or "") / "index.json").is_file():
        raise SourceError(f"MDS dataset not found: no index.json under {Path(uri) / (split or '')}")
    clean_stale_shared_memory()
    with tempfile.TemporaryDirectory(prefix="cutmix-mds-src-") as cache:
        try:
            dataset = StreamingDataset(
                remote=uri if remote else None,
                local=cache if remote else uri,
                split=split,
                shuffle=False,
                batch_size=1,
                download_retry=1,
            )
            images, labels = [], []
            for i in range(dataset.num_samples):
                sample = dataset.get_item(i)
                if image_key not in sample or label_key not in sample:
                    raise SourceError(
                        f"MDS dataset {uri} lacks column {image_key!r} or {label_key!r}; "
                        f"it has {sorted(sample)}"
                    )
                images.append(_to_hwc(sample[image_key]))
                labels.append(int(np.asarray(sample[label_key]).reshape(-1)[0]))
        except SourceError:
            raise
        except Exception as e:
            raise SourceError(f"cannot read MDS dataset {uri}: {e}") from None
    if not images:
        raise SourceError(f"MDS dataset {uri} holds no samples")
    if len({im.shape for im in images}) != 1:
        raise SourceError(f"MDS dataset {uri} holds images of different sizes")
    num = max(labels) + 1
    names = class_names if class_names is not None else [str(i) for i in range(num)]
    return _make(np.stack(images), labels, names)


def open_source(spec: str, split: str, image_size: int | None = None) -> ImageSet:
    """Open a source from its ``--source`` spec.

    Args:
        spec: ``cifar10:DIR``, ``imagefolder:DIR`` (``DIR/<split>`` if it exists, else ``DIR``),
            ``mds:URI`` (``URI/<split>`` if it exists, else ``URI``) or ``digits``.
        split: ``"train"`` or ``"test"``.
        image_size: resize/crop size for image folders.

    Returns:
        ImageSet: the loaded images.

    Raises:
        SourceError: on an unknown scheme, an empty path or any loader's error.
    """
    _check_split(split)
    scheme, sep, rest = spec.partition(":")
    if scheme == "digits" and not rest:
        return load_digits(split)
    if not sep or not rest or scheme not in ("cifar10", "imagefolder", "mds"):
        raise SourceError(f"--source must be one of {SOURCE_FORMS}; got {spec!r}")
    if scheme == "cifar10":
        return load_cifar10(rest, split)
    if scheme == "imagefolder":
        root = Path(rest) / split if (Path(rest) / split).is_dir() else Path(rest)
        return load_imagefolder(root, image_size)
    if "://" not in rest:
        has_split = (Path(rest) / split / "index.json").is_file()
        return load_mds(rest, split if has_split else None)
    return load_mds(rest, None)
