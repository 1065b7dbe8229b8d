"""Writer throughput: cutmix-writer against streaming's own image converter, same images.

Both write N random CIFAR-shaped images (32x32x3 uint8, 10 classes) to local MDS shards with
sha1+xxh64 shard hashes; streaming's ``convert_image_class_dataset`` writes them unmixed, once
(its only mode), ours mixes every batch, ``--epochs`` times over. img/s is rows written per
second. Rows:

* streaming converter, one process;
* ours in-process with ``--workers 1`` and with ``--workers 2`` (the pool's one-off start, which
  imports torch & co. once in the fork server, is reported separately; each write still pays
  for starting its two workers, which map the loaded source instead of copying it);
* scale-out: ``--num-groups 2`` as two processes at once, 1 worker each, against one process
  writing everything. Each process first makes a small write of its own (imports, first calls),
  then all start together; each reports its own time, and img/s is all rows over the span from
  the first start to the last end. The per-process times are printed, so the span can be checked.
* with ``--load``: ours ``--workers 1`` and ``2`` again under a competing busy-loop process per
  core (``bench/op.py``'s ``BusyLoad``), the normal state of a training box.

Every case runs ``--repeat`` times for png and ``--raw-repeat`` times for raw (a raw write
takes under a second here, so more rounds are cheap), interleaved with the others of its
encoding; the fastest counts (the machine may be shared). Each ratio is also printed as the
median over rounds of the ratio within a round, which one lucky run cannot move, and
``--workers 2`` is set against the 2 group processes: two processes that share nothing show
how far this machine itself scales the same work.

Usage: python bench/write_shards.py [--n 50000] [--epochs 2] [--batch-size 128] [--repeat 3]
    [--raw-repeat 7] [--load]

(Named write_shards.py, not writer.py: Python puts bench/ first on sys.path, where a writer.py
would shadow the ``writer`` package.)
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

# One group's work as a subprocess: load the source, time write_premixed alone, print JSON.
_GROUP_SCRIPT = """
import json, sys, time
from writer.format.manifest import PremixConfig
from writer.pipeline.write import build_manifest
from writer.pipeline.premix import Schedule
from writer.pipeline.sources import open_source
from writer.publish.store import Destination
from writer.pipeline.write import write_premixed

def main():
    root, out, encoding, batch_size, epochs, groups, group = sys.argv[1:8]
    batch_size, epochs, groups, group = int(batch_size), int(epochs), int(groups), int(group)
    source = open_source("cifar10:" + root, "train")
    config = PremixConfig(batch_size=batch_size, encoding=encoding, epochs=epochs)
    start, stop = Schedule(len(source), batch_size, epochs).group_range(groups, group)
    manifest = build_manifest(source, config, source_spec="bench", split="train")
    # A small write first: lazy imports and first calls are not what this row measures.
    write_premixed(source, Destination(out + "-warm"), config, manifest, start=start,
                   stop=start + 2, workers=1, progress=False)
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


def _ours(source: object, out: str, *, encoding: str, batch_size: int, epochs: int,
          workers: int) -> float:
    from writer.format.manifest import PremixConfig
    from writer.pipeline.write import build_manifest, write_premixed
    from writer.publish.store import Destination

    config = PremixConfig(batch_size=batch_size, encoding=encoding, epochs=epochs)
    manifest = build_manifest(source, config, source_spec="bench", split="train")
    summary = write_premixed(source, Destination(out), config, manifest, workers=workers,
                             progress=False)
    return summary.seconds


