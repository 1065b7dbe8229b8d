"""writer.pipeline.sources: each loader returns the documented pixels, labels and order, or a clear error."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from writer.pipeline.sources import (
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


def test_an_image_size_that_cannot_fit_in_memory_is_refused_before_decoding(tmp_path: Path) -> None:
    """--image-size 100000 on two small images met the out-of-memory killer (23 GB, exit 137)."""
    from writer.pipeline.sources import _available_memory

    root = _image_folder(tmp_path / "f", {"a": [(8, 8), (12, 10)]})
    available = _available_memory()
    assert available is not None  # Linux: /proc/meminfo
    side = int((available / 6) ** 0.5) + 1  # 2 images x side^2 x 3 bytes, held twice: > available
    with pytest.raises(SourceError, match=rf"--image-size {side}: 2 images of .* GiB available"):
        load_imagefolder(root, image_size=side)


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


def test_load_mds_reads_a_jpeg_array_of_one_image_per_sample_and_refuses_more(tmp_path: Path) -> None:
    """streaming decodes jpeg_array to a list of images: one is an image, two are not one sample's."""
    import io

    from streaming import MDSWriter

    def jpeg(value: int) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buffer, format="JPEG", quality=100)
        return buffer.getvalue()

    for count in (1, 2):
        out = tmp_path / f"ja{count}"
        with MDSWriter(out=str(out), columns={"image": "jpeg_array", "label": "int"}) as writer:
            for i in range(4):
                writer.write({"image": [jpeg(40 * i)] * count, "label": i % 2})
        if count == 1:
            loaded = load_mds(str(out))
            assert loaded.images.shape == (4, 8, 8, 3) and loaded.labels.tolist() == [0, 1, 0, 1]
            assert [int(round(float(im.mean()))) for im in loaded.images] == [0, 40, 80, 120]
        else:
            with pytest.raises(SourceError, match="holds 2 images.*expected one image per sample"):
                load_mds(str(out))


