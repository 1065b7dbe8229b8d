"""Writer throughput: cutmix-writer against streaming's own image converter, same images.

Both write N random CIFAR-shaped images (32x32x3 uint8, 10 classes) to local MDS shards with
sha1+xxh64 shard hashes; streaming's ``convert_image_class_dataset`` writes them unmixed, ours
mixes every batch first. Rows:

* streaming converter, one process (its only mode);
* ours in-process with 1 worker and with all workers (the pool is warmed up first: its one-off
  start, reported separately, is importing torch & co. once in the fork server);
* scale-out: ``cutmix-writer write --num-groups G --group I`` as G processes at once, 1 worker
  each; img/s is all samples over the span from the first group's start of writing to the last
  group's end (each process reports its own times; imports are excluded).

Usage: python bench/write_shards.py [--n 20000] [--batch-size 128]

(Named write_shards.py, not writer.py: Python puts bench/ first on sys.path, where a writer.py
would shadow the ``writer`` package.)
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

# One group's work as a subprocess: load the source, time write_premixed alone, print JSON.
_GROUP_SCRIPT = """
import json, sys, time
from writer.manifest import PremixConfig, build_manifest
from writer.premix import Schedule
from writer.sources import open_source
from writer.store import Destination
from writer.write import write_premixed

def main():
    root, out, encoding, batch_size, groups, group = sys.argv[1:7]
    batch_size, groups, group = int(batch_size), int(groups), int(group)
    source = open_source("cifar10:" + root, "train")
    config = PremixConfig(batch_size=batch_size, encoding=encoding)
    start, stop = Schedule(len(source), batch_size, 1).group_range(groups, group)
    manifest = build_manifest(source, config, source_spec="bench", split="train")
    destination = Destination(out)
    print("ready", flush=True)
    sys.stdin.readline()  # start together: the parent says go once every group is ready
    began = time.time()
    summary = write_premixed(source, destination, config, manifest, start=start, stop=stop,
                             workers=1, progress=False)
    print(json.dumps({"began": began, "ended": time.time(), "samples": summary.samples}))

if __name__ == "__main__":
    main()
"""


def _fake_cifar(root: Path, n: int, seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-py`` with ``n`` random training images in 5 batches."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for k, part in enumerate(np.array_split(np.arange(n), 5), start=1):
        batch = {
            b"data": rng.integers(0, 256, (len(part), 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, len(part)).tolist(),
        }
        (folder / f"data_batch_{k}").write_bytes(pickle.dumps(batch))
    names = {"label_names": [f"class{i}" for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(names))
    return root


class _Images:
    """A map-style dataset over in-memory images, in the form streaming's converter reads."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, as_pil: bool) -> None:
        self.images, self.labels, self.as_pil = images, labels, as_pil

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[object, int]:
        from PIL import Image

        image = self.images[i]
        return (Image.fromarray(image) if self.as_pil else image), int(self.labels[i])


def _streaming(source: object, out: str, *, encoding: str) -> float:
    from streaming.vision.convert.base import convert_image_class_dataset

    dataset = _Images(source.images, source.labels, as_pil=encoding == "png")
    began = time.perf_counter()
    convert_image_class_dataset(dataset, out, hashes=["sha1", "xxh64"], progress_bar=False,
                                encoding="ndarray:uint8" if encoding == "raw" else "png")
    return time.perf_counter() - began


def _ours(source: object, out: str, *, encoding: str, batch_size: int, workers: int) -> float:
    from writer.manifest import PremixConfig, build_manifest
    from writer.store import Destination
    from writer.write import write_premixed

    config = PremixConfig(batch_size=batch_size, encoding=encoding)
    manifest = build_manifest(source, config, source_spec="bench", split="train")
    summary = write_premixed(source, Destination(out), config, manifest, workers=workers,
                             progress=False)
    return summary.seconds


def _groups(root: Path, out: str, *, encoding: str, batch_size: int, groups: int) -> float:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _GROUP_SCRIPT, str(root), os.path.join(out, f"group-{g}"), encoding,
             str(batch_size), str(groups), str(g)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        for g in range(groups)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    reports = []
    for proc in procs:
        stdout, _ = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"group process failed with exit code {proc.returncode}")
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    return max(r["ended"] for r in reports) - min(r["began"] for r in reports)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=2,
                        help="runs per row; the fastest counts (the machine may be shared)")
    args = parser.parse_args()

    from writer.pool import default_workers
    from writer.sources import load_cifar10

    cpus = default_workers()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cutmix-bench-") as tmp:
        tmp_path = Path(tmp)
        root = _fake_cifar(tmp_path / "src", args.n)
        source = load_cifar10(root, "train")
        began = time.perf_counter()
        # Enough images for several pool tasks, so the pool really starts.
        _ours(load_cifar10(_fake_cifar(tmp_path / "warm", 8192), "train"), str(tmp_path / "w"),
              encoding="raw", batch_size=args.batch_size, workers=cpus)
        warmup = time.perf_counter() - began
        for encoding in ("raw", "png"):
            def best(run: Callable[[str], float], name: str, encoding: str = encoding) -> float:
                outs = [str(tmp_path / f"{encoding}-{name}-{k}") for k in range(args.repeat)]
                return min(run(out) for out in outs)

            run = partial(_streaming, source, encoding=encoding)
            rows.append(("streaming convert_image_class_dataset (unmixed)", encoding, 1,
                         best(run, "streaming")))
            for workers in (1, cpus):
                run = partial(_ours, source, encoding=encoding, batch_size=args.batch_size,
                              workers=workers)
                rows.append((f"cutmix-writer, --workers {workers}", encoding, workers,
                             best(run, f"ours{workers}")))
            for groups in (1, 2):
                run = partial(_groups, root, encoding=encoding, batch_size=args.batch_size,
                              groups=groups)
                rows.append((f"cutmix-writer, {groups} group process(es) at once, 1 worker each",
                             encoding, groups, best(run, f"groups{groups}")))

    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__), *sys.argv[1:]])
    print(f"\nN = {args.n} images 32x32x3, batch size {args.batch_size}, {cpus} CPUs, best of "
          f"{args.repeat}; pool warm-up (fork server start) {warmup:.1f} s, excluded below\n")
    print("| writer | encoding | processes | seconds | img/s |")
    print("|---|---|---|---:|---:|")
    for name, encoding, procs, seconds in rows:
        print(f"| {name} | {encoding} | {procs} | {seconds:.2f} | {args.n / seconds:,.0f} |")
    print(f"\ncommand: {command}")


if __name__ == "__main__":
    main()
