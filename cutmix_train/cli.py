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
import time
from pathlib import Path

import click

__all__ = ["main"]


# Set by a launcher, and also (to single-process defaults) by a Trainer that ran in this process.
_DIST_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")


def _launch(nproc: int, recipe: Path, overrides: tuple[str, ...]) -> int:
    """Re-run this command in ``nproc`` processes under Composer's launcher; its exit status."""
    # The launcher takes its world size and ports from these when set: give it a clean slate.
    env = {k: v for k, v in os.environ.items() if k not in _DIST_VARS}
    command = [
        sys.executable, "-m", "composer.cli.launcher", "-n", str(nproc),
        "-m", "cutmix_train.cli", str(recipe), *overrides,
    ]  # fmt: skip
    click.echo(f"launching: {' '.join(command)}", err=True)
    sys.stderr.flush()
    return subprocess.call(command, env=env)


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
def main(recipe: Path, overrides: tuple[str, ...], nproc: int, dry_run: bool, print_recipe: bool) -> None:
    """Train the RECIPE (a YAML file), with optional dotted overrides such as train.batch_size=64.

    When training ends, the last line on stdout is a JSON object with at least name,
    eval_accuracy, train_seconds and samples_per_second.
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
    summary = summarize(trainer, config)
    summary["wall_seconds"] = round(wall, 3)
    trainer.close()
    if dist.get_global_rank() == 0:
        sys.stderr.flush()
        click.echo(json.dumps(summary))


if __name__ == "__main__":
    main()
