"""Trainer assembly: a validated recipe in, a ready Composer ``Trainer`` out, and its summary.

Everything that can fail on a bad recipe (names, files, data, the checkpoint folder) fails here,
before training: the data is opened and the model built before the Trainer, and no batch is drawn
until ``fit``.
"""

from __future__ import annotations

import math
import os
import re
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from composer import Trainer
from composer.core import Algorithm, Callback, Time, TimeUnit
from composer.loggers import FileLogger, LoggerDestination, ProgressBarLogger
from composer.optim import (
    ConstantScheduler,
    ConstantWithWarmupScheduler,
    CosineAnnealingScheduler,
    CosineAnnealingWithWarmupScheduler,
    DecoupledSGDW,
    MultiStepScheduler,
    MultiStepWithWarmupScheduler,
)
from composer.utils import dist, format_name_with_dist, reproducibility

from cutmix_algo import CutMix
from cutmix_train.augment import DeviceAugment, augment_before_mixing
from cutmix_train.config import OptimizerConfig, Recipe, RecipeError, SchedulerConfig, check_pad, to_yaml
from cutmix_train.data import DataBundle, build_data
from cutmix_train.models import InputNormalize, build_model

__all__ = [
    "LATEST_CHECKPOINT",
    "RecipeRecord",
    "SUMMARY_NAME",
    "build_algorithms",
    "build_optimizer",
    "build_scheduler",
    "build_trainer",
    "checkpoint_folder",
    "is_complete",
    "progress",
    "recorded_recipe",
    "resolve_device",
    "resolve_precision",
    "resume_source",
    "resumed_from",
    "summarize",
    "warmup_time",
]

# Composer's default checkpoint names (the recipe schema does not change them): one file per save,
# and a symlink to the newest, which autoresume loads.
LATEST_CHECKPOINT = "latest-rank0.pt"
_CHECKPOINT_FILE = re.compile(r"^ep(\d+)-ba(\d+)-rank0\.pt$")
# The finished run's summary, kept next to its checkpoints so that a rerun can report it.
SUMMARY_NAME = "cutmix-summary.json"


def resolve_device(name: str) -> str:
    """``auto`` becomes ``gpu`` when CUDA is available, else ``cpu``; a GPU asked for must exist."""
    if name == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if name == "gpu" and not torch.cuda.is_available():
        raise RecipeError("device: 'gpu' requested but no CUDA device is available")
    return name


def resolve_precision(name: str, device: str) -> str:
    """``auto`` is ``amp_bf16`` on a GPU and ``fp32`` on the CPU, where AMP is not supported."""
    if name == "auto":
        return "amp_bf16" if device == "gpu" else "fp32"
    if device == "cpu" and name != "fp32":
        raise RecipeError(f"precision: {name!r} needs a GPU; use fp32 (or auto) on the CPU")
    return name


