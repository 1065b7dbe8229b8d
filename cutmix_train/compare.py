"""``cutmix-train compare RECIPE.yaml --variant NAME:k=v[,k=v] ... --seeds N``: variants over seeds.

Every variant is the recipe plus its overrides; every variant runs with ``seed=F .. F+N-1``
(``--first-seed F``, 0 by default: choose a setting on seeds 1000+, report it on 0..N-1), so
run ``(variant, s)`` and ``(first variant, s)`` share what the seed decides (the data subset,
initial weights, data order) and their difference is *paired*. Runs go to a pool of ``--jobs``
processes, each training in-process what ``cutmix-train RECIPE overrides seed=s`` would, with
``run_name=<variant>-seed<s>`` and (unless an override says otherwise) no progress bar.

OUT holds one JSON file per finished run (``runs/<variant>-seed<s>.json``: the summary, the
resolved recipe and the eval history), written atomically, so a rerun with the same arguments
reuses every finished run and trains only the missing ones; a run whose resolved recipe changed
is trained again. Then the table (mean eval accuracy with its 95% t-interval per variant; the
paired gain of each variant over the first with its 95% interval), ``OUT/compare.json`` and
``OUT/compare.png``; the last stdout line is one JSON object with the headline numbers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from cutmix_train.stats import Interval, paired_difference, t_interval

__all__ = [
    "Run",
    "Variant",
    "compare",
    "parse_variant",
    "plot_comparison",
    "results_table",
    "run_overrides",
    "summarize_runs",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
# Overrides are split at the commas that start a new ``key=``, so values may hold commas
# (``scheduler.milestones=[0.5dur,0.75dur]``).
_NEXT_KEY = re.compile(r",(?=[A-Za-z_][A-Za-z0-9_.]*=)")
# Parallel runs print progress bars over each other; a comparison reports per run instead.
# Listed first, so a variant or a common override can turn them back on.
_DEFAULTS = ("logging.progress_bar=false",)


@dataclass(frozen=True)
class Variant:
    """One arm of a comparison: a name and the recipe overrides that make it.

    Attributes:
        name: the label in the table, the plot and the run files.
        overrides: ``key.sub=value`` entries; ``{seed}`` in a value becomes the run's seed.
    """

    name: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Run:
    """One training run of a comparison."""

    variant: str
    seed: int
    overrides: tuple[str, ...]

    @property
    def key(self) -> str:
        """The run's file stem under ``OUT/runs``."""
        return f"{self.variant}-seed{self.seed}"


def parse_variant(spec: str) -> Variant:
    """Parse ``NAME`` or ``NAME:key=value[,key=value...]``.

    Raises:
        ValueError: if the name is empty or unusable in a file name, or an override lacks ``=``.

    Example:
        >>> parse_variant("cutmix:algorithms.cutmix.enabled=true,algorithms.cutmix.alpha=0.5")
        Variant(name='cutmix', overrides=('algorithms.cutmix.enabled=true', 'algorithms.cutmix.alpha=0.5'))
    """
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not _NAME.match(name):
        raise ValueError(
            f"{spec!r}: expected NAME or NAME:key=value[,key=value], NAME made of letters, digits, _ . + -"
        )
    overrides = tuple(item.strip() for item in _NEXT_KEY.split(rest)) if rest.strip() else ()
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"{spec!r}: override {item!r} is not key=value")
        check_not_run_owned(item, spec)
    return Variant(name, overrides)


#: Keys compare sets for every run itself (see :func:`run_overrides`).
RUN_OWNED = ("seed", "run_name")


def check_not_run_owned(item: str, where: str) -> None:
    """Refuse an override of a key compare sets per run, which would be dropped without a word."""
    key = item.partition("=")[0].strip()
    if key in RUN_OWNED:
        raise ValueError(
            f"{where!r}: {key} is set by compare for every run (--first-seed and --seeds, run name "
            f"NAME-seedS) and cannot be overridden; use --seeds, or {{seed}} in another value"
        )


def run_overrides(common: Sequence[str], variant: Variant, seed: int) -> tuple[str, ...]:
    """The overrides of one run: defaults, the common ones, the variant's, then seed and run name.

    ``{seed}`` in any value becomes ``seed``; the seed and run name come last and always win
    (``compare`` refuses them in a variant or the shared overrides: :func:`check_not_run_owned`).
    """
    items = [*_DEFAULTS, *common, *variant.overrides]
    expanded = [item.replace("{seed}", str(seed)) for item in items]
    return (*expanded, f"seed={seed}", f"run_name={variant.name}-seed{seed}")


