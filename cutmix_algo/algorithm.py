"""CutMix as a Composer Algorithm: once per optimizer-step batch, in place, on the trainer's device."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from composer.core import Algorithm, Event, State, Time, TimeUnit
from composer.loggers import Logger
from composer.utils import dist
from torch.utils.data import DataLoader, default_collate
from torchmetrics import Metric

from cutmix_algo.functional import (
    apply_params,
    check_input,
    check_memory,
    check_target,
    mix_targets,
    mixup_,
    one_hot,
)
from cutmix_algo.options import check_options
from cutmix_algo.sampling import (
    label_lam,
    online_generator,
    sample_lam,
    sample_params,
    sample_row_params,
)

log = logging.getLogger(__name__)

__all__ = ["CutMix", "DenseTargetMetric", "batch_generator"]

BatchKey = int | str | tuple[Callable, Callable]

_NEEDS_NUM_CLASSES = (
    "CutMix needs num_classes for integer class labels: pass CutMix(num_classes=K), "
    "or use a model with a num_classes attribute"
)


def batch_generator(state: State, seed: int | None, *stream: int) -> torch.Generator:
    """The generator for the current training batch, keyed ``(seed, global rank, batch, *stream)``.

    ``seed`` ``None`` means the Trainer's ``rank_zero_seed``. Nothing but the keys matters, so a
    resumed run draws what the uninterrupted one drew, and every rank draws its own. Extra
    ``stream`` keys give other per-batch draws (augmentation, say) a sequence of their own.
    """
    seed = int(state.rank_zero_seed) if seed is None else seed
    return online_generator(seed, dist.get_global_rank(), int(state.timestamp.batch.value), *stream)


class DenseTargetMetric(Metric):
    """Wraps a classification metric so it accepts the dense ``(N, K)`` targets CutMix produces.

    Dense targets are reduced to their dominant class (``argmax``) before the wrapped metric sees
    them; integer targets pass through unchanged. :class:`CutMix` wraps the trainer's training
    metrics with this at fit start, so training accuracy keeps working on mixed batches.
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


def _key_record(key: BatchKey) -> int | str | None:
    """A batch key as a checkpoint records it: an index or a name; ``None`` for a getter/setter pair."""
    return key if isinstance(key, (int, str)) and not isinstance(key, bool) else None