def build_optimizer(cfg: OptimizerConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The recipe's optimizer over all of ``model``'s parameters."""
    params = model.parameters()
    if cfg.name in ("sgd", "decoupled_sgdw"):
        # torch's SGD couples weight decay to the gradient, as He et al. trained; DecoupledSGDW does not.
        sgd = torch.optim.SGD if cfg.name == "sgd" else DecoupledSGDW
        return sgd(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def warmup_time(warmup: str, max_duration: str, batches_per_epoch: int | None) -> str:
    """A warmup given as a fraction of the run (``dur``), in the unit Composer counts it in.

    Composer converts ``0.1dur`` to ``int(0.1 * length)`` in the run's unit (batches for a run in
    epochs), so on a short run a positive fraction truncated to 0 and the warmup vanished, with a
    warning every step. The same conversion here, but never below one unit. Other warmups, and a
    fraction of a run in epochs whose epoch length is unknown, are returned as given.
    """
    time = Time.from_timestring(warmup)
    if time.unit != TimeUnit.DURATION or time.value == 0:
        return warmup
    run = Time.from_timestring(max_duration)
    if run.unit == TimeUnit.EPOCH:
        if batches_per_epoch is None:
            return warmup
        return f"{max(1, int(time.value * batches_per_epoch * run.value))}ba"  # Composer's arithmetic
    return f"{max(1, int(time.value * run.value))}{run.unit.value}"


def build_scheduler(cfg: SchedulerConfig, max_duration: str | None = None, batches_per_epoch: int | None = None) -> Any:
    """The recipe's learning-rate schedule as a Composer scheduler (stepped every batch).

    Given the run's ``max_duration`` (and, for a run in epochs, its batches per epoch), a warmup
    in ``dur`` is converted by :func:`warmup_time`.
    """
    t_warmup = cfg.warmup if max_duration is None else warmup_time(cfg.warmup, max_duration, batches_per_epoch)
    # The warmup variants warn on every step when warmup is zero: use the plain ones then.
    warmup = Time.from_timestring(t_warmup).value > 0
    if cfg.name == "multistep":
        milestones = list(cfg.milestones)
        if warmup:
            return MultiStepWithWarmupScheduler(t_warmup=t_warmup, milestones=milestones, gamma=cfg.gamma)
        return MultiStepScheduler(milestones=milestones, gamma=cfg.gamma)
    if cfg.name == "cosine":
        if warmup:
            return CosineAnnealingWithWarmupScheduler(t_warmup=t_warmup, alpha_f=cfg.alpha_f)
        return CosineAnnealingScheduler(alpha_f=cfg.alpha_f)
    if warmup:
        return ConstantWithWarmupScheduler(t_warmup=t_warmup)
    return ConstantScheduler()


def build_algorithms(recipe: Recipe, data: DataBundle) -> list[Algorithm]:
    """On-device augmentation (if enabled) and online CutMix (if enabled), in that order."""
    algorithms: list[Algorithm] = []
    augment = recipe.data.augment
    if augment.enabled:
        algorithms.append(DeviceAugment(pad=augment.pad, hflip=augment.hflip))
    cutmix = recipe.algorithms.cutmix
    if cutmix.enabled:
        algorithms.append(
            CutMix(
                **cutmix.options(),
                num_classes=data.num_classes,
                # ImageBatchDataset.__getitems__ index_selects a fresh batch and DeviceAugment
                # writes a new one: the batch is never the dataset's memory.
                inplace=True,
            )
        )
    return algorithms


def _loggers(recipe: Recipe) -> list[LoggerDestination]:
    """The recipe's log destinations: a file, TensorBoard, MLflow's local file store.

    Each receives every metric the run logs (``cutmix/lambda`` per batch, the loss, the eval
    metrics) through Composer's own logger for it.
    """
    cfg = recipe.logging
    loggers: list[LoggerDestination] = []
    if cfg.file:
        # stdout/stderr stay out of the file: the progress bar would flood it.
        loggers.append(FileLogger(filename=cfg.file, capture_stdout=False, capture_stderr=False, overwrite=True))
    if cfg.tensorboard:
        from composer.loggers import TensorboardLogger

        # event files go to DIR/<run_name>/, flushed every 10 batches and at the end
        loggers.append(TensorboardLogger(log_dir=cfg.tensorboard, flush_interval=10))
    if cfg.mlflow:
        from composer.loggers import MLFlowLogger

        loggers.append(
            MLFlowLogger(
                experiment_name=recipe.name,
                run_name=recipe.run_name or recipe.name,
                tracking_uri=Path(cfg.mlflow).absolute().as_uri(),  # the local file store
                log_system_metrics=False,  # would sample CPU/GPU in a thread; not a run's metric
                synchronous=True,  # every metric is on disk when the run ends
            )
        )
    return loggers


def _share_cpu_threads(device: str) -> None:
    # Several ranks on one CPU each default to all cores; oversubscribed threads spin and stall.
    local_world = dist.get_local_world_size()
    if device == "cpu" and local_world > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))


def _say(line: str) -> None:
    # What the user must know (a fallback, what the shards hold) goes to stderr, from rank 0 only.
    if dist.get_global_rank() == 0:
        print(line, file=sys.stderr, flush=True)


def checkpoint_folder(recipe: Recipe) -> Path | None:
    """The recipe's local checkpoint folder, ``{run_name}`` filled in; None if unset or remote."""
    folder = recipe.checkpoint.save_folder
    if not folder or "://" in folder:
        return None
    return Path(format_name_with_dist(folder, recipe.run_name or recipe.name))


def _saved_checkpoints(folder: Path) -> list[Path]:
    """The folder's checkpoint files, oldest first (by batch)."""
    found = [(int(m.group(2)), path) for path in folder.iterdir() if (m := _CHECKPOINT_FILE.match(path.name))]
    return [path for _, path in sorted(found)]


