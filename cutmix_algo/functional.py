"""Applying CutMix to tensors: paste the box in place, mix the targets by the kept fraction.

Layout: images are ``(N, C, H, W)`` or videos ``(N, C, T, H, W)``; rows are dim -2 (H), columns
dim -1 (W). Only the box region is read and written, so the cost is about four times the box's
bytes (read the permuted region, write a temporary, read it, write the box), never a whole-batch
copy.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from cutmix_algo.sampling import (
    Box,
    check_alpha,
    check_box,
    check_int,
    kept_fraction,
    label_lam,
    sample_params,
)

__all__ = ["CutMixOutput", "check_input", "check_target", "cutmix_batch", "mix_targets", "one_hot", "paste_box_"]

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


class CutMixOutput(NamedTuple):
    """What :func:`cutmix_batch` returns.

    Attributes:
        input: the input, mixed in place (the same tensor object that was passed in).
        target: the mixed target (dense float rows for class targets; a pasted map for dense maps).
        lam: the weight of each sample's own label: the fraction of its own pixels it keeps,
            rounded to the dyadic grid that makes the batch's label rows sum exactly to N in
            float32 (within ``2**-(k+1)`` of the kept fraction, ``k = label_grid_bits(N)``), and
            1.0 when nothing was mixed (a batch of one).
        box: ``(top, left, bottom, right)``, half-open; rows along H, columns along W.
        perm: sample ``i`` received the box region of sample ``perm[i]``.
    """

    input: torch.Tensor
    target: torch.Tensor | None
    lam: float
    box: Box
    perm: torch.Tensor


def paste_box_(x: torch.Tensor, box: Box, perm: torch.Tensor) -> torch.Tensor:
    """Overwrite ``x[i, ..., box]`` with ``x[perm[i], ..., box]`` for every ``i``, in place.

    Works for any number of dims between the batch and the last two (channels, frames), any dtype
    and any memory format; the layout of ``x`` is untouched.
    """
    top, left, bottom, right = box
    if bottom <= top or right <= left:
        return x
    region = x[..., top:bottom, left:right]
    region.copy_(region.index_select(0, perm))
    return x


def one_hot(labels: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Dense ``(N, K)`` rows with a 1 at each label."""
    out = torch.zeros(labels.shape[0], num_classes, dtype=dtype, device=labels.device)
    return out.scatter_(1, labels.long().unsqueeze(1), 1.0)


def _is_dense_map(target: torch.Tensor, input: torch.Tensor) -> bool:
    return target.ndim >= 3 and target.shape[-2:] == input.shape[-2:]


def _check_labels(target: torch.Tensor, num_classes: int | None) -> int:
    if num_classes is None:
        raise ValueError(
            "num_classes is required to mix integer class labels (target of shape (N,)); "
            "pass num_classes=K or give dense (N, K) float targets"
        )
    num_classes = check_int("num_classes", num_classes, low=1)
    # Checking values needs them on the host: free on the CPU, a sync on an accelerator, where
    # callers (the Algorithm) check before moving the batch.
    if target.device.type == "cpu" and target.numel():
        low, high = int(target.min()), int(target.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"target labels must lie in [0, num_classes={num_classes}), "
                f"got values in [{low}, {high}]"
            )
    return num_classes


def check_target(target: torch.Tensor, input: torch.Tensor, num_classes: int | None) -> None:
    """Raise ``ValueError`` unless ``target`` is a class target or a dense map ``input`` can mix."""
    if not isinstance(target, torch.Tensor):
        raise ValueError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.shape[0] != input.shape[0]:
        raise ValueError(
            f"target must have the input's batch size {input.shape[0]} in dim 0, "
            f"got target of shape {tuple(target.shape)}"
        )
    if _is_dense_map(target, input):
        return
    if target.ndim == 1:
        if target.is_floating_point() or target.is_complex():
            raise ValueError(
                f"1-d target must hold integer class labels, got dtype {target.dtype}"
            )
        _check_labels(target, num_classes)
        return
    if target.ndim == 2:
        if not target.is_floating_point():
            if target.shape[1] == 1:
                raise ValueError(
                    f"target of shape {tuple(target.shape)} with dtype {target.dtype}: integer class "
                    "labels must have shape (N,); pass target.squeeze(1)"
                )
            raise ValueError(
                f"(N, K) target must be a float tensor of class weights, got dtype {target.dtype}; "
                "integer class labels must have shape (N,)"
            )
        if num_classes is not None and target.shape[1] != check_int("num_classes", num_classes, low=1):
            raise ValueError(
                f"dense target has {target.shape[1]} classes but num_classes={num_classes}"
            )
        return
    raise ValueError(
        "target must be int labels (N,), dense float (N, K), or a map with the input's "
        f"H x W {tuple(input.shape[-2:])}; got shape {tuple(target.shape)}"
    )


