"""Tests for cutmix_algo.sampling: λ, the box and the permutation, checked against the paper.

The reference sampler below follows clovaai/CutMix-PyTorch ``rand_bbox`` (with its names put
right: rows along H, columns along W) and is written from the paper's description, not from our
code; the distribution tests compare the two by two-sample tests with fixed seeds, so they are
deterministic.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from cutmix_algo.sampling import (
    AUGMENT_STREAM,
    Box,
    check_box,
    derive_generator,
    epoch_order_generator,
    kept_fraction,
    online_generator,
    sample_box,
    sample_lam,
    sample_params,
    sample_row_params,
    subset_generator,
    verify_generator,
    writer_batch_generator,
)

P_MIN = 1e-3  # fixed seeds make every p-value below deterministic; this is only the bar
DRAWS = 4000


# ----------------------------------------------------------------------------------------------
# The reference: the paper's sampler, in numpy.


def reference_boxes(
    height: int,
    width: int,
    alpha: float,
    n: int,
    seed: int,
    uniform: bool = False,
    swap_cut: bool = False,
) -> np.ndarray:
    """``n`` boxes (top, left, bottom, right) drawn as the paper's code draws them.

    ``swap_cut`` is a deliberate mistake (each cut side taken from the other image side), used
    only to show the comparisons can see it.
    """
    rng = np.random.default_rng(seed)
    out = np.empty((n, 4), dtype=np.int64)
    for k in range(n):
        lam = rng.beta(alpha, alpha) if alpha > 0 else 0.0
        cut_rat = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * cut_rat), int(width * cut_rat)
        if swap_cut:
            cut_h, cut_w = cut_w, cut_h
        if uniform:  # every pixel equally likely to be covered (Composer's option)
            cy = rng.integers(-(cut_h // 2), height + cut_h // 2)
            cx = rng.integers(-(cut_w // 2), width + cut_w // 2)
        else:
            cy = rng.integers(height)
            cx = rng.integers(width)
        out[k] = (
            np.clip(cy - cut_h // 2, 0, height),
            np.clip(cx - cut_w // 2, 0, width),
            np.clip(cy + cut_h // 2, 0, height),
            np.clip(cx + cut_w // 2, 0, width),
        )
    return out


def kept(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return 1.0 - area / (height * width)


def our_boxes(
    height: int, width: int, alpha: float, n: int, seed: int, uniform: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` boxes and lams from :func:`sample_params`, one generator for the whole run."""
    g = torch.Generator().manual_seed(seed)
    boxes = np.empty((n, 4), dtype=np.int64)
    lams = np.empty(n)
    for k in range(n):
        p = sample_params(1, height, width, alpha, generator=g, uniform_sampling=uniform)
        boxes[k] = p.box
        lams[k] = p.lam
    return boxes, lams


def reference_box_law(height: int, width: int, lam: float, uniform: bool) -> dict[Box, float]:
    """The exact law of the box for a fixed λ: centers uniform, boxes counted by enumeration."""
    ratio = math.sqrt(1.0 - lam)
    half_h, half_w = int(height * ratio) // 2, int(width * ratio) // 2
    rows = range(-half_h, height + half_h) if uniform else range(height)
    cols = range(-half_w, width + half_w) if uniform else range(width)
    law: Counter[Box] = Counter()
    for cy in rows:
        for cx in cols:
            law[
                Box(
                    min(max(cy - half_h, 0), height),
                    min(max(cx - half_w, 0), width),
                    min(max(cy + half_h, 0), height),
                    min(max(cx + half_w, 0), width),
                )
            ] += 1
    total = len(rows) * len(cols)
    return {box: count / total for box, count in law.items()}


# ----------------------------------------------------------------------------------------------
# Distributions.


