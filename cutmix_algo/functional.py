"""Applying CutMix to tensors: paste the box in place, mix the targets by the kept fraction.

Layout: images are ``(N, C, H, W)`` or videos ``(N, C, T, H, W)``; rows are dim -2 (H), columns
dim -1 (W). In batch mode only the box region is read and written, never a whole-batch copy: on
CPU for large regions each image's region is copied once along the permutation's cycles (about
twice the box's bytes, see :mod:`cutmix_algo.paste`), otherwise through one ``index_select``
(about four times). Sample mode on the CPU copies each large box region twice (through a buffer
of the boxes' size); for small boxes and on other devices it needs one batch-sized temporary, the
permuted batch, and so does MixUp.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch

from cutmix_algo.options import MODES, check_alpha, check_minmax, check_mode, check_num_classes
from cutmix_algo.paste import gather_boxes_, permute_batch_
from cutmix_algo.sampling import (
    Box,
    CutMixParams,
    RowParams,
    check_box,
    check_generator,
    kept_fraction,
    label_lam,
    sample_params,
    sample_row_params,
)

__all__ = [
    "MODES",
    "CutMixOutput",
    "apply_params",
    "box_mask",
    "check_mode",
    "check_input",
    "check_target",
    "cutmix_batch",
    "mix_targets",
    "mixup_",
    "one_hot",
    "LAYOUTS",
    "paste_box_",
    "paste_box_hwc_",
    "paste_boxes_",
    "paste_boxes_hwc_",
]

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

#: Channel counts an image batch usually has; a 4-D input with one of these last and at least
#: ``_MIN_SIDE`` at dims 1 and 2 is most likely channels-last ``(N, H, W, C)`` images passed where
#: ``(N, C, H, W)`` is read.
_CHANNEL_COUNTS = (1, 3, 4)
_MIN_SIDE = 8
_warned_shapes: set[tuple[int, ...]] = set()


def _warn_if_channels_last(input: torch.Tensor) -> None:
    shape = tuple(input.shape)
    if len(shape) != 4 or shape[-1] not in _CHANNEL_COUNTS or min(shape[1], shape[2]) < _MIN_SIDE:
        return
    if shape in _warned_shapes:
        return
    _warned_shapes.add(shape)
    warnings.warn(
        f"input has shape {shape}, which looks channels-last (N, H, W, C); CutMix reads images as "
        f"(N, C, H, W) and cuts its box over the last two dims, here {shape[2]} x {shape[3]}. "
        "If these are (N, H, W, C) images, pass input.permute(0, 3, 1, 2) (a view; "
        "torch.channels_last memory format is fine). Warned once per shape.",
        UserWarning,
        stacklevel=3,
    )


class CutMixOutput(NamedTuple):
    """What :func:`cutmix_batch` returns (in sample mode ``lam`` is ``(N,)`` and ``box`` ``(N, 4)``).

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
    lam: float | torch.Tensor
    box: Box | torch.Tensor
    perm: torch.Tensor


def paste_box_(x: torch.Tensor, box: Box, perm: torch.Tensor) -> torch.Tensor:
    """Overwrite ``x[i, ..., box]`` with ``x[perm[i], ..., box]`` for every ``i``, in place.

    Works for any number of dims between the batch and the last two (channels, frames), any dtype
    and any memory format; the layout of ``x`` is untouched.

    Raises:
        ValueError: if ``box`` is not 4 integers with ``0 <= top <= bottom <= H`` and
            ``0 <= left <= right <= W`` (a negative bound would count from the end as a slice).
    """
    top, left, bottom, right = check_box(box, x.shape[-2], x.shape[-1])
    if bottom <= top or right <= left:
        return x
    permute_batch_(x[..., top:bottom, left:right], perm)  # how the bytes move: see cutmix_algo.paste
    return x


def box_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(N, H, W)`` bool: True inside row ``i``'s box ``boxes[i] = (top, left, bottom, right)``."""
    rows = torch.arange(height, device=boxes.device)
    cols = torch.arange(width, device=boxes.device)
    top, left, bottom, right = boxes.unbind(1)
    in_rows = (rows >= top[:, None]) & (rows < bottom[:, None])
    in_cols = (cols >= left[:, None]) & (cols < right[:, None])
    return in_rows[:, :, None] & in_cols[:, None, :]


