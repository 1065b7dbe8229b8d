"""Checkpoints: a recipe's save_folder gets checkpoints, and autoresume continues from them."""

from __future__ import annotations

from pathlib import Path

from cutmix_algo import CutMix
from cutmix_train.builder import build_trainer
from cutmix_train.config import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_autoresume_continues_where_the_last_run_stopped(tmp_path: Path) -> None:
    base = [
        "train.batch_size=16", "eval.subset_num_batches=1", "eval.interval=1000ba", "scheduler.warmup=0ba",
        f"checkpoint.save_folder={tmp_path / 'ckpt'}", "checkpoint.save_interval=1ba",
        "checkpoint.autoresume=true", "logging.progress_bar=false",
    ]  # fmt: skip
    first = build_trainer(load_recipe(RECIPES / "demo.yaml", [*base, "train.max_duration=2ba"]))
    first.fit()
    lam = next(a for a in first.state.algorithms if isinstance(a, CutMix)).last_lam
    first.close()
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("ep*-ba*-rank0.pt")) == [
        "ep0-ba1-rank0.pt",
        "ep0-ba2-rank0.pt",
    ]

    second = build_trainer(load_recipe(RECIPES / "demo.yaml", [*base, "train.max_duration=4ba"]))
    try:
        assert int(second.state.timestamp.batch) == 2  # resumed, not restarted
        assert lam is not None
        second.fit()
        assert int(second.state.timestamp.batch) == 4
        assert int(second.state.timestamp.sample) == 64
    finally:
        second.close()
