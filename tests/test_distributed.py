"""Scale-out: two processes under Composer's launcher (Gloo on the CPU), online and pre-mixed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cutmix_algo.sampling import label_lam, online_generator, sample_params
from writer.cli import main as writer_main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "recipes" / "demo.yaml"
# The launcher reads its world size and ports from these when set; each run starts clean.
_DIST_VARS = {"WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR",
              "MASTER_PORT", "COMPOSER_RUN_DIRECTORY"}


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _DIST_VARS}


def _lambdas(log: Path) -> list[str]:
    return re.findall(r"cutmix/lambda: (\S+)", log.read_text())


def _eval_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if "metrics/eval/" in line]


def _online_run(tmp: Path, tag: str, *overrides: str, by_hand: bool = False
                ) -> tuple[dict, list[list[str]], list[list[str]]]:
    """Two processes of the demo recipe: ``cutmix-train --nproc 2``, or ``by_hand`` the README's
    ``composer -n 2 -m cutmix_train.cli ... --summary FILE`` (the launcher prints after the JSON
    line, so the file is where the summary is alone)."""
    logs = tmp / tag
    logs.mkdir()
    launch = (["-m", "composer.cli.launcher", "-n", "2", "-m", "cutmix_train.cli"] if by_hand
              else ["-m", "cutmix_train.cli", "--nproc", "2"])
    result = subprocess.run(
        [sys.executable, *launch, str(DEMO),
         "train.max_duration=4ba", "train.batch_size=16", "eval.batch_size=60",
         "eval.subset_num_batches=2", "logging.progress_bar=false",
         f"logging.file={logs}/rank{{rank}}.txt", "--summary", str(logs / "summary.json"), *overrides],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in the summary: not strict JSON")

    summary = json.loads((logs / "summary.json").read_text(), parse_constant=refuse)
    if not by_hand:
        lines = result.stdout.strip().splitlines()
        assert len(lines) == 1, lines  # the summary alone, once: rank 0's; the rest went to stderr
        assert json.loads(lines[0]) == summary  # --summary's file under --nproc too
    ranks = [logs / "rank0.txt", logs / "rank1.txt"]
    return summary, [_lambdas(r) for r in ranks], [_eval_lines(r) for r in ranks]


def test_two_process_online_cutmix_ranks_differ_repeat_and_resume(tmp_path: Path) -> None:
    """The README's two-process commands, tiny: ``cutmix-train recipes/demo.yaml --nproc 2``,
    then a resume by hand under ``composer -n 2``; each rank its own draws, repeatable and
    resumable, and one summary each time."""
    ckpt = tmp_path / "ckpt"
    summary, lams, evals = _online_run(
        tmp_path, "first", f"checkpoint.save_folder={ckpt}", "checkpoint.save_interval=2ba"
    )
    assert summary["world_size"] == 2 and summary["batches"] == 4 and summary["samples"] == 64
    assert len(lams[0]) == len(lams[1]) == 4
    assert lams[0] != lams[1], "both ranks drew the same boxes"
    # DDP keeps the replicas identical: both ranks report the same final metrics.
    assert evals[0] and evals[0] == evals[1]
    # A rerun repeats both ranks' draws: each is the keyed sampler's draw for (seed, rank, batch)
    # and nothing else (the demo recipe: seed 17, 8 images of 32 x 32 per rank, alpha 1).
    for rank in (0, 1):
        want = [label_lam(sample_params(8, 32, 32, 1.0, online_generator(17, rank, b)).lam, 8) for b in range(4)]
        assert [float(v) for v in lams[rank]] == pytest.approx(want, abs=1e-4)  # logged to 4 digits
    # Resuming at batch 2 continues every rank's own sequence.
    checkpoint = ckpt / "ep0-ba2-rank0.pt"
    assert checkpoint.is_file(), sorted(p.name for p in ckpt.iterdir())
    resumed, lams_resumed, _ = _online_run(tmp_path, "resumed", f"checkpoint.load_path={checkpoint}",
                                           by_hand=True)
    assert lams_resumed == [lams[0][2:], lams[1][2:]]
    assert resumed["world_size"] == 2 and resumed["batches"] == 4


def test_two_process_premixed_ranks_see_every_sample_once(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    written = CliRunner().invoke(
        writer_main,
        ["write", "--source", "digits", "--split", "test", "--out", str(shards),
         "--batch-size", "32", "--workers", "1"],
    )  # fmt: skip
    assert written.exit_code == 0, written.output
    total = json.loads((shards / "index.json").read_text())
    num_samples = sum(shard["samples"] for shard in total["shards"])
    # 360 samples = 2 ranks x 6 batches of 30: the loader's drop_last drops nothing.
    assert num_samples == 360
    probe = tmp_path / "probe"
    probe.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "composer.cli.launcher", "-n", "2", str(ROOT / "tests" / "ddp_probe.py"),
         str(probe), str(DEMO), "data.dataset=premixed", f"data.local={shards}",
         "algorithms.cutmix.enabled=false", "train.max_duration=1ep", "train.batch_size=60",
         "eval.subset_num_batches=1", "logging.progress_bar=false"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    seen = [r["seen"] for r in ranks]
    assert seen[0] and seen[1]
    assert not set(seen[0]) & set(seen[1]), "a sample reached both ranks"
    union = seen[0] + seen[1]
    assert len(union) == len(set(union)) == num_samples
    assert set(union) == set(range(num_samples))
    assert ranks[0]["summary"]["eval_accuracy"] == ranks[1]["summary"]["eval_accuracy"]


@pytest.mark.skipif(sys.platform != "linux", reason="the launcher test runs on Linux")
def test_nproc_rejects_nesting_under_a_launcher(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cutmix_train.cli", "--nproc", "2", str(DEMO)],
        cwd=ROOT, env={**_env(), "WORLD_SIZE": "2"}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "--nproc" in result.stderr and "Traceback" not in result.stderr
