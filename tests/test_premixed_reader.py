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
from writer.read.dataset import CorruptShardError, _FixedRowDecoder, _OpenShards


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
    from writer.format.checks import is_distribution

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


# --- whole batches: PremixedDataset.__getitems__ and PremixedLoader -------------------------


def _stack(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*batch, strict=True)
    return torch.stack(images), torch.stack(labels)


def _per_sample_loader(out: Path, batch_size: int, drop_last: bool = True, **kwargs: object):  # noqa: ANN202
    """streaming's own loader over the per-sample path: what PremixedLoader must reproduce."""
    from streaming import StreamingDataLoader

    clean_stale_shared_memory()
    loader_kwargs = {k: kwargs.pop(k) for k in ("num_workers",) if k in kwargs}
    ds = PremixedDataset(local=str(out), batch_size=batch_size, **kwargs)  # type: ignore[arg-type]
    return StreamingDataLoader(ds, batch_size=batch_size, collate_fn=_stack, drop_last=drop_last, **loader_kwargs)


def _batched_loader(out: Path, batch_size: int, drop_last: bool = True, **kwargs: object):  # noqa: ANN202
    from writer.read.dataset import PremixedLoader

    clean_stale_shared_memory()
    loader_kwargs = {k: kwargs.pop(k) for k in ("num_workers",) if k in kwargs}
    ds = PremixedDataset(local=str(out), batch_size=batch_size, **kwargs)  # type: ignore[arg-type]
    return PremixedLoader(ds, drop_last=drop_last, **loader_kwargs)


def _assert_same_batches(got: list, expected: list) -> None:
    assert len(got) == len(expected) > 0
    for (images, labels), (want_images, want_labels) in zip(got, expected, strict=True):
        assert images.dtype == want_images.dtype and images.shape == want_images.shape
        assert images.is_contiguous() and labels.is_contiguous()
        assert torch.equal(images, want_images) and torch.equal(labels, want_labels)


@pytest.mark.parametrize(
    ("kwargs", "batch_size", "drop_last"),
    [
        ({}, 16, True),
        ({}, 16, False),  # 100 = 6 x 16 + 4: the short batch is kept
        ({"shuffle": True, "shuffle_seed": 3}, 12, True),
        ({"shuffle": True, "image_dtype": "float32"}, 7, False),
    ],
)
def test_the_batch_loader_yields_streamings_batches_exactly(
    dataset: Path, kwargs: dict, batch_size: int, drop_last: bool
) -> None:
    expected_loader = _per_sample_loader(dataset, batch_size, drop_last, **dict(kwargs))
    expected, expected_next = list(expected_loader), list(expected_loader)  # two epochs
    loader = _batched_loader(dataset, batch_size, drop_last, **dict(kwargs))
    assert len(loader) == len(expected_loader) == len(expected)
    assert loader.batch_size == batch_size  # Composer's default microbatch size comes from it
    _assert_same_batches(list(loader), expected)
    _assert_same_batches(list(loader), expected_next)  # reshuffled the same way, if shuffled
    if "shuffle" in kwargs:
        assert not torch.equal(expected[0][0], expected_next[0][0])
    if not drop_last:
        assert len(expected[-1][0]) == 100 % batch_size


def test_the_batch_loader_with_workers_matches_streamings(dataset: Path) -> None:
    expected = list(_per_sample_loader(dataset, 8, num_workers=2))
    _assert_same_batches(list(_batched_loader(dataset, 8, num_workers=2)), expected)


def test_the_batch_loader_resumes_mid_epoch_from_streamings_state(dataset: Path) -> None:
    from writer.read.dataset import PremixedLoader

    full = list(_per_sample_loader(dataset, 8))
    expected_loader = _per_sample_loader(dataset, 8)
    expected_iterator = iter(expected_loader)
    loader = _batched_loader(dataset, 8)
    iterator = iter(loader)
    for _ in range(5):
        next(iterator), next(expected_iterator)
    state = loader.state_dict()
    assert state == expected_loader.state_dict() and state["sample_in_epoch"] == 40
    clean_stale_shared_memory()
    resumed = PremixedLoader(PremixedDataset(local=str(dataset), batch_size=8))
    resumed.load_state_dict(state)
    _assert_same_batches(list(resumed), full[5:])


