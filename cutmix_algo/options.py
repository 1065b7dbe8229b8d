"""Checking CutMix's options: one check per option, and :func:`check_options` for any of them.

Each check returns the value normalized (a float, an int, a bool, a ``Time``) or raises one
``ValueError`` that names the option and quotes the value. :class:`~cutmix_algo.CutMix` checks its
constructor arguments here; a recipe or CLI can check the same values before building anything.

Nothing here imports Composer, except for the two time options ``stop_at`` and
``log_images_every``: Composer's ``Time`` parses them, so passing either (not ``None``) imports
Composer, which takes seconds and replaces the process's SIGTERM/SIGINT handlers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

__all__ = [
    "MAX_ALPHA",
    "MAX_CLASSES",
    "MODES",
    "check_alpha",
    "check_flag",
    "check_inplace",
    "check_int",
    "check_minmax",
    "check_mode",
    "check_num_classes",
    "check_options",
    "check_probability",
]

#: The largest alpha accepted: numpy's Beta sampler returns 0 instead of about 0.5 from roughly
#: 9e307 on, so a larger alpha would silently act as alpha = 0 (Beta(1e300, 1e300) is 0.5).
MAX_ALPHA = 1e300

#: The largest ``num_classes`` accepted, int32's largest value. The largest classifier heads have
#: about 10**7 classes; one dense float32 row of this many is already 8 GiB, so a larger value is
#: a typo (``10**12``), refused before torch tries to allocate ``N x num_classes`` floats.
MAX_CLASSES = 2**31 - 1

MODES = ("batch", "sample")

# Strings convert with float() ("1" -> 1.0) and bools are ints: neither is a number a user meant.
_NOT_NUMBERS = (str, bytes, bool, np.bool_)


def _number(value: object, message: str) -> float:
    """``value`` as a float, or ``ValueError(message)`` if it is not a number."""
    if isinstance(value, _NOT_NUMBERS):
        raise ValueError(message)
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(message) from None


def check_alpha(alpha: object, name: str = "alpha") -> float:
    """Return a Beta parameter as a float, or raise ``ValueError`` naming ``name``.

    Refused: anything but a number (a string such as ``"1"`` and a bool included), a negative,
    NaN or infinite value, and a value above :data:`MAX_ALPHA` (where numpy's sampler breaks down).
    """
    value = _number(alpha, f"{name} must be a number >= 0, got {alpha!r}")
    if math.isnan(value) or value < 0 or math.isinf(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {alpha!r}")
    if value > MAX_ALPHA:
        raise ValueError(
            f"{name} must be at most {MAX_ALPHA:g} (Beta(alpha, alpha) is 0.5 there; numpy's sampler "
            f"returns 0 for larger values), got {alpha!r}"
        )
    return value


def check_probability(value: object, name: str) -> float:
    """Return a probability as a float, or raise ``ValueError`` unless it is a number in [0, 1]."""
    message = f"{name} must be a probability in [0, 1], got {value!r}"
    number = _number(value, message)
    if not 0.0 <= number <= 1.0:  # also rejects NaN
        raise ValueError(message)
    return number


def check_int(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as a Python int, or raise ``ValueError`` naming ``name`` and the range.

    Any integer type is accepted (``int``, numpy integers, 0-d integer tensors), but not ``bool``
    or floats, even integral ones: a float where an int belongs is usually a mistake upstream.
    """
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"in [{low}, {high}]" if low is not None and high is not None else (
            f">= {low}" if low is not None else f"<= {high}"
        )
        raise ValueError(f"{name} must be an integer {bounds}, got {value}")
    return value


def check_num_classes(num_classes: object) -> int:
    """Return ``num_classes`` as an int in ``[1, MAX_CLASSES]``, or raise ``ValueError``."""
    return check_int("num_classes", num_classes, low=1, high=MAX_CLASSES)


def check_flag(value: object, name: str) -> bool:
    """Return ``value`` if it is a bool: a string such as ``"false"`` would otherwise count as True."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def check_inplace(inplace: object) -> bool | None:
    """Return ``inplace`` if it is ``True``, ``False`` or ``None``, else raise ``ValueError``."""
    if inplace is not None and not isinstance(inplace, bool):
        raise ValueError(f"inplace must be True, False or None, got {inplace!r}")
    return inplace


def check_mode(mode: object) -> str:
    """Return ``mode`` if it is ``"batch"`` or ``"sample"``, else raise ``ValueError``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return str(mode)


def check_minmax(minmax: object) -> tuple[float, float] | None:
    """Return ``minmax`` as ``(low, high)`` with ``0 <= low <= high <= 1``, or raise ``ValueError``."""
    if minmax is None:
        return None
    message = f"minmax must be two numbers (low, high), got {minmax!r}"
    try:
        low, high = minmax  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if isinstance(minmax, _NOT_NUMBERS):  # "01" unpacks into two digits
        raise ValueError(message)
    low, high = _number(low, message), _number(high, message)
    if not 0.0 <= low <= high <= 1.0:  # also rejects NaN
        raise ValueError(f"minmax must satisfy 0 <= low <= high <= 1, got {minmax!r}")
    return low, high


def _check_seed(seed: object) -> int | None:
    return None if seed is None else check_int("seed", seed, low=0, high=2**64 - 1)


def _parse_time(value: object) -> Any:
    """A Composer ``Time`` from a ``Time`` or a time string, or ``None`` if it is neither."""
    from composer.core import Time  # only for the time options: Composer's import takes seconds

    if isinstance(value, Time):
        return value
    try:
        return Time.from_timestring(str(value))
    except (ValueError, TypeError, OverflowError):  # "soon"; "1.5ep" (TypeError); "infep"
        return None


def _check_stop_at(stop_at: object) -> Any:
    if stop_at is None:
        return None
    time = _parse_time(stop_at)
    if time is None:
        raise ValueError(
            f"stop_at must be a Composer time string such as '90ep' or '0.9dur', got {stop_at!r}"
        )
    return time


def _check_log_images_every(interval: object) -> Any:
    if interval is None:
        return None
    time = _parse_time(interval)
    if time is None or time.unit.value != "ba" or int(time.value) < 1:
        raise ValueError(
            f"log_images_every must be a positive batch interval such as '500ba', got {interval!r}"
        )
    return time


def _unchecked(value: Any) -> Any:
    return value


#: Every keyword of ``CutMix.__init__``, in its order, with its check. The batch keys are any
#: index, name or (getter, setter) pair; a wrong one is named when the first batch lacks it.
_CHECKS: dict[str, Callable[[Any], Any]] = {
    "alpha": check_alpha,
    "p": partial(check_probability, name="p"),
    "num_classes": lambda v: None if v is None else check_num_classes(v),
    "uniform_sampling": partial(check_flag, name="uniform_sampling"),
    "input_key": _unchecked,
    "target_key": _unchecked,
    "seed": _check_seed,
    "stop_at": _check_stop_at,
    "inplace": check_inplace,
    "mode": check_mode,
    "interpolate_loss": partial(check_flag, name="interpolate_loss"),
    "mixup_alpha": partial(check_alpha, name="mixup_alpha"),
    "switch_prob": partial(check_probability, name="switch_prob"),
    "minmax": check_minmax,
    "log_images_every": _check_log_images_every,
}


def check_options(**options: Any) -> dict[str, Any]:
    """Check any of :class:`~cutmix_algo.CutMix`'s constructor arguments, as the constructor does.

    Each option is checked in the constructor's order, then the one rule between two of them
    (``interpolate_loss`` needs ``mode="batch"``; an option not given counts as its default).

    Args:
        **options: any subset of ``CutMix.__init__``'s keywords: ``alpha``, ``p``,
            ``num_classes``, ``uniform_sampling``, ``input_key``, ``target_key``, ``seed``,
            ``stop_at``, ``inplace``, ``mode``, ``interpolate_loss``, ``mixup_alpha``,
            ``switch_prob``, ``minmax``, ``log_images_every``.

    Returns:
        dict[str, Any]: the options given, normalized: numbers as ``float`` or ``int``, flags as
        ``bool``, ``minmax`` as a tuple, ``stop_at`` and ``log_images_every`` as Composer ``Time``
        (``None`` stays ``None``; the batch keys are returned as given).

    Raises:
        TypeError: for a keyword that is not one of ``CutMix``'s.
        ValueError: naming the first option whose value ``CutMix`` would refuse, and quoting it.

    Example:
        >>> check_options(alpha=1, p=0.5, minmax=[0.2, 0.8])
        {'alpha': 1.0, 'p': 0.5, 'minmax': (0.2, 0.8)}
        >>> check_options(alpha="1")
        Traceback (most recent call last):
        ...
        ValueError: alpha must be a number >= 0, got '1'
    """
    unknown = sorted(set(options) - set(_CHECKS))
    if unknown:
        raise TypeError(
            f"check_options() got unexpected keyword arguments {unknown}; CutMix takes {list(_CHECKS)}"
        )
    checked = {name: check(options[name]) for name, check in _CHECKS.items() if name in options}
    if checked.get("interpolate_loss") and checked.get("mode", "batch") == "sample":
        raise ValueError(
            "interpolate_loss needs one λ per batch (mode='batch'): a model's loss is one "
            "number per batch, so per-row λ cannot weight it; use dense targets in sample mode"
        )
    return checked
