"""Pre-mixing: epochs → batches → the shared sampler and applier → encoded MDS sample rows.

The schedule is a pure function of the arguments:

* epoch ``e`` visits the source in the order ``torch.randperm(N, generator=derive_generator(seed,
  e, ORDER_KEY))``;
* batch ``b`` of epoch ``e`` is positions ``[b * batch_size, (b + 1) * batch_size)`` of that order
  (the last batch may be shorter) and is mixed with ``sample_params(len(batch), H, W, alpha,
  derive_generator(seed, e, b))``: one λ, one box and one permutation per batch;
* batches are numbered globally ``g = e * batches_per_epoch + b``; samples are stored in the order
  (epoch, batch, position in batch), so sample ``e * N + b * batch_size + j`` is row ``j`` of
  batch ``b`` of epoch ``e``.

``ORDER_KEY = 2**32 - 1`` cannot be a batch number (an epoch would need 4 billion batches), so the
order generator never collides with a batch generator.

Rows are encoded here, in the worker processes, into the exact bytes ``MDSWriter.encode_sample``
would produce, so the parent only appends bytes and the output does not depend on the number of
workers.
"""

from __future__ import annotations

import ctypes
import io
import json
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from cutmix_algo.functional import apply_params
from cutmix_algo.sampling import (
    EXACT_SUM_ROWS,
    Box,
    CutMixParams,
    RowParams,
    derive_generator,
    label_lam,
    sample_params,
)
from writer.scratch import Scratch
from writer.sources import ImageSet
from writer.uri import resolve_spec

__all__ = [
    "DEFAULT_SIZE_LIMIT",
    "ENCODINGS",
    "INDEX_NAME",
    "MANIFEST_NAME",
    "ORDER_KEY",
    "MixedBatch",
    "PremixConfig",
    "Provenance",
    "Schedule",
    "ScheduleLookup",
    "build_manifest",
    "column_encodings",
    "config_from_manifest",
    "default_workers",
    "encode_rows",
    "epoch_order",
    "iter_encoded",
    "manifest_bytes",
    "mix_batch",
    "mix_pair",
    "tool_version",
]

ORDER_KEY = 2**32 - 1
ENCODINGS = ("raw", "png", "jpeg")
# Roughly how many images one worker task mixes and encodes: big enough to amortize the
# inter-process hop, small enough to keep every worker busy and the progress bar moving.
_IMAGES_PER_TASK = 2048


