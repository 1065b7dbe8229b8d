"""On-device augmentation: exact pad-crop-flip per sample, and it runs before CutMix."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from composer.core import Event
from composer.core.passes import set_filo_order

from cutmix_algo import CutMix
from cutmix_train.augment import DeviceAugment, augment_before_mixing, random_crop_flip


def _reference(x: torch.Tensor, pad: int, hflip: bool, seed: int) -> torch.Tensor:
    """Per-sample pad, crop and flip, drawing the same numbers in the same order."""
    g = torch.Generator().manual_seed(seed)
    n, _, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=g)
    flip = torch.rand(n, 1, generator=g) < 0.5 if hflip else torch.zeros(n, 1, dtype=torch.bool)
    out = []
    for i in range(n):
        padded = F.pad(x[i], (pad, pad, pad, pad))
        crop = padded[:, dy[i, 0] : dy[i, 0] + h, dx[i, 0] : dx[i, 0] + w]
        out.append(crop.flip(-1) if flip[i, 0] else crop)
    return torch.stack(out)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize(("pad", "hflip"), [(4, True), (2, False), (0, True)])
def test_matches_per_sample_pad_crop_flip(dtype: torch.dtype, pad: int, hflip: bool) -> None:
    x = torch.randint(0, 256, (16, 3, 12, 10)).to(dtype)
    got = random_crop_flip(x, pad, hflip, torch.Generator().manual_seed(3))
    assert got.dtype == dtype and got.shape == x.shape
    assert torch.equal(got, _reference(x, pad, hflip, 3))


def test_zero_pad_without_flip_is_identity() -> None:
    x = torch.rand(4, 3, 8, 8)
    assert torch.equal(random_crop_flip(x, 0, False, torch.Generator().manual_seed(0)), x)


def test_rejects_non_batches() -> None:
    with pytest.raises(ValueError, match="batch"):
        random_crop_flip(torch.rand(3, 8, 8), 4, True)


@pytest.mark.parametrize("pad", [-1, 8, 1000])
def test_rejects_a_pad_that_can_crop_pure_padding(pad: int) -> None:
    """From a pad of the shorter side on, a crop can hold no pixel of the image: a blank image."""
    with pytest.raises(ValueError, match=r"pad must be in \[0, 7\] for 8x10 images"):
        random_crop_flip(torch.rand(2, 3, 8, 10), pad, True)
    assert random_crop_flip(torch.rand(2, 3, 8, 10), 7, True).shape == (2, 3, 8, 10)


def test_augmentation_runs_before_cutmix_whatever_the_list_order() -> None:
    augment, cutmix = DeviceAugment(), CutMix()
    for algorithms in ([augment, cutmix], [cutmix, augment]):
        # Composer's own pass reverses AFTER_* events; ours runs after it.
        order = augment_before_mixing(set_filo_order(algorithms, Event.AFTER_DATALOADER), Event.AFTER_DATALOADER)
        assert order[0] is augment
    assert augment_before_mixing([cutmix, augment], Event.BEFORE_FORWARD) == [cutmix, augment]
