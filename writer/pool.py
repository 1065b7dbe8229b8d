"""The worker pool that mixes and encodes batches: chunks in order, bounded, dying with the writer.

Workers start from a fork server and read the source from one memory-mapped copy; each returns a
chunk's rows as one blob; :func:`iter_encoded` yields chunks in task order, so the bytes do not
depend on the number of workers.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np
import torch

from writer.encode import encode_rows
from writer.premix import EpochOrders, Schedule, mix_batch
from writer.scratch import Scratch
from writer.sources import ImageSet

__all__ = ["default_workers", "iter_encoded"]


class _Encoder:
    """Mixes and encodes chunks of batches; one lives in each worker process."""

    def __init__(self, source: ImageSet, seed: int, alpha: float, batch_size: int,
                 encoding: str, mode: str = "batch") -> None:
        self.source, self.seed, self.alpha = source, seed, alpha
        self.batch_size, self.encoding, self.mode = batch_size, encoding, mode
        self.order = EpochOrders(seed, len(source))

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
                                  self.alpha, self.mode)
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
                 alpha: float, batch_size: int, encoding: str, mode: str,
                 parent_pid: int) -> None:
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
    _WORKER_ENCODER = _Encoder(source, seed, alpha, batch_size, encoding, mode)


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
        context.set_forkserver_preload(["writer.pool"])
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
    mode: str = "batch",
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
        mode: ``"batch"`` (one λ and box per batch) or ``"sample"`` (one per row).

    Yields:
        Sequence[bytes | memoryview]: encoded rows of consecutive batches (views into one
        buffer per chunk when they come from the pool).
    """
    stop = schedule.total_batches if stop is None else stop
    tasks = schedule.tasks(start, stop)
    if workers <= 1 or len(tasks) <= 1:
        encoder = _Encoder(source, seed, alpha, schedule.batch_size, encoding, mode)
        yield from map(encoder, tasks)
        return
    # A Scratch, not a TemporaryDirectory: if a kill leaves the copy behind, the next write's
    # sweep_stale() removes it.
    with Scratch("cutmix-writer-src-") as folder:
        images_path = os.path.join(folder, "images.npy")
        np.save(images_path, source.images)
        initargs = (images_path, source.labels, source.class_names, seed, alpha,
                    schedule.batch_size, encoding, mode, os.getpid())
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
