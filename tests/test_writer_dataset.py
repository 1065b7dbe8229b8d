"""writer.read.dataset: PremixedDataset yields (image, label) tensors and resumes mid-epoch."""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from streaming import StreamingDataLoader
from streaming.base.util import clean_stale_shared_memory
from test_writer_cli import read_samples, write
from torch.utils.data import DataLoader

from writer import PremixedDataset, read_manifest


@pytest.fixture(autouse=True)
def _fresh_shared_memory() -> None:
    clean_stale_shared_memory()


@pytest.fixture
def dataset(cifar_root: Path, tmp_path: Path) -> Path:
    out = tmp_path / "raw"
    write(cifar_root, out, "--epochs", 2)
    return out


def _open(out: Path, **kwargs: object) -> PremixedDataset:
    # streaming keys shared memory by the local path: stream through a fresh cache each time.
    cache = out.parent / f"cache-{uuid.uuid4().hex[:8]}"
    return PremixedDataset(remote=str(out), local=str(cache), **kwargs)


def test_items_are_uint8_chw_images_and_float_labels(dataset: Path) -> None:
    ds = PremixedDataset(local=str(dataset), batch_size=8)
    as_float = PremixedDataset(local=str(dataset), batch_size=8, image_dtype="float32")
    raw = read_samples(dataset)
    assert len(ds) == 200
    for i in (0, 57, 199):
        image, label = ds[i]
        assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
        assert label.dtype == torch.float32 and label.shape == (10,)
        expected = torch.from_numpy(raw[i]["image"].copy()).permute(2, 0, 1)
        torch.testing.assert_close(image, expected, rtol=0, atol=0)
        scaled, same_label = as_float[i]
        assert scaled.dtype == torch.float32 and scaled.shape == (3, 32, 32)
        torch.testing.assert_close(scaled, expected.float() / 255, rtol=0, atol=0)
        torch.testing.assert_close(same_label, label, rtol=0, atol=0)
        torch.testing.assert_close(label, torch.from_numpy(raw[i]["label"].copy()))
        assert float(label.sum()) == pytest.approx(1.0)


def test_png_and_zstd_decode_to_the_same_tensors(cifar_root: Path, tmp_path: Path,
                                                 dataset: Path) -> None:
    png = tmp_path / "png"
    write(cifar_root, png, "--epochs", 2, "--encoding", "png", "--compression", "zstd")
    raw_ds, png_ds = _open(dataset, batch_size=4), _open(png, batch_size=4)
    for i in (0, 3, 150):
        torch.testing.assert_close(png_ds[i][0], raw_ds[i][0], rtol=0, atol=0)
        torch.testing.assert_close(png_ds[i][1], raw_ds[i][1], rtol=0, atol=0)


def test_transform_is_applied_to_the_image(dataset: Path) -> None:
    ds = _open(dataset, batch_size=4, transform=lambda x: x.flip(-1))
    plain = _open(dataset, batch_size=4)
    torch.testing.assert_close(ds[5][0], plain[5][0].flip(-1))


def test_read_manifest_gives_num_classes(dataset: Path, tmp_path: Path) -> None:
    manifest = read_manifest(str(dataset))
    assert manifest["num_classes"] == 10 and manifest["num_samples"] == 200
    with pytest.raises(FileNotFoundError, match="cutmix_manifest.json"):
        read_manifest(str(tmp_path / "nothing"))


def test_streaming_dataloader_resumes_mid_epoch(dataset: Path) -> None:
    full = list(StreamingDataLoader(_open(dataset, batch_size=8), batch_size=8))
    loader = StreamingDataLoader(_open(dataset, batch_size=8), batch_size=8)
    iterator = iter(loader)
    for _ in range(5):
        next(iterator)
    state = loader.state_dict()
    assert state["sample_in_epoch"] == 40
    resumed = StreamingDataLoader(_open(dataset, batch_size=8), batch_size=8)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(full) - 5
    for (xa, ya), (xb, yb) in zip(rest, full[5:], strict=True):
        torch.testing.assert_close(xa, xb, rtol=0, atol=0)
        torch.testing.assert_close(ya, yb, rtol=0, atol=0)


