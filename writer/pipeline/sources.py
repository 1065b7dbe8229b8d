"""Image sources for the writer: CIFAR-10, scikit-learn digits, an image folder, an MDS dataset.

Every loader returns an :class:`ImageSet`: uint8 ``(N, H, W, C)`` pixels, int64 labels and the
class names, fully in memory (shared memory, which the writer's workers map instead of copying:
:mod:`writer.pipeline.sharedmem`). The position of an image in ``images`` is its *source index*, the
number the writer records as ``index_a``/``index_b`` and ``verify`` looks images up by.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from writer.format.manifest import SPLITS
from writer.format.names import INDEX_NAME, is_remote, join_uri
from writer.pipeline.imageset import ImageSet, SourceError
from writer.pipeline.sharedmem import shared_empty

__all__ = [
    "SPLITS",
    "ImageSet",
    "SourceError",
    "load_cifar10",
    "load_digits",
    "load_imagefolder",
    "load_mds",
    "check_labels",
    "check_pixels",
    "open_source",
    "source_locations",
]

SOURCE_FORMS = "cifar10:DIR, imagefolder:DIR, mds:URI or digits"
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


def _make(images: np.ndarray | Sequence[np.ndarray], labels: Sequence[int] | np.ndarray,
          names: list[str]) -> ImageSet:
    # The pixels and labels go straight into shared memory: a write with several workers then
    # maps them instead of copying them (writer.pipeline.sharedmem). A list of same-shaped images is
    # stacked there.
    if isinstance(images, np.ndarray):
        pixels = shared_empty(images.shape, np.uint8)
        np.copyto(pixels, images, casting="unsafe")
    else:
        pixels = shared_empty((len(images), *np.shape(images[0])), np.uint8)
        np.stack(images, out=pixels, casting="unsafe")
    values = np.asarray(labels)
    shared_labels = shared_empty(values.shape, np.int64)
    np.copyto(shared_labels, values, casting="unsafe")
    return ImageSet(pixels, shared_labels, [str(n) for n in names])


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise SourceError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    return split


def _value_range(array: np.ndarray) -> str:
    if array.size == 0:
        return "no values"
    return f"values in [{array.min()}, {array.max()}]"


def check_pixels(array: np.ndarray, where: str) -> np.ndarray:
    """Return ``array`` as uint8 pixels, refusing anything a cast would change.

    uint8 passes as it is; other integer dtypes pass when every value lies in 0..255 (a lossless
    conversion). Floats, booleans and integers outside 0..255 are refused: a cast would turn
    [0, 1] floats black and wrap 300 to 44.

    Args:
        array: the pixels.
        where: what holds them, for the message (a file, a column).

    Raises:
        SourceError: naming ``where``, the dtype and the range found.
    """
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind in "iu" and (array.size == 0 or (array.min() >= 0 and array.max() <= 255)):
        return array.astype(np.uint8)
    hint = "; scale and round them to uint8 yourself" if array.dtype.kind == "f" else ""
    raise SourceError(
        f"{where} holds {array.dtype} pixels with {_value_range(array)}; expected uint8 pixels "
        f"in [0, 255] (nothing is scaled, clipped or wrapped){hint}"
    )


def check_labels(labels: object, where: str, num_classes: int | None) -> np.ndarray:
    """Return ``labels`` as int64 class numbers in ``[0, num_classes)``, refusing anything else.

    Args:
        labels: a sequence of labels.
        where: what holds them, for the message (a file, a column).
        num_classes: the number of classes, or ``None`` to skip the range check.

    Raises:
        SourceError: for non-integer labels (3.7 is not truncated to 3) or labels out of range,
            naming ``where``, the dtype and the range found.
    """
    array = np.asarray(labels)
    if array.size == 0 and array.ndim == 1:
        return array.astype(np.int64)  # np.asarray([]) is float64: no label was cast
    if array.dtype.kind not in "iu" or array.ndim != 1:
        shape = "" if array.ndim == 1 else f" of shape {array.shape}"
        found = _value_range(array) if array.dtype.kind in "iuf" else "values"
        raise SourceError(
            f"{where} holds {array.dtype} labels{shape} with {found}; expected one int class "
            "per image (nothing is rounded or truncated)"
        )
    if num_classes is not None and array.size and (array.min() < 0 or array.max() >= num_classes):
        raise SourceError(
            f"{where} holds {array.dtype} labels with {_value_range(array)}; expected int "
            f"labels in [0, {num_classes})"
        )
    return array.astype(np.int64)


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
        class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in _get(meta, "label_names")]
        for name in names:
            batch = _unpickle(folder / name)
            pixels = np.asarray(_get(batch, "data"))
            batch_labels = check_labels(list(_get(batch, "labels")), f"{folder / name} 'labels'",  # type: ignore[call-overload]
                                        len(class_names))
            if pixels.shape != (len(batch_labels), 3 * 32 * 32):
                raise SourceError(
                    f"{folder / name} 'data' has shape {pixels.shape}; expected "
                    f"({len(batch_labels)}, 3072): one row of 3072 channel-major bytes per label"
                )
            pixels = check_pixels(pixels, f"{folder / name} 'data'")
            data.append(pixels.reshape(-1, 3, 32, 32))
            labels.append(batch_labels)
    except FileNotFoundError as e:
        raise SourceError(f"CIFAR-10 file missing: {e.filename}; {where}") from None
    except (KeyError, ValueError, TypeError) as e:
        if isinstance(e, SourceError):
            raise
        raise SourceError(f"malformed CIFAR-10 file in {folder}: {e!r}") from None
    if not sum(len(batch) for batch in labels):
        raise SourceError(f"CIFAR-10 {split} split in {folder} holds no images")
    return _make(np.concatenate(data).transpose(0, 2, 3, 1), np.concatenate(labels), class_names)


#: The sizes :func:`load_digits` serves: the native 8×8 grid, or it upscaled.
DIGITS_SIZES = (8, 16, 32)


def load_digits(split: str, size: int = 32) -> ImageSet:
    """Load scikit-learn's bundled 8×8 digits as ``size``×``size`` RGB uint8 images (no download).

    Values 0..16 are scaled to 0..255; at 16 or 32 pixels the grid is upscaled with PIL bilinear;
    the one channel is copied to three. The split is fixed: test holds the samples whose index
    ``% 5 == 0`` (360 of 1797), train the other 1437, each in their original order.

    Args:
        split: ``"train"`` or ``"test"``.
        size: 8, 16 or 32 (the ``digits`` source of ``cutmix-writer`` is 32).

    Returns:
        ImageSet: ``(N, size, size, 3)`` images and class names ``"0"`` … ``"9"``.

    Raises:
        SourceError: for another split or size.

    Example:
        >>> load_digits("test", 8).images.shape
        (360, 8, 8, 3)
    """
    from PIL import Image
    from sklearn.datasets import load_digits as sk_digits

    _check_split(split)
    if size not in DIGITS_SIZES:
        raise SourceError(f"size: digits come at 8, 16 or 32 pixels, got {size!r}")
    bunch = sk_digits()
    index = np.arange(len(bunch.target))
    keep = index % 5 == 0 if split == "test" else index % 5 != 0
    small = np.rint(bunch.images[keep] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    if size != 8:
        small = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR))
                          for im in small])
    rgb = np.repeat(small[..., None], 3, axis=-1)
    return _make(rgb, bunch.target[keep], [str(d) for d in range(10)])


def _fit_square(image: object, size: int) -> object:
    from PIL import Image

    w, h = image.size  # type: ignore[attr-defined]
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((nw, nh), Image.BILINEAR)  # type: ignore[attr-defined]
    left, top = (nw - size) // 2, (nh - size) // 2
    return image.crop((left, top, left + size, top + size))  # type: ignore[attr-defined]


def _check_pixel_limit(size: tuple[int, int], where: str) -> None:
    # PIL itself raises DecompressionBombError only above twice Image.MAX_IMAGE_PIXELS (between
    # one and two times it merely warns); the writer refuses anything over the limit itself. The
    # size comes from the header: nothing has been decoded yet.
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    width, height = size
    if limit is not None and width * height > limit:
        raise SourceError(
            f"{where} is {width}x{height} = {width * height:,} pixels, over PIL's size limit "
            f"(Image.MAX_IMAGE_PIXELS = {limit:,}); expected at most {limit:,} pixels"
        )


@contextlib.contextmanager
def _decoded_within_pixel_limit(where: str) -> Iterator[None]:
    """Decode inside: PIL's warning between one and two times the limit is silenced (the caller
    refuses that size itself, naming the image), and its error above twice it becomes a
    SourceError naming ``where``."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except Image.DecompressionBombError as e:
        raise SourceError(f"{where} is over PIL's size limit (Image.MAX_IMAGE_PIXELS = "
                          f"{Image.MAX_IMAGE_PIXELS:,}): {e}") from None


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _class_folders(root: Path) -> list[str]:
    # Hidden folders (.ipynb_checkpoints, .git, …) are not classes.
    return sorted(p.name for p in _listed(root) if p.is_dir() and not _is_hidden(p))


