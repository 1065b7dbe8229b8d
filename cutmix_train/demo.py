"""The end-to-end demo (``make demo``): online CutMix against pre-mixed shards, offline.

1. ``cutmix-writer write`` pre-mixes the digits train set into MDS shards under ``demo_out/``,
   as many epochs as the online run trains, with the online run's batch size and seed;
2. ``cutmix-writer verify`` checks the shards against the source;
3. ``cutmix-train recipes/demo.yaml`` trains ResNet-20 with online CutMix;
4. the same recipe trains once over the shards (``data.dataset=premixed``, CutMix off: the shards
   are mixed already; one pass over them is as many samples as the online run sees);
5. a table compares eval accuracy, training seconds and samples/s.

Each step is a subprocess, exactly the command a user would type; the table reads the JSON line
each training run prints last.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import click

__all__ = ["main", "results_table"]

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml"


def _writer_command() -> list[str]:
    script = Path(sys.executable).with_name("cutmix-writer")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from writer.cli import main; main()"]


def _run(command: list[str], what: str) -> str:
    """Run a step, streaming its stderr (progress bars) through; its stdout, or exit on failure."""
    click.echo(f"\n$ {' '.join(command)}", err=True)
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        sys.stdout.write(result.stdout)
        raise click.ClickException(f"{what} failed with exit status {result.returncode}")
    return result.stdout


def _train(recipe: Path, overrides: list[str], what: str) -> dict:
    command = [sys.executable, "-m", "cutmix_train.cli", str(recipe), *overrides]
    lines = _run(command, what).strip().splitlines()
    if not lines:
        raise click.ClickException(f"{what} printed no summary line")
    return json.loads(lines[-1])


def results_table(rows: list[tuple[str, dict]]) -> str:
    """A markdown table of training summaries: eval accuracy, train seconds, samples/s."""
    out = [
        "| run | eval accuracy | train seconds | samples/s | samples |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, s in rows:
        out.append(
            f"| {label} | {s['eval_accuracy']:.4f} | {s['train_seconds']:.1f} | "
            f"{s['samples_per_second']:.1f} | {s['samples']} |"
        )
    return "\n".join(out)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("demo_out"),
    show_default=True,
    help="Where the shards, logs and results go.",
)
@click.option(
    "--recipe",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=RECIPE,
    show_default=True,
    help="The online-CutMix recipe to compare (digits data).",
)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Writer processes.")
def main(out: Path, recipe: Path, workers: int) -> None:
    """Write and verify pre-mixed digits shards, train online and pre-mixed, print a table."""
    from cutmix_train.config import RecipeError, load_recipe

    try:
        config = load_recipe(recipe)
    except RecipeError as e:
        raise click.ClickException(str(e)) from None
    duration = config.train.max_duration
    if not duration.endswith("ep") or config.data.dataset != "digits":
        raise click.ClickException(f"{recipe}: the demo needs a digits recipe whose train.max_duration is in epochs")
    epochs = int(duration[: -len("ep")])
    shards = out / "premixed"
    start = time.perf_counter()

    writer = _writer_command()
    _run(
        [*writer, "write", "--source", "digits", "--split", "train", "--out", str(shards),
         "--alpha", str(config.algorithms.cutmix.alpha), "--batch-size", str(config.train.batch_size),
         "--epochs", str(epochs), "--seed", str(config.seed), "--workers", str(workers), "--overwrite"],
        "cutmix-writer write",
    )  # fmt: skip
    write_seconds = time.perf_counter() - start
    _run([*writer, "verify", str(shards), "--source", "digits", "--split", "train"], "cutmix-writer verify")

    logs = [f"logging.file={out / 'logs' / '{run_name}-rank{rank}.txt'}"]
    online = _train(recipe, logs, "online CutMix training")
    premixed = _train(
        recipe,
        [*logs, "name=demo_premixed", "data.dataset=premixed", f"data.local={shards}",
         "algorithms.cutmix.enabled=false", "train.max_duration=1ep"],
        "pre-mixed training",
    )  # fmt: skip
    total = time.perf_counter() - start

    table = results_table(
        [(f"online CutMix ({epochs} epochs)", online), (f"pre-mixed shards (1 pass = {epochs} epochs)", premixed)]
    )
    (out / "results.json").write_text(
        json.dumps({"online": online, "premixed": premixed, "write_seconds": write_seconds,
                    "total_seconds": total}, indent=2) + "\n"
    )  # fmt: skip
    click.echo(f"\n{table}\n\nshards written in {write_seconds:.1f} s; demo wall time {total:.1f} s")


if __name__ == "__main__":
    main()
