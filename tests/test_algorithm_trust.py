"""CutMix never alters the user's data or settings: loader memory, resume, target format, quiet losses.

Each test reproduces a way a drop-in algorithm can silently break trust, through a real Composer
Trainer on the CPU (or the functional API where no Trainer is needed).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from composer import Trainer
from composer.algorithms import ProgressiveResizing
from composer.core import Callback, Event, State
from composer.loggers import Logger
from composer.models import ComposerClassifier, ComposerModel
from conftest import Allocations
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from cutmix_algo import CutMix, cutmix_batch, derive_generator, mix_targets, sample_params
from cutmix_algo.sampling import label_grid_bits, label_lam

C, H, W, K = 3, 12, 10, 5


def _tensors(n: int, seed: int = 0, height: int = H, width: int = W) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, C, height, width, generator=g), torch.randint(0, K, (n,), generator=g)


class _Net(torch.nn.Module):
    def __init__(self, height: int = H, width: int = W) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(C * height * width, K)
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.inputs.append(x.detach().clone())
        return self.fc(x.flatten(1))


class _Slices(IterableDataset):
    """Yields views ``X[i:i+b], Y[i:i+b]`` of in-memory tensors: a common hand-rolled loader."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch: int) -> None:
        self.x, self.y, self.batch = x, y, batch

    def __iter__(self):
        for i in range(0, len(self.x), self.batch):
            yield self.x[i : i + self.batch], self.y[i : i + self.batch]

    def __len__(self) -> int:
        return len(self.x) // self.batch


class _Whole(IterableDataset):
    """Yields the dataset tensors themselves as the one batch of an epoch."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __iter__(self):
        yield self.x, self.y

    def __len__(self) -> int:
        return 1


def _trainer(algo: CutMix, loader: Any, net: _Net | None = None, **kwargs: Any) -> Trainer:
    net = net or _Net()
    kwargs.setdefault("max_duration", "1ep")
    return Trainer(
        model=ComposerClassifier(net, num_classes=K),
        train_dataloader=loader,
        algorithms=[algo],
        optimizers=torch.optim.SGD(net.parameters(), lr=0.01),
        device="cpu",
        progress_bar=False,
        seed=3,
        **kwargs,
    )


# ----------------------------------------------------------------------------------------------
# 1. Never write into memory the loader still owns.


def test_view_yielding_loader_keeps_the_dataset_bit_identical(caplog: pytest.LogCaptureFixture) -> None:
    x, y = _tensors(64)
    pristine = x.clone()
    algo = CutMix()
    net = _Net()
    with caplog.at_level(logging.WARNING, logger="cutmix_algo.algorithm"):
        _trainer(algo, DataLoader(_Slices(x, y, 16), batch_size=None), net,
                 device_train_microbatch_size=16).fit()
    assert torch.equal(x, pristine), f"{(x != pristine).flatten(1).any(1).sum()} images overwritten"
    assert algo.last_inplace is False
    # It still mixed: the model saw pasted images, not the dataset's.
    assert not torch.equal(torch.cat(net.inputs), pristine)
    # And it said once why it copies.
    told = [r for r in caplog.records if "mixes a copy" in r.getMessage()]
    assert len(told) == 1 and "batch_size=None" in told[0].getMessage()


def test_a_batch_that_is_the_whole_dataset_tensor_is_not_overwritten() -> None:
    x, y = _tensors(16, seed=1)
    pristine = x.clone()
    algo = CutMix()
    _trainer(algo, DataLoader(_Whole(x, y), batch_size=None), max_duration="2ep",
             device_train_microbatch_size=16).fit()
    assert torch.equal(x, pristine)
    assert algo.last_perm is not None and algo.last_lam is not None and algo.last_lam < 1.0


def test_inplace_true_trusts_the_user() -> None:
    x, y = _tensors(32, seed=2)
    pristine = x.clone()
    algo = CutMix(inplace=True)
    _trainer(algo, DataLoader(_Slices(x, y, 16), batch_size=None), device_train_microbatch_size=16).fit()
    assert algo.last_inplace is True
    assert not torch.equal(x, pristine)  # the documented opt-in: the user's batches were theirs


def test_inplace_false_always_copies() -> None:
    x, y = _tensors(32, seed=2)
    algo = CutMix(inplace=False)
    _trainer(algo, DataLoader(TensorDataset(x, y), batch_size=8), max_duration="2ba").fit()
    assert algo.last_inplace is False


class _Expanded(IterableDataset):
    """Yields one image expanded to a batch (stride 0 in the batch dimension)."""

    def __iter__(self):
        image, labels = _tensors(1, seed=4)
        yield image.expand(8, C, H, W), labels.expand(8)

    def __len__(self) -> int:
        return 1


def test_inplace_true_refuses_an_expanded_input_naming_it() -> None:
    """Pasting into one row of an expanded batch would write every row: refused, nothing written."""
    loader = DataLoader(_Expanded(), batch_size=None)
    with pytest.raises(ValueError, match=r"input of shape \(8, 3, 12, 10\) is an expanded view"):
        _trainer(CutMix(inplace=True), loader, device_train_microbatch_size=8).fit()
    # The default copies such a batch (a loader without default collate) and mixes the copy.
    algo = CutMix()
    _trainer(algo, loader, device_train_microbatch_size=8).fit()
    assert algo.last_inplace is False and algo.last_lam < 1.0


class _PackedMap(IterableDataset):
    """Yields an image and a segmentation map that are the same memory (a map read off the image)."""

    def __iter__(self):
        x, _ = _tensors(8, seed=5)
        yield x, x[:, 0]

    def __len__(self) -> int:
        return 1


class _MapNet(ComposerModel):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(C, 1, 1)

    def forward(self, batch: Any) -> torch.Tensor:
        return self.conv(batch[0])[:, 0]

    def loss(self, outputs: torch.Tensor, batch: Any) -> torch.Tensor:
        return F.mse_loss(outputs, batch[1])


def test_inplace_true_refuses_a_target_map_sharing_the_inputs_memory() -> None:
    """The input's box is pasted first, so the map would be mixed from pasted values."""
    model = _MapNet()
    trainer = Trainer(model=model, train_dataloader=DataLoader(_PackedMap(), batch_size=None),
                      max_duration="1ba", algorithms=[CutMix(inplace=True, num_classes=K)],
                      optimizers=torch.optim.SGD(model.parameters(), lr=0.01), device="cpu",
                      progress_bar=False)
    with pytest.raises(ValueError, match="shares memory with input"):
        trainer.fit()


