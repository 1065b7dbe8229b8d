"""What the anchors have: per-sample mode, MixUp switching, box-size bounds, loss interpolation, image logging.

Expected pixels and labels are computed here with plain loops over rows, independently of the
code under test; distributions are compared with a paper-faithful reference written here too.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from composer import Trainer
from composer.core import Callback, State
from composer.loggers import InMemoryLogger, Logger
from composer.models import ComposerModel
from conftest import Allocations
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torch.utils.data import DataLoader, TensorDataset

from cutmix_algo import CutMix, cutmix_batch, derive_generator
from cutmix_algo.functional import mixup_
from cutmix_algo.sampling import label_grid_bits, sample_box_minmax, sample_row_params

C, H, W, K = 3, 12, 10, 5
PROPERTY = settings(deadline=None, max_examples=60)


def _batch(n: int, height: int, width: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        return torch.randint(0, 256, (n, C, height, width), generator=g, dtype=torch.uint8)
    return torch.rand(n, C, height, width, generator=g).to(dtype)


# ----------------------------------------------------------------------------------------------
# Sample mode.


@PROPERTY
@given(
    n=st.integers(1, 12),
    height=st.integers(1, 24),
    width=st.integers(1, 24),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.uint8]),
    seed=st.integers(0, 2**31),
    layout=st.sampled_from(["contiguous", "channels_last"]),
    minmax=st.sampled_from([None, (0.2, 0.8)]),
)
def test_sample_mode_pastes_each_rows_own_box_exactly(n, height, width, dtype, seed, layout, minmax):
    x = _batch(n, height, width, dtype, seed)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    orig = x.clone()
    y = torch.randint(0, K, (n,), generator=torch.Generator().manual_seed(seed))
    out = cutmix_batch(x, y, num_classes=K, mode="sample", minmax=minmax, generator=derive_generator(seed))
    assert out.input is x
    assert out.lam.shape == (n,) and out.box.shape == (n, 4)
    bits = label_grid_bits(n)
    for i in range(n):
        top, left, bottom, right = out.box[i].tolist()
        j = int(out.perm[i])
        want = orig[i].clone()
        want[:, top:bottom, left:right] = orig[j][:, top:bottom, left:right]
        assert torch.equal(x[i], want), i
        kept = 1.0 if j == i else 1.0 - (bottom - top) * (right - left) / (height * width)
        assert abs(float(out.lam[i]) - kept) <= 2.0 ** -(bits + 1)
        label = torch.zeros(K)
        label[y[i]] += float(out.lam[i])
        label[y[j]] += 1.0 - float(out.lam[i])
        assert torch.equal(out.target[i], label)
    assert out.target.sum().item() == n


def test_sample_mode_rows_get_different_boxes() -> None:
    # kornia once regressed to one placement for every row (#4712).
    out = cutmix_batch(torch.rand(64, 3, 32, 32), mode="sample", generator=derive_generator(1))
    assert len({tuple(b) for b in out.box.tolist()}) > 32
    assert len(set(out.lam.tolist())) > 16


def _reference_row(height: int, width: int, alpha: float, rng: np.random.Generator) -> float:
    """The paper's sampler for one row: λ ~ Beta, cut side·√(1−λ), uniform center, clipped."""
    lam = rng.beta(alpha, alpha)
    cut_h, cut_w = int(height * math.sqrt(1 - lam)), int(width * math.sqrt(1 - lam))
    cy, cx = rng.integers(0, height), rng.integers(0, width)
    top, bottom = np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h // 2, 0, height)
    left, right = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w // 2, 0, width)
    return 1.0 - (bottom - top) * (right - left) / (height * width)


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_sample_mode_kept_fractions_follow_the_papers_distribution(alpha: float) -> None:
    rng = np.random.default_rng(0)
    reference = [_reference_row(32, 28, alpha, rng) for _ in range(4000)]
    ours = []
    for b in range(40):
        p = sample_row_params(100, 32, 28, alpha, derive_generator(b))
        fixed = p.perm == torch.arange(100)
        ours += p.lam[~fixed].tolist()  # fixed points keep everything by construction
    assert stats.ks_2samp(reference, ours).pvalue > 1e-3