def _groups(root: Path, out: str, *, encoding: str, batch_size: int, epochs: int,
            groups: int) -> tuple[float, list[float]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _GROUP_SCRIPT, str(root), os.path.join(out, f"group-{g}"), encoding,
             str(batch_size), str(epochs), str(groups), str(g)],
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
    span = max(r["ended"] for r in reports) - min(r["began"] for r in reports)
    return span, [r["ended"] - r["began"] for r in reports]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50000, help="images")
    parser.add_argument("--epochs", type=int, default=2, help="epochs cutmix-writer writes")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per row; the fastest counts (the machine may be shared)")
    parser.add_argument("--raw-repeat", type=int, default=7, help="runs per raw row")
    parser.add_argument("--encodings", nargs="+", choices=["raw", "png"], default=["raw", "png"])
    parser.add_argument("--load", action="store_true",
                        help="also time --workers 1 and 2 under a busy-loop process per core")
    args = parser.parse_args()

    from op import BusyLoad

    from writer.pipeline.sources import load_cifar10

    rows: list[tuple[str, str, int, int, float, str]] = []
    summary: list[str] = []
    rows_written = args.n * args.epochs
    with tempfile.TemporaryDirectory(prefix="cutmix-bench-") as tmp:
        tmp_path = Path(tmp)
        root = _fake_cifar(tmp_path / "src", args.n)
        source = load_cifar10(root, "train")
        began = time.perf_counter()
        # Enough images for several pool tasks, so the pool really starts.
        _ours(load_cifar10(_fake_cifar(tmp_path / "warm", 8192), "train"), str(tmp_path / "w"),
              encoding="raw", batch_size=args.batch_size, epochs=1, workers=2)
        warmup = time.perf_counter() - began
        runs = 0

        def in_fresh_folder(run: Callable[[str], Any]) -> Any:
            nonlocal runs
            runs += 1
            path = str(tmp_path / f"out-{runs}")
            try:
                return run(path)
            finally:
                shutil.rmtree(path, ignore_errors=True)  # each run starts with no earlier output on disk

        def ours(encoding: str, workers: int) -> float:
            return in_fresh_folder(partial(_ours, source, encoding=encoding,
                                           batch_size=args.batch_size, epochs=args.epochs,
                                           workers=workers))

        def groups(encoding: str, count: int) -> tuple[float, list[float]]:
            return in_fresh_folder(partial(_groups, root, encoding=encoding,
                                           batch_size=args.batch_size, epochs=args.epochs,
                                           groups=count))

        def streaming(encoding: str) -> float:
            return in_fresh_folder(partial(_streaming, source, encoding=encoding))

        for encoding in args.encodings:
            cases: dict[str, Callable[[], tuple[float, list[float]]]] = {
                "streaming": lambda e=encoding: (streaming(e), []),
                "w1": lambda e=encoding: (ours(e, 1), []),
                "w2": lambda e=encoding: (ours(e, 2), []),
                "g1": lambda e=encoding: groups(e, 1),
                "g2": lambda e=encoding: groups(e, 2),
            }
            best: dict[str, tuple[float, list[float]]] = {}
            rounds: list[dict[str, float]] = []
            repeat = args.raw_repeat if encoding == "raw" else args.repeat
            for rep in range(repeat):
                names = list(cases)
                names = names[rep % len(names):] + names[:rep % len(names)]  # rotate the order
                rounds.append({})
                for name in names:
                    result = cases[name]()
                    rounds[-1][name] = result[0]
                    if name not in best or result[0] < best[name][0]:
                        best[name] = result
            labels = {
                "streaming": ("streaming convert_image_class_dataset (unmixed)", 1, args.n),
                "w1": ("cutmix-writer --workers 1", 1, rows_written),
                "w2": ("cutmix-writer --workers 2", 2, rows_written),
                "g1": ("cutmix-writer, 1 group process, 1 worker", 1, rows_written),
                "g2": ("cutmix-writer, 2 group processes at once, 1 worker each", 2, rows_written),
            }
            for name, (label, procs, count) in labels.items():
                seconds, each = best[name]
                note = " / ".join(f"{t:.2f}" for t in each) if len(each) > 1 else ""
                rows.append((label, encoding, procs, count, seconds, note))

            def paired(slow: str, fast: str, rounds: list[dict[str, float]] = rounds) -> float:
                return statistics.median(r[slow] / r[fast] for r in rounds)

            print(f"{encoding} (best of {repeat}; median of the rounds' own ratios in brackets): "
                  f"--workers 2 / --workers 1 = {best['w1'][0] / best['w2'][0]:.2f}x "
                  f"({paired('w1', 'w2'):.2f}x), "
                  f"2 groups / 1 group = {best['g1'][0] / best['g2'][0]:.2f}x "
                  f"({paired('g1', 'g2'):.2f}x), "
                  f"--workers 2 / 2 groups = {best['g2'][0] / best['w2'][0]:.2f}x "
                  f"({paired('g2', 'w2'):.2f}x), "
                  f"--workers 1 / streaming per row = "
                  f"{(rows_written / best['w1'][0]) / (args.n / best['streaming'][0]):.2f}x",
                  flush=True)
            summary.append(f"{encoding}: best of {repeat}")
        if args.load:
            with BusyLoad(seconds=60 + 10 * args.raw_repeat) as _:
                for workers in (1, 2):
                    seconds = min(ours("raw", workers) for _ in range(args.raw_repeat))
                    rows.append((f"cutmix-writer --workers {workers}, busy loop per core", "raw",
                                 workers, rows_written, seconds, ""))

    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__), *sys.argv[1:]])
    load_avg = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\nN = {args.n} images 32x32x3, {args.epochs} epochs mixed, batch size {args.batch_size}, "
          f"{len(os.sched_getaffinity(0))} CPUs, {', '.join(summary)}, load average {load_avg} at the "
          f"end; pool warm-up (fork server start) {warmup:.1f} s, excluded below\n")
    print("| writer | encoding | processes | rows | seconds | img/s | each group (s) |")
    print("|---|---|---:|---:|---:|---:|---|")
    for name, encoding, procs, count, seconds, note in rows:
        print(f"| {name} | {encoding} | {procs} | {count:,} | {seconds:.2f} | {count / seconds:,.0f} "
              f"| {note} |")
    print(f"\ncommand: {command}")


if __name__ == "__main__":
    main()