def test_plain_dataloader_batches(dataset: Path) -> None:
    images, labels = next(iter(DataLoader(_open(dataset, batch_size=16), batch_size=16)))
    assert images.shape == (16, 3, 32, 32) and labels.shape == (16, 10)
    np.testing.assert_allclose(labels.sum(1).numpy(), 1.0, rtol=1e-6)


def _bucket_put(folder: Path, bucket: str, prefix: str) -> None:
    """Upload a written dataset as another writer would: same shard names, new bytes."""
    import os

    import boto3

    client = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(folder)}",
                              Body=path.read_bytes())


def test_a_rewritten_bucket_dataset_is_never_read_from_a_stale_cache(
        cifar_root: Path, tmp_path: Path, s3_bucket: str) -> None:
    for seed in (0, 1):
        write(cifar_root, tmp_path / f"seed{seed}", "--seed", seed)
    remote, cache = f"s3://{s3_bucket}/d", str(tmp_path / "cache")
    _bucket_put(tmp_path / "seed0", s3_bucket, "d")
    first = PremixedDataset(remote=remote, local=cache, batch_size=4)
    assert read_manifest(remote)["args"]["seed"] == 0
    old = [first[i] for i in range(len(first))]
    del first
    clean_stale_shared_memory()
    _bucket_put(tmp_path / "seed1", s3_bucket, "d")  # same shard names, as --overwrite writes
    again = PremixedDataset(remote=remote, local=cache, batch_size=4)
    assert read_manifest(remote)["args"]["seed"] == 1 and again.manifest["args"]["seed"] == 1
    expected = PremixedDataset(local=str(tmp_path / "seed1"), batch_size=4)
    for i in range(len(again)):
        torch.testing.assert_close(again[i], expected[i], rtol=0, atol=0)
    assert any(not torch.equal(again[i][0], old[i][0]) for i in range(len(again)))


def test_a_bucket_dataset_without_a_cache_folder_opens_more_than_once(
        cifar_root: Path, tmp_path: Path, s3_bucket: str) -> None:
    """local=None: streaming's one folder per URI failed (FileExistsError) on the second open."""
    write(cifar_root, tmp_path / "d", "--seed", 0)
    _bucket_put(tmp_path / "d", s3_bucket, "d")
    expected = PremixedDataset(local=str(tmp_path / "d"), batch_size=4)
    for _ in range(2):
        with PremixedDataset(remote=f"s3://{s3_bucket}/d", batch_size=4) as ds:
            for i in (0, len(ds) - 1):
                torch.testing.assert_close(ds[i], expected[i], rtol=0, atol=0)


def test_a_merged_root_disagreeing_with_a_rewritten_group_is_refused(cifar_root: Path,
                                                                      tmp_path: Path) -> None:
    import shutil

    from test_writer_cli import ok

    out = tmp_path / "groups"
    common = ("--epochs", 2, "--num-groups", 2)
    for group in (0, 1):
        write(cifar_root, out, *common, "--group", group)
    ok("merge", out)
    assert len(PremixedDataset(local=str(out), batch_size=4)) == 200
    # Group 1 written again with another seed (here beside, then moved in: whatever the writer
    # does to the merged root, the reader must not trust it).
    write(cifar_root, tmp_path / "other", *common, "--group", 1, "--seed", 5)
    shutil.rmtree(out / "group-1")
    shutil.copytree(tmp_path / "other" / "group-1", out / "group-1")
    clean_stale_shared_memory()
    with pytest.raises(ValueError, match="group-1/cutmix_manifest.json disagrees.*merge"):
        PremixedDataset(local=str(out), batch_size=4)
    (out / "group-1" / "cutmix_manifest.json").write_text(
        (out / "group-0" / "cutmix_manifest.json").read_text().replace('"index": 0', '"index": 1')
        .replace('"start_batch": 0', '"start_batch": 7').replace('"stop_batch": 7', '"stop_batch": 14'))
    with pytest.raises(ValueError, match="group-1/index.json lists other shards"):
        PremixedDataset(local=str(out), batch_size=4)