def test_reading_an_mds_source_leaves_no_descriptor_open(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """load_mds releases streaming's shared memory; it kept every block until the process exited.

    Counted exactly: descriptors on the blocks of the prefixes load_mds's own datasets took (other
    processes' datasets, e.g. a parallel test worker's, change this process's total count).
    """
    import os

    import streaming.base.dataset as streaming_dataset
    from streaming import MDSWriter

    out = tmp_path / "src"
    with MDSWriter(out=str(out), columns={"image": "ndarray:uint8", "label": "int"}) as writer:
        for i in range(4):
            writer.write({"image": np.full((8, 8, 3), i, np.uint8), "label": i % 2})
    prefixes: list[int] = []
    real = streaming_dataset.get_shm_prefix

    def recorded(*args: object, **kwargs: object) -> tuple:
        prefix, shm = real(*args, **kwargs)
        prefixes.append(prefix)
        return prefix, shm

    monkeypatch.setattr(streaming_dataset, "get_shm_prefix", recorded)

    def ours_open() -> list[str]:
        targets = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                targets.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                continue
        return [t for t in targets for p in set(prefixes) if t.startswith(f"/dev/shm/{p:06}_")]

    for _ in range(3):
        load_mds(str(out))
        assert prefixes and ours_open() == [], ours_open()  # each read used to keep ~100 open


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


# -- audit fixes: remote splits, bit depth, hidden and empty folders, --image-size, size limit ---


def _upload(folder: Path, bucket: str, prefix: str) -> None:
    import os

    import boto3

    client = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")


def test_remote_mds_reads_the_split_folder_that_holds_an_index(tmp_path: Path,
                                                               s3_bucket: str) -> None:
    # A root dataset of 6 images and a test/ sub-dataset of 3 (different pixels), as a bucket
    # holding both would: --split test reads test/, --split train (no train/) the root.
    local = tmp_path / "src"
    root_images, test_images = _images(6), [im // 2 for im in _images(3)]
    _mds(local, {"image": "ndarray:uint8", "label": "int"},
         [{"image": im, "label": i % 2} for i, im in enumerate(root_images)])
    _mds(local / "test", {"image": "ndarray:uint8", "label": "int"},
         [{"image": im, "label": i % 2} for i, im in enumerate(test_images)])
    _upload(local, s3_bucket, "ds")
    uri = f"s3://{s3_bucket}/ds"
    test = open_source(f"mds:{uri}", "test")
    np.testing.assert_array_equal(test.images, np.stack(test_images))
    train = open_source(f"mds:{uri}", "train")
    np.testing.assert_array_equal(train.images, np.stack(root_images))
    # The same layout read locally gives the same answers.
    assert open_source(f"mds:{local}", "test").fingerprint() == test.fingerprint()
    assert open_source(f"mds:{local}", "train").fingerprint() == train.fingerprint()


def test_remote_split_check_that_fails_is_an_error_not_the_root(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from streaming.base.storage.download import CloudDownloader

    def unreachable(*args: object, **kwargs: object) -> None:
        raise ConnectionError("connection reset by peer")

    monkeypatch.setattr(CloudDownloader, "direct_download", unreachable)
    with pytest.raises(SourceError, match=r"--split test: cannot tell whether "
                       r"s3://b/ds/test/index.json exists: connection reset by peer"):
        open_source("mds:s3://b/ds", "test")


def _save(path: Path, image: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.mark.parametrize(("name", "image", "mode"), [
    ("x.png", Image.fromarray(np.full((4, 4), 1000, np.uint16)), "I;16"),
    ("x.tiff", Image.fromarray(np.full((4, 4), 0.5, np.float32)), "F"),
    ("x.tiff", Image.fromarray(np.full((4, 4), 70000, np.int32)), "I"),
])
def test_imagefolder_pixels_that_are_not_8_bit_are_refused(tmp_path: Path, name: str,
                                                           image: Image.Image, mode: str) -> None:
    path = _save(tmp_path / "f" / "a" / name, image)
    assert Image.open(path).mode == mode  # what PIL reads back, so the case is the one meant
    with pytest.raises(SourceError, match="is a PIL image of mode") as e:
        load_imagefolder(tmp_path / "f")
    assert f"{path} is a PIL image of mode {mode!r}; expected 8-bit" in str(e.value)


def test_imagefolder_8_bit_modes_are_converted_to_rgb_as_before(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (6, 6), dtype=np.uint8)
    rgba = rng.integers(0, 256, (6, 6, 4), dtype=np.uint8)
    files = {
        "l.png": Image.fromarray(gray),
        "la.png": Image.fromarray(rgba[..., :2].copy(), "LA"),
        "one.png": Image.fromarray(gray > 127),
        "p.png": Image.fromarray(rgba[..., :3].copy()).quantize(16),
        "rgba.png": Image.fromarray(rgba),
        "cmyk.tiff": Image.fromarray(rgba, "RGBA").convert("CMYK"),
    }
    paths = [_save(tmp_path / "f" / "a" / name, im) for name, im in sorted(files.items())]
    loaded = load_imagefolder(tmp_path / "f")
    for image, path in zip(loaded.images, paths, strict=True):
        np.testing.assert_array_equal(image, np.asarray(Image.open(path).convert("RGB")))


def test_imagefolder_skips_hidden_folders_and_files(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "f", {".ipynb_checkpoints": [(8, 8)], "cat": [(8, 8)] * 2,
                                          "dog": [(8, 8)]})
    (root / "cat" / "._00.png").write_bytes(b"\0\5\26\7 AppleDouble resource fork")
    _save(root / "dog" / ".hidden.png", Image.new("RGB", (8, 8)))
    loaded = load_imagefolder(root)
    assert loaded.class_names == ["cat", "dog"] and loaded.labels.tolist() == [0, 0, 1]
    np.testing.assert_array_equal(loaded.images[2], np.asarray(Image.open(root / "dog" / "00.png")))


def test_imagefolder_class_folder_without_images_is_refused(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "f", {"ant": [(8, 8)], "zebra": [(8, 8)]})
    (root / "bee").mkdir()
    (root / "bee" / "notes.txt").write_text("no images here")
    with pytest.raises(SourceError, match=r"class folder .*bee holds no image file"):
        load_imagefolder(root)


@pytest.mark.parametrize("kind", ["digits", "cifar10", "mds"])
def test_image_size_is_refused_for_sources_it_does_not_resize(tmp_path: Path, cifar_root: Path,
                                                              kind: str) -> None:
    if kind == "mds":
        rows = [{"image": im, "label": 0} for im in _images(2)]
        spec = f"mds:{_mds(tmp_path / 'm', {'image': 'ndarray:uint8', 'label': 'int'}, rows)}"
    else:
        spec = "digits" if kind == "digits" else f"cifar10:{cifar_root}"
    with pytest.raises(SourceError, match="--image-size applies to imagefolder: sources only"):
        open_source(spec, "train", 16)
    assert len(open_source(spec, "train")) > 0


@pytest.mark.parametrize(("size", "refused"), [((10, 10), False), ((15, 10), True),
                                               ((25, 10), True)])
def test_imagefolder_image_over_the_limit_not_only_twice_it_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: tuple[int, int],
        refused: bool) -> None:
    # PIL itself raises only above 2 x MAX_IMAGE_PIXELS (25 x 10); between 1x and 2x (15 x 10)
    # it merely warns. Exactly the limit (10 x 10) is taken.
    root = _image_folder(tmp_path / "f", {"a": [size]})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    if not refused:
        assert load_imagefolder(root).images.shape == (1, 10, 10, 3)
        return
    with pytest.raises(SourceError, match=r"00.png is .*over PIL's size limit") as e:
        load_imagefolder(root)
    assert "MAX_IMAGE_PIXELS = 100" in str(e.value)


@pytest.mark.parametrize("size", [(15, 10), (25, 10)])
def test_mds_pil_image_over_the_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 size: tuple[int, int]) -> None:
    pixels = np.zeros((size[1], size[0], 3), np.uint8)
    png = _mds(tmp_path / "png", {"image": "png", "label": "int"},
               [{"image": Image.fromarray(pixels), "label": 0}])
    raw = _mds(tmp_path / "raw", {"image": "ndarray:uint8", "label": "int"},
               [{"image": pixels, "label": 0}])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(SourceError, match=r"sample 0's 'image' is .*over PIL's size limit"):
        load_mds(str(png))
    assert len(load_mds(str(raw))) == 1  # an ndarray column is not decoded by PIL
