"""``logging.tensorboard`` and ``logging.mlflow``: a real run writes CutMix's λ and the metrics there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cutmix_train.cli import main

DEMO = Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml"


def test_tensorboard_and_mlflow_file_store_receive_lambda_and_metrics(tmp_path: Path) -> None:
    tb, ml = tmp_path / "tb", tmp_path / "mlruns"
    args = [str(DEMO), "train.max_duration=3ba", "train.batch_size=16", "eval.subset_num_batches=1",
            "scheduler.warmup=0ba", "logging.progress_bar=false", "run_name=logged",
            f"logging.tensorboard={tb}", f"logging.mlflow={ml}"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((tb / "logged").rglob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event files under {tb}"
    tags: dict[str, list[float]] = {}
    for path in events:
        acc = EventAccumulator(str(path))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            tags.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    assert len(tags["cutmix/lambda"]) == 3 and all(0 < v <= 1 for v in tags["cutmix/lambda"])
    assert tags["metrics/eval/MulticlassAccuracy"][-1] == pytest.approx(summary["eval_accuracy"], abs=1e-5)
    assert "loss/train/total" in tags

    from mlflow import MlflowClient

    client = MlflowClient(ml.absolute().as_uri())
    experiment = client.get_experiment_by_name("demo")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "logged" and run.info.status == "FINISHED"
    lam = client.get_metric_history(run.info.run_id, "cutmix/lambda")
    assert len(lam) == 3 and all(0 < m.value <= 1 for m in lam)
    assert run.data.metrics["metrics/eval/MulticlassAccuracy"] == pytest.approx(summary["eval_accuracy"], abs=1e-5)
    assert (ml / experiment.experiment_id / run.info.run_id / "metrics" / "cutmix" / "lambda").is_file()