@dataclass(frozen=True)
class Schedule:
    """How ``num_images`` source images, ``epochs`` times over, split into batches."""

    num_images: int
    batch_size: int
    epochs: int

    @property
    def batches_per_epoch(self) -> int:
        """Number of batches in one epoch (the last one may be short)."""
        return math.ceil(self.num_images / self.batch_size)

    @property
    def total_batches(self) -> int:
        """Number of batches over all epochs."""
        return self.batches_per_epoch * self.epochs

    @property
    def total_samples(self) -> int:
        """Number of samples over all epochs."""
        return self.num_images * self.epochs

    def locate(self, global_batch: int) -> tuple[int, int]:
        """``(epoch, batch in epoch)`` of a global batch number."""
        return divmod(global_batch, self.batches_per_epoch)

    def batch_len(self, batch: int) -> int:
        """Number of samples in batch ``batch`` of any epoch."""
        return min(self.batch_size, self.num_images - batch * self.batch_size)

    def first_sample(self, global_batch: int) -> int:
        """Global sample position of the first row of a global batch."""
        epoch, batch = self.locate(global_batch)
        return epoch * self.num_images + batch * self.batch_size

    def group_range(self, num_groups: int, group: int) -> tuple[int, int]:
        """The contiguous global batch range ``[start, stop)`` that group ``group`` writes."""
        if not 0 <= group < num_groups:
            raise ValueError(f"group must lie in [0, {num_groups}), got {group}")
        total = self.total_batches
        return group * total // num_groups, (group + 1) * total // num_groups

    def tasks(self, start: int, stop: int) -> list[tuple[int, int, int]]:
        """Split global batches ``[start, stop)`` into ``(epoch, first, end)`` chunks of work."""
        per_task = max(1, _IMAGES_PER_TASK // self.batch_size)
        out = []
        g = start
        while g < stop:
            epoch, batch = self.locate(g)
            end = min(batch + per_task, self.batches_per_epoch, batch + stop - g)
            out.append((epoch, batch, end))
            g += end - batch
        return out


@dataclass(frozen=True)
class MixedBatch:
    """One mixed batch, numpy throughout, ready to encode.

    Attributes:
        images: uint8 ``(B, H, W, C)``, mixed.
        labels: float32 ``(B, K)``, mixed.
        index_a: int64 ``(B,)`` source index of each row's base image.
        index_b: int64 ``(B,)`` source index of the image pasted into each row's box.
        lam: the kept fraction shared by every row.
        box: ``(top, left, bottom, right)`` shared by every row.
        epoch: the epoch the batch belongs to.
    """

    images: np.ndarray
    labels: np.ndarray
    index_a: np.ndarray
    index_b: np.ndarray
    lam: float
    box: Box
    epoch: int


def epoch_order(seed: int, epoch: int, num_images: int) -> np.ndarray:
    """The int64 order in which epoch ``epoch`` visits the source."""
    generator = derive_generator(seed, epoch, ORDER_KEY)
    return torch.randperm(num_images, generator=generator).numpy()


class _LastEpochOrder:
    """:func:`epoch_order`, keeping the last epoch's: callers walk the schedule epoch by epoch."""

    def __init__(self, seed: int, num_images: int) -> None:
        self.seed, self.num_images = seed, num_images
        self._last: tuple[int, np.ndarray] | None = None

    def __call__(self, epoch: int) -> np.ndarray:
        if self._last is None or self._last[0] != epoch:
            self._last = (epoch, epoch_order(self.seed, epoch, self.num_images))
        return self._last[1]


def _mix(source: ImageSet, index: np.ndarray, params: CutMixParams | RowParams,
         epoch: int) -> MixedBatch:
    images = source.images[index]  # fancy indexing copies: the source stays untouched
    # The training batch size is unknown here: λ goes on the grid that keeps the label rows of
    # any training batch of up to EXACT_SUM_ROWS samples summing exactly (see label_lam).
    out = apply_params(torch.from_numpy(images), torch.from_numpy(source.labels[index]), params,
                       source.num_classes, exact_rows=EXACT_SUM_ROWS, layout="NHWC")
    if isinstance(params, RowParams):
        lam: float | np.ndarray = out.lam.numpy()
        box: Box | np.ndarray = params.boxes.numpy()
    else:
        # The recorded λ is the box's kept fraction even for a one-row batch (where the applier
        # reports 1.0, nothing being mixed): its label row is the same either way, and verify
        # and the pinned bytes expect this value.
        lam, box = label_lam(params.lam, EXACT_SUM_ROWS), params.box
    return MixedBatch(
        images=images,
        labels=out.target.numpy(),
        index_a=index.astype(np.int64),
        index_b=index[params.perm.numpy()].astype(np.int64),
        lam=lam,
        box=box,
        epoch=epoch,
    )


def mix_batch(
    source: ImageSet,
    order: np.ndarray,
    seed: int,
    epoch: int,
    batch: int,
    batch_size: int,
    alpha: float,
) -> MixedBatch:
    """Mix batch ``batch`` of epoch ``epoch`` (``order`` is that epoch's :func:`epoch_order`).

    Args:
        source: the source images.
        order: the epoch's visiting order.
        seed: the write's seed.
        epoch: the epoch number.
        batch: the batch number within the epoch.
        batch_size: the nominal batch size.
        alpha: Beta(alpha, alpha) parameter for λ.

    Returns:
        MixedBatch: the mixed rows with their provenance.
    """
    index = order[batch * batch_size:(batch + 1) * batch_size]
    _, height, width, _ = source.images.shape
    params = sample_params(len(index), height, width, alpha, derive_generator(seed, epoch, batch))
    return _mix(source, index, params, epoch)


def mix_pair(source: ImageSet, index_a: int, index_b: int, lam: float, box: Box,
             epoch: int) -> MixedBatch:
    """A one-row batch: ``index_a`` with ``box`` pasted from ``index_b`` (``verify`` uses it)."""
    index = np.array([index_a, index_b], dtype=np.int64)
    pair = _mix(source, index, CutMixParams(lam, box, torch.tensor([1, 0])), epoch)
    return MixedBatch(pair.images[:1], pair.labels[:1], pair.index_a[:1], pair.index_b[:1],
                      pair.lam, box, epoch)


class Provenance(NamedTuple):
    """Where a sample comes from: its place in the schedule and what was mixed into it."""

    epoch: int
    batch: int
    row: int
    index_a: int
    index_b: int
    lam: float
    box: Box


class ScheduleLookup:
    """What the schedule puts at each global sample position, for checking written samples.

    Keeps the last epoch's order and the last batch's parameters, so walking positions in order
    costs one ``sample_params`` per batch.
    """

    def __init__(self, schedule: Schedule, seed: int, alpha: float, height: int,
                 width: int) -> None:
        self.schedule, self.seed, self.alpha = schedule, seed, alpha
        self.height, self.width = height, width
        self._order = _LastEpochOrder(seed, schedule.num_images)
        self._params: tuple[tuple[int, int], CutMixParams] | None = None

    def __call__(self, position: int) -> Provenance:
        schedule = self.schedule
        epoch, rest = divmod(position, schedule.num_images)
        batch, row = divmod(rest, schedule.batch_size)
        order = self._order(epoch)
        if self._params is None or self._params[0] != (epoch, batch):
            params = sample_params(schedule.batch_len(batch), self.height, self.width,
                                   self.alpha, derive_generator(self.seed, epoch, batch))
            self._params = ((epoch, batch), params)
        params = self._params[1]
        first = batch * schedule.batch_size
        return Provenance(epoch, batch, row, int(order[first + row]),
                          int(order[first + int(params.perm[row])]),
                          label_lam(params.lam, EXACT_SUM_ROWS), params.box)


def column_encodings(encoding: str, image_shape: Sequence[int], num_classes: int) -> dict[str, str]:
    """The MDS columns of a pre-mixed dataset.

    Raw images get a fixed-shape ``ndarray:uint8:H,W,C`` encoding (no per-sample shape header).
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    image = "ndarray:uint8:" + ",".join(str(int(d)) for d in image_shape)
    return {
        "box": "ndarray:int32:4",
        "epoch": "int32",
        "image": image if encoding == "raw" else encoding,
        "index_a": "int64",
        "index_b": "int64",
        "label": f"ndarray:float32:{num_classes}",
        "lam": "float64",
    }


def _fixed_rows(fields: list[tuple[str, object, tuple[int, ...]]], values: dict[str, object],
                n: int) -> np.ndarray:
    # One packed record per sample; its bytes are the fields' bytes back to back, which is how
    # MDS lays out fixed-size columns (sorted by name, native byte order).
    rows = np.empty(n, dtype=np.dtype([(name, dtype, shape) for name, dtype, shape in fields]))
    for name, _, _ in fields:
        rows[name] = values[name]
    return rows


def _split(buffer: bytes, n: int) -> list[bytes]:
    size = len(buffer) // n
    return [buffer[i * size:(i + 1) * size] for i in range(n)]


def _encode_image(image: np.ndarray, encoding: str) -> bytes:
    # The very call streaming's ``png``/``jpeg`` MDS encodings make (PIL defaults), done here so
    # worker processes need not import streaming (whose package import pulls in transformers).
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    out = io.BytesIO()
    pil.save(out, format="PNG" if encoding == "png" else "JPEG")
    return out.getvalue()


def encode_rows(batch: MixedBatch, encoding: str) -> list[bytes]:
    """Encode a mixed batch into MDS sample bytes, one ``bytes`` per row.

    The bytes equal ``MDSWriter.encode_sample`` of the row under :func:`column_encodings`
    (a test pins this), but are built for the whole batch at once.

    Args:
        batch: the mixed batch.
        encoding: ``"raw"``, ``"png"`` or ``"jpeg"``.

    Returns:
        list[bytes]: the encoded rows, in batch order.
    """
    n, height, width, channels = batch.images.shape
    num_classes = batch.labels.shape[1]
    values = {
        "box": np.asarray(batch.box, dtype=np.int32),
        "epoch": batch.epoch,
        "image": batch.images,
        "index_a": batch.index_a,
        "index_b": batch.index_b,
        "label": batch.labels,
        "lam": batch.lam,
    }
    head = [("box", np.int32, (4,)), ("epoch", np.int32, ())]
    tail = [
        ("index_a", np.int64, ()),
        ("index_b", np.int64, ()),
        ("label", np.float32, (num_classes,)),
        ("lam", np.float64, ()),
    ]
    if encoding == "raw":
        fields = head + [("image", np.uint8, (height, width, channels))] + tail
        return _split(_fixed_rows(fields, values, n).tobytes(), n)
    heads = _split(_fixed_rows(head, values, n).tobytes(), n)
    tails = _split(_fixed_rows(tail, values, n).tobytes(), n)
    rows = []
    for i in range(n):
        image = _encode_image(batch.images[i], encoding)
        # The only variable-size column: MDS puts its uint32 length before the fixed columns.
        size = np.uint32(len(image)).tobytes()
        rows.append(b"".join((size, heads[i], image, tails[i])))
    return rows


class _Encoder:
    """Mixes and encodes chunks of batches; one lives in each worker process."""

    def __init__(self, source: ImageSet, seed: int, alpha: float, batch_size: int,
                 encoding: str) -> None:
        self.source, self.seed, self.alpha = source, seed, alpha
        self.batch_size, self.encoding = batch_size, encoding
        self.order = _LastEpochOrder(seed, len(source))

    def __call__(self, task: tuple[int, int, int]) -> list[bytes]:
        epoch, first, end = task
        order = self.order(epoch)
        rows: list[bytes] = []
        # The box copies are tiny: torch's intra-op threads only add synchronization, which
        # costs 100x the copy itself on a busy machine. Restored for the caller afterwards.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for batch in range(first, end):
                mixed = mix_batch(self.source, order, self.seed, epoch, batch, self.batch_size,
                                  self.alpha)
                rows.extend(encode_rows(mixed, self.encoding))
        finally:
            torch.set_num_threads(threads)
        return rows


_WORKER_ENCODER: _Encoder | None = None
_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


def _die_with(parent_pid: int) -> None:
    """End this worker when the writer that started it dies, even by SIGKILL.

    A worker's parent is the fork server, so Linux's parent-death signal covers the server's
    death (it exits when the writer's end of its pipe closes); a thread polling the writer's
    pid covers the rest, and other systems.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass
            if os.getppid() != parent:  # the fork server died: reparented
                os._exit(1)

    threading.Thread(target=watch, name="cutmix-parent-watch", daemon=True).start()


def _init_worker(images_path: str, labels: np.ndarray, class_names: list[str], seed: int,
                 alpha: float, batch_size: int, encoding: str, parent_pid: int) -> None:
    global _WORKER_ENCODER
    # Importing cutmix_algo imports Composer, which turns SIGTERM and SIGINT into sys.exit: a
    # worker would then outlive a terminate() stuck on a queue lock. Workers die on SIGTERM
    # and leave Ctrl-C to the parent, which shuts the pool down.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with(parent_pid)
    # Memory-mapped, so every worker reads the one copy in the page cache.
    images = np.load(images_path, mmap_mode="r")
    source = ImageSet(images, labels, class_names)
    _WORKER_ENCODER = _Encoder(source, seed, alpha, batch_size, encoding)


def _run_task(task: tuple[int, int, int]) -> tuple[bytes, np.ndarray]:
    assert _WORKER_ENCODER is not None, "worker was not initialized"
    rows = _WORKER_ENCODER(task)
    # One blob and its row lengths pickle and cross the pipe far faster than thousands of
    # small bytes objects; the parent hands out views into it.
    return b"".join(rows), np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))


