"""``make demo``'s pieces: the per-seed subset source the writer mixes, the verdicts, the demo end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner
from omegaconf import OmegaConf

from cutmix_train.data import train_subset
from cutmix_train.demo import RECIPE, main, verdict, write_subset_source
from writer import load_digits, open_source


def test_subset_source_holds_exactly_the_online_runs_images(tmp_path: Path) -> None:
    assert write_subset_source(tmp_path / "src", per_class=3, seed=7) == 30
    stored = open_source(f"mds:{tmp_path / 'src'}", "train")
    expected = train_subset(load_digits("train", 32), 3, seed=7)
    assert np.array_equal(stored.images, expected.images)
    assert np.array_equal(stored.labels, expected.labels)
    assert stored.fingerprint() == expected.fingerprint()


def test_augmented_source_is_one_fresh_crop_of_the_subset_per_epoch(tmp_path: Path) -> None:
    assert write_subset_source(tmp_path / "src", per_class=2, seed=3, image_size=16, epochs=3, pad=1) == 60
    stored = open_source(f"mds:{tmp_path / 'src'}", "train")
    subset = train_subset(load_digits("train", 16), 2, seed=3)
    assert stored.images.shape == (60, 16, 16, 3)
    assert np.array_equal(stored.labels, np.tile(subset.labels, 3))
    epochs = stored.images.reshape(3, 20, 16, 16, 3)
    assert not np.array_equal(epochs[0], epochs[1])  # each epoch cropped afresh
    for epoch in epochs:
        # every stored image is one of the pad-1 crops of its source image (no flips: hflip off)
        source = torch.from_numpy(subset.images).permute(0, 3, 1, 2)
        padded = torch.nn.functional.pad(source, (1, 1, 1, 1))
        for i, image in enumerate(torch.from_numpy(epoch).permute(0, 3, 1, 2)):
            crops = [padded[i, :, dy : dy + 16, dx : dx + 16] for dy in range(3) for dx in range(3)]
            assert any(torch.equal(image, crop) for crop in crops)


def test_verdict_is_written_from_the_interval() -> None:
    resolved = verdict("online", {"mean": 0.05, "ci95": [0.01, 0.09], "n": 3}, [0.04, 0.06, -0.01], "baseline")
    assert "resolved, better (2 of 3 seeds higher, 1 lower)" in resolved
    worse = verdict("x", {"mean": -0.05, "ci95": [-0.09, -0.01], "n": 2}, [-0.04, -0.06], "baseline")
    assert "resolved, worse" in worse
    open_ = verdict("x", {"mean": 0.01, "ci95": [-0.02, 0.04], "n": 2}, [0.03, -0.01], "baseline")
    assert "not resolved (the interval includes zero)" in open_


def test_demo_end_to_end_on_a_tiny_recipe(tmp_path: Path) -> None:
    recipe = OmegaConf.load(RECIPE)
    recipe.data.train_per_class = 1  # 10 images: one batch of 10 per epoch
    recipe.data.image_size = 8
    recipe.train.batch_size = 10
    recipe.train.max_duration = "2ep"
    recipe.scheduler.warmup = "0ba"
    recipe.eval.batch_size = 120
    recipe.eval.subset_num_batches = 1
    path = tmp_path / "tiny.yaml"
    OmegaConf.save(recipe, path)
    out = tmp_path / "demo"
    png = tmp_path / "docs" / "copy.png"
    args = ["--out", str(out), "--recipe", str(path), "--seeds", "2", "--jobs", "1", "--png", str(png)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.count("OK: 1 shards match their hashes; 4 of 20 samples recomputed") == 2
    lines = result.stdout.strip().splitlines()
    for arm in ("baseline", "baseline-wd", "online", "premixed"):
        assert any(line.startswith(f"| {arm} | 2 |") for line in lines), arm
    assert any(line.startswith("premixed - online: ") for line in lines)
    assert any(line.startswith("online - baseline-wd: ") for line in lines)
    headline = json.loads(lines[-1])
    assert set(headline["variants"]) == {"baseline", "baseline-wd", "online", "premixed"}
    assert all({"mean", "ci95", "n"} <= set(v) for v in headline["variants"].values())
    assert set(headline["paired_gain"]) == {"baseline-wd", "online", "premixed"}
    assert headline["png"] == str(out / "demo.png") and png.stat().st_size > 5000
    runs = out / "compare" / "runs"
    premixed = json.loads((runs / "premixed-seed1.json").read_text())
    online = json.loads((runs / "online-seed1.json").read_text())
    # The same number of samples and batches through the other pipeline; the source holds both
    # epochs' crops, so one pass over it is the online run's two epochs.
    assert premixed["dataset"] == "premixed" and online["cutmix"] is True
    assert premixed["samples"] == online["samples"] == 20 and premixed["batches"] == online["batches"] == 2
    assert premixed["train_images"] == 20 and online["train_images"] == 10