def _resolved(recipe: Path, overrides: Sequence[str]) -> str:
    from cutmix_train.config import load_recipe, to_yaml

    return to_yaml(load_recipe(recipe, list(overrides)))


def _train_images(trainer: Any, config: Any) -> int:
    """Images per pass over the training source: the unit of the eval history's epochs."""
    if config.data.dataset == "premixed":
        from writer import read_manifest

        manifest = read_manifest(config.data.remote or config.data.local)
        return int(manifest["source"]["num_images"])
    return len(trainer.state.train_dataloader.dataset)


def _worker_setup(threads: int) -> None:
    # Each run's summary is collected by the parent: stdout stays the table's and the JSON
    # line's, so anything a worker prints goes to stderr.
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import torch

    torch.set_num_threads(threads)


def train_run(recipe: str, overrides: tuple[str, ...]) -> dict[str, Any]:
    """Train one run in this process; its summary plus the eval history, or ``{"error": ...}``.

    The summary is what ``cutmix-train RECIPE overrides`` prints; ``eval_history`` lists every
    evaluation (``batch``, ``sample``, ``epoch`` = samples seen / training images, ``accuracy``).
    """
    try:
        from composer import Callback

        from cutmix_train.builder import build_trainer, is_complete, summarize
        from cutmix_train.config import load_recipe, to_yaml

        class EvalHistory(Callback):
            def __init__(self) -> None:
                self.points: list[dict[str, Any]] = []

            def eval_end(self, state: Any, logger: Any) -> None:
                metric = state.eval_metrics.get("eval", {}).get("MulticlassAccuracy")
                if metric is not None:
                    self.points.append(
                        {"batch": int(state.timestamp.batch), "sample": int(state.timestamp.sample),
                         "accuracy": round(float(metric.compute()), 6)}
                    )  # fmt: skip

        config = load_recipe(recipe, list(overrides))
        _set_aside_other_recipes_checkpoints(config)
        history = EvalHistory()
        trainer = build_trainer(config, callbacks=[history])
        images = _train_images(trainer, config)
        start = time.perf_counter()
        if is_complete(trainer):  # killed after its last checkpoint, before its JSON: evaluate it
            trainer.eval()
        else:
            trainer.fit()
        wall = time.perf_counter() - start
        result = summarize(trainer, config)
        trainer.close()
        result["wall_seconds"] = round(wall, 3)
        for point in history.points:
            point["epoch"] = round(point["sample"] / images, 4)
        result["train_images"] = images
        result["eval_history"] = history.points
        result["recipe_yaml"] = to_yaml(config)
        return result
    except Exception as e:  # the parent names the run; the traceback goes to a file
        message = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return {"error": f"{type(e).__name__}: {message}", "traceback": traceback.format_exc()}


def _set_aside_other_recipes_checkpoints(config: Any) -> None:
    """Move a run's checkpoint folder aside if another recipe saved it, so the run starts fresh.

    A run trains again when its variant changed; under autoresume it would otherwise continue the
    old variant's checkpoint. The folder goes to ``NAME.stale`` (replacing an older one there).
    """
    from cutmix_train.builder import checkpoint_folder, recorded_recipe, resume_source
    from cutmix_train.config import to_yaml

    source = resume_source(config)
    if source is None or source[0] != "checkpoint.autoresume":
        return
    resolved = to_yaml(config)
    recorded = recorded_recipe(source[1])
    if recorded is not None and (recorded == resolved or _in_todays_schema(recorded) == resolved):
        return
    folder = checkpoint_folder(config)
    assert folder is not None
    aside = folder.with_name(folder.name + ".stale")
    if aside.exists():
        shutil.rmtree(aside)
    os.replace(folder, aside)
    print(
        f"{config.run_name or config.name}: the checkpoints in {folder} were saved by "
        f"{'another recipe' if recorded else 'an unrecorded recipe'}; moved them to {aside} and "
        "training this run from the start", file=sys.stderr, flush=True,
    )


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    # Atomic: a killed comparison never leaves a half-written run that a rerun would trust.
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(json.dumps(payload, indent=2) + "\n")
    scratch.replace(path)


