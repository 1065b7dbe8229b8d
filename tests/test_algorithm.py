"""CutMix as a Composer Algorithm, exercised through real Trainer fits on the CPU."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from composer import Trainer
from composer.core import Callback, State
from composer.loggers import InMemoryLogger, Logger
from composer.models import ComposerClassifier, ComposerModel
from torch.utils.data import DataLoader, Dataset, TensorDataset

from cutmix_algo import CutMix, DenseTargetMetric, derive_generator, paste_box_, sample_params
from cutmix_algo.sampling import label_lam

N, C, H, W, K = 32, 3, 12, 10, 5


def _data(n: int = N, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, C, H, W, generator=g), torch.randint(0, K, (n,), generator=g))


class Recorder(torch.nn.Module):
    """A linear classifier that records every input it sees, split by train/eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(C * H * W, K)
        self.train_inputs: list[torch.Tensor] = []
        self.eval_inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (self.train_inputs if self.training else self.eval_inputs).append(x.detach().clone())
        return self.fc(x.flatten(1))


class Draws(Callback):
    """Records (λ, box, perm) after CutMix ran on each batch (callbacks run after algorithms)."""

    def __init__(self, algo: CutMix) -> None:
        self.algo = algo
        self.draws: list[tuple[float, tuple[int, ...], list[int]]] = []
        self.targets: list[torch.Tensor] = []

    def after_dataloader(self, state: State, logger: Logger) -> None:
        assert self.algo.last_perm is not None
        self.draws.append((self.algo.last_lam, self.algo.last_box, self.algo.last_perm.tolist()))
        self.targets.append(state.batch_get_item(1).clone())


def _fit(
    algo: CutMix,
    *,
    seed: int = 1,
    batch_size: int = 8,
    microbatch: int | None = None,
    max_duration: str = "4ba",
    data: TensorDataset | None = None,
    eval_data: TensorDataset | None = None,
    **trainer_kwargs: Any,
) -> tuple[Trainer, Recorder, Draws]:
    net = Recorder()
    draws = Draws(algo)
    trainer = Trainer(
        model=ComposerClassifier(net, num_classes=K),
        train_dataloader=DataLoader(data or _data(), batch_size=batch_size),
        eval_dataloader=DataLoader(eval_data, batch_size=batch_size) if eval_data else None,
        max_duration=max_duration,
        algorithms=[algo],
        callbacks=[draws],
        optimizers=torch.optim.SGD(net.parameters(), lr=0.01),
        device_train_microbatch_size=microbatch,
        device="cpu",
        seed=seed,
        progress_bar=False,
        **trainer_kwargs,
    )
    trainer.fit()
    return trainer, net, draws


def test_one_box_per_batch_shared_by_every_microbatch() -> None:
    data = _data()
    algo = CutMix(alpha=1.0)
    _, net, draws = _fit(algo, batch_size=8, microbatch=2, data=data)
    assert len(draws.draws) == 4
    assert len(net.train_inputs) == 4 * 4  # four microbatches of 2 per batch of 8
    for b, (lam, box, perm) in enumerate(draws.draws):
        expected = data.tensors[0][b * 8 : (b + 1) * 8].clone()
        paste_box_(expected, box, torch.tensor(perm))
        seen = torch.cat(net.train_inputs[4 * b : 4 * b + 4])
        assert torch.equal(seen, expected)
        top, left, bottom, right = box
        assert lam == pytest.approx(1 - (bottom - top) * (right - left) / (H * W))
        y = data.tensors[1][b * 8 : (b + 1) * 8]
        want = lam * F.one_hot(y, K) + (1 - lam) * F.one_hot(y[perm], K)
        assert torch.allclose(draws.targets[b], want.float())


