"""Temporary folders that a later run removes when a kill left them behind.

A write with workers keeps png/jpeg pieces in ``$TMPDIR/cutmix-writer-src-*`` (and a copy of a
source that is not in shared memory: :mod:`writer.pipeline.sharedmem`) and stages a bucket
write in ``$TMPDIR/cutmix-writer-stage-*``. A clean exit removes them; SIGKILL cannot. Each folder
holds a ``.lock`` file its process keeps ``flock``-ed while it lives (the kernel drops the lock
when the process dies, however it dies), so :func:`sweep_stale` removes exactly the folders whose
owner is gone, never one in use by a live write.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time

__all__ = ["PREFIXES", "Scratch", "sweep_stale"]

PREFIXES = ("cutmix-writer-src-", "cutmix-writer-stage-", "cutmix-mds-src-")
_LOCK_NAME = ".lock"
# A folder without its lock file is either being created this instant or was left by a version
# that wrote none; only the second kind is this old.
_UNLOCKED_GRACE_S = 60.0


class Scratch:
    """A temporary folder, locked for the life of this object (or its process).

    Args:
        prefix: one of :data:`PREFIXES`, so :func:`sweep_stale` knows the folder.
    """

    def __init__(self, prefix: str) -> None:
        if prefix not in PREFIXES:
            raise ValueError(f"prefix must be one of {PREFIXES}, got {prefix!r}")
        self.path = tempfile.mkdtemp(prefix=prefix)
        self._fd: int | None = os.open(os.path.join(self.path, _LOCK_NAME), os.O_CREAT | os.O_RDWR,
                                       0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def close(self) -> None:
        """Remove the folder and drop its lock (idempotent)."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> str:
        return self.path

    def __exit__(self, *exc: object) -> None:
        self.close()


def sweep_stale(folder: str | None = None) -> list[str]:
    """Remove the scratch folders under ``folder`` (default: the temp dir) whose owner died.

    Returns:
        list[str]: the folders removed.
    """
    folder = folder or tempfile.gettempdir()
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(folder, name)
        if not name.startswith(PREFIXES) or not os.path.isdir(path) or os.path.islink(path):
            continue
        try:
            fd = os.open(os.path.join(path, _LOCK_NAME), os.O_RDWR)
        except FileNotFoundError:
            try:
                if time.time() - os.stat(path).st_mtime > _UNLOCKED_GRACE_S:
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
            except OSError:
                pass
            continue
        except OSError:
            continue  # another user's folder, say
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # its owner lives
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)
        removed.append(path)
    return removed
