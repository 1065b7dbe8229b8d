"""Training from corrupt pre-mixed shards ends in one line naming the shard, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from test_writer_cli import write
from test_writer_dataset import _tampered_label

from cutmix_train.cli import main

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _train(shards: Path, cifar_root: Path, tmp_path: Path, workers: int = 0) -> object:
    args = [
        str(RECIPES / "cifar10_resnet20_premixed.yaml"),
        "data.remote=null", f"data.local={shards}", f"data.root={cifar_root}", f"data.num_workers={workers}",
        "train.max_duration=8ba", "train.batch_size=8", "eval.batch_size=20",
        "checkpoint.save_folder=null", "checkpoint.autoresume=false", "logging.file=null",
        "logging.progress_bar=false",
    ]  # fmt: skip
    return CliRunner().invoke(main, args)


@pytest.fixture
def shards(cifar_root: Path, tmp_path: Path) -> Path:
    out = tmp_path / "raw"
    write(cifar_root, out, "--epochs", 1)
    return out


@pytest.mark.parametrize("workers", [0, 1])
def test_a_nan_label_stops_training_with_one_line_naming_the_shard(shards: Path, cifar_root: Path,
                                                                     tmp_path: Path, workers: int) -> None:
    """Also from a DataLoader worker, whose error torch re-raises with the worker's traceback."""
    _tampered_label(shards, tmp_path / "nan", 20)
    result = _train(tmp_path / "nan", cifar_root, tmp_path, workers)
    assert result.exit_code == 1, result.output
    assert "Error: data:" in result.output and "shard.00000.mds" in result.output
    assert "Traceback" not in result.output
    if workers:
        assert "(in DataLoader worker process 0)" in result.output


def test_a_truncated_shard_is_one_line_before_training(shards: Path, cifar_root: Path, tmp_path: Path) -> None:
    shard = shards / "shard.00000.mds"
    shard.write_bytes(shard.read_bytes()[:-100])
    result = _train(shards, cifar_root, tmp_path)
    assert result.exit_code == 1, result.output
    assert "Error: data" in result.output and "shard.00000.mds" in result.output and "corrupt" in result.output
    assert "Traceback" not in result.output
