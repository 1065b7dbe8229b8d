"""Tests for cutmix_algo.paste: the in-place batch reorder ``t[i] <- t[perm[i]]`` and its paths.

Every expected result is computed here from a pristine copy with a plain Python loop over samples,
independently of the code under test; both paths are forced as well as chosen.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import Allocations
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from cutmix_algo import paste_box_
from cutmix_algo.functional import paste_boxes_
from cutmix_algo.paste import (
    CYCLE_WALK_MIN_BYTES,
    GRAIN_SIZE,
    _cycle_moves,
    choose_method,
    gather_boxes_,
    permute_batch_,
)

METHODS = ["cycles", "index_select", "auto"]
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.uint8, torch.int64]


def random_batch(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype in (torch.uint8, torch.int64):
        return torch.randint(0, 256, shape, generator=g, dtype=dtype)
    return torch.randn(shape, generator=g).to(dtype)


def expected(orig: torch.Tensor, perm: list[int]) -> torch.Tensor:
    out = orig.clone()
    for i, j in enumerate(perm):
        out[i] = orig[j]
    return out


class _Ops(TorchDispatchMode):
    """Records (op name, numel of its first tensor argument) for every aten op."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        first = next((a for a in args if isinstance(a, torch.Tensor)), None)
        self.ops.append((str(func.overloadpacket.__name__), -1 if first is None else first.numel()))
        return func(*args, **(kwargs or {}))


def perms(n: int) -> dict[str, list[int]]:
    """Named permutations covering cycles of length 1, 2 and N, and a mix."""
    out = {
        "identity": list(range(n)),
        "one_swap": [1, 0, *range(2, n)],
        "n_cycle": [(i + 1) % n for i in range(n)],
        "reverse": list(range(n))[::-1],
        "random": torch.randperm(n, generator=torch.Generator().manual_seed(n)).tolist(),
    }
    if n >= 5:  # a 3-cycle, a 2-cycle and fixed points together
        out["mixed"] = [1, 2, 0, 4, 3, *range(5, n)]
    return out


# ----------------------------------------------------------------------------------------------
# Exactness: every path, permutation shape, dtype and layout gives the loop's result.


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", ["identity", "one_swap", "n_cycle", "reverse", "random", "mixed"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_permutation_shape_is_exact(method, name, dtype):
    x = random_batch((7, 3, 6, 5), dtype)
    orig = x.clone()
    perm = perms(7)[name]
    assert permute_batch_(x, torch.tensor(perm), method=method) is x
    assert torch.equal(x, expected(orig, perm))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.uint8])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided_box", "video_5d", "video_channels_last_3d"])
def test_box_regions_of_every_layout_paste_exactly(method, dtype, layout):
    """The real use: the box region of a batch (a strided view), above torch's parallel grain."""
    shape = (5, 3, 4, 60, 70) if layout.startswith("video") else (5, 3, 130, 120)
    base = random_batch(shape, dtype, 1)
    if layout == "channels_last":
        base = base.contiguous(memory_format=torch.channels_last)
    if layout == "video_channels_last_3d":
        base = base.contiguous(memory_format=torch.channels_last_3d)
    if layout == "strided_box":
        base = random_batch((5, 3, 130, 127), dtype, 1)[..., 3:123]
    pristine = base.clone()
    strides = base.stride()
    box = (2, 5, 58, 65) if layout.startswith("video") else (4, 9, 125, 118)
    perm = [3, 0, 4, 1, 2]
    top, left, bottom, right = box
    region = base[..., top:bottom, left:right]
    assert math.prod(region.shape[1:]) >= GRAIN_SIZE  # where index_select goes parallel per image

    permute_batch_(region, torch.tensor(perm), method=method)

    want = pristine.clone()
    for i, j in enumerate(perm):
        want[i, ..., top:bottom, left:right] = pristine[j, ..., top:bottom, left:right]
    assert torch.equal(base, want) and base.stride() == strides


def test_strided_view_leaves_the_rest_of_its_base_alone():
    big = random_batch((4, 2, 10, 40), torch.float32)
    pristine = big.clone()
    view = big[:, :, 1:9, 3:33:2]  # every other column: a view with gaps inside each row
    permute_batch_(view, torch.tensor([2, 3, 1, 0]), method="cycles")
    want = pristine.clone()
    want[:, :, 1:9, 3:33:2] = pristine[[2, 3, 1, 0]][:, :, 1:9, 3:33:2]
    assert torch.equal(big, want)