def _tampered_label(dataset: Path, out: Path, position: int) -> None:
    import json
    import shutil

    from streaming import MDSWriter

    manifest = json.loads((dataset / "cutmix_manifest.json").read_text())
    samples = read_samples(dataset)
    label = np.zeros(10, dtype=np.float32)
    label[:2] = [np.nan, 1e30]
    samples[position]["label"] = label
    with MDSWriter(out=str(out), columns=manifest["columns"], hashes=["sha1", "xxh64"]) as writer:
        for sample in samples:
            writer.write(sample)
    shutil.copy(dataset / "cutmix_manifest.json", out / "cutmix_manifest.json")


def test_a_nan_label_stops_reading_with_the_shard_named(dataset: Path, tmp_path: Path) -> None:
    from writer.read.dataset import CorruptShardError

    _tampered_label(dataset, tmp_path / "nan", 30)
    ds = PremixedDataset(local=str(tmp_path / "nan"), batch_size=8)
    ds[29]
    with pytest.raises(CorruptShardError, match="shard.00000.mds .*corrupt: sample 30's label"):
        ds[30]
    with pytest.raises(CorruptShardError, match="shard.00000.mds"):
        list(DataLoader(_open(tmp_path / "nan", batch_size=8), batch_size=8))


def test_a_shard_short_of_a_row_is_named_as_corrupt_whatever_the_epoch_size(cifar_root: Path,
                                                                             tmp_path: Path) -> None:
    """The shard named is the sample's (ids count over the dataset, not one epoch's share)."""
    import json
    import struct

    from writer.read.dataset import CorruptShardError

    out = tmp_path / "many"
    write(cifar_root, out, "--epochs", 2, "--size-limit", 20000)  # 200 samples, a few per shard
    shards = json.loads((out / "index.json").read_text())["shards"]
    assert len(shards) > 4
    first = sum(shard["samples"] for shard in shards[:3])
    last = first + shards[3]["samples"] - 1  # shard.00003.mds's last sample
    path = out / shards[3]["raw_data"]["basename"]
    with open(path, "r+b") as f:  # its header now lists one row fewer than the index
        f.write(struct.pack("<I", shards[3]["samples"] - 1))
    with PremixedDataset(local=str(out), batch_size=8, epoch_size=first) as ds:
        assert len(ds) < last
        with pytest.raises(CorruptShardError, match=rf"shard {path.name} .*sample {last}"):
            ds[last]  # was a bare IndexError (which also means "past the end"), or another shard
        ds[first]  # its other rows read
        with pytest.raises(CorruptShardError, match=rf"shard {path.name} .*sample {last}:"):
            ds[list(range(first, last + 1))]  # a batch names the missing row, not its first
        with pytest.raises(IndexError):
            ds[ds.num_samples]  # past the end is still an IndexError
        with pytest.raises(TypeError, match="index must be an int"):
            ds[(1, 2)]  # was a TypeError from inside the error handler


def test_a_truncated_local_shard_is_named_at_open(dataset: Path) -> None:
    from writer.read.dataset import CorruptShardError

    shard = dataset / "shard.00000.mds"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(CorruptShardError, match="shard shard.00000.mds .* is corrupt: .*shard.00000.mds has"):
        PremixedDataset(local=str(dataset), batch_size=8)


def test_a_shard_altered_in_the_remote_fails_its_hash_on_download(
    dataset: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from writer.read.dataset import CorruptShardError

    shard = dataset / "shard.00000.mds"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01  # a pixel: only a hash can tell
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptShardError, match="shard.00000.mds .*corrupt: it fails its xxh64 hash"):
        _open(dataset, batch_size=8)[0]
    loader = StreamingDataLoader(_open(dataset, batch_size=8), batch_size=8)
    with caplog.at_level("ERROR"), pytest.raises(CorruptShardError, match="shard.00000.mds"):
        list(loader)
    # One error, raised by the loop: streaming's thread callback does not also log a traceback.
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


