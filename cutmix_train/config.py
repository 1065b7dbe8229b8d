"""The recipe schema: typed sections as dataclasses, loaded from YAML with dotted overrides.

A recipe is validated in full before anything is built: OmegaConf's structured config rejects
unknown keys and values of the wrong type and names the key; :func:`validate` then checks the
values that a type cannot (names, time strings, ranges, combinations). Files are checked later,
by the data builders, still before the Trainer exists.

Values a type admits but no run can use are refused with the key and the valid range: every
number finite; a time count (ep, ba, sp) at most 10**12 and a ``dur`` a fraction in [0, 1];
``optimizer.lr`` in (0, 10], ``optimizer.weight_decay`` in [0, 1), ``scheduler.gamma`` in (0, 1],
``scheduler.alpha_f`` in [0, 1]; ``data.mean`` in [0, 1] and ``data.std`` in [1e-3, 1] (images
are in [0, 1]); ``data.num_workers`` at most 256; ``data.augment.pad`` below the image side
(checked when the pre-mixed shards are opened, for those).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cutmix_algo.options import check_options

if TYPE_CHECKING:
    from composer.core import Time

__all__ = [
    "DATASETS",
    "EVAL_DATASETS",
    "IMAGE_SIZES",
    "MODELS",
    "OPTIMIZERS",
    "SCHEDULERS",
    "AlgorithmsConfig",
    "AugmentConfig",
    "CheckpointConfig",
    "CutMixConfig",
    "DataConfig",
    "EvalConfig",
    "LoggingConfig",
    "OptimizerConfig",
    "Recipe",
    "RecipeError",
    "SchedulerConfig",
    "TrainConfig",
    "check_pad",
    "load_recipe",
    "to_yaml",
    "validate",
]

MODELS = ("resnet8", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110")
# digits: native 8x8, or upscaled (PIL bilinear) to 16x16 or 32x32; CIFAR-10 is 32x32 only
IMAGE_SIZES = (8, 16, 32)
DATASETS = ("cifar10", "digits", "premixed")
EVAL_DATASETS = ("cifar10", "digits")
OPTIMIZERS = ("sgd", "decoupled_sgdw", "adamw")
SCHEDULERS = ("multistep", "cosine", "constant")
DEVICES = ("auto", "cpu", "gpu")
PRECISIONS = ("auto", "fp32", "amp_bf16", "amp_fp16")
SEED_MAX = 2**32 - 1  # the largest seed every generator a run seeds accepts
# Bounds on values a type admits but no run can use, each named in its error:
# any count in a time string (ep, ba, sp): 10**12 batches at 1,000 a second is 30 years, and
# Composer turns far larger ones into float infinity (1e308ep: OverflowError at build)
MAX_TIME_COUNT = 10**12
MAX_LR = 10.0  # 3.2 (SGD at batch 8192, Goyal et al. 2017) is the largest rate these optimizers meet
MAX_NUM_WORKERS = 256  # per process; fixed, not os.cpu_count(), so a recipe loads alike everywhere
# data.std, for images in [0, 1] (their std is at most 0.5; 1 is "no scaling"): with means in
# [0, 1] a normalized pixel is at most 1000 in size, which fp16 autocast (largest 65504) holds
STD_RANGE = (1e-3, 1.0)


class RecipeError(ValueError):
    """A recipe that cannot be run; the message starts with the offending key or file."""


@dataclass
class ModelConfig:
    """Which network to train (CIFAR ResNets of He et al. 2016, section 4.2)."""

    name: str = "resnet20"


@dataclass
class AugmentConfig:
    """Standard CIFAR augmentation, done on the device: pad-and-random-crop, horizontal flip."""

    enabled: bool = True
    pad: int = 4
    hflip: bool = True


@dataclass
class DataConfig:
    """Where the training and evaluation images come from."""

    # cifar10 | digits | premixed (MDS shards written by cutmix-writer)
    dataset: str = "digits"
    # cifar10: the folder holding cifar-10-batches-py (torchvision's layout)
    root: str = "data"
    download: bool = False
    # premixed: the shards (a remote URI such as s3://bucket/prefix, and/or a local folder)
    remote: str | None = None
    local: str | None = None
    # the writer stores each epoch in its own shuffled order already; streaming's shuffle on
    # top would interleave epochs
    shuffle: bool = False
    shuffle_seed: int = 9176
    # premixed: whose test split evaluates; None reads the source from the shards' manifest
    eval_dataset: str | None = None
    num_workers: int = 0
    # per-channel input normalization; None uses the dataset's own statistics
    mean: list[float] | None = None
    std: list[float] | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # cifar10/digits: train on this many images of each class (a stratified random subset);
    # None trains on the whole split
    train_per_class: int | None = None
    # the subset's seed; None draws it from the run's seed, so seeds are independent replicates
    subset_seed: int | None = None
    # digits: the side of the square images (8 native, 16 or 32 upscaled); cifar10: 32 only
    image_size: int = 32


@dataclass
class TrainConfig:
    """How long and in what batches to train."""

    max_duration: str = "1ep"
    batch_size: int = 128  # global: split evenly across ranks
    # per-device microbatch (gradient accumulation); "auto" only on a GPU; None = whole batch
    microbatch_size: int | str | None = None
    subset_num_batches: int = -1


@dataclass
class EvalConfig:
    """When and how to evaluate on the test split."""

    interval: str = "1ep"
    batch_size: int = 512
    subset_num_batches: int = -1


@dataclass
class OptimizerConfig:
    """The optimizer: SGD with momentum (coupled weight decay, as in the paper) by default."""

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False


@dataclass
class SchedulerConfig:
    """The learning-rate schedule; times are Composer time strings (``"0.5dur"``, ``"80ep"``)."""

    name: str = "multistep"
    milestones: list[str] = field(default_factory=lambda: ["0.5dur", "0.75dur"])
    gamma: float = 0.1
    warmup: str = "0ba"
    alpha_f: float = 0.0  # cosine: final lr as a fraction of the initial lr


@dataclass
class CutMixConfig:
    """Online CutMix (``cutmix_algo.CutMix``); off for pre-mixed data, which is mixed already."""

    enabled: bool = False
    # λ ~ Beta(alpha, alpha) is the kept fraction of a mixed image. alpha=0 is not "off": it gives
    # λ = 0, every mixed image wholly replaced by its partner (and its label); enabled=false or p=0
    # turns mixing off
    alpha: float = 1.0
    p: float = 1.0
    uniform_sampling: bool = False
    stop_at: str | None = None
    # batch: one λ and box per batch (the paper's); sample: a λ and box per image
    mode: str = "batch"
    # int labels and loss = λ·L(y) + (1-λ)·L(y[perm]) instead of mixed label rows (batch mode)
    interpolate_loss: bool = False
    # > 0: a mixed batch uses MixUp (Beta(mixup_alpha, mixup_alpha)) with probability switch_prob
    mixup_alpha: float = 0.0
    switch_prob: float = 0.5
    # [low, high]: box side fractions drawn uniformly from this range instead of from λ
    minmax: list[float] | None = None
    # a batch interval such as 500ba: log mixed images with their boxes to the trackers
    log_images_every: str | None = None

    def options(self) -> dict[str, Any]:
        """Every field but ``enabled``, by ``CutMix``'s keyword for it (the same names)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "enabled"}