@settings(deadline=None, max_examples=60)
@given(
    n=st.integers(1, 9),
    shape=st.lists(st.integers(1, 9), min_size=0, max_size=3),
    seed=st.integers(0, 2**31),
    dtype=st.sampled_from(DTYPES),
)
def test_cycle_walk_matches_index_select(n, shape, seed, dtype):
    x = random_batch((n, *shape), dtype, seed)
    y = x.clone()
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    permute_batch_(x, perm, method="cycles")
    y.copy_(y.index_select(0, perm))
    assert torch.equal(x, y)


def test_int32_perm_is_accepted():
    x = random_batch((4, 3, 5, 5), torch.float32)
    orig = x.clone()
    permute_batch_(x, torch.tensor([3, 2, 1, 0], dtype=torch.int32), method="cycles")
    assert torch.equal(x, expected(orig, [3, 2, 1, 0]))


# ----------------------------------------------------------------------------------------------
# How it moves the bytes: each region once, by numpy (no torch op, so no parallel region), and
# nothing for fixed points.


@settings(deadline=None, max_examples=100)
@given(n=st.integers(1, 40), seed=st.integers(0, 2**31))
def test_cycle_moves_gather_reading_every_source_before_it_is_overwritten(n, seed):
    p = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    slots = {i: ("old", i) for i in range(n)}
    saved = None
    moves = _cycle_moves(p)
    for dst, src in moves:
        value = saved if src < 0 else slots[src]
        if dst < 0:
            saved = value
        else:
            slots[dst] = value
    assert [slots[i] for i in range(n)] == [("old", j) for j in p]
    moved = [i for i in range(n) if p[i] != i]
    written = [dst for dst, _ in moves if dst >= 0]
    assert sorted(written) == moved  # each moved image written once, fixed points never
    cycles = sum(1 for dst, _ in moves if dst < 0)
    assert len(moves) == len(moved) + cycles  # plus one save per cycle, nothing else


def test_cycle_walk_runs_no_torch_copy_and_no_gather():
    """No index_select, no gather, no copy_: torch opens no parallel region for the walk."""
    x = random_batch((6, 3, 112, 112), torch.float32)
    orig = x.clone()
    perm = [1, 2, 0, 4, 3, 5]  # a 3-cycle, a 2-cycle, a fixed point
    with _Ops() as seen:
        permute_batch_(x, torch.tensor(perm), method="cycles")
    names = {name for name, _ in seen.ops}
    assert not names & {"index_select", "index", "copy_", "clone", "gather"}, names
    assert torch.equal(x, expected(orig, perm))
    # Each of the 5 moved images is written once, plus one saved region per cycle (2 cycles).
    assert len(_cycle_moves(perm)) == 5 + 2


def test_identity_perm_copies_nothing():
    assert _cycle_moves(list(range(5))) == []
    x = random_batch((5, 3, 80, 80), torch.float32)
    orig = x.clone()
    permute_batch_(x, torch.arange(5), method="cycles")
    assert torch.equal(x, orig)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [0, 1])
def test_an_empty_or_one_image_batch_is_left_as_it_is_on_every_path(method, n):
    x = random_batch((n, 3, 80, 80), torch.float32)
    orig = x.clone()
    assert permute_batch_(x, torch.arange(n), method=method) is x
    assert torch.equal(x, orig)


def test_cycle_walk_moves_every_bit_nan_payloads_included():
    bits = torch.randint(-(2**31), 2**31 - 1, (6, 3, 40, 40), dtype=torch.int32,
                         generator=torch.Generator().manual_seed(3))
    bits[:, 0, 0, 0] = 0x7FC00001 + torch.arange(6, dtype=torch.int32)  # distinct NaN payloads
    pristine = bits.clone()
    perm = [5, 0, 1, 2, 3, 4]
    permute_batch_(bits.view(torch.float32), torch.tensor(perm), method="cycles")
    assert torch.equal(bits, expected(pristine, perm))


@pytest.mark.parametrize("dtype", [torch.bool, torch.complex64, torch.complex128,
                                   torch.float8_e4m3fn, torch.float64])
