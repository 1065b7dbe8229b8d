"""Tests for cutmix_algo.functional: the in-place paste and the target mixing, against the spec.

Every expected result is computed here from a pristine copy of the batch with a plain Python loop
over samples, independently of the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import Allocations
from hypothesis import given, settings
from hypothesis import strategies as st

from cutmix_algo import cutmix_batch
from cutmix_algo.functional import mix_targets, one_hot, paste_box_
from cutmix_algo.sampling import Box, label_grid_bits, label_lam

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.uint8]
LAYOUTS = ["contiguous", "channels_last", "strided"]
PROPERTY = settings(deadline=None, max_examples=120)


# ----------------------------------------------------------------------------------------------
# Helpers.


def random_batch(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    return torch.randn(shape, generator=g).to(dtype)


def lay_out(x: torch.Tensor, layout: str) -> torch.Tensor:
    """``x``'s values in the given memory layout ("strided": a non-contiguous view of a bigger one)."""
    if layout == "channels_last":
        fmt = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
        return x.contiguous(memory_format=fmt)
    if layout == "strided":
        big = torch.zeros(*x.shape[:-1], x.shape[-1] + 3, dtype=x.dtype)
        view = big[..., 1 : x.shape[-1] + 1]
        view.copy_(x)
        return view
    return x.contiguous()


def memory_format_of(x: torch.Tensor) -> str:
    if x.is_contiguous():
        return "contiguous"
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    if x.ndim == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return "channels_last_3d"
    return "strided"


def expected_paste(orig: torch.Tensor, box, perm) -> torch.Tensor:
    top, left, bottom, right = box
    out = orig.clone()
    for i, j in enumerate(perm.tolist()):
        out[i, ..., top:bottom, left:right] = orig[j, ..., top:bottom, left:right]
    return out


def box_mask(height: int, width: int, box) -> torch.Tensor:
    top, left, bottom, right = box
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[top:bottom, left:right] = True
    return mask


@st.composite
def batches(draw, video: bool | None = None):
    """(x, orig) with x in a drawn layout: 4-d or 5-d, any dtype, odd and non-square sizes."""
    five = draw(st.booleans()) if video is None else video
    n, c = draw(st.integers(1, 9)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    shape = (n, c, draw(st.integers(1, 3)), h, w) if five else (n, c, h, w)
    dtype = draw(st.sampled_from(DTYPES))
    layout = draw(st.sampled_from(LAYOUTS))
    x = lay_out(random_batch(shape, dtype, draw(st.integers(0, 2**31))), layout)
    return x, x.clone(memory_format=torch.preserve_format)


@st.composite
def boxes(draw, height: int, width: int):
    top, bottom = sorted(draw(st.integers(0, height)) for _ in range(2))
    left, right = sorted(draw(st.integers(0, width)) for _ in range(2))
    return (top, left, bottom, right)


@st.composite
def mix_args(draw, n: int, height: int, width: int) -> dict:
    """Either a given box and perm, or sampling from a seeded generator (with any options)."""
    if draw(st.booleans()):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(draw(st.integers(0, 999))))
        return {"box": draw(boxes(height, width)), "perm": perm}
    return {
        "alpha": draw(st.sampled_from([0.0, 0.2, 1.0, 2.0])),
        "generator": torch.Generator().manual_seed(draw(st.integers(0, 2**31))),
        "uniform_sampling": draw(st.booleans()),
    }


def check_params(out, n: int, height: int, width: int, given: dict) -> None:
    top, left, bottom, right = out.box
    assert 0 <= top <= bottom <= height and 0 <= left <= right <= width
    assert isinstance(out.lam, float)
    kept = 1.0 - (bottom - top) * (right - left) / (height * width)
    if n == 1:
        assert out.lam == 1.0  # a batch of one receives its own pixels: nothing is mixed
    else:
        # λ is the kept fraction on the dyadic grid that keeps label sums exact (label_lam).
        assert abs(out.lam - kept) <= 2.0 ** -(label_grid_bits(n) + 1)
        assert out.lam * 2 ** label_grid_bits(n) == round(out.lam * 2 ** label_grid_bits(n))
    assert out.perm.dtype == torch.int64 and out.perm.shape == (n,)
    assert sorted(out.perm.tolist()) == list(range(n))
    if "box" in given:
        assert tuple(out.box) == tuple(given["box"])
        assert out.perm.tolist() == given["perm"].tolist()


