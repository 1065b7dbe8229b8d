"""The manifest (``cutmix_manifest.json``) beside streaming's index: the write's config, built and read.

The manifest holds everything that decides a pre-mixed dataset's bytes besides the source
pixels, and nothing that varies between runs with the same arguments, so it is itself part of the
byte-identical output. :func:`read_manifest` is the one place a manifest is read from a local
folder or a remote prefix.

``INDEX_NAME`` (re-exported from :mod:`writer.format.names`) is streaming's index basename.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cutmix_algo.functional import MODES
from writer.format.names import INDEX_NAME

__all__ = [
    "DEFAULT_SIZE_LIMIT",
    "INDEX_NAME",
    "MANIFEST_NAME",
    "MODES",
    "PremixConfig",
    "SPLITS",
    "config_from_manifest",
    "manifest_bytes",
]

MANIFEST_NAME = "cutmix_manifest.json"
#: The splits a source is read from (``--split``).
SPLITS = ("train", "test")
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
        mode: ``"batch"`` (one λ and box per batch) or ``"sample"`` (one per row).
    """

    alpha: float = 1.0
    batch_size: int = 128
    epochs: int = 1
    seed: int = 0
    encoding: str = "raw"
    compression: str | None = None
    size_limit: int = DEFAULT_SIZE_LIMIT
    mode: str = "batch"


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
        mode=args.get("mode", "batch"),
    )
