"""The writer's errors: one base, and a subclass only where a caller catches it differently.

``cutmix-writer`` catches :class:`WriterError` once, in :mod:`writer.cli`, and prints it as a
one-line click error; each error is raised once, with its final message. Each keeps a built-in
base (``ValueError``, ``FileNotFoundError``, ``RuntimeError``) so library callers can catch it
the usual way.
"""

from __future__ import annotations

__all__ = [
    "CorruptShardError",
    "DatasetError",
    "DatasetNotFoundError",
    "DestinationError",
    "SourceError",
    "WriterError",
]


class WriterError(Exception):
    """Base of the errors the writer raises for bad input, a bad dataset or an unusable OUT."""


class DatasetError(WriterError, ValueError):
    """A dataset is unreadable, malformed, inconsistent, or names files outside itself."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """There is no pre-mixed dataset (no ``index.json`` or ``cutmix_manifest.json``) where one should be."""


class CorruptShardError(DatasetError):
    """A shard does not hold what its index says (truncated, altered, failing its hash)."""


class SourceError(WriterError, ValueError):
    """A source that cannot be opened: missing files, a bad spec, images of mixed sizes."""


class DestinationError(WriterError, RuntimeError):
    """OUT cannot be used: unreachable, not writable, held by another writer, or an upload failed."""

#: Names kept for callers: a manifest that cannot be read is a dataset error.
ManifestError = DatasetError
ManifestNotFoundError = DatasetNotFoundError