# ----------------------------------------------------------------------------------------------
# The input: pasted in place, exactly.


@PROPERTY
@given(data=st.data(), batch=batches())
def test_input_is_pasted_in_place_exactly(data, batch):
    x, orig = batch
    n, height, width = x.shape[0], x.shape[-2], x.shape[-1]
    fmt, ptr, strides = memory_format_of(x), x.data_ptr(), x.stride()
    args = data.draw(mix_args(n, height, width))

    out = cutmix_batch(x, **args)

    assert out.input is x and x.data_ptr() == ptr and x.stride() == strides
    assert memory_format_of(x) == fmt and x.dtype == orig.dtype
    check_params(out, n, height, width, args)
    assert torch.equal(x, expected_paste(orig, out.box, out.perm))
    # Said two more ways: outside the box nothing moved; inside, sample i holds perm[i]'s pixels.
    mask = box_mask(height, width, out.box)
    assert torch.equal(x[..., ~mask], orig[..., ~mask])
    assert torch.equal(x[..., mask], orig[out.perm][..., mask])


@PROPERTY
@given(batch=batches(), seed=st.integers(0, 2**31), alpha=st.sampled_from([0.0, 0.5, 1.0]))
def test_same_seed_same_output(batch, seed, alpha):
    x, orig = batch
    y = orig.clone(memory_format=torch.preserve_format)
    a = cutmix_batch(x, alpha=alpha, generator=torch.Generator().manual_seed(seed))
    b = cutmix_batch(y, alpha=alpha, generator=torch.Generator().manual_seed(seed))
    assert (a.lam, a.box, a.perm.tolist()) == (b.lam, b.box, b.perm.tolist())
    assert torch.equal(x, y)


def test_strided_view_leaves_its_base_alone():
    base = random_batch((4, 3, 10, 16), torch.float32, 0)
    pristine = base.clone()
    x = base[..., 2:12]
    out = cutmix_batch(x, box=(0, 0, 10, 10), perm=torch.tensor([1, 2, 3, 0]))
    assert out.input is x
    assert torch.equal(base[..., :2], pristine[..., :2])
    assert torch.equal(base[..., 12:], pristine[..., 12:])
    assert torch.equal(base[..., 2:12], pristine[[1, 2, 3, 0]][..., 2:12])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_no_whole_batch_copy(layout):
    """Only the box region is read and written: no op ever makes a batch-sized tensor."""
    x = lay_out(random_batch((6, 3, 20, 24), torch.float32, 1), layout)
    y = torch.randint(10, (6,))
    with Allocations() as seen:
        cutmix_batch(x, y, num_classes=10, box=(2, 3, 17, 20), perm=torch.tensor([5, 4, 3, 2, 1, 0]))
    assert seen.numels, "the dispatch mode saw no ops"
    biggest = max(seen.numels, key=lambda e: e[1])
    assert biggest[1] <= 6 * 3 * 15 * 17, biggest
    # And the sampling path too.
    with Allocations() as seen:
        cutmix_batch(x, alpha=0.3, generator=torch.Generator().manual_seed(0))
    assert max(e[1] for e in seen.numels) < x.numel()


# ----------------------------------------------------------------------------------------------
# Targets.