def test_sample_mode_needs_one_batch_sized_temporary_and_no_more() -> None:
    x = torch.rand(16, 3, 20, 24)  # small images: the mask's path (large boxes: tests/test_paste.py)
    with Allocations() as seen:
        cutmix_batch(x, torch.randint(0, 10, (16,)), num_classes=10, mode="sample", generator=derive_generator(0))
    assert sum(n >= x.numel() for _, n in seen.numels) == 1  # the permuted batch
    with Allocations() as seen:
        cutmix_batch(x, torch.randint(0, 10, (16,)), num_classes=10, generator=derive_generator(0))
    assert max(n for _, n in seen.numels) < x.numel()  # batch mode: the box region only


def test_sample_mode_refuses_box_and_perm() -> None:
    with pytest.raises(ValueError, match="mode='batch'"):
        cutmix_batch(torch.rand(2, 1, 4, 4), mode="sample", box=(0, 0, 2, 2))
    with pytest.raises(ValueError, match="mode must be one of"):
        cutmix_batch(torch.rand(2, 1, 4, 4), mode="pair")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sample_mode_on_cuda_matches_cpu_without_syncs() -> None:
    x = torch.rand(32, 3, 24, 24)
    y = torch.randint(0, K, (32,))
    cpu = cutmix_batch(x.clone(), y, num_classes=K, mode="sample", generator=derive_generator(5))
    xg, yg = x.cuda(), y.cuda()
    torch.cuda.set_sync_debug_mode("error")
    try:
        gpu = cutmix_batch(xg, yg, num_classes=K, mode="sample", generator=derive_generator(5))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(gpu.input.cpu(), cpu.input) and torch.equal(gpu.target.cpu(), cpu.target)


# ----------------------------------------------------------------------------------------------
# Box-size bounds.


def test_minmax_sides_stay_in_range_and_reach_every_edge() -> None:
    g = derive_generator(3)
    boxes = [sample_box_minmax(20, 16, (0.25, 0.5), g) for _ in range(3000)]
    heights = {b.bottom - b.top for b in boxes}
    widths = {b.right - b.left for b in boxes}
    assert heights == set(range(5, 11)) and widths == set(range(4, 9))  # both ends included
    # timm #2739: an exclusive bound never placed a box at the bottom or right edge.
    assert any(b.bottom == 20 for b in boxes) and any(b.right == 16 for b in boxes)
    assert any(b.top == 0 for b in boxes) and any(b.left == 0 for b in boxes)
    # Every feasible top position is about equally likely for a given height.
    tops = [b.top for b in boxes if b.bottom - b.top == 5]
    counts = np.bincount(tops, minlength=16)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_minmax_lambda_is_the_kept_fraction() -> None:
    out = cutmix_batch(torch.rand(4, 3, 32, 32), alpha=1.0, minmax=(0.4, 0.4), generator=derive_generator(0))
    top, left, bottom, right = out.box
    assert (bottom - top, right - left) == (12, 12)
    assert out.lam == pytest.approx(1 - 144 / 1024, abs=2**-20)
    with pytest.raises(ValueError, match="minmax"):
        cutmix_batch(torch.rand(2, 1, 4, 4), minmax=(0.8, 0.2))


# ----------------------------------------------------------------------------------------------
# MixUp.


def test_mixup_blends_floats_exactly_and_rounds_uint8() -> None:
    x = torch.rand(6, 3, 5, 5)
    orig = x.clone()
    perm = torch.tensor([5, 4, 3, 2, 1, 0])
    mixup_(x, 0.25, perm)
    assert torch.allclose(x, 0.25 * orig + 0.75 * orig[perm], atol=1e-6)
    u = torch.randint(0, 256, (6, 3, 5, 5), dtype=torch.uint8)
    uo = u.clone()
    mixup_(u, 0.3, perm)
    want = (0.3 * uo.float() + 0.7 * uo[perm].float()).round().to(torch.uint8)
    assert u.dtype == torch.uint8 and (u.int() - want.int()).abs().max() <= 1


# ----------------------------------------------------------------------------------------------
# Trainer fits.


class _Linear(ComposerModel):
    """A linear classifier with a cross-entropy loss that takes int labels or dense rows."""

    def __init__(self) -> None:
        super().__init__()
        self.num_classes = K
        self.fc = torch.nn.Linear(C * H * W, K)
        self.losses: list[float] = []
        self.targets: list[torch.Tensor] = []

    def forward(self, batch: Any) -> torch.Tensor:
        return self.fc(batch[0].float().flatten(1))

    def loss(self, outputs: torch.Tensor, batch: Any) -> torch.Tensor:
        self.targets.append(batch[1])
        return F.cross_entropy(outputs, batch[1])