def _checkpoint_problem(path: Path) -> str | None:
    """What is wrong with a checkpoint file, or None if it is a complete one.

    torch saves checkpoints as zip archives: a truncated file has no central directory, and a
    damaged one fails a member's CRC. Checking that costs a read, not an unpickling.
    """
    if not path.exists():
        return "the file is missing"
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        return f"{type(e).__name__}: {e}"
    return None if damaged is None else f"{damaged} fails its CRC check"


def _inspect_checkpoint_folder(recipe: Recipe) -> tuple[str | None, list[str]]:
    """Rank 0's look at the checkpoint folder: (an error, or None; lines to tell the user).

    Refuses a folder that is a file and a folder of an earlier run that would not be resumed;
    under autoresume, replaces a truncated latest checkpoint by the newest intact one.
    """
    folder = checkpoint_folder(recipe)
    if folder is None:
        return None, []
    key = "checkpoint.save_folder"
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "" if existing == folder else f" (on the way to {folder})"
        return f"{key}: {existing} is a file, not a folder{where}", []
    if not folder.is_dir():
        return None, []
    ckpt = recipe.checkpoint
    saved = _saved_checkpoints(folder)
    if not ckpt.autoresume:
        if saved and not ckpt.overwrite and ckpt.load_path is None:
            return (
                f"{key}: {folder} already holds checkpoints of an earlier run ({saved[-1].name} is the newest); "
                "set checkpoint.autoresume=true to continue that run, or remove the folder (or choose another "
                "checkpoint.save_folder) to start fresh",
                [],
            )
        return None, []
    latest = folder / LATEST_CHECKPOINT
    if not latest.is_symlink() and not latest.exists():
        return None, []  # nothing to resume: a fresh start
    problem = _checkpoint_problem(latest)
    if problem is None:
        return None, []
    broken = Path(os.path.realpath(latest))
    for candidate in reversed(saved):
        if candidate.resolve() == broken or _checkpoint_problem(candidate) is not None:
            continue
        # Keep the broken file under another name (never delete the user's bytes): Composer
        # would otherwise find it in the way when the resumed run saves that batch again.
        moved = ""
        if broken.exists():
            aside = broken.with_name(broken.name + ".corrupt")
            os.replace(broken, aside)
            moved = f"; moved it to {aside.name}"
        latest.unlink()
        latest.symlink_to(candidate.name)
        return None, [
            f"{key}: the latest checkpoint {broken} is truncated or corrupt ({problem}){moved}; "
            f"resuming from the previous checkpoint {candidate} instead"
        ]
    return (
        f"{key}: the latest checkpoint {broken} is truncated or corrupt ({problem}) and no earlier checkpoint "
        f"in {folder} is intact; remove {folder} (or choose another checkpoint.save_folder) to start fresh",
        [],
    )


def _rank_zero_verdict(inspect: Callable[[], Any]) -> Any:
    """``inspect()`` run on rank 0 only, its result handed to every rank (all fail or none does)."""
    verdict: list[Any] = [inspect() if dist.get_global_rank() == 0 else None]
    dist.broadcast_object_list(verdict, src=0)
    return verdict[0]


def _check_checkpoint_folder(recipe: Recipe) -> None:
    # Rank 0 looks (and repairs).
    error, notes = _rank_zero_verdict(lambda: _inspect_checkpoint_folder(recipe))
    if error is not None:
        raise RecipeError(error)
    for line in notes:
        _say(line)


class RecipeRecord(Callback):
    """Keeps the resolved recipe in every checkpoint (Composer saves each callback's state_dict).

    A later resume reads it back (:func:`recorded_recipe`) to tell which model and data saved the
    checkpoint; nothing is restored from it.
    """

    def __init__(self, recipe: Recipe) -> None:
        self.recipe_yaml = to_yaml(recipe)

    def state_dict(self) -> dict[str, Any]:
        return {"recipe_yaml": self.recipe_yaml}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass  # compared with the recipe before the Trainer was built (_check_resume)


def resume_source(recipe: Recipe) -> tuple[str, Path] | None:
    """The local checkpoint a Trainer built from ``recipe`` would load, with the key that makes it.

    Under autoresume, the save folder's latest checkpoint if there is one (Composer prefers it to
    ``load_path``); else a local ``load_path``; None for a fresh start or a remote checkpoint.
    """
    ckpt = recipe.checkpoint
    folder = checkpoint_folder(recipe)
    if ckpt.autoresume and folder is not None and (folder / LATEST_CHECKPOINT).exists():
        return "checkpoint.autoresume", folder / LATEST_CHECKPOINT
    load = ckpt.load_path
    if load and "://" not in load and "{" not in load:
        return "checkpoint.load_path", Path(load)
    return None


