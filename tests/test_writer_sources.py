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


# -- no silent casts ---------------------------------------------------------------------------


def _rewrite_batch(root: Path, name: str, **changes: object) -> None:
    path = root / "cifar-10-batches-py" / name
    batch = pickle.loads(path.read_bytes())
    batch.update({k.encode(): v for k, v in changes.items()})
    path.write_bytes(pickle.dumps(batch))


@pytest.mark.parametrize(("data", "found"), [
    (lambda d: d.astype(np.float32) / 255, "float32 pixels with values in [0.0, 1.0]"),
    (lambda d: d.astype(np.int16) + 300, "int16 pixels with values in [300, 555]"),
    (lambda d: d.astype(np.int16) - 256, "int16 pixels with values in [-256, -1]"),
])
def test_cifar_pixels_that_a_cast_would_change_are_refused(cifar_root: Path, data, found: str) -> None:  # noqa: ANN001
    raw = _raw_batch(cifar_root, "data_batch_2")[b"data"]
    _rewrite_batch(cifar_root, "data_batch_2", data=data(raw))
    with pytest.raises(SourceError, match="data_batch_2 'data'") as e:
        load_cifar10(cifar_root, "train")
    assert found in str(e.value) and "expected uint8 pixels in [0, 255]" in str(e.value)


def test_cifar_int_pixels_in_range_are_taken_losslessly(cifar_root: Path) -> None:
    before = load_cifar10(cifar_root, "train")
    raw = _raw_batch(cifar_root, "data_batch_2")[b"data"]
    _rewrite_batch(cifar_root, "data_batch_2", data=raw.astype(np.int64))
    np.testing.assert_array_equal(load_cifar10(cifar_root, "train").images, before.images)


@pytest.mark.parametrize(("labels", "found"), [
    ([3.7] * 20, "float64 labels"),
    ([10] + [0] * 19, "expected int labels in [0, 10)"),
    ([-1] + [0] * 19, "values in [-1, 0]"),
])
def test_cifar_labels_that_are_not_classes_are_refused(cifar_root: Path, labels: list,
                                                       found: str) -> None:
    _rewrite_batch(cifar_root, "test_batch", labels=labels)
    with pytest.raises(SourceError, match="test_batch 'labels'") as e:
        load_cifar10(cifar_root, "test")
    assert found in str(e.value)


def test_empty_cifar_split_is_refused(cifar_root: Path) -> None:
    _rewrite_batch(cifar_root, "test_batch", labels=[], data=np.zeros((0, 3072), np.uint8))
    with pytest.raises(SourceError, match="holds no images"):
        load_cifar10(cifar_root, "test")


def _mds(out: Path, columns: dict[str, str], rows: list[dict]) -> Path:
    from streaming import MDSWriter

    with MDSWriter(out=str(out), columns=columns) as writer:
        for row in rows:
            writer.write(row)
    return out


def _images(n: int, dtype: object = np.uint8, offset: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.integers(0, 256, (8, 8, 3)) + offset).astype(dtype) for _ in range(n)]


@pytest.mark.parametrize(("encoding", "images", "found"), [
    ("ndarray", [im / 255 for im in _images(4)], "float64 pixels"),
    ("ndarray:int16", _images(4, np.int16, 300), "int16 pixels with values in [300,"),
    ("ndarray:int16", _images(4, np.int16, -256), "int16 pixels with values in [-256,"),
    ("ndarray:uint8", [im.transpose(2, 0, 1).copy() for im in _images(4)], "channels last"),
])
def test_mds_pixels_that_a_cast_would_change_are_refused(tmp_path: Path, encoding: str,
                                                         images: list, found: str) -> None:
    root = _mds(tmp_path / "m", {"image": encoding, "label": "int"},
                [{"image": im, "label": i % 2} for i, im in enumerate(images)])
    with pytest.raises(SourceError, match="sample 0's 'image'") as e:
        load_mds(str(root))
    assert found in str(e.value)