def test_draws_follow_seed_rank_and_batch_index(monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, first = _fit(CutMix(), seed=7)
    _, _, again = _fit(CutMix(), seed=7)
    _, _, other = _fit(CutMix(), seed=8)
    assert first.draws == again.draws
    assert first.draws != other.draws
    # The same draws as the sampler on the derived per-batch generator: (seed, rank, batch index).
    for b, (lam, box, perm) in enumerate(first.draws):
        params = sample_params(8, H, W, 1.0, derive_generator(7, 0, b))
        assert (lam, box, perm) == (label_lam(params.lam, 8), tuple(params.box), params.perm.tolist())
    # Another rank draws another sequence from the same seed.
    monkeypatch.setattr("cutmix_algo.algorithm.dist.get_global_rank", lambda: 1)
    _, _, rank1 = _fit(CutMix(), seed=7)
    assert rank1.draws != first.draws


def test_explicit_seed_overrides_trainer_seed() -> None:
    _, _, a = _fit(CutMix(seed=123), seed=1)
    _, _, b = _fit(CutMix(seed=123), seed=2)
    assert a.draws == b.draws


def test_resume_from_checkpoint_continues_the_sequence(tmp_path: Path) -> None:
    _, _, full = _fit(CutMix(), max_duration="6ba", save_folder=str(tmp_path), save_interval="3ba")
    checkpoint = tmp_path / "ep0-ba3-rank0.pt"
    assert checkpoint.exists(), sorted(p.name for p in tmp_path.iterdir())
    resumed_algo = CutMix()
    _, _, resumed = _fit(resumed_algo, max_duration="6ba", load_path=str(checkpoint))
    assert resumed.draws == full.draws[3:]
    assert resumed_algo.state_dict()["seed"] == 1


def test_p_zero_leaves_inputs_and_gives_dense_targets() -> None:
    data = _data()
    _, net, draws = _fit(CutMix(p=0.0), data=data, max_duration="2ba")
    assert torch.equal(torch.cat(net.train_inputs), data.tensors[0][:16])
    for b, target in enumerate(draws.targets):
        assert torch.equal(target, F.one_hot(data.tensors[1][b * 8 : (b + 1) * 8], K).float())
    assert all(lam == 1.0 for lam, _, _ in draws.draws)


def test_p_mixes_about_that_fraction_of_batches() -> None:
    algo = CutMix(p=0.5)
    _, _, draws = _fit(algo, batch_size=2, max_duration="16ba")
    mixed = sum(lam < 1.0 or box != (0, 0, 0, 0) for lam, box, _ in draws.draws)
    assert 2 <= mixed <= 14


def test_eval_batches_are_never_mixed() -> None:
    eval_data = _data(16, seed=3)
    _, net, _ = _fit(CutMix(), eval_data=eval_data, max_duration="2ba", eval_interval="1ba")
    assert net.eval_inputs, "the evaluator never ran"
    # Train-metric passes also run in eval mode; pick the evaluator's batches by their contents.
    evals = [x for x in net.eval_inputs if any(torch.equal(x, e) for e in eval_data.tensors[0].split(8))]
    assert len(evals) == 2 * 2


def test_training_metrics_work_with_dense_targets() -> None:
    trainer, _, _ = _fit(CutMix(), max_duration="2ba")
    metric = trainer.state.train_metrics["MulticlassAccuracy"]
    assert isinstance(metric, DenseTargetMetric)
    value = float(metric.compute())
    assert 0.0 <= value <= 1.0


def test_logs_lambda_each_batch() -> None:
    logger = InMemoryLogger()
    algo = CutMix()
    _, _, draws = _fit(algo, loggers=[logger], max_duration="3ba")
    logged = [value for _, value in logger.data["cutmix/lambda"]]
    assert logged == [lam for lam, _, _ in draws.draws]


def test_stop_at_turns_cutmix_off() -> None:
    data = _data()
    _, net, draws = _fit(CutMix(stop_at="2ba"), data=data, max_duration="4ba")
    assert len(draws.draws) == 4
    # Batches 0 and 1 mixed (or at least drawn); batches 2 and 3 reach the model untouched.
    assert torch.equal(torch.cat(net.train_inputs[2:]), data.tensors[0][16:32])


def test_stop_at_as_fraction_of_duration() -> None:
    data = _data()
    _, net, _ = _fit(CutMix(stop_at="0.5dur"), data=data, max_duration="4ba")
    assert torch.equal(torch.cat(net.train_inputs[2:]), data.tensors[0][16:32])
    assert not torch.equal(torch.cat(net.train_inputs[:2]), data.tensors[0][:16])


def test_state_dict_round_trip() -> None:
    algo = CutMix(alpha=0.4, p=0.7, num_classes=9, uniform_sampling=True, seed=5, stop_at="3ep")
    clone = CutMix(alpha=0.4, p=0.7, num_classes=9, uniform_sampling=True, seed=5, stop_at="3ep")
    clone.load_state_dict(algo.state_dict())
    assert clone.state_dict() == algo.state_dict()
    # State (the seed and classes a run resolved) is restored where the constructor gave none.
    fresh = CutMix(alpha=0.4, p=0.7, uniform_sampling=True, stop_at="3ep")
    fresh.load_state_dict(algo.state_dict())
    assert fresh.state_dict() == algo.state_dict()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"alpha": -0.1}, "alpha"),
        ({"alpha": math.nan}, "alpha"),
        ({"p": 1.5}, "p must"),
        ({"p": -0.01}, "p must"),
        ({"num_classes": 0}, "num_classes"),
        ({"stop_at": "soon"}, "stop_at"),
        ({"seed": -1}, "seed"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        CutMix(**kwargs)


class _NoClasses(ComposerModel):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(C * H * W, K)

    def forward(self, batch: Any) -> torch.Tensor:
        return self.fc(batch[0].flatten(1))

    def loss(self, outputs: torch.Tensor, batch: Any) -> torch.Tensor:
        return F.cross_entropy(outputs, batch[1])


def _fit_plain(model: ComposerModel, data: Dataset, algo: CutMix) -> Trainer:
    """Two batches of 8 with only ``algo``: for models and batches other than ``_fit``'s."""
    trainer = Trainer(
        model=model,
        train_dataloader=DataLoader(data, batch_size=8),
        max_duration="2ba",
        algorithms=[algo],
        optimizers=torch.optim.SGD(model.parameters(), lr=0.01),
        device="cpu",
        progress_bar=False,
    )
    trainer.fit()
    return trainer


def test_missing_num_classes_fails_at_fit_start() -> None:
    trainer = Trainer(
        model=_NoClasses(),
        train_dataloader=DataLoader(_data(), batch_size=8),
        max_duration="2ba",
        algorithms=[CutMix()],
        device="cpu",
        progress_bar=False,
    )
    with pytest.raises(ValueError, match="num_classes"):
        trainer.fit()
    assert int(trainer.state.timestamp.batch) == 0


def test_num_classes_from_dense_targets() -> None:
    g = torch.Generator().manual_seed(0)
    dense = torch.softmax(torch.rand(16, K, generator=g), dim=1)
    data = TensorDataset(torch.rand(16, C, H, W, generator=g), dense)
    algo = CutMix()
    trainer = _fit_plain(_NoClasses(), data, algo)
    lam, perm = algo.last_lam, algo.last_perm
    assert lam is not None and perm is not None
    want = lam * dense[8:] + (1 - lam) * dense[8:][perm]
    assert torch.allclose(trainer.state.batch_get_item(1), want)


class _DictData(Dataset):
    def __init__(self) -> None:
        self.base = _data(16)

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x, y = self.base[i]
        return {"image": x, "label": y}


class _DictModel(_NoClasses):
    num_classes = K

    def forward(self, batch: Any) -> torch.Tensor:
        return self.fc(batch["image"].flatten(1))

    def loss(self, outputs: torch.Tensor, batch: Any) -> torch.Tensor:
        return F.cross_entropy(outputs, batch["label"])


def test_dict_batches_with_keys() -> None:
    data = _DictData()
    algo = CutMix(input_key="image", target_key="label")
    trainer = _fit_plain(_DictModel(), data, algo)
    batch = trainer.state.batch
    expected = data.base.tensors[0][8:16].clone()
    assert algo.last_perm is not None
    paste_box_(expected, algo.last_box, algo.last_perm)
    assert torch.equal(batch["image"], expected)
    assert batch["label"].shape == (8, K)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_apply_makes_no_host_device_sync() -> None:
    algo = CutMix()

    class SyncGuard(Callback):
        def before_dataloader(self, state: State, logger: Logger) -> None:
            torch.cuda.set_sync_debug_mode("error")

        def after_dataloader(self, state: State, logger: Logger) -> None:
            torch.cuda.set_sync_debug_mode("default")
            assert state.batch_get_item(0).is_cuda

    net = Recorder()
    try:
        Trainer(
            model=ComposerClassifier(net, num_classes=K),
            train_dataloader=DataLoader(_data(), batch_size=8),
            max_duration="2ba",
            algorithms=[algo],
            callbacks=[SyncGuard()],
            device="gpu",
            progress_bar=False,
        ).fit()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert algo.last_perm is not None