def _unpack(blob: bytes, sizes: np.ndarray) -> list[memoryview]:
    view = memoryview(blob)
    ends = np.cumsum(sizes).tolist()
    return [view[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)]


def _executor(workers: int, initargs: tuple) -> ProcessPoolExecutor:
    # forkserver, not fork: the caller (a CLI, a test runner, a trainer) may have threads, and a
    # forked child can deadlock on a lock one of them held. The server imports this module once,
    # so each worker starts in milliseconds. ProcessPoolExecutor, not Pool: a worker that dies
    # raises BrokenProcessPool instead of leaving its result to be waited for forever.
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["writer.premix"])
    else:
        context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(workers, context, initializer=_init_worker, initargs=initargs)


def iter_encoded(
    source: ImageSet,
    schedule: Schedule,
    *,
    seed: int,
    alpha: float,
    encoding: str,
    start: int = 0,
    stop: int | None = None,
    workers: int = 1,
) -> Iterator[Sequence[bytes | memoryview]]:
    """Yield the encoded rows of global batches ``[start, stop)``, in order, chunk by chunk.

    With ``workers > 1`` a process pool mixes and encodes chunks; results come back in task
    order and at most ``4 * workers`` chunks are in flight, so memory stays bounded when the
    consumer is slower than the pool. Scripts calling this with ``workers > 1`` need an
    ``if __name__ == "__main__":`` guard (workers start from a fork server).

    Args:
        source: the source images.
        schedule: the batch schedule.
        seed: the write's seed.
        alpha: Beta(alpha, alpha) parameter for λ.
        encoding: ``"raw"``, ``"png"`` or ``"jpeg"``.
        start: first global batch.
        stop: end global batch (default: all).
        workers: processes that mix and encode.

    Yields:
        Sequence[bytes | memoryview]: encoded rows of consecutive batches (views into one
        buffer per chunk when they come from the pool).
    """
    stop = schedule.total_batches if stop is None else stop
    tasks = schedule.tasks(start, stop)
    if workers <= 1 or len(tasks) <= 1:
        encoder = _Encoder(source, seed, alpha, schedule.batch_size, encoding)
        yield from map(encoder, tasks)
        return
    # A Scratch, not a TemporaryDirectory: if a kill leaves the copy behind, the next write's
    # sweep_stale() removes it.
    with Scratch("cutmix-writer-src-") as folder:
        images_path = os.path.join(folder, "images.npy")
        np.save(images_path, source.images)
        initargs = (images_path, source.labels, source.class_names, seed, alpha,
                    schedule.batch_size, encoding, os.getpid())
        pool = _executor(min(workers, len(tasks)), initargs)
        try:
            pending: deque[Future] = deque()
            todo = iter(tasks)
            for task in todo:
                pending.append(pool.submit(_run_task, task))
                if len(pending) >= 4 * workers:
                    break
            while pending:
                rows = _unpack(*pending.popleft().result())
                next_task = next(todo, None)
                if next_task is not None:
                    pending.append(pool.submit(_run_task, next_task))
                yield rows
        finally:
            # Not terminate(): a worker killed while it holds the call queue's lock hangs the
            # shutdown. Cancelled chunks never start; the few already handed out finish first.
            pool.shutdown(wait=True, cancel_futures=True)