def _read_checkpoint_state(key: str, path: Path) -> dict[str, Any]:
    """The ``state`` of a Composer checkpoint, memory-mapped (tensors are not read), or RecipeError."""
    problem = _checkpoint_problem(path)
    if problem is not None:
        raise RecipeError(f"{key}: {path} is not a Composer checkpoint ({problem})")
    try:
        # A Composer checkpoint is a pickle of more than tensors (timestamps, metadata): the same
        # load Composer itself is about to make of this file.
        saved = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as e:  # noqa: BLE001 - unpickling can raise anything; all mean "not one"
        raise RecipeError(f"{key}: {path} is not a Composer checkpoint ({type(e).__name__}: {e})") from None
    state = saved.get("state") if isinstance(saved, dict) else None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise RecipeError(f"{key}: {path} is not a Composer checkpoint (it holds no training state)")
    return state


def recorded_recipe_in(state: dict[str, Any]) -> str | None:
    """The resolved recipe YAML kept in a checkpoint's ``state`` by :class:`RecipeRecord`, or None."""
    record = (state.get("callbacks") or {}).get(RecipeRecord.__qualname__) or {}
    value = record.get("recipe_yaml") if isinstance(record, dict) else None
    return value if isinstance(value, str) else None


def recorded_recipe(path: Path) -> str | None:
    """The resolved recipe YAML a checkpoint was saved under (``RecipeRecord``), or None."""
    try:
        return recorded_recipe_in(_read_checkpoint_state("checkpoint", path))
    except RecipeError:
        return None


#: Optimizer hyperparameters a resume restores from the checkpoint, by the recipe key that sets them.
_RESTORED_OPTIMIZER_KEYS = {"lr": "optimizer.lr", "momentum": "optimizer.momentum",
                            "weight_decay": "optimizer.weight_decay", "nesterov": "optimizer.nesterov"}


def _resume_differences(recipe: Recipe, state: dict[str, Any], model: torch.nn.Module,
                        optimizer: torch.optim.Optimizer) -> tuple[str | None, list[str]]:
    """(why the checkpoint's weights cannot load into ``model``, or None; the settings it would override)."""
    from omegaconf import OmegaConf

    differences: list[str] = []
    recorded = recorded_recipe_in(state)
    saved = OmegaConf.create(recorded) if recorded is not None else None
    if saved is not None:
        for key, now in (("model.name", recipe.model.name), ("data.dataset", recipe.data.dataset)):
            then = OmegaConf.select(saved, key)
            if then is not None and then != now:
                differences.append(f"{key} {then} (recipe: {now})")
    ours = model.state_dict()
    theirs = state["model"]
    missing = [k for k in ours if k not in theirs]
    extra = [k for k in theirs if k not in ours]
    reshaped = [k for k in ours if k in theirs and tuple(theirs[k].shape) != tuple(ours[k].shape)]
    if missing or extra or reshaped:
        first = (f"no {missing[0]}" if missing else f"an unknown {extra[0]}" if extra
                 else f"{reshaped[0]} of shape {tuple(theirs[reshaped[0]].shape)}, "
                      f"not {tuple(ours[reshaped[0]].shape)}")
        name = OmegaConf.select(saved, "model.name") if saved is not None else None
        saved_by = f"saved by model.name={name}, " if name and name != recipe.model.name else ""
        return (f"its weights do not fit model.name={recipe.model.name} ({saved_by}{len(missing)} missing, "
                f"{len(extra)} unknown and {len(reshaped)} reshaped tensors; the first: {first})"), differences
    for module_name, module in model.named_modules():
        if isinstance(module, InputNormalize):
            for buffer, key in (("mean", "data.mean"), ("std", "data.std")):
                full = f"{module_name}.{buffer}"
                if full in theirs and not torch.equal(theirs[full].float(), ours[full].float()):
                    then = [round(v, 6) for v in theirs[full].flatten().tolist()]
                    now = [round(v, 6) for v in ours[full].flatten().tolist()]
                    differences.append(f"{key} {then} (recipe: {now})")
    saved_optimizers = state.get("optimizers") or {}
    name = type(optimizer).__name__
    if saved_optimizers and name not in saved_optimizers:
        differences.append(f"optimizer {', '.join(saved_optimizers)} (recipe: {name})")
    elif name in saved_optimizers:
        then_group = (saved_optimizers[name].get("param_groups") or [{}])[0]
        now_group = optimizer.param_groups[0]
        for field, key in _RESTORED_OPTIMIZER_KEYS.items():
            then = then_group.get("initial_lr", then_group.get("lr")) if field == "lr" else then_group.get(field)
            if field in now_group and then is not None and then != now_group[field]:
                differences.append(f"{key} {then} (recipe: {now_group[field]})")
    seed = state.get("rank_zero_seed")
    if seed is not None and seed != recipe.seed:
        differences.append(f"seed {seed} (recipe: {recipe.seed})")
    return None, differences


