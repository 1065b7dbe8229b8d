"""ResNet-20 training throughput: without CutMix, online CutMix, pre-mixed shards; input pipelines.

Measurements on CIFAR-shaped random data (no download): held in memory as uint8 (50,000 x 3 x
32 x 32 by default), and the same kind of images pre-mixed by ``cutmix-writer``'s library into
local raw MDS shards in a temporary folder (10,000 by default, one epoch), read back by the
recipes' own pre-mixed loader (``PremixedDataset`` + ``PremixedLoader``, a ``StreamingDataLoader``
reading a batch per call):

* **training**: Composer ``Trainer`` steps of ResNet-20 (the recipes' model, on-device
  augmentation, SGD): without CutMix, with ``cutmix_algo.CutMix`` online, and on the pre-mixed
  shards; reported: median step time (BATCH_START to BATCH_END) and median iteration time
  (BATCH_END to BATCH_END: the loader's fetch and the on-device augmentation and CutMix
  included), with samples/s. Runs alternate, in an order rotated each repeat (baseline,
  CutMix, pre-mixed; CutMix, pre-mixed, baseline; ...), so that drifting load from other
  processes and the first run's warm-up spread over all three.
* **CutMix's own cost**: CutMix's ``AFTER_DATALOADER`` work timed inside the same runs (a timing
  wrapper around the algorithm), as a share of the median step time. On a shared machine this is
  the robust number: the end-to-end difference of two noisy medians is not.
* **input pipeline**: the dataloader plus on-device augmentation and normalization, without the
  model: images/s, for the in-memory loader and for the pre-mixed one, alternating, and each
  loader alone (``--pipeline-repeats`` rounds); the goal ratio is the pre-mixed loader alone ÷ the
  whole in-memory pipeline, printed beside pipeline ÷ pipeline. The in-memory
  row leaves out the online CutMix call, which only the in-memory side would pay: the
  comparison favours it.
* **input pipeline under load** (``--load``): the same two loaders again while one busy-loop
  process per core competes for the CPU (``bench/op.py``'s ``BusyLoad``: started and stopped
  here, each also ending by itself after ``--load-seconds``), since a fast path that collapses
  under load is not fast.

Usage: ``python bench/train.py [--steps 30] [--warmup 5] [--repeats 2] [--batch-size 128]
[--pipeline-repeats 7] [--images 50000] [--premixed-images 10000] [--device auto|cpu|gpu]
[--threads N] [--load] [--load-seconds 120]``
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
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

from bench.op import BusyLoad  # noqa: E402
from cutmix_algo import CutMix  # noqa: E402
from cutmix_train.augment import DeviceAugment, augment_before_mixing, random_crop_flip  # noqa: E402
from cutmix_train.config import DataConfig  # noqa: E402
from cutmix_train.data import STATS, ImageBatchDataset, _premixed_loader, already_batched  # noqa: E402
from cutmix_train.models import InputNormalize, build_model  # noqa: E402


def _sync(device: str) -> None:
    if device == "gpu":
        torch.cuda.synchronize()


class StepTimer(Callback):
    """Wall time of each training batch, BATCH_START to BATCH_END (device synchronized).

    ``ends`` holds every BATCH_END's time too: the intervals between them are whole iterations,
    the dataloader's fetch and the ``AFTER_DATALOADER`` algorithms (augmentation, CutMix)
    included, which is what differs between online and pre-mixed training.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.times: list[float] = []
        self.ends: list[float] = []
        self._start = 0.0

    def batch_start(self, state: State, logger: Logger) -> None:
        _sync(self.device)
        self._start = time.perf_counter()

    def batch_end(self, state: State, logger: Logger) -> None:
        _sync(self.device)
        now = time.perf_counter()
        self.times.append(now - self._start)
        self.ends.append(now)


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


def write_premixed_shards(folder: str, num_images: int, batch_size: int, seed: int = 0) -> str:
    """Pre-mix CIFAR-shaped random images into raw MDS shards in ``folder`` (one epoch)."""
    from writer.format.manifest import PremixConfig
    from writer.pipeline.sources import ImageSet
    from writer.pipeline.write import build_manifest, write_premixed
    from writer.publish.store import Destination

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (num_images, 32, 32, 3), dtype=np.uint8)
    source = ImageSet(images, rng.integers(0, 10, num_images), [f"class{i}" for i in range(10)])
    config = PremixConfig(batch_size=batch_size)
    manifest = build_manifest(source, config, source_spec="bench", split="train")
    out = os.path.join(folder, "premixed")
    write_premixed(source, Destination(out), config, manifest, workers=1, progress=False)
    return out


def make_premixed_loader(shards: str, batch_size: int) -> Any:
    """The recipes' pre-mixed train loader (``data.dataset=premixed``) over local shards."""
    return _premixed_loader(DataConfig(dataset="premixed", local=shards), batch_size)


