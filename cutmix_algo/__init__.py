"""CutMix for MosaicML Composer: one λ and one box per batch, mixed in place on the device.

``CutMix`` and ``DenseTargetMetric`` need Composer, whose import is slow and replaces the
process's SIGTERM/SIGINT handlers; they load on first use, so the functional API, the option
checks (``check_options``) and the offline writer's worker processes import in a fraction of a
second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cutmix_algo.functional import CutMixOutput, cutmix_batch, mix_targets, one_hot, paste_box_
from cutmix_algo.options import check_options
from cutmix_algo.sampling import (
    Box,
    CutMixParams,
    derive_generator,
    kept_fraction,
    sample_box,
    sample_lam,
    sample_params,
)

if TYPE_CHECKING:
    from cutmix_algo.algorithm import CutMix, DenseTargetMetric

__all__ = [
    "Box",
    "CutMix",
    "CutMixOutput",
    "CutMixParams",
    "DenseTargetMetric",
    "check_options",
    "cutmix_batch",
    "derive_generator",
    "kept_fraction",
    "mix_targets",
    "one_hot",
    "paste_box_",
    "sample_box",
    "sample_lam",
    "sample_params",
]

_LAZY = {"CutMix", "DenseTargetMetric"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from cutmix_algo import algorithm

        return getattr(algorithm, name)
    raise AttributeError(f"module 'cutmix_algo' has no attribute {name!r}")