def mix_targets(
    target: torch.Tensor,
    lam: float,
    perm: torch.Tensor,
    num_classes: int | None = None,
    box: Box | None = None,
    exact_rows: int | None = None,
) -> torch.Tensor:
    """Mix a target the way its input was mixed.

    Int labels ``(N,)`` become ``lam * onehot(y) + (1 - lam) * onehot(y[perm])`` (float32); dense
    float ``(N, K)`` rows are mixed the same way into a new tensor; a dense map whose last two dims
    are the image's (segmentation) gets ``box`` pasted from ``perm`` in place, dtype kept.

    ``lam`` is first rounded with :func:`~cutmix_algo.sampling.label_lam` for ``exact_rows`` rows
    (default: this batch's N), so every row of int-label targets sums to exactly 1 and any
    ``exact_rows`` of them to exactly ``exact_rows`` in float32, in any summation order.
    """
    if box is not None and target.ndim >= 3:
        return paste_box_(target, box, perm)
    lam = label_lam(lam, exact_rows or max(target.shape[0], 1))
    if target.ndim == 1:
        if num_classes is None:
            raise ValueError("num_classes is required to mix integer class labels")
        labels = target.long()
        n = labels.shape[0]
        # λ and 1 - λ are multiples of 2**-k (see label_lam): each is exact in float32, each row
        # sums to exactly 1 and the batch to exactly N, so Composer's soft_cross_entropy, which
        # checks the batch total, neither warns nor rescales.
        kept = torch.full((n, 1), lam, dtype=torch.float32, device=labels.device)
        out = torch.zeros(n, num_classes, dtype=torch.float32, device=labels.device)
        out.scatter_(1, labels.unsqueeze(1), kept)
        out.scatter_add_(1, labels.index_select(0, perm).unsqueeze(1), 1.0 - kept)
        return out
    return target.mul(lam).add_(target.index_select(0, perm), alpha=1.0 - lam)


def check_input(input: object) -> torch.Tensor:
    """Return ``input`` if it is a batch CutMix can mix in place, else raise ``ValueError``."""
    if not isinstance(input, torch.Tensor):
        raise ValueError(f"input must be a torch.Tensor, got {type(input).__name__}")
    if input.ndim not in (4, 5):
        raise ValueError(
            "input must be a batch of images (N, C, H, W) or videos (N, C, T, H, W), "
            f"got {input.ndim} dims with shape {tuple(input.shape)}"
        )
    if input.shape[-2] == 0 or input.shape[-1] == 0:
        raise ValueError(
            f"input must have H >= 1 and W >= 1 (dims -2 and -1), got shape {tuple(input.shape)}"
        )
    if input.dtype not in _FLOAT_DTYPES and input.dtype != torch.uint8:
        raise ValueError(f"input dtype must be a float type or uint8, got {input.dtype}")
    if input.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            "input requires grad: CutMix mixes the input in place, which autograd does not allow "
            "here; pass input.detach() (or input.detach().clone() to keep the original)"
        )
    return input


def _check_perm(perm: object, n: int, device: torch.device) -> torch.Tensor:
    if not isinstance(perm, torch.Tensor):
        perm = torch.as_tensor(perm)
    if perm.shape != (n,) or perm.is_floating_point():
        raise ValueError(
            f"perm must be an integer tensor of shape ({n},), got {perm.dtype} {tuple(perm.shape)}"
        )
    if perm.device.type == "cpu" and not torch.equal(perm.sort().values, torch.arange(n)):
        raise ValueError(f"perm must be a permutation of range({n})")
    return perm.to(device=device, dtype=torch.long, non_blocking=True)


