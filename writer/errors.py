"""The writer's one exception base: every failure a user or a dataset can cause is a WriterError.

Each module's specific error subclasses it (and keeps the built-in base it had, so callers that
caught ``ValueError`` or ``RuntimeError`` still do); ``cutmix-writer`` catches ``WriterError``
once, in :mod:`writer.cli`, and prints it as a one-line click error.
"""

from __future__ import annotations

__all__ = ["ManifestError", "ManifestNotFoundError", "WriterError"]


class WriterError(Exception):
    """Base of the errors the writer raises for bad input, a bad dataset or an unusable OUT."""


class ManifestError(WriterError, ValueError):
    """A dataset's ``cutmix_manifest.json`` cannot be read: unsafe name, not JSON, not an object."""


class ManifestNotFoundError(ManifestError, FileNotFoundError):
    """There is no ``cutmix_manifest.json`` where a pre-mixed dataset should be."""