@PROPERTY
@given(data=st.data(), batch=batches(), k=st.integers(1, 12), seed=st.integers(0, 2**31))
def test_int_labels_become_mixed_rows(data, batch, k, seed):
    x, _ = batch
    n = x.shape[0]
    labels = torch.randint(k, (n,), generator=torch.Generator().manual_seed(seed))
    labels_before = labels.clone()
    args = data.draw(mix_args(n, x.shape[-2], x.shape[-1]))

    out = cutmix_batch(x, labels, num_classes=k, **args)

    assert out.target.shape == (n, k) and out.target.dtype == torch.float32
    onehot = F.one_hot(labels_before, k).double()
    expected = out.lam * onehot + (1.0 - out.lam) * onehot[out.perm]
    torch.testing.assert_close(out.target.double(), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.target.sum(1).double(), torch.ones(n, dtype=torch.float64), atol=1e-6, rtol=0)
    assert torch.equal(labels, labels_before)


@PROPERTY
@given(
    data=st.data(),
    batch=batches(),
    k=st.integers(1, 12),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**31),
)
def test_dense_targets_are_mixed_by_lam(data, batch, k, dtype, seed):
    x, _ = batch
    n = x.shape[0]
    target = torch.rand(n, k, generator=torch.Generator().manual_seed(seed), dtype=dtype).softmax(1)
    before = target.clone()
    args = data.draw(mix_args(n, x.shape[-2], x.shape[-1]))

    out = cutmix_batch(x, target, **args)

    assert out.target.shape == (n, k) and out.target.dtype == dtype
    expected = out.lam * before.double() + (1.0 - out.lam) * before.double()[out.perm]
    torch.testing.assert_close(out.target.double(), expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out.target.sum(1).double(), torch.ones(n, dtype=torch.float64), atol=1e-5, rtol=0)


@PROPERTY
@given(
    data=st.data(),
    batch=batches(),
    seg=st.sampled_from(["labels", "scores"]),
    k=st.integers(1, 5),
    seed=st.integers(0, 2**31),
)
def test_segmentation_maps_get_the_same_box(data, batch, seg, k, seed):
    x, orig = batch
    n, height, width = x.shape[0], x.shape[-2], x.shape[-1]
    g = torch.Generator().manual_seed(seed)
    if seg == "labels":  # (N, H, W) int64 class indices
        target = torch.randint(k, (n, height, width), generator=g)
    else:  # (N, K, H, W) float scores
        target = torch.rand(n, k, height, width, generator=g)
    before = target.clone()
    args = data.draw(mix_args(n, height, width))

    out = cutmix_batch(x, target, **args)

    assert out.target.dtype == before.dtype and out.target.shape == before.shape
    assert torch.equal(out.target, expected_paste(before, out.box, out.perm))
    assert torch.equal(x, expected_paste(orig, out.box, out.perm))


# ----------------------------------------------------------------------------------------------
# Given parameters, edge cases.


def test_given_box_and_perm_are_used_as_is():
    x = random_batch((5, 2, 9, 11), torch.float32, 3)
    orig = x.clone()
    perm = torch.tensor([4, 3, 2, 1, 0])
    g = torch.Generator().manual_seed(0)
    out = cutmix_batch(x, alpha=1.0, generator=g, box=(1, 2, 8, 7), perm=perm)
    assert tuple(out.box) == (1, 2, 8, 7) and out.perm.tolist() == [4, 3, 2, 1, 0]
    assert out.lam == label_lam(1.0 - 7 * 5 / 99, 5)
    assert torch.equal(x, expected_paste(orig, (1, 2, 8, 7), perm))


def test_given_box_with_sampled_perm_and_vice_versa():
    x = random_batch((6, 1, 8, 8), torch.float32, 4)
    out = cutmix_batch(x, box=(0, 0, 4, 8), generator=torch.Generator().manual_seed(1))
    assert tuple(out.box) == (0, 0, 4, 8) and out.lam == 0.5
    assert sorted(out.perm.tolist()) == list(range(6))
    perm = torch.tensor([1, 0, 3, 2, 5, 4])
    out = cutmix_batch(x, perm=perm, generator=torch.Generator().manual_seed(1))
    assert out.perm.tolist() == perm.tolist()