def test_the_batch_loader_downloads_a_remote_dataset_as_streaming_does(dataset: Path, tmp_path: Path) -> None:
    from writer.read.dataset import PremixedLoader

    expected = list(_per_sample_loader(dataset, 10))
    clean_stale_shared_memory()
    ds = PremixedDataset(remote=str(dataset), local=str(tmp_path / "cache"), batch_size=10)
    assert not ds.all_local_and_raw()  # nothing is local yet: streaming's threads download
    _assert_same_batches(list(PremixedLoader(ds)), expected)
    assert ds.all_local_and_raw()


def test_a_batch_is_the_stacked_samples_for_any_ids(cifar_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "small"
    write(cifar_root, out, "--size-limit", 20_000)  # 6 rows a shard: batches span shards
    for dtype in ("uint8", "float32"):
        clean_stale_shared_memory()
        ds = PremixedDataset(local=str(out), batch_size=4, image_dtype=dtype)
        rng = np.random.default_rng(0)
        for ids in ([0, 1, 2, 3], list(range(3, 20)), rng.permutation(100)[:33].tolist(), [5, 5, 4, 99, -1], [17]):
            images, labels = ds.__getitems__(ids)
            want_images, want_labels = _stack([ds[i] for i in ids])
            assert images.is_contiguous() and images.dtype == want_images.dtype
            assert torch.equal(images, want_images) and torch.equal(labels, want_labels), ids
        images, _ = ds[np.array([8, 2])]  # an array index is a batch too
        assert torch.equal(images, torch.stack([ds[8][0], ds[2][0]]))


def test_a_batch_read_is_fresh_memory(dataset: Path) -> None:
    ds = PremixedDataset(local=str(dataset), batch_size=4)
    first, _ = ds.__getitems__([0, 1, 2])
    before = first.clone()
    ds.__getitems__([0, 1, 2])[0].zero_()
    assert torch.equal(ds.__getitems__([0, 1, 2])[0], before) and torch.equal(first, before)
    assert torch.equal(ds[1][0], before[1])


def test_png_batches_fall_back_to_samples_with_the_same_values(cifar_root: Path, tmp_path: Path, dataset: Path) -> None:
    png = tmp_path / "png"
    write(cifar_root, png, "--encoding", "png")
    raw_ds = PremixedDataset(local=str(dataset), batch_size=4)
    png_ds = PremixedDataset(local=str(png), batch_size=4)
    assert png_ds._batch_record(np.array([0])) is None
    ids = [9, 3, 50]
    for got, want in zip(png_ds.__getitems__(ids), raw_ds.__getitems__(ids), strict=True):
        assert torch.equal(got, want)


def test_a_transform_applies_to_each_image_of_a_batch(dataset: Path) -> None:
    flipped = PremixedDataset(local=str(dataset), batch_size=4, transform=lambda x: x.flip(-1))
    plain = PremixedDataset(local=str(dataset), batch_size=4)
    assert torch.equal(flipped.__getitems__([4, 5])[0], plain.__getitems__([4, 5])[0].flip(-1))


def test_bad_batch_ids_are_refused_by_name(dataset: Path) -> None:
    ds = PremixedDataset(local=str(dataset), batch_size=4)
    with pytest.raises(IndexError, match=r"indices: sample 100 is not in the dataset \(100 samples\)"):
        ds.__getitems__([3, 100])
    with pytest.raises(IndexError, match="indices: sample -101 is not in the dataset"):
        ds.__getitems__([-101])
    with pytest.raises(ValueError, match=r"indices: expected a non-empty flat sequence of sample ids, got shape \(0"):
        ds.__getitems__([])
    with pytest.raises(ValueError, match=r"got shape \(1, 2\)"):
        ds.__getitems__([[1, 2]])
    with pytest.raises(ValueError, match="of float64"):
        ds.__getitems__([1.5])


def test_a_nan_label_in_a_batch_is_a_corrupt_shard_naming_the_sample(dataset: Path, tmp_path: Path) -> None:
    from test_writer_dataset import _tampered_label

    _tampered_label(dataset, tmp_path / "nan", 30)
    ds = PremixedDataset(local=str(tmp_path / "nan"), batch_size=8)
    ds.__getitems__(list(range(0, 30)))
    message = r"shard.00000.mds .*corrupt: sample 30's label is not a distribution over 10 classes"
    with pytest.raises(CorruptShardError, match=message):
        ds.__getitems__([31, 29, 30])
    with pytest.raises(CorruptShardError, match=message):
        list(_batched_loader(tmp_path / "nan", 8))


def test_a_row_of_the_wrong_length_in_a_batch_is_a_corrupt_shard(dataset: Path) -> None:
    shard = dataset / "shard.00000.mds"
    data = bytearray(shard.read_bytes())
    offsets = np.frombuffer(data, np.uint32, count=101, offset=4)  # a view: edits land in data
    offsets[11] -= 1  # rows 10 and 11 stop fitting the record; the file keeps its size
    shard.write_bytes(bytes(data))
    ds = PremixedDataset(local=str(dataset), batch_size=4)
    ds.__getitems__([9, 12])
    with pytest.raises(CorruptShardError, match=r"corrupt or unreadable: sample 11: ValueError: a row has 3157 bytes"):
        ds.__getitems__([12, 11, 10])


def test_a_shard_cut_short_after_opening_is_named_in_a_batch_read(dataset: Path) -> None:
    ds = PremixedDataset(local=str(dataset), batch_size=4)  # the size check at open passes
    shard = dataset / "shard.00000.mds"
    shard.write_bytes(shard.read_bytes()[: -3156 * 3])  # the last three rows gone
    ds.__getitems__([0, 96])
    with pytest.raises(CorruptShardError, match=r"corrupt or unreadable: sample 97: ValueError: a row of "
                                                r"shard.00000.mds ends after the file"):
        ds.__getitems__([95, 96, 97, 98])
    with pytest.raises(CorruptShardError, match="sample 98: ValueError: a row of shard.00000.mds ends after"):
        ds.__getitems__([98, 3, 40])


def test_the_batch_loader_refuses_what_it_decides(dataset: Path) -> None:
    from torch.utils.data import TensorDataset

    from writer.read.dataset import PremixedLoader

    ds = PremixedDataset(local=str(dataset), batch_size=4)
    with pytest.raises(TypeError, match="dataset: PremixedLoader reads a PremixedDataset, got TensorDataset"):
        PremixedLoader(TensorDataset(torch.zeros(2)))  # type: ignore[arg-type]
    for key in ("batch_size", "collate_fn", "shuffle"):
        with pytest.raises(ValueError, match=f"{key}: PremixedLoader sets it"):
            PremixedLoader(ds, **{key: None})
    clean_stale_shared_memory()
    with pytest.raises(ValueError, match="dataset: PremixedLoader needs the dataset's batch_size, got None"):
        PremixedLoader(PremixedDataset(local=str(dataset)))


def test_the_batch_loader_reads_a_batch_of_consecutive_rows_in_one_call(
    dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    reads, samples = [], []
    preadv, sample = os.preadv, PremixedDataset._sample

    def counting_preadv(fd: int, buffers: list, offset: int) -> int:
        reads.append(len(buffers))
        return preadv(fd, buffers, offset)

    def counting_sample(self: PremixedDataset, index: int):  # noqa: ANN202
        samples.append(index)
        return sample(self, index)

    monkeypatch.setattr(os, "preadv", counting_preadv)
    monkeypatch.setattr(PremixedDataset, "_sample", counting_sample)
    batches = list(_batched_loader(dataset, 16))
    assert len(batches) == 6 and samples == []  # no sample read alone
    assert reads == [1] * 6  # streaming's unshuffled order: each batch one read into one buffer
