"""Opening a pre-mixed dataset: the one checked path every reader takes.

``PremixedDataset``, ``verify``, ``preview``, ``merge`` (for each group) and the training runner
all open a dataset here. A dataset may come from a stranger: its ``index.json`` and
``cutmix_manifest.json`` are read through :func:`writer.format.names.read_member` (plain names
inside the dataset, regular files only), parsed with a depth limit, and checked against each
other (:func:`writer.format.checks.check_layout`); a merged root is checked against its groups,
and a local dataset's shard files against their recorded sizes. Every failure is a
:class:`~writer.errors.DatasetError` with its final message.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

from writer.errors import CorruptShardError, DatasetError, DatasetNotFoundError
from writer.format.checks import Layout, check_layout, check_merged_groups, mismatched_local_shard
from writer.format.manifest import INDEX_NAME, MANIFEST_NAME
from writer.format.names import is_remote, join_uri, parse_json, read_json, read_member

__all__ = ["OpenDataset", "open_dataset", "read_manifest"]


@dataclass(frozen=True)
class OpenDataset:
    """A dataset whose index and manifest were read and checked.

    Attributes:
        where: the folder or URI it was opened from.
        folder: the local folder its shards are in (``where``), or the scratch folder remote
            shards are fetched into.
        index: the checked ``index.json``.
        manifest: the checked ``cutmix_manifest.json``.
        layout: what the manifest says about the samples the index lists.
        index_bytes: the index exactly as read.
        manifest_bytes: the manifest exactly as read.
    """

    where: str
    folder: str
    index: dict
    manifest: dict
    layout: Layout
    index_bytes: bytes
    manifest_bytes: bytes


def _member(where: str, name: str, scratch: str) -> tuple[bytes, dict]:
    try:
        data = read_member(where, name, scratch)
    except IsADirectoryError:
        raise DatasetNotFoundError(f"{name} in {where} is a folder") from None
    except FileNotFoundError as e:
        raise DatasetNotFoundError(f"no {name} in {where}: not a pre-mixed dataset written by "
                                   f"cutmix-writer, which holds {INDEX_NAME} and {MANIFEST_NAME} "
                                   f"({e})") from None
    except OSError as e:
        raise DatasetError(f"cannot read {join_uri(where, name)}: {e}") from None
    try:
        return data, parse_json(data, join_uri(where, name))
    except ValueError as e:
        raise DatasetError(f"no readable {name} at {where}: {e}") from None


def open_dataset(where: str, scratch: str, *, shards: bool = True) -> OpenDataset:
    """Read and check the dataset at ``where``; nothing but its index and manifest is downloaded.

    Args:
        where: a local folder or a remote URI.
        scratch: a local folder remote members are downloaded into.
        shards: for a local dataset, also check each shard file exists at its recorded size
            (one stat each; hashes are ``verify``'s).

    Raises:
        DatasetNotFoundError: if there is no index or manifest there.
        DatasetError: if either is unreadable, unsafe or inconsistent with the other, or a
            merged root disagrees with its groups.
        CorruptShardError: if a local shard is missing or not its recorded size.
    """
    index_bytes, index = _member(where, INDEX_NAME, scratch)
    manifest_bytes, manifest = _member(where, MANIFEST_NAME, scratch)
    try:
        layout = check_layout(manifest, index)
        check_merged_groups(manifest, index, lambda name: read_json(where, name, scratch))
    except DatasetError as e:
        raise DatasetError(f"{where}: {e}") from None
    remote = is_remote(where)
    if shards and not remote:
        bad = mismatched_local_shard(where, index["shards"])
        if bad is not None:
            raise CorruptShardError(f"shard {bad.basename} of {where} is corrupt: {bad.path} "
                                    f"{bad.found}, its index says {bad.recorded}")
    return OpenDataset(where, scratch if remote else where, index, manifest, layout, index_bytes,
                       manifest_bytes)


def read_manifest(remote_or_local: str, scratch: str | None = None) -> dict:
    """Load the ``cutmix_manifest.json`` of a pre-mixed dataset, unchecked against its index.

    For a dataset about to be read, :func:`open_dataset` checks both; this is for a quick look
    (the class names, the recorded arguments) and reads the file the same guarded way.

    Args:
        remote_or_local: the dataset's folder, or its remote URI (``s3://…``, …).
        scratch: a folder to download into (default: a temporary one, removed afterwards).

    Returns:
        dict: the manifest; ``num_classes``, ``class_names``, ``args`` (alpha, batch_size,
        epochs, seed, encoding, …), ``source`` (fingerprint, num_images, image_shape),
        ``num_samples``.

    Raises:
        DatasetNotFoundError: if there is no manifest there (a ``FileNotFoundError``).
        DatasetError: if it is unreadable or not a JSON object (a ``ValueError``).

    Example:
        >>> read_manifest("/data/cifar10-cutmix")["num_classes"]  # doctest: +SKIP
        10
    """
    if scratch is None:
        with tempfile.TemporaryDirectory(prefix="cutmix-manifest-") as folder:
            return read_manifest(remote_or_local, folder)
    return _member(remote_or_local, MANIFEST_NAME, scratch)[1]
