"""``cutmix-train RECIPE.yaml [key.sub=value ...]``: train a recipe, print one JSON summary line.

Runs as the console script, as ``python -m cutmix_train.cli``, and under Composer's launcher
(``composer -n 2 -m cutmix_train.cli RECIPE.yaml``); ``--nproc N`` re-launches itself through
that launcher. Only global rank 0 prints the summary, as the last line of stdout, and writes it
to ``--summary FILE`` when given (the launcher prints its own lines after ours, so under
``composer -n`` the file is where the summary is alone).

A rerun of a recipe that checkpoints with ``autoresume`` continues the run (and says from which
checkpoint), or, when the run already reached ``train.max_duration``, says so and prints the
summary stored when it finished, with exit status 0.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

__all__ = ["main"]


# Set by a launcher, and also (to single-process defaults) by a Trainer that ran in this process.
_DIST_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")


def _launched_rank_zero() -> bool:
    # Before the process group exists, the launcher's RANK says who rank 0 is.
    return os.environ.get("RANK", "0") == "0"


def _check_summary_path(path: Path) -> None:
    """Refuse a ``--summary`` FILE that could not be written, before anything trains."""
    parent = path.absolute().parent
    if not parent.is_dir():
        raise click.BadParameter(f"{path}: the folder {parent} does not exist", param_hint="'--summary'")
    try:
        # Writing is a temporary file in the same folder, renamed over FILE: probe exactly that.
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".cutmix-summary-"):
            pass
    except OSError as e:
        raise click.BadParameter(
            f"{path}: cannot write in {parent} ({e.strerror or e})", param_hint="'--summary'"
        ) from None


def _write_atomically(path: Path, text: str) -> None:
    # A reader never sees half a summary: write aside, then rename over the target.
    with tempfile.NamedTemporaryFile("w", dir=path.absolute().parent, prefix=".cutmix-summary-", delete=False) as f:
        f.write(text)
    os.replace(f.name, path)


def _launch(nproc: int, recipe: Path, overrides: tuple[str, ...], dry_run: bool) -> tuple[int, str | None]:
    """Re-run this command in ``nproc`` processes under Composer's launcher.

    The launcher and the ranks write to this process's stderr, and the launcher prints a cleanup
    message after the ranks end; rank 0 hands its summary over in a file instead, so the summary
    is still the last (and only) line on stdout.

    Returns:
        tuple: the launcher's exit status, and rank 0's summary line (None if there is none).
    """
    # The launcher takes its world size and ports from these when set: give it a clean slate.
    env = {k: v for k, v in os.environ.items() if k not in _DIST_VARS}
    with tempfile.TemporaryDirectory(prefix="cutmix-train-") as scratch:
        summary_path = Path(scratch) / "summary.json"
        command = [
            sys.executable, "-m", "composer.cli.launcher", "-n", str(nproc),
            "-m", "cutmix_train.cli", str(recipe), *overrides, "--summary", str(summary_path),
            *(["--dry-run"] if dry_run else []),
        ]  # fmt: skip
        click.echo(f"launching: {' '.join(command)}", err=True)
        sys.stderr.flush()
        status = subprocess.call(command, env=env, stdout=sys.stderr.fileno())
        line = summary_path.read_text().strip() if status == 0 and summary_path.is_file() else None
    return status, line


def _check_split(config: Any, nproc: int) -> None:
    # Each rank builds its loaders with batch_size // world; check here, not in N launcher logs.
    for key, value in (("train.batch_size", config.train.batch_size), ("eval.batch_size", config.eval.batch_size)):
        if value % nproc:
            raise click.ClickException(
                f"{key}: {value} does not split evenly across --nproc {nproc} processes; use a multiple of {nproc}"
            )


def _emit(line: str, summary: Path | None) -> None:
    # The summary line: stdout's last line, and --summary's file when given.
    if summary is not None:
        _write_atomically(summary, line + "\n")
    sys.stderr.flush()
    click.echo(line)


def _without_worker_traceback(error: Exception) -> str:
    """``error``'s own message, also when a DataLoader worker raised it.

    torch re-raises a worker's exception in the main process with the worker's whole traceback
    as its message ("Caught X in DataLoader worker process N.\nOriginal Traceback ..."); the
    error's own message is that traceback's last line, after ``module.X: ``.
    """
    text = str(error)
    match = re.match(r"Caught \S+ in (DataLoader worker process \d+)\.\nOriginal Traceback", text)
    if match is None:
        return text
    last = text.rstrip().splitlines()[-1]
    name = f"{type(error).__module__}.{type(error).__qualname__}: "
    return f"{last[len(name):] if last.startswith(name) else last} (in {match.group(1)})"


def _stored_summary(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return stored if isinstance(stored, dict) else None


class _TrainOrCompare(click.Command):
    """``cutmix-train compare ...`` runs :func:`cutmix_train.compare.compare`; anything else trains."""

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if argv[:1] == ["compare"]:
            from cutmix_train.compare import compare

            name = f"{prog_name or 'cutmix-train'} compare"
            return compare.main(argv[1:], prog_name=name, **extra)
        return super().main(args, prog_name, **extra)


@click.command(cls=_TrainOrCompare, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("recipe", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("overrides", nargs=-1, metavar="[KEY.SUB=VALUE]...")
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes to train with, launched through `composer -n N` (torch.distributed; Gloo on CPU).",
)
@click.option(
    "--dry-run", is_flag=True, help="Validate the recipe and build the Trainer (in every process), then exit."
)
@click.option("--print-recipe", is_flag=True, help="Print the resolved recipe as YAML and exit.")
@click.option(
    "--summary",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also write the JSON summary to this file (rank 0; its folder must exist).",
)
def main(
    recipe: Path,
    overrides: tuple[str, ...],
    nproc: int,
    dry_run: bool,
    print_recipe: bool,
    summary: Path | None,
) -> None:
    """Train the RECIPE (a YAML file), with optional dotted overrides such as train.batch_size=64.

    `cutmix-train compare RECIPE --variant NAME:K=V ... --seeds N` compares variants over seeds
    instead (see `cutmix-train compare --help`).

    When training ends, the last line on stdout is a JSON object with at least name,
    eval_accuracy, train_seconds and samples_per_second (the whole run, over resumes) and
    this_invocation (this process's share), printed by rank 0 only. (Run directly under
    `composer -n N -m cutmix_train.cli`, the launcher prints a cleanup message after it;
    --nproc N or --summary FILE give the summary alone.) A rerun of a finished autoresume run
    trains nothing, says so on stderr and prints the stored summary.
    """
    began = time.perf_counter()
    from cutmix_train.config import RecipeError, load_recipe, to_yaml

    try:
        config = load_recipe(recipe, overrides)
    except RecipeError as e:
        raise click.ClickException(str(e)) from None
    if print_recipe:
        click.echo(to_yaml(config), nl=False)
        return
    if summary is not None and _launched_rank_zero():
        _check_summary_path(summary)
    if nproc > 1:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise click.UsageError("--nproc: already running under a launcher (WORLD_SIZE is set)")
        _check_split(config, nproc)
        status, line = _launch(nproc, recipe, overrides, dry_run)
        if dry_run and status == 0:
            click.echo(f"recipe OK: trainer built in each of {nproc} processes, nothing trained", err=True)
        if line is not None:
            _emit(line, summary)
        sys.exit(status)

    from composer.utils import dist

    from cutmix_train.builder import (
        SUMMARY_NAME,
        build_trainer,
        checkpoint_folder,
        is_complete,
        progress,
        resumed_from,
        summarize,
    )
    from writer.errors import WriterError  # a pre-mixed dataset that is corrupt or inconsistent

    try:
        trainer = build_trainer(config)
    except RecipeError as e:
        raise click.ClickException(str(e)) from None
    except WriterError as e:
        raise click.ClickException(f"data: {e}") from None
    except OSError as e:  # Composer creating a checkpoint or logging folder it cannot
        if isinstance(e, io.UnsupportedOperation):  # not a path: a stream without fileno()
            raise
        raise click.ClickException(
            f"cannot create the run's outputs (checkpoint.save_folder, logging.*): {e}"
        ) from None
    if dry_run:
        trainer.close()
        click.echo("recipe OK: trainer built", err=True)
        return
    rank_zero = dist.get_global_rank() == 0
    resumed = resumed_from(trainer, config)
    start = progress(trainer)
    folder = checkpoint_folder(config)
    stored_path = None if folder is None else folder / SUMMARY_NAME
    at = f"epoch {start['epoch']}, batch {start['batch']}, sample {start['sample']}"
    if is_complete(trainer):
        stored = _stored_summary(stored_path)
        if stored is not None and stored.get("batches") != start["batch"]:
            stored = None  # written by an earlier, shorter finish of this run: not this checkpoint's
        if rank_zero:
            click.echo(
                f"run already complete: {resumed} is at {at}, which reaches train.max_duration "
                f"{config.train.max_duration}; nothing to train, "
                + ("printing the summary stored when it finished. " if stored else "no stored summary (metrics null). ")
                + f"To start fresh remove {folder or config.checkpoint.save_folder} or set another "
                "checkpoint.save_folder; to train longer raise train.max_duration",
                err=True,
            )
        result = stored or summarize(trainer, config, start=start)
        result["this_invocation"] = {
            "wall_seconds": round(time.perf_counter() - began, 3),
            "train_seconds": 0.0,
            "samples": 0,
            "batches": 0,
            "samples_per_second": None,
            "resumed_from": resumed,
            "already_complete": True,
        }
        trainer.close()
        if rank_zero:
            _emit(json.dumps(result, allow_nan=False), summary)
        return
    if resumed is not None and rank_zero:
        click.echo(
            f"resuming from {resumed} at {at} ({start['train_seconds']:.1f} s trained so far); "
            f"training on to train.max_duration {config.train.max_duration}",
            err=True,
        )
    try:
        trainer.fit()
    except FileExistsError as e:  # an earlier run's checkpoints in the way of this run's saves
        trainer.close()
        raise click.ClickException(f"checkpoint.save_folder: {e}") from None
    except WriterError as e:  # a shard found corrupt while training (hash, length or labels)
        trainer.close()
        raise click.ClickException(f"data: {_without_worker_traceback(e)}") from None
    result = summarize(trainer, config, start=start, wall_seconds=time.perf_counter() - began, resumed=resumed)
    result["this_invocation"]["already_complete"] = False
    trainer.close()
    if rank_zero:
        # allow_nan=False: the summary is JSON; summarize has already turned NaN and inf into null.
        line = json.dumps(result, allow_nan=False)
        if stored_path is not None and stored_path.parent.is_dir():
            _write_atomically(stored_path, line + "\n")
        _emit(line, summary)


if __name__ == "__main__":
    main()