@dataclass
class AlgorithmsConfig:
    """Composer algorithms to train with."""

    cutmix: CutMixConfig = field(default_factory=CutMixConfig)


@dataclass
class CheckpointConfig:
    """Checkpointing and resumption; ``save_folder`` may use ``{run_name}``."""

    save_folder: str | None = None
    save_interval: str = "1ep"
    num_to_keep: int = -1
    overwrite: bool = False
    autoresume: bool = False
    load_path: str | None = None


@dataclass
class LoggingConfig:
    """Console progress bar, an optional file log (``{run_name}`` and ``{rank}`` expand), and
    offline experiment trackers: a TensorBoard log folder and an MLflow local file store."""

    progress_bar: bool = True
    file: str | None = None
    tensorboard: str | None = None
    mlflow: str | None = None


@dataclass
class Recipe:
    """A whole training run."""

    name: str = "run"
    run_name: str | None = None  # None: the recipe's name
    seed: int = 17
    device: str = "auto"  # auto picks a GPU when one is present
    precision: str = "auto"  # auto: amp_bf16 on a GPU, fp32 on the CPU
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    algorithms: AlgorithmsConfig = field(default_factory=AlgorithmsConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


def _omegaconf_message(where: str, error: OmegaConfBaseException) -> str:
    # OmegaConf appends "full_key: ... object_type=..." lines; the first line plus the key is
    # all a user needs.
    key = getattr(error, "full_key", None) or "recipe"
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"{where}: {key}: {first}"


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe YAML file, apply ``key.sub=value`` overrides, and validate the result.

    Args:
        path: the recipe file.
        overrides: OmegaConf dotlist entries, applied after the file, e.g. ``train.batch_size=16``.

    Returns:
        Recipe: the typed, validated recipe.

    Raises:
        RecipeError: naming the file or the key, if the file is missing, empty or not a YAML mapping, a
            key is unknown, a value has the wrong type, or :func:`validate` rejects a value.

    Example:
        >>> recipe = load_recipe("recipes/demo.yaml", ["train.batch_size=16"])  # doctest: +SKIP
        >>> recipe.train.batch_size  # doctest: +SKIP
        16
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    schema = OmegaConf.structured(Recipe)
    try:
        loaded = OmegaConf.load(path)
    except Exception as e:  # yaml's errors carry the line and column
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    if not OmegaConf.is_dict(loaded):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping of sections")
    if len(loaded) == 0:  # an empty (or truncated) file would train every default in silence
        raise RecipeError(
            f"{path}: the recipe is empty; expected a YAML mapping of sections such as name, model, "
            "data and train (recipes/demo.yaml is an example)"
        )
    try:
        merged = OmegaConf.merge(schema, loaded)
    except OmegaConfBaseException as e:
        raise RecipeError(_omegaconf_message(str(path), e)) from None
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override {item!r}: expected key.sub=value")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as e:
            raise RecipeError(_omegaconf_message(f"override {item!r}", e)) from None
        except yaml.YAMLError as e:  # the value is parsed as YAML: "[1", an unknown !!tag
            message = " ".join(str(e).split())
            raise RecipeError(f"override {item!r}: its value is not valid YAML: {message}") from None
    try:
        recipe = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:  # a missing mandatory value, say
        raise RecipeError(_omegaconf_message(str(path), e)) from None
    assert isinstance(recipe, Recipe)
    validate(recipe)
    return recipe


def to_yaml(recipe: Recipe) -> str:
    """The recipe as YAML, every default filled in: what was actually run."""
    return OmegaConf.to_yaml(OmegaConf.structured(recipe))


def _check_not_through_a_file(key: str, value: str | None) -> None:
    """Refuse a local output path whose folder (or the path itself, for a folder) is a file."""
    if not value or "://" in value:
        return
    path = Path(value.replace("{run_name}", "run").replace("{rank}", "0"))
    folder = path if key != "logging.file" else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if folder.exists() and not folder.is_dir():
        raise RecipeError(f"{key}: {folder} is a file, not a folder (on the way to {value})")
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        raise RecipeError(f"{key}: cannot write {value}: {folder} is not writable by this user")


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise RecipeError(f"{key}: unknown value {value!r}; expected one of {', '.join(choices)}")


def _check_time(key: str, value: str, units: tuple[str, ...] | None = None, *, positive: bool = False) -> Time:
    """Refuse a time string Composer cannot parse or no run can reach; return its ``Time``.

    A count (ep, ba, sp) is at most :data:`MAX_TIME_COUNT`; a ``dur`` is a fraction of the run, in [0, 1].
    """
    from composer.core import Time

    example = "such as '10ep', '500ba' or '0.5dur'"
    try:
        time = Time.from_timestring(str(value))
    except OverflowError:  # "infep": Composer's int(float("inf"))
        raise RecipeError(f"{key}: {value!r} is not a finite time; give a count {example}") from None
    except (ValueError, TypeError):  # "ten", "nanep", "1.5ep" (not a whole count)
        raise RecipeError(f"{key}: {value!r} is not a Composer time string {example}") from None
    unit = time.unit.value
    if units is not None and unit not in units:
        raise RecipeError(f"{key}: {value!r} must be in one of the units {', '.join(units)}")
    if not math.isfinite(time.value):  # "nandur", "infdur"
        raise RecipeError(f"{key}: {value!r} is not a finite time; give one {example}")
    if time.value < 0:
        raise RecipeError(f"{key}: {value!r} must not be negative")
    if unit == "dur" and time.value > 1:
        raise RecipeError(f"{key}: {value!r} must be a fraction of the run, in [0, 1]dur")
    if time.value > MAX_TIME_COUNT:
        raise RecipeError(
            f"{key}: {value!r} must be at most 10**12{unit} (10**12 batches at 1,000 a second is 30 years)"
        )
    if positive and time.value == 0:
        raise RecipeError(f"{key}: {value!r} must be more than zero")
    return time


def _check_range(key: str, value: float | list[float] | None, low: float, high: float = math.inf, *,
                 low_open: bool = False, high_open: bool = False, hint: str = "") -> None:
    """Refuse a number, or any number of a list, outside its range; NaN and inf never pass."""
    values = [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]
    for v in values:
        # NaN fails every comparison and inf trains to NaN: only finite numbers get in (an int
        # always is, and math.isfinite cannot take one above float's range).
        finite = isinstance(v, int) or math.isfinite(v)
        if not (finite and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)):
            if high == math.inf:
                bound = f"{'>' if low_open else '>='} {low:g}"
            else:
                bound = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            shown = list(value) if isinstance(value, (list, tuple)) else value
            raise RecipeError(f"{key}: must be {bound}, got {shown!r}{hint}")


