"""Time per-sample CutMix (a λ and box per image): ours against kornia and timm, same inputs.

Contenders, each on the same batch and targets, each drawing its own boxes (per-sample boxes
cannot be shared across libraries, so the work is the same in distribution, not in the numbers):
* ours: ``cutmix_batch(x, y, mode="sample")``, in place (on the CPU, large boxes by numpy copies
  through a buffer of the boxes' size, small ones vectorized with a mask);
* kornia ``RandomCutMixV2(p=1, use_correct_lambda=True)`` (mask-based, a box per sample);
* timm ``Mixup(cutmix_alpha=1, mixup_alpha=0, mode="elem")`` (a Python loop over rows on a clone).
A missing library is skipped and said so. Prints median ms per call and the ratio to ours, then
the command line. kornia and timm are not the project's dependencies: ``pip install kornia timm``
into the venv to time them (they install beside torch 2.7.0 without changing it).

    .venv/bin/python bench/op_sample.py                 # 128x3x224x224 and 512x3x32x32, float32
    .venv/bin/python bench/op_sample.py --reps 5 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch

from cutmix_algo import cutmix_batch, derive_generator

SIZES = {"224": (128, 3, 224, 224), "32": (512, 3, 32, 32)}
K = 1000


def _contenders(k: int) -> tuple[dict[str, Callable], list[str]]:
    out: dict[str, Callable] = {}
    skipped: list[str] = []
    gen = derive_generator(0)
    out["ours (`cutmix_batch(mode='sample')`, in place)"] = lambda x, y: cutmix_batch(
        x, y, num_classes=k, mode="sample", generator=gen
    )
    try:
        from kornia.augmentation import RandomCutMixV2

        kornia_op = RandomCutMixV2(p=1.0, num_mix=1, use_correct_lambda=True)
        out["kornia `RandomCutMixV2`"] = lambda x, y: kornia_op(x, y)
    except Exception as e:  # not installed, or fails to import beside this torch
        skipped.append(f"kornia: {type(e).__name__}: {e}")
    try:
        from timm.data import Mixup

        timm_op = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, mode="elem", label_smoothing=0.0, num_classes=k)
        out["timm `Mixup(mode='elem')`"] = lambda x, y: timm_op(x, y)
    except Exception as e:
        skipped.append(f"timm: {type(e).__name__}: {e}")
    return out, skipped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    contenders, skipped = _contenders(K)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, median of {args.reps}")
    for name in args.sizes:
        shape = SIZES[name]
        g = torch.Generator().manual_seed(0)
        base = torch.rand(shape, generator=g)
        labels = torch.randint(0, K, (shape[0],), generator=g)
        times: dict[str, float] = {}
        for label, fn in contenders.items():
            samples = []
            for i in range(args.warmup + args.reps):
                x = base.clone()  # a fresh batch every call, outside the timed region
                began = time.perf_counter()
                fn(x, labels)
                if i >= args.warmup:
                    samples.append((time.perf_counter() - began) * 1e3)
            times[label] = statistics.median(samples)
        ours = next(iter(times.values()))
        print(f"\n{'x'.join(map(str, shape))}")
        print("| contender | median ms | ÷ ours |")
        print("|---|---:|---:|")
        for label, ms in times.items():
            print(f"| {label} | {ms:.2f} | {ms / ours:.2f}× |")
    for line in skipped:
        print(f"skipped: {line}")
    print("\ncommand: " + " ".join([".venv/bin/python", "bench/op_sample.py", *(argv or sys.argv[1:])]))


if __name__ == "__main__":
    main()
