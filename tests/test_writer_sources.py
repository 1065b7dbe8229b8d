"""writer.sources: each loader returns the documented pixels, labels and order, or a clear error."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from writer.sources import (
    ImageSet,
    SourceError,
    load_cifar10,
    load_digits,
    load_imagefolder,
    load_mds,
    open_source,
)


def _raw_batch(root: Path, name: str) -> dict:
    with open(root / "cifar-10-batches-py" / name, "rb") as f:
        return pickle.load(f, encoding="bytes")


def test_cifar10_train_is_the_five_batches_in_order_channel_major(cifar_root: Path) -> None:
    train = load_cifar10(cifar_root, "train")
    assert train.images.shape == (100, 32, 32, 3) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64 and train.num_classes == 10
    assert train.class_names[0] == "airplane" and train.class_names[9] == "truck"
    third = _raw_batch(cifar_root, "data_batch_3")
    row = third[b"data"][7]
    # Image 7 of batch 3 sits at position 2 * 20 + 7; its red plane is the row's first 1024 bytes.
    np.testing.assert_array_equal(train.images[47, :, :, 0], row[:1024].reshape(32, 32))
    np.testing.assert_array_equal(train.images[47, :, :, 2], row[2048:].reshape(32, 32))
    assert train.labels[47] == third[b"labels"][7]


def test_cifar10_test_split_and_bytes_meta_keys(cifar_root: Path) -> None:
    meta_path = cifar_root / "cifar-10-batches-py" / "batches.meta"
    meta = pickle.loads(meta_path.read_bytes())
    meta_path.write_bytes(pickle.dumps({b"label_names": [n.encode() for n in meta["label_names"]]}))
    test = load_cifar10(cifar_root, "test")
    assert len(test) == 20 and test.class_names[1] == "automobile"
    assert test.labels.tolist() == _raw_batch(cifar_root, "test_batch")[b"labels"]


def test_cifar10_missing_folder_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cifar-10-batches-py"):
        load_cifar10(tmp_path, "train")


def test_cifar10_missing_batch_names_the_file(cifar_root: Path) -> None:
    (cifar_root / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(SourceError, match="data_batch_4"):
        load_cifar10(cifar_root, "train")


def test_digits_split_is_index_mod_5_and_images_are_32x32_rgb() -> None:
    from sklearn.datasets import load_digits as sk_digits

    train, test = load_digits("train"), load_digits("test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.images.shape == (1437, 32, 32, 3) and train.images.dtype == np.uint8
    assert train.class_names == [str(d) for d in range(10)]
    target = sk_digits().target
    np.testing.assert_array_equal(test.labels, target[::5])
    np.testing.assert_array_equal(train.labels, np.delete(target, np.arange(0, 1797, 5)))
    np.testing.assert_array_equal(test.images[..., 0], test.images[..., 2])
    assert test.images.max() == 255


def test_fingerprint_is_stable_and_sees_every_part(cifar_root: Path) -> None:
    a, b = load_cifar10(cifar_root, "train"), load_cifar10(cifar_root, "train")
    assert a.fingerprint() == b.fingerprint()
    labels = a.labels.copy()
    labels[0] = (labels[0] + 1) % 10
    images = a.images.copy()
    images[5, 1, 2, 0] ^= 1
    assert ImageSet(a.images, labels, a.class_names).fingerprint() != a.fingerprint()
    assert ImageSet(images, a.labels, a.class_names).fingerprint() != a.fingerprint()
    names = list(a.class_names)
    names[3] = "kitten"
    assert ImageSet(a.images, a.labels, names).fingerprint() != a.fingerprint()


def _image_folder(root: Path, sizes: dict[str, list[tuple[int, int]]]) -> Path:
    rng = np.random.default_rng(0)
    for name, shapes in sizes.items():
        (root / name).mkdir(parents=True)
        for k, (w, h) in enumerate(shapes):
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{k:02d}.png")
    return root


def test_imagefolder_sorted_classes_and_files(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "f", {"zebra": [(8, 8)] * 2, "ant": [(8, 8)] * 3})
    images = load_imagefolder(root)
    assert images.class_names == ["ant", "zebra"]
    assert images.labels.tolist() == [0, 0, 0, 1, 1]
    first = np.asarray(Image.open(root / "ant" / "00.png"))
    np.testing.assert_array_equal(images.images[0], first)


def test_imagefolder_mixed_sizes_need_image_size(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "f", {"a": [(8, 8), (12, 10)]})
    with pytest.raises(SourceError, match="--image-size"):
        load_imagefolder(root)
    assert load_imagefolder(root, image_size=6).images.shape == (2, 6, 6, 3)


def test_load_mds_reads_ndarray_and_png_columns(tmp_path: Path, cifar_root: Path) -> None:
    from streaming import MDSWriter

    source = load_cifar10(cifar_root, "test")
    for encoding in ("ndarray:uint8", "png"):
        out = tmp_path / encoding.replace(":", "_")
        with MDSWriter(out=str(out), columns={"image": encoding, "label": "int"}) as writer:
            for image, label in zip(source.images, source.labels, strict=True):
                value = image if encoding.startswith("ndarray") else Image.fromarray(image)
                writer.write({"image": value, "label": int(label)})
        # 20 random labels leave a class unused: K must be given, not guessed from the largest.
        loaded = load_mds(str(out), num_classes=10)
        np.testing.assert_array_equal(loaded.images, source.images)
        np.testing.assert_array_equal(loaded.labels, source.labels)


def test_open_source_parses_specs(cifar_root: Path) -> None:
    assert len(open_source(f"cifar10:{cifar_root}", "test")) == 20
    assert len(open_source("digits", "test")) == 360
    for bad in ("cifar100:/x", "cifar10:", "/just/a/path", "digits:x"):
        with pytest.raises(SourceError, match="--source"):
            open_source(bad, "train")
    with pytest.raises(SourceError, match="split"):
        open_source("digits", "val")