def test_mds_float_image_column_is_refused_before_reading(tmp_path: Path) -> None:
    root = _mds(tmp_path / "m", {"image": "ndarray:float32:8,8,3", "label": "int"},
                [{"image": im.astype(np.float32), "label": 0} for im in _images(2)])
    with pytest.raises(SourceError, match="image column 'image' is encoded 'ndarray:float32:8,8,3'"):
        load_mds(str(root))


@pytest.mark.parametrize(("encoding", "label", "found"), [
    ("ndarray:float32:10", np.eye(10, dtype=np.float32)[3], "encoded 'ndarray:float32:10'"),
    ("float32", 3.7, "encoded 'float32'"),
    ("ndarray", np.array([0.3, 0.7]), "vector of shape (2,)"),
    ("ndarray", np.array([3.7]), "float64 labels"),
])
def test_mds_soft_or_float_labels_are_refused(tmp_path: Path, encoding: str, label: object,
                                              found: str) -> None:
    root = _mds(tmp_path / "m", {"image": "ndarray:uint8", "label": encoding},
                [{"image": im, "label": label} for im in _images(3)])
    with pytest.raises(SourceError, match="'label'") as e:
        load_mds(str(root))
    assert found in str(e.value)


def test_mds_one_huge_label_does_not_make_200001_classes(tmp_path: Path) -> None:
    labels = [0, 1, 2, 200000]
    root = _mds(tmp_path / "m", {"image": "ndarray:uint8", "label": "int"},
                [{"image": im, "label": y} for im, y in zip(_images(4), labels, strict=True)])
    with pytest.raises(SourceError, match=r"values in \[0, 200000\] but only 4 distinct"):
        load_mds(str(root))
    with pytest.raises(SourceError, match=r"expected int labels in \[0, 10\)"):
        load_mds(str(root), num_classes=10)


def test_mds_columns_named_by_the_user(tmp_path: Path) -> None:
    images = _images(4)
    root = _mds(tmp_path / "m", {"img": "png", "y": "int64", "soft": "ndarray:float32:2"},
                [{"img": Image.fromarray(im), "y": i % 2, "soft": np.zeros(2, np.float32)}
                 for i, im in enumerate(images)])
    with pytest.raises(SourceError, match="no column 'image'.*--image-column"):
        load_mds(str(root))
    loaded = open_source(f"mds:{root}", "train", image_column="img", label_column="y")
    np.testing.assert_array_equal(loaded.images, np.stack(images))
    assert loaded.labels.tolist() == [0, 1, 0, 1] and loaded.num_classes == 2
    with pytest.raises(SourceError, match="mds: sources only"):
        open_source("digits", "train", label_column="y")


def test_imagefolder_test_split_needs_a_test_folder(tmp_path: Path) -> None:
    flat = _image_folder(tmp_path / "flat", {"a": [(8, 8)], "b": [(8, 8)]})
    assert len(open_source(f"imagefolder:{flat}", "train")) == 2
    with pytest.raises(SourceError, match=r"without train/ and test/ sub-folders.*test/<class>"):
        open_source(f"imagefolder:{flat}", "test")
    split = _image_folder(tmp_path / "split" / "train", {"a": [(8, 8)] * 3})
    with pytest.raises(SourceError, match=r"has split folders \(train/\) but no test/"):
        open_source(f"imagefolder:{split.parent}", "test")
    _image_folder(split.parent / "test", {"a": [(8, 8)]})
    assert len(open_source(f"imagefolder:{split.parent}", "test")) == 1
    assert len(open_source(f"imagefolder:{split.parent}", "train")) == 3


def test_imagefolder_image_over_pils_limit_is_a_source_error(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    root = _image_folder(tmp_path / "f", {"a": [(16, 16)]})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 256 pixels > 2 x 100: a "bomb"
    with pytest.raises(SourceError, match="over PIL's size limit"):
        load_imagefolder(root)