def paste_boxes_(x: torch.Tensor, boxes: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Per-sample paste, in place: ``x[i, ..., box_i] = x[perm[i], ..., box_i]`` for every ``i``.

    On the CPU, for boxes of 16 KiB or more per image on average, each box region is copied
    once into a buffer of the boxes' total size and once into place
    (:func:`cutmix_algo.paste.gather_boxes_`). Otherwise, vectorized on ``x``'s device: a mask
    from the per-row box bounds selects, pixel by pixel, between ``x`` and the permuted batch,
    one batch-sized temporary. No host-device sync: ``boxes`` and ``perm`` are moved with
    ``non_blocking``. Bounds are not checked (that would read them on the host): each box is
    clipped to the image, as its mask is, so a negative bound counts as 0, never from the end.
    """
    if gather_boxes_(x, boxes, perm):
        return x
    n, height, width = x.shape[0], x.shape[-2], x.shape[-1]
    boxes = boxes.to(x.device, non_blocking=True)
    mask = box_mask(boxes, height, width).view(n, *([1] * (x.ndim - 3)), height, width)
    source = x.index_select(0, perm.to(x.device, non_blocking=True))
    return torch.where(mask, source, x, out=x)


#: The image layouts :func:`apply_params` takes: channels-first (the online path) or channels-last.
LAYOUTS = ("NCHW", "NHWC")


def _hwc_rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    if x.ndim != 4 or not x.is_contiguous():
        raise ValueError(f"expected contiguous (N, H, W, C) images, got shape {tuple(x.shape)}")
    n, height, width, channels = x.shape
    return x.view(n, 1, height, width * channels), channels


def paste_box_hwc_(x: torch.Tensor, box: Box, perm: torch.Tensor) -> torch.Tensor:
    """:func:`paste_box_` for contiguous channels-last ``(N, H, W, C)`` images, in place.

    Channels are innermost, so pixel columns ``[left, right)`` of an ``(H, W, C)`` image are the
    element columns ``[left * C, right * C)`` of its ``(H, W * C)`` view: the box is pasted into
    contiguous rows, about five times faster than through a channel-first strided view.
    """
    rows, channels = _hwc_rows(x)
    top, left, bottom, right = box
    paste_box_(rows, Box(top, left * channels, bottom, right * channels), perm)
    return x


def paste_boxes_hwc_(x: torch.Tensor, boxes: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """:func:`paste_boxes_` (a box per row) for contiguous channels-last ``(N, H, W, C)`` images."""
    rows, channels = _hwc_rows(x)
    scale = torch.tensor([1, channels, 1, channels], dtype=boxes.dtype, device=boxes.device)
    paste_boxes_(rows, boxes * scale, perm)
    return x


def mixup_(x: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """MixUp in place: ``x = lam * x + (1 - lam) * x[perm]``.

    uint8 images are blended in float32 and rounded back to uint8 (as timm's fast collate MixUp
    does); the rounding moves a pixel by at most half a grey level.
    """
    source = x.index_select(0, perm)
    if x.dtype == torch.uint8:
        blended = x.to(torch.float32).mul_(lam).add_(source.to(torch.float32), alpha=1.0 - lam)
        return x.copy_(blended.round_().clamp_(0, 255))
    return x.mul_(lam).add_(source, alpha=1.0 - lam)


def one_hot(labels: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Dense ``(N, K)`` rows with a 1 at each label.

    Raises:
        ValueError: if ``labels`` is not a 1-d integer tensor, or (on the CPU, where checking
            costs no sync) holds a value outside ``[0, num_classes)``.
    """
    num_classes = _check_labels(labels, num_classes, "labels")
    out = torch.zeros(labels.shape[0], num_classes, dtype=dtype, device=labels.device)
    return out.scatter_(1, labels.long().unsqueeze(1), 1.0)


def _is_dense_map(target: torch.Tensor, input: torch.Tensor) -> bool:
    return target.ndim >= 3 and target.shape[-2:] == input.shape[-2:]


def _check_labels(labels: object, num_classes: int | None, name: str = "target") -> int:
    """Return ``num_classes`` checked, or raise ``ValueError`` unless ``labels`` is a 1-d tensor of
    integer class labels (not bool) that, on the CPU, lie in ``[0, num_classes)``."""
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"{name} must be a 1-d tensor of integer class labels, got {shape}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(
            f"1-d {name} must hold integer class labels, got dtype {labels.dtype}"
            + (f"; bools are not class indices: pass {name}.long() if they are"
               if labels.dtype == torch.bool else "")
        )
    if num_classes is None:
        raise ValueError(
            "num_classes is required to mix integer class labels (target of shape (N,)); "
            "pass num_classes=K or give dense (N, K) float targets"
        )
    num_classes = check_num_classes(num_classes)
    # Checking values needs them on the host: free on the CPU, a sync on an accelerator, where
    # callers (the Algorithm) check before moving the batch.
    if labels.device.type == "cpu" and labels.numel():
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"{name if name == 'labels' else name + ' labels'} must lie in "
                f"[0, num_classes={num_classes}), "
                f"got values in [{low}, {high}]"
            )
    return num_classes


