"""The cutmix-train runner: reruns, resumes, dry runs, the summary, and its one-line errors.

Every training run here is the digits demo recipe cut to a few batches of 16 on the CPU.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cutmix_train.cli import main
from cutmix_train.config import load_recipe

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "recipes" / "demo.yaml"
FAST = [
    "train.batch_size=16", "eval.subset_num_batches=1", "scheduler.warmup=0ba", "logging.progress_bar=false",
]  # fmt: skip
RESUMABLE = [*FAST, "checkpoint.save_interval=1ba", "checkpoint.autoresume=true"]


def _strict_json(line: str) -> dict[str, Any]:
    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(line, parse_constant=refuse)


def _run(*args: str) -> Result:
    return CliRunner().invoke(main, [str(DEMO), *args])


def _summary(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    return _strict_json(result.stdout.strip().splitlines()[-1])


def _one_line_error(result: Result, *expected: str) -> str:
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), result.exception  # a ClickException, not a crash
    assert "Traceback" not in result.output
    assert result.stdout == ""  # no summary: nothing trained
    message = result.stderr.strip().splitlines()[-1]
    for text in expected:
        assert text in message, message
    return message


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A checkpoint folder of a run that finished at 2 batches (a checkpoint per batch), and its summary."""
    folder = tmp_path_factory.mktemp("finished") / "ckpt"
    summary = _summary(_run(*RESUMABLE, f"checkpoint.save_folder={folder}", "train.max_duration=2ba"))
    assert summary["batches"] == 2
    return folder, summary


@pytest.fixture
def run_folder(finished: tuple[Path, dict[str, Any]], tmp_path: Path) -> Path:
    """This test's own copy of the finished run's folder (its latest symlink is relative)."""
    copy = tmp_path / "ckpt"
    shutil.copytree(finished[0], copy, symlinks=True)
    return copy


def test_rerun_of_a_finished_run_says_so_in_one_line_and_prints_the_stored_summary(
    finished: tuple[Path, dict[str, Any]], run_folder: Path
) -> None:
    result = _run(*RESUMABLE, f"checkpoint.save_folder={run_folder}", "train.max_duration=2ba")
    summary = _summary(result)
    assert "Traceback" not in result.output
    notes = [line for line in result.stderr.splitlines() if "already complete" in line]
    assert len(notes) == 1
    assert str(run_folder / "ep0-ba2-rank0.pt") in notes[0]  # where its checkpoint is
    assert f"remove {run_folder}" in notes[0] and "checkpoint.save_folder" in notes[0]  # how to start fresh
    stored = finished[1]
    assert summary["eval_accuracy"] == stored["eval_accuracy"] and summary["batches"] == 2
    assert summary["train_seconds"] == stored["train_seconds"]
    invocation = summary["this_invocation"]
    assert invocation["already_complete"] is True and invocation["batches"] == 0
    assert invocation["resumed_from"] == str(run_folder / "ep0-ba2-rank0.pt")