@pytest.mark.parametrize("box", [(3, 0, 3, 8), (0, 5, 8, 5), (0, 0, 0, 0), (8, 8, 8, 8)])
def test_empty_box_changes_nothing(box):
    x = random_batch((4, 3, 8, 8), torch.float32, 5)
    orig = x.clone()
    y = torch.tensor([0, 1, 2, 3])
    out = cutmix_batch(x, y, num_classes=4, box=box, perm=torch.tensor([3, 2, 1, 0]))
    assert out.lam == 1.0
    assert torch.equal(x, orig)
    assert torch.equal(out.target, F.one_hot(y, 4).float())


def test_full_box_swaps_whole_images():
    x = random_batch((3, 2, 5, 7), torch.bfloat16, 6)
    orig = x.clone()
    out = cutmix_batch(x, box=(0, 0, 5, 7), perm=torch.tensor([2, 0, 1]))
    assert out.lam == 0.0
    assert torch.equal(x, orig[[2, 0, 1]])


@pytest.mark.parametrize("height, width", [(32, 32), (24, 40), (7, 13)])
def test_alpha_zero_keeps_at_most_the_bound(height, width):
    # λ = 0 before correction: the cut is the full side, clipped, so at least H//2 x W//2 pixels
    # are pasted and at most 1 - (H//2)(W//2)/(HW) kept (3/4 for even sides).
    bound = 1.0 - (height // 2) * (width // 2) / (height * width)
    g = torch.Generator().manual_seed(0)
    lams = [cutmix_batch(torch.zeros(2, 1, height, width), alpha=0.0, generator=g).lam for _ in range(200)]
    assert max(lams) <= bound + 2.0 ** -(label_grid_bits(2) + 1)
    assert min(lams) < 0.3  # centers near the middle cut (almost) everything


def test_no_generator_uses_torch_default_generator():
    x = random_batch((6, 3, 12, 12), torch.float32, 7)
    torch.manual_seed(11)
    a = cutmix_batch(x.clone())
    torch.manual_seed(11)
    b = cutmix_batch(x.clone())
    assert (a.lam, a.box, a.perm.tolist()) == (b.lam, b.box, b.perm.tolist())
    assert torch.equal(a.input, b.input)


def test_different_seeds_differ():
    draws = set()
    for seed in range(6):
        out = cutmix_batch(torch.zeros(8, 1, 32, 32), generator=torch.Generator().manual_seed(seed))
        draws.add((out.lam, out.box, tuple(out.perm.tolist())))
    assert len(draws) == 6


def test_input_only_returns_no_target():
    out = cutmix_batch(torch.zeros(2, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    assert out.target is None


# ----------------------------------------------------------------------------------------------
# Bad input: ValueError, naming the argument.


def _x(n: int = 4) -> torch.Tensor:
    return torch.zeros(n, 3, 8, 8)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: cutmix_batch(_x(), alpha=-1.0), "alpha"),
        (lambda: cutmix_batch(_x(), alpha=float("nan")), "alpha"),
        (lambda: cutmix_batch(torch.zeros(3, 8, 8)), "input"),
        (lambda: cutmix_batch(torch.zeros(8, 8)), "input"),
        (lambda: cutmix_batch(torch.zeros(3, 8, 8).numpy()), "input"),
        (lambda: cutmix_batch(_x(), torch.tensor([0, 1, 2]), num_classes=3), "batch size"),
        (lambda: cutmix_batch(_x(), torch.rand(5, 3)), "batch size"),
        (lambda: cutmix_batch(_x(), torch.tensor([0, 1, 2, 3]), num_classes=3), "num_classes"),
        (lambda: cutmix_batch(_x(), torch.tensor([0, -1, 2, 1]), num_classes=3), "num_classes"),
        (lambda: cutmix_batch(_x(), torch.tensor([0, 1, 2, 1])), "num_classes"),
        (lambda: cutmix_batch(_x(), box=(0, 0, 9, 8)), "box"),
        (lambda: cutmix_batch(_x(), box=(0, 0, 8, 9)), "box"),
        (lambda: cutmix_batch(_x(), box=(-1, 0, 4, 4)), "box"),
        (lambda: cutmix_batch(_x(), box=(5, 0, 4, 4)), "box"),
        (lambda: cutmix_batch(_x(), box=(0, 0, 4)), "box"),
        (lambda: cutmix_batch(_x(), perm=torch.tensor([0, 0, 1, 2])), "perm"),
        (lambda: cutmix_batch(_x(), perm=torch.tensor([0, 1, 2])), "perm"),
        (lambda: cutmix_batch(_x(), perm=torch.tensor([1, 2, 3, 4])), "perm"),
        (lambda: cutmix_batch(_x(), perm=torch.tensor([0.0, 1.0, 2.0, 3.0])), "perm"),
        (lambda: cutmix_batch(_x(), torch.ones(4, dtype=torch.bool), num_classes=3), "target"),
        (lambda: cutmix_batch(_x(), generator=42), "generator"),
        (lambda: cutmix_batch(_x(), generator=np.random.default_rng(0)), "generator"),
        (lambda: cutmix_batch(_x(), mode="sample", generator=7), "generator"),
        # Checked even when a given box and perm leave nothing to draw.
        (lambda: cutmix_batch(_x(), box=(0, 0, 4, 4), perm=torch.arange(4), generator=42), "generator"),
        (lambda: one_hot(torch.tensor([0.7, 2.9]), 3), "labels"),
        (lambda: one_hot(torch.tensor([0, 3]), 3), "labels"),
        (lambda: one_hot(torch.tensor([True, False]), 3), "labels"),
        (lambda: mix_targets(torch.tensor([0.0, 1.0]), 0.5, torch.tensor([1, 0]), 3), "target"),
        (lambda: mix_targets(torch.tensor([0, 3]), 0.5, torch.tensor([1, 0]), 3), "target"),
        (lambda: mix_targets(torch.tensor([0, 1]), 0.5, torch.tensor([1, 0])), "num_classes"),
        (lambda: mix_targets(torch.zeros(2, 4, 4, dtype=torch.long), 0.5, torch.tensor([1, 0])), "box"),
        (lambda: paste_box_(_x(), Box(-2, 0, 8, 8), torch.arange(4)), "box"),
        (lambda: paste_box_(_x(), Box(0, 0, 9, 8), torch.arange(4)), "box"),
        (lambda: paste_box_(_x(), Box(4, 0, 2, 8), torch.arange(4)), "box"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_a_negative_box_bound_never_counts_from_the_end():
    """paste_box_ refuses it; paste_boxes_ (whose bounds stay on the device) clips it to 0."""
    from cutmix_algo.functional import paste_boxes_

    x = random_batch((4, 1, 8, 8), torch.float32, 8)
    orig = x.clone()
    with pytest.raises(ValueError, match="box"):
        paste_box_(x, Box(-2, 0, 8, 8), torch.tensor([1, 2, 3, 0]))
    assert torch.equal(x, orig)
    clipped = x.clone()
    paste_box_(clipped, Box(0, 0, 8, 8), torch.tensor([1, 2, 3, 0]))
    paste_boxes_(x, torch.tensor([[-2, 0, 8, 8]] * 4), torch.tensor([1, 2, 3, 0]))
    assert torch.equal(x, clipped)  # rows 0-7, as the box (0, 0, 8, 8), not rows 6-7


def test_a_segmentation_map_is_pasted_in_place_and_labels_are_not_written():
    """What the docs say cutmix_batch writes into: the input and a map target, nothing else."""
    images = random_batch((8, 3, 8, 8), torch.float32, 8)
    maps, labels = torch.randint(0, 5, (8, 8, 8)), torch.randint(0, 5, (8,))
    maps_before, labels_before = maps.clone(), labels.clone()
    g = torch.Generator().manual_seed(3)
    out = cutmix_batch(images.clone(), maps, box=(0, 0, 4, 4), perm=torch.roll(torch.arange(8), 1))
    assert out.target is maps and not torch.equal(maps, maps_before)
    out = cutmix_batch(images.clone(), labels, num_classes=5, generator=g)
    assert out.target is not labels and torch.equal(labels, labels_before)


def test_bad_input_leaves_the_batch_alone():
    x = random_batch((4, 3, 8, 8), torch.float32, 8)
    orig = x.clone()
    with pytest.raises(ValueError):
        cutmix_batch(x, torch.tensor([0, 1, 2, 9]), num_classes=3, box=(0, 0, 4, 4))
    assert torch.equal(x, orig)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        # float("1") is 1.0, but a string is not a number.
        (lambda x: cutmix_batch(x, alpha="1"), r"^alpha must be a number >= 0, got '1'$"),
        # Would ask torch for N x 10**12 floats.
        (lambda x: cutmix_batch(x, torch.tensor([0, 1, 2, 3]), num_classes=10**12), r"^num_classes must be"),
        # An expanded view's images share memory: torch refuses to write into it.
        (lambda x: cutmix_batch(x[:1].expand(4, -1, -1, -1)), r"^input of shape \(4, 3, 8, 8\) is an expanded view"),
        (lambda x: cutmix_batch(x[:, :1].expand(-1, 3, -1, -1)), r"^input .*stride 0 in dim 1"),
        (lambda x: cutmix_batch(x, torch.zeros(1, 8, 8, dtype=torch.long).expand(4, -1, -1)),
         r"^target of shape \(4, 8, 8\) is an expanded view"),
    ],
)
def test_inputs_torch_would_fail_on_are_value_errors_naming_the_argument(call, message):
    x = random_batch((4, 3, 8, 8), torch.float32, 5)
    orig = x.clone()
    with pytest.raises(ValueError, match=message):
        call(x)
    assert torch.equal(x, orig)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_dense_targets_holding_nan_or_inf_are_refused(bad):
    """A NaN row would make every row it is mixed into NaN (0 * NaN is NaN)."""
    y = torch.full((4, 3), 1 / 3)
    y[2, 1] = bad
    with pytest.raises(ValueError, match="dense target holds NaN or infinite values"):
        cutmix_batch(random_batch((4, 3, 8, 8), torch.float32, 5), y, generator=torch.Generator().manual_seed(0))


def test_dense_rows_that_are_not_probabilities_are_mixed_as_given():
    """Multi-hot, label-smoothed or unnormalized rows are all legitimate: each row is mixed linearly."""
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 50.0, 0.0], [0.05, 0.9, 0.05], [2.0, -1.0, 0.0]])
    perm = torch.tensor([1, 2, 3, 0])
    out = cutmix_batch(random_batch((4, 3, 8, 8), torch.float32, 5), y, box=(0, 0, 4, 8), perm=perm)
    assert out.lam == 0.5
    torch.testing.assert_close(out.target, 0.5 * y + 0.5 * y[perm])