def train_run(loader: Any, args: argparse.Namespace, cutmix: bool) -> dict[str, Any]:
    """Time ``args.warmup + args.steps`` training steps; the warmup steps are dropped."""
    mean, std = STATS["cifar10"]
    model = build_model("resnet20", 10, mean, std)
    timer = StepTimer(args.device)
    algorithms: list[Algorithm] = [DeviceAugment(pad=4, hflip=True)]
    timed = None
    if cutmix:
        # inplace=True as the recipes pass it: DeviceAugment's crop writes a fresh batch, so
        # CutMix need not mix a copy.
        timed = Timed(CutMix(alpha=1.0, num_classes=10, inplace=True), Event.AFTER_DATALOADER,
                      args.device)
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
    iterations = [b - a for a, b in zip(timer.ends[args.warmup - 1 : -1], timer.ends[args.warmup :], strict=True)]
    return {"steps": steps, "mixes": mixes, "iterations": iterations}


def pipeline_images_per_second(loader: Any, args: argparse.Namespace, device_work: bool = True) -> float:
    """Images/s through the dataloader, then (``device_work``) the device copy, crop+flip, normalize."""
    device = torch.device("cuda" if args.device == "gpu" else "cpu")
    mean, std = STATS["cifar10"]
    normalize = InputNormalize(mean, std).to(device)
    generator = torch.Generator().manual_seed(0)
    total, batches = 0, 0
    limit = args.warmup + args.steps * 4
    start, end = 0.0, None
    while end is None:
        passed = batches
        for images, labels in loader:
            if end is not None:
                continue  # untimed: the epoch ends, and streaming's threads with it
            if batches == args.warmup:
                _sync(args.device)
                start, total = time.perf_counter(), 0
            if device_work:
                images = images.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                normalize(random_crop_flip(images, 4, True, generator))
            total += images.shape[0]
            batches += 1
            if batches >= limit:
                _sync(args.device)
                end = time.perf_counter()
        if end is None and batches == passed:
            raise RuntimeError(f"the loader yielded no batch after {batches} (an empty epoch)")
    return total / (end - start)