def _byte_span(t: torch.Tensor) -> tuple[int, int]:
    """The bytes of ``t``'s storage from its first element to past its last, ``[start, end)``."""
    size = t.element_size()
    start = t.storage_offset() * size
    last = sum((n - 1) * stride for n, stride in zip(t.shape, t.stride(), strict=True))
    return start, start + (last + 1) * size


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether an element of ``a`` and one of ``b`` share memory: exact, with no tensor data read.

    Two views of one buffer can interleave without sharing an element (``batch[:, :3]`` and
    ``batch[:, 3]``, images and a map packed in one tensor), so where their byte ranges overlap,
    ``a``'s bytes are marked in a host mask of that range (built from shapes and strides alone)
    and ``b``'s looked up. Tensors in different buffers, on different devices, empty or without
    memory (meta) share nothing.
    """
    if a.device != b.device or not a.numel() or not b.numel():
        return False
    pointer = a.untyped_storage().data_ptr()
    if pointer == 0 or pointer != b.untyped_storage().data_ptr():
        return False
    (a_start, a_end), (b_start, b_end) = _byte_span(a), _byte_span(b)
    if a_end <= b_start or b_end <= a_start:
        return False
    low = min(a_start, b_start)
    marks = torch.zeros(max(a_end, b_end) - low, dtype=torch.bool)

    def bytes_of(t: torch.Tensor) -> torch.Tensor:
        size = t.element_size()
        strides = tuple(stride * size for stride in t.stride())
        return marks.as_strided((*t.shape, size), (*strides, 1), t.storage_offset() * size - low)

    bytes_of(a).fill_(True)
    return bool(bytes_of(b).any())


def _check_no_repeated_memory(t: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``t`` is an expanded view: pasting into it would write shared memory."""
    for dim, (size, stride) in enumerate(zip(t.shape, t.stride(), strict=True)):
        if size > 1 and stride == 0:
            raise ValueError(
                f"{name} of shape {tuple(t.shape)} is an expanded view (stride 0 in dim {dim}): its "
                f"entries share memory, so pasting a box into one would write into others; "
                f"pass {name}.contiguous()"
            )


def _check_target_memory(target: torch.Tensor, input: torch.Tensor) -> None:
    """Raise ``ValueError`` if ``target`` is on another device than ``input``, shares memory with
    it, or is a map (pasted in place) that is an expanded view."""
    if target.device != input.device:
        raise ValueError(f"target must be on the input's device ({input.device}), got {target.device}")
    if _shares_memory(target, input):
        raise ValueError(
            f"target (shape {tuple(target.shape)}) shares memory with input: the input's box is "
            "pasted first, so the target would be mixed from pasted values (a map pasted twice); "
            "pass target.clone(), or no target to mix the input alone"
        )
    if _is_dense_map(target, input):
        _check_no_repeated_memory(target, "target")


def check_memory(input: torch.Tensor, target: torch.Tensor | None) -> None:
    """Raise ``ValueError`` unless pasting into ``input`` (and a ``target`` map) writes each element
    once: ``input`` is not an expanded view and ``target`` shares no memory with it."""
    _check_no_repeated_memory(input, "input")
    if target is not None:
        _check_target_memory(target, input)


