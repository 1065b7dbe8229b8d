"""``make demo``'s pieces: the per-seed subset source the writer mixes, and the demo end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from omegaconf import OmegaConf

from cutmix_train.data import train_subset
from cutmix_train.demo import main, write_subset_source
from writer.pipeline.sources import load_digits, open_source

LOWDATA = Path(__file__).resolve().parents[1] / "recipes" / "digits_lowdata.yaml"


def test_subset_source_holds_exactly_the_online_runs_images(tmp_path: Path) -> None:
    assert write_subset_source(tmp_path / "src", per_class=3, seed=7) == 30
    stored = open_source(f"mds:{tmp_path / 'src'}", "train")
    expected = train_subset(load_digits("train"), 3, seed=7)
    assert np.array_equal(stored.images, expected.images)
    assert np.array_equal(stored.labels, expected.labels)
    assert stored.fingerprint() == expected.fingerprint()


def test_demo_end_to_end_on_a_tiny_recipe(tmp_path: Path) -> None:
    recipe = OmegaConf.load(LOWDATA)
    recipe.data.train_per_class = 1  # 10 images: one batch of 10 per epoch
    recipe.train.batch_size = 10
    recipe.train.max_duration = "2ep"
    recipe.scheduler.warmup = "0ba"
    recipe.eval.batch_size = 120
    recipe.eval.subset_num_batches = 1
    path = tmp_path / "tiny.yaml"
    OmegaConf.save(recipe, path)
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["--out", str(out), "--recipe", str(path), "--seeds", "2", "--jobs", "2"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("OK: 1 shards match their hashes; 20 of 20 samples recomputed") == 2
    lines = result.stdout.strip().splitlines()
    assert any(line.startswith("| baseline | 2 |") for line in lines)
    assert any(line.startswith("| online | 2 |") for line in lines)
    assert any(line.startswith("| premixed | 2 |") for line in lines)
    assert any(line.startswith("premixed - online (paired): ") for line in lines)
    assert lines[-2] == f"plot: {out / 'compare' / 'compare.png'}"
    assert lines[-1].startswith("demo wall time ")
    assert (out / "compare" / "compare.png").stat().st_size > 5000
    runs = out / "compare" / "runs"
    premixed = json.loads((runs / "premixed-seed1.json").read_text())
    online = json.loads((runs / "online-seed1.json").read_text())
    # The same samples, batches and images through the other pipeline.
    assert premixed["dataset"] == "premixed" and online["cutmix"] is True
    assert premixed["samples"] == online["samples"] == 20 and premixed["batches"] == online["batches"] == 2
    assert premixed["train_images"] == online["train_images"] == 10
