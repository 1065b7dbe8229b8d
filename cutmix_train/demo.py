"""The end-to-end demo (``make demo``): does CutMix help? Four arms over seeds, paired by seed.

On the demo recipe (``recipes/digits_demo.yaml``: ResNet-8 on 5 training images per class of
scikit-learn's digits at 16×16, 100 epochs; its header says how that regime was chosen, on seeds
1000+ that the demo never reports), for every seed ``s`` in ``0..N-1``:

1. the seed's training subset (``data.train_per_class`` images of each class, drawn from the
   run's seed, exactly as the online runs draw it) is cropped once per epoch with the recipe's
   augmentation and stored as an MDS dataset of ``epochs × subset`` images; ``cutmix-writer
   write`` pre-mixes it (one pass, the online run's α and batch size, seed ``s``) and
   ``cutmix-writer verify`` checks the shards. The crop thus comes *before* the mix, as online,
   where :class:`~cutmix_train.augment.DeviceAugment` runs ahead of CutMix (the writer shuffles
   the epochs' crops together: a batch may rarely hold two crops of one image);
2. ``cutmix-train compare`` trains four arms for every seed, two at a time: the baseline (no
   CutMix), the baseline at the weight decay chosen for it on the selection seeds
   (:data:`FAIR_BASELINE`), online CutMix, and pre-mixed CutMix (one pass over the seed's shards,
   no augmentation at training time: as many samples, the same schedule).

It prints the comparison's table, one sentence per question generated from the intervals
(resolved or not), writes the plot (per-seed dots joined by seed, means with 95% intervals,
accuracy against epochs) and ends with one JSON line: ``variants`` (``mean``, ``ci95``, ``n``),
``paired_gain`` per arm over the baseline, the CutMix arms over the tuned baseline, ``png``.

The writer runs in this process, through its click commands (the lines a user would type are
printed); the comparison is a subprocess, ``cutmix-train compare ...`` as printed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

__all__ = ["FAIR_BASELINE", "main", "verdict", "write_subset_source"]

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "digits_demo.yaml"
SEEDS = 16
#: The baseline's own best weight decay: the best mean of the grid 5e-4 (the recipe's), 1e-3,
#: 2e-3, 5e-3, 1e-2 on selection seeds 1000..1011 (procedure and numbers: docs/demo.md).
FAIR_BASELINE = "optimizer.weight_decay=2e-3"
#: The time budget ``make demo`` is held to on a 2-core machine.
BUDGET_SECONDS = 240
#: The fraction of each seed's shards that verify recomputes from the source (it checks every hash).
VERIFY_SAMPLE = 0.2
#: The crops of epoch ``e`` of seed ``s`` come from ``derive_generator(s, e, CROP_KEY, AUGMENT_STREAM)``:
#: a batch number that never occurs, so no online or writer draw shares the stream.
CROP_KEY = 2**32 - 3


def write_subset_source(
    out: Path,
    per_class: int,
    seed: int,
    image_size: int = 32,
    epochs: int = 1,
    pad: int = 0,
    hflip: bool = False,
) -> int:
    """Store the digits training subset a run with ``seed`` trains on as an MDS dataset at ``out``.

    The subset is :func:`cutmix_train.data.train_subset` of the digits train split at
    ``image_size``, in source order. With ``epochs > 1`` it is stored ``epochs`` times (epoch by
    epoch), each copy cropped and flipped afresh by :func:`cutmix_train.augment.random_crop_flip`
    (``pad``, ``hflip``), so one pre-mixed pass over it is ``epochs`` augmented epochs whose crops
    come before the mix. With ``pad=0`` and ``hflip=False`` the images are stored untouched.

    Returns:
        int: the number of images written (``epochs × subset``).
    """
    import torch
    from streaming import MDSWriter

    from cutmix_algo.sampling import AUGMENT_STREAM, derive_generator
    from cutmix_train.augment import random_crop_flip
    from cutmix_train.data import train_subset
    from writer import load_digits

    subset = train_subset(load_digits("train", image_size), per_class, seed)
    if out.exists():
        shutil.rmtree(out)
    height, width, channels = subset.images.shape[1:]
    columns = {"image": f"ndarray:uint8:{height},{width},{channels}", "label": "int"}
    nchw = torch.from_numpy(subset.images).permute(0, 3, 1, 2)
    with MDSWriter(out=str(out), columns=columns) as mds:
        for epoch in range(epochs):
            images = nchw
            if pad or hflip:
                generator = derive_generator(seed, epoch, CROP_KEY, AUGMENT_STREAM)
                images = random_crop_flip(nchw, pad, hflip, generator)
            for image, label in zip(images.permute(0, 2, 3, 1).numpy(), subset.labels, strict=True):
                mds.write({"image": image, "label": int(label)})
    return epochs * len(subset)


def _writer(args: list[str]) -> None:
    """Run one ``cutmix-writer`` command in this process; a failure stops the demo."""
    from writer.cli import main as writer_main

    click.echo(f"$ cutmix-writer {' '.join(args)}", err=True)
    try:
        writer_main.main(args, prog_name="cutmix-writer", standalone_mode=False)
    except click.ClickException as e:
        raise click.ClickException(f"cutmix-writer {args[0]} failed: {e.format_message()}") from None


def _premix(out: Path, config: Any, seeds: int) -> float:
    """Write and verify every seed's pre-mixed shards (crops before the mix); the seconds it took."""
    data, train = config.data, config.train
    augment = data.augment
    epochs = int(train.max_duration[: -len("ep")])
    start = time.perf_counter()
    for seed in range(seeds):
        source = out / "sources" / f"seed{seed}"
        images = write_subset_source(
            source, data.train_per_class, seed, data.image_size, epochs,
            pad=augment.pad if augment.enabled else 0, hflip=augment.enabled and augment.hflip,
        )  # fmt: skip
        if (images // epochs) % train.batch_size:
            raise click.ClickException(
                f"train.batch_size: {train.batch_size} does not divide the {images // epochs} training images; "
                "the online loader drops the last short batch and the shards keep it, so they would differ"
            )
        shards = out / "premixed" / f"seed{seed}"
        _writer(["write", "--source", f"mds:{source}", "--split", "train", "--out", str(shards),
                 "--alpha", str(config.algorithms.cutmix.alpha), "--batch-size", str(train.batch_size),
                 "--epochs", "1", "--seed", str(seed), "--workers", "1", "--no-progress", "--overwrite"])  # fmt: skip
        _writer(["verify", str(shards), "--source", f"mds:{source}", "--split", "train", "--sample", str(VERIFY_SAMPLE),
                 "--no-progress"])  # fmt: skip
    return time.perf_counter() - start


def verdict(name: str, iv: dict[str, Any], per_seed: list[float], reference: str) -> str:
    """One sentence on a paired gain, generated from its numbers: resolved or not, and how often.

    Example:
        >>> verdict("online", {"mean": 0.05, "ci95": [0.02, 0.08], "n": 8}, [0.05] * 8, "baseline")[-61:]
        'over 8 seeds: resolved, better (8 of 8 seeds higher, 0 lower)'
    """
    low, high = iv["ci95"]
    higher = sum(d > 0 for d in per_seed)
    lower = sum(d < 0 for d in per_seed)
    if low > 0 or high < 0:
        call = f"resolved, {'better' if low > 0 else 'worse'}"
    else:
        call = "not resolved (the interval includes zero)"
    return (
        f"{name} - {reference}: {iv['mean']:+.4f}, 95% CI [{low:+.4f}, {high:+.4f}] over {iv['n']} seeds: "
        f"{call} ({higher} of {len(per_seed)} seeds higher, {lower} lower)"
    )


def _paired(accuracy: dict[str, dict[str, float]], base: str, other: str) -> tuple[dict[str, Any], list[float]]:
    from cutmix_train.stats import paired_difference

    seeds = sorted(accuracy[base], key=int)
    iv = paired_difference({int(s): accuracy[base][s] for s in seeds}, {int(s): accuracy[other][s] for s in seeds})
    entry = {"mean": round(iv.mean, 6), "ci95": [round(iv.low, 6), round(iv.high, 6)], "n": iv.n}
    return entry, [accuracy[other][s] - accuracy[base][s] for s in seeds]


def _plot(report: dict[str, Any], subset_images: int, path: Path, title: str) -> Path:
    """The demo's plot, epochs counted in passes over the seed's subset for every arm alike."""
    from cutmix_train.compare import plot_comparison

    histories: dict[str, list[list[dict[str, Any]]]] = {}
    for name in report["variants"]:
        runs = []
        for seed in report["seeds"]:
            history = json.loads(Path(report["runs"][f"{name}-seed{seed}"]).read_text()).get("eval_history", [])
            runs.append([{**p, "epoch": round(p["sample"] / subset_images, 3)} for p in history])
        histories[name] = runs
    return plot_comparison(report, histories, path, title)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("demo_out"),
    show_default=True,
    help="Where the sources, shards, runs, compare.json and demo.png go.",
)
@click.option(
    "--recipe",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=RECIPE,
    show_default=True,
    help="A digits recipe with data.train_per_class and train.max_duration in epochs.",
)
@click.option("--seeds", type=click.IntRange(min=2), default=SEEDS, show_default=True, help="Seeds 0..N-1 per arm.")
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="Runs at once [default: the CPU cores].")
@click.option(
    "--fair-baseline",
    default=FAIR_BASELINE,
    show_default=True,
    help="The overrides (k=v[,k=v]) of the baseline at its own best setting.",
)
@click.option("--resume", is_flag=True, help="Reuse the finished runs in OUT instead of starting afresh.")
@click.option(
    "--png",
    "png_copy",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also copy the plot here (how docs/demo_compare.png is made).",
)
def main(
    out: Path, recipe: Path, seeds: int, jobs: int | None, fair_baseline: str, resume: bool, png_copy: Path | None
) -> None:
    """Write + verify pre-mixed shards, then compare baseline, tuned baseline, online and pre-mixed CutMix."""
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
    online = "online:algorithms.cutmix.enabled=true"
    premixed = (
        "premixed:data.dataset=premixed,data.local=" + str(out / "premixed" / "seed{seed}")
        + ",data.eval_dataset=digits,data.train_per_class=null,algorithms.cutmix.enabled=false,"
        "data.augment.enabled=false,train.max_duration=1ep"
    )  # fmt: skip
    in_memory = ["--variant", "baseline", "--variant", f"baseline-wd:{fair_baseline}", "--variant", online]

    def compare_command(variants: list[str]) -> list[str]:
        command = [sys.executable, "-m", "cutmix_train.cli", "compare", str(recipe), *variants]
        command += ["--seeds", str(seeds), "--out", str(out / "compare")]
        if jobs is not None:
            command += ["--jobs", str(jobs)]
        click.echo(f"\n$ cutmix-train {' '.join(command[3:])}", err=True)
        return command

    # The writer is one process: the in-memory arms train beside it on the other core, and the
    # full comparison then reuses their runs and trains only the pre-mixed arm.
    compare_began = time.perf_counter()
    # its own session: a failed write (or Ctrl-C here) stops it with its pool, as one group
    early = subprocess.Popen(compare_command(in_memory), stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        premix_seconds = _premix(out, config, seeds)
    except BaseException:
        if early.poll() is None:
            os.killpg(early.pid, signal.SIGTERM)
        early.wait()
        raise
    early.wait()
    if early.returncode != 0:
        raise click.ClickException(f"cutmix-train compare failed with exit status {early.returncode}")
    result = subprocess.run(compare_command([*in_memory, "--variant", premixed]), stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        sys.stdout.write(result.stdout)
        raise click.ClickException(f"cutmix-train compare failed with exit status {result.returncode}")
    compare_seconds = time.perf_counter() - compare_began
    report = json.loads((out / "compare" / "compare.json").read_text())
    accuracy = {name: v["accuracy"] for name, v in report["variants"].items()}

    data = config.data
    setting = (
        f"{config.model.name} on {data.train_per_class} digits per class at {data.image_size}x{data.image_size}, "
        f"{config.train.max_duration}, seeds 0..{seeds - 1}"
    )
    subset = data.train_per_class * 10  # images per epoch: the digits have 10 classes
    png = _plot(report, subset, out / "demo.png", f"{recipe.name}: {setting}")
    shown = str(png)
    if png_copy is not None:
        png_copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, png_copy)
        shown = f"{png} (copied to {png_copy})"

    gains: dict[str, dict[str, Any]] = {}
    sentences = []
    questions = (("online", "baseline"), ("premixed", "baseline"), ("baseline-wd", "baseline"),
                 ("online", "baseline-wd"), ("premixed", "baseline-wd"), ("premixed", "online"))  # fmt: skip
    for name, reference in questions:
        entry, per_seed = _paired(accuracy, reference, name)
        gains[f"{name} - {reference}"] = entry
        sentences.append(verdict(name, entry, per_seed, reference))
    lows = [gains[f"{arm} - baseline"]["ci95"][0] for arm in ("online", "premixed")]
    highs = [gains[f"{arm} - baseline"]["ci95"][1] for arm in ("online", "premixed")]
    fair = all(gains[f"{arm} - baseline-wd"]["ci95"][0] > 0 for arm in ("online", "premixed"))
    if min(lows) > 0:
        answer = "CutMix helps here: both arms beat the baseline" + (
            " and the baseline at its tuned weight decay, with intervals excluding zero." if fair
            else "; against the tuned baseline not every interval excludes zero (see above)."
        )  # fmt: skip
    elif max(highs) < 0:
        answer = "CutMix hurts here: both arms fall below the baseline, with intervals excluding zero."
    else:
        answer = "Not resolved: the two CutMix arms do not both differ from the baseline with intervals excluding zero."
    total = time.perf_counter() - began
    lines = [line for line in result.stdout.splitlines() if line.startswith("|")]
    click.echo(
        f"\n{setting}; eval on the 360 test images; baseline-wd = baseline with {fair_baseline}\n\n"
        + "\n".join(lines) + "\n\n" + "\n".join(sentences) + f"\n\n{answer}\n"
        f"plot: {shown}\n"
        f"demo wall time {total:.0f} s (budget {BUDGET_SECONDS} s; shards written and verified in "
        f"{premix_seconds:.0f} s while the in-memory arms trained, comparison {compare_seconds:.0f} s in all)"
    )  # fmt: skip
    headline = {
        "variants": {n: {"mean": v["mean"], "ci95": v["ci95"], "n": v["n"]} for n, v in report["variants"].items()},
        "paired_gain": {n: gains[f"{n} - baseline"] for n in report["paired_gain"]},
        "over_tuned_baseline": {n: gains[f"{n} - baseline-wd"] for n in ("online", "premixed")},
        "premixed_minus_online": gains["premixed - online"],
        "png": str(png),
        "wall_seconds": round(total, 1),
    }
    click.echo(json.dumps(headline))


if __name__ == "__main__":
    main()
