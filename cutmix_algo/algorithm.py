"""CutMix as a Composer Algorithm: once per optimizer-step batch, in place, on the trainer's device."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from composer.core import Algorithm, Event, State, Time, TimeUnit
from composer.loggers import Logger
from composer.utils import dist
from torchmetrics import Metric

from cutmix_algo.functional import (
    _check_input,
    check_target,
    mix_targets,
    one_hot,
    paste_box_,
)
from cutmix_algo.sampling import check_alpha, derive_generator, sample_params

__all__ = ["CutMix", "DenseTargetMetric", "batch_generator"]

BatchKey = int | str | tuple[Callable, Callable]


def batch_generator(state: State, seed: int | None, *stream: int) -> torch.Generator:
    """The generator for the current training batch, keyed ``(seed, global rank, batch, *stream)``.

    ``seed`` ``None`` means the Trainer's ``rank_zero_seed``. Nothing but the keys matters, so a
    resumed run draws what the uninterrupted one drew, and every rank draws its own. Extra
    ``stream`` keys give other per-batch draws (augmentation, say) a sequence of their own.
    """
    seed = int(state.rank_zero_seed) if seed is None else seed
    return derive_generator(seed, dist.get_global_rank(), int(state.timestamp.batch.value), *stream)


class DenseTargetMetric(Metric):
    """Wraps a classification metric so it accepts the dense ``(N, K)`` targets CutMix produces.

    Dense targets are reduced to their dominant class (``argmax``) before the wrapped metric sees
    them; integer targets pass through unchanged. :class:`CutMix` wraps the trainer's training
    metrics with this at fit start, so ``compute_training_metrics=True`` keeps working.
    """

    full_state_update = False

    def __init__(self, metric: Metric) -> None:
        super().__init__()
        self.metric = metric

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        if target.is_floating_point() and target.ndim == preds.ndim and target.ndim >= 2:
            target = target.argmax(dim=1)
        self.metric.update(preds, target)

    def compute(self) -> Any:
        return self.metric.compute()

    def reset(self) -> None:
        super().reset()
        self.metric.reset()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.update(*args, **kwargs)
        return None


def _check_probability(p: float) -> float:
    try:
        value = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}") from None
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
    return value


class CutMix(Algorithm):
    """Paste a box cut from one image of the batch onto another and mix the labels by kept area.

    Runs at ``Event.AFTER_DATALOADER``: once per optimizer-step batch, before Composer splits it
    into microbatches, so all microbatches of a batch share one λ and one box (Composer's own
    CutMix runs per microbatch). The batch is still on the host at that event; this algorithm
    moves it to ``state.device`` (non-blocking) and mixes it there, in place: only the box region
    is written. Targets become dense ``(N, K)`` rows for every batch, mixed or not, so the loss
    always sees one format.

    The random draws for a batch come from a generator derived from ``(seed, global rank, batch
    index)``: the same seed gives the same λ, box and permutation sequence, resuming from a
    checkpoint continues it exactly, and ranks draw differently. The offline writer
    (``cutmix-writer``) uses the same sampler.

    Args:
        alpha: Beta(alpha, alpha) parameter for λ; ``0`` gives λ = 0 before correction. Default 1.
        p: probability that a batch is mixed (the paper's ``cutmix_prob``). Default 1.
        num_classes: number of classes; if ``None``, taken from ``state.model.num_classes`` or,
            for dense ``(N, K)`` targets, from K.
        uniform_sampling: draw the box center so every pixel is equally likely to be covered.
        input_key: where the input is in the batch: an index, a key, or a (getter, setter) pair.
        target_key: where the target is in the batch, likewise.
        seed: seed for the draws; ``None`` uses the Trainer's ``rank_zero_seed``.
        stop_at: a Composer time string (``"90ep"``, ``"0.9dur"``) from which CutMix is off.

    Raises:
        ValueError: if ``alpha`` is negative or NaN, ``p`` is outside [0, 1], or ``stop_at`` is
            not a time string.

    Example:
        >>> from composer import Trainer
        >>> from cutmix_algo import CutMix
        >>> trainer = Trainer(  # doctest: +SKIP
        ...     model=model, train_dataloader=train_dl, max_duration="1ep",
        ...     algorithms=[CutMix(alpha=1.0)],
        ... )
    """

    def __init__(
        self,
        alpha: float = 1.0,
        p: float = 1.0,
        num_classes: int | None = None,
        uniform_sampling: bool = False,
        input_key: BatchKey = 0,
        target_key: BatchKey = 1,
        seed: int | None = None,
        stop_at: str | Time | None = None,
    ) -> None:
        self.alpha = check_alpha(alpha)
        self.p = _check_probability(p)
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
        ):
            raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}")
        self.num_classes = num_classes
        self.uniform_sampling = bool(uniform_sampling)
        self.input_key = input_key
        self.target_key = target_key
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        self.seed = seed
        if stop_at is None or isinstance(stop_at, Time):
            self.stop_at = stop_at
        else:
            try:
                self.stop_at = Time.from_timestring(str(stop_at))
            except ValueError:
                raise ValueError(
                    f"stop_at must be a Composer time string such as '90ep' or '0.9dur', "
                    f"got {stop_at!r}"
                ) from None
        self._resolved_classes: int | None = num_classes
        self._resolved_seed: int | None = seed
        self.last_lam: float | None = None
        self.last_box: tuple[int, int, int, int] | None = None
        self.last_perm: torch.Tensor | None = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(alpha={self.alpha}, p={self.p}, "
            f"num_classes={self._resolved_classes}, uniform_sampling={self.uniform_sampling}, "
            f"seed={self._resolved_seed}, stop_at={self.stop_at})"
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "repr": repr(self),
            "alpha": self.alpha,
            "p": self.p,
            "num_classes": self._resolved_classes,
            "uniform_sampling": self.uniform_sampling,
            "seed": self._resolved_seed,
            "stop_at": None if self.stop_at is None else str(self.stop_at),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alpha = check_alpha(state["alpha"])
        self.p = _check_probability(state["p"])
        self._resolved_classes = state["num_classes"]
        self.uniform_sampling = bool(state["uniform_sampling"])
        self._resolved_seed = state["seed"]
        stop_at = state["stop_at"]
        self.stop_at = None if stop_at is None else Time.from_timestring(stop_at)

    # -- when ---------------------------------------------------------------------------------

    def match(self, event: Event, state: State) -> bool:
        if event == Event.FIT_START:
            return True
        return event == Event.AFTER_DATALOADER and not self._stopped(state)

    def _stopped(self, state: State) -> bool:
        if self.stop_at is None:
            return False
        if self.stop_at.unit == TimeUnit.DURATION:
            elapsed = state.get_elapsed_duration()
            return elapsed is not None and elapsed >= self.stop_at
        return state.timestamp.get(self.stop_at.unit) >= self.stop_at

    # -- what ---------------------------------------------------------------------------------

    def apply(self, event: Event, state: State, logger: Logger) -> None:
        if event == Event.FIT_START:
            self._fit_start(state)
            return
        self._mix_batch(state, logger)

    def _fit_start(self, state: State) -> None:
        if self._resolved_seed is None:
            self._resolved_seed = int(state.rank_zero_seed)
        if self._resolved_classes is None:
            model = state.model
            if isinstance(model, torch.nn.parallel.DistributedDataParallel):
                model = model.module  # under DDP the ComposerModel sits inside the wrapper
            model_classes = getattr(model, "num_classes", None)
            if isinstance(model_classes, int) and model_classes > 0:
                self._resolved_classes = model_classes
        if self._resolved_classes is None and self._dataset_gives_int_labels(state):
            raise ValueError(
                "CutMix needs num_classes for integer class labels: pass CutMix(num_classes=K), "
                "or use a model with a num_classes attribute (ComposerClassifier has one)"
            )
        if state.train_metrics:
            for name, metric in list(state.train_metrics.items()):
                if not isinstance(metric, DenseTargetMetric):
                    state.train_metrics[name] = DenseTargetMetric(metric)

    def _dataset_gives_int_labels(self, state: State) -> bool:
        """Peek at sample 0 of a map-style dataset, so a missing num_classes fails at fit start."""
        dataloader = state.train_dataloader
        dataset = getattr(dataloader, "dataset", None)
        if dataset is None or not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            return False
        if isinstance(self.target_key, tuple) or isinstance(dataset, torch.utils.data.IterableDataset):
            return False
        try:
            if len(dataset) == 0:
                return False
            sample = dataset[0]
            target = sample[self.target_key]
        except Exception:  # any odd dataset: decide on the first batch instead
            return False
        if isinstance(target, int):
            return True
        return isinstance(target, torch.Tensor) and target.ndim == 0 and not target.is_floating_point()

    def _get(self, batch: Any, key: BatchKey, state: State) -> Any:
        if isinstance(key, tuple):
            return key[0](batch)
        return state.batch_get_item(key)

    def _set(self, key: BatchKey, value: Any, state: State) -> None:
        if isinstance(key, tuple):
            state.batch = key[1](state.batch, value)
        else:
            state.batch_set_item(key, value)

    def _num_classes_for(self, target: torch.Tensor, input: torch.Tensor) -> int | None:
        if self._resolved_classes is not None:
            return self._resolved_classes
        if target.ndim == 2 and target.is_floating_point():
            return int(target.shape[1])
        if target.ndim == 1:
            raise ValueError(
                "CutMix needs num_classes for integer class labels: pass CutMix(num_classes=K), "
                "or use a model with a num_classes attribute"
            )
        return None

    def _mix_batch(self, state: State, logger: Logger) -> None:
        input = _check_input(self._get(state.batch, self.input_key, state))
        target = self._get(state.batch, self.target_key, state)
        num_classes = self._num_classes_for(target, input)
        # Validate on the host, before the move: label range checks are free here.
        check_target(target, input, num_classes)

        generator = batch_generator(state, self._resolved_seed)
        n, height, width = input.shape[0], input.shape[-2], input.shape[-1]
        # λ, box and permutation first, so with p=1 the draws equal sample_params' on the same
        # generator (what the offline writer uses); the coin for p after them.
        params = sample_params(n, height, width, self.alpha, generator, self.uniform_sampling)
        mixed = self.p >= 1.0 or torch.rand((), generator=generator).item() < self.p

        state.batch = state.device.batch_to_device(state.batch)
        input = self._get(state.batch, self.input_key, state)
        target = self._get(state.batch, self.target_key, state)
        if mixed:
            lam, box = params.lam, params.box
            perm = params.perm.to(input.device, non_blocking=True)
            paste_box_(input, box, perm)
            target = mix_targets(target, lam, perm, num_classes, box)
        else:
            lam, box = 1.0, (0, 0, 0, 0)
            if target.ndim == 1:
                target = one_hot(target, num_classes)
        self._set(self.input_key, input, state)
        self._set(self.target_key, target, state)

        self.last_lam, self.last_box = lam, tuple(box)
        self.last_perm = params.perm if mixed else torch.arange(n)
        logger.log_metrics({"cutmix/lambda": lam})
