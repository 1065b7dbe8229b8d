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
* timm ``Mixup`` (batch mode): reported as skipped. Where it imports (the ``bench`` extra
  installs it) it still cannot be fed the shared box: it draws its own from numpy.

Three more rows time the paste alone (the box region only, no targets): ours
(``cutmix_algo.paste.permute_batch_``, ``auto``: the cycle walk or ``index_select`` by region
size), the paste before this change (``region.copy_(region.index_select(0, perm))``), and the
in-place floor, two plain copies of the box region (out to a temporary allocated once, and back).

``--load`` repeats chosen cases under a deliberate competing CPU load: one busy-loop process per
core, started by this script after the quiet cases and stopped by it (each also exits by itself
after ``--load-seconds``, so none outlives a killed run).

``--throughput`` (on by default with ``--device cuda``) adds the device-throughput section: each
contender called ``--throughput-reps`` times back to back on the same working batch (no reset
between calls: each call reorders the box region again, moving the same bytes), timed as one span
(CUDA events on a GPU, ``perf_counter`` on the CPU), median of ``--throughput-trials`` spans,
against the device's own copy bandwidth measured in the same run: ``dst.copy_(src)`` of
``--copy-mib`` MiB (larger than any cache, so memory bandwidth) and of a buffer the size of the
box (what a copy of that size reaches, caches included), each counted as read + write bytes.
Every paste is counted as 4x the box's bytes (read the region, write the temporary, read it,
write the region back: the floor's traffic), so its GB/s divided by the copy bandwidth is the
fraction of the memory bound it reaches; the goal is 0.8 at 224² float32 on CUDA.

``--sweep`` (instead of the table) times the two paste paths over a range of region sizes per
image, the measurement behind ``cutmix_algo.paste.CYCLE_WALK_MIN_BYTES``; run it with
``--threads 1`` on a busy machine, where ``index_select``'s parallel region is mostly waiting.

Before timing, each contender's output is checked against a reference paste (exact equality, with
the permutation the contender used; the floor must leave the batch unchanged).

Usage: ``python bench/op.py [--quick] [--device cpu|cuda] [--reps N] [--threads N] [--load] [--throughput]``,
``python bench/op.py --sweep [--threads 1]``
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cutmix_algo import cutmix_batch  # noqa: E402
from cutmix_algo.paste import CYCLE_WALK_MIN_BYTES, choose_method, permute_batch_  # noqa: E402

SIZES = {"224": (128, 3, 224, 224), "32": (512, 3, 32, 32)}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "uint8": torch.uint8}
NUM_CLASSES = 1000
LAM = 0.5  # the box: a centered cut of side int(side * sqrt(1 - LAM)), as the sampler makes

OURS = "ours (`cutmix_batch`, in place)"
COMPOSER = "Composer 0.32.1 `cutmix_batch`"
TORCHVISION = "torchvision v2 CutMix body"
PASTE = "paste alone: ours (`permute_batch_`)"
PASTE_BEFORE = "paste alone: before (`index_select`)"
FLOOR = "floor: two plain copies of the box"


def centered_box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    ratio = (1.0 - lam) ** 0.5
    half_h, half_w = int(height * ratio) // 2, int(width * ratio) // 2
    cy, cx = height // 2, width // 2
    return (cy - half_h, cx - half_w, cy + half_h, cx + half_w)


class Contender:
    """A named call ``fn(x, y)``, the permutation it actually uses (``None``: must change nothing)."""

    def __init__(self, name: str, fn: Callable, perm: torch.Tensor | None) -> None:
        self.name, self.fn, self.perm = name, fn, perm
        self.times: list[float] = []


