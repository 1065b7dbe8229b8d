"""The manifest (``cutmix_manifest.json``) beside streaming's index: the write's config, built and read.

The manifest holds everything that decides a pre-mixed dataset's bytes besides the source
pixels, and nothing that varies between runs with the same arguments, so it is itself part of the
byte-identical output. :func:`read_manifest` is the one place a manifest is read from a local
folder or a remote prefix.

``INDEX_NAME`` (re-exported from :mod:`writer.format.names`) is streaming's index basename.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass

from cutmix_algo.functional import MODES
from writer.errors import ManifestError, ManifestNotFoundError
from writer.format.names import INDEX_NAME, UnsafeNameError, read_json

__all__ = [
    "DEFAULT_SIZE_LIMIT",
    "INDEX_NAME",
    "MANIFEST_NAME",
    "MODES",
    "PremixConfig",
    "config_from_manifest",
    "manifest_bytes",
    "read_manifest",
]

MANIFEST_NAME = "cutmix_manifest.json"
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


def read_manifest(remote_or_local: str, scratch: str | None = None) -> dict:
    """Load the ``cutmix_manifest.json`` of a pre-mixed dataset (untrusted: check it before use).

    Args:
        remote_or_local: the dataset's folder, or its remote URI (``s3://…``, …).
        scratch: a folder to download into (default: a temporary one, removed afterwards).

    Returns:
        dict: the manifest; ``num_classes``, ``class_names``, ``args`` (alpha, batch_size,
        epochs, seed, encoding, …), ``source`` (fingerprint, num_images, image_shape),
        ``num_samples``.

    Raises:
        ManifestNotFoundError: if there is no manifest there (a ``FileNotFoundError``).
        ManifestError: if it is not a JSON object (a ``ValueError``).

    Example:
        >>> read_manifest("/data/cifar10-cutmix")["num_classes"]  # doctest: +SKIP
        10
    """
    if scratch is None:
        with tempfile.TemporaryDirectory(prefix="cutmix-manifest-") as folder:
            return read_manifest(remote_or_local, folder)
    try:
        return read_json(remote_or_local, MANIFEST_NAME, scratch)
    except IsADirectoryError:
        raise ManifestNotFoundError(f"{MANIFEST_NAME} in {remote_or_local} is a folder") from None
    except FileNotFoundError as e:
        raise ManifestNotFoundError(
            f"no {MANIFEST_NAME} in {remote_or_local}: not a pre-mixed dataset written by "
            f"cutmix-writer ({e})") from None
    except (UnsafeNameError, OSError, ValueError) as e:  # unreadable, not JSON, not an object
        raise ManifestError(f"no readable {MANIFEST_NAME} at {remote_or_local}: {e}") from None
