"""Short real training runs: the demo recipe end to end, and pre-mixed shards from an S3 bucket."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cutmix_train.cli import main

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
SUMMARY_KEYS = {"name", "eval_accuracy", "train_seconds", "samples_per_second"}


def test_demo_recipe_trains_and_prints_json_last(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "cutmix_train.cli", str(RECIPES / "demo.yaml"),
        "train.max_duration=3ba", "train.batch_size=32", "eval.subset_num_batches=1",
        f"logging.file={tmp_path / 'log.txt'}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert SUMMARY_KEYS <= set(summary)
    assert summary["name"] == "demo" and summary["cutmix"] is True
    assert summary["batches"] == 3 and summary["samples"] == 96
    assert 0.0 <= summary["eval_accuracy"] <= 1.0
    assert summary["train_seconds"] > 0 and summary["samples_per_second"] > 0
    assert (tmp_path / "log.txt").is_file()


def _write_shards(out: str, source: str) -> None:
    from writer.cli import main as writer_main

    args = ["write", "--source", source, "--split", "train", "--out", out, "--epochs", "1",
            "--batch-size", "16", "--seed", "0", "--workers", "1"]  # fmt: skip
    result = CliRunner().invoke(writer_main, args)
    assert result.exit_code == 0, result.output


@pytest.mark.usefixtures("s3_bucket")
def test_premixed_recipe_streams_from_a_bucket(s3_bucket: str, cifar_root: Path, tmp_path: Path) -> None:
    remote = f"s3://{s3_bucket}/cifar10-premixed/train"
    _write_shards(remote, f"cifar10:{cifar_root}")
    args = [
        str(RECIPES / "cifar10_resnet20_premixed.yaml"),
        f"data.remote={remote}", f"data.local={tmp_path / 'cache'}", f"data.root={cifar_root}",
        "data.num_workers=0", "train.max_duration=3ba", "train.batch_size=16", "eval.batch_size=20",
        "checkpoint.save_folder=null", "checkpoint.autoresume=false", "logging.file=null",
        "logging.progress_bar=false",
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert SUMMARY_KEYS <= set(summary)
    assert summary["dataset"] == "premixed" and summary["cutmix"] is False
    assert summary["batches"] == 3 and summary["samples"] == 48
    assert any((tmp_path / "cache").rglob("*.mds*"))  # shards came through the local cache
    # What the shards hold, from their manifest, is said before training.
    assert f"the shards hold 1 epoch of 100 cifar10:{cifar_root} images" in result.stderr
    assert "writer seed 0, batch 16" in result.stderr


def _premixed_dry_run(cifar_root: Path, tmp_path: Path, *overrides: str) -> Result:
    """--dry-run of the premixed recipe on local shards of the tiny CIFAR-10 (100 32x32 images,
    one epoch written in batches of 16: 6 batches, 96 samples)."""
    local = tmp_path / "shards"
    _write_shards(str(local), f"cifar10:{cifar_root}")
    args = [str(RECIPES / "cifar10_resnet20_premixed.yaml"), "data.remote=null", f"data.local={local}",
            f"data.root={cifar_root}", "train.batch_size=16", "eval.batch_size=20", "checkpoint.save_folder=null",
            "checkpoint.autoresume=false", "logging.file=null", "logging.progress_bar=false", *overrides,
            "--dry-run"]  # fmt: skip
    return CliRunner().invoke(main, args)


@pytest.mark.parametrize(
    ("duration", "counts"),
    [("3ba", "counts batches (6 make one pass over them)"), ("200sp", "counts samples (96 make one pass over them)"),
     ("1ep", "counts passes over all of them")],
)
def test_premixed_note_says_what_max_duration_counts_in_its_unit(
    cifar_root: Path, tmp_path: Path, duration: str, counts: str
) -> None:
    """"3ba counts passes over all of them" was said of a batch count."""
    result = _premixed_dry_run(cifar_root, tmp_path, f"train.max_duration={duration}")
    assert result.exit_code == 0, result.output
    assert f"train.max_duration {duration} {counts}" in result.stderr


def test_premixed_pad_is_checked_against_the_shards_images_at_build(cifar_root: Path, tmp_path: Path) -> None:
    """The shards' image side is known once they are open: --dry-run refuses what a run would."""
    result = _premixed_dry_run(cifar_root, tmp_path, "data.augment.pad=32")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.output.startswith("Error: data.augment.pad: must be in [0, 31], below the image side 32 "
                                    "(the shards' images)"), result.output  # fmt: skip
    assert "Traceback" not in result.output