def check_target(target: torch.Tensor, input: torch.Tensor, num_classes: int | None) -> None:
    """Raise ``ValueError`` unless ``target`` is a class target or a dense map ``input`` can mix.

    NaN or infinite dense ``(N, K)`` rows are refused on the CPU, in one pass over them; on
    another device they are not read, which would sync the host.
    """
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
        if num_classes is not None and target.shape[1] != check_num_classes(num_classes):
            raise ValueError(
                f"dense target has {target.shape[1]} classes but num_classes={num_classes}"
            )
        if target.device.type == "cpu" and not bool(torch.isfinite(target).all()):
            raise ValueError(
                "dense target holds NaN or infinite values: mixing would spread them into the "
                "rows each is mixed with"
            )
        return
    raise ValueError(
        "target must be int labels (N,), dense float (N, K), or a map with the input's "
        f"H x W {tuple(input.shape[-2:])}; got shape {tuple(target.shape)}"
    )


def mix_targets(
    target: torch.Tensor,
    lam: float | torch.Tensor,
    perm: torch.Tensor,
    num_classes: int | None = None,
    box: Box | torch.Tensor | None = None,
    exact_rows: int | None = None,
) -> torch.Tensor:
    """Mix a target the way its input was mixed.

    Int labels ``(N,)`` become ``lam * onehot(y) + (1 - lam) * onehot(y[perm])`` (float32); dense
    float ``(N, K)`` rows are mixed the same way into a new tensor; a dense map whose last two dims
    are the image's (segmentation) gets ``box`` pasted from ``perm`` in place, dtype kept (a map
    without ``box`` raises ``ValueError``).

    ``lam`` is first rounded with :func:`~cutmix_algo.sampling.label_lam` for ``exact_rows`` rows
    (default: this batch's N), so every row of int-label targets sums to exactly 1 and any
    ``exact_rows`` of them to exactly ``exact_rows`` in float32, in any summation order.

    In sample mode ``lam`` is an ``(N,)`` tensor (one weight per row) and ``box`` an ``(N, 4)``
    tensor of per-row boxes; the same rules hold row by row.
    """
    if target.ndim >= 3:
        if box is None:
            raise ValueError(
                f"target of shape {tuple(target.shape)} is a map, which is pasted with the input's box: "
                "pass box (blending class ids by lam would make up classes)"
            )
        if isinstance(box, torch.Tensor):
            return paste_boxes_(target, box, perm)
        return paste_box_(target, box, perm)
    lam = label_lam(lam, exact_rows or max(target.shape[0], 1))
    per_row = isinstance(lam, torch.Tensor)
    if target.ndim == 1:
        num_classes = _check_labels(target, num_classes)
        labels = target.long()
        n = labels.shape[0]
        # λ and 1 - λ are multiples of 2**-k (see label_lam): each is exact in float32, each row
        # sums to exactly 1 and the batch to exactly N, so Composer's soft_cross_entropy, which
        # checks the batch total, neither warns nor rescales.
        if per_row:
            kept = lam.to(device=labels.device, dtype=torch.float32, non_blocking=True).unsqueeze(1)
        else:
            kept = torch.full((n, 1), lam, dtype=torch.float32, device=labels.device)
        out = torch.zeros(n, num_classes, dtype=torch.float32, device=labels.device)
        out.scatter_(1, labels.unsqueeze(1), kept)
        out.scatter_add_(1, labels.index_select(0, perm).unsqueeze(1), 1.0 - kept)
        return out
    if per_row:
        kept = lam.to(device=target.device, dtype=torch.float32, non_blocking=True).unsqueeze(1).to(target.dtype)
        return target * kept + target.index_select(0, perm) * (1.0 - kept)
    return target.mul(lam).add_(target.index_select(0, perm), alpha=1.0 - lam)


def check_input(input: object) -> torch.Tensor:
    """Return ``input`` if it is a batch CutMix can mix in place, else raise ``ValueError``.

    Warns once per shape when a 4-D ``input`` looks channels-last (its last dim 1, 3 or 4, dims 1
    and 2 at least 8), since CutMix would then cut its box across width and channels.
    """
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
    _warn_if_channels_last(input)
    return input


def _check_perm(perm: object, n: int, device: torch.device) -> torch.Tensor:
    perm = torch.as_tensor(perm)
    if perm.shape != (n,) or perm.is_floating_point():
        raise ValueError(
            f"perm must be an integer tensor of shape ({n},), got {perm.dtype} {tuple(perm.shape)}"
        )
    if perm.device.type == "cpu" and not torch.equal(perm.sort().values, torch.arange(n)):
        raise ValueError(f"perm must be a permutation of range({n})")
    return perm.to(device=device, dtype=torch.long, non_blocking=True)


