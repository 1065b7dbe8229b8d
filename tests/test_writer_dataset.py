"""writer.dataset: PremixedDataset yields (image, label) tensors and resumes mid-epoch."""

from __future__ import annotations

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


def test_items_are_float_chw_images_in_unit_range_and_float_labels(dataset: Path) -> None:
    ds = PremixedDataset(local=str(dataset), batch_size=8)
    raw = read_samples(dataset)
    assert len(ds) == 200
    for i in (0, 57, 199):
        image, label = ds[i]
        assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
        assert label.dtype == torch.float32 and label.shape == (10,)
        expected = torch.from_numpy(raw[i]["image"].copy()).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(image, expected, rtol=0, atol=0)
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