def check_pad(pad: int, side: int, source: str) -> None:
    """Refuse a crop padding below 0 or of the image ``side`` or more, where a crop can be all padding.

    Args:
        pad: ``data.augment.pad``.
        side: the images' shorter side.
        source: where ``side`` comes from, for the message.
    """
    if not 0 <= pad < side:
        raise RecipeError(
            f"data.augment.pad: must be in [0, {side - 1}], below the image side {side} ({source}), got {pad}: "
            "a pad of the side or more lets a crop land wholly in the padding, a blank image"
        )


def _check_seed(key: str, value: int) -> None:
    # numpy's and streaming's generators take seeds in [0, 2**32); torch's take more, numpy's not.
    if not 0 <= value <= SEED_MAX:
        raise RecipeError(f"{key}: must be an integer in [0, {SEED_MAX}] (2**32 - 1), got {value}")


def _check_subset(key: str, value: int) -> None:
    # Composer reads 0 as "no batches" and spins forever on an epoch that never ends.
    if value != -1 and value <= 0:
        raise RecipeError(f"{key}: must be -1 (all batches) or > 0, got {value}")


def validate(recipe: Recipe) -> None:
    """Check what types cannot: names, time strings, ranges and combinations of settings.

    Raises:
        RecipeError: naming the first offending key.
    """
    if not recipe.name:
        raise RecipeError("name: must not be empty")
    _check_choice("device", recipe.device, DEVICES)
    _check_choice("precision", recipe.precision, PRECISIONS)
    _check_choice("model.name", recipe.model.name, MODELS)
    _check_seed("seed", recipe.seed)

    data = recipe.data
    _check_seed("data.shuffle_seed", data.shuffle_seed)
    if data.subset_seed is not None:
        _check_seed("data.subset_seed", data.subset_seed)
    _check_choice("data.dataset", data.dataset, DATASETS)
    if data.eval_dataset is not None:
        _check_choice("data.eval_dataset", data.eval_dataset, EVAL_DATASETS)
    if data.dataset == "premixed" and not (data.remote or data.local):
        raise RecipeError("data.remote: premixed data needs data.remote and/or data.local")
    _check_range("data.num_workers", data.num_workers, 0, MAX_NUM_WORKERS,
                 hint=" (DataLoader worker processes per training process)")
    for key, (low, high), hint in (
        ("mean", (0.0, 1.0), " (means of images in [0, 1]; a value above 1 is likely a 0-255 statistic)"),
        ("std", STD_RANGE, " (for images in [0, 1]: a smaller std makes a normalized pixel larger than 1000, "
                           "near fp16's limit of 65504 once a convolution sums them; a larger one is likely a "
                           "0-255 statistic)"),
    ):
        values = getattr(data, key)
        if values is not None and len(values) != 3:
            raise RecipeError(f"data.{key}: expected 3 per-channel values, got {list(values)}")
        _check_range(f"data.{key}", values, low, high, hint=hint)
    if data.train_per_class is not None:
        if data.dataset == "premixed":
            raise RecipeError(
                "data.train_per_class: premixed shards hold what was written; "
                "write the subset with cutmix-writer instead"
            )
        _check_range("data.train_per_class", data.train_per_class, 0, low_open=True)
    if data.image_size not in IMAGE_SIZES:
        raise RecipeError(f"data.image_size: must be one of {', '.join(map(str, IMAGE_SIZES))}, got {data.image_size}")
    if data.image_size != 32 and "cifar10" in (data.dataset, data.eval_dataset):
        raise RecipeError(f"data.image_size: cifar10 images are 32x32, got {data.image_size}; only digits resize")
    if data.dataset != "premixed":  # the shards' side is known when they are opened (the builder)
        check_pad(data.augment.pad, data.image_size, "data.image_size")

    train = recipe.train
    max_duration = _check_time("train.max_duration", train.max_duration, ("ep", "ba", "sp"), positive=True)
    _check_range("train.batch_size", train.batch_size, 0, low_open=True)
    _check_subset("train.subset_num_batches", train.subset_num_batches)
    mb = train.microbatch_size
    if isinstance(mb, str) and mb != "auto":
        raise RecipeError(f"train.microbatch_size: expected an integer, 'auto' or null, got {mb!r}")
    if isinstance(mb, int):
        _check_range("train.microbatch_size", mb, 0, low_open=True)
    _check_time("eval.interval", recipe.eval.interval, ("ep", "ba", "dur"), positive=True)
    _check_range("eval.batch_size", recipe.eval.batch_size, 0, low_open=True)
    _check_subset("eval.subset_num_batches", recipe.eval.subset_num_batches)

    opt = recipe.optimizer
    _check_choice("optimizer.name", opt.name, OPTIMIZERS)
    _check_range("optimizer.lr", opt.lr, 0, MAX_LR, low_open=True,
                 hint=" (the largest rate in common use is 3.2: SGD at batch 8192, Goyal et al. 2017)")
    _check_range("optimizer.weight_decay", opt.weight_decay, 0, 1, high_open=True,
                 hint=" (at 1, decoupled_sgdw zeroes every weight at full learning rate)")
    _check_range("optimizer.momentum", opt.momentum, 0, 1, high_open=True)
    if opt.nesterov and opt.momentum == 0 and opt.name != "adamw":
        raise RecipeError(
            "optimizer.nesterov: Nesterov momentum needs optimizer.momentum > 0, got momentum 0; "
            "set optimizer.nesterov=false for plain SGD"
        )

    sched = recipe.scheduler
    _check_choice("scheduler.name", sched.name, SCHEDULERS)
    for i, milestone in enumerate(sched.milestones):
        _check_time(f"scheduler.milestones[{i}]", milestone, ("ep", "ba", "dur"))
    warmup = _check_time("scheduler.warmup", sched.warmup, ("ep", "ba", "dur"))
    if warmup.value > 0 and warmup.unit.value != "dur" and max_duration.unit.value == "sp":
        # Composer compares the warmup and the run's length in one unit: a fit-time ValueError.
        raise RecipeError(
            f"scheduler.warmup: {sched.warmup!r} cannot be compared with train.max_duration "
            f"{train.max_duration!r} in samples; give the warmup as a fraction of the run (dur)"
        )
    _check_range("scheduler.gamma", sched.gamma, 0, 1, low_open=True,
                 hint=" (multistep: the factor the learning rate is multiplied by at each milestone)")
    _check_range("scheduler.alpha_f", sched.alpha_f, 0, 1,
                 hint=" (cosine: the final learning rate as a fraction of optimizer.lr)")

    cutmix = recipe.algorithms.cutmix
    if cutmix.enabled and data.dataset == "premixed":
        raise RecipeError(
            "algorithms.cutmix.enabled: premixed data is mixed already; "
            "set algorithms.cutmix.enabled=false to train on it"
        )
    try:
        check_options(**cutmix.options())  # CutMix's own checks; each message starts with the option
    except ValueError as e:
        raise RecipeError(f"algorithms.cutmix.{e}") from None
    # What a recipe adds: its time units and bounds.
    if cutmix.stop_at is not None:
        _check_time("algorithms.cutmix.stop_at", cutmix.stop_at, ("ep", "ba", "dur"))
    if cutmix.log_images_every is not None:
        _check_time("algorithms.cutmix.log_images_every", cutmix.log_images_every, ("ba",), positive=True)

    ckpt = recipe.checkpoint
    _check_time("checkpoint.save_interval", ckpt.save_interval, ("ep", "ba", "dur"), positive=True)
    load = ckpt.load_path
    if load is not None and "://" not in load and "{" not in load and not Path(load).is_file():
        raise RecipeError(f"checkpoint.load_path: no checkpoint file at {load}")
    if ckpt.autoresume and not ckpt.save_folder:
        raise RecipeError("checkpoint.autoresume: needs checkpoint.save_folder")
    if ckpt.autoresume and ckpt.num_to_keep == 0:
        raise RecipeError(
            "checkpoint.num_to_keep: 0 keeps no checkpoint, so checkpoint.autoresume would find "
            "nothing to resume and train from the start every time; keep at least 1 (-1 keeps all)"
        )
    for key, value in (("logging.file", recipe.logging.file), ("logging.tensorboard", recipe.logging.tensorboard),
                       ("logging.mlflow", recipe.logging.mlflow)):
        _check_not_through_a_file(key, value)
