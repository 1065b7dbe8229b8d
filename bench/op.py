"""Time one CutMix call: ours (in place) against Composer, torchvision v2 and timm, same inputs.

Every contender gets the same batch, the same box and (where it accepts one) the same
permutation, and every timed call starts from a fresh copy of the pristine batch made outside the
timed region, so in-place and copying implementations are compared on equal terms. Contenders run
interleaved (one call each per round, in rotating order) so load from other processes on the
machine spreads evenly over them.

How each contender is fed (none is patched; each is called as published):

* ours: ``cutmix_algo.cutmix_batch(x, y, num_classes=K, box=box, perm=perm)``.
* Composer 0.32.1: ``composer.algorithms.cutmix.cutmix.cutmix_batch(x, y, bbox=box,
  indices=perm)``. Its ``bbox`` is ``(x1, y1, x2, y2)`` applied as ``[:, :, x1:x2, y1:y2]``, i.e.
  dim 2 then dim 3, which is exactly our ``(top, left, bottom, right)``; with a ``bbox`` it draws
  no box, but it still draws (and discards) a λ from numpy's global RNG, which is seeded once.
* torchvision 0.22 ``transforms.v2.CutMix``: its ``transform(inpt, params)`` is called directly
  with fixed params ``{box: (x1, y1, x2, y2) = (left, top, right, bottom), lam_adjusted,
  labels, batch_size}`` for the images and then the labels, i.e. its whole body minus
  ``make_params`` (the λ/box draw) and pytree flattening. It cannot take a permutation: it
  always pastes from ``batch.roll(1, 0)`` (perm[i] = i - 1), which moves the same bytes as a
  random permutation.
* timm ``Mixup`` (batch mode) when ``import timm`` works; it is not installed in this project's
  environment, so it is reported as skipped.

Before timing, each contender's output is checked against ours (exact equality, with the
permutation the contender used).

A fourth row, "ours, proposed paste", times the change proposed for ``paste_box_`` (advanced
indexing instead of ``index_select``; see bench/README.md); it is not a separate library.

Usage: ``python bench/op.py [--quick] [--device cpu|cuda] [--reps N] [--threads N]``
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cutmix_algo import cutmix_batch, mix_targets  # noqa: E402

SIZES = {"224": (128, 3, 224, 224), "32": (512, 3, 32, 32)}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "uint8": torch.uint8}
NUM_CLASSES = 1000
LAM = 0.5  # the box: a centered cut of side int(side * sqrt(1 - LAM)), as the sampler makes


def centered_box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    ratio = (1.0 - lam) ** 0.5
    half_h, half_w = int(height * ratio) // 2, int(width * ratio) // 2
    cy, cx = height // 2, width // 2
    return (cy - half_h, cx - half_w, cy + half_h, cx + half_w)


class Contender:
    """A named call ``fn(x, y)`` plus the permutation it actually uses, for the check."""

    def __init__(self, name: str, fn: Callable, perm: torch.Tensor) -> None:
        self.name, self.fn, self.perm = name, fn, perm
        self.times: list[float] = []


def make_contenders(box, perm, lam, n) -> tuple[list[Contender], list[str]]:
    top, left, bottom, right = box
    contenders = [
        Contender(
            "ours (in place)",
            lambda x, y: cutmix_batch(x, y, num_classes=NUM_CLASSES, box=box, perm=perm).input,
            perm,
        )
    ]
    skipped = []

    def proposed_call(x, y):
        # The fix proposed to the lead for paste_box_: gather the box with advanced indexing
        # (one TensorIterator pass) instead of index_select on the strided box view.
        region = x[..., top:bottom, left:right]
        region.copy_(region[perm])
        mix_targets(y, lam, perm, NUM_CLASSES)
        return x

    contenders.append(Contender("ours, proposed paste (`region[perm]`)", proposed_call, perm))

    from composer.algorithms.cutmix.cutmix import cutmix_batch as composer_cutmix

    contenders.append(
        Contender(
            "Composer 0.32.1",
            lambda x, y: composer_cutmix(x, y, bbox=box, indices=perm)[0],
            perm,
        )
    )

    from torchvision.transforms.v2 import CutMix as TVCutMix

    tv = TVCutMix(alpha=1.0, num_classes=NUM_CLASSES)

    def torchvision_call(x, y):
        params = {
            "labels": y,
            "batch_size": n,
            "box": (left, top, right, bottom),
            "lam_adjusted": lam,
        }
        out = tv.transform(x, params)
        tv.transform(y, params)
        return out

    roll_perm = torch.arange(n).roll(1).to(perm.device)
    contenders.append(Contender("torchvision v2 CutMix body", torchvision_call, roll_perm))

    try:
        import timm  # noqa: F401
    except ImportError:
        skipped.append("timm Mixup (batch mode): `import timm` fails (not installed here)")
    else:  # pragma: no cover - not installed in this environment
        skipped.append("timm Mixup: importable, but not timed (it draws its own box from numpy)")
    return contenders, skipped


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_case(shape, dtype, device, reps, warmup) -> tuple[list[Contender], list[str], int]:
    n, _, height, width = shape
    gen = torch.Generator().manual_seed(0)
    if dtype == torch.uint8:
        pristine = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
    else:
        pristine = torch.rand(shape, generator=gen).to(dtype)
    pristine = pristine.to(device)
    labels = torch.randint(NUM_CLASSES, (n,), generator=gen).to(device)
    box = centered_box(height, width, LAM)
    top, left, bottom, right = box
    lam = 1.0 - (bottom - top) * (right - left) / (height * width)
    perm = torch.randperm(n, generator=gen).to(device)
    work = torch.empty_like(pristine)
    np.random.seed(0)  # Composer draws a λ it then ignores; keep that draw reproducible

    contenders, skipped = make_contenders(box, perm, lam, n)

    # Correctness first: each contender's result equals ours for the permutation it used.
    for c in contenders:
        work.copy_(pristine)
        got = c.fn(work, labels)
        want = pristine.clone()
        want[..., top:bottom, left:right] = pristine[c.perm][..., top:bottom, left:right]
        if not torch.equal(got, want):
            raise AssertionError(f"{c.name} disagrees with the expected paste")

    for _ in range(warmup):
        for c in contenders:
            work.copy_(pristine)
            c.fn(work, labels)
    for r in range(reps):
        order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
        for c in order:
            work.copy_(pristine)  # untimed: every call starts from the same pristine batch
            sync(device)
            t0 = time.perf_counter()
            c.fn(work, labels)
            sync(device)
            c.times.append(time.perf_counter() - t0)
    box_bytes = n * shape[1] * (bottom - top) * (right - left) * pristine.element_size()
    return contenders, skipped, box_bytes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer reps (5 instead of 25)")
    parser.add_argument("--reps", type=int, default=None, help="timed calls per contender")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device")
    reps = args.reps or (5 if args.quick else 25)
    warmup = 1 if args.quick else 3

    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(
        f"torch {torch.__version__}, device {device_name}, threads {torch.get_num_threads()}, "
        f"{reps} timed calls per contender after {warmup} warmup, box: centered, lam={LAM}\n"
    )
    gbps = args.device == "cuda"
    header = "| batch | dtype | contender | median ms | ÷ ours |" + (" GB/s (4× box) |" if gbps else "")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    notes: set[str] = set()
    goal = None
    for size in args.sizes:
        shape = SIZES[size]
        for dname in args.dtypes:
            contenders, skipped, box_bytes = run_case(shape, DTYPES[dname], args.device, reps, warmup)
            notes.update(skipped)
            ours = statistics.median(contenders[0].times)
            for c in contenders:
                med = statistics.median(c.times)
                row = f"| {'×'.join(map(str, shape))} | {dname} | {c.name} | {med * 1e3:.2f} | {med / ours:.2f}× |"
                if gbps:
                    row += f" {4 * box_bytes / med / 1e9:.0f} |"
                print(row, flush=True)
                if size == "224" and dname == "float32" and c.name.startswith("Composer"):
                    goal = med / ours
    print()
    if goal is not None:
        verdict = "met" if goal >= 2.0 else "NOT met"
        print(f"Goal Composer ÷ ours >= 2.0 at 128×3×224×224 float32: {goal:.2f}× ({verdict})")
    print(
        "Notes: every contender supports float32, bfloat16 and uint8 here (none skipped for dtype). "
        "torchvision pastes from batch.roll(1, 0) (it takes no permutation); ours and Composer use "
        "the same random permutation. Labels: ours mixes int labels into (N, 1000) rows, Composer "
        "returns y[perm], torchvision one-hots and mixes."
    )
    for note in sorted(notes):
        print(f"Skipped: {note}")


if __name__ == "__main__":
    main()