class CutMix(Algorithm):
    """Paste a box cut from one image of the batch onto another and mix the labels by kept area.

    Runs at ``Event.AFTER_DATALOADER``: once per optimizer-step batch, before Composer splits it
    into microbatches, so all microbatches of a batch share one λ and one box (Composer's own
    CutMix runs per microbatch). The batch is still on the host at that event; this algorithm
    moves it to ``state.device`` (non-blocking) and mixes it there: only the box region is
    written. Targets become dense ``(N, K)`` rows for every batch, mixed or not, before and after
    ``stop_at``, so the loss always sees one format.

    It never writes into memory the dataloader may still own. It mixes in place when the batch
    is known to be fresh memory: the move to the device made a copy, or a ``DataLoader`` collated
    the batch with torch's default collate function (which stacks samples into a new tensor).
    Otherwise (``batch_size=None`` loaders that yield slices of a dataset tensor, custom collate
    functions, a dataset already on the device) it mixes a copy of the input and logs that once.
    ``inplace=True`` skips the check for loaders known to yield fresh batches; ``inplace=False``
    always copies.

    The random draws for a batch come from a generator derived from ``(seed, global rank, batch
    index)``: the same seed gives the same λ, box and permutation sequence, resuming from a
    checkpoint continues it exactly, and ranks draw differently. The offline writer
    (``cutmix-writer``) uses the same sampler and applier with its keys ``(seed, epoch, batch)``
    (the same form: its epoch ``r`` draws what rank ``r`` draws online for one seed; see the
    key table in :mod:`cutmix_algo.sampling`).

    On resume, the constructor's hyperparameters win: a checkpoint restores only state (the seed
    the run resolved, and ``num_classes`` where none was passed); any constructor argument that
    differs from the checkpoint's is named in one logged warning (old → new). ``input_key`` and
    ``target_key`` are compared when both are an index or a name (a getter/setter pair is not
    recorded); an argument a checkpoint lacks counts as its default.

    Each batch logs ``cutmix/lambda``, the weight of each row's own label: 1.0 for a batch left
    unmixed (``p``'s coin, after ``stop_at``, a batch of one), MixUp's λ for a MixUp batch, the
    rows' mean in sample mode.

    Args:
        alpha: Beta(alpha, alpha) parameter for λ. Default 1. ``0`` does not turn CutMix off: it
            draws λ = 0, the largest box (the image's size around a random center, clipped); use
            ``p=0`` or ``stop_at`` for that.
        p: probability that a batch is mixed (the paper's ``cutmix_prob``). Default 1.
        num_classes: number of classes; if ``None``, taken from ``state.model.num_classes`` or,
            for dense ``(N, K)`` targets, from K.
        uniform_sampling: draw the box center so every pixel is equally likely to be covered.
        input_key: where the input is in the batch: an index, a key, or a (getter, setter) pair.
        target_key: where the target is in the batch, likewise.
        seed: seed for the draws; ``None`` uses the Trainer's ``rank_zero_seed``.
        stop_at: a Composer time string (``"90ep"``, ``"0.9dur"``) from which CutMix is off.
        inplace: ``None`` (default) mixes in place only where the batch is known to be fresh
            memory (see above); ``True`` always mixes in place (an expanded input, or a target
            map sharing the input's memory, is refused: pasting would write elements twice);
            ``False`` always mixes a copy.
        mode: ``"batch"`` (default): one λ and box per batch. ``"sample"``: a λ and box per row
            (on the CPU, large boxes are copied through a buffer of their size; otherwise
            vectorized on the device, with one batch-sized temporary, the permuted batch).
        interpolate_loss: leave the targets as int labels and make the loss
            ``λ·L(y) + (1−λ)·L(y[perm])`` (two calls of the model's loss), for losses that only
            take class indices or very large K. Exact under microbatching, since every
            microbatch of a batch shares λ. Needs ``mode="batch"`` and int labels; refused with
            Composer's ``LabelSmoothing``, which would smooth only the ``λ`` term.
        mixup_alpha: if > 0, a batch is mixed with MixUp (λ ~ Beta(mixup_alpha, mixup_alpha),
            ``x = λx + (1−λ)x[perm]``) instead of CutMix with probability ``switch_prob``;
            which one is logged as ``cutmix/mixup`` (1 for MixUp).
        switch_prob: probability that a mixed batch uses MixUp rather than CutMix (used only
            with ``mixup_alpha > 0``). timm's ``switch_prob`` is the probability of CutMix
            instead; at 0.5 the two agree.
        minmax: ``(low, high)``: draw the box's side fractions uniformly from this range
            (timm's ``cutmix_minmax``) instead of from λ; λ is then the kept fraction.
        log_images_every: a Composer batch interval such as ``"500ba"``: on those batches, log
            the first mixed images with their boxes outlined (``cutmix/mixed``) and the images
            their patches came from (``cutmix/cut_from``) through ``Logger.log_images``.
            ``None`` (default) logs none; other batches pay nothing for it.

    Raises:
        ValueError: naming the first argument :func:`~cutmix_algo.options.check_options` refuses
            (a string or bool where a number belongs, a number out of range, a flag that is not
            a bool, an unknown mode, a time string Composer cannot parse, ``interpolate_loss``
            with ``mode="sample"``). A batch the algorithm cannot mix is refused when it
            arrives (a missing ``num_classes`` at fit start, where the dataset shows int labels).

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
        inplace: bool | None = None,
        mode: str = "batch",
        interpolate_loss: bool = False,
        mixup_alpha: float = 0.0,
        switch_prob: float = 0.5,
        minmax: tuple[float, float] | None = None,
        log_images_every: str | Time | None = None,
    ) -> None:
        options = check_options(
            alpha=alpha, p=p, num_classes=num_classes, uniform_sampling=uniform_sampling,
            input_key=input_key, target_key=target_key, seed=seed, stop_at=stop_at,
            inplace=inplace, mode=mode, interpolate_loss=interpolate_loss,
            mixup_alpha=mixup_alpha, switch_prob=switch_prob, minmax=minmax,
            log_images_every=log_images_every,
        )
        self.alpha: float = options["alpha"]
        self.p: float = options["p"]
        self.num_classes: int | None = options["num_classes"]
        self.uniform_sampling: bool = options["uniform_sampling"]
        self.input_key: BatchKey = input_key
        self.target_key: BatchKey = target_key
        self.seed: int | None = options["seed"]
        self.stop_at: Time | None = options["stop_at"]
        self.inplace: bool | None = options["inplace"]
        self.mode: str = options["mode"]
        self.interpolate_loss: bool = options["interpolate_loss"]
        self.mixup_alpha: float = options["mixup_alpha"]
        self.switch_prob: float = options["switch_prob"]
        self.minmax: tuple[float, float] | None = options["minmax"]
        self.log_images_every: Time | None = options["log_images_every"]
        self._resolved_classes = self.num_classes
        self._resolved_seed = self.seed
        self._told_copy = False
        self.last_lam: float | None = None
        self.last_box: tuple[int, int, int, int] | None = None
        self.last_perm: torch.Tensor | None = None
        self.last_inplace: bool | None = None
        self.last_mixup: bool = False
        # interpolate_loss: the permuted labels of the current batch, and how many of its rows
        # the microbatches seen so far covered (Composer splits a batch into consecutive chunks).
        self._loss_lam = 1.0
        self._permuted_target: torch.Tensor | None = None
        self._rows_done = 0

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(alpha={self.alpha}, p={self.p}, "
            f"num_classes={self._resolved_classes}, uniform_sampling={self.uniform_sampling}, "
            f"seed={self._resolved_seed}, stop_at={self.stop_at}, inplace={self.inplace}, "
            f"mode={self.mode!r}, interpolate_loss={self.interpolate_loss}, "
            f"mixup_alpha={self.mixup_alpha}, switch_prob={self.switch_prob}, minmax={self.minmax}, "
            f"log_images_every={self.log_images_every})"
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
            "mode": self.mode,
            "interpolate_loss": self.interpolate_loss,
            "mixup_alpha": self.mixup_alpha,
            "switch_prob": self.switch_prob,
            "minmax": None if self.minmax is None else list(self.minmax),
            "inplace": self.inplace,
            "log_images_every": None if self.log_images_every is None else str(self.log_images_every),
            "input_key": _key_record(self.input_key),
            "target_key": _key_record(self.target_key),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what is state, keep the constructor's hyperparameters, and say what differs.

        State is the seed the run resolved (so draws continue) and the resolved ``num_classes``;
        each is restored only where the constructor left it ``None``. Every other argument comes
        from the constructor.
        """
        changed: list[str] = []
        mine = self.state_dict()  # this constructor's arguments, as a checkpoint records them

        def differs(name: str, old: Any, new: Any) -> None:
            if old != new:
                changed.append(f"{name} {old!r} -> {new!r}")

        differs("alpha", state.get("alpha"), self.alpha)
        differs("p", state.get("p"), self.p)
        differs("uniform_sampling", state.get("uniform_sampling"), self.uniform_sampling)
        differs("stop_at", state.get("stop_at"), mine["stop_at"])
        # An option a checkpoint lacks counts as its default.
        differs("mode", state.get("mode", "batch"), self.mode)
        differs("interpolate_loss", state.get("interpolate_loss", False), self.interpolate_loss)
        differs("mixup_alpha", state.get("mixup_alpha", 0.0), self.mixup_alpha)
        if self.mixup_alpha > 0:
            differs("switch_prob", state.get("switch_prob", 0.5), self.switch_prob)
        minmax = state.get("minmax")
        differs("minmax", None if minmax is None else tuple(minmax), self.minmax)
        differs("inplace", state.get("inplace"), mine["inplace"])
        differs("log_images_every", state.get("log_images_every"), mine["log_images_every"])
        for name, default in (("input_key", 0), ("target_key", 1)):
            # A (getter, setter) pair is recorded as None: functions cannot be compared across runs.
            if state.get(name, default) is not None and mine[name] is not None:
                differs(name, state.get(name, default), mine[name])
        if self.seed is None:
            self._resolved_seed = state.get("seed")
        else:
            differs("seed", state.get("seed"), self.seed)
        if self.num_classes is None:
            self._resolved_classes = state.get("num_classes")
        else:
            differs("num_classes", state.get("num_classes"), self.num_classes)
        if changed:
            log.warning(
                "CutMix: the checkpoint was saved with other settings; using the constructor's: %s",
                ", ".join(changed),
            )

    # -- when ---------------------------------------------------------------------------------

    def match(self, event: Event, state: State) -> bool:
        if event in (Event.BEFORE_TRAIN_BATCH, Event.AFTER_LOSS):
            return self.interpolate_loss
        return event in (Event.FIT_START, Event.AFTER_DATALOADER)

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
        elif event == Event.BEFORE_TRAIN_BATCH:
            self._rows_done = 0  # also after an OOM retry of the batch's microbatches
        elif event == Event.AFTER_LOSS:
            self._interpolate_loss(state)
        else:
            self._mix_batch(state, logger)

    def _fit_start(self, state: State) -> None:
        if self.interpolate_loss:
            from composer.algorithms import LabelSmoothing  # only for this check: not at import time

            if any(isinstance(a, LabelSmoothing) for a in state.algorithms):
                # LabelSmoothing smooths the batch's targets only; the second loss term would use
                # the unsmoothed permuted labels, so only λ of the loss would be smoothed.
                raise ValueError(
                    "CutMix(interpolate_loss=True) cannot be combined with LabelSmoothing: it smooths "
                    "the batch's own labels, not the permuted ones of the second loss term; use "
                    "CutMix(interpolate_loss=False), whose dense targets LabelSmoothing smooths exactly"
                )
        if self._resolved_seed is None:
            self._resolved_seed = int(state.rank_zero_seed)
        if self._resolved_classes is None:
            model_classes = getattr(_unwrapped(state.model), "num_classes", None)
            if isinstance(model_classes, (int, np.integer)) and not isinstance(model_classes, bool) \
                    and model_classes > 0:
                self._resolved_classes = int(model_classes)
        if self._resolved_classes is None and self._dataset_gives_int_labels(state):
            raise ValueError(_NEEDS_NUM_CLASSES + " (ComposerClassifier has one)")
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
        try:
            return state.batch_get_item(key)
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ValueError(_missing_key_message(batch, key)) from None

    def _set(self, key: BatchKey, value: Any, state: State) -> None:
        if isinstance(key, tuple):
            state.batch = key[1](state.batch, value)
        else:
            state.batch_set_item(key, value)

    def _num_classes_for(self, target: torch.Tensor) -> int | None:
        if self._resolved_classes is not None or not isinstance(target, torch.Tensor):
            return self._resolved_classes  # check_target names a target that is not a tensor
        if target.ndim == 2 and target.is_floating_point():
            return int(target.shape[1])
        if target.ndim == 1:
            raise ValueError(_NEEDS_NUM_CLASSES)
        return None

    def _may_write(self, host: torch.Tensor, moved: torch.Tensor, state: State) -> bool:
        """Whether ``moved`` (the batch's tensor on the device) is memory no one else holds."""
        if self.inplace is not None:
            return self.inplace
        if moved.untyped_storage().data_ptr() != host.untyped_storage().data_ptr():
            return True  # the move to the device made a new tensor
        loader = state.train_dataloader
        # Torch's default collate stacks the samples into a new tensor; anything else (no
        # auto-collation, a custom collate_fn, a loader that is not a DataLoader) may hand out
        # views of, or the very tensors of, the user's dataset.
        return (
            isinstance(loader, DataLoader)
            and loader.batch_sampler is not None
            and loader.collate_fn is default_collate
        )

    def _writable(self, host: torch.Tensor, moved: torch.Tensor, state: State, what: str) -> torch.Tensor:
        if self._may_write(host, moved, state):
            return moved
        if not self._told_copy:
            self._told_copy = True
            log.warning(
                "CutMix: the batch's %s may share memory with the train dataloader (%s), so "
                "CutMix mixes a copy and leaves the loader's data untouched; pass "
                "CutMix(inplace=True) if every batch is fresh memory",
                what,
                _loader_description(state.train_dataloader),
            )
        return moved.clone()

    def _draw(self, state: State, n: int, height: int, width: int) -> tuple[Any, bool, bool, float]:
        """This batch's draws: (CutMix params, mixed?, MixUp?, MixUp λ), all from its generator."""
        generator = batch_generator(state, self._resolved_seed)
        # CutMix's λ, box and permutation first, so with p=1 and no MixUp the draws equal
        # sample_params' on the same generator; the coin for p, then MixUp's, after them.
        if self.mode == "sample":
            params: Any = sample_row_params(n, height, width, self.alpha, generator,
                                            self.uniform_sampling, self.minmax)
        else:
            params = sample_params(n, height, width, self.alpha, generator, self.uniform_sampling,
                                   self.minmax)
        mixed = n > 1 and (self.p >= 1.0 or torch.rand((), generator=generator).item() < self.p)
        use_mixup, mixup_lam = False, 1.0
        if mixed and self.mixup_alpha > 0:
            use_mixup = torch.rand((), generator=generator).item() < self.switch_prob
            if use_mixup:
                mixup_lam = sample_lam(self.mixup_alpha, generator)
        return params, mixed, use_mixup, mixup_lam

    def _mix_batch(self, state: State, logger: Logger) -> None:
        host_input = check_input(self._get(state.batch, self.input_key, state))
        host_target = self._get(state.batch, self.target_key, state)
        num_classes = self._num_classes_for(host_target)
        # Validate on the host, before the move: label range checks are free here.
        check_target(host_target, host_input, num_classes)
        if self.interpolate_loss and host_target.ndim != 1:  # check_target refused non-integer labels
            raise ValueError(
                "CutMix(interpolate_loss=True) needs int class labels of shape (N,), got a target "
                f"of shape {tuple(host_target.shape)} and dtype {host_target.dtype}"
            )
        if self.mixup_alpha > 0 and host_target.ndim >= 3:  # every batch, not only MixUp's draws
            raise ValueError(
                f"CutMix(mixup_alpha={self.mixup_alpha}) cannot mix segmentation maps (target of "
                f"shape {tuple(host_target.shape)}): MixUp would blend class ids; set mixup_alpha=0"
            )

        n, height, width = host_input.shape[0], host_input.shape[-2], host_input.shape[-1]
        params, mixed, use_mixup, mixup_lam = None, False, False, 1.0
        if not self._stopped(state):
            params, mixed, use_mixup, mixup_lam = self._draw(state, n, height, width)

        state.batch = state.device.batch_to_device(state.batch)
        input = self._get(state.batch, self.input_key, state)
        target = self._get(state.batch, self.target_key, state)
        batch_index = int(state.timestamp.batch.value)
        logging_images = mixed and self._log_images_now(batch_index)
        if mixed:
            assert params is not None
            moved = input
            input = self._writable(host_input, moved, state, "input")
            self.last_inplace = input is moved
            if target.ndim >= 3:  # a segmentation map is pasted in place too (never with MixUp)
                target = self._writable(host_target, target, state, "target map")
            check_memory(input, target)  # inplace=True or a custom collate can hand out either
            if logging_images:
                before = _first_images(input, params.perm)
            if use_mixup:
                lam: Any = label_lam(mixup_lam, n)
                box: Any = (0, 0, 0, 0)
                perm = params.perm.to(input.device, non_blocking=True)
                mixup_(input, lam, perm)
                if not self.interpolate_loss:  # not a map: refused on the host before any batch was mixed
                    target = mix_targets(target, lam, perm, num_classes)
            else:
                out = apply_params(input, None if self.interpolate_loss else target, params, num_classes)
                lam, box, perm = out.lam, out.box, out.perm
                if not self.interpolate_loss:
                    target = out.target
            if self.interpolate_loss:
                self._loss_lam = float(lam)
                self._permuted_target = target.index_select(0, perm)
            if logging_images:
                self._log_images(logger, input, box, before, batch_index)
        else:
            lam, box = 1.0, (0, 0, 0, 0)
            if self.interpolate_loss:
                self._loss_lam, self._permuted_target = 1.0, None
            elif target.ndim == 1:
                target = one_hot(target, num_classes)
        self._set(self.input_key, input, state)
        self._set(self.target_key, target, state)

        self.last_mixup = use_mixup
        self.last_lam = lam
        self.last_box = tuple(box) if not isinstance(box, torch.Tensor) else box
        self.last_perm = params.perm if mixed else torch.arange(n)
        logged = {"cutmix/lambda": lam.mean().item() if isinstance(lam, torch.Tensor) else lam}
        if self.mixup_alpha > 0:
            logged["cutmix/mixup"] = float(use_mixup)
        logger.log_metrics(logged)

    # -- loss interpolation --------------------------------------------------------------------

    def _interpolate_loss(self, state: State) -> None:
        """AFTER_LOSS, once per microbatch: loss = λ·L(y) + (1−λ)·L(y[perm]) for its rows."""
        batch = state.batch
        rows = self._get(batch, self.input_key, state).shape[0]
        start, self._rows_done = self._rows_done, self._rows_done + rows
        if self._permuted_target is None or self._loss_lam >= 1.0:
            return
        permuted = self._permuted_target[start:start + rows]
        other = _unwrapped(state.model).loss(state.outputs, _with_item(batch, self.target_key, permuted))
        lam = self._loss_lam
        if isinstance(state.loss, dict):
            state.loss = {k: lam * v + (1.0 - lam) * other[k] for k, v in state.loss.items()}
        elif isinstance(state.loss, (tuple, list)):
            state.loss = type(state.loss)(lam * a + (1.0 - lam) * b for a, b in zip(state.loss, other, strict=True))
        else:
            state.loss = lam * state.loss + (1.0 - lam) * other

    # -- image logging -------------------------------------------------------------------------

    def _log_images_now(self, batch_index: int) -> bool:
        return self.log_images_every is not None and batch_index % int(self.log_images_every.value) == 0

    def _log_images(self, logger: Logger, mixed: torch.Tensor, box: Any,
                    before: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> None:
        images = _displayable(mixed[: before[0].shape[0]])
        _outline(images, box)
        logger.log_images(images, name="cutmix/mixed", step=batch_index)
        logger.log_images(_displayable(before[1]), name="cutmix/cut_from", step=batch_index)


_LOGGED_IMAGES = 8


def _first_images(x: torch.Tensor, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Copies of the first images and of the images their patches come from (logging batches only)."""
    k = min(_LOGGED_IMAGES, x.shape[0])
    return x[:k].clone(), x.index_select(0, perm[:k].to(x.device)).clone()


def _displayable(x: torch.Tensor) -> torch.Tensor:
    """``(k, C, H, W)`` float32 in [0, 1] on the CPU (the first frame of a video)."""
    x = x.detach()
    if x.ndim == 5:
        x = x[:, :, 0]
    if x.dtype == torch.uint8:
        return x.to("cpu", torch.float32) / 255.0
    x = x.to("cpu", torch.float32)
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    high = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x - low) / (high - low).clamp_min(1e-12)


def _outline(images: torch.Tensor, box: Any) -> None:
    """Draw each image's box edge, in place, in the first channel's full value (red for RGB)."""
    k = images.shape[0]
    color = torch.zeros(images.shape[1], 1)
    color[0] = 1.0
    boxes = box[:k].tolist() if isinstance(box, torch.Tensor) else [list(box)] * k
    for i, (top, left, bottom, right) in enumerate(boxes):
        if bottom <= top or right <= left:
            continue
        images[i, :, top, left:right] = color
        images[i, :, bottom - 1, left:right] = color
        images[i, :, top:bottom, left] = color
        images[i, :, top:bottom, right - 1] = color


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The ComposerModel itself: under DDP it sits inside the wrapper."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _with_item(batch: Any, key: Any, value: torch.Tensor) -> Any:
    """A shallow copy of ``batch`` with ``key`` replaced: the microbatch itself stays as it is."""
    if isinstance(key, tuple):
        return key[1](copy.copy(batch), value)
    if isinstance(batch, Mapping):
        new = dict(batch)
        new[key] = value
        return new
    items = list(batch)
    items[key] = value
    return tuple(items) if isinstance(batch, tuple) else items


def _loader_description(loader: Any) -> str:
    if not isinstance(loader, DataLoader):
        return f"a {type(loader).__name__}, not a torch DataLoader"
    if loader.batch_sampler is None:
        return "a DataLoader with batch_size=None, whose dataset yields whole batches"
    return f"a DataLoader with collate_fn={getattr(loader.collate_fn, '__name__', loader.collate_fn)!r}"


def _missing_key_message(batch: Any, key: Any) -> str:
    if isinstance(batch, Mapping):
        found = f"a dict batch with keys {sorted(map(str, batch.keys()))}"
    elif isinstance(batch, (list, tuple)):
        found = f"a {type(batch).__name__} batch of length {len(batch)}"
    else:
        found = f"a batch of type {type(batch).__name__}"
    return (
        f"CutMix could not find key {key!r} in {found}; pass CutMix(input_key=..., target_key=...) "
        "with the batch's image and label keys (an index, a key, or a (getter, setter) pair)"
    )