def test_rerun_of_a_finished_run_draws_no_progress_bar(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The bar was saved in each checkpoint and redrawn at load: a rerun that trains nothing
    flashed "train 0->1/1". Checkpoints now leave it out; a resumed run draws its own.

    (In process, on the real stderr: the bar needs a stream with a file descriptor, which
    CliRunner's lacks.)
    """
    import torch

    args = [str(DEMO), *RESUMABLE, "logging.progress_bar=true", f"checkpoint.save_folder={tmp_path}",
            "train.max_duration=1ba"]  # fmt: skip
    main(args, standalone_mode=False)
    assert re.search(r"train .*1/1", capfd.readouterr().err)  # the run drew its bar
    main(args, standalone_mode=False)
    err = capfd.readouterr().err
    assert "already complete" in err
    assert not re.search(r"\d+/\d+", err.replace(str(tmp_path), "")), err
    assert "ProgressBarLogger is not in the state_dict" not in err
    saved = torch.load(tmp_path / "latest-rank0.pt", map_location="cpu", weights_only=False)
    assert "ProgressBarLogger" not in saved["state"]["callbacks"]


def test_unfinished_run_says_it_resumes_and_reports_this_invocation_apart_from_the_whole_run(
    finished: tuple[Path, dict[str, Any]], run_folder: Path
) -> None:
    result = _run(*RESUMABLE, f"checkpoint.save_folder={run_folder}", "train.max_duration=3ba")
    summary = _summary(result)
    notes = [line for line in result.stderr.splitlines() if line.startswith("resuming from")]
    assert notes == [notes[0]] and f"{run_folder / 'ep0-ba2-rank0.pt'} at epoch 0, batch 2, sample 32" in notes[0]
    assert summary["batches"] == 3 and summary["samples"] == 48  # the whole run
    invocation = summary["this_invocation"]
    assert invocation["batches"] == 1 and invocation["samples"] == 16  # this process's share
    assert invocation["already_complete"] is False
    assert invocation["resumed_from"] == str(run_folder / "ep0-ba2-rank0.pt")
    # Cumulative training time includes the first process's; this process's cannot exceed its wall clock.
    assert summary["train_seconds"] == pytest.approx(
        finished[1]["train_seconds"] + invocation["train_seconds"], abs=2e-3
    )
    assert 0 < invocation["train_seconds"] <= invocation["wall_seconds"]
    assert json.loads((run_folder / "cutmix-summary.json").read_text())["batches"] == 3


def test_truncated_latest_checkpoint_falls_back_to_the_previous_one_and_says_so(run_folder: Path) -> None:
    latest = run_folder / "ep0-ba2-rank0.pt"
    latest.write_bytes(latest.read_bytes()[:1000])
    result = _run(*RESUMABLE, f"checkpoint.save_folder={run_folder}", "train.max_duration=3ba")
    summary = _summary(result)
    notes = [line for line in result.stderr.splitlines() if "truncated or corrupt" in line]
    assert len(notes) == 1
    assert str(latest) in notes[0] and str(run_folder / "ep0-ba1-rank0.pt") in notes[0]
    assert "ep0-ba2-rank0.pt.corrupt" in notes[0]
    assert summary["this_invocation"]["resumed_from"] == str(run_folder / "ep0-ba1-rank0.pt")
    assert summary["batches"] == 3 and summary["this_invocation"]["batches"] == 2
    assert len((run_folder / "ep0-ba2-rank0.pt.corrupt").read_bytes()) == 1000  # kept aside, not deleted


def test_truncated_checkpoint_without_an_intact_one_is_a_one_line_error_naming_it(run_folder: Path) -> None:
    for name in ("ep0-ba1-rank0.pt", "ep0-ba2-rank0.pt"):
        (run_folder / name).write_bytes(b"PK\x03\x04 cut short")
    result = _run(*RESUMABLE, f"checkpoint.save_folder={run_folder}", "train.max_duration=3ba")
    _one_line_error(result, "checkpoint.save_folder", str(run_folder / "ep0-ba2-rank0.pt"), "truncated or corrupt")


def test_reused_save_folder_without_autoresume_is_a_one_line_error(run_folder: Path) -> None:
    result = _run(
        *FAST, f"checkpoint.save_folder={run_folder}", "checkpoint.save_interval=1ba", "train.max_duration=3ba"
    )
    _one_line_error(result, "checkpoint.save_folder", str(run_folder), "checkpoint.autoresume=true")
    assert not (run_folder / "ep0-ba3-rank0.pt").exists()


@pytest.mark.parametrize("inside", [False, True], ids=["the-folder", "a-parent"])
def test_save_folder_that_is_a_file_is_a_one_line_error(tmp_path: Path, inside: bool) -> None:
    file = tmp_path / "not-a-folder"
    file.write_text("mine\n")
    folder = file / "ckpt" if inside else file
    result = _run(*FAST, f"checkpoint.save_folder={folder}", "train.max_duration=1ba")
    _one_line_error(result, "checkpoint.save_folder", str(file), "is a file")
    assert file.read_text() == "mine\n"


@pytest.mark.parametrize("where", ["missing-folder", "parent-is-a-file"])
def test_unwritable_summary_path_fails_before_training(tmp_path: Path, where: str) -> None:
    (tmp_path / "a-file").write_text("")
    summary = tmp_path / ("no-such-folder" if where == "missing-folder" else "a-file") / "summary.json"
    folder = tmp_path / "ckpt"
    result = _run(*RESUMABLE, f"checkpoint.save_folder={folder}", "train.max_duration=2ba", "--summary", str(summary))
    _one_line_error(result, "--summary", str(summary))
    assert not folder.exists()  # refused before the Trainer existed


def test_summary_is_strict_json_with_null_for_a_non_finite_metric(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run whose weights blew up to NaN (the recipe now refuses the learning rate of 1e30 that did
    # it in one step): its metrics compute to NaN.
    import cutmix_train.builder

    monkeypatch.setattr(cutmix_train.builder, "_metric", lambda metric: math.nan)
    path = tmp_path / "summary.json"
    result = _run(*FAST, "train.max_duration=1ba", "--summary", str(path))
    summary = _summary(result)
    assert summary["eval_loss"] is None
    assert _strict_json(path.read_text()) == summary
    assert not list(tmp_path.glob(".cutmix-summary-*"))  # written atomically, no leftovers


@pytest.mark.parametrize("extra", [[], ["scheduler.warmup=1ba", "scheduler.name=cosine"]], ids=["plain", "warmup"])
def test_batch_larger_than_the_training_data_is_an_error_before_training(extra: list[str]) -> None:
    result = _run(*FAST, "train.batch_size=2000", "train.max_duration=1ep", *extra)
    _one_line_error(result, "train.batch_size", "2000", "1437 training samples")


def test_nproc_batch_that_does_not_split_is_refused_before_launching() -> None:
    result = _run(*FAST, "train.max_duration=1ba", "--nproc", "3")
    _one_line_error(result, "train.batch_size", "16", "--nproc 3")
    assert "launching" not in result.stderr


def test_nproc_dry_run_builds_in_every_process_and_never_trains(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    command = [
        sys.executable, "-m", "cutmix_train.cli", str(DEMO), *RESUMABLE, "train.max_duration=2ba",
        f"checkpoint.save_folder={folder}", "--nproc", "2", "--dry-run",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == ""  # no summary
    assert "recipe OK: trainer built in each of 2 processes" in result.stderr
    assert not folder.exists() or not list(folder.iterdir())  # no checkpoint: nothing trained


# The README's pre-mixed example: write, verify, train must name the same data, epochs and seed.
def _block_after(text: str, marker: str) -> list[str]:
    opening = text.index("```bash\n", text.index(marker)) + len("```bash\n")
    block = text[opening : text.index("```", opening)]
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def _flag(line: str, name: str) -> str:
    match = re.search(rf"{name}[ =](\S+)", line)
    assert match, f"{name} missing in: {line}"
    return match.group(1)


def test_readme_premixed_example_agrees_with_the_premixed_recipe() -> None:
    write, verify, train = _block_after((REPO / "README.md").read_text(), "Pre-mixed shards")
    recipe = load_recipe(REPO / "recipes" / "cifar10_resnet20_premixed.yaml")
    out = _flag(write, "--out")
    assert write.startswith("cutmix-writer write") and verify.split()[:3] == ["cutmix-writer", "verify", out]
    assert train.split()[:2] == ["cutmix-train", "recipes/cifar10_resnet20_premixed.yaml"]
    assert _flag(train, "data.remote") == out
    # The eval split is read from the recipe's data.root: the same CIFAR folder the writer read.
    assert _flag(write, "--source") == f"cifar10:{recipe.data.root}"
    assert int(_flag(write, "--seed")) == recipe.seed
    assert int(_flag(write, "--batch-size")) == recipe.train.batch_size
    # The recipe's own comment says how to write its shards: the README writes the same.
    comment = (REPO / "recipes" / "cifar10_resnet20_premixed.yaml").read_text()
    recipe_write = " ".join(line.lstrip("# ").rstrip("\\ ") for line in comment.splitlines() if line.startswith("#"))
    for flag in ("--epochs", "--seed", "--batch-size", "--alpha", "--source"):
        assert _flag(recipe_write, flag) == _flag(write, flag), flag


def test_readme_bucket_names_are_valid() -> None:
    # S3 bucket names: 3-63 characters of lowercase letters, digits, dots and hyphens.
    text = (REPO / "README.md").read_text()
    buckets = re.findall(r"s3://([^/\s`]+)", text)
    assert buckets
    for bucket in buckets:
        assert re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket), bucket


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["optimizer.lr=0.5", "optimizer.momentum=0.5", "optimizer.weight_decay=0.01", "seed=3",
          "data.mean=[0.1,0.2,0.3]"],
         ["optimizer.lr 0.05 (recipe: 0.5)", "optimizer.momentum 0.9 (recipe: 0.5)",
          "optimizer.weight_decay", "seed 17 (recipe: 3)", "data.mean"]),
        (["optimizer.name=adamw"], ["optimizer SGD (recipe: AdamW)"]),
    ],
)
def test_resuming_with_a_setting_the_checkpoint_would_override_is_a_one_line_error_naming_each(
    run_folder: Path, overrides: list[str], named: list[str]
) -> None:
    """Composer restores weights, normalization buffers, optimizer and seed: the recipe's would not apply."""
    before = sorted(p.name for p in run_folder.iterdir())
    result = _run(*RESUMABLE, f"checkpoint.save_folder={run_folder}", "train.max_duration=3ba", *overrides)
    _one_line_error(result, "checkpoint.autoresume", str(run_folder / "ep0-ba2-rank0.pt"), *named,
                    "choose another checkpoint.save_folder")
    assert sorted(p.name for p in run_folder.iterdir()) == before  # nothing trained, nothing saved


def test_resuming_into_another_model_is_a_one_line_error_not_a_key_error(run_folder: Path) -> None:
    result = _run(*RESUMABLE, f"checkpoint.save_folder={run_folder}", "train.max_duration=3ba",
                  "model.name=resnet32")
    _one_line_error(result, "checkpoint.autoresume", "do not fit model.name=resnet32",
                    "saved by model.name=resnet20", "module.1.layer1.3.conv1.weight")


def test_resuming_on_another_dataset_is_a_one_line_error(run_folder: Path, cifar_root: Path) -> None:
    result = _run(*RESUMABLE, f"checkpoint.save_folder={run_folder}", "train.max_duration=3ba",
                  "data.dataset=cifar10", f"data.root={cifar_root}")
    _one_line_error(result, "checkpoint.autoresume", "data.dataset digits (recipe: cifar10)")


def test_load_path_is_checked_as_autoresume_is(run_folder: Path, tmp_path: Path) -> None:
    checkpoint = run_folder / "ep0-ba2-rank0.pt"
    result = _run(*FAST, f"checkpoint.load_path={checkpoint}", "optimizer.lr=0.2", "--dry-run")
    _one_line_error(result, "checkpoint.load_path", "optimizer.lr 0.05 (recipe: 0.2)",
                    "without checkpoint.load_path")
    junk = tmp_path / "notackpt.pt"
    junk.write_text("hello\n")
    result = _run(*FAST, f"checkpoint.load_path={junk}", "--dry-run")
    _one_line_error(result, "checkpoint.load_path", str(junk), "is not a Composer checkpoint")
    # The same recipe loads it (a dry run builds the Trainer, which loads the checkpoint).
    assert _run(*FAST, f"checkpoint.load_path={checkpoint}", "--dry-run").exit_code == 0


def test_compare_trains_a_changed_variant_from_the_start_not_from_its_old_checkpoint(tmp_path: Path) -> None:
    """A variant whose recipe changed retrains; its old checkpoints (another recipe's) are set aside."""
    from cutmix_train.compare import train_run
    from cutmix_train.config import to_yaml

    folder = tmp_path / "ck"
    common = (*RESUMABLE, f"checkpoint.save_folder={folder}", "train.max_duration=2ba")
    first = train_run(str(DEMO), (*common, "algorithms.cutmix.alpha=1.0"))
    assert "error" not in first, first.get("traceback")
    second = train_run(str(DEMO), (*common, "algorithms.cutmix.alpha=0.5"))
    assert "error" not in second, second.get("traceback")
    assert second["batches"] == 2 and second["this_invocation"]["batches"] == 2  # trained, not resumed
    assert (tmp_path / "ck.stale" / "ep0-ba2-rank0.pt").is_file()  # the old run kept aside
    from cutmix_train.builder import recorded_recipe

    assert recorded_recipe(folder / "ep0-ba2-rank0.pt") == to_yaml(
        load_recipe(DEMO, [*common, "algorithms.cutmix.alpha=0.5"]))
    third = train_run(str(DEMO), (*common, "algorithms.cutmix.alpha=0.5"))  # the same recipe: resumed
    assert "error" not in third, third.get("traceback")  # complete already: reported, not refitted
    assert third["batches"] == 2 and third["train_seconds"] == second["train_seconds"]  # nothing trained
    assert third["eval_accuracy"] == second["eval_accuracy"]
