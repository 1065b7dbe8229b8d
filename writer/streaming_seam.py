"""Every use of mosaicml-streaming's private internals, in one module.

streaming 0.13.0 is pinned (``pyproject.toml``) and dormant upstream; a fork or an upgrade can
change any of the names below without an import error, and a change shows as a hang or a silent
slowdown. ``tests/test_streaming_seam.py`` pins the version and the signatures and attributes
relied on here, and fails in seconds when they differ. Nothing outside this module names a
private streaming attribute; the rest of the writer calls the functions and the base classes
here.

The touches, what each does, why the public API is not enough, and what breaks if it changes:

1. ``StreamingDataset.prepare_shard`` override: (a) without a cache limit, a shard already
   marked local (``_shard_states``, ``_ShardState.LOCAL``) is touched (``_shard_access_times``)
   without streaming's cache file lock, which it takes for every sample (an open, two flocks and
   a close each); (b) a downloaded shard failing its hash (streaming raises a plain
   ``ValueError`` whose text starts "Checksum failure": there is no exception type to catch) is
   turned into the reader's own error, after removing the failed copy from the cache under
   ``_cache_filelock`` and marking the shard local, so waiting workers stop waiting and the next
   read downloads it again. If the state names or the message change: (a) silently takes the
   slow path; (b) the hang with several DataLoader workers and the poisoned cache come back
   (the seam test checks the message text streaming raises).
2. ``_prepare_thread`` / ``_ready_thread`` overrides (the download and readiness threads, which
   take an ``_Iterator``): both end at once when every shard is local and raw (they would walk
   the epoch holding the GIL), and both call ``_Iterator.on_exit()`` when they raise (streaming's
   threads don't, and ``_Iterator.exit`` then waits forever). A change in ``_Iterator``'s fields
   (``prepare_index``, ``ready_index``, ``yield_index``, ``total``, ``sample_ids``,
   ``should_exit``, ``on_exit``) breaks the epoch's end: the seam test checks them.
3. ``_each_sample_id`` override: streaming's yield loop; for ``PremixedLoader`` it hands out a
   batch's ids at once (sleeping ``streaming.base.constant.TICK`` while waiting for readiness),
   so a batch is read in a few array operations. Public ``__iter__`` maps ``__getitem__`` over
   exactly this loop, and there is no public hook.
4. ``on_exception`` override: streaming's done-callback for its threads re-raises inside
   ``concurrent.futures``, which logs a traceback; for the reader's own error only the stop
   event (``_event``) is set, and ``__iter__`` raises it once.
5. ``decode_sample`` / ``get_sample_data`` replaced on each shard reader (``MDSReader``): rows of
   fixed-size columns are read with one ``preadv`` and viewed as one record, instead of an open
   per sample and a copy per column. If ``MDSReader`` stops calling them: the reader's own
   numbers stay right (its tests compare with streaming's decoder) but it is slow again.
6. ``release_shared_memory``: streaming registers each ``SharedMemory`` block for clean-up at
   exit (``atexit``) and releases a dataset's local-folder claims in ``__del__``; a process that
   builds many datasets runs out of file descriptors. The blocks are found by walking the
   dataset's attributes for ``streaming.base.shared`` objects, cleaned and unregistered.
7. ``StreamingDataLoader._iterator`` (read by its ``__del__`` even when ``__init__`` refused its
   arguments) defaults to ``None``; ``batch_size`` is set on a ``DataLoader`` after ``__init__``
   with ``object.__setattr__`` (torch refuses it otherwise) because Composer takes its default
   microbatch size from it.
8. ``timed_s3_uploader``: ``S3Uploader.__init__`` builds a boto3 client with botocore's default
   timeouts and retries (minutes of silence on a frozen endpoint) and takes no config; its
   ``__init__`` is skipped for ``CloudUploader.__init__`` plus a client with our timeouts.
   If ``S3Uploader`` gains required state in ``__init__``, uploads fail at once (tests catch it).
9. ``index_writer`` / ``add_finished_shard``: an ``MDSWriter`` that writes no shard itself and is
   handed the finished ones by appending to ``MDSWriter.shards`` (the list ``finish`` writes into
   the index), and whose ``exception_callback`` ignores cancelled uploads (streaming's logs a
   traceback for each). If ``shards`` changes meaning, the index is wrong: the byte-pinned tests
   fail.
10. ``prefix_lock`` (taken by ``SeamDataset.__init__`` and the ``mds:`` source loader) holds a
   machine-wide file lock around ``StreamingDataset.__init__``: streaming picks its shared-memory
   prefix by probing for a free name and then creating it, so two processes opening datasets at
   the same moment (two jobs on one machine, a parallel test run) can pick the same one and one
   fails with ``FileExistsError: '/000465_locals'``. The lock file lives beside the shared
   memory it guards (``/dev/shm``), so every process sees it whatever its ``TMPDIR``. Under
   ``torch.distributed`` only the node's local leader (the rank that creates the prefix) takes
   it: the other ranks meet the leader at barriers inside that call and would deadlock waiting
   for a lock it holds. Streaming's ``World`` says which rank leads, as streaming itself decides.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import numpy as np
from streaming import StreamingDataLoader, StreamingDataset
from streaming.base.constant import TICK
from streaming.base.dataset import _Iterator, _ShardState
from streaming.base.shared import SharedMemory

from writer.format.names import is_remote

__all__ = [
    "STREAMING_VERSION",
    "SeamDataset",
    "SeamLoader",
    "add_finished_shard",
    "index_writer",
    "prefix_lock",
    "release_shared_memory",
    "timed_s3_uploader",
]

#: The streaming release every touch above was written against.
STREAMING_VERSION = "0.13.0"
#: The start of the message streaming's ``prepare_shard`` raises for a shard failing its hash.
CHECKSUM_FAILURE = "Checksum failure"


class SeamDataset(StreamingDataset):
    """A ``StreamingDataset`` with touches 1-5 above; ``PremixedDataset`` builds on it.

    A subclass sets ``where`` (the dataset's URI, for messages) and implements
    :meth:`hash_failure`. ``batch_drop_last`` is ``None`` to iterate samples, or a bool to
    iterate arrays of ``batch_size`` ids (a short last batch dropped or kept).
    """

    where: str = ""
    batch_drop_last: bool | None = None
    #: An error a streaming thread met and the loop raises once (a shard failing its hash).
    failed_download: Exception | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        with prefix_lock():
            super().__init__(*args, **kwargs)

    def hash_failure(self, shard_id: int) -> Exception:
        """The error to raise for shard ``shard_id`` failing its hash after download."""
        raise NotImplementedError

    def use_shard_reader(self, shard: Any, decode: Callable[[Any], dict] | None,
                         read_row: Callable[[int], Any] | None) -> None:
        """Read ``shard`` (an ``MDSReader`` of ``self.shards``) with our row reader/decoder (5)."""
        if decode is not None:
            shard.decode_sample = decode
        if read_row is not None:
            shard.get_sample_data = read_row

    def touch_shard(self, shard_id: int) -> None:
        """Record a read of a shard for streaming's cache eviction, as its ``get_item`` does."""
        self._shard_access_times[shard_id] = time.time_ns()

    def all_local_and_raw(self) -> bool:
        """Whether every shard is local and raw, and nothing can evict one (no cache limit)."""
        if self.cache_limit or not (self._shard_states.numpy() == _ShardState.LOCAL).all():
            return False
        return all(os.path.isfile(os.path.join(shard.dirname, shard.split, shard.raw_data.basename))
                   for shard in self.shards)

    def prepare_shard(self, shard_id: int, blocking: bool = True) -> None:
        """Streaming's download of a shard: lock-free when local (1a), a hash failure named (1b)."""
        # blocking: a reader found the file missing (get_item, a batch read): streaming's own path
        # then fetches it again, as after a failed download (see _forget_failed_download).
        if not blocking and not self.cache_limit and self._shard_states[shard_id] == _ShardState.LOCAL:
            self.touch_shard(shard_id)
            return
        try:
            super().prepare_shard(shard_id, blocking)
        except ValueError as e:
            if CHECKSUM_FAILURE not in str(e):
                raise
            self._forget_failed_download(shard_id)
            # Kept: in iteration this runs in streaming's download thread, and __iter__ reraises it.
            self.failed_download = self.hash_failure(shard_id)
            raise self.failed_download from None

    def _forget_failed_download(self, shard_id: int) -> None:
        # Streaming raises with the failed copy still in the cache and the shard still marked as
        # being prepared: workers waiting for it wait forever, and a later open takes the copy, of
        # the right size, as a good local shard. Remove it and mark the shard local: every wait
        # ends (the readiness thread waits for "local" only), and the next reader finds the file
        # missing and downloads it again under the lock, meeting the same error itself.
        stream = self.streams[self.stream_per_shard[shard_id]]
        if stream.remote is None:
            return  # nothing was downloaded: the files are the user's own
        folder = os.path.join(stream.local, stream.split)
        remote = os.path.join(stream.remote, stream.split)
        if not is_remote(stream.remote) and os.path.realpath(folder) == os.path.realpath(remote):
            return  # the cache is the remote itself: never delete the user's files
        with self._cache_filelock:
            for pair in self.shards[shard_id].file_pairs:
                for info in pair:
                    if info is not None:
                        with contextlib.suppress(FileNotFoundError):
                            os.remove(os.path.join(folder, info.basename))
            self._shard_states[shard_id] = _ShardState.LOCAL

    def on_exception(self, future: Future) -> None:
        """Streaming's done-callback for its threads, quiet for :attr:`failed_download` (4)."""
        if self.failed_download is not None and future.exception() is self.failed_download:
            self._event.set()
            return
        super().on_exception(future)

    def _prepare_thread(self, it: _Iterator) -> None:
        self._thread(it, super()._prepare_thread, "prepare_index")

    def _ready_thread(self, it: _Iterator) -> None:
        self._thread(it, super()._ready_thread, "ready_index")

    def _thread(self, it: _Iterator, run: Callable[[_Iterator], None], progress: str) -> None:
        # (2) Streaming's download or readiness thread: done at once when every shard is local
        # and raw (its ``progress`` index set to the end); says it exited when it raises.
        if self.all_local_and_raw():
            setattr(it, progress, it.total)
            it.on_exit()
            return
        try:
            run(it)
        except BaseException:
            it.on_exit()
            raise

    def _each_sample_id(self, it: _Iterator) -> Iterator[Any]:
        # (3) Per sample, streaming's loop unchanged; per batch, the same ids in the same order
        # cut into arrays of batch_size, each handed out once its last sample is ready.
        if self.batch_drop_last is None:
            return super()._each_sample_id(it)
        return self._each_batch_of_ids(it, self.batch_drop_last)

    def _each_batch_of_ids(self, it: _Iterator, drop_last: bool) -> Iterator[np.ndarray]:
        places = np.flatnonzero(it.sample_ids != -1)  # streaming pads partitions with -1
        size = self.batch_size
        stop = len(places) - len(places) % size if drop_last else len(places)
        local = self.all_local_and_raw()  # all ready: no waiting for the ready thread's first tick
        for first in range(0, stop, size):
            batch = places[first:first + size]
            end = int(batch[-1]) + 1
            while not local and it.ready_index < end and not (it.should_exit() or self._event.is_set()):
                # Samples are taken as they become ready, as streaming's own loop takes them, so
                # its threads' read-ahead limit (predownload) counts from here.
                it.yield_index = max(it.yield_index, it.ready_index)
                time.sleep(TICK)
            if it.should_exit() or self._event.is_set():
                break
            yield it.sample_ids[batch]
            it.yield_index = end
        else:
            it.yield_index = it.total  # a dropped short batch: its samples count as taken
        it.on_exit()

    def __iter__(self) -> Iterator[Any]:
        yield from super().__iter__()
        # streaming ends an epoch early, silently, when its download thread fails: say why.
        if self.failed_download is not None:
            raise self.failed_download
        if getattr(self, "_event", None) is not None and self._event.is_set():
            raise RuntimeError(f"streaming's download thread failed while reading {self.where}; "
                               "see the error above")


#: Where :func:`prefix_lock`'s file lives: beside POSIX shared memory on Linux, machine-wide
#: whatever a process's TMPDIR (the temporary folder where there is no such folder).
PREFIX_LOCK_FOLDER = "/dev/shm"
PREFIX_LOCK_NAME = "cutmix-streaming-shm-prefix.lock"


@contextlib.contextmanager
def prefix_lock() -> Iterator[None]:
    """Hold the machine-wide lock around a ``StreamingDataset`` construction (10).

    Under ``torch.distributed`` only the node's local leader takes it (the other ranks meet it at
    barriers inside and create no prefix); no lock where the lock file is another user's (then as
    with streaming alone).
    """
    import fcntl
    import tempfile

    from streaming.base.world import World

    fd = None
    if World.detect().is_local_leader:
        folder = PREFIX_LOCK_FOLDER if os.path.isdir(PREFIX_LOCK_FOLDER) else tempfile.gettempdir()
        with contextlib.suppress(OSError):
            fd = os.open(os.path.join(folder, PREFIX_LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)  # one prefix probe-and-create at a time
        yield
    finally:
        if fd is not None:
            os.close(fd)


def release_shared_memory(dataset: StreamingDataset) -> None:
    """Release the shared memory streaming opened for ``dataset`` now, not at interpreter exit (6).

    ``dataset`` is unusable afterwards.
    """
    StreamingDataset.__del__(dataset)  # streaming's own release: marks its local folders free
    for block in shared_blocks(dataset):
        atexit.unregister(block.cleanup)
        block.cleanup()


def shared_blocks(dataset: StreamingDataset) -> list[SharedMemory]:
    """The shared-memory blocks a dataset holds, directly or in its shared arrays and barrier."""
    found: list[SharedMemory] = []
    seen: set[int] = set()

    def walk(value: object, depth: int) -> None:
        if id(value) in seen or depth > 3:
            return
        seen.add(id(value))
        if isinstance(value, SharedMemory):
            found.append(value)
        elif depth < 3 and hasattr(value, "__dict__") and (
                value is dataset or type(value).__module__.startswith("streaming.base.shared")):
            for attribute in vars(value).values():
                walk(attribute, depth + 1)

    walk(dataset, 0)
    return found


class SeamLoader(StreamingDataLoader):
    """A ``StreamingDataLoader`` that may report a batch size it does not batch by (7)."""

    _iterator = None  # StreamingDataLoader.__del__ reads it, even after __init__ refused its arguments

    def report_batch_size(self, size: int) -> None:
        """Set ``batch_size`` after ``__init__`` (torch refuses a plain assignment)."""
        object.__setattr__(self, "batch_size", size)


def timed_s3_uploader(staging: str, uri: str, timeout: float) -> Any:
    """streaming's S3 uploader with botocore timeouts and no botocore retries of its own (8).

    Attempts are made and reported by the caller instead.
    """
    import boto3
    from botocore.config import Config
    from streaming.base.storage.upload import CloudUploader, S3Uploader

    class TimedS3Uploader(S3Uploader):
        def __init__(self) -> None:  # S3Uploader.__init__ with a Config of our own
            CloudUploader.__init__(self, (staging, uri), retry=1)
            config = Config(connect_timeout=timeout, read_timeout=timeout,
                            retries={"total_max_attempts": 1})
            self.s3 = boto3.session.Session().client(
                "s3", config=config, endpoint_url=os.environ.get("S3_ENDPOINT_URL"))
            self.check_bucket_exists(self.remote)

    return TimedS3Uploader()


def index_writer(**kwargs: Any) -> Any:
    """An ``MDSWriter`` (``kwargs`` are its arguments) that writes only the index (9).

    Its config, size accounting and index are streaming's own; finished shards are handed to it
    with :func:`add_finished_shard`.
    """
    from streaming import MDSWriter

    class IndexWriter(MDSWriter):
        def exception_callback(self, future: Future) -> None:
            # streaming's callback calls future.exception(), which raises CancelledError for the
            # jobs cancel_future_jobs() cancels after a failure: one traceback per job.
            if not future.cancelled():
                super().exception_callback(future)

    return IndexWriter(**kwargs)


def add_finished_shard(writer: Any, entry: dict) -> None:
    """List a finished shard's index ``entry`` in ``writer`` (from :func:`index_writer`)."""
    writer.shards.append(entry)