_READ_WITH_WORKERS = """
import sys
from torch.utils.data import DataLoader
from writer import PremixedDataset
from writer.read.dataset import CorruptShardError
remote, local, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
dataset = PremixedDataset(remote=remote, local=local, batch_size=8)
try:
    for _ in DataLoader(dataset, batch_size=8, num_workers=workers):
        pass
except CorruptShardError as e:
    print("corrupt:", str(e).rstrip().splitlines()[-1])
    sys.exit(3)
print("read it all")
"""


def test_a_shard_that_fails_its_hash_stops_every_worker_and_leaves_no_cached_copy(
    dataset: Path, tmp_path: Path
) -> None:
    """Streaming left the failed copy cached and the shard 'preparing': other workers waited
    forever for it, and a second open took the cached copy (of the right size) as good."""
    import subprocess
    import sys

    shard = dataset / "shard.00000.mds"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    # Two DataLoader workers (before: one of them, at random, waited forever for the shard the
    # other failed to download); then one process finds the cache as they left it.
    for attempt, workers in enumerate([2, 0]):
        run = subprocess.run([sys.executable, "-c", _READ_WITH_WORKERS, str(dataset), str(cache), str(workers)],
                             capture_output=True, text=True, timeout=120, env=env)
        assert run.returncode == 3, (attempt, run.stdout, run.stderr)
        assert "shard.00000.mds" in run.stdout and "fails its xxh64 hash" in run.stdout
        assert list(cache.glob("*/index.json")) and not list(cache.rglob("shard.00000.mds*"))
    assert shard.read_bytes() == bytes(data)  # the remote itself is never touched


def _descriptors() -> list[str]:
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the listing's own descriptor, closed by now
            pass
    return links


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_close_releases_the_shared_memory_streaming_kept_until_exit(dataset: Path) -> None:
    from writer.streaming_seam import shared_blocks

    with PremixedDataset(local=str(dataset), batch_size=8) as ds:
        names = ["/dev/shm/" + block.shm.name.lstrip("/") for block in shared_blocks(ds)]
        assert len(names) >= 6 and all(os.path.exists(n) for n in names)
        assert set(names) <= set(_descriptors())
        ds[[0, 1]]
    assert not set(names) & set(_descriptors())
    assert not any(os.path.exists(n) for n in names)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_building_many_datasets_does_not_pile_up_descriptors(dataset: Path) -> None:
    # streaming's cleanup-at-exit kept every block open, and each new dataset opened every
    # earlier one's: 12 more descriptors per dataset than the one before. (Datasets other tests
    # left open may add the same number to every step; the steps must not grow.)
    counts = []
    for _ in range(6):
        ds = PremixedDataset(local=str(dataset), batch_size=8)
        ds[0]
        del ds
        gc.collect()
        counts.append(len(_descriptors()))
    steps = np.diff(counts)
    assert steps[-1] <= steps[0], counts


def _drop_a_copy(data: bytes) -> None:
    copy = pickle.loads(data)
    copy.close()
    del copy
    gc.collect()


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm")
def test_a_workers_copy_leaves_the_shared_memory_to_its_owner(dataset: Path) -> None:
    from writer.streaming_seam import shared_blocks

    with PremixedDataset(local=str(dataset), batch_size=8) as ds:
        names = ["/dev/shm/" + block.shm.name.lstrip("/") for block in shared_blocks(ds)]
        # As a DataLoader worker started by spawn gets it: pickled, then dropped at its exit.
        worker = multiprocessing.get_context("spawn").Process(target=_drop_a_copy,
                                                               args=(pickle.dumps(ds),))
        worker.start()
        worker.join(120)
        assert worker.exitcode == 0
        assert all(os.path.exists(n) for n in names)
        ds[[0, 1]]
    assert not any(os.path.exists(n) for n in names)