def test_cycle_walk_takes_every_dtype_or_defers_exactly(dtype):
    base = random_batch((5, 2, 30, 30), torch.float32, 4)
    x = (base > 0) if dtype == torch.bool else base.to(dtype)
    orig = x.clone()
    perm = [2, 0, 1, 4, 3]
    permute_batch_(x, torch.tensor(perm), method="cycles")
    want = expected(orig, perm)
    if dtype == torch.float8_e4m3fn:  # torch.equal has no float8 kernel: compare the bytes
        x, want = x.view(torch.uint8), want.view(torch.uint8)
    assert torch.equal(x, want)


def test_a_conjugated_view_is_reordered_as_index_select_would():
    z = torch.complex(torch.randn(4, 3, 20, 20), torch.randn(4, 3, 20, 20))
    view = z.conj()  # a lazy conjugate: numpy would see the unconjugated memory
    assert view.is_conj()
    want = view.resolve_conj()[[3, 2, 0, 1]]
    permute_batch_(view, torch.tensor([3, 2, 0, 1]), method="cycles")
    assert torch.equal(view.resolve_conj(), want)


def test_auto_rule_by_bytes_per_image():
    big = torch.empty(128, 3, 112, 112)  # a 224² batch's centered box: 147 KiB per image
    small = torch.empty(512, 3, 16, 16)  # a 32² batch's box: 3 KiB per image
    assert choose_method(big) == "cycles" and choose_method(small) == "index_select"
    at = CYCLE_WALK_MIN_BYTES // 2  # bfloat16 elements exactly at the threshold
    assert choose_method(torch.empty(4, at, dtype=torch.bfloat16)) == "cycles"
    assert choose_method(torch.empty(4, at - 1, dtype=torch.bfloat16)) == "index_select"
    assert choose_method(torch.empty(1, 3, 112, 112)) == "index_select"  # nothing to reorder
    assert choose_method(torch.empty(128, 3, 112, 112, device="meta")) == "index_select"


def test_paste_box_takes_the_cycle_walk_at_224():
    x = random_batch((4, 3, 224, 224), torch.uint8)
    orig = x.clone()
    with _Ops() as seen:
        paste_box_(x, (56, 56, 168, 168), torch.tensor([2, 3, 1, 0]))
    assert "index_select" not in [name for name, _ in seen.ops]
    want = orig.clone()
    want[..., 56:168, 56:168] = orig[[2, 3, 1, 0]][..., 56:168, 56:168]
    assert torch.equal(x, want)


# ----------------------------------------------------------------------------------------------
# Inputs the cycle walk does not take behave exactly as before.


def test_gather_with_repeats_keeps_index_select_semantics():
    x = random_batch((4, 3, 40, 40), torch.float32)
    orig = x.clone()
    permute_batch_(x, torch.tensor([0, 0, 1, 2]), method="cycles")
    assert torch.equal(x, expected(orig, [0, 0, 1, 2]))


@pytest.mark.parametrize("method", METHODS)
def test_out_of_range_perm_raises_as_before_and_changes_nothing(method):
    x = random_batch((4, 3, 40, 40), torch.float32)
    orig = x.clone()
    with pytest.raises(IndexError, match="out of range"):
        permute_batch_(x, torch.tensor([1, 2, 3, 4]), method=method)
    with pytest.raises(IndexError, match="out of range"):
        permute_batch_(x, torch.tensor([-1, 0, 1, 2]), method=method)
    assert torch.equal(x, orig)


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.float32])
def test_perm_of_a_dtype_index_select_refuses_is_refused_as_before(dtype):
    x = random_batch((2, 3, 100, 100), torch.float32)
    orig = x.clone()
    with pytest.raises((IndexError, RuntimeError), match="int32 or int64"):
        permute_batch_(x, torch.tensor([1, 0]).to(dtype), method="cycles")
    assert torch.equal(x, orig)


def test_images_sharing_memory_raise_as_before():
    x = random_batch((1, 3, 40, 40), torch.float32).expand(4, 3, 40, 40)
    with pytest.raises(RuntimeError, match="single memory location"):
        permute_batch_(x, torch.tensor([1, 2, 3, 0]), method="cycles")


