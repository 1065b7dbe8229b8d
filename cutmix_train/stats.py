"""Summary statistics for seeded comparisons: means with Student-t intervals, paired differences.

Runs of one recipe over seeds ``0..N-1`` are independent replicates, so a variant's mean eval
accuracy gets the usual t-interval ``mean ± t(1 - (1 - c) / 2, n - 1) · s / sqrt(n)``. Two
variants run with the same seeds share each seed's data subset, initial weights and data order
(everything the seed decides), so their difference is measured seed by seed: the *paired* gain
is the t-interval of the per-seed differences, much tighter than comparing two separate
intervals when seeds vary more than the methods do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Interval", "paired_difference", "t_interval"]


@dataclass(frozen=True)
class Interval:
    """A sample mean and its two-sided confidence interval.

    Attributes:
        mean: the sample mean.
        low: the interval's lower end.
        high: the interval's upper end.
        n: the number of values.
        sd: the sample standard deviation (``n - 1`` in the denominator).
    """

    mean: float
    low: float
    high: float
    n: int
    sd: float

    @property
    def half_width(self) -> float:
        """Half the interval's width: the ``±`` figure."""
        return (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        """Whether zero lies outside the interval (a difference resolved at this confidence)."""
        return self.low > 0 or self.high < 0


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """The mean of ``values`` and its two-sided Student-t confidence interval.

    Args:
        values: at least two finite numbers (independent replicates).
        confidence: the coverage, in ``(0, 1)``.

    Returns:
        Interval: mean, bounds, count and sample standard deviation.

    Raises:
        ValueError: on fewer than two values, a non-finite value, or a confidence outside (0, 1).

    Example:
        >>> iv = t_interval([0.90, 0.92, 0.94])
        >>> round(iv.mean, 4), round(iv.low, 4), round(iv.high, 4)
        (0.92, 0.8703, 0.9697)
    """
    from scipy.stats import t

    data = [float(v) for v in values]
    if len(data) < 2:
        raise ValueError(f"an interval needs at least 2 values, got {len(data)}")
    if not all(math.isfinite(v) for v in data):
        raise ValueError(f"values must be finite, got {data}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = len(data)
    mean = math.fsum(data) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in data) / (n - 1))
    half = float(t.ppf(1 - (1 - confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean=mean, low=mean - half, high=mean + half, n=n, sd=sd)


def paired_difference(base: Mapping[int, float], other: Mapping[int, float], confidence: float = 0.95) -> Interval:
    """The t-interval of ``other[seed] - base[seed]`` over the seeds both have.

    Args:
        base: value per seed of the reference variant.
        other: value per seed of the variant compared with it.
        confidence: the coverage, in ``(0, 1)``.

    Returns:
        Interval: of the per-seed differences.

    Raises:
        ValueError: if fewer than two seeds are shared (or as :func:`t_interval`).

    Example:
        >>> iv = paired_difference({0: 0.90, 1: 0.92, 2: 0.94}, {0: 0.91, 1: 0.94, 2: 0.95})
        >>> round(iv.mean, 4), iv.n
        (0.0133, 3)
    """
    seeds = sorted(set(base) & set(other))
    if len(seeds) < 2:
        raise ValueError(f"a paired difference needs at least 2 shared seeds, got {seeds}")
    return t_interval([other[s] - base[s] for s in seeds], confidence)