def make_contenders(box, perm, lam, n) -> tuple[list[Contender], list[str]]:
    top, left, bottom, right = box
    contenders = [
        Contender(OURS, lambda x, y: cutmix_batch(x, y, num_classes=NUM_CLASSES, box=box, perm=perm).input, perm)
    ]
    skipped = []

    from composer.algorithms.cutmix.cutmix import cutmix_batch as composer_cutmix

    contenders.append(Contender(COMPOSER, lambda x, y: composer_cutmix(x, y, bbox=box, indices=perm)[0], perm))

    from torchvision.transforms.v2 import CutMix as TVCutMix

    tv = TVCutMix(alpha=1.0, num_classes=NUM_CLASSES)

    def torchvision_call(x, y):
        params = {"labels": y, "batch_size": n, "box": (left, top, right, bottom), "lam_adjusted": lam}
        out = tv.transform(x, params)
        tv.transform(y, params)
        return out

    roll_perm = torch.arange(n).roll(1).to(perm.device)
    contenders.append(Contender(TORCHVISION, torchvision_call, roll_perm))

    def paste(x, y):
        permute_batch_(x[..., top:bottom, left:right], perm)
        return x

    def paste_before(x, y):
        region = x[..., top:bottom, left:right]
        region.copy_(region.index_select(0, perm))
        return x

    # The floor's temporary is allocated once, in the untimed check call: a fresh one per call would
    # add the page faults of a new allocation (tens of ms at 224² here) to a bound meant to be tight.
    floor_tmp: list[torch.Tensor] = []

    def floor(x, y):
        region = x[..., top:bottom, left:right]
        if not floor_tmp:
            floor_tmp.append(torch.empty(region.shape, dtype=region.dtype, device=region.device))
        floor_tmp[0].copy_(region)
        region.copy_(floor_tmp[0])
        return x

    contenders += [
        Contender(PASTE, paste, perm),
        Contender(PASTE_BEFORE, paste_before, perm),
        Contender(FLOOR, floor, None),
    ]

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


def make_batch(shape, dtype, device, gen) -> torch.Tensor:
    if dtype == torch.uint8:
        pristine = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
    else:
        pristine = torch.rand(shape, generator=gen).to(dtype)
    return pristine.to(device)


def case_inputs(shape, dtype, device):
    """One case's pristine batch, labels, box, λ, permutation and box bytes, and its contenders."""
    n, _, height, width = shape
    gen = torch.Generator().manual_seed(0)
    pristine = make_batch(shape, dtype, device, gen)
    labels = torch.randint(NUM_CLASSES, (n,), generator=gen).to(device)
    box = centered_box(height, width, LAM)
    top, left, bottom, right = box
    lam = 1.0 - (bottom - top) * (right - left) / (height * width)
    perm = torch.randperm(n, generator=gen).to(device)
    np.random.seed(0)  # Composer draws a λ it then ignores; keep that draw reproducible
    contenders, skipped = make_contenders(box, perm, lam, n)
    box_bytes = n * shape[1] * (bottom - top) * (right - left) * pristine.element_size()
    return pristine, labels, box, contenders, skipped, box_bytes


def rotated(contenders: list[Contender], r: int) -> list[Contender]:
    """Round ``r``'s order: the contenders rotated by ``r``, so each takes every position in turn."""
    k = r % len(contenders)
    return contenders[k:] + contenders[:k]


def run_case(shape, dtype, device, reps, warmup, deadline=None) -> tuple[list[Contender], list[str], int, str]:
    pristine, labels, box, contenders, skipped, box_bytes = case_inputs(shape, dtype, device)
    top, left, bottom, right = box
    work = torch.empty_like(pristine)

    # Correctness first: each contender's result equals the reference for the permutation it used.
    for c in contenders:
        work.copy_(pristine)
        got = c.fn(work, labels)
        want = pristine.clone()
        if c.perm is not None:
            want[..., top:bottom, left:right] = pristine[c.perm][..., top:bottom, left:right]
        if not torch.equal(got, want):
            raise AssertionError(f"{c.name} disagrees with the expected paste")

    for _ in range(warmup):
        for c in contenders:
            work.copy_(pristine)
            c.fn(work, labels)
    for r in range(reps):
        if deadline is not None and time.monotonic() > deadline and r >= 3:
            break  # the load is about to end: keep what was measured under it
        for c in rotated(contenders, r):
            work.copy_(pristine)  # untimed: every call starts from the same pristine batch
            sync(device)
            t0 = time.perf_counter()
            c.fn(work, labels)
            sync(device)
            c.times.append(time.perf_counter() - t0)
    method = choose_method(pristine[..., top:bottom, left:right])
    return contenders, skipped, box_bytes, method