def _inspect_resume(recipe: Recipe, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> str | None:
    source = resume_source(recipe)
    if source is None:
        return None
    key, path = source
    try:
        state = _read_checkpoint_state(key, path)
    except RecipeError as e:
        return str(e)
    unfit, differences = _resume_differences(recipe, state, model, optimizer)
    where = os.path.realpath(path)
    if unfit is not None:
        return f"{key}: {where} cannot be loaded: {unfit}"
    if not differences:
        return None
    fresh = ("choose another checkpoint.save_folder (or remove this one) to start a new run"
             if key == "checkpoint.autoresume" else "start a new run without checkpoint.load_path")
    return (
        f"{key}: {where} was saved with {'; '.join(differences)}. Loading it restores the "
        "checkpoint's whole training state (weights, normalization, optimizer, seed), so these "
        f"recipe values would silently not take effect; set them back, or {fresh}"
    )


def _check_resume(recipe: Recipe, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    # Rank 0 reads the checkpoint (memory-mapped).
    error = _rank_zero_verdict(lambda: _inspect_resume(recipe, model, optimizer))
    if error is not None:
        raise RecipeError(error)


def _batches_per_pass(data: DataBundle) -> int | None:
    """Training batches in one pass over the data (each rank's, as Composer counts), if known."""
    try:
        return len(data.train)
    except TypeError:  # a loader without a length
        return None


def _batches_per_epoch(recipe: Recipe, data: DataBundle) -> int | None:
    """Training batches per epoch as Composer counts them: a pass, or train.subset_num_batches of it."""
    batches = _batches_per_pass(data)
    subset = recipe.train.subset_num_batches
    return batches if batches is None or subset == -1 else min(batches, subset)


def _check_train_batches(recipe: Recipe, data: DataBundle) -> None:
    # drop_last drops a short last batch: a batch larger than the data trains nothing at all.
    batches = _batches_per_pass(data)
    if batches is None or batches > 0:
        return
    dataset = data.train.dataset
    samples = getattr(dataset, "num_samples", None) or len(dataset)
    world = dist.get_world_size()
    per_rank = f" ({recipe.train.batch_size // world} per process over {world} processes)" if world > 1 else ""
    raise RecipeError(
        f"train.batch_size: {recipe.train.batch_size}{per_rank} is larger than the {samples} training samples; "
        "incomplete batches are dropped, so not one batch would train"
    )


def _check_premixed_pad(recipe: Recipe, data: DataBundle) -> None:
    # The shards' image side is known once they are open; the other sources' at load (config).
    shape = (data.manifest or {}).get("source", {}).get("image_shape")  # [H, W, C], checked at open
    if shape:
        check_pad(recipe.data.augment.pad, min(shape[:2]), "the shards' images")


def _premixed_note(recipe: Recipe, data: DataBundle) -> None:
    manifest = data.manifest
    if not manifest:
        return
    args = manifest.get("args", {})
    key = "data.remote" if recipe.data.remote else "data.local"
    epochs = args.get("epochs")
    duration = recipe.train.max_duration
    unit = Time.from_timestring(duration).unit
    batches = _batches_per_pass(data)
    if unit == TimeUnit.EPOCH:
        counts = "counts passes over all of them"
    else:  # a count of batches or samples: say how many make a pass
        per_pass = batches if unit == TimeUnit.BATCH or batches is None else batches * recipe.train.batch_size
        counts = f"counts {'batches' if unit == TimeUnit.BATCH else 'samples'}"
        if per_pass is not None:
            counts += f" ({per_pass} make one pass over them)"
    _say(
        f"{key}: the shards hold {epochs} epoch{'' if epochs == 1 else 's'} of "
        f"{manifest.get('source', {}).get('num_images')} "
        f"{args.get('source')} images ({manifest.get('num_samples')} samples; writer seed {args.get('seed')}, "
        f"batch {args.get('batch_size')}, alpha {args.get('alpha')}); train.max_duration {duration} {counts}"
    )


def build_trainer(recipe: Recipe, callbacks: list[Any] | None = None) -> Trainer:
    """Build the Trainer a recipe describes: data, model, algorithms, optimizer, schedule, I/O.

    Args:
        recipe: a validated recipe (see :func:`cutmix_train.config.load_recipe`).
        callbacks: extra Composer callbacks.

    Returns:
        Trainer: ready to ``fit()``; no batch has been drawn yet.

    Raises:
        RecipeError: naming the key or file, if the device, precision, data or checkpoint folder
            cannot be used: a folder that is a file, an earlier run's folder without autoresume,
            a batch larger than the training data. Under autoresume a truncated latest checkpoint
            is moved aside (``NAME.corrupt``) and the newest intact one resumed, said on stderr;
            with none intact, that is an error. A checkpoint to resume or load that is not one,
            that another model saved, or whose restored state (dataset, normalization, optimizer
            settings, seed) differs from the recipe's is refused, each difference named.
    """
    device = resolve_device(recipe.device)
    precision = resolve_precision(recipe.precision, device)
    if recipe.train.microbatch_size == "auto" and device != "gpu":
        raise RecipeError("train.microbatch_size: 'auto' needs a GPU; give an integer or null")
    _share_cpu_threads(device)
    # Initialize the process group now (the Trainer reuses it) so data setup can use barriers.
    dist.initialize_dist(device)
    _check_checkpoint_folder(recipe)
    # Seed before the model exists: its initial weights must depend on the seed alone.
    reproducibility.seed_all(recipe.seed)
    data = build_data(recipe.data, recipe.train.batch_size, recipe.eval.batch_size, recipe.seed)
    _check_train_batches(recipe, data)
    _check_premixed_pad(recipe, data)
    _premixed_note(recipe, data)
    model = build_model(recipe.model.name, data.num_classes, data.mean, data.std)
    optimizer = build_optimizer(recipe.optimizer, model)
    _check_resume(recipe, model, optimizer)
    ckpt = recipe.checkpoint
    with warnings.catch_warnings():
        # Checkpoints leave the progress bar out (save_ignore_keys), so a resume would warn it is missing.
        warnings.filterwarnings("ignore", message=f"{ProgressBarLogger.__name__} is not in the state_dict")
        return Trainer(
            model=model,
            train_dataloader=data.train,
            eval_dataloader=data.eval,
            max_duration=recipe.train.max_duration,
            train_subset_num_batches=recipe.train.subset_num_batches,
            eval_interval=recipe.eval.interval,
            eval_subset_num_batches=recipe.eval.subset_num_batches,
            algorithms=build_algorithms(recipe, data),
            algorithm_passes=augment_before_mixing,
            optimizers=optimizer,
            schedulers=build_scheduler(recipe.scheduler, recipe.train.max_duration, _batches_per_epoch(recipe, data)),
            step_schedulers_every_batch=True,
            device=device,
            precision=precision,
            device_train_microbatch_size=recipe.train.microbatch_size,
            seed=recipe.seed,
            run_name=recipe.run_name or recipe.name,
            loggers=_loggers(recipe),
            callbacks=[RecipeRecord(recipe), *(callbacks or [])],
            progress_bar=recipe.logging.progress_bar,
            console_stream="stderr",
            save_folder=ckpt.save_folder,
            save_interval=ckpt.save_interval,
            save_num_checkpoints_to_keep=ckpt.num_to_keep,
            save_overwrite=ckpt.overwrite,
            # A saved bar is redrawn when the checkpoint loads: a finished run's rerun flashed
            # "train 0->3/3" though nothing trained. A resumed run draws a fresh one when it trains.
            save_ignore_keys=[f"state/callbacks/{ProgressBarLogger.__name__}"] if recipe.logging.progress_bar else None,
            autoresume=ckpt.autoresume,
            load_path=ckpt.load_path,
        )


def progress(trainer: Trainer) -> dict[str, Any]:
    """Where the run stands: ``epoch``, ``batch``, ``sample`` and ``train_seconds`` so far.

    The counts and Composer's training wall clock are the whole run's: a resumed Trainer starts
    from its checkpoint's.
    """
    timestamp = trainer.state.timestamp
    return {
        "epoch": int(timestamp.epoch),
        "batch": int(timestamp.batch),
        "sample": int(timestamp.sample),
        "train_seconds": timestamp.total_wct.total_seconds(),
    }


def is_complete(trainer: Trainer) -> bool:
    """Whether the Trainer (resumed from a checkpoint) has already reached its ``max_duration``."""
    max_duration = trainer.state.max_duration
    return max_duration is not None and max_duration <= trainer.state.timestamp.get(max_duration.unit)


def resumed_from(trainer: Trainer, recipe: Recipe) -> str | None:
    """The checkpoint a freshly built Trainer continues from, or None if it starts at zero."""
    if int(trainer.state.timestamp.batch) == 0:
        return None
    source = resume_source(recipe)
    if source is not None and source[0] == "checkpoint.autoresume":
        return os.path.realpath(source[1])
    if recipe.checkpoint.autoresume and recipe.checkpoint.save_folder and recipe.checkpoint.load_path is None:
        return recipe.checkpoint.save_folder  # a remote folder: Composer fetched its latest checkpoint
    return recipe.checkpoint.load_path


def _json_number(value: float | None, digits: int) -> float | None:
    # JSON has no NaN or inf: a metric that is not a number is reported missing (null).
    return round(value, digits) if value is not None and math.isfinite(value) else None


def _metric(metric: Any) -> float | None:
    # A metric no eval batch updated would report its initial state (0.0) as a result.
    if metric is None or not metric.update_called:
        return None
    return float(metric.compute())


def summarize(
    trainer: Trainer,
    recipe: Recipe,
    start: dict[str, Any] | None = None,
    wall_seconds: float | None = None,
    resumed: str | None = None,
) -> dict[str, Any]:
    """The run's headline numbers; call on every rank (metric syncs are collective).

    The top-level counts are the whole run's, over every resume: ``train_seconds`` is Composer's
    training wall clock (evaluation excluded), so ``samples_per_second`` is training throughput
    over all ranks. ``this_invocation`` holds this process's share: its own wall clock (loading,
    building, training and evaluating), the training seconds, samples and batches it added, and the
    checkpoint it resumed from. Metrics that are missing or not finite are None, so the summary
    is always valid JSON.

    Args:
        trainer: the Trainer, after ``fit``.
        recipe: its recipe.
        start: :func:`progress` before ``fit``; None means the run started in this process.
        wall_seconds: this process's wall clock so far.
        resumed: the checkpoint ``fit`` continued from (:func:`resumed_from`).

    Returns:
        dict: the summary, JSON-serializable with ``allow_nan=False``.
    """
    state = trainer.state
    metrics = state.eval_metrics.get("eval", {})
    now = progress(trainer)
    before = start or {"epoch": 0, "batch": 0, "sample": 0, "train_seconds": 0.0}
    seconds = now["train_seconds"]
    added_seconds = seconds - before["train_seconds"]
    added_samples = now["sample"] - before["sample"]
    return {
        "name": recipe.name,
        "eval_accuracy": _json_number(_metric(metrics.get("MulticlassAccuracy")), 6),
        "eval_loss": _json_number(_metric(metrics.get("CrossEntropy")), 6),
        "train_seconds": _json_number(seconds, 3),
        "samples_per_second": _json_number(now["sample"] / seconds, 2) if seconds > 0 else None,
        "samples": now["sample"],
        "batches": now["batch"],
        "epochs": now["epoch"],
        "this_invocation": {
            "wall_seconds": _json_number(wall_seconds, 3),
            "train_seconds": _json_number(added_seconds, 3),
            "samples": added_samples,
            "batches": now["batch"] - before["batch"],
            "samples_per_second": _json_number(added_samples / added_seconds, 2) if added_seconds > 0 else None,
            "resumed_from": resumed,
        },
        "model": recipe.model.name,
        "dataset": recipe.data.dataset,
        "cutmix": recipe.algorithms.cutmix.enabled,
        "device": resolve_device(recipe.device),
        "precision": str(state.precision.value),
        "world_size": dist.get_world_size(),
    }