def default_workers() -> int:
    """The default ``--workers``: every CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


MANIFEST_NAME = "cutmix_manifest.json"
INDEX_NAME = "index.json"
DEFAULT_SIZE_LIMIT = 1 << 26


@dataclass(frozen=True)
class PremixConfig:
    """Everything that decides the bytes of a pre-mixed dataset, besides the source.

    Attributes:
        alpha: Beta(alpha, alpha) parameter for λ.
        batch_size: images per batch (one λ and one box each).
        epochs: passes over the source.
        seed: the root of every generator key.
        encoding: ``"raw"``, ``"png"`` or ``"jpeg"``.
        compression: MDS shard compression (``None`` or e.g. ``"zstd"``).
        size_limit: MDS shard size limit in bytes.
    """

    alpha: float = 1.0
    batch_size: int = 128
    epochs: int = 1
    seed: int = 0
    encoding: str = "raw"
    compression: str | None = None
    size_limit: int = DEFAULT_SIZE_LIMIT


def tool_version() -> str:
    """The installed ``cutmix`` distribution's version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cutmix")
    except PackageNotFoundError:
        return "unknown"


def build_manifest(
    source: ImageSet,
    config: PremixConfig,
    *,
    source_spec: str,
    split: str,
    image_size: int | None = None,
    group: dict | None = None,
    mds_options: dict | None = None,
) -> dict:
    """The manifest stored beside ``index.json``: arguments, source fingerprint, classes, keys.

    It holds nothing that varies between runs with the same arguments (no time, no OUT, no
    worker count), so it is part of the byte-identical output; a group's manifest adds a
    ``group`` entry, which ``merge`` drops again.

    Args:
        source: the source images.
        config: the arguments that decide the bytes.
        source_spec: the ``--source`` text.
        split: the ``--split``.
        image_size: the ``--image-size``, if any.
        group: ``{"index", "count", "start_batch", "stop_batch"}`` for a group's share.
        mds_options: ``{"image_column", "label_column", "num_classes"}`` of an ``mds:`` source;
            recorded as ``args["mds"]`` only where one differs from its default, so other
            writes keep their manifest bytes.

    Returns:
        dict: the manifest.
    """
    schedule = Schedule(len(source), config.batch_size, config.epochs)
    manifest = {
        "format": "cutmix-premixed",
        "format_version": 1,
        "tool": "cutmix",
        "tool_version": tool_version(),
        "args": {
            "alpha": config.alpha,
            "batch_size": config.batch_size,
            "compression": config.compression,
            "encoding": config.encoding,
            "epochs": config.epochs,
            "image_size": image_size,
            "seed": config.seed,
            "size_limit": config.size_limit,
            "source": source_spec,
            # Where this machine found the source, so verify elsewhere can suggest --source.
            "source_resolved": resolve_spec(source_spec),
            "split": split,
        },
        "source": {
            "fingerprint": source.fingerprint(),
            "num_images": len(source),
            "image_shape": [int(d) for d in source.images.shape[1:]],
        },
        "num_classes": source.num_classes,
        "class_names": list(source.class_names),
        "num_samples": schedule.total_samples,
        "batches_per_epoch": schedule.batches_per_epoch,
        "columns": column_encodings(config.encoding, source.images.shape[1:], source.num_classes),
        "generator_keys": {
            "epoch_order": f"torch.randperm(N, generator=derive_generator(seed, epoch, {ORDER_KEY}))",
            "batch": "sample_params(len(batch), H, W, alpha, derive_generator(seed, epoch, batch))",
        },
    }
    defaults = {"image_column": "image", "label_column": "label", "num_classes": None}
    if mds_options and any(mds_options.get(k, v) != v for k, v in defaults.items()):
        manifest["args"]["mds"] = {k: mds_options.get(k, v) for k, v in defaults.items()}
    if group is not None:
        manifest["group"] = group
    return manifest


def manifest_bytes(manifest: dict) -> bytes:
    """The manifest's canonical serialization (sorted keys, two-space indent, final newline)."""
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def config_from_manifest(manifest: dict) -> PremixConfig:
    """The :class:`PremixConfig` a manifest records."""
    args = manifest["args"]
    return PremixConfig(
        alpha=args["alpha"],
        batch_size=args["batch_size"],
        epochs=args["epochs"],
        seed=args["seed"],
        encoding=args["encoding"],
        compression=args["compression"],
        size_limit=args["size_limit"],
    )