def _in_todays_schema(recipe_yaml: str) -> str | None:
    """A stored resolved recipe read with today's schema (keys added since take their defaults)."""
    from omegaconf import OmegaConf

    from cutmix_train.config import Recipe, to_yaml

    try:
        merged = OmegaConf.merge(OmegaConf.structured(Recipe), OmegaConf.create(recipe_yaml))
        return to_yaml(OmegaConf.to_object(merged))  # type: ignore[arg-type]
    except Exception:  # a key removed since, or a value today's schema refuses: not the same run
        return None


def _finished(path: Path, resolved: str) -> dict[str, Any] | None:
    """The stored result at ``path`` if it is a finished run of the recipe ``resolved``."""
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    stored = result.get("recipe_yaml")
    if not isinstance(stored, str) or result.get("eval_accuracy") is None:
        return None
    if stored != resolved and _in_todays_schema(stored) != resolved:
        return None
    return result


def _execute(recipe: Path, runs: list[Run], out: Path, jobs: int | None, resolved: dict[str, str]) -> dict[str, dict]:
    """Every run's result: reused from ``out/runs`` when finished, else trained in a pool (``jobs`` None: per core)."""
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    todo: list[Run] = []
    stale = 0
    for run in runs:
        path = runs_dir / f"{run.key}.json"
        done = _finished(path, resolved[run.key])
        if done is not None:
            results[run.key] = done
        else:
            stale += path.is_file()
            todo.append(run)
    if results:
        click.echo(f"reusing {len(results)} finished runs from {runs_dir}", err=True)
    if stale:
        click.echo(f"training {stale} runs again: their recipe changed since they ran", err=True)
    if not todo:
        return results
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    jobs = min(jobs or cores, len(todo))
    threads = int(os.environ.get("OMP_NUM_THREADS", 0)) or max(1, cores // jobs)
    click.echo(f"training {len(todo)} runs, {jobs} at a time, {threads} thread(s) each", err=True)
    import multiprocessing

    # spawn: a fresh interpreter per worker, whatever torch state this process holds
    context = multiprocessing.get_context("spawn")
    began = time.perf_counter()
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_worker_setup, initargs=(threads,))
    pending: dict[Future, Run] = {pool.submit(train_run, str(recipe), run.overrides): run for run in todo}
    finished = 0
    failure: str | None = None
    try:
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                run = pending.pop(future)
                if future.cancelled():
                    continue
                try:
                    result = future.result()
                except BrokenProcessPool:
                    result = {"error": "its worker process died (killed, or out of memory)", "traceback": ""}
                if "error" in result:
                    if failure is None:
                        error_path = runs_dir / f"{run.key}.error.txt"
                        error_path.write_text(result.get("traceback") or result["error"])
                        failure = f"run {run.key} failed: {result['error']} (traceback: {error_path})"
                        # Runs not started yet are dropped; those in flight finish and are kept.
                        for other in pending:
                            other.cancel()
                    continue
                results[run.key] = result
                _write_json(runs_dir / f"{run.key}.json", result)
                finished += 1
                click.echo(
                    f"[{finished}/{len(todo)}] {run.variant} seed {run.seed}: eval accuracy "
                    f"{result['eval_accuracy']:.4f} ({result['train_seconds']:.1f} s training, "
                    f"{time.perf_counter() - began:.0f} s elapsed)",
                    err=True,
                )
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if failure is not None:
        raise click.ClickException(f"{failure}; {len(results)} finished runs are kept in {runs_dir}")
    return results


def _interval_json(iv: Interval, digits: int = 6) -> dict[str, Any]:
    return {"mean": round(iv.mean, digits), "ci95": [round(iv.low, digits), round(iv.high, digits)], "n": iv.n,
            "sd": round(iv.sd, digits)}  # fmt: skip


def summarize_runs(variants: Sequence[Variant], seeds: Sequence[int], results: dict[str, dict]) -> dict[str, Any]:
    """Per-variant intervals and paired gains over the first variant, as a JSON-ready dict.

    Returns:
        dict: ``variants`` (name → mean, ci95, n, sd, per-seed ``accuracy``, mean
        ``train_seconds``) and ``paired_gain`` (name → mean, ci95, n, sd; every variant but the
        first).
    """
    accuracy: dict[str, dict[int, float]] = {
        v.name: {s: float(results[f"{v.name}-seed{s}"]["eval_accuracy"]) for s in seeds} for v in variants
    }
    out: dict[str, Any] = {"variants": {}, "paired_gain": {}}
    for v in variants:
        entry = _interval_json(t_interval(list(accuracy[v.name].values())))
        entry["accuracy"] = {str(s): a for s, a in accuracy[v.name].items()}
        seconds = [float(results[f"{v.name}-seed{s}"]["train_seconds"]) for s in seeds]
        entry["train_seconds"] = round(sum(seconds) / len(seconds), 3)
        out["variants"][v.name] = entry
    base = variants[0].name
    for v in variants[1:]:
        out["paired_gain"][v.name] = _interval_json(paired_difference(accuracy[base], accuracy[v.name]))
    return out


