"""The end-to-end demo (``make demo``): does CutMix help? Baseline, online and pre-mixed, over seeds.

On the low-data digits recipe (``recipes/digits_lowdata.yaml``: ResNet-20 on 10 training images
per class), for every seed ``s`` in ``0..N-1``:

1. the seed's training subset (``data.train_per_class`` images of each class, drawn from the
   run's seed, exactly as the online runs draw it) is stored as an unmixed MDS dataset, and
   ``cutmix-writer write`` pre-mixes it into shards holding every epoch the online run trains,
   with the online run's α, batch size and seed; ``cutmix-writer verify`` checks them;
2. ``cutmix-train compare`` then trains three variants for every seed, two at a time: the
   baseline (no CutMix), online CutMix, and the same recipe over the seed's pre-mixed shards
   (one pass over them is as many samples, with the same schedule, as the online run sees).

It ends with the comparison's table (mean eval accuracy with its 95% interval, and each
variant's paired gain over the baseline), the pre-mixed-minus-online difference (the same data
semantics through a different pipeline, so it should straddle zero) and the PNG's path.

The writer runs in this process, through its click commands (the lines a user would type are
printed); the comparison is a subprocess, ``cutmix-train compare ...`` as printed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

__all__ = ["main", "write_subset_source"]

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "digits_lowdata.yaml"
SEEDS = 5


def write_subset_source(out: Path, per_class: int, seed: int) -> int:
    """Store the digits training subset a run with ``seed`` trains on as an MDS dataset at ``out``.

    The subset is :func:`cutmix_train.data.train_subset` of the digits train split, in source
    order, so ``cutmix-writer write --source mds:OUT`` mixes exactly the online run's images.

    Returns:
        int: the number of images written.
    """
    from streaming import MDSWriter

    from cutmix_train.data import train_subset
    from writer.pipeline.sources import load_digits

    subset = train_subset(load_digits("train"), per_class, seed)
    if out.exists():
        shutil.rmtree(out)
    height, width, channels = subset.images.shape[1:]
    columns = {"image": f"ndarray:uint8:{height},{width},{channels}", "label": "int"}
    with MDSWriter(out=str(out), columns=columns) as writer:
        for image, label in zip(subset.images, subset.labels, strict=True):
            writer.write({"image": image, "label": int(label)})
    return len(subset)


def _writer(args: list[str]) -> None:
    """Run one ``cutmix-writer`` command in this process; a failure stops the demo."""
    from writer.cli import main as writer_main

    click.echo(f"$ cutmix-writer {' '.join(args)}", err=True)
    try:
        writer_main.main(args, prog_name="cutmix-writer", standalone_mode=False)
    except click.ClickException as e:
        raise click.ClickException(f"cutmix-writer {args[0]} failed: {e.format_message()}") from None


def _premix(out: Path, config: object, seeds: int) -> float:
    """Write and verify every seed's pre-mixed shards; the seconds it took."""
    data, train = config.data, config.train  # type: ignore[attr-defined]
    alpha = config.algorithms.cutmix.alpha  # type: ignore[attr-defined]
    epochs = int(train.max_duration[: -len("ep")])
    start = time.perf_counter()
    for seed in range(seeds):
        source = out / "sources" / f"seed{seed}"
        images = write_subset_source(source, data.train_per_class, seed)
        if images % train.batch_size:
            raise click.ClickException(
                f"train.batch_size: {train.batch_size} does not divide the {images} training images; the "
                "online loader drops the last short batch and the shards keep it, so they would differ"
            )
        shards = out / "premixed" / f"seed{seed}"
        _writer(["write", "--source", f"mds:{source}", "--split", "train", "--out", str(shards),
                 "--alpha", str(alpha), "--batch-size", str(train.batch_size), "--epochs", str(epochs),
                 "--seed", str(seed), "--workers", "1", "--no-progress", "--overwrite"])  # fmt: skip
        _writer(["verify", str(shards), "--source", f"mds:{source}", "--split", "train"])
    return time.perf_counter() - start


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("demo_out"),
    show_default=True,
    help="Where the shards, runs, compare.json and compare.png go.",
)
@click.option(
    "--recipe",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=RECIPE,
    show_default=True,
    help="A digits recipe with data.train_per_class and train.max_duration in epochs.",
)
@click.option("--seeds", type=click.IntRange(min=2), default=SEEDS, show_default=True, help="Seeds per variant.")
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="Runs at once [default: the CPU cores].")
@click.option("--resume", is_flag=True, help="Reuse the finished runs in OUT instead of starting afresh.")
@click.option(
    "--png",
    "png_copy",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also copy the plot here (how docs/demo_compare.png is made).",
)
def main(out: Path, recipe: Path, seeds: int, jobs: int | None, resume: bool, png_copy: Path | None) -> None:
    """Write + verify pre-mixed shards, then compare baseline, online and pre-mixed CutMix over seeds."""
    from cutmix_train.config import RecipeError, load_recipe

    began = time.perf_counter()
    try:
        config = load_recipe(recipe)
    except RecipeError as e:
        raise click.ClickException(str(e)) from None
    if (
        config.data.dataset != "digits"
        or config.data.train_per_class is None
        or config.data.subset_seed is not None
        or not config.train.max_duration.endswith("ep")
    ):
        raise click.ClickException(
            f"{recipe}: the demo needs a digits recipe with data.train_per_class set, data.subset_seed "
            "unset (the subset follows the seed) and train.max_duration in epochs"
        )
    if not resume and (out / "compare").exists():
        shutil.rmtree(out / "compare")  # the demo's own results: a fresh measurement each time
    premix_seconds = _premix(out, config, seeds)

    online = "online:algorithms.cutmix.enabled=true"
    premixed = (
        "premixed:data.dataset=premixed,data.local=" + str(out / "premixed" / "seed{seed}")
        + ",data.eval_dataset=digits,data.train_per_class=null,algorithms.cutmix.enabled=false,"
        "train.max_duration=1ep"
    )  # fmt: skip
    variants = ["--variant", "baseline", "--variant", online, "--variant", premixed]
    command = [sys.executable, "-m", "cutmix_train.cli", "compare", str(recipe), *variants, "--seeds", str(seeds)]
    command += ["--out", str(out / "compare")]
    if jobs is not None:
        command += ["--jobs", str(jobs)]
    click.echo(f"\n$ cutmix-train {' '.join(command[3:])}", err=True)
    compare_began = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        sys.stdout.write(result.stdout)
        raise click.ClickException(f"cutmix-train compare failed with exit status {result.returncode}")
    compare_seconds = time.perf_counter() - compare_began
    lines = result.stdout.strip().splitlines()
    headline = json.loads(lines[-1])
    report = json.loads((out / "compare" / "compare.json").read_text())

    from cutmix_train.stats import paired_difference

    accuracy = report["variants"]
    same = paired_difference(
        {int(s): a for s, a in accuracy["online"]["accuracy"].items()},
        {int(s): a for s, a in accuracy["premixed"]["accuracy"].items()},
    )
    png = headline["png"]
    if png_copy is not None:
        png_copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, png_copy)
        png = f"{png} (copied to {png_copy})"
    total = time.perf_counter() - began
    table = "\n".join(line for line in lines[:-1] if line.startswith("|"))
    click.echo(
        f"\n{config.data.train_per_class} training images per class, {config.train.max_duration}, "
        f"seeds 0..{seeds - 1}; eval on the 360 test images\n\n{table}\n\n"
        f"premixed - online (paired): {same.mean:+.4f}, 95% CI [{same.low:+.4f}, {same.high:+.4f}] "
        "(same data semantics, different pipeline)\n"
        f"plot: {png}\n"
        f"demo wall time {total:.0f} s (shards written and verified in {premix_seconds:.0f} s, "
        f"comparison {compare_seconds:.0f} s)"
    )


if __name__ == "__main__":
    main()
