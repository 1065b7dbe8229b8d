"""The pre-mixed reading path: rows decoded as views, uint8 images by default, cheap batches.

``tests/test_writer_dataset.py`` covers what ``PremixedDataset`` yields against the stored rows;
this file covers how it gets there: the fixed-row decoder against streaming's own, rows that do
not fit it, the dtype option, and the recipes' pre-mixed loader.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from streaming.base.format import reader_from_json
from streaming.base.util import clean_stale_shared_memory
from test_writer_cli import read_samples, write

from cutmix_train.config import DataConfig
from cutmix_train.data import _premixed_loader
from writer import PremixedDataset
from writer.dataset import CorruptShardError, _FixedRowDecoder, _OpenShards


@pytest.fixture(autouse=True)
def _fresh_shared_memory() -> None:
    clean_stale_shared_memory()


@pytest.fixture
def dataset(cifar_root: Path, tmp_path: Path) -> Path:
    out = tmp_path / "raw"
    write(cifar_root, out)
    return out


def _first_reader(out: Path):  # noqa: ANN202 (streaming's MDSReader)
    index = json.loads((out / "index.json").read_text())
    return reader_from_json(str(out), "", index["shards"][0])


def test_the_row_decoder_gives_streamings_values_as_views_of_one_writable_row(dataset: Path) -> None:
    reader = _first_reader(dataset)
    decoder = _FixedRowDecoder.for_columns(reader.column_names, reader.column_encodings, reader.column_sizes)
    assert decoder is not None
    for i in (0, 7, 99):
        data = reader.get_sample_data(i)
        expected, got = reader.decode_sample(data), decoder(data)
        assert list(got) == list(expected)
        for name, value in expected.items():
            assert type(got[name]) is type(value), name
            np.testing.assert_array_equal(got[name], value)
        # Every column is a view into one row buffer at its MDS offset: no per-column copies.
        image, box = got["image"], got["box"]
        assert image.flags.writeable and not image.flags.owndata
        assert image.ctypes.data - box.ctypes.data == decoder.record.fields["image"][1]
    size = decoder.record.itemsize  # 3,156 bytes: the image's 3,072 and 84 of the other columns
    assert size == 3156
    with pytest.raises(ValueError, match=f"a row has {size - 1} bytes; its columns need {size}"):
        decoder(reader.get_sample_data(0)[:-1])


def test_png_rows_keep_streamings_decoder_and_give_the_same_uint8_pixels(
    cifar_root: Path, tmp_path: Path, dataset: Path
) -> None:
    png = tmp_path / "png"
    write(cifar_root, png, "--encoding", "png")
    reader = _first_reader(png)
    assert _FixedRowDecoder.for_columns(reader.column_names, reader.column_encodings, reader.column_sizes) is None
    raw_ds = PremixedDataset(local=str(dataset), batch_size=4)
    png_ds = PremixedDataset(local=str(png), batch_size=4)
    for i in (0, 50):
        assert png_ds[i][0].dtype == torch.uint8
        assert torch.equal(png_ds[i][0], raw_ds[i][0])


def test_float32_option_is_the_uint8_pixels_over_255(dataset: Path) -> None:
    as_uint8 = PremixedDataset(local=str(dataset), batch_size=4)
    as_float = PremixedDataset(local=str(dataset), batch_size=4, image_dtype="float32")
    stored = read_samples(dataset)
    for i in (3, 64):
        image, _ = as_uint8[i]
        assert torch.equal(image, torch.from_numpy(stored[i]["image"].copy()).permute(2, 0, 1))
        scaled, _ = as_float[i]
        assert scaled.dtype == torch.float32
        assert torch.equal(scaled, image.float() / 255)
        assert 0.0 <= float(scaled.min()) and float(scaled.max()) <= 1.0


def test_a_bad_image_dtype_is_refused_by_name(dataset: Path) -> None:
    with pytest.raises(ValueError, match="image_dtype must be one of uint8, float32, got 'float16'"):
        PremixedDataset(local=str(dataset), batch_size=4, image_dtype="float16")


def test_changing_a_yielded_image_changes_neither_the_shard_nor_the_next_read(dataset: Path) -> None:
    zeroing = PremixedDataset(local=str(dataset), batch_size=4, transform=lambda x: x.zero_())
    plain = PremixedDataset(local=str(dataset), batch_size=4)
    before = plain[5][0].clone()
    assert int(zeroing[5][0].sum()) == 0
    assert torch.equal(plain[5][0], before) and int(before.sum()) > 0


def test_a_row_of_the_wrong_length_is_a_corrupt_shard(dataset: Path) -> None:
    # Move the boundary between rows 10 and 11 by one byte: the file keeps its size (so the
    # open-time size check passes), and both rows stop fitting the record.
    shard = dataset / "shard.00000.mds"
    data = bytearray(shard.read_bytes())
    offsets = np.frombuffer(data, np.uint32, count=101, offset=4)  # a view: edits land in data
    offsets[11] -= 1
    shard.write_bytes(bytes(data))
    ds = PremixedDataset(local=str(dataset), batch_size=4)
    ds[9]
    with pytest.raises(
        CorruptShardError,
        match=r"shard.00000.mds .*corrupt or unreadable: sample 10: "
        r"ValueError: a row has 3155 bytes",
    ):
        ds[10]


def test_the_recipes_premixed_loader_gives_uint8_batches_of_the_datasets_items(dataset: Path) -> None:
    cfg = DataConfig(dataset="premixed", local=str(dataset))
    images, labels = next(iter(_premixed_loader(cfg, 16)))
    assert images.dtype == torch.uint8 and images.shape == (16, 3, 32, 32) and images.is_contiguous()
    assert labels.dtype == torch.float32 and labels.shape == (16, 10)
    clean_stale_shared_memory()
    ds = PremixedDataset(local=str(dataset), batch_size=16)
    for i in (0, 15):
        assert torch.equal(images[i], ds[i][0]) and torch.equal(labels[i], ds[i][1])


def test_rows_read_ahead_in_order_are_the_stored_rows_and_a_reread_is_fresh(dataset: Path) -> None:
    ds = PremixedDataset(local=str(dataset), batch_size=4)
    stored = read_samples(dataset)
    for i in range(len(ds)):  # in order: read 64 rows at a time, across a read's end
        image, label = ds[i]
        assert torch.equal(image, torch.from_numpy(stored[i]["image"].copy()).permute(2, 0, 1)), i
        assert torch.equal(label, torch.from_numpy(stored[i]["label"].copy())), i
    ds[10][0].zero_()  # a yielded tensor changed in place ...
    assert torch.equal(ds[10][0], torch.from_numpy(stored[10]["image"].copy()).permute(2, 0, 1))
    assert int(ds[11][0].sum()) == int(stored[11]["image"].sum())  # ... changes no other read


def test_open_shards_beyond_the_descriptor_limit_still_read_right(cifar_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "small"
    write(cifar_root, out, "--size-limit", 20_000)  # 6 rows a shard: 17 shards
    index = json.loads((out / "index.json").read_text())
    assert len(index["shards"]) > 3
    files = _OpenShards(limit=2, readahead=4)
    readers = [reader_from_json(str(out), "", info) for info in index["shards"]]
    for i in (0, 1, 2, 3):
        for shard, reader in zip(index["shards"], readers, strict=True):
            path = str(out / shard["raw_data"]["basename"])
            assert bytes(files.row(path, i)) == reader.get_sample_data(i)
    assert len(files._files) == 2
    ds = PremixedDataset(local=str(out), batch_size=4)
    stored = read_samples(out)
    assert all(torch.equal(ds[i][1], torch.from_numpy(stored[i]["label"].copy())) for i in range(len(ds)))


@pytest.mark.parametrize(
    ("values", "ok"),
    [
        ([0.25, 0.75, 0.0], True),
        ([0.0, 1.0, 0.0], True),
        ([np.nan, 0.5, 0.5], False),
        ([0.5, np.nan, 0.5], False),
        ([0.5, 0.5, np.nan], False),
        ([np.inf, 0.0, 0.0], False),
        ([1.0, np.inf, -np.inf], False),
        ([-np.inf, 1.0, 1.0], False),
        ([-0.25, 1.25, 0.0], False),
        ([0.5, 0.4, 0.0], False),
        ([1e30, -1e30, 1.0], False),
    ],
)
def test_the_per_sample_label_check_refuses_what_is_not_a_distribution(values: list[float], ok: bool) -> None:
    from writer.integrity import is_distribution

    label = np.array(values, dtype=np.float32)
    assert is_distribution(label, 3) is ok
    assert is_distribution(label, 4) is False
    assert is_distribution(np.zeros(0, np.float32), 0) is False


def test_iterating_local_shards_takes_no_cache_lock_per_sample(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import streaming.base.dataset as streaming_dataset
    from filelock import FileLock

    acquired = []

    class CountingFileLock(FileLock):
        """The real lock, counting acquisitions (streaming makes a new one per call)."""

        def acquire(self, *args: object, **kwargs: object) -> object:
            acquired.append(1)
            return super().acquire(*args, **kwargs)

    monkeypatch.setattr(streaming_dataset, "FileLock", CountingFileLock)
    ds = PremixedDataset(local=str(dataset), batch_size=4)
    samples = list(iter(ds))
    # streaming takes it about a dozen times to start an epoch, and its prepare_shard once per sample
    assert len(samples) == 100 and len(acquired) < 25
    stored = read_samples(dataset)
    assert all(torch.equal(label, torch.from_numpy(stored[i]["label"].copy())) for i, (_, label) in enumerate(samples))