def cutmix_batch(
    input: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    alpha: float = 1.0,
    num_classes: int | None = None,
    generator: torch.Generator | None = None,
    box: tuple[int, int, int, int] | None = None,
    perm: torch.Tensor | None = None,
    uniform_sampling: bool = False,
) -> CutMixOutput:
    """Apply CutMix to a batch: one λ and one box for the whole batch, written into ``input``.

    **This writes into** ``input``: the box region of every image is overwritten, and the
    returned ``input`` is the same tensor object. If ``input`` is memory someone else still reads
    (a view of a dataset tensor, a batch a loader reuses), pass ``input.clone()``.
    (:class:`~cutmix_algo.CutMix`, the Composer Algorithm, makes that choice for you.)

    Sample ``i`` keeps its own pixels outside the box and receives the box region of sample
    ``perm[i]``; its target becomes ``lam * y[i] + (1 - lam) * y[perm[i]]`` where ``lam`` is the
    fraction of pixels it kept (on a fine dyadic grid, see :class:`CutMixOutput`). A sample with
    ``perm[i] == i`` receives its own pixels, so it is unchanged and its target is ``y[i]``.

    Args:
        input: ``(N, C, H, W)`` images or ``(N, C, T, H, W)`` videos (one box for every frame);
            float32/float16/bfloat16/float64 or uint8, any memory format. Written in place;
            must not require grad.
        target: int labels ``(N,)`` (needs ``num_classes``), dense float ``(N, K)``, or a map whose
            last two dims are the input's H x W (segmentation; pasted, not interpolated). ``None``
            mixes the input alone.
        alpha: Beta(alpha, alpha) parameter for λ before correction; ``0`` gives λ = 0. Default 1.
        num_classes: number of classes, required for int labels.
        generator: CPU ``torch.Generator`` for every random draw (λ, box, permutation); ``None``
            uses torch's default generator. The same seed gives the same draws on any device.
        box: ``(top, left, bottom, right)`` to use as is instead of sampling one; λ follows from it.
        perm: permutation of ``range(N)`` to use as is instead of sampling one.
        uniform_sampling: draw the box center so every pixel is equally likely to be covered.

    Returns:
        CutMixOutput: ``input`` (the same tensor, mixed), ``target``, ``lam``, ``box``, ``perm``.

    Raises:
        ValueError: if ``alpha`` is negative or NaN, ``input`` has fewer than 4 dims, input and
            target batch sizes differ, labels fall outside ``[0, num_classes)``, int labels come
            without ``num_classes``, or ``box`` lies outside the image.

    Example:
        >>> import torch
        >>> from cutmix_algo import cutmix_batch
        >>> x, y = torch.rand(8, 3, 32, 32), torch.randint(10, (8,))
        >>> out = cutmix_batch(x, y, num_classes=10, generator=torch.Generator().manual_seed(0))
        >>> out.input is x, tuple(out.target.shape), 0.0 <= out.lam <= 1.0
        (True, (8, 10), True)
    """
    alpha = check_alpha(alpha)
    input = check_input(input)
    if num_classes is not None:
        num_classes = check_int("num_classes", num_classes, low=1)
    if target is not None:
        check_target(target, input, num_classes)
    n, height, width = input.shape[0], input.shape[-2], input.shape[-1]

    if box is not None:
        box = check_box(box, height, width)
    if perm is not None:
        perm = _check_perm(perm, n, input.device)
    if box is None or perm is None:
        params = sample_params(n, height, width, alpha, generator, uniform_sampling)
        box = params.box if box is None else box
        perm = params.perm.to(input.device, non_blocking=True) if perm is None else perm
    # A batch of one receives its own pixels: nothing is mixed, and λ says so.
    lam = 1.0 if n == 1 else label_lam(kept_fraction(box, height, width), n)

    paste_box_(input, box, perm)
    mixed = None
    if target is not None:
        mixed = mix_targets(target, lam, perm.to(target.device), num_classes, box)
    return CutMixOutput(input, mixed, lam, box, perm)
