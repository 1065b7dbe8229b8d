"""Joining the groups of a scaled-out write (``OUT/group-0`` … ``group-{G-1}``) into one dataset.

streaming is imported inside :func:`merge_groups`: its package import pulls in transformers,
which would make ``cutmix-writer --help`` take seconds.
"""

from __future__ import annotations

import os
import tempfile

from writer.errors import CorruptShardError, DatasetError, DatasetNotFoundError
from writer.format.checks import strip_group
from writer.format.manifest import INDEX_NAME, MANIFEST_NAME, manifest_bytes
from writer.format.names import is_remote, join_uri, member_path
from writer.format.opening import open_dataset
from writer.publish.store import Destination, DestinationError

#: The groups under OUT cannot be joined: a :class:`~writer.errors.DatasetError` (the name is kept for callers).
MergeError = DatasetError

__all__ = ["MergeError", "group_name", "merge_groups"]


def group_name(index: int) -> str:
    """The folder, relative to OUT, that group ``index`` is written into."""
    return f"group-{index}"


def _check_local_group(out: str, name: str) -> None:
    """Refuse a local ``OUT/name`` that is not a folder, or whose manifest or index is no file.

    Absent ones are left to the caller, which reports a missing group.
    """
    if is_remote(out):
        return
    folder = os.path.join(out, name)
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise DatasetError(f"{folder} is not a folder: a group must be a folder holding a "
                           f"sub-dataset written with --group {name.removeprefix('group-')}")
    for member in (MANIFEST_NAME, INDEX_NAME):
        path = os.path.join(folder, member)
        if os.path.lexists(path) and not os.path.isfile(path):
            raise DatasetError(f"{path} is not a file: a group's {member} must be a file "
                               "(the JSON its write published)")


def merge_groups(out: str, retry: int = 2) -> int:
    """Join ``OUT/group-0`` … ``OUT/group-{G-1}`` into one dataset at ``OUT``.

    Each group is checked like any dataset read (its index's names, its manifest against its
    index) and against group 0. Group 0's manifest without its ``group`` entry (so byte-equal
    to a single write's from the same source path) is published first, then streaming's
    ``merge_index`` writes the joined ``index.json``.

    Args:
        out: the folder or URI holding the groups.
        retry: attempts per upload.

    Returns:
        int: the number of groups merged.

    Raises:
        DatasetError: if a group is missing, unfinished or from other arguments.
        DestinationError: if OUT cannot be reached or written.
    """
    from streaming.base.util import merge_index

    if not is_remote(out) and os.path.exists(out) and not os.path.isdir(out):
        raise DatasetError(f"{out} is not a folder: merge expects a folder holding the group-N "
                           "sub-datasets (group-0, group-1, ...) of a --num-groups write")
    with tempfile.TemporaryDirectory(prefix="cutmix-merge-") as scratch:
        manifests = []
        count = None
        index = 0
        while count is None or index < count:
            name = group_name(index)
            _check_local_group(out, name)
            if not is_remote(out):  # the group folder itself must not lead out of OUT
                try:
                    member_path(out, f"{name}/{INDEX_NAME}", "group")
                except DatasetError as e:
                    raise DatasetError(f"group {index}: {e}") from None
            try:  # a group is opened like any dataset: names, counts, columns and shard sizes
                manifest = open_dataset(join_uri(out, name), os.path.join(scratch, name)).manifest
            except DatasetNotFoundError:
                raise DatasetError(
                    f"group {index} is missing or unfinished: no {name}/{INDEX_NAME} with its "
                    f"{MANIFEST_NAME} under {out}; write it with --group {index}"
                ) from None
            except CorruptShardError as e:
                raise DatasetError(f"group {index}: {e}; rewrite it with --group {index}") from None
            except DatasetError as e:
                raise DatasetError(f"group {index}: {e}") from None
            group = manifest.get("group")
            if group is None or group.get("index") != index:
                raise DatasetError(f"{join_uri(out, name)} is not group {index}")
            count = group["count"] if count is None else count
            reference = manifests[0] if manifests else manifest
            # source_resolved is where each machine found the source: it may differ.
            if group["count"] != count or strip_group(manifest) != strip_group(reference):
                raise DatasetError(
                    f"group {index} was written with other arguments or another source than "
                    "group 0; rewrite it"
                )
            manifests.append(manifest)
            index += 1
        destination = Destination(out, retry=retry)
        try:
            if not destination.remote:
                index_path = os.path.join(destination.uri, INDEX_NAME)
                if os.path.lexists(index_path):
                    os.remove(index_path)  # merge_index refuses to replace it
            merged = {k: v for k, v in manifests[0].items() if k != "group"}
            destination.publish_bytes(MANIFEST_NAME, manifest_bytes(merged))
        finally:
            destination.close()
        urls = [join_uri(destination.uri, group_name(i), INDEX_NAME) for i in range(count)]
        try:
            # keep_local: for a local OUT the "local copy" is OUT itself.
            merge_index(urls, destination.uri, keep_local=not destination.remote)
        except Exception as e:  # downloads and uploads of indexes; streaming raises many kinds
            raise DestinationError(f"cannot merge the group indexes under {out}: {e}") from None
    return count