def _available_memory() -> int | None:
    """The kernel's estimate of memory available to a new process (``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_fits_in_memory(count: int, image_size: int) -> None:
    # The resized images are held twice while they are stacked into one array: refuse a size
    # that cannot fit before decoding anything, instead of meeting the out-of-memory killer.
    need = 2 * count * image_size * image_size * 3
    available = _available_memory()
    if available is not None and need > available:
        raise SourceError(
            f"--image-size {image_size}: {count} images of {image_size} x {image_size} x 3 need "
            f"about {need / 2**30:.1f} GiB of memory to load, more than the {available / 2**30:.1f} GiB "
            "available; pass a smaller --image-size"
        )


def _listed(folder: Path) -> list[Path]:
    # An unreadable folder is the source's fault, not OUT's: name it as a source error.
    try:
        return list(folder.iterdir())
    except OSError as e:
        raise SourceError(f"cannot list image folder {folder}: {e.strerror or e}") from None


def _check_image_mode(mode: str, path: Path) -> None:
    # The file's pixels must be 8-bit channels (or 1-bit), which convert("RGB") keeps as they
    # are: it saturates 16-bit and 32-bit integers (I;16, I: all 255) and float pixels (F:
    # [0, 1] all black) instead of scaling them. The mode is read from the header.
    from PIL import ImageMode

    try:
        eight_bit = mode == "1" or ImageMode.getmode(mode).typestr == "|u1"
    except KeyError:
        eight_bit = False
    if not eight_bit:
        raise SourceError(
            f"image {path} is a PIL image of mode {mode!r}; expected 8-bit "
            f"{', '.join(_PIL_AS_IS)}, P or another 8-bit mode, converted to RGB (nothing is "
            "scaled or clipped to 8 bits; convert it to 8-bit yourself)"
        )


def load_imagefolder(root: str | Path, image_size: int | None = None) -> ImageSet:
    """Load ``root/<class>/<image>`` files: classes and files in sorted order, converted to RGB.

    Hidden folders and files (names starting with ``.``) are skipped; every other folder is a
    class and must hold at least one image file. Images must have 8-bit channels (``L``,
    ``RGB``, ``RGBA``, ``P``, ``CMYK``, … or 1-bit) and at most ``PIL.Image.MAX_IMAGE_PIXELS``
    pixels (when that is not ``None``), both checked from the header before decoding.

    Args:
        root: a folder with one sub-folder per class.
        image_size: resize the shorter side to this and center-crop a square; ``None`` keeps the
            files' size, which must then be the same for all.

    Returns:
        ImageSet: the images in (class, file name) order.

    Raises:
        SourceError: if ``root`` is missing, holds no images, a class folder holds no image
            file, a file cannot be decoded, is not 8-bit, is over PIL's size limit, or sizes
            differ without ``image_size``.
    """
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"image folder not found: {root} is not a directory")
    classes = _class_folders(root)
    listed = []
    for name in classes:
        files = sorted(
            p for p in _listed(root / name)
            if p.is_file() and not _is_hidden(p) and p.suffix.lower() in _IMAGE_SUFFIXES
        )
        if not files:
            raise SourceError(
                f"class folder {root / name} holds no image file; expected at least one "
                f"{'/'.join(sorted(_IMAGE_SUFFIXES))} file in every class folder (an empty one "
                "would be a class no image has); remove the folder or add its images"
            )
        listed.append(files)
    if image_size is not None:
        _check_fits_in_memory(sum(map(len, listed)), image_size)
    images, labels = [], []
    for label, files in enumerate(listed):
        for path in files:
            try:
                with _decoded_within_pixel_limit(f"image {path}"):
                    im = Image.open(path)  # over the limit: refused below, with the file's name
                with im:
                    _check_pixel_limit(im.size, f"image {path}")
                    _check_image_mode(im.mode, path)
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
    return _make(images, labels, classes)


# Column encodings an MDS source may use. Images: an ndarray of integers (checked for 0..255 per
# sample) or an encoding streaming decodes to a PIL image or a uint8 array. Labels: one integer.
_MDS_IMAGE_ENCODINGS = ("ndarray", "pil", "png", "jpeg", "jpeg_array", "jpegarray")
_MDS_LABEL_ENCODINGS = ("int", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                        "uint64", "str_int", "ndarray")
# PIL modes whose pixels are 8-bit channels as they are; "P" and "1" are converted to RGB, since
# their arrays hold palette indices and booleans, not colours.
_PIL_AS_IS = ("L", "RGB", "RGBA")
_PIL_TO_RGB = ("P", "1")


def _check_mds_columns(uri: str, encodings: dict[str, str], image_key: str, label_key: str) -> None:
    expected_image = "ndarray:uint8[:H,W,C], png, jpeg, jpeg_array or pil"
    expected_label = "int, int8 … uint64, str_int, or a scalar integer ndarray"
    for key, flag in ((image_key, "--image-column"), (label_key, "--label-column")):
        if key not in encodings:
            raise SourceError(
                f"MDS dataset {uri} has no column {key!r}; its columns are "
                f"{', '.join(f'{k} ({v})' for k, v in sorted(encodings.items()))}; name the "
                f"right one with {flag}"
            )
    image, label = encodings[image_key], encodings[label_key]
    kind, _, rest = image.partition(":")
    image_dtype = rest.partition(":")[0]
    if kind not in _MDS_IMAGE_ENCODINGS or (image_dtype and np.dtype(image_dtype).kind not in "iu"):
        raise SourceError(
            f"MDS dataset {uri}: image column {image_key!r} is encoded {image!r}; expected "
            f"{expected_image}"
        )
    kind, _, rest = label.partition(":")
    label_dtype, _, label_shape = rest.partition(":")
    scalar = label_shape in ("", "1")
    if (kind not in _MDS_LABEL_ENCODINGS or not scalar
            or (label_dtype and np.dtype(label_dtype).kind not in "iu")):
        raise SourceError(
            f"MDS dataset {uri}: label column {label_key!r} is encoded {label!r}; expected "
            f"{expected_label} (one class per image; soft or float labels cannot be pre-mixed)"
        )


def _mds_image(value: object, where: str) -> np.ndarray:
    from PIL import Image

    if isinstance(value, list):  # jpeg_array: streaming decodes a list of images per sample
        if len(value) != 1:
            raise SourceError(f"{where} holds {len(value)} images (a jpeg_array); expected one "
                              "image per sample")
        value = value[0]
    if isinstance(value, Image.Image):
        _check_pixel_limit(value.size, where)  # png/jpeg are decoded lazily: not yet decoded
        if value.mode in _PIL_TO_RGB:
            value = value.convert("RGB")
        elif value.mode not in _PIL_AS_IS:
            raise SourceError(
                f"{where} is a PIL image of mode {value.mode!r}; expected 8-bit "
                f"{', '.join(_PIL_AS_IS)} (or P, converted to RGB)"
            )
    array = np.asarray(value)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise SourceError(
            f"{where} has shape {array.shape}; expected H x W x C with C = 1, 3 or 4 "
            "(channels last)"
        )
    return check_pixels(array, where)


def _mds_label(value: object, where: str) -> int:
    array = np.asarray(value)
    if array.size != 1:
        raise SourceError(
            f"{where} is a {array.dtype} vector of shape {array.shape}; expected one int class "
            "per image (soft labels cannot be pre-mixed, and nothing is cut to its first value)"
        )
    return int(check_labels(array.reshape(1), where, None)[0])


def load_mds(
    uri: str,
    split: str | None = None,
    image_key: str = "image",
    label_key: str = "label",
    class_names: list[str] | None = None,
    num_classes: int | None = None,
) -> ImageSet:
    """Load an existing MDS dataset (a local folder or a remote URI) read through streaming.

    The columns are checked before any sample is read: ``image_key`` must be an image
    (``ndarray`` of integers, ``png``, ``jpeg``, ``jpeg_array`` or ``pil``) and ``label_key``
    one integer per sample; then every sample is checked: pixels must be 0..255 in a channels-last
    ``H x W x C`` (C = 1, 3, 4) array or an 8-bit PIL image, labels integers in
    ``[0, num_classes)``. Nothing is cast, cut or wrapped to fit.

    Args:
        uri: the dataset root (``index.json`` there, or under ``split``).
        split: an optional sub-folder of ``uri`` (streaming's ``split``).
        image_key: the column holding images.
        label_key: the column holding int labels.
        class_names: names of the classes; default ``"0"`` … ``str(K - 1)``.
        num_classes: ``K``; default ``len(class_names)``, else the largest label + 1, which must
            then leave no class unused (one label of 200000 among ten classes is refused).

    Returns:
        ImageSet: the samples in dataset order.

    Raises:
        SourceError: if the dataset cannot be opened, lacks the columns, or holds values that are
            not images and int labels.
    """
    import tempfile

    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    from writer.streaming_seam import prefix_lock

    remote = is_remote(uri)
    if not remote and not (Path(uri) / (split or "") / INDEX_NAME).is_file():
        raise SourceError(f"MDS dataset not found: no {INDEX_NAME} under {Path(uri) / (split or '')}")
    if class_names is not None and num_classes is not None and len(class_names) != num_classes:
        raise SourceError(f"{len(class_names)} class names for {num_classes} classes")
    clean_stale_shared_memory()
    dataset = None
    with tempfile.TemporaryDirectory(prefix="cutmix-mds-src-") as cache:
        try:
            with prefix_lock():  # see writer.streaming_seam (10)
                dataset = StreamingDataset(
                    remote=uri if remote else None,
                    local=cache if remote else uri,
                    split=split,
                    shuffle=False,
                    batch_size=1,
                    download_retry=1,
                )
            for shard in dataset.shards:
                _check_mds_columns(uri, dict(zip(shard.column_names, shard.column_encodings,
                                                 strict=True)), image_key, label_key)
            images, labels = [], []
            for i in range(dataset.num_samples):
                at = f"MDS dataset {uri}: sample {i}'s"
                # Over the limit is refused by _mds_image, naming the sample.
                with _decoded_within_pixel_limit(f"{at} {image_key!r}"):
                    sample = dataset.get_item(i)
                images.append(_mds_image(sample[image_key], f"{at} {image_key!r}"))
                labels.append(_mds_label(sample[label_key], f"{at} {label_key!r}"))
        except SourceError:
            raise
        except Exception as e:
            raise SourceError(f"cannot read MDS dataset {uri}: {e}") from None
        finally:
            if dataset is not None:  # its shared memory would stay open until the process exits
                from writer.streaming_seam import release_shared_memory

                release_shared_memory(dataset)
    if not images:
        raise SourceError(f"MDS dataset {uri} holds no samples")
    if len({im.shape for im in images}) != 1:
        raise SourceError(f"MDS dataset {uri} holds images of different sizes")
    values = np.asarray(labels, dtype=np.int64)
    where = f"MDS dataset {uri}: column {label_key!r}"
    if num_classes is None and class_names is not None:
        num_classes = len(class_names)
    if num_classes is None:
        used = len(np.unique(values))
        if values.min() < 0 or used != values.max() + 1:
            raise SourceError(
                f"{where} holds labels with {_value_range(values)} but only {used} distinct "
                "classes; expected int labels in [0, K) using every class, or pass "
                "--num-classes K"
            )
        num_classes = int(values.max()) + 1
    check_labels(values, where, num_classes)
    names = class_names if class_names is not None else [str(i) for i in range(num_classes)]
    return _make(images, values, names)


def _imagefolder_root(root: Path, split: str) -> Path:
    # Either DIR/<split>/<class>/<file> for every split, or a flat DIR/<class>/<file>, which is
    # a train split only: reading it again for --split test would silently write train images.
    if not root.is_dir():
        raise SourceError(f"image folder not found: {root} is not a directory")
    splits = [name for name in SPLITS if (root / name).is_dir()]
    if split in splits:
        return root / split
    if splits:
        raise SourceError(
            f"imagefolder:{root} has split folders ({', '.join(f'{s}/' for s in splits)}) but no "
            f"{split}/; expected {root}/{split}/<class>/<image file>"
        )
    if split != "train":
        classes = _class_folders(root)
        found = ", ".join(classes[:5]) + (", …" if len(classes) > 5 else "")
        raise SourceError(
            f"imagefolder:{root} holds class folders ({found or 'none'}) without train/ and "
            f"test/ sub-folders, which is read as --split train only; --split {split} expects "
            f"{root}/{split}/<class>/<image file>"
        )
    return root


# What a remote store's "no such object" looks like: streaming's S3 code lets botocore's
# ClientError through with one of these codes (403 too, which S3 answers for a missing key when
# the caller may not list the bucket), GCS, Azure Data Lake and SFTP raise FileNotFoundError,
# others an HTTP error with status 404 or a *NotFound* exception.
_NOT_FOUND_CODES = {"403", "404", "NoSuchKey"}


def _not_found(error: Exception) -> bool:
    if isinstance(error, FileNotFoundError):
        return True
    response = getattr(error, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    status = getattr(error, "status", None) or getattr(error, "status_code", None)
    if status is None and response is not None and not isinstance(response, dict):
        status = getattr(response, "status_code", None)
    return (code in _NOT_FOUND_CODES or status == 404
            or type(error).__name__.endswith(("NotFound", "NotFoundError")))


def _remote_index_exists(uri: str, split: str) -> bool:
    # Whether URI/<split>/index.json exists, read through streaming's downloader as load_mds
    # reads the dataset. Only a "not found" answer means absent (URI itself is then read); any
    # other failure is an error, not a silent fall back to the root dataset.
    import tempfile

    from streaming.base.storage.download import CloudDownloader

    location = join_uri(uri, split, INDEX_NAME)
    with tempfile.TemporaryDirectory(prefix="cutmix-mds-split-") as scratch:
        try:
            CloudDownloader.direct_download(location, os.path.join(scratch, INDEX_NAME), 60)
        except Exception as e:
            if _not_found(e):
                return False
            raise SourceError(
                f"mds:{uri} --split {split}: cannot tell whether {location} exists: {e}; expected "
                f"it readable (then {join_uri(uri, split)} is read) or absent (then {uri} is)"
            ) from None
    return True


def source_locations(spec: str, split: str) -> list[str]:
    """The local paths or URIs a ``--source`` reads from (none for ``digits``).

    ``cifar10:DIR`` reads ``DIR/cifar-10-batches-py``; ``imagefolder:DIR`` and ``mds:URI`` read
    ``DIR`` (``URI``) as a whole. The writer refuses an OUT that overlaps one of them.
    """
    scheme, sep, rest = spec.partition(":")
    if not sep or not rest or scheme not in ("cifar10", "imagefolder", "mds"):
        return []
    if scheme == "cifar10":
        return [str(Path(rest) / "cifar-10-batches-py")]
    return [rest]


def open_source(
    spec: str,
    split: str,
    image_size: int | None = None,
    *,
    image_column: str = "image",
    label_column: str = "label",
    num_classes: int | None = None,
) -> ImageSet:
    """Open a source from its ``--source`` spec.

    Args:
        spec: ``cifar10:DIR``, ``imagefolder:DIR`` (``DIR/<split>`` if ``DIR`` has split
            folders; a flat ``DIR/<class>`` is train only), ``mds:URI`` (``URI/<split>`` if it
            holds an ``index.json``, locally or in a bucket, else ``URI``) or ``digits``.
        split: ``"train"`` or ``"test"``.
        image_size: ``imagefolder:`` only, the resize/crop size.
        image_column: ``mds:`` only, the column holding images.
        label_column: ``mds:`` only, the column holding int labels.
        num_classes: ``mds:`` only, the number of classes (default: the largest label + 1).

    Returns:
        ImageSet: the loaded images, at least one.

    Raises:
        SourceError: on an unknown scheme, an empty path, an empty split or any loader's error.
    """
    _check_split(split)
    scheme, sep, rest = spec.partition(":")
    mds_options = image_column != "image" or label_column != "label" or num_classes is not None
    if mds_options and scheme != "mds":
        raise SourceError("--image-column, --label-column and --num-classes apply to mds: "
                          f"sources only; got {spec!r}")
    if image_size is not None and scheme != "imagefolder":
        raise SourceError(f"--image-size applies to imagefolder: sources only (it resizes image "
                          f"files; other sources keep their size); got {spec!r}")
    if scheme == "digits" and not rest:
        return load_digits(split)
    if not sep or not rest or scheme not in ("cifar10", "imagefolder", "mds"):
        raise SourceError(f"--source must be one of {SOURCE_FORMS}; got {spec!r}")
    if scheme == "cifar10":
        return load_cifar10(rest, split)
    if scheme == "imagefolder":
        return load_imagefolder(_imagefolder_root(Path(rest), split), image_size)
    has_split = (_remote_index_exists(rest, split) if is_remote(rest)
                 else (Path(rest) / split / INDEX_NAME).is_file())
    return load_mds(rest, split if has_split else None, image_key=image_column,
                    label_key=label_column, num_classes=num_classes)