def pipeline_rates(loader: Any, premixed: Any, args: argparse.Namespace, rates: dict[str, list[float]]) -> None:
    """One alternating round of the four input-pipeline measurements, appended to ``rates``."""
    rates["online"].append(pipeline_images_per_second(loader, args))
    rates["premixed"].append(pipeline_images_per_second(premixed, args))
    rates["online loader"].append(pipeline_images_per_second(loader, args, device_work=False))
    rates["premixed loader"].append(pipeline_images_per_second(premixed, args, device_work=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps at the start of each run")
    parser.add_argument("--repeats", type=int, default=2, help="alternating baseline/CutMix run pairs")
    parser.add_argument("--pipeline-repeats", type=int, default=7,
                        help="alternating rounds of the input-pipeline rows (short: a second each)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--images", type=int, default=50_000, help="in-memory dataset size")
    parser.add_argument("--premixed-images", type=int, default=10_000, help="images pre-mixed into shards")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--load", action="store_true", help="also time the input pipelines under competing load")
    parser.add_argument("--load-seconds", type=float, default=120.0, help="hard limit of the load processes")
    args = parser.parse_args()
    if args.device == "auto":
        args.device = "gpu" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.premixed_images < (args.warmup + args.steps) * args.batch_size:
        parser.error(f"--premixed-images must hold --warmup + --steps batches of {args.batch_size}")
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as folder:
        loader = make_loader(args.images, args.batch_size)
        premixed = make_premixed_loader(write_premixed_shards(folder, args.premixed_images, args.batch_size),
                                        args.batch_size)  # fmt: skip
        variants = {"base": (loader, False), "cutmix": (loader, True), "premixed": (premixed, False)}
        runs: dict[str, dict[str, list[float]]] = {
            name: {"steps": [], "mixes": [], "iterations": []} for name in variants
        }
        names = list(variants)
        for repeat in range(args.repeats):
            # Rotated each repeat, so that no variant always runs first (warm-up, drifting load).
            for name in names[repeat % 3 :] + names[: repeat % 3]:
                train_loader, cutmix = variants[name]
                result = train_run(train_loader, args, cutmix)
                for key, values in result.items():
                    runs[name][key].extend(values)
        rates: dict[str, list[float]] = {"online": [], "premixed": [], "online loader": [], "premixed loader": []}
        for _ in range(args.pipeline_repeats):
            pipeline_rates(loader, premixed, args, rates)
        loaded: dict[str, list[float]] = {key: [] for key in rates}
        if args.load:
            with BusyLoad(args.load_seconds) as busy:
                for _ in range(args.pipeline_repeats):
                    pipeline_rates(loader, premixed, args, loaded)
                load_under = os.getloadavg()
                load_outlived = time.monotonic() < busy.deadline
    load_end = os.getloadavg()
    pipeline, feed = statistics.median(rates["online"]), statistics.median(rates["premixed"])

    base = statistics.median(runs["base"]["steps"])
    mixed = statistics.median(runs["cutmix"]["steps"])
    pre = statistics.median(runs["premixed"]["steps"])
    mix = statistics.median(runs["cutmix"]["mixes"])
    per_iteration = {name: statistics.median(run["iterations"]) for name, run in runs.items()}
    bs = args.batch_size
    device_name = torch.cuda.get_device_name() if args.device == "gpu" else f"CPU, {torch.get_num_threads()} threads"
    print(f"ResNet-20, batch {bs}, CIFAR-shaped uint8 in memory, {device_name}; median of "
          f"{len(runs['base']['steps'])} steps per row\n")  # fmt: skip
    it = per_iteration
    print("| run | median step ms | samples/s | CutMix ms/step | CutMix share of step | median iteration ms "
          "(+ loader, augment) | samples/s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| ResNet-20, no CutMix | {base * 1e3:.1f} | {bs / base:.0f} | – | – | {it['base'] * 1e3:.1f} "
          f"| {bs / it['base']:.0f} |")  # fmt: skip
    print(f"| ResNet-20 + CutMix | {mixed * 1e3:.1f} | {bs / mixed:.0f} | {mix * 1e3:.3f} | {100 * mix / mixed:.2f}% "
          f"| {it['cutmix'] * 1e3:.1f} | {bs / it['cutmix']:.0f} |")  # fmt: skip
    print(f"| ResNet-20, pre-mixed shards | {pre * 1e3:.1f} | {bs / pre:.0f} | – | – | {it['premixed'] * 1e3:.1f} "
          f"| {bs / it['premixed']:.0f} |")  # fmt: skip
    print(f"\nend-to-end difference of medians: {100 * (mixed - base) / base:+.1f}% (noisy on a shared machine)")
    print(f"input pipeline alone (dataloader + device copy + crop/flip + normalize): {pipeline:,.0f} images/s "
          f"= {pipeline / (bs / base):.0f}x the training rate")  # fmt: skip
    print(f"pre-mixed / online CutMix, median iteration: {it['premixed'] / it['cutmix']:.3f} (goal <= 1); "
          f"median step alone: {pre / mixed:.3f}")  # fmt: skip
    print(f"\ninput pipelines, median of {args.pipeline_repeats} alternating runs (images/s):\n")
    print("| pipeline | loader alone | + device copy, crop/flip, normalize |")
    print("|---|---:|---:|")
    quiet = {key: statistics.median(values) for key, values in rates.items()}
    busy_rates = {key: statistics.median(values) for key, values in loaded.items()} if args.load else {}
    print(f"| in-memory uint8 (online; its CutMix call not included) | "
          f"{quiet['online loader']:,.0f} | {pipeline:,.0f} |")  # fmt: skip
    print(f"| pre-mixed shards (PremixedDataset + PremixedLoader) | "
          f"{quiet['premixed loader']:,.0f} | {feed:,.0f} |")  # fmt: skip
    if args.load:
        print(f"| in-memory uint8, under load | {busy_rates['online loader']:,.0f} "
              f"| {busy_rates['online']:,.0f} |")  # fmt: skip
        print(f"| pre-mixed shards, under load | {busy_rates['premixed loader']:,.0f} "
              f"| {busy_rates['premixed']:,.0f} |")  # fmt: skip
    cores = os.cpu_count()
    # The goal (issue 12): the pre-mixed loader feeds at least as many images per second as the
    # in-memory online pipeline consumes. Pipeline against pipeline is printed beside it.
    print(f"\npre-mixed loader / in-memory online pipeline: {quiet['premixed loader'] / pipeline:.2f} "
          f"(goal >= 1); pipeline against pipeline {feed / pipeline:.2f}, loaders alone "
          f"{quiet['premixed loader'] / quiet['online loader']:.2f}; load "
          f"average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end on {cores} cores")  # fmt: skip
    if args.load:
        print(f"under load ({busy.processes} busy-loop processes, load average {load_under[0]:.1f} at its end): "
              f"pre-mixed loader / in-memory online pipeline "
              f"{busy_rates['premixed loader'] / busy_rates['online']:.2f}, "
              f"pipeline against pipeline {busy_rates['premixed'] / busy_rates['online']:.2f}, "
              f"loaders alone {busy_rates['premixed loader'] / busy_rates['online loader']:.2f}"
              + ("" if load_outlived else "; the load ended before the rows did (raise --load-seconds)"))  # fmt: skip
    print(f"\ncommand: {shlex.join([sys.executable, *sys.argv])}")


if __name__ == "__main__":
    main()