@pytest.mark.parametrize(
    "target_of",
    [lambda x: x, lambda x: x[:, 0], lambda x: x.view(4, -1), lambda x: x[:, 2, 5, :3]],
    ids=["the input itself", "a channel as a map", "the input as dense rows", "a slice as dense rows"],
)
def test_a_target_sharing_memory_with_the_input_is_refused(target_of):
    """The input is pasted first: a map in its memory would be pasted twice, rows read pasted."""
    x = random_batch((4, 3, 8, 8), torch.float32, 5)
    orig = x.clone()
    with pytest.raises(ValueError, match=r"^target \(shape .*\) shares memory with input.*target\.clone\(\)"):
        cutmix_batch(x, target_of(x), box=(0, 0, 4, 4), perm=torch.tensor([1, 2, 3, 0]))
    assert torch.equal(x, orig)


def test_images_and_a_map_packed_in_one_tensor_are_mixed_once_each():
    """``batch[:, :3]`` and ``batch[:, 3]`` share a buffer but no element: both are pasted, once."""
    packed = random_batch((4, 4, 8, 8), torch.float32, 6)
    images, maps = packed[:, :3].clone(), packed[:, 3].clone()
    perm, box = torch.tensor([1, 2, 3, 0]), (1, 2, 6, 7)
    out = cutmix_batch(packed[:, :3], packed[:, 3], box=box, perm=perm)
    expected = cutmix_batch(images, maps, box=box, perm=perm)
    assert torch.equal(packed[:, :3], expected.input) and torch.equal(out.target, expected.target)


