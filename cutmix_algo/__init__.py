"""CutMix for MosaicML Composer: one λ and one box per batch, mixed in place on the device."""

from __future__ import annotations

from cutmix_algo.algorithm import CutMix, DenseTargetMetric
from cutmix_algo.functional import CutMixOutput, cutmix_batch, mix_targets, one_hot, paste_box_
from cutmix_algo.sampling import (
    Box,
    CutMixParams,
    derive_generator,
    kept_fraction,
    sample_box,
    sample_lam,
    sample_params,
)

__all__ = [
    "Box",
    "CutMix",
    "CutMixOutput",
    "CutMixParams",
    "DenseTargetMetric",
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
