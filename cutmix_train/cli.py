"""``cutmix-train RECIPE.yaml [key.sub=value ...]``: train a recipe, print one JSON summary line.

Runs as the console script, as ``python -m cutmix_train.cli``, and under Composer's launcher
(``composer -n 2 -m cutmix_train.cli RECIPE.yaml``); ``--nproc N`` re-launches itself through
that launcher. Only global rank 0 prints the summary, as the last line of stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

__all__ = ["main"]


# Set by a launcher, and also (to single-process defaults) by a Trainer that ran in this process.
_DIST_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")


def _launch(nproc: int, recipe: Path, overrides: tuple[str, ...]) -> int:
    """Re-run this command in ``nproc`` processes under Composer's launcher; its exit status.

    The launcher and the ranks write to this process's stderr, and the launcher prints a cleanup
    message after the ranks end; rank 0 hands its summary over in a file instead, so the summary
    is still the last (and only) line on stdout.
    """
    # The launcher takes its world size and ports from these when set: give it a clean slate.
    env = {k: v for k, v in os.environ.items() if k not in _DIST_VARS}
    with tempfile.TemporaryDirectory(prefix="cutmix-train-") as scratch:
        summary_path = Path(scratch) / "summary.json"
        command = [
            sys.executable, "-m", "composer.cli.launcher", "-n", str(nproc),
            "-m", "cutmix_train.cli", str(recipe), *overrides, "--summary", str(summary_path),
        ]  # fmt: skip
        click.echo(f"launching: {' '.join(command)}", err=True)
        sys.stderr.flush()
        status = subprocess.call(command, env=env, stdout=sys.stderr.fileno())
        if status == 0 and summary_path.is_file():
            click.echo(summary_path.read_text().strip())
    return status


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("recipe", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("overrides", nargs=-1, metavar="[KEY.SUB=VALUE]...")
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes to train with, launched through `composer -n N` (torch.distributed; Gloo on CPU).",
)
@click.option("--dry-run", is_flag=True, help="Validate the recipe and build the Trainer, then exit.")
@click.option("--print-recipe", is_flag=True, help="Print the resolved recipe as YAML and exit.")
@click.option(
    "--summary",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also write the JSON summary to this file (rank 0).",
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

    When training ends, the last line on stdout is a JSON object with at least name,
    eval_accuracy, train_seconds and samples_per_second, printed by rank 0 only. (Run directly
    under `composer -n N -m cutmix_train.cli`, the launcher prints a cleanup message after it;
    --nproc N or --summary FILE give the summary alone.)
    """
    from cutmix_train.config import RecipeError, load_recipe, to_yaml

    try:
        config = load_recipe(recipe, overrides)
    except RecipeError as e:
        raise click.ClickException(str(e)) from None
    if print_recipe:
        click.echo(to_yaml(config), nl=False)
        return
    if nproc > 1:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise click.UsageError("--nproc: already running under a launcher (WORLD_SIZE is set)")
        sys.exit(_launch(nproc, recipe, overrides))

    from composer.utils import dist

    from cutmix_train.builder import build_trainer, summarize

    try:
        trainer = build_trainer(config)
    except RecipeError as e:
        raise click.ClickException(str(e)) from None
    if dry_run:
        trainer.close()
        click.echo("recipe OK: trainer built", err=True)
        return
    start = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - start
    result = summarize(trainer, config)
    result["wall_seconds"] = round(wall, 3)
    trainer.close()
    if dist.get_global_rank() == 0:
        line = json.dumps(result)
        if summary is not None:
            summary.write_text(line + "\n")
        sys.stderr.flush()
        click.echo(line)


if __name__ == "__main__":
    main()