def _data(n: int = 32, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, C, H, W, generator=g), torch.randint(0, K, (n,), generator=g))


def _fit(algo: CutMix, model: ComposerModel | None = None, data: TensorDataset | None = None,
         **kwargs: Any) -> tuple[Trainer, Any]:
    model = model or _Linear()
    kwargs.setdefault("max_duration", "4ba")
    trainer = Trainer(model=model, train_dataloader=DataLoader(data or _data(), batch_size=8),
                      algorithms=[algo], optimizers=torch.optim.SGD(model.parameters(), lr=0.0),
                      device="cpu", progress_bar=False, seed=2, **kwargs)
    trainer.fit()
    return trainer, model


def test_sample_mode_trains_with_per_row_lambda() -> None:
    algo = CutMix(mode="sample")
    logger = InMemoryLogger()
    _, model = _fit(algo, loggers=[logger])
    assert isinstance(algo.last_lam, torch.Tensor) and algo.last_lam.shape == (8,)
    assert all(t.shape == (8, K) for t in model.targets)
    logged = [v for _, v in logger.data["cutmix/lambda"]]
    assert len(logged) == 4 and all(0.0 <= v <= 1.0 for v in logged)


class _Batches(Callback):
    def __init__(self, algo: CutMix | None = None) -> None:
        self.algo = algo
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.draws: list[tuple[Any, torch.Tensor]] = []

    def after_dataloader(self, state: State, logger: Logger) -> None:
        self.batches.append((state.batch_get_item(0).clone(), state.batch_get_item(1).clone()))
        if self.algo is not None:
            self.draws.append((self.algo.last_lam, self.algo.last_perm.clone()))


@pytest.mark.parametrize("microbatch", [None, 2])
def test_interpolate_loss_is_the_weighted_sum_of_two_losses(microbatch: int | None) -> None:
    algo = CutMix(interpolate_loss=True)
    logger = InMemoryLogger()
    seen = _Batches()
    trainer, model = _fit(algo, loggers=[logger], callbacks=[seen], max_duration="3ba",
                          device_train_microbatch_size=microbatch)
    losses = [float(v) for _, v in logger.data["loss/train/total"]]
    for _, y in seen.batches:
        assert y.dtype == torch.long and y.shape == (8,)  # targets stay int labels
    # The last batch's logged loss equals λ·CE(f(x̃), y) + (1−λ)·CE(f(x̃), y[perm]) (lr = 0: f fixed).
    x, y = seen.batches[-1]
    lam, perm = algo.last_lam, algo.last_perm
    with torch.no_grad():
        out = model.fc(x.flatten(1))
        want = lam * F.cross_entropy(out, y) + (1 - lam) * F.cross_entropy(out, y[perm])
    assert losses[-1] == pytest.approx(float(want), rel=1e-5)
    assert 0.0 < lam < 1.0


def test_interpolate_loss_refuses_sample_mode_and_dense_targets() -> None:
    with pytest.raises(ValueError, match="interpolate_loss needs one"):
        CutMix(interpolate_loss=True, mode="sample")
    g = torch.Generator().manual_seed(0)
    dense = TensorDataset(torch.rand(16, C, H, W, generator=g), torch.softmax(torch.rand(16, K, generator=g), 1))
    with pytest.raises(ValueError, match=r"int class labels of shape \(N,\)"):
        _fit(CutMix(interpolate_loss=True), data=dense, max_duration="1ba")


@pytest.mark.parametrize("cutmix_first", [True, False])
def test_interpolate_loss_refuses_label_smoothing(cutmix_first: bool) -> None:
    """LabelSmoothing would smooth only the λ term of the two-term loss: refused at fit start."""
    from composer.algorithms import LabelSmoothing

    def fit(cutmix: CutMix) -> None:
        model = _Linear()
        algos = [cutmix, LabelSmoothing(smoothing=0.3)]
        Trainer(model=model, train_dataloader=DataLoader(_data(), batch_size=8),
                algorithms=algos if cutmix_first else algos[::-1],
                optimizers=torch.optim.SGD(model.parameters(), lr=0.0), device="cpu",
                progress_bar=False, seed=2, max_duration="1ba").fit()

    with pytest.raises(ValueError, match="interpolate_loss=True.*LabelSmoothing"):
        fit(CutMix(interpolate_loss=True))
    fit(CutMix())  # the dense-target default trains with it


