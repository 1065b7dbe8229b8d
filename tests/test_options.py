"""check_options: CutMix's constructor checks, callable without Composer, with CutMix's messages."""

from __future__ import annotations

import inspect
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch

from cutmix_algo import CutMix, check_options
from cutmix_algo.options import MAX_CLASSES


def test_takes_every_constructor_keyword_and_no_other() -> None:
    names = [n for n in inspect.signature(CutMix.__init__).parameters if n != "self"]
    defaults = {n: p.default for n, p in inspect.signature(CutMix.__init__).parameters.items() if n != "self"}
    assert list(check_options(**defaults)) == names
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['cutmix_prob'\]"):
        check_options(cutmix_prob=0.5)


def test_returns_the_given_options_normalized() -> None:
    checked = check_options(alpha=1, p=np.float32(0.5), num_classes=torch.tensor(10), seed=np.int64(3),
                            uniform_sampling=np.bool_(True), minmax=[0.2, 0.8])
    assert checked == {"alpha": 1.0, "p": 0.5, "num_classes": 10, "uniform_sampling": True,
                       "seed": 3, "minmax": (0.2, 0.8)}
    assert type(checked["alpha"]) is float and type(checked["num_classes"]) is int
    assert check_options() == {}
    assert check_options(num_classes=None, seed=None, stop_at=None, minmax=None) == {
        "num_classes": None, "seed": None, "stop_at": None, "minmax": None}


def test_needs_no_composer_import() -> None:
    code = (
        "import sys\n"
        "from cutmix_algo import check_options\n"
        "check_options(alpha=1.0, p=0.5, num_classes=10, uniform_sampling=False, seed=0, inplace=None,\n"
        "              mode='sample', interpolate_loss=False, mixup_alpha=0.8, switch_prob=0.5,\n"
        "              minmax=(0.2, 0.8), stop_at=None, log_images_every=None)\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'composer'], 'composer imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_time_options_become_composer_time() -> None:
    from composer.core import Time, TimeUnit

    checked = check_options(stop_at="0.9dur", log_images_every="500ba")
    assert checked["stop_at"] == Time(0.9, TimeUnit.DURATION)
    assert checked["log_images_every"] == Time(500, TimeUnit.BATCH)


BAD: list[tuple[dict[str, Any], str]] = [
    ({"alpha": -0.1}, r"^alpha must be a finite number >= 0, got -0\.1$"),
    ({"alpha": float("nan")}, "^alpha must be a finite number"),
    ({"alpha": 1e301}, "^alpha must be at most 1e\\+300"),
    # A string or a bool is not a number, though float() takes both.
    ({"alpha": "1"}, r"^alpha must be a number >= 0, got '1'$"),
    ({"alpha": True}, r"^alpha must be a number >= 0, got True$"),
    ({"mixup_alpha": -1}, r"^mixup_alpha must be a finite number >= 0, got -1$"),
    ({"mixup_alpha": "0.8"}, r"^mixup_alpha must be a number >= 0, got '0\.8'$"),
    ({"p": 1.5}, r"^p must be a probability in \[0, 1\], got 1\.5$"),
    ({"p": "0.5"}, r"^p must be a probability in \[0, 1\], got '0\.5'$"),
    ({"switch_prob": float("nan")}, r"^switch_prob must be a probability"),
    ({"num_classes": 0}, r"^num_classes must be an integer in \[1, 2147483647\], got 0$"),
    ({"num_classes": 10**12}, r"^num_classes must be an integer in \[1, 2147483647\], got 1000000000000$"),
    ({"num_classes": 10.0}, r"^num_classes must be an integer, got 10\.0 \(float\)$"),
    ({"seed": -1}, r"^seed must be an integer in \[0, 18446744073709551615\], got -1$"),
    ({"uniform_sampling": "false"}, r"^uniform_sampling must be True or False, got 'false' \(str\)$"),
    ({"interpolate_loss": 1}, r"^interpolate_loss must be True or False, got 1 \(int\)$"),
    ({"inplace": "yes"}, r"^inplace must be True, False or None, got 'yes'$"),
    ({"mode": "elem"}, r"^mode must be one of \('batch', 'sample'\), got 'elem'$"),
    ({"minmax": (0.8, 0.2)}, r"^minmax must satisfy 0 <= low <= high <= 1"),
    ({"minmax": "01"}, r"^minmax must be two numbers \(low, high\), got '01'$"),
    ({"minmax": ("0.1", "0.5")}, r"^minmax must be two numbers"),
    ({"stop_at": "soon"}, r"^stop_at must be a Composer time string"),
    ({"stop_at": "1.5ep"}, r"^stop_at must be a Composer time string"),  # Composer: TypeError
    ({"stop_at": "infep"}, r"^stop_at must be a Composer time string"),  # Composer: OverflowError
    ({"log_images_every": "1ep"}, r"^log_images_every must be a positive batch interval"),
    ({"log_images_every": "0ba"}, r"^log_images_every must be a positive batch interval"),
    ({"interpolate_loss": True, "mode": "sample"}, r"^interpolate_loss needs one λ per batch"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD, ids=lambda v: repr(v) if isinstance(v, dict) else "")
def test_refuses_what_cutmix_refuses_with_the_same_message(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as from_check:
        check_options(**kwargs)
    with pytest.raises(ValueError) as from_cutmix:
        CutMix(**kwargs)
    assert str(from_cutmix.value) == str(from_check.value)


def test_largest_num_classes_is_accepted() -> None:
    assert check_options(num_classes=MAX_CLASSES) == {"num_classes": MAX_CLASSES}
