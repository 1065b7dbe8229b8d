"""ResNet-20 training throughput with and without online CutMix, and the input pipeline alone.

Three measurements on CIFAR-shaped random data held in memory as uint8 (50,000 x 3 x 32 x 32 by
default; no download):

* **training**: Composer ``Trainer`` steps of ResNet-20 (the recipes' model, on-device
  augmentation, SGD), once without and once with ``cutmix_algo.CutMix``; reported: median step
  time and samples/s. Runs alternate (baseline, CutMix, baseline, CutMix, ...) so drifting load
  from other processes spreads over both.
* **CutMix's own cost**: CutMix's ``AFTER_DATALOADER`` work timed inside the same runs (a timing
  wrapper around the algorithm), as a share of the median step time. On a shared machine this is
  the robust number: the end-to-end difference of two noisy medians is not.
* **input pipeline**: the dataloader plus on-device augmentation and normalization, without the
  model: images/s.

Usage: ``python bench/train.py [--steps 30] [--warmup 5] [--repeats 2] [--batch-size 128]
[--device auto|cpu|gpu] [--threads N]``
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from composer import Trainer  # noqa: E402
from composer.core import Algorithm, Callback, Event, State  # noqa: E402
from composer.loggers import Logger  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from cutmix_algo import CutMix  # noqa: E402
from cutmix_train.augment import DeviceAugment, augment_before_mixing, random_crop_flip  # noqa: E402
from cutmix_train.data import STATS, ImageBatchDataset, already_batched  # noqa: E402
from cutmix_train.models import InputNormalize, build_model  # noqa: E402


def _sync(device: str) -> None:
    if device == "gpu":
        torch.cuda.synchronize()


class StepTimer(Callback):
    """Wall time of each training batch, BATCH_START to BATCH_END (device synchronized)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.times: list[float] = []
        self._start = 0.0

    def batch_start(self, state: State, logger: Logger) -> None:
        _sync(self.device)
        self._start = time.perf_counter()

    def batch_end(self, state: State, logger: Logger) -> None:
        _sync(self.device)
        self.times.append(time.perf_counter() - self._start)


class Timed(Algorithm):
    """Runs another algorithm unchanged and records how long each of its ``apply`` calls took."""

    def __init__(self, inner: Algorithm, event: Event, device: str) -> None:
        self.inner, self.event, self.device = inner, event, device
        self.times: list[float] = []

    def match(self, event: Event, state: State) -> bool:
        return self.inner.match(event, state)

    def apply(self, event: Event, state: State, logger: Logger) -> Any:
        if event != self.event:
            return self.inner.apply(event, state, logger)
        _sync(self.device)
        start = time.perf_counter()
        out = self.inner.apply(event, state, logger)
        _sync(self.device)
        self.times.append(time.perf_counter() - start)
        return out


def make_loader(num_images: int, batch_size: int, seed: int = 0) -> DataLoader:
    """CIFAR-shaped random uint8 images and labels, served as the recipes serve CIFAR-10."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (num_images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, num_images)
    dataset = ImageBatchDataset(images, labels)
    sampler = torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=True, collate_fn=already_batched,
        pin_memory=torch.cuda.is_available(),
    )  # fmt: skip


def train_run(loader: DataLoader, args: argparse.Namespace, cutmix: bool) -> dict[str, Any]:
    """Time ``args.warmup + args.steps`` training steps; the warmup steps are dropped."""
    mean, std = STATS["cifar10"]
    model = build_model("resnet20", 10, mean, std)
    timer = StepTimer(args.device)
    algorithms: list[Algorithm] = [DeviceAugment(pad=4, hflip=True)]
    timed = None
    if cutmix:
        timed = Timed(CutMix(alpha=1.0, num_classes=10), Event.AFTER_DATALOADER, args.device)
        algorithms.append(timed)
    trainer = Trainer(
        model=model,
        train_dataloader=loader,
        max_duration=f"{args.warmup + args.steps}ba",
        algorithms=algorithms,
        algorithm_passes=augment_before_mixing,
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4),
        device=args.device,
        precision="amp_bf16" if args.device == "gpu" else "fp32",
        callbacks=[timer],
        progress_bar=False,
        seed=17,
    )
    trainer.fit()
    trainer.close()
    steps = timer.times[args.warmup :]
    mixes = timed.times[args.warmup :] if timed is not None else []
    return {"steps": steps, "mixes": mixes}


def pipeline_images_per_second(loader: DataLoader, args: argparse.Namespace) -> float:
    """Images/s through the dataloader, the device copy, crop+flip and normalization alone."""
    device = torch.device("cuda" if args.device == "gpu" else "cpu")
    mean, std = STATS["cifar10"]
    normalize = InputNormalize(mean, std).to(device)
    generator = torch.Generator().manual_seed(0)
    total, batches = 0, 0
    limit = args.warmup + args.steps * 4
    start = 0.0
    while batches < limit:
        for images, labels in loader:
            if batches == args.warmup:
                _sync(args.device)
                start, total = time.perf_counter(), 0
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            normalize(random_crop_flip(images, 4, True, generator))
            total += images.shape[0]
            batches += 1
            if batches >= limit:
                break
    _sync(args.device)
    return total / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps at the start of each run")
    parser.add_argument("--repeats", type=int, default=2, help="alternating baseline/CutMix run pairs")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--images", type=int, default=50_000, help="in-memory dataset size")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.device == "auto":
        args.device = "gpu" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)

    loader = make_loader(args.images, args.batch_size)
    runs: dict[bool, dict[str, list[float]]] = {False: {"steps": [], "mixes": []}, True: {"steps": [], "mixes": []}}
    for _ in range(args.repeats):
        for cutmix in (False, True):
            result = train_run(loader, args, cutmix)
            for key, values in result.items():
                runs[cutmix][key].extend(values)
    pipeline = pipeline_images_per_second(loader, args)

    base = statistics.median(runs[False]["steps"])
    mixed = statistics.median(runs[True]["steps"])
    mix = statistics.median(runs[True]["mixes"])
    bs = args.batch_size
    device_name = torch.cuda.get_device_name() if args.device == "gpu" else f"CPU, {torch.get_num_threads()} threads"
    print(f"ResNet-20, batch {bs}, CIFAR-shaped uint8 in memory, {device_name}; median of "
          f"{len(runs[False]['steps'])} steps per row\n")  # fmt: skip
    print("| run | median step ms | samples/s | CutMix ms/step | CutMix share of step |")
    print("|---|---:|---:|---:|---:|")
    print(f"| ResNet-20, no CutMix | {base * 1e3:.1f} | {bs / base:.0f} | – | – |")
    print(f"| ResNet-20 + CutMix | {mixed * 1e3:.1f} | {bs / mixed:.0f} | {mix * 1e3:.3f} | {100 * mix / mixed:.2f}% |")
    print(f"\nend-to-end difference of medians: {100 * (mixed - base) / base:+.1f}% (noisy on a shared machine)")
    print(f"input pipeline alone (dataloader + device copy + crop/flip + normalize): {pipeline:,.0f} images/s "
          f"= {pipeline / (bs / base):.0f}x the training rate")  # fmt: skip
    print(f"\ncommand: {shlex.join([sys.executable, *sys.argv])}")


if __name__ == "__main__":
    main()
