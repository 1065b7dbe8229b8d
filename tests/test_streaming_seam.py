"""writer.streaming_seam: the installed streaming is the one the seam was written against.

Every private name the seam relies on is checked here by introspection only (nothing is
started), so a fork or an upgrade that changes one fails this file in seconds instead of
hanging an epoch or slowing it down in silence.
"""

from __future__ import annotations

import inspect
import os
from importlib.metadata import version

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(60)


def _params(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_the_pinned_versions_are_installed() -> None:
    from writer.streaming_seam import STREAMING_VERSION

    assert version("mosaicml-streaming") == STREAMING_VERSION
    assert version("mosaicml") == "0.32.1"


def test_the_overridden_dataset_methods_keep_their_signatures() -> None:
    from streaming import StreamingDataset

    for name in ("_prepare_thread", "_ready_thread", "_each_sample_id"):
        assert _params(getattr(StreamingDataset, name)) == ["self", "it"], name
    assert _params(StreamingDataset.prepare_shard) == ["self", "shard_id", "blocking"]
    assert _params(StreamingDataset.on_exception) == ["self", "future"]
    assert callable(StreamingDataset.__del__)


def test_the_iterator_fields_the_yield_loop_and_threads_use_exist() -> None:
    from streaming.base.dataset import _Iterator

    it = _Iterator(np.arange(6, dtype=np.int64))
    for field in ("prepare_index", "ready_index", "yield_index", "total", "sample_ids"):
        assert hasattr(it, field), field
    assert it.total == 6 and not it.should_exit()
    it.on_exit()  # counts a thread out; must exist and not block


def test_shard_states_constants_and_the_checksum_message_are_as_the_seam_reads_them() -> None:
    from streaming.base import stream
    from streaming.base.constant import TICK
    from streaming.base.dataset import _ShardState
    from streaming.base.shared import SharedMemory

    from writer.streaming_seam import CHECKSUM_FAILURE

    assert isinstance(_ShardState.LOCAL, _ShardState) and 0 < TICK < 1
    assert callable(SharedMemory.cleanup)
    # prepare_shard's hash failure is recognised by this text: streaming raises no type of its own.
    assert f"raise ValueError(f'{CHECKSUM_FAILURE}:" in inspect.getsource(stream)
    for private in ("_shard_states", "_shard_access_times", "_cache_filelock", "_event"):
        assert private in inspect.getsource(__import__("streaming.base.dataset", fromlist=["x"])), private


def test_the_uploader_and_writer_hooks_exist() -> None:
    from streaming import MDSWriter, StreamingDataLoader
    from streaming.base.storage.upload import CloudUploader, S3Uploader

    assert _params(CloudUploader.__init__)[:5] == ["self", "out", "keep_local", "progress_bar", "retry"]
    assert issubclass(S3Uploader, CloudUploader) and callable(S3Uploader.check_bucket_exists)
    for name in ("exception_callback", "cancel_future_jobs", "finish", "get_config"):
        assert callable(getattr(MDSWriter, name)), name
    assert "self.shards" in inspect.getsource(MDSWriter.__mro__[1])  # finish() indexes this list
    assert "_iterator" in inspect.getsource(StreamingDataLoader)


@pytest.mark.parametrize(("rank", "leads"), [(None, True), (0, True), (1, False)])
def test_the_prefix_lock_is_taken_by_whoever_creates_the_prefix(
        rank: int | None, leads: bool, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lone process and a node's local leader hold the lock; another rank of the node does not
    (it meets the leader at barriers inside streaming's constructor and would wait forever)."""
    import fcntl
    import os

    from writer import streaming_seam
    from writer.streaming_seam import prefix_lock

    monkeypatch.setattr(streaming_seam, "PREFIX_LOCK_FOLDER", str(tmp_path))
    if rank is not None:
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with prefix_lock():
        fd = os.open(tmp_path / streaming_seam.PREFIX_LOCK_NAME, os.O_RDWR | os.O_CREAT)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = False
            except BlockingIOError:
                held = True
        finally:
            os.close(fd)
    assert held is leads


def test_the_prefix_lock_is_taken_under_an_initialized_process_group(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node's local leader creates the prefix under ``torch.distributed`` too, so it locks.
    Composer's Trainer starts a process group of one even in a lone process, so a lock skipped
    under any process group was skipped in every process that had trained: two such processes
    registering at once failed with ``FileExistsError: '/000989_locals'``."""
    import fcntl
    import os

    import torch.distributed as torch_dist

    from writer import streaming_seam
    from writer.streaming_seam import prefix_lock

    monkeypatch.setattr(streaming_seam, "PREFIX_LOCK_FOLDER", str(tmp_path))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    started = not torch_dist.is_initialized()  # a Trainer in this process may have started one
    if started:
        torch_dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0,
                                      world_size=1)
    assert torch_dist.is_initialized()
    try:
        with prefix_lock():
            fd = os.open(tmp_path / streaming_seam.PREFIX_LOCK_NAME, os.O_RDWR | os.O_CREAT)
            try:
                with pytest.raises(BlockingIOError):
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd)
    finally:
        if started:
            torch_dist.destroy_process_group()


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm")
def test_the_prefix_lock_is_machine_wide_whatever_the_tmpdir(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two jobs with TMPDIRs of their own still share the lock: it lives beside the shared memory."""
    import fcntl
    import tempfile

    from writer import streaming_seam
    from writer.streaming_seam import prefix_lock

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with prefix_lock():
        fd = os.open(os.path.join("/dev/shm", streaming_seam.PREFIX_LOCK_NAME), os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    assert not list(tmp_path.iterdir())