@pytest.mark.parametrize(
    "height, width, alpha, seed",
    [(32, 32, 1.0, 0), (24, 40, 0.5, 1), (7, 13, 2.0, 2), (40, 24, 1.0, 3)],
)
@pytest.mark.parametrize("uniform", [False, True], ids=["paper", "uniform"])
def test_kept_fraction_law_matches_the_paper(height, width, alpha, seed, uniform):
    ref = reference_boxes(height, width, alpha, DRAWS, seed=1000 + seed, uniform=uniform)
    ours, lams = our_boxes(height, width, alpha, DRAWS, seed=seed, uniform=uniform)
    # The returned λ is the exact kept fraction of the returned box.
    np.testing.assert_array_equal(lams, kept(ours, height, width))
    assert stats.ks_2samp(kept(ours, height, width), kept(ref, height, width)).pvalue > P_MIN
    # Where the box sits, and its shape, follow the reference too (rows and columns not swapped).
    for column in range(4):
        assert stats.ks_2samp(ours[:, column], ref[:, column]).pvalue > P_MIN, column
    heights_ours, heights_ref = ours[:, 2] - ours[:, 0], ref[:, 2] - ref[:, 0]
    assert stats.ks_2samp(heights_ours, heights_ref).pvalue > P_MIN


def test_the_two_sample_test_has_power():
    """The comparisons above would catch the mistakes one actually makes."""
    h, w = 24, 40
    good_boxes = reference_boxes(h, w, 0.5, DRAWS, seed=5)
    good = kept(good_boxes, h, w)
    # Cut sides taken from the wrong image sides: the box's shape gives it away.
    swapped = reference_boxes(h, w, 0.5, DRAWS, seed=6, swap_cut=True)
    assert stats.ks_2samp(good_boxes[:, 2] - good_boxes[:, 0], swapped[:, 2] - swapped[:, 0]).pvalue < 1e-6
    # The uniform variant is a different law from the paper's.
    uniform = kept(reference_boxes(h, w, 0.5, DRAWS, seed=7, uniform=True), h, w)
    assert stats.ks_2samp(good, uniform).pvalue < 1e-6
    # A different alpha is a different law.
    other = kept(reference_boxes(h, w, 1.0, DRAWS, seed=8), h, w)
    assert stats.ks_2samp(good, other).pvalue < 1e-6


@pytest.mark.parametrize("height, width, lam", [(7, 5, 0.3), (6, 9, 0.6), (1, 4, 0.0), (11, 3, 0.05)])
@pytest.mark.parametrize("uniform", [False, True], ids=["paper", "uniform"])
def test_box_law_for_a_fixed_lam_is_exact(height, width, lam, uniform):
    """For a fixed λ every drawn box is one the reference can draw, at the reference's rates."""
    law = reference_box_law(height, width, lam, uniform)
    g = torch.Generator().manual_seed(17)
    draws = 3000
    counts = Counter(sample_box(height, width, lam, g, uniform_sampling=uniform) for _ in range(draws))
    assert set(counts) <= set(law), set(counts) - set(law)
    boxes = sorted(law)
    observed = np.array([counts.get(b, 0) for b in boxes], dtype=float)
    expected = np.array([law[b] * draws for b in boxes])
    if len(boxes) > 1:
        assert stats.chisquare(observed, expected).pvalue > P_MIN


@pytest.mark.parametrize("alpha", [0.2, 1.0, 3.0])
def test_lam_is_beta_distributed(alpha):
    g = torch.Generator().manual_seed(int(alpha * 10))
    lams = np.array([sample_lam(alpha, g) for _ in range(DRAWS)])
    assert ((lams >= 0) & (lams <= 1)).all()
    assert stats.kstest(lams, stats.beta(alpha, alpha).cdf).pvalue > P_MIN


def _coverage(height: int, width: int, uniform: bool, draws: int = DRAWS) -> np.ndarray:
    boxes, _ = our_boxes(height, width, 1.0, draws, seed=99, uniform=uniform)
    cover = np.zeros((height, width))
    for top, left, bottom, right in boxes:
        cover[top:bottom, left:right] += 1
    return cover / draws


