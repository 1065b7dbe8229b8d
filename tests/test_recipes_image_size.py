"""``data.image_size`` (digits at 8, 16 or 32 pixels) and ``model.name: resnet8``: checked, loaded, trained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cutmix_train.config import RecipeError, load_recipe
from cutmix_train.data import DIGITS_STATS, STATS, build_data
from writer import load_digits

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
DEMO = RECIPES / "digits_demo.yaml"
PREMIXED_CIFAR = ["data.dataset=premixed", "data.local=x", "data.train_per_class=null", "data.eval_dataset=cifar10"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.image_size=12"], "data.image_size: must be one of 8, 16, 32, got 12"),
        (["data.image_size=0"], "data.image_size: must be one of 8, 16, 32, got 0"),
        (["data.dataset=cifar10", "data.image_size=16"], "data.image_size: cifar10 images are 32x32, got 16"),
        (PREMIXED_CIFAR + ["data.image_size=8"], "data.image_size: cifar10 images are 32x32, got 8"),
        (["data.image_size=big"], "data.image_size"),
        (["model.name=resnet9"], "model.name: unknown value 'resnet9'"),
    ],
)
def test_bad_sizes_and_models_are_refused_by_key(overrides: list[str], message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        load_recipe(DEMO, overrides)


def test_digits_at_every_size_share_the_writers_split_and_8_is_the_native_grid() -> None:
    assert np.array_equal(load_digits("train", 32).images, load_digits("train").images)
    for split in ("train", "test"):
        full = load_digits(split)
        for size in (8, 16):
            small = load_digits(split, size)
            assert small.images.shape == (len(full), size, size, 3)
            assert np.array_equal(small.labels, full.labels)
    native = load_digits("train", 8).images
    assert native.max() == 255 and np.array_equal(native[..., 0], native[..., 2])
    with pytest.raises(ValueError, match="8, 16 or 32"):
        load_digits("train", 64)


@pytest.mark.parametrize("size", [8, 16])
def test_stats_are_the_train_splits_at_each_size(size: int) -> None:
    images = load_digits("train", size).images / 255.0
    mean, std = DIGITS_STATS[size]
    assert mean[0] == pytest.approx(images.mean(), abs=1e-3)
    assert std[0] == pytest.approx(images.std(), abs=1e-3)
    assert STATS["digits"][1][0] != std[0]


def test_build_data_serves_the_recipes_size() -> None:
    recipe = load_recipe(DEMO, ["data.image_size=8"])
    bundle = build_data(recipe.data, 10, 360, seed=0)
    images, _ = next(iter(bundle.train))
    assert tuple(images.shape[1:]) == (3, 8, 8)
    assert tuple(next(iter(bundle.eval))[0].shape[1:]) == (3, 8, 8)
    assert bundle.std == DIGITS_STATS[8][1]


def test_premixed_shards_and_the_eval_split_must_share_a_size(tmp_path: Path) -> None:
    from writer.cli import main as writer_main

    shards = tmp_path / "shards"
    writer_main.main(["write", "--source", "digits", "--split", "test", "--out", str(shards), "--batch-size", "120",
                      "--workers", "1", "--no-progress"], standalone_mode=False)  # fmt: skip
    premixed = [f"data.local={shards}", "data.eval_dataset=digits", "algorithms.cutmix.enabled=false"]
    premixed += ["data.dataset=premixed", "data.train_per_class=null"]
    recipe = load_recipe(DEMO, [*premixed, "data.image_size=16"])
    with pytest.raises(RecipeError, match="data.image_size: the shards hold 32x32 images but the digits test split"):
        build_data(recipe.data, 120, 360, seed=0)
    recipe = load_recipe(DEMO, [*premixed, "data.image_size=32"])
    assert build_data(recipe.data, 120, 360, seed=0).premixed