def test_requires_grad_keeps_one_autograd_op():
    leaf = torch.randn(4, 3, 40, 40, requires_grad=True)
    x = leaf * 1.0
    permute_batch_(x, torch.tensor([1, 2, 3, 0]), method="cycles")
    x.sum().backward()
    assert torch.equal(leaf.grad, torch.ones_like(leaf))  # every value still comes from one input



@pytest.mark.parametrize("side", [8, 224])  # index_select's path, then the numpy copies'
@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_a_detached_view_of_a_saved_tensor_fails_backward_on_every_path(side, mode):
    """numpy's writes bump autograd's version counter as copy_ does: no silently wrong gradients."""
    from cutmix_algo import cutmix_batch
    from cutmix_algo.sampling import derive_generator

    weight = torch.ones(4, 1, 1, 1, requires_grad=True)
    x = torch.rand(4, 3, side, side, requires_grad=True) * 2
    loss = (x * weight).sum()  # saves x for weight's gradient
    before = x._version
    cutmix_batch(x.detach(), generator=derive_generator(0), mode=mode)
    assert x._version > before
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("side", [8, 224])
def test_an_inference_tensor_is_refused_on_every_path(side):
    with torch.inference_mode():
        x = torch.rand(4, 3, side, side)
    orig = x.clone()
    with pytest.raises(RuntimeError, match="inference tensor"):
        permute_batch_(x, torch.tensor([1, 2, 3, 0]))
    with pytest.raises(RuntimeError, match="inference tensor"):
        paste_boxes_(x, torch.tensor([[0, 0, side, side]] * 4), torch.tensor([1, 2, 3, 0]))
    if side == 224:  # the numpy copies refuse before a byte moves (torch's copy_ after writing)
        assert torch.equal(x, orig)

def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="method"):
        permute_batch_(torch.zeros(2, 3), torch.tensor([1, 0]), method="fast")


