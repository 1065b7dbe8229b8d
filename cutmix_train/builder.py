"""Trainer assembly: a validated recipe in, a ready Composer ``Trainer`` out, and its summary.

Everything that can fail on a bad recipe (names, files, data) fails here, before training: the
data is opened and the model built before the Trainer, and no batch is drawn until ``fit``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from composer import Trainer
from composer.core import Algorithm, Time
from composer.loggers import FileLogger, LoggerDestination
from composer.optim import (
    ConstantScheduler,
    ConstantWithWarmupScheduler,
    CosineAnnealingScheduler,
    CosineAnnealingWithWarmupScheduler,
    DecoupledSGDW,
    MultiStepScheduler,
    MultiStepWithWarmupScheduler,
)
from composer.utils import dist, reproducibility

from cutmix_algo import CutMix
from cutmix_train.augment import DeviceAugment, augment_before_mixing
from cutmix_train.config import OptimizerConfig, Recipe, RecipeError, SchedulerConfig
from cutmix_train.data import DataBundle, build_data
from cutmix_train.models import build_model

__all__ = [
    "build_algorithms",
    "build_optimizer",
    "build_scheduler",
    "build_trainer",
    "resolve_device",
    "resolve_precision",
    "summarize",
]


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
    if cfg.name == "sgd":
        # torch's SGD couples weight decay to the gradient, as He et al. trained.
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
        )
    if cfg.name == "decoupled_sgdw":
        return DecoupledSGDW(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
        )
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(cfg: SchedulerConfig) -> Any:
    """The recipe's learning-rate schedule as a Composer scheduler (stepped every batch)."""
    # The warmup variants warn on every step when warmup is zero: use the plain ones then.
    warmup = Time.from_timestring(cfg.warmup).value > 0
    if cfg.name == "multistep":
        milestones = list(cfg.milestones)
        if warmup:
            return MultiStepWithWarmupScheduler(t_warmup=cfg.warmup, milestones=milestones, gamma=cfg.gamma)
        return MultiStepScheduler(milestones=milestones, gamma=cfg.gamma)
    if cfg.name == "cosine":
        if warmup:
            return CosineAnnealingWithWarmupScheduler(t_warmup=cfg.warmup, alpha_f=cfg.alpha_f)
        return CosineAnnealingScheduler(alpha_f=cfg.alpha_f)
    if warmup:
        return ConstantWithWarmupScheduler(t_warmup=cfg.warmup)
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
                alpha=cutmix.alpha,
                p=cutmix.p,
                num_classes=data.num_classes,
                uniform_sampling=cutmix.uniform_sampling,
                stop_at=cutmix.stop_at,
            )
        )
    return algorithms


def _loggers(recipe: Recipe) -> list[LoggerDestination]:
    if not recipe.logging.file:
        return []
    # stdout/stderr stay out of the file: the progress bar would flood it.
    return [FileLogger(filename=recipe.logging.file, capture_stdout=False, capture_stderr=False, overwrite=True)]


def _share_cpu_threads(device: str) -> None:
    # Several ranks on one CPU each default to all cores; oversubscribed threads spin and stall.
    local_world = dist.get_local_world_size()
    if device == "cpu" and local_world > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))


def build_trainer(recipe: Recipe, callbacks: list[Any] | None = None) -> Trainer:
    """Build the Trainer a recipe describes: data, model, algorithms, optimizer, schedule, I/O.

    Args:
        recipe: a validated recipe (see :func:`cutmix_train.config.load_recipe`).
        callbacks: extra Composer callbacks.

    Returns:
        Trainer: ready to ``fit()``; no batch has been drawn yet.

    Raises:
        RecipeError: naming the key or file, if the device, precision or data cannot be used.
    """
    device = resolve_device(recipe.device)
    precision = resolve_precision(recipe.precision, device)
    if recipe.train.microbatch_size == "auto" and device != "gpu":
        raise RecipeError("train.microbatch_size: 'auto' needs a GPU; give an integer or null")
    _share_cpu_threads(device)
    # Initialize the process group now (the Trainer reuses it) so data setup can use barriers.
    dist.initialize_dist(device)
    # Seed before the model exists: its initial weights must depend on the seed alone.
    reproducibility.seed_all(recipe.seed)
    data = build_data(recipe.data, recipe.train.batch_size, recipe.eval.batch_size, recipe.seed)
    model = build_model(recipe.model.name, data.num_classes, data.mean, data.std)
    ckpt = recipe.checkpoint
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
        optimizers=build_optimizer(recipe.optimizer, model),
        schedulers=build_scheduler(recipe.scheduler),
        step_schedulers_every_batch=True,
        device=device,
        precision=precision,
        device_train_microbatch_size=recipe.train.microbatch_size,
        seed=recipe.seed,
        run_name=recipe.run_name or recipe.name,
        loggers=_loggers(recipe),
        callbacks=callbacks or [],
        progress_bar=recipe.logging.progress_bar,
        console_stream="stderr",
        save_folder=ckpt.save_folder,
        save_interval=ckpt.save_interval,
        save_num_checkpoints_to_keep=ckpt.num_to_keep,
        save_overwrite=ckpt.overwrite,
        autoresume=ckpt.autoresume,
        load_path=ckpt.load_path,
    )


def summarize(trainer: Trainer, recipe: Recipe) -> dict[str, Any]:
    """The run's headline numbers; call on every rank (metric syncs are collective).

    ``train_seconds`` is Composer's training wall clock (evaluation excluded), so
    ``samples_per_second`` is training throughput over all ranks.
    """
    state = trainer.state
    metrics = state.eval_metrics.get("eval", {})
    accuracy = metrics.get("MulticlassAccuracy")
    loss = metrics.get("CrossEntropy")
    seconds = state.timestamp.total_wct.total_seconds()
    samples = int(state.timestamp.sample)
    return {
        "name": recipe.name,
        "eval_accuracy": None if accuracy is None else round(float(accuracy.compute()), 6),
        "eval_loss": None if loss is None else round(float(loss.compute()), 6),
        "train_seconds": round(seconds, 3),
        "samples_per_second": round(samples / seconds, 2) if seconds > 0 else None,
        "samples": samples,
        "batches": int(state.timestamp.batch),
        "epochs": int(state.timestamp.epoch),
        "model": recipe.model.name,
        "dataset": recipe.data.dataset,
        "cutmix": recipe.algorithms.cutmix.enabled,
        "device": resolve_device(recipe.device),
        "precision": str(state.precision.value),
        "world_size": dist.get_world_size(),
    }