def span_seconds(fn: Callable[[], object], reps: int, device: str) -> float:
    """Seconds per call of ``reps`` back-to-back calls of ``fn``, timed as one span."""
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def copy_bandwidth(nbytes: int, device: str, reps: int, trials: int) -> float:
    """Read + write bytes per second of ``dst.copy_(src)`` for contiguous buffers of ``nbytes``."""
    src = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch, untimed
    per_call = statistics.median(span_seconds(lambda: dst.copy_(src), reps, device) for _ in range(trials))
    return 2 * nbytes / per_call


def throughput(device: str, sizes, dtypes, reps: int, trials: int, copy_mib: int) -> None:
    """Back-to-back calls of every contender against the device's copy bandwidth (see the docstring)."""
    big = copy_bandwidth(copy_mib << 20, device, reps, trials)
    print(
        f"\nDevice throughput ({device}): {reps} back-to-back calls per span, median of {trials} spans; "
        f"copy bandwidth of {copy_mib} MiB (read + write): {big / 1e9:.0f} GB/s\n"
    )
    print("| batch | dtype | contender | µs per call | GB/s (4× box) | ÷ copy bandwidth | ÷ box-sized copy |")
    print("|---|---|---|---:|---:|---:|---:|")
    goal = None  # ours' paste ÷ copy bandwidth at 224² float32, when that case runs
    for size in sizes:
        shape = SIZES[size]
        for dname in dtypes:
            pristine, labels, _, contenders, _, box_bytes = case_inputs(shape, DTYPES[dname], device)
            near = copy_bandwidth(box_bytes, device, reps, trials)
            work = pristine.clone()
            for c in contenders:
                c.fn(work, labels)  # warmup (the floor allocates its temporary here)
            for t in range(trials):
                for c in rotated(contenders, t):
                    c.times.append(span_seconds(lambda c=c, w=work, y=labels: c.fn(w, y), reps, device))
            for c in contenders:
                per_call = statistics.median(c.times)
                rate = 4 * box_bytes / per_call
                print(
                    f"| {'×'.join(map(str, shape))} | {dname} | {c.name} | {per_call * 1e6:.1f} | "
                    f"{rate / 1e9:.0f} | {rate / big:.2f} | {rate / near:.2f} |",
                    flush=True,
                )
                if (size, dname, c.name) == ("224", "float32", PASTE):
                    goal = rate / big
    if goal is not None:
        verdict = " (a CUDA goal: no verdict on the CPU)" if device != "cuda" else (
            " (met)" if goal >= 0.8 else " (NOT met)"
        )
        print(f"\nGoal {device} 224² float32: ours' paste ÷ copy bandwidth >= 0.8: {goal:.2f}{verdict}")
    print(
        "Rows count 4× the box's bytes for every contender (the whole-call rows also write the "
        f"(N, {NUM_CLASSES}) label rows, not counted); the box-sized copy of 224² float32 fits in a "
        "large GPU cache, which is why both ratios are shown."
    )


class BusyLoad:
    """One busy-loop process per core, each ending by itself after ``seconds`` (a hard limit)."""

    CODE = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"

    def __init__(self, seconds: float, processes: int | None = None) -> None:
        self.seconds = seconds
        self.processes = processes or len(os.sched_getaffinity(0))
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> BusyLoad:
        code = self.CODE.format(seconds=float(self.seconds))
        self.procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(self.processes)]
        self.deadline = time.monotonic() + self.seconds - 1.0
        time.sleep(0.5)  # let every busy process start spinning before the first timed call
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