class _RecordedCutMix(CutMix):
    """CutMix whose batch mixing runs under the allocation recorder."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen: list[tuple[str, int]] = []
        self.batch_numel = 0

    def apply(self, event: Event, state: State, logger: Logger) -> None:
        if event != Event.AFTER_DATALOADER:
            return super().apply(event, state, logger)
        self.batch_numel = state.batch_get_item(0).numel()
        with Allocations() as rec:
            super().apply(event, state, logger)
        self.seen += rec.numels


def test_the_collated_path_mixes_in_place_without_a_batch_sized_copy() -> None:
    x, y = _tensors(32, seed=4)
    pristine = x.clone()
    algo = _RecordedCutMix()
    _trainer(algo, DataLoader(TensorDataset(x, y), batch_size=8), max_duration="3ba").fit()
    assert algo.last_inplace is True
    assert algo.seen, "the recorder saw no ops"
    assert max(n for _, n in algo.seen) < algo.batch_numel, max(algo.seen, key=lambda e: e[1])
    assert torch.equal(x, pristine)  # default collate stacked fresh batches: the dataset is untouched


# ----------------------------------------------------------------------------------------------
# 2. On resume, the constructor's hyperparameters win.


class _Lams(Callback):
    def __init__(self, algo: CutMix) -> None:
        self.algo, self.lams = algo, []

    def after_dataloader(self, state: State, logger: Logger) -> None:
        self.lams.append(self.algo.last_lam)


def _fit_collated(algo: CutMix, tmp: Path | None = None, **kwargs: Any) -> list[float]:
    x, y = _tensors(48, seed=5)
    lams = _Lams(algo)
    extra = {"save_folder": str(tmp), "save_interval": "3ba"} if tmp else {}
    _trainer(algo, DataLoader(TensorDataset(x, y), batch_size=8), callbacks=[lams],
             max_duration="6ba", **extra, **kwargs).fit()
    return lams.lams


def test_resume_uses_the_constructors_alpha_p_and_stop_at(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    _fit_collated(CutMix(alpha=1.0), tmp_path)
    checkpoint = str(tmp_path / "ep0-ba3-rank0.pt")

    with caplog.at_level(logging.WARNING, logger="cutmix_algo.algorithm"):
        lams = _fit_collated(CutMix(alpha=0.2, stop_at="5ba"), load_path=checkpoint)
    # Batches 3 and 4 drawn with the new alpha from the run's seed (3), batch 5 after stop_at.
    want = [label_lam(sample_params(8, H, W, 0.2, derive_generator(3, 0, b)).lam, 8) for b in (3, 4)]
    assert lams == want + [1.0]
    said = [r.getMessage() for r in caplog.records if "checkpoint" in r.getMessage()]
    assert len(said) == 1
    assert "alpha 1.0 -> 0.2" in said[0] and "stop_at None -> '5ba'" in said[0]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cutmix_algo.algorithm"):
        assert _fit_collated(CutMix(p=0.0), load_path=checkpoint) == [1.0, 1.0, 1.0]
    assert any("p 1.0 -> 0.0" in r.getMessage() for r in caplog.records)


def test_every_recorded_constructor_argument_that_differs_is_named(caplog: pytest.LogCaptureFixture) -> None:
    saved = CutMix(inplace=True, log_images_every="5ba", input_key="image", target_key="label").state_dict()
    with caplog.at_level(logging.WARNING, logger="cutmix_algo.algorithm"):
        CutMix(input_key="img", target_key="label").load_state_dict(saved)
    (said,) = [r.getMessage() for r in caplog.records if "checkpoint" in r.getMessage()]
    assert "inplace True -> None" in said and "log_images_every '5ba' -> None" in said
    assert "input_key 'image' -> 'img'" in said and "target_key" not in said

    # A getter/setter pair is not recorded, so it is not compared; a checkpoint from before these
    # arguments were recorded counts as their defaults.
    caplog.clear()
    pair = (lambda batch: batch["image"], lambda batch, value: batch.update(image=value))
    old = {k: v for k, v in CutMix().state_dict().items()
           if k not in ("inplace", "log_images_every", "input_key", "target_key")}
    with caplog.at_level(logging.WARNING, logger="cutmix_algo.algorithm"):
        CutMix(input_key=pair).load_state_dict(CutMix().state_dict())
        CutMix().load_state_dict(old)
    assert not [r for r in caplog.records if "checkpoint" in r.getMessage()]
    with caplog.at_level(logging.WARNING, logger="cutmix_algo.algorithm"):
        CutMix(target_key=2).load_state_dict(old)
    assert any("target_key 1 -> 2" in r.getMessage() for r in caplog.records)


def test_unchanged_settings_resume_quietly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    full = _fit_collated(CutMix(), tmp_path)
    with caplog.at_level(logging.WARNING, logger="cutmix_algo.algorithm"):
        resumed = _fit_collated(CutMix(), load_path=str(tmp_path / "ep0-ba3-rank0.pt"))
    assert resumed == full[3:]
    assert not [r for r in caplog.records if "checkpoint" in r.getMessage()]


# ----------------------------------------------------------------------------------------------
# 3. One target format for the whole run.


class _ShapeCheckingModel(ComposerModel):
    def __init__(self) -> None:
        super().__init__()
        self.num_classes = K
        self.fc = torch.nn.Linear(C * H * W, K)
        self.target_shapes: list[tuple[int, ...]] = []

    def forward(self, batch: Any) -> torch.Tensor:
        return self.fc(batch[0].flatten(1))

    def loss(self, outputs: torch.Tensor, batch: Any) -> torch.Tensor:
        target = batch[1]
        assert target.shape == (outputs.shape[0], K) and target.dtype == torch.float32, target.shape
        self.target_shapes.append(tuple(target.shape))
        return F.cross_entropy(outputs, target)


@pytest.mark.parametrize("kwargs", [{"stop_at": "2ba"}, {"p": 0.5}])
def test_the_loss_sees_dense_targets_on_both_sides_of_stop_at(kwargs: dict[str, Any]) -> None:
    model = _ShapeCheckingModel()
    x, y = _tensors(32, seed=6)
    Trainer(model=model, train_dataloader=DataLoader(TensorDataset(x, y), batch_size=8),
            max_duration="4ba", algorithms=[CutMix(**kwargs)],
            optimizers=torch.optim.SGD(model.parameters(), lr=0.01),
            device="cpu", progress_bar=False).fit()
    assert model.target_shapes == [(8, K)] * 4


# ----------------------------------------------------------------------------------------------
# 4. Composer's soft_cross_entropy stays quiet: targets sum to exactly N.


@settings(deadline=None, max_examples=200)
@given(
    height=st.integers(1, 300),
    width=st.integers(1, 300),
    n=st.integers(1, 4096),
    k=st.integers(1, 100),
    seed=st.integers(0, 2**32 - 1),
    alpha=st.sampled_from([0.2, 1.0, 3.0]),
)
def test_mixed_label_rows_sum_exactly_to_n(height, width, n, k, seed, alpha):
    g = derive_generator(seed)
    labels = torch.randint(0, k, (n,), generator=g)
    params = sample_params(n, height, width, alpha, g)
    lam = label_lam(params.lam, n)
    target = mix_targets(labels, lam, params.perm, k)
    assert target.dtype == torch.float32
    assert target.sum().item() == n  # what soft_cross_entropy checks, in float32
    assert torch.equal(target.sum(dim=1), torch.ones(n))
    assert abs(lam - params.lam) <= 2.0 ** -(label_grid_bits(n) + 1)
    # Any leading microbatch sums exactly too.
    assert target[: max(n // 3, 1)].sum().item() == max(n // 3, 1)


def test_exact_sums_hold_up_to_65536_rows() -> None:
    n = 65536
    g = derive_generator(11)
    labels = torch.randint(0, 10, (n,), generator=g)
    for lam in (0.1234567, 0.7777777, 1 / 3):
        target = mix_targets(labels, lam, torch.randperm(n, generator=g), 10)
        assert target.sum().item() == n
        assert torch.equal(target.sum(dim=1), torch.ones(n))


def test_the_writer_grid_keeps_any_training_batch_exact() -> None:
    # Pre-mixed rows come from many writer batches with different λ; any 65,536 of them still sum
    # exactly, because every λ is on the 65,536-row grid.
    from cutmix_algo.sampling import EXACT_SUM_ROWS

    g = derive_generator(12)
    rows = []
    for _ in range(64):
        lam = float(torch.rand((), generator=g))
        labels = torch.randint(0, 10, (1024,), generator=g)
        rows.append(mix_targets(labels, lam, torch.randperm(1024, generator=g), 10, exact_rows=EXACT_SUM_ROWS))
    assert torch.cat(rows).sum().item() == 64 * 1024


def test_a_trainer_fit_at_28x28_is_quiet_with_warnings_as_errors() -> None:
    x, y = _tensors(64 * 24, seed=7, height=28, width=28)
    net = _Net(28, 28)
    trainer = Trainer(
        model=ComposerClassifier(net, num_classes=K),  # soft_cross_entropy, Composer's default
        train_dataloader=DataLoader(TensorDataset(x, y), batch_size=64),
        max_duration="1ep", algorithms=[CutMix()],
        optimizers=torch.optim.SGD(net.parameters(), lr=0.01),
        device="cpu", progress_bar=False, seed=0,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Some targets have less than 1 total probability")
        trainer.fit()
    assert int(trainer.state.timestamp.batch) == 24


# ----------------------------------------------------------------------------------------------
# 5. Smaller defects.


@pytest.mark.parametrize("shape", [(4, 3, 0, 8), (4, 3, 8, 0)])
def test_empty_images_are_a_value_error_naming_the_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"H >= 1 and W >= 1.*" + str(shape).replace("(", r"\(").replace(")", r"\)")):
        cutmix_batch(torch.zeros(shape), alpha=1.0)


def test_numpy_integers_are_accepted_where_an_int_is_taken() -> None:
    algo = CutMix(num_classes=np.int64(10), seed=np.int32(4))
    assert algo.num_classes == 10 and type(algo.num_classes) is int and algo.seed == 4
    x, y = torch.rand(4, 3, 8, 8), torch.randint(0, 10, (4,))
    out = cutmix_batch(x, y, num_classes=np.int64(10), generator=derive_generator(np.uint64(3)))
    assert out.target.shape == (4, 10)


def test_bools_and_floats_are_still_refused_for_num_classes() -> None:
    for bad in (True, 10.0):
        with pytest.raises(ValueError, match="num_classes"):
            CutMix(num_classes=bad)


def test_a_dict_batch_with_default_keys_names_the_keys() -> None:
    class Dicts(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 8

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"image": torch.rand(C, H, W), "label": torch.tensor(i % K)}

    class Model(_ShapeCheckingModel):
        def forward(self, batch: Any) -> torch.Tensor:
            return self.fc(batch["image"].flatten(1))

    model = Model()
    trainer = Trainer(model=model, train_dataloader=DataLoader(Dicts(), batch_size=4), max_duration="1ba",
                      algorithms=[CutMix(num_classes=K)], device="cpu", progress_bar=False,
                      optimizers=torch.optim.SGD(model.parameters(), lr=0.01))
    with pytest.raises(ValueError, match=r"key 0 in a dict batch with keys \['image', 'label'\].*input_key"):
        trainer.fit()


def test_a_missing_index_names_the_batch_length() -> None:
    x, y = _tensors(16)
    trainer = _trainer(CutMix(target_key=5), DataLoader(TensorDataset(x, y), batch_size=8))
    with pytest.raises(ValueError, match=r"key 5 in a list batch of length 2"):
        trainer.fit()


def test_an_input_that_requires_grad_says_cutmix_mixes_in_place() -> None:
    x = torch.rand(4, 3, 8, 8, requires_grad=True)
    with pytest.raises(ValueError, match=r"in place.*detach"):
        cutmix_batch(x, alpha=1.0)
    with torch.no_grad():
        cutmix_batch(x, alpha=1.0)  # allowed where autograd is off


def test_dense_targets_holding_nan_are_refused_before_the_batch_is_mixed() -> None:
    """Checked on the host, before the move: a NaN row would turn every row it is mixed into NaN."""
    x, labels = _tensors(16)
    dense = F.one_hot(labels, K).float()
    dense[11, 2] = float("nan")
    trainer = _trainer(CutMix(), DataLoader(TensorDataset(x, dense), batch_size=8))
    with pytest.raises(ValueError, match="dense target holds NaN or infinite values"):
        trainer.fit()
    assert int(trainer.state.timestamp.batch) == 1  # the first batch trained; the second was refused


def test_n_by_1_int_labels_are_told_the_expected_shape() -> None:
    with pytest.raises(ValueError, match=r"shape \(N,\).*squeeze\(1\)"):
        cutmix_batch(torch.rand(4, 3, 8, 8), torch.zeros(4, 1, dtype=torch.long), num_classes=3)


def test_a_batch_of_one_reports_nothing_mixed() -> None:
    x, y = torch.rand(1, 3, 8, 8), torch.tensor([2])
    pristine = x.clone()
    out = cutmix_batch(x, y, num_classes=3, generator=derive_generator(0))
    assert out.lam == 1.0 and torch.equal(x, pristine)
    assert torch.equal(out.target, F.one_hot(y, 3).float())


class _ShapeSpy(CutMix):
    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def apply(self, event: Event, state: State, logger: Logger) -> None:
        if event == Event.AFTER_DATALOADER:
            self.shapes.append(tuple(state.batch_get_item(0).shape))
        super().apply(event, state, logger)


@pytest.mark.parametrize("cutmix_first", [True, False])
def test_order_with_progressive_resizing(cutmix_first: bool) -> None:
    """Composer runs AFTER_* events in reverse list order: [CutMix, ProgressiveResizing] resizes first."""
    x, y = _tensors(32, seed=8, height=16, width=16)
    spy = _ShapeSpy()
    resize = ProgressiveResizing(initial_scale=0.5, delay_fraction=0.0, finetune_fraction=0.0, size_increment=4)
    algorithms = [spy, resize] if cutmix_first else [resize, spy]
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(C * 16, K))
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    Trainer(model=ComposerClassifier(net, num_classes=K), train_dataloader=loader, max_duration="1ba",
            algorithms=algorithms, device="cpu", progress_bar=False,
            optimizers=torch.optim.SGD(net.parameters(), lr=0.01)).fit()
    # Listed first, CutMix runs last and mixes the resized batch (8 x 8), so λ is the kept fraction
    # of the image the model sees; listed after ProgressiveResizing it mixes the full-size batch,
    # whose box is then interpolated.
    assert spy.shapes == ([(8, C, 8, 8)] if cutmix_first else [(8, C, 16, 16)])



def test_a_target_that_is_not_a_tensor_is_a_value_error_naming_it() -> None:
    """A loader that is not a DataLoader (which would convert it) yields numpy targets."""
    x, _ = _tensors(8, seed=6)
    batches = [(x, np.full((8, K), 1.0 / K, dtype=np.float32))]
    trainer = _trainer(CutMix(), batches, max_duration="1ba", device_train_microbatch_size=8)
    trainer.state.model.num_classes = None  # type: ignore[union-attr]  # as a model without one
    with pytest.raises(ValueError, match="target must be a torch.Tensor, got ndarray"):
        trainer.fit()