@pytest.mark.parametrize(
    ("input_on", "target_on"), [("cpu", "meta"), ("meta", "cpu")], ids=["labels elsewhere", "input elsewhere"])
@pytest.mark.parametrize("kind", ["labels", "dense"])
def test_a_target_on_another_device_is_refused(input_on, target_on, kind):
    """The mixed target would land on the target's device (or fail copying the permutation)."""
    x = torch.zeros(4, 3, 8, 8, device=input_on)
    y = torch.tensor([0, 1, 2, 0]) if kind == "labels" else torch.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match=rf"^target must be on the input's device \({input_on}\), got {target_on}$"):
        cutmix_batch(x, y.to(target_on), num_classes=3)


def test_a_channels_last_shape_is_warned_about_once_and_mixed_as_given():
    """(N, H, W, C) passed as (N, C, H, W) would cut the box across width and channels: say so."""
    import warnings

    x = random_batch((4, 16, 16, 3), torch.float32, 9)
    expected = x.clone()
    paste_box_(expected, (2, 0, 10, 2), torch.roll(torch.arange(4), 1))
    with pytest.warns(UserWarning, match=r"\(4, 16, 16, 3\).*channels-last.*permute\(0, 3, 1, 2\)"):
        cutmix_batch(x, box=(2, 0, 10, 2), perm=torch.roll(torch.arange(4), 1))
    assert torch.equal(x, expected)  # mixed as given, not reinterpreted
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cutmix_batch(x.clone(), box=(2, 0, 10, 2), perm=torch.arange(4))  # once per shape
        for shape in [(4, 3, 16, 16), (4, 1, 28, 28), (4, 3, 16, 3), (4, 16, 16, 5), (4, 2, 31, 3)]:
            cutmix_batch(random_batch(shape, torch.float32, 1), box=(0, 0, 1, 1), perm=torch.arange(4))
    # The memory format is not the shape: a channels_last NCHW batch is not warned about.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = random_batch((4, 3, 9, 9), torch.float32, 2).to(memory_format=torch.channels_last)
        cutmix_batch(y, box=(0, 0, 2, 2), perm=torch.arange(4))


# ----------------------------------------------------------------------------------------------
# CUDA: no host syncs, and the same numbers as on the CPU.


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.uint8])
def test_cuda_matches_cpu_without_syncs(dtype):
    x_cpu = lay_out(random_batch((8, 3, 24, 40), dtype, 9), "channels_last")
    y_cpu = torch.randint(10, (8,), generator=torch.Generator().manual_seed(9))
    x_gpu, y_gpu = x_cpu.cuda(), y_cpu.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        gpu = cutmix_batch(x_gpu, y_gpu, num_classes=10, generator=torch.Generator().manual_seed(3))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    cpu = cutmix_batch(x_cpu, y_cpu, num_classes=10, generator=torch.Generator().manual_seed(3))
    assert gpu.input is x_gpu and x_gpu.is_contiguous(memory_format=torch.channels_last)
    assert (gpu.lam, tuple(gpu.box)) == (cpu.lam, tuple(cpu.box))
    assert gpu.perm.tolist() == cpu.perm.tolist()
    assert torch.equal(x_gpu.cpu(), x_cpu)
    torch.testing.assert_close(gpu.target.cpu(), cpu.target, atol=1e-6, rtol=0)