def sweep(reps: int) -> None:
    """Both paste paths over region sizes per image: where the cycle walk starts to win."""
    print(
        "Sweep: paste alone, 256 images, centered square box of 3 channels; min and median ms of "
        f"{reps} calls each, interleaved; threshold now {CYCLE_WALK_MIN_BYTES // 1024} KiB per image\n"
    )
    print("| dtype | box side | KiB per image | cycles min | index_select min | cycles median | index_select median |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    gen = torch.Generator().manual_seed(0)
    for dname in ("float32", "uint8"):
        for side in (16, 24, 32, 40, 48, 56, 64, 80, 96):  # 3 x 96² < GRAIN_SIZE: no collapse
            n = 256
            pristine = make_batch((n, 3, side + 8, side + 8), DTYPES[dname], "cpu", gen)
            perm = torch.randperm(n, generator=gen)
            work = torch.empty_like(pristine)
            times: dict[str, list[float]] = {"cycles": [], "index_select": []}
            for r in range(reps + 1):
                for method in times if r % 2 else reversed(list(times)):
                    work.copy_(pristine)
                    t0 = time.perf_counter()
                    permute_batch_(work[..., 4 : 4 + side, 4 : 4 + side], perm, method=method)
                    if r:  # the first round is a warmup
                        times[method].append(time.perf_counter() - t0)
            kib = 3 * side * side * pristine.element_size() / 1024
            cells = [f"{min(times[m]) * 1e3:.2f}" for m in times] + [
                f"{statistics.median(times[m]) * 1e3:.2f}" for m in times
            ]
            print(f"| {dname} | {side} | {kib:.1f} | " + " | ".join(cells) + " |", flush=True)


def print_rows(label, shape, dname, contenders, box_bytes, method, gbps, results) -> None:
    ours = statistics.median(contenders[0].times)
    for c in contenders:
        med = statistics.median(c.times)
        name = c.name + (f" [{method}]" if c.name == PASTE else "")
        row = f"| {label}{'×'.join(map(str, shape))} | {dname} | {name} | {med * 1e3:.2f} | {med / ours:.2f}× |"
        if gbps:
            row += f" {4 * box_bytes / med / 1e9:.0f} |"
        print(row, flush=True)
        results[(label, shape[-1], dname, c.name)] = med
    results[(label, shape[-1], dname, "method")] = method


def summarize(results: dict) -> None:
    def ratio(num, den, label="", size=224, dtype="float32"):
        a, b = results.get((label, size, dtype, num)), results.get((label, size, dtype, den))
        return None if a is None or b is None else a / b

    goals = [
        ("224² float32: Composer ÷ ours >= 4", ratio(COMPOSER, OURS), lambda r: r >= 4),
        ("224² float32: ours' paste ÷ floor <= 2", ratio(PASTE, FLOOR), lambda r: r <= 2),
        ("224² float32: whole call (ours) ÷ floor <= 2", ratio(OURS, FLOOR), lambda r: r <= 2),
    ]
    for dname in DTYPES:
        same = results.get(("", 32, dname, "method")) == "index_select"
        goals.append(
            (
                f"32² {dname}: ours' paste ÷ before <= 1"
                + (" (the same index_select path: the ratio is the noise)" if same else ""),
                ratio(PASTE, PASTE_BEFORE, size=32, dtype=dname),
                None if same else (lambda r: r <= 1),
            )
        )
    goals += [
        ("under load, 224² float32: Composer ÷ ours > 1", ratio(COMPOSER, OURS, "load "), lambda r: r > 1),
        ("under load, 224² float32: before ÷ ours' paste", ratio(PASTE_BEFORE, PASTE, "load "), None),
        ("under load, 32² float32 (no goal): Composer ÷ ours", ratio(COMPOSER, OURS, "load ", 32), None),
    ]
    for text, value, ok in goals:
        if value is not None:
            verdict = "" if ok is None else (" (met)" if ok(value) else " (NOT met)")
            print(f"Goal {text}: {value:.2f}×{verdict}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer reps (5 instead of 25)")
    parser.add_argument("--reps", type=int, default=None, help="timed calls per contender")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--load", action="store_true", help="also time --load-sizes under a busy process per core")
    parser.add_argument("--load-sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--load-reps", type=int, default=9, help="timed calls per contender under load")
    parser.add_argument("--load-seconds", type=float, default=90.0, help="hard limit of the load processes")
    parser.add_argument("--sweep", action="store_true", help="only sweep both paste paths over region sizes")
    parser.add_argument(
        "--throughput", action=argparse.BooleanOptionalAction, default=None,
        help="back-to-back calls against the copy bandwidth (default: on with --device cuda)",
    )
    parser.add_argument("--throughput-reps", type=int, default=None, help="calls per span (cuda 50, cpu 5)")
    parser.add_argument("--throughput-trials", type=int, default=5, help="spans per contender")
    parser.add_argument("--copy-mib", type=int, default=None, help="copy-bandwidth buffer (cuda 1024, cpu 256)")
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    if args.throughput is None:
        args.throughput = cuda
    args.throughput_reps = args.throughput_reps or (50 if cuda else 5)
    args.copy_mib = args.copy_mib or (1024 if cuda else 256)
    if args.threads:
        torch.set_num_threads(args.threads)
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device")
    if args.load and args.device != "cpu":
        parser.error("--load is a CPU measurement; drop --device cuda")
    reps = args.reps or (5 if args.quick else 25)
    warmup = 1 if args.quick else 3

    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    device_name = torch.cuda.get_device_name() if cuda else "cpu"
    load_avg = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"torch {torch.__version__}, device {device_name}, threads {torch.get_num_threads()}, "
        f"{len(os.sched_getaffinity(0))} cores, load average {load_avg} (1/5/15 min) at start; "
        f"{reps} timed calls per contender after {warmup} warmup, box: centered, lam={LAM}\n"
    )
    if args.sweep:
        sweep(reps)
        return
    gbps = cuda
    header = "| batch | dtype | contender | median ms | ÷ ours |" + (" GB/s (4× box) |" if gbps else "")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    notes: set[str] = set()
    results: dict = {}
    for size in args.sizes:
        shape = SIZES[size]
        for dname in args.dtypes:
            contenders, skipped, box_bytes, method = run_case(shape, DTYPES[dname], args.device, reps, warmup)
            notes.update(skipped)
            print_rows("", shape, dname, contenders, box_bytes, method, gbps, results)

    if args.load:
        with BusyLoad(args.load_seconds) as load:
            for size in args.load_sizes:
                shape = SIZES[size]
                contenders, _, box_bytes, method = run_case(
                    shape, torch.float32, "cpu", args.load_reps, 1, deadline=load.deadline
                )
                print_rows("load ", shape, "float32", contenders, box_bytes, method, False, results)
            after = " / ".join(f"{v:.1f}" for v in os.getloadavg())
        print(
            f"\n'load' rows: {load.processes} busy-loop processes (one per core) ran while they were timed "
            f"({len(contenders[0].times)} calls per contender); load average {after} at the end."
        )
    print()
    summarize(results)
    if args.throughput:
        throughput(args.device, args.sizes, args.dtypes, args.throughput_reps, args.throughput_trials, args.copy_mib)
    print(
        "Notes: every contender supports float32, bfloat16 and uint8 here (none skipped for dtype). "
        "torchvision pastes from batch.roll(1, 0) (it takes no permutation); ours and Composer use "
        "the same random permutation. Labels: ours mixes int labels into (N, 1000) rows, Composer "
        "returns y[perm], torchvision one-hots and mixes. Paste rows: the box region only."
    )
    for note in sorted(notes):
        print(f"Skipped: {note}")


if __name__ == "__main__":
    main()