def test_uniform_sampling_covers_every_pixel_equally():
    h = w = 32
    uniform = _coverage(h, w, uniform=True)
    paper = _coverage(h, w, uniform=False)
    corners = lambda c: np.mean([c[0, 0], c[0, -1], c[-1, 0], c[-1, -1]])  # noqa: E731
    centers = lambda c: c[h // 2 - 1 : h // 2 + 1, w // 2 - 1 : w // 2 + 1].mean()  # noqa: E731
    # Uniform: a corner is covered as often as the center (each ~0.3, binomial sd ~0.007).
    assert abs(corners(uniform) - centers(uniform)) < 0.04
    assert uniform.max() - uniform.min() < 0.08
    # The paper's sampler favors the middle: a corner is covered about a quarter as often.
    assert corners(paper) < 0.5 * centers(paper)


# ----------------------------------------------------------------------------------------------
# alpha == 0, and the box geometry.


@pytest.mark.parametrize("height, width", [(32, 32), (7, 13), (1, 1), (2, 9), (40, 1)])
def test_alpha_zero_cuts_a_full_side_box(height, width):
    g = torch.Generator().manual_seed(3)
    assert sample_lam(0.0, g) == 0.0
    # λ = 0: cut = the full side, so rows = min(cy + H//2, H) - max(cy - H//2, 0) for cy in [0, H)
    possible_rows = {min(cy + height // 2, height) - max(cy - height // 2, 0) for cy in range(height)}
    possible_cols = {min(cx + width // 2, width) - max(cx - width // 2, 0) for cx in range(width)}
    # ... at least H//2 rows and W//2 columns, so at most 1 - (H//2)(W//2)/(HW) is kept
    # (3/4 for even sides; 1 for a 1-pixel side, where the box is empty).
    bound = 1.0 - (height // 2) * (width // 2) / (height * width)
    for _ in range(300):
        p = sample_params(2, height, width, alpha=0.0, generator=g)
        assert p.box.bottom - p.box.top in possible_rows
        assert p.box.right - p.box.left in possible_cols
        assert p.lam <= bound + 1e-12
    if height % 2 == 0 and width % 2 == 0:
        assert bound == 0.75


@settings(deadline=None, max_examples=200)
@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    n=st.integers(1, 9),
    alpha=st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.0, 10.0]),
    uniform=st.booleans(),
    seed=st.integers(0, 2**63 - 1),
)
def test_sampled_params_are_well_formed(height, width, n, alpha, uniform, seed):
    p = sample_params(n, height, width, alpha, torch.Generator().manual_seed(seed), uniform)
    top, left, bottom, right = p.box
    assert all(type(v) is int for v in p.box)
    assert 0 <= top <= bottom <= height and 0 <= left <= right <= width
    assert isinstance(p.lam, float)
    assert p.lam == 1.0 - (bottom - top) * (right - left) / (height * width)
    assert p.perm.dtype == torch.int64 and p.perm.shape == (n,)
    assert sorted(p.perm.tolist()) == list(range(n))
    # An unclipped box spans 2 * (cut // 2) pixels: even, and at most the side.
    if 0 < top and bottom < height:
        assert (bottom - top) % 2 == 0
    if 0 < left and right < width:
        assert (right - left) % 2 == 0


def test_kept_fraction_and_check_box():
    assert kept_fraction(Box(0, 0, 0, 0), 4, 4) == 1.0
    assert kept_fraction(Box(0, 0, 4, 4), 4, 4) == 0.0
    assert kept_fraction(Box(1, 2, 3, 5), 4, 6) == 1.0 - 6 / 24
    assert check_box((1, 2, 3, 5), 4, 6) == Box(top=1, left=2, bottom=3, right=5)
    assert check_box(torch.tensor([0, 0, 4, 6]), 4, 6) == Box(0, 0, 4, 6)
    for bad in [(0, 0, 5, 6), (0, 0, 4, 7), (-1, 0, 2, 2), (3, 0, 2, 2), (0, 3, 2, 2), (0, 0, 1)]:
        with pytest.raises(ValueError, match="box"):
            check_box(bad, 4, 6)


def test_the_largest_accepted_alpha_still_draws_about_a_half():
    """Above MAX_ALPHA numpy's Beta sampler gives 0, which would act as alpha = 0 in silence."""
    from cutmix_algo.sampling import MAX_ALPHA

    assert abs(sample_lam(MAX_ALPHA, torch.Generator().manual_seed(0)) - 0.5) < 1e-6
    with pytest.raises(ValueError, match="alpha must be at most"):
        sample_lam(1e308, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("alpha", [-0.5, float("nan"), float("inf"), 1e308, "one", None])
def test_sample_lam_rejects_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        sample_lam(alpha, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="alpha"):
        sample_params(4, 8, 8, alpha, torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------------------------
# Determinism.


def _draw(generator: torch.Generator | None, k: int = 5) -> list[tuple]:
    out = []
    for _ in range(k):
        p = sample_params(8, 24, 40, 1.0, generator)
        out.append((p.lam, tuple(p.box), tuple(p.perm.tolist())))
    return out


def test_same_seed_same_draws_different_seeds_differ():
    assert _draw(torch.Generator().manual_seed(7)) == _draw(torch.Generator().manual_seed(7))
    a, b = _draw(torch.Generator().manual_seed(7)), _draw(torch.Generator().manual_seed(8))
    assert all(x != y for x, y in zip(a, b, strict=True))
    # Consecutive draws from one generator differ too.
    assert len({d[0] for d in a}) == len(a)


def test_derive_generator_is_reproducible_and_keyed():
    assert _draw(derive_generator(42, 0, 7)) == _draw(derive_generator(42, 0, 7))
    keys = [(42, 0, 0), (42, 0, 1), (42, 1, 0), (43, 0, 0), (42, 0, 7), (42, 0, 8), (7, 0, 42)]
    assert len({tuple(_draw(derive_generator(*k), 2)) for k in keys}) == len(keys)
    assert isinstance(derive_generator(1), torch.Generator)
    # Its state depends on the keys alone, not on torch's global RNG.
    torch.manual_seed(0)
    first = _draw(derive_generator(5, 5))
    torch.manual_seed(1)
    assert _draw(derive_generator(5, 5)) == first


@pytest.mark.parametrize(
    "keys_a, keys_b",
    [
        ((42,), (42, 0)),  # a seed alone vs (seed, rank 0)
        ((42, 0), (42, 0, 0)),  # (seed, epoch 0) vs (seed, rank 0, batch 0)
        ((2**32,), (0, 1)),  # keys >= 2**32 are split into 32-bit words ...
        ((2**32, 1), (0, 2**32 + 1)),  # ... so even keys of one length can collide
    ],
)
def test_derive_generator_distinct_keys_give_distinct_streams(keys_a, keys_b):
    """Different key tuples must not give the same stream.

    numpy's ``SeedSequence`` alone pads its entropy with zeros and splits big integers into 32-bit
    words, so these pairs would hash to one state; ``derive_generator`` encodes the keys
    injectively (the key count, then each key as two 32-bit words).
    """
    assert _draw(derive_generator(*keys_a), 2) != _draw(derive_generator(*keys_b), 2)


def test_the_key_table_holds_as_its_docstring_says():
    """Online rank r and the writer's epoch r draw alike (same key form); the other rows differ."""
    for rank, batch in [(0, 0), (1, 5), (3, 2)]:
        assert _draw(online_generator(7, rank, batch), 2) == _draw(writer_batch_generator(7, rank, batch), 2)
    batch_draw = _draw(writer_batch_generator(7, 0, 0), 2)
    others = [epoch_order_generator(7, 0), online_generator(7, 0, 0, AUGMENT_STREAM), verify_generator(),
              writer_batch_generator(7, 0, 1), writer_batch_generator(8, 0, 0)]
    draws = [_draw(g, 2) for g in others]
    assert batch_draw not in draws and len({tuple(d) for d in draws}) == len(draws)
    # The training subset's generator is a plain seed (kept so recipes' subsets never change).
    assert torch.equal(torch.randperm(50, generator=subset_generator(3)),
                       torch.randperm(50, generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("keys", [(), (-1,), (1, -2), (True,), (1.5,), ("3",)])
def test_derive_generator_rejects_bad_keys(keys):
    with pytest.raises(ValueError):
        derive_generator(*keys)


def test_no_generator_uses_torch_default_generator():
    torch.manual_seed(123)
    first = _draw(None)
    torch.manual_seed(123)
    assert _draw(None) == first
    torch.manual_seed(124)
    assert _draw(None) != first


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: sample_params(8, 32, 32, minmax=(0.5, 2.0)), "minmax"),
        (lambda: sample_params(8, 32, 32, minmax=(0.8, 0.2)), "minmax"),
        (lambda: sample_box(32, 32, 1.5), "lam"),
        (lambda: sample_box(32, 32, -0.1), "lam"),
        (lambda: sample_box(32, 32, float("nan")), "lam"),
        (lambda: sample_params(8, 32, 32, generator=42), "generator"),
        (lambda: sample_row_params(8, 32, 32, generator=np.random.default_rng(0)), "generator"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, name):
    with pytest.raises(ValueError, match=name):
        call()