def results_table(summary: dict[str, Any], base: str) -> str:
    """A markdown table: per variant n, mean eval accuracy and its 95% CI, paired gain and its CI."""
    lines = [
        f"| variant | seeds | eval accuracy (mean) | 95% CI | sd | gain over {base} (paired) | 95% CI | train s/run |",
        "|---|---:|---:|---|---:|---:|---|---:|",
    ]
    for name, v in summary["variants"].items():
        gain = summary["paired_gain"].get(name)
        if gain is None:
            gain_cells = "—", "—"
        else:
            gain_cells = f"{gain['mean']:+.4f}", f"[{gain['ci95'][0]:+.4f}, {gain['ci95'][1]:+.4f}]"
        lines.append(
            f"| {name} | {v['n']} | {v['mean']:.4f} | [{v['ci95'][0]:.4f}, {v['ci95'][1]:.4f}] | {v['sd']:.4f} | "
            f"{gain_cells[0]} | {gain_cells[1]} | {v['train_seconds']:.1f} |"
        )
    return "\n".join(lines)


def plot_comparison(
    summary: dict[str, Any],
    histories: dict[str, list[list[dict[str, Any]]]],
    path: Path,
    title: str,
) -> Path:
    """Write the comparison's PNG: per-seed points with mean ± 95% CI for each variant, and
    mean eval accuracy against epochs (with its 95% band) when the runs evaluated more than once.

    Args:
        summary: :func:`summarize_runs`'s result.
        histories: per variant, each seed's eval history (points with ``epoch`` and ``accuracy``).
        path: the PNG to write.
        title: the figure's title.

    Returns:
        Path: ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    names = list(summary["variants"])
    curves = any(len(h) > 1 for runs in histories.values() for h in runs)
    fig, axes = plt.subplots(1, 2 if curves else 1, figsize=(11 if curves else 6, 4.2), squeeze=False)
    ax = axes[0][0]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    seeds = sorted({int(s) for v in summary["variants"].values() for s in v["accuracy"]})

    def x_of(i: int, k: int) -> float:  # seed k of variant i, spread a little so dots stay apart
        return i - 0.12 + 0.24 * k / max(1, len(seeds) - 1)

    # thin grey lines join each seed's runs: the pairing the gains are computed over
    for k, s in enumerate(seeds):
        ys = [summary["variants"][n]["accuracy"].get(str(s)) for n in names]
        ax.plot([x_of(i, k) for i in range(len(names))], ys, color="0.85", lw=0.8, zorder=1)
    for i, name in enumerate(names):
        v = summary["variants"][name]
        ys = [v["accuracy"][str(s)] for s in seeds]
        ax.scatter([x_of(i, k) for k in range(len(seeds))], ys, s=16, color=colors[i % len(colors)], alpha=0.7,
                   zorder=2)  # fmt: skip
        ax.errorbar([i + 0.25], [v["mean"]], yerr=[[v["mean"] - v["ci95"][0]], [v["ci95"][1] - v["mean"]]],
                    fmt="o", color="black", capsize=4, zorder=3)  # fmt: skip
    ax.set_xticks(range(len(names)), names)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_ylabel("eval accuracy")
    ax.set_title(f"per seed (dots), mean ± 95% CI (black); n = {len(seeds)}", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    if curves:
        ax2 = axes[0][1]
        for i, name in enumerate(names):
            runs = histories.get(name, [])
            length = min((len(h) for h in runs), default=0)
            if length == 0:
                continue
            epochs = [runs[0][k]["epoch"] for k in range(length)]
            means, lows, highs = [], [], []
            for k in range(length):
                column = [h[k]["accuracy"] for h in runs]
                iv = t_interval(column) if len(column) >= 2 else Interval(column[0], column[0], column[0], 1, 0.0)
                means.append(iv.mean)
                lows.append(iv.low)
                highs.append(iv.high)
            color = colors[i % len(colors)]
            ax2.plot(epochs, means, marker=".", color=color, label=name)
            ax2.fill_between(epochs, lows, highs, color=color, alpha=0.15)
        ax2.set_xlabel("epochs (samples seen / training images)")
        ax2.set_ylabel("eval accuracy")
        ax2.set_title("mean over seeds, 95% CI band", fontsize=9)
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _parse_variants(specs: Sequence[str]) -> list[Variant]:
    variants = []
    for spec in specs:
        try:
            variants.append(parse_variant(spec))
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="'--variant'") from None
    names = [v.name for v in variants]
    if len(variants) < 2:
        raise click.BadParameter("give at least two variants to compare", param_hint="'--variant'")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise click.BadParameter(f"variant names must be unique; repeated: {', '.join(duplicates)}",
                                 param_hint="'--variant'")  # fmt: skip
    return variants


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("recipe", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("overrides", nargs=-1, metavar="[KEY.SUB=VALUE]...")
@click.option(
    "--variant",
    "variant_specs",
    multiple=True,
    required=True,
    metavar="NAME[:K=V[,K=V]]",
    help="An arm: the recipe plus these overrides ({seed} in a value becomes the run's seed). "
    "Repeat; the first is the reference for the paired gains.",
)
@click.option("--seeds", type=click.IntRange(min=2), required=True, help="Run N seeds for every variant.")
@click.option(
    "--first-seed",
    type=click.IntRange(min=0, max=2**31),
    default=0,
    show_default=True,
    help="Seeds are F..F+N-1: keep 0.. for reported results and choose settings on others (1000..).",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Runs trained at once, each in its own process [default: the CPU cores available].",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("compare_out"),
    show_default=True,
    help="Where runs/, compare.json and compare.png go; finished runs there are reused.",
)
def compare(
    recipe: Path,
    overrides: tuple[str, ...],
    variant_specs: tuple[str, ...],
    seeds: int,
    first_seed: int,
    jobs: int | None,
    out: Path,
) -> None:
    """Train every variant of RECIPE for seeds F..F+N-1 (--first-seed F) and compare their eval accuracy.

    OVERRIDES apply to every variant, before the variant's own. Prints a table (mean eval
    accuracy with its 95% t-interval per variant; the paired gain of each variant over the first,
    seed by seed, with its 95% interval), writes OUT/compare.json and OUT/compare.png, and prints
    one JSON object as the last stdout line: {"variants": {NAME: {"mean", "ci95", "n"}},
    "paired_gain": {NAME: {"mean", "ci95"}}, "png": PATH}. A failed run stops the comparison;
    rerunning the same command reuses the runs that finished.
    """
    from cutmix_train.config import RecipeError

    variants = _parse_variants(variant_specs)
    for item in overrides:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} is not key.sub=value", param_hint="OVERRIDES")
        try:
            check_not_run_owned(item, item)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="OVERRIDES") from None
    seed_list = list(range(first_seed, first_seed + seeds))
    runs = [Run(v.name, s, run_overrides(overrides, v, s)) for v in variants for s in seed_list]
    # Every run's recipe is checked before any trains: a bad variant fails now, by name.
    resolved: dict[str, str] = {}
    for run in runs:
        try:
            resolved[run.key] = _resolved(recipe, run.overrides)
        except RecipeError as e:
            raise click.ClickException(f"variant {run.variant} (seed {run.seed}): {e}") from None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise click.ClickException(f"--out: cannot create {out}: {e}") from None
    results = _execute(recipe, runs, out, jobs, resolved)

    summary = summarize_runs(variants, seed_list, results)
    histories = {v.name: [results[f"{v.name}-seed{s}"].get("eval_history", []) for s in seed_list] for v in variants}
    png = plot_comparison(summary, histories, out / "compare.png", f"{recipe.name}: {len(seed_list)} seeds per variant")
    report = {
        "recipe": str(recipe),
        "overrides": list(overrides),
        "seeds": seed_list,
        "variant_overrides": {v.name: list(v.overrides) for v in variants},
        **summary,
        "runs": {r.key: str(out / "runs" / f"{r.key}.json") for r in runs},
        "png": str(png),
    }
    _write_json(out / "compare.json", report)
    click.echo(results_table(summary, variants[0].name))
    click.echo(f"\nwrote {out / 'compare.json'} and {png}")
    line = {
        "variants": {n: {"mean": v["mean"], "ci95": v["ci95"], "n": v["n"]} for n, v in summary["variants"].items()},
        "paired_gain": {n: {"mean": g["mean"], "ci95": g["ci95"]} for n, g in summary["paired_gain"].items()},
        "png": str(png),
    }
    click.echo(json.dumps(line))


if __name__ == "__main__":
    compare()