def apply_params(
    input: torch.Tensor,
    target: torch.Tensor | None,
    params: CutMixParams | RowParams,
    num_classes: int | None = None,
    exact_rows: int | None = None,
    layout: str = "NCHW",
) -> CutMixOutput:
    """Apply already-drawn CutMix parameters to a checked batch, in place: the one applier.

    :func:`cutmix_batch`, the Composer Algorithm and the offline writer all mix through this, so
    online and offline mixing agree by construction. ``params`` is a batch-mode
    :class:`~cutmix_algo.sampling.CutMixParams` (one box) or a sample-mode
    :class:`~cutmix_algo.sampling.RowParams` (a box per row). ``exact_rows`` is the number of
    label rows whose sum must stay exact (default: this batch's N; see :func:`mix_targets`).

    ``layout="NHWC"`` takes channels-last ``(N, H, W, C)`` images (the writer's numpy batches) and
    pastes through :func:`paste_box_hwc_` / :func:`paste_boxes_hwc_`; its target must be class
    labels or dense ``(N, K)`` rows, not a map.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    hwc = layout == "NHWC"
    if hwc and (input.ndim != 4 or (target is not None and target.ndim > 2)):
        raise ValueError(
            "layout='NHWC' takes (N, H, W, C) images and (N,) or (N, K) targets, got input "
            f"{tuple(input.shape)}" + ("" if target is None else f" and target {tuple(target.shape)}")
        )
    n = input.shape[0]
    height, width = (input.shape[1], input.shape[2]) if hwc else (input.shape[-2], input.shape[-1])
    rows = exact_rows or max(n, 1)
    perm = params.perm.to(input.device, non_blocking=True)
    if isinstance(params, RowParams):
        lam: float | torch.Tensor = label_lam(params.lam, rows)
        box: Box | torch.Tensor = params.boxes
        (paste_boxes_hwc_ if hwc else paste_boxes_)(input, params.boxes, perm)
    else:
        box = params.box
        # A batch of one receives its own pixels: nothing is mixed, and λ says so.
        lam = 1.0 if n == 1 else label_lam(kept_fraction(box, height, width), rows)
        (paste_box_hwc_ if hwc else paste_box_)(input, box, perm)
    mixed = None
    if target is not None:
        mixed = mix_targets(target, lam, perm.to(target.device), num_classes, box, exact_rows=rows)
    return CutMixOutput(input, mixed, lam, box, perm)


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
    mode: str = "batch",
    minmax: tuple[float, float] | None = None,
) -> CutMixOutput:
    """Apply CutMix to a batch, written into ``input``: one λ and box per batch, or per sample.

    **This writes into** ``input``: the box region of every image is overwritten, and the
    returned ``input`` is the same tensor object. If ``input`` is memory someone else still reads
    (a view of a dataset tensor, a batch a loader reuses), pass ``input.clone()``. A
    segmentation-map ``target`` is pasted in place too (``out.target is target``); class labels
    and dense rows are not written, their mix is a new tensor.
    (:class:`~cutmix_algo.CutMix`, the Composer Algorithm, makes that choice for you.)

    Sample ``i`` keeps its own pixels outside the box and receives the box region of sample
    ``perm[i]``; its target becomes ``lam * y[i] + (1 - lam) * y[perm[i]]`` where ``lam`` is the
    fraction of pixels it kept (on a fine dyadic grid, see :class:`CutMixOutput`). A sample with
    ``perm[i] == i`` receives its own pixels, so it is unchanged and its target is ``y[i]``.

    Args:
        input: ``(N, C, H, W)`` images or ``(N, C, T, H, W)`` videos (one box for every frame);
            float32/float16/bfloat16/float64 or uint8, any memory format. Written in place, so
            it must not require grad nor be an expanded (stride-0) view. A 4-D shape that looks
            channels-last (last dim 1, 3 or 4, dims 1 and 2 at least 8) is mixed as given, with
            a warning once per shape.
        target: int labels ``(N,)`` (needs ``num_classes``), dense float ``(N, K)``, or a map whose
            last two dims are the input's H x W (segmentation; pasted, not interpolated), on the
            input's device and sharing no memory with it. ``None`` mixes the input alone. Dense
            rows are mixed as given, row by row: they need not sum to 1 (multi-hot, smoothed or
            weighted rows are legitimate targets), but NaN or infinite values are refused where
            reading them is free, on the CPU.
        alpha: Beta(alpha, alpha) parameter for λ before correction, a number (not a string);
            ``0`` gives λ = 0. Default 1.
        num_classes: number of classes, required for int labels; at most ``2**31 - 1``.
        generator: CPU ``torch.Generator`` for every random draw (λ, box, permutation); ``None``
            uses torch's default generator. The same seed gives the same draws on any device.
        box: ``(top, left, bottom, right)`` to use as is instead of sampling one; λ follows from it
            (batch mode only).
        perm: permutation of ``range(N)`` to use as is instead of sampling one (batch mode only).
        uniform_sampling: draw the box center so every pixel is equally likely to be covered.
        mode: ``"batch"`` (default, the paper's): one λ and box for the batch, only the box region
            is touched. ``"sample"``: every row draws its own λ and box (the Keras example's,
            kornia's ``RandomCutMixV2``, timm's ``elem``); ``lam`` and ``box`` are then ``(N,)``
            and ``(N, 4)`` tensors. On the CPU large boxes are copied through a buffer of their
            size; small ones, and every box on other devices, go through a mask and one
            batch-sized temporary (the permuted batch) (see :func:`paste_boxes_`).
        minmax: ``(low, high)``: draw the box's side fractions uniformly from it instead of from
            λ (timm's ``cutmix_minmax``); λ is then the kept fraction as always.

    Returns:
        CutMixOutput: ``input`` (the same tensor, mixed), ``target``, ``lam``, ``box``, ``perm``.

    Raises:
        ValueError: naming the argument, before anything is written, if ``alpha`` is not a
            finite number >= 0; ``input`` is not a 4-D or 5-D float or uint8 batch, requires grad
            or is an expanded view; ``target`` has another batch size, lies on another device
            than ``input``, shares memory with it, is a map that is an expanded view, or holds
            NaN or inf in dense rows on the CPU; labels are not integers (bool included) or, on
            the CPU, fall outside ``[0, num_classes)``; int labels come without ``num_classes``
            or ``num_classes`` is not in ``[1, 2**31 - 1]``; ``box`` lies outside the image;
            ``generator`` is not a CPU ``torch.Generator``; or ``mode``/``minmax`` is not one of
            the accepted values. Values on an accelerator (labels, dense rows) are not read, so
            that no sync is made: an out-of-range label meets the device's own index assert, and
            a NaN row is mixed into its partner's. Meta tensors (shapes, no data) are mixed like
            any device's when input and target are both on ``meta``.

    Example:
        >>> import torch
        >>> from cutmix_algo import cutmix_batch
        >>> x, y = torch.rand(8, 3, 32, 32), torch.randint(10, (8,))
        >>> out = cutmix_batch(x, y, num_classes=10, generator=torch.Generator().manual_seed(0))
        >>> out.input is x, tuple(out.target.shape), 0.0 <= out.lam <= 1.0
        (True, (8, 10), True)
    """
    alpha = check_alpha(alpha)
    mode = check_mode(mode)
    minmax = check_minmax(minmax)
    generator = check_generator(generator)  # checked even when box and perm leave it unused
    input = check_input(input)
    if num_classes is not None:
        num_classes = check_num_classes(num_classes)
    if target is not None:
        check_target(target, input, num_classes)
    check_memory(input, target)
    n, height, width = input.shape[0], input.shape[-2], input.shape[-1]

    if mode == "sample":
        if box is not None or perm is not None:
            raise ValueError("box and perm can only be given in mode='batch'")
        params: CutMixParams | RowParams = sample_row_params(
            n, height, width, alpha, generator, uniform_sampling, minmax
        )
        return apply_params(input, target, params, num_classes)
    if box is not None:
        box = check_box(box, height, width)
    if perm is not None:
        perm = _check_perm(perm, n, input.device)
    if box is None or perm is None:
        drawn = sample_params(n, height, width, alpha, generator, uniform_sampling, minmax)
        box = drawn.box if box is None else box
        perm = drawn.perm if perm is None else perm
    params = CutMixParams(kept_fraction(box, height, width), box, perm)
    return apply_params(input, target, params, num_classes)