def test_mixup_switching_draws_both_and_logs_which() -> None:
    algo = CutMix(mixup_alpha=0.8, switch_prob=0.5)
    logger = InMemoryLogger()
    seen = _Batches(algo)
    data = _data(64 * 8, seed=1)
    _fit(algo, loggers=[logger], callbacks=[seen], data=data, max_duration="24ba")
    used = [v for _, v in logger.data["cutmix/mixup"]]
    assert set(used) == {0.0, 1.0} and 4 <= sum(used) <= 20
    # The choice is keyed like every other draw: a rerun repeats it.
    logger2 = InMemoryLogger()
    _fit(CutMix(mixup_alpha=0.8, switch_prob=0.5), loggers=[logger2], data=data, max_duration="24ba")
    assert [v for _, v in logger2.data["cutmix/mixup"]] == used
    # A MixUp batch blends whole images: x = λ·x + (1−λ)·x[perm], labels likewise.
    b = used.index(1.0)
    x, target = seen.batches[b]
    lam, perm = seen.draws[b]
    originals, labels = data.tensors[0][b * 8:(b + 1) * 8], data.tensors[1][b * 8:(b + 1) * 8]
    assert torch.allclose(x, lam * originals + (1 - lam) * originals[perm], atol=1e-6)
    want = lam * F.one_hot(labels, K) + (1 - lam) * F.one_hot(labels[perm], K)
    assert torch.allclose(target, want.float()) and torch.equal(target.sum(1), torch.ones(8))


def test_mixup_with_segmentation_maps_is_refused_on_the_first_batch_before_any_mixing() -> None:
    """switch_prob=0 draws no MixUp batch at all: the refusal must not wait for one."""
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(16, C, H, W, generator=g), torch.randint(0, K, (16, H, W), generator=g))
    before = data.tensors[0].clone()
    with pytest.raises(ValueError, match=r"mixup_alpha=0\.8.*segmentation maps"):
        _fit(CutMix(mixup_alpha=0.8, switch_prob=0.0), data=data, max_duration="1ba")
    assert torch.equal(data.tensors[0], before)


@pytest.mark.parametrize("name", ["uniform_sampling", "interpolate_loss"])
@pytest.mark.parametrize("bad", ["false", "no", 0, 1, None])
def test_flags_take_bools_only(name: str, bad: Any) -> None:
    with pytest.raises(ValueError, match=name):
        CutMix(**{name: bad})
    assert getattr(CutMix(**{name: np.bool_(True)}), name) is True


def test_switch_prob_one_is_always_mixup_and_zero_never() -> None:
    for prob, want in ((1.0, 1.0), (0.0, 0.0)):
        logger = InMemoryLogger()
        _fit(CutMix(mixup_alpha=1.0, switch_prob=prob), loggers=[logger])
        assert {v for _, v in logger.data["cutmix/mixup"]} == {want}


def test_minmax_fit_uses_bounded_boxes() -> None:
    algo = CutMix(minmax=(0.5, 0.5))
    _fit(algo)
    top, left, bottom, right = algo.last_box
    assert (bottom - top, right - left) == (6, 5)


def test_log_images_writes_grids_through_tensorboard(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from composer.loggers import TensorboardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    algo = CutMix(log_images_every="2ba")
    tb = TensorboardLogger(log_dir=str(tmp_path), flush_interval=1)
    _fit(algo, loggers=[tb])
    tb.close(None, None)  # type: ignore[arg-type]
    events = list(tmp_path.rglob("events.out.tfevents.*"))
    assert events, sorted(p.name for p in tmp_path.rglob("*"))
    acc = EventAccumulator(str(events[0].parent), size_guidance={"images": 0})
    acc.Reload()
    tags = acc.Tags()["images"]
    assert any("cutmix/mixed" in t for t in tags) and any("cutmix/cut_from" in t for t in tags), tags
    steps = {e.step for t in tags if "cutmix/mixed" in t for e in acc.Images(t)}
    assert steps == {0, 2}  # batches 0 and 2 of 4: nothing on the others


def test_log_images_every_must_be_batches() -> None:
    for bad in ("2ep", "0ba", "soon"):
        with pytest.raises(ValueError, match="log_images_every"):
            CutMix(log_images_every=bad)
