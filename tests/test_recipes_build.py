"""Every recipe builds a Trainer with what it asks for; CIFAR ones against a tiny CIFAR-10."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from cutmix_algo import CutMix
from cutmix_train.augment import DeviceAugment
from cutmix_train.builder import build_trainer, warmup_time
from cutmix_train.config import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# Small and fast, nothing written outside tmp_path.
QUICK = [
    "train.max_duration=2ba",
    "train.batch_size=16",
    "eval.batch_size=20",
    "checkpoint.save_folder=null",
    "checkpoint.autoresume=false",
    "logging.file=null",
    "logging.progress_bar=false",
]


@pytest.mark.parametrize("name", ["cifar10_resnet20_cutmix", "cifar10_resnet20_baseline"])
def test_cifar_recipe_builds_against_cifar_root(name: str, cifar_root: Path) -> None:
    recipe = load_recipe(RECIPES / f"{name}.yaml", [f"data.root={cifar_root}", *QUICK])
    trainer = build_trainer(recipe)
    try:
        state = trainer.state
        assert str(state.max_duration) == "2ba"
        assert state.train_dataloader.batch_size == 16
        assert len(state.train_dataloader.dataset) == 100
        assert state.model.num_classes == 10
        kinds = [type(a) for a in state.algorithms]
        assert DeviceAugment in kinds
        assert (CutMix in kinds) == (name == "cifar10_resnet20_cutmix")
        assert state.precision.value == ("amp_bf16" if torch.cuda.is_available() else "fp32")
        assert isinstance(state.optimizers[0], torch.optim.SGD)
        assert state.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1)
    finally:
        trainer.close()


def test_cifar_cutmix_recipe_trains_two_batches(cifar_root: Path) -> None:
    recipe = load_recipe(
        RECIPES / "cifar10_resnet20_cutmix.yaml",
        [f"data.root={cifar_root}", *QUICK, "train.microbatch_size=8"],
    )
    trainer = build_trainer(recipe)
    try:
        assert trainer.state.device_train_microbatch_size == 8
        trainer.fit()
        assert int(trainer.state.timestamp.batch) == 2
        cutmix = next(a for a in trainer.state.algorithms if isinstance(a, CutMix))
        assert cutmix.last_lam is not None  # it mixed
        assert "MulticlassAccuracy" in trainer.state.eval_metrics["eval"]
    finally:
        trainer.close()


def test_demo_recipe_builds_with_an_override() -> None:
    recipe = load_recipe(RECIPES / "demo.yaml", ["train.batch_size=16", "logging.progress_bar=false"])
    trainer = build_trainer(recipe)
    try:
        assert trainer.state.train_dataloader.batch_size == 16
        assert len(trainer.state.train_dataloader.dataset) == 1437  # digits' fixed train split
        assert len(trainer.state.evaluators[0].dataloader.dataloader.dataset) == 360
        assert any(isinstance(a, CutMix) for a in trainer.state.algorithms)
    finally:
        trainer.close()


@pytest.mark.parametrize(
    ("warmup", "max_duration", "batches_per_epoch", "expected"),
    [
        ("0.1dur", "4ep", 44, "17ba"),  # Composer's own int(0.1 * 44 * 4): unchanged where it was not 0
        ("0.1dur", "4ep", 2, "1ba"),  # int(0.8) was 0: no warmup at all
        ("0.1dur", "3ba", None, "1ba"),
        ("0.25dur", "1000sp", None, "250sp"),
        ("0.1dur", "4ep", None, "0.1dur"),  # epoch length unknown: Composer's conversion
        ("0dur", "4ep", 44, "0dur"),
        ("5ba", "4ep", 44, "5ba"),
        ("1ep", "4ep", 44, "1ep"),
    ],
)
def test_a_fractional_warmup_is_counted_in_batches_and_never_rounds_to_zero(
    warmup: str, max_duration: str, batches_per_epoch: int | None, expected: str
) -> None:
    assert warmup_time(warmup, max_duration, batches_per_epoch) == expected


@pytest.mark.parametrize(
    "overrides", [["train.max_duration=3ba"], ["train.max_duration=4ep", "train.subset_num_batches=2"]]
)
def test_a_short_run_keeps_its_fractional_warmup(overrides: list[str]) -> None:
    """demo.yaml's warmup of 0.1dur truncated to 0 on short runs: Composer warned on every step
    that the warmup duration is 0 and the learning rate started at full size."""
    recipe = load_recipe(RECIPES / "demo.yaml", [*overrides, "logging.progress_bar=false"])
    assert recipe.scheduler.warmup == "0.1dur"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = build_trainer(recipe)  # the scheduler is first evaluated here
    try:
        assert not [w for w in caught if "warmup duration is 0" in str(w.message)]
        # Batch 0 of a one-batch linear warmup trains at lr 0 (at full lr, 0.05, without warmup).
        assert trainer.state.optimizers[0].param_groups[0]["lr"] == 0.0
    finally:
        trainer.close()
