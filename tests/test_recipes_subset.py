"""``data.train_per_class``: a seeded, stratified training subset, as a recipe override."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cutmix_train.config import RecipeError, load_recipe
from cutmix_train.data import build_data, stratified_subset, train_subset
from writer.pipeline.sources import load_digits

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_stratified_subset_takes_exactly_k_of_every_class_reproducibly() -> None:
    labels = np.repeat(np.arange(4), [5, 7, 9, 11])
    index = stratified_subset(labels, 3, seed=1)
    assert np.bincount(labels[index]).tolist() == [3, 3, 3, 3]
    assert index.tolist() == sorted(index.tolist()) and len(set(index.tolist())) == 12
    assert stratified_subset(labels, 3, seed=1).tolist() == index.tolist()
    assert stratified_subset(labels, 3, seed=2).tolist() != index.tolist()
    # A larger subset of the same seed keeps the smaller one's images.
    assert set(index.tolist()) <= set(stratified_subset(labels, 5, seed=1).tolist())


def test_stratified_subset_refuses_a_class_too_small() -> None:
    with pytest.raises(ValueError, match="class 0 has 5 samples, fewer than 6"):
        stratified_subset(np.repeat(np.arange(2), [5, 9]), 6, seed=0)
    with pytest.raises(ValueError, match="per_class must be > 0"):
        stratified_subset(np.zeros(3, dtype=np.int64), 0, seed=0)


def test_train_subset_keeps_pixels_labels_and_names() -> None:
    digits = load_digits("train")
    subset = train_subset(digits, 2, seed=5)
    index = stratified_subset(digits.labels, 2, seed=5)
    assert len(subset) == 20 and subset.class_names == digits.class_names
    assert np.array_equal(subset.images, digits.images[index])
    assert np.array_equal(subset.labels, digits.labels[index])
    with pytest.raises(RecipeError, match=r"data.train_per_class: class \d has \d+ samples, fewer than 500"):
        train_subset(digits, 500, seed=0)


def _train_set(overrides: list[str]) -> tuple[np.ndarray, np.ndarray]:
    recipe = load_recipe(RECIPES / "demo.yaml", overrides)
    bundle = build_data(recipe.data, recipe.train.batch_size, recipe.eval.batch_size, recipe.seed)
    dataset = bundle.train.dataset
    return dataset.images.numpy(), dataset.labels.numpy()


def test_recipe_override_trains_on_the_subset_drawn_from_the_run_seed() -> None:
    images, labels = _train_set(["data.train_per_class=4", "seed=3"])
    assert np.bincount(labels).tolist() == [4] * 10
    expected = train_subset(load_digits("train"), 4, seed=3)
    assert np.array_equal(images, expected.images.transpose(0, 3, 1, 2))
    # data.subset_seed pins the subset whatever the run's seed.
    pinned_a, _ = _train_set(["data.train_per_class=4", "data.subset_seed=3", "seed=0"])
    assert np.array_equal(pinned_a, images)
    other, _ = _train_set(["data.train_per_class=4", "seed=4"])
    assert not np.array_equal(other, images)
    full, _ = _train_set([])
    assert len(full) == 1437  # unset: the whole split


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.train_per_class=0"], "data.train_per_class: must be > 0"),
        (["data.train_per_class=5", "data.dataset=premixed", "data.local=x", "algorithms.cutmix.enabled=false"],
         "data.train_per_class: premixed shards hold what was written"),
        (["data.train_per_class=ten"], "data.train_per_class"),
    ],
)  # fmt: skip
def test_bad_train_per_class_is_a_recipe_error(overrides: list[str], message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        load_recipe(RECIPES / "demo.yaml", overrides)
