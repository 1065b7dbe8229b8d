"""The worker pool that writes shards: pieces mixed and encoded, shards built, bounded, dying with the writer.

:func:`write_shards` splits the schedule into pieces of about 2,048 images, and shards are cut
where :class:`~writer.pipeline.shards.ShardPlanner` (``MDSWriter``'s rule) cuts them, which depends on the
rows' sizes alone, so the bytes do not depend on the number of workers:

* raw rows all have one size, so every shard is planned before anything is mixed: a worker
  mixes and encodes a piece batch by batch, writing each batch's rows straight into their
  shard files, and once the last piece of a shard is in, a worker seals it (hashes it,
  compresses it if asked); with one worker, this process does the same, in order;
* png/jpeg rows vary: a worker leaves a piece's rows in a scratch file and returns only their
  sizes; the parent feeds them to the planner in piece order and hands each shard it closes to
  a worker, which builds, hashes and writes the whole shard.

Either way the parent touches no row bytes: it collects the shards' index entries, in order.
Workers start from a fork server (its preload, :mod:`writer.pipeline.forkserver`, makes their imports
once, and spares them the re-run of the caller's script) and map the source: the loaders'
shared memory as it is, or any other array from one copy in a scratch file.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.util
import os
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import numpy as np
import torch

from writer.errors import WriterError
from writer.pipeline import premix
from writer.pipeline.encode import encode_batch, fill_raw_rows, raw_record
from writer.pipeline.imageset import ImageSet
from writer.pipeline.interrupts import held
from writer.pipeline.premix import EpochOrders, MixedBatch, Schedule, mix_batch
from writer.pipeline.scratch import Scratch
from writer.pipeline.shards import (
    Placement,
    RowPlacer,
    ShardFormat,
    ShardPlanner,
    ShardSpec,
    build_shard,
    placements,
    plan_fixed,
    seal_shard,
)
from writer.pipeline.sharedmem import attach, shareable

__all__ = ["default_workers", "start_fork_server", "write_shards"]


class _Encoder:
    """Mixes and encodes chunks of batches; one lives in each worker process."""

    def __init__(self, source: ImageSet, seed: int, alpha: float, batch_size: int,
                 encoding: str, mode: str = "batch") -> None:
        self.source, self.seed, self.alpha = source, seed, alpha
        self.batch_size, self.encoding, self.mode = batch_size, encoding, mode
        self.order = EpochOrders(seed, len(source))
        self.record = raw_record(source.images.shape[1:], source.num_classes)
        self._kept: np.ndarray | None = None

    def __call__(self, task: tuple[int, int, int], skip: int = 0) -> tuple[bytes, np.ndarray]:
        """The png/jpeg rows of a task's batches back to back, and each row's size.

        ``skip``: leave out the task's first rows (a resumed write's shards already hold them).
        """
        encoded = [encode_batch(mixed, self.encoding) for mixed in self._mixed(task)]
        blob = b"".join(blob for blob, _ in encoded)
        size = np.concatenate([size for _, size in encoded])
        return blob[int(size[:skip].sum()):], size[skip:]

    def place(self, task: tuple[int, int, int], placer: RowPlacer, skip: int = 0) -> int:
        """Mix a task's batches as raw rows and write each batch through ``placer``; the row count.

        One batch-sized buffer serves every batch, so each batch's rows are written while they
        are still in the core's cache: a piece-sized buffer would take each row through main
        memory twice more, and memory is what two workers on one machine share. ``skip``: leave
        out the task's first rows, as in :meth:`__call__`.
        """
        at = rows = 0
        for mixed in self._mixed(task):
            n = len(mixed.images)
            out = self._rows(n)
            fill_raw_rows(mixed, out)
            dropped = min(skip, n)
            skip -= dropped
            if dropped < n:
                placer.write(out[dropped:], at)
                at += out[dropped:].nbytes
                rows += n - dropped
        return rows

    def _mixed(self, task: tuple[int, int, int]) -> Iterator[MixedBatch]:
        epoch, first, end = task
        order = self.order(epoch)
        # The box copies are tiny: torch's intra-op threads only add synchronization, which
        # costs 100x the copy itself on a busy machine. Restored for the caller afterwards.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for batch in range(first, end):
                yield mix_batch(self.source, order, self.seed, epoch, batch, self.batch_size,
                                self.alpha, self.mode)
        finally:
            torch.set_num_threads(threads)

    def _rows(self, count: int) -> np.ndarray:
        # Kept from call to call: fresh memory costs page faults that outweigh the copy itself.
        kept = self._kept
        if kept is None or len(kept) < count:
            kept = self._kept = np.empty(count, dtype=self.record)
        return kept[:count]


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


def _init_worker(images: tuple, labels: tuple, class_names: list[str], seed: int,
                 alpha: float, batch_size: int, encoding: str, mode: str,
                 parent_pid: int) -> None:
    global _WORKER_ENCODER
    # Importing cutmix_algo imports Composer, which turns SIGTERM and SIGINT into sys.exit: a
    # worker would then outlive a terminate() stuck on a queue lock. Workers die on SIGTERM
    # and leave Ctrl-C to the parent, which shuts the pool down.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with(parent_pid)
    source = ImageSet(_received(images), _received(labels), class_names)
    _WORKER_ENCODER = _Encoder(source, seed, alpha, batch_size, encoding, mode)


def _sent(array: np.ndarray, path: str | None = None) -> tuple:
    """How ``array`` reaches the workers: its shared memory, else a file at ``path``, else itself.

    Shared memory (the loaders', :mod:`writer.pipeline.sharedmem`) is mapped by every worker as it is;
    a file is one copy, memory-mapped from the page cache; an array passed as itself is pickled
    into every worker as it starts (fine for small ones only).
    """
    shared = shareable(array)
    if shared is not None:
        return ("shared", *shared, array.shape, array.dtype)
    if path is None:
        return ("array", array)
    np.save(path, array)
    return ("file", path)


def _received(sent: tuple) -> np.ndarray:
    if sent[0] == "shared":
        return attach(*sent[1:])
    if sent[0] == "file":
        return np.load(sent[1], mmap_mode="r")
    return sent[1]


def _piece_path(folder: str, piece: int) -> str:
    return os.path.join(folder, f"piece-{piece:07}")


def _run_piece(task: tuple[int, int, int], piece: int, folder: str, skip: int = 0) -> np.ndarray:
    assert _WORKER_ENCODER is not None, "worker was not initialized"
    blob, sizes = _WORKER_ENCODER(task, skip)
    # The rows stay in a scratch file for the worker that builds their shard; only their
    # sizes cross the pipe to the parent.
    with open(_piece_path(folder, piece), "wb") as f:
        f.write(blob)
    return sizes


def _run_placed(task: tuple[int, int, int], where: list[Placement], staging: str, skip: int = 0) -> int:
    assert _WORKER_ENCODER is not None, "worker was not initialized"
    with RowPlacer(where, staging) as placer:
        return _WORKER_ENCODER.place(task, placer, skip)


def _run_build(form: ShardFormat, spec: ShardSpec, folder: str, staging: str) -> dict:
    fds = {piece: os.open(_piece_path(folder, piece), os.O_RDONLY) for piece, _, _ in spec.segments}
    try:
        return build_shard(form, spec, fds, staging)
    finally:
        for fd in fds.values():
            os.close(fd)


if hasattr(multiprocessing.context, "ForkServerContext"):  # not on Windows

    class CutmixWriterWorker(multiprocessing.context.ForkServerProcess):
        """A worker of the writer's pool: a fork server process, named after this class."""

    class _WorkerContext(multiprocessing.context.ForkServerContext):
        Process = CutmixWriterWorker

    #: How the writer's workers' process names start (``CutmixWriterWorker-3``): the fork
    #: server (:mod:`writer.pipeline.forkserver`) knows them by it.
    WORKER_NAME = CutmixWriterWorker.__name__


# The fork server listens on a socket at TMPDIR/pymp-XXXXXXXX/listener-XXXXXXXX, and a socket's
# path holds at most 107 bytes: under a longer TMPDIR, multiprocessing (before Python 3.13)
# fails with "AF_UNIX path too long".
_SOCKET_PATH_MAX = 107
_SOCKET_NAME_BYTES = len("/pymp-XXXXXXXX/listener-XXXXXXXX")
_SHORT_TMP = "/tmp"


def _fit_socket_path() -> None:
    """Put multiprocessing's folder for the server's socket in /tmp when TMPDIR is too long.

    Only the socket goes there (multiprocessing removes its folder at exit); the writer's own
    temporary files stay in TMPDIR.

    Raises:
        WriterError: if TMPDIR is too long and /tmp is not a writable folder.
    """
    base = tempfile.gettempdir()
    if len(os.fsencode(base)) + _SOCKET_NAME_BYTES <= _SOCKET_PATH_MAX:
        return
    if not (os.path.isdir(_SHORT_TMP) and os.access(_SHORT_TMP, os.W_OK | os.X_OK)):
        raise WriterError(
            f"TMPDIR {base} is too long for the workers' socket (at most "
            f"{_SOCKET_PATH_MAX - _SOCKET_NAME_BYTES} bytes) and {_SHORT_TMP} is not writable; "
            "set a shorter TMPDIR or pass --workers 1")
    saved = tempfile.tempdir
    tempfile.tempdir = _SHORT_TMP
    try:
        multiprocessing.util.get_temp_dir()  # made once per process, then reused
    finally:
        tempfile.tempdir = saved


def _context() -> multiprocessing.context.BaseContext:
    # forkserver, not fork: the caller (a CLI, a test runner, a trainer) may have threads, and a
    # forked child can deadlock on a lock one of them held. The server makes the imports every
    # worker needs once (writer.pipeline.forkserver), so each worker starts in milliseconds.
    if "forkserver" in multiprocessing.get_all_start_methods():
        _fit_socket_path()
        context = _WorkerContext()
        context.set_forkserver_preload(["writer.pipeline.forkserver"])
        return context
    return multiprocessing.get_context("spawn")


def start_fork_server() -> None:
    """Start the workers' fork server now (where there is one) instead of at the first write.

    The server imports torch and this package, seconds on a small machine. Started early, for
    example before loading the source, those imports run alongside the caller's own work; a
    write with ``workers > 1`` then finds the server running. Nothing happens if it already is.
    """
    if _context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _executor(workers: int, initargs: tuple) -> ProcessPoolExecutor:
    # ProcessPoolExecutor, not Pool: a worker that dies raises BrokenProcessPool instead of
    # leaving its result to be waited for forever.
    return ProcessPoolExecutor(workers, _context(), initializer=_init_worker, initargs=initargs)


def _submit(pool: ProcessPoolExecutor, fn: Any, *args: Any) -> Future:
    # An interrupt inside submit() can leave the job recorded but never queued, and the
    # shutdown after it would wait for that job forever: it is raised once the job is in.
    with held():
        return pool.submit(fn, *args)


def write_shards(
    source: ImageSet,
    schedule: Schedule,
    form: ShardFormat,
    staging: str,
    *,
    seed: int,
    alpha: float,
    encoding: str,
    start: int = 0,
    stop: int | None = None,
    workers: int = 1,
    mode: str = "batch",
    first_shard: int = 0,
    first_row: int = 0,
) -> Iterator[tuple[int, list[dict]]]:
    """Write the shards of global batches ``[start, stop)`` into ``staging``, in order.

    With ``workers > 1`` a process pool mixes and encodes pieces and builds shards (see the
    module docstring); at most ``4 * workers`` pieces are in flight, so memory stays bounded.
    Scripts calling this with ``workers > 1`` need an ``if __name__ == "__main__":`` guard
    (workers start from a fork server).

    Args:
        source: the source images.
        schedule: the batch schedule.
        form: the shard format (:meth:`ShardFormat.from_writer`).
        staging: the folder the shard files go to.
        seed: the write's seed.
        alpha: Beta(alpha, alpha) parameter for λ.
        encoding: ``"raw"``, ``"png"`` or ``"jpeg"``.
        start: first global batch.
        stop: end global batch (default: all).
        workers: processes that mix, encode and build shards.
        mode: ``"batch"`` (one λ and box per batch) or ``"sample"`` (one per row).
        first_shard: resume: the number of the first shard to write, whose first row is
            ``first_row`` (counted from ``start``); the shards before it are not written.
        first_row: see ``first_shard``.

    Yields:
        tuple[int, list[dict]]: rows encoded since the last yield, and the index entries of
        the shards whose files have since been written to ``staging``, in shard order.
    """
    stop = schedule.total_batches if stop is None else stop
    tasks = schedule.tasks(start, stop, premix._IMAGES_PER_TASK)
    counts = [sum(map(schedule.batch_len, range(first, end))) for _, first, end in tasks]
    # A resumed write starts at its first unfinished shard: the piece holding that row, less
    # the rows before it.
    ends = np.cumsum(counts)
    piece0 = int(np.searchsorted(ends, first_row, side="right"))
    if piece0 >= len(tasks):
        return
    skip = first_row - (int(ends[piece0 - 1]) if piece0 else 0)
    tasks, counts = tasks[piece0:], counts[piece0:]
    counts[0] -= skip
    workers = min(workers, len(tasks))
    specs: list[ShardSpec] = []
    if encoding == "raw":
        record = raw_record(source.images.shape[1:], source.num_classes)
        specs = plan_fixed(form, record.itemsize, counts, first_shard)
    if workers <= 1:
        encoder = _Encoder(source, seed, alpha, schedule.batch_size, encoding, mode)
        if encoding == "raw":
            yield from _placed_here(encoder, tasks, specs, form, staging, skip)
        else:
            yield from _pooled_here(encoder, tasks, form, staging, skip, first_shard)
        return
    # A Scratch, not a TemporaryDirectory: if a kill leaves a copy of the source or a png
    # piece behind, the next write's sweep_stale() removes it.
    with Scratch("cutmix-writer-src-") as folder:
        images = _sent(source.images, os.path.join(folder, "images.npy"))
        initargs = (images, _sent(source.labels), source.class_names, seed, alpha,
                    schedule.batch_size, encoding, mode, os.getpid())
        pool = _executor(workers, initargs)
        done = False
        try:
            if encoding == "raw":
                yield from _placed(pool, tasks, specs, form, staging, workers, skip)
            else:
                yield from _pooled(pool, tasks, ShardPlanner(form, first_shard), form, folder,
                                   staging, workers, skip)
            done = True
        finally:
            # Not terminate(): a worker killed while it holds the call queue's lock hangs the
            # shutdown. Cancelled jobs never start; the few already handed out finish first.
            # Once every job is in, the workers have nothing left but to exit, which takes a
            # process with torch loaded 15-30 ms here: they exit while the caller goes on (the
            # pool's own thread reaps them, and the interpreter waits for it at exit).
            pool.shutdown(wait=not done, cancel_futures=True)


def _placed_here(encoder: _Encoder, tasks: list[tuple[int, int, int]], specs: list[ShardSpec],
                 form: ShardFormat, staging: str, skip: int = 0) -> Iterator[tuple[int, list[dict]]]:
    # One worker: the pool's raw path in this process, piece after piece; each shard is sealed
    # as soon as its last piece is in.
    where = placements(form, specs)
    sealed = 0
    for piece, task in enumerate(tasks):
        with RowPlacer(where[piece], staging) as placer:
            rows = encoder.place(task, placer, skip if piece == 0 else 0)
        entries = []
        while sealed < len(specs) and specs[sealed].segments[-1][0] <= piece:
            entries.append(seal_shard(form, specs[sealed], staging))
            sealed += 1
        yield rows, entries


def _pooled_here(encoder: _Encoder, tasks: list[tuple[int, int, int]], form: ShardFormat,
                 staging: str, skip: int = 0, first_shard: int = 0) -> Iterator[tuple[int, list[dict]]]:
    # One worker, png/jpeg: pieces stay in memory until the planner has closed their shards.
    planner = ShardPlanner(form, first_shard)
    pieces: dict[int, bytes] = {}
    for piece, task in enumerate(tasks):
        pieces[piece], sizes = encoder(task, skip if piece == 0 else 0)
        entries = [build_shard(form, spec, pieces, staging) for spec in planner.add(sizes)]
        for done in [p for p in pieces if p < planner.first_needed]:
            del pieces[done]
        yield len(sizes), entries
    last = planner.finish()
    if last is not None:
        yield 0, [build_shard(form, last, pieces, staging)]


def _placed(pool: ProcessPoolExecutor, tasks: list[tuple[int, int, int]], specs: list[ShardSpec],
            form: ShardFormat, staging: str, workers: int,
            skip: int = 0) -> Iterator[tuple[int, list[dict]]]:
    # Raw rows have one size, so every shard is planned before anything is mixed: each worker
    # writes its piece's rows straight into their shard files, batch by batch, and a shard is
    # sealed (hashed) once the last piece holding its rows is in.
    where = placements(form, specs)
    pieces: deque[Future] = deque()
    seals: deque[Future] = deque()
    todo = enumerate(tasks)
    sealed = 0  # shards handed to a seal job

    def submit_piece() -> None:
        job = next(todo, None)
        if job is not None:
            piece, task = job
            pieces.append(_submit(pool, _run_placed, task, where[piece], staging,
                                  skip if piece == 0 else 0))

    def collect(wait: bool) -> list[dict]:
        entries = []
        while seals and (wait or seals[0].done()):
            entries.append(seals.popleft().result())
        return entries

    for _ in range(4 * workers):
        submit_piece()
    done = 0  # pieces in
    while pieces:
        rows = pieces.popleft().result()
        done += 1
        submit_piece()
        while sealed < len(specs) and specs[sealed].segments[-1][0] < done:
            seals.append(_submit(pool, seal_shard, form, specs[sealed], staging))
            sealed += 1
        yield rows, collect(wait=False)
    yield 0, collect(wait=True)


def _pooled(pool: ProcessPoolExecutor, tasks: list[tuple[int, int, int]], planner: ShardPlanner,
            form: ShardFormat, folder: str, staging: str, workers: int,
            skip: int = 0) -> Iterator[tuple[int, list[dict]]]:
    pieces: deque[Future] = deque()
    builds: deque[tuple[ShardSpec, Future]] = deque()
    todo = enumerate(tasks)
    kept = 0  # piece files below this number are deleted

    def submit_piece() -> None:
        job = next(todo, None)
        if job is not None:
            pieces.append(_submit(pool, _run_piece, job[1], job[0], folder, skip if job[0] == 0 else 0))

    def build(spec: ShardSpec) -> None:
        builds.append((spec, _submit(pool, _run_build, form, spec, folder, staging)))

    def collect(wait: bool) -> list[dict]:
        nonlocal kept
        entries = []
        while builds and (wait or builds[0][1].done()):
            entries.append(builds.popleft()[1].result())
        # A piece may still be read by a build in flight or by the shard being filled.
        needed = min([planner.first_needed, *(spec.segments[0][0] for spec, _ in builds)])
        for piece in range(kept, needed):
            os.unlink(_piece_path(folder, piece))
        kept = max(kept, needed)
        return entries

    for _ in range(4 * workers):
        submit_piece()
    while pieces:
        sizes = pieces.popleft().result()
        submit_piece()
        for spec in planner.add(sizes):
            build(spec)
        yield len(sizes), collect(wait=False)
    last = planner.finish()
    if last is not None:
        build(last)
    yield 0, collect(wait=True)


def default_workers() -> int:
    """The default ``--workers``: every CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
