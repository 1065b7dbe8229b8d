"""Recipes expose every CutMix option (mode, loss interpolation, MixUp switching, box bounds,
image logging), validated at load time like the rest, and a recipe trains with them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cutmix_algo import CutMix
from cutmix_train.builder import build_trainer
from cutmix_train.cli import main
from cutmix_train.config import RecipeError, load_recipe

DEMO = Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml"
QUICK = ["train.max_duration=2ba", "train.batch_size=8", "eval.batch_size=40", "eval.subset_num_batches=1",
         "checkpoint.save_folder=null", "logging.file=null", "logging.progress_bar=false"]
OPTIONS = [
    "algorithms.cutmix.mode=sample",
    "algorithms.cutmix.mixup_alpha=0.8",
    "algorithms.cutmix.switch_prob=0.25",
    "algorithms.cutmix.minmax=[0.2,0.6]",
    "algorithms.cutmix.log_images_every=100ba",
]


def test_every_option_reaches_the_algorithm() -> None:
    trainer = build_trainer(load_recipe(DEMO, [*QUICK, *OPTIONS]))
    try:
        (algo,) = [a for a in trainer.state.algorithms if isinstance(a, CutMix)]
        assert (algo.mode, algo.mixup_alpha, algo.switch_prob) == ("sample", 0.8, 0.25)
        assert algo.minmax == (0.2, 0.6) and str(algo.log_images_every) == "100ba"
        assert algo.interpolate_loss is False
    finally:
        trainer.close()
    trainer = build_trainer(load_recipe(DEMO, [*QUICK, "algorithms.cutmix.interpolate_loss=true"]))
    try:
        (algo,) = [a for a in trainer.state.algorithms if isinstance(a, CutMix)]
        assert algo.interpolate_loss is True
    finally:
        trainer.close()


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("algorithms.cutmix.mode=pair", "algorithms.cutmix.mode"),
        ("algorithms.cutmix.mixup_alpha=-1", "algorithms.cutmix.mixup_alpha"),
        ("algorithms.cutmix.mixup_alpha=nan", "algorithms.cutmix.mixup_alpha"),
        ("algorithms.cutmix.switch_prob=1.5", "algorithms.cutmix.switch_prob"),
        ("algorithms.cutmix.minmax=[0.8,0.2]", "algorithms.cutmix.minmax"),
        ("algorithms.cutmix.minmax=[0.2]", "algorithms.cutmix.minmax"),
        ("algorithms.cutmix.log_images_every=2ep", "algorithms.cutmix.log_images_every"),
        ("algorithms.cutmix.log_images_every=0ba", "algorithms.cutmix.log_images_every"),
    ],
)
def test_bad_options_are_recipe_errors_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(RecipeError, match=key.replace(".", r"\.")):
        load_recipe(DEMO, [override])


def test_interpolate_loss_with_sample_mode_is_refused() -> None:
    with pytest.raises(RecipeError, match="interpolate_loss"):
        load_recipe(DEMO, ["algorithms.cutmix.interpolate_loss=true", "algorithms.cutmix.mode=sample"])


@pytest.mark.parametrize("extra", [OPTIONS, ["algorithms.cutmix.interpolate_loss=true"]])
def test_a_recipe_trains_with_the_options(extra: list[str], tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    result = CliRunner().invoke(main, [str(DEMO), *QUICK, *extra, "--summary", str(summary)])
    assert result.exit_code == 0, result.output
    assert json.loads(summary.read_text())["batches"] == 2