# ----------------------------------------------------------------------------------------------
# CUDA: the vectorized path, no host sync, for a perm on either side.


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("perm_device", ["cpu", "cuda"])
def test_cuda_reorders_without_syncs(perm_device):
    cpu = random_batch((8, 3, 112, 112), torch.float32)
    x = cpu.cuda()
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    perm_on = perm.to(perm_device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        permute_batch_(x[..., 8:100, 8:100], perm_on)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    want = cpu.clone()
    want[..., 8:100, 8:100] = cpu[perm][..., 8:100, 8:100]
    assert torch.equal(x.cpu(), want)


# ----------------------------------------------------------------------------------------------
# Sample mode's paste (a box per image): numpy copies for large boxes on the CPU, exactly what
# the mask gives.


def masked_reference(orig: torch.Tensor, boxes: list[tuple[int, int, int, int]], perm: list[int]) -> torch.Tensor:
    """Row i's box, clipped to the image, from row perm[i] of the original: a loop over rows."""
    height, width = orig.shape[-2:]
    out = orig.clone()
    for i, (j, (top, left, bottom, right)) in enumerate(zip(perm, boxes, strict=True)):
        rows = slice(min(max(top, 0), height), min(max(bottom, 0), height))
        cols = slice(min(max(left, 0), width), min(max(right, 0), width))
        out[i, ..., rows, cols] = orig[j, ..., rows, cols]
    return out


@settings(deadline=None, max_examples=80)
@given(
    n=st.integers(1, 6),
    side=st.integers(60, 160),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.uint8, torch.int64]),
    data=st.data(),
)
def test_boxes_paste_exactly_with_repeats_and_out_of_range_bounds(n, side, dtype, data):
    x = random_batch((n, 3, side, side), dtype, n * side)
    orig = x.clone()
    bound = st.integers(-10, side + 10)
    low, high = st.integers(-10, side // 4), st.integers(side // 2, side + 10)
    big = st.tuples(low, low, high, high)  # mostly large boxes, so the numpy path is taken
    anything = st.tuples(bound, bound, bound, bound)  # empty, inverted, out of range
    boxes = [tuple(data.draw(st.one_of(big, big, big, anything))) for _ in range(n)]
    perm = data.draw(st.lists(st.integers(0, n - 1), min_size=n, max_size=n))  # repeats allowed
    took = gather_boxes_(x, torch.tensor(boxes), torch.tensor(perm))
    assert torch.equal(x, masked_reference(orig, boxes, perm) if took else orig)
    y = orig.clone()
    paste_boxes_(y, torch.tensor(boxes), torch.tensor(perm))  # whichever path it takes
    assert torch.equal(y, masked_reference(orig, boxes, perm))


def test_large_boxes_take_numpy_copies_and_no_batch_sized_temporary():
    import tracemalloc

    x = random_batch((8, 3, 224, 224), torch.float32)
    orig = x.clone()
    boxes = [(0, 0, 224, 112), (10, 20, 150, 200), (50, 50, 60, 60), (0, 0, 0, 0),
             (100, 0, 224, 224), (5, 5, 219, 219), (30, 40, 90, 200), (1, 1, 223, 223)]
    perm = [3, 0, 1, 2, 7, 5, 4, 6]  # row 5 is a fixed point
    tracemalloc.start()
    try:
        with Allocations() as seen:
            paste_boxes_(x, torch.tensor(boxes), torch.tensor(perm))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert torch.equal(x, masked_reference(orig, boxes, perm))
    assert max((numel for _, numel in seen.numels), default=0) < 224 * 224  # no mask, no batch copy
    moved = sum((bottom - top) * (right - left)
                for i, (top, left, bottom, right) in enumerate(boxes) if perm[i] != i)
    assert peak < 3 * moved * 4 + 2**20  # numpy's buffer: the moved boxes' bytes, not the batch's
    assert peak < x.numel() * 4 // 2


def test_small_or_unsupported_boxes_are_left_to_the_mask():
    small = random_batch((4, 3, 32, 32), torch.float32)  # 12 KiB per image: no box can pass
    assert not gather_boxes_(small, torch.tensor([[0, 0, 32, 32]] * 4), torch.tensor([1, 2, 3, 0]))
    big = random_batch((4, 3, 100, 100), torch.float32)
    orig = big.clone()
    full = [[0, 0, 100, 100]] * 4
    assert not gather_boxes_(big, torch.tensor([[0, 0, 10, 10]] * 4), torch.tensor([1, 2, 3, 0]))
    assert not gather_boxes_(big, torch.tensor(full, dtype=torch.float32), torch.tensor([1, 2, 3, 0]))
    assert not gather_boxes_(big, torch.tensor(full), torch.tensor([1, 2, 3, 4]))  # out of range
    assert not gather_boxes_(big, torch.tensor(full), torch.tensor([1.0, 2.0, 3.0, 0.0]))
    assert torch.equal(big, orig)
    with pytest.raises(IndexError, match="out of range"):  # the mask's path raises, as before
        paste_boxes_(big, torch.tensor(full), torch.tensor([1, 2, 3, 4]))
    assert torch.equal(big, orig)


def test_boxes_requiring_grad_are_left_to_the_mask_which_refuses_as_before():
    leaf = torch.randn(4, 3, 100, 100, requires_grad=True)
    x = leaf * 1.0
    full, perm = torch.tensor([[0, 0, 100, 100]] * 4), torch.tensor([1, 2, 3, 0])
    assert not gather_boxes_(x, full, perm)  # numpy's copies would escape autograd
    with pytest.raises(RuntimeError, match="automatic differentiation"):
        paste_boxes_(x, full, perm)
    with torch.no_grad():
        assert gather_boxes_(x, full, perm)


def test_channels_last_rows_take_the_numpy_copies_exactly():
    from cutmix_algo.functional import paste_boxes_hwc_

    nchw = random_batch((5, 3, 120, 110), torch.uint8, 9)
    hwc = nchw.permute(0, 2, 3, 1).contiguous()
    boxes = [(0, 0, 120, 110), (10, 5, 100, 90), (-3, -4, 200, 60), (30, 30, 30, 90), (2, 8, 118, 100)]
    perm = [4, 4, 0, 1, 2]
    with Allocations() as seen:
        paste_boxes_hwc_(hwc, torch.tensor(boxes), torch.tensor(perm))
    assert max((numel for _, numel in seen.numels), default=0) < 120 * 110  # not the mask's path
    want = masked_reference(nchw, boxes, perm)
    assert torch.equal(hwc, want.permute(0, 2, 3, 1))
