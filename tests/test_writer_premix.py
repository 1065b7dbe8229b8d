"""writer.pipeline.premix, writer.pipeline.encode: the schedule, the mixing through cutmix_algo and the MDS row
encoding (the pool and the shards: test_writer_shards.py)."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cutmix_algo.sampling import EXACT_SUM_ROWS, ORDER_KEY, derive_generator, kept_fraction, label_lam, sample_params
from writer.pipeline.encode import column_encodings, encode_rows
from writer.pipeline.premix import MixedBatch, Schedule, epoch_order, mix_batch
from writer.pipeline.sources import ImageSet, load_cifar10


@pytest.fixture
def source(cifar_root: Path) -> ImageSet:
    return load_cifar10(cifar_root, "train")


def test_epoch_order_and_batch_params_follow_the_documented_keys(source: ImageSet) -> None:
    order = epoch_order(5, 3, len(source))
    expected = torch.randperm(len(source), generator=derive_generator(5, 3, 2**32 - 1))
    assert ORDER_KEY == 2**32 - 1
    np.testing.assert_array_equal(order, expected.numpy())
    mixed = mix_batch(source, order, seed=5, epoch=3, batch=2, batch_size=16, alpha=1.0)
    params = sample_params(16, 32, 32, 1.0, derive_generator(5, 3, 2))
    assert (mixed.lam, mixed.box) == (label_lam(params.lam, EXACT_SUM_ROWS), params.box)
    np.testing.assert_array_equal(mixed.index_a, order[32:48])
    np.testing.assert_array_equal(mixed.index_b, order[32:48][params.perm.numpy()])


def test_each_row_is_the_cutmix_of_its_two_sources(source: ImageSet) -> None:
    before = source.images.copy()
    order = epoch_order(0, 0, len(source))
    for batch in range(7):  # 100 images in batches of 16: the last one has 4
        mixed = mix_batch(source, order, seed=0, epoch=0, batch=batch, batch_size=16, alpha=1.0)
        top, left, bottom, right = mixed.box
        assert len(mixed.images) == (4 if batch == 6 else 16)
        assert mixed.lam == label_lam(kept_fraction(mixed.box, 32, 32), EXACT_SUM_ROWS)
        for i, (a, b) in enumerate(zip(mixed.index_a, mixed.index_b, strict=True)):
            expected = source.images[a].copy()
            expected[top:bottom, left:right] = source.images[b][top:bottom, left:right]
            np.testing.assert_array_equal(mixed.images[i], expected)
            label = np.zeros(10, np.float32)
            label[source.labels[a]] += np.float32(mixed.lam)
            label[source.labels[b]] += np.float32(1 - mixed.lam)
            np.testing.assert_allclose(mixed.labels[i], label, rtol=0, atol=1e-6)
        assert sorted(mixed.index_b.tolist()) == sorted(mixed.index_a.tolist())
    np.testing.assert_array_equal(source.images, before)  # mixing worked on copies


def test_schedule_groups_are_contiguous_and_cover_everything() -> None:
    schedule = Schedule(num_images=100, batch_size=16, epochs=3)
    assert (schedule.batches_per_epoch, schedule.total_batches) == (7, 21)
    ranges = [schedule.group_range(4, g) for g in range(4)]
    assert ranges[0][0] == 0 and ranges[-1][1] == 21
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert schedule.first_sample(7) == 100 and schedule.first_sample(9) == 132
    tasks = schedule.tasks(3, 17)
    covered = [e * 7 + b for e, first, end in tasks for b in range(first, end)]
    assert covered == list(range(3, 17))
    with pytest.raises(ValueError):
        schedule.group_range(4, 4)


def _mds_sample(mixed: MixedBatch, i: int, encoding: str) -> dict:
    image = mixed.images[i] if encoding == "raw" else Image.fromarray(mixed.images[i])
    return {
        "box": np.asarray(mixed.box, np.int32),
        "epoch": mixed.epoch,
        "image": image,
        "index_a": int(mixed.index_a[i]),
        "index_b": int(mixed.index_b[i]),
        "label": mixed.labels[i],
        "lam": mixed.lam,
    }


@pytest.mark.parametrize("encoding", ["raw", "png", "jpeg"])
def test_encoded_rows_equal_mdswriter_encode_sample(source: ImageSet, tmp_path: Path,
                                                    encoding: str) -> None:
    from streaming import MDSWriter

    mixed = mix_batch(source, epoch_order(1, 0, len(source)), 1, 0, 1, 8, 1.0)
    rows = encode_rows(mixed, encoding)
    writer = MDSWriter(out=str(tmp_path / "w"), columns=column_encodings(encoding, (32, 32, 3), 10))
    for i in range(8):
        assert rows[i] == writer.encode_sample(_mds_sample(mixed, i, encoding))
    writer.finish()


def test_png_rows_decode_to_the_raw_pixels(source: ImageSet) -> None:
    mixed = mix_batch(source, epoch_order(0, 0, len(source)), 0, 0, 0, 8, 1.0)
    for i, row in enumerate(encode_rows(mixed, "png")):
        size = int(np.frombuffer(row[:4], np.uint32)[0])
        png = row[4 + 20:4 + 20 + size]  # after the size header, box (16) and epoch (4)
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), mixed.images[i])


@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_the_writer_channels_last_applier_equals_the_online_one(mode: str) -> None:
    from cutmix_algo.functional import apply_params
    from cutmix_algo.sampling import sample_row_params

    g = torch.Generator().manual_seed(0)
    hwc = torch.randint(0, 256, (8, 12, 10, 3), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 5, (8,), generator=g)
    draw = sample_params if mode == "batch" else sample_row_params
    params = draw(8, 12, 10, 1.0, derive_generator(4))
    nchw, before = hwc.permute(0, 3, 1, 2).contiguous(), hwc.clone()
    online = apply_params(nchw, labels, params, 5, exact_rows=EXACT_SUM_ROWS)
    offline = apply_params(hwc, labels, params, 5, exact_rows=EXACT_SUM_ROWS, layout="NHWC")
    assert not torch.equal(offline.input, before)  # boxes were pasted
    torch.testing.assert_close(offline.input.permute(0, 3, 1, 2), online.input, rtol=0, atol=0)
    torch.testing.assert_close(offline.target, online.target, rtol=0, atol=0)
    with pytest.raises(ValueError, match="layout"):
        apply_params(hwc, labels, params, 5, layout="HWC")
