"""Where a dataset lives: a local folder or a remote prefix (``s3://``, ``gs://``, …), read alike.

Every file name taken from a dataset (an ``index.json`` basename, a group folder) is untrusted:
:func:`check_member` admits only the names this writer and streaming's ``merge_index`` produce,
so no download or local path built from one can leave the dataset or the scratch folder.

streaming is imported inside the function that downloads: its package import pulls in
transformers, which would make every importer of this module take seconds.
"""

from __future__ import annotations

import json
import os
import re
import stat

import numpy as np

from writer.errors import DatasetError

#: A dataset names a file outside itself: a :class:`~writer.errors.DatasetError` (the name is kept for callers).
UnsafeNameError = DatasetError

__all__ = [
    "INDEX_NAME",
    "UnsafeNameError",
    "check_member",
    "fetch",
    "is_remote",
    "join_uri",
    "member_path",
    "normalize_uri",
    "open_member",
    "parse_json",
    "read_json",
    "read_member",
    "resolve_spec",
]

#: streaming's index basename (``streaming.base.format.get_index_basename()``; a test checks they
#: agree). Declared here, the writer's one leaf module for dataset member names, because
#: streaming's package import pulls in transformers and would make ``cutmix-writer --help`` slow.
INDEX_NAME = "index.json"

# A plain file name: no separator, no leading dot (so neither ``.`` nor ``..`` nor a hidden
# file), no drive letter, nothing a shell or a terminal would read specially.
_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# The one folder a dataset may name: a group of a scaled-out write (``merge`` lists its shards
# as ``group-I/shard…``).
_GROUP = re.compile(r"group-[0-9]+")


def check_member(name: object, what: str) -> str:
    """Return ``name`` if it is a plain file name, or ``group-I/`` and a plain file name.

    Args:
        name: the name a dataset gives (untrusted).
        what: where the name comes from, for the error (e.g. ``"index.json shard 3"``).

    Returns:
        str: ``name``, unchanged.

    Raises:
        DatasetError: for anything else: separators, ``..``, absolute paths, empty names.
    """
    parts = name.split("/") if isinstance(name, str) else []
    plain = (len(parts) == 1 or (len(parts) == 2 and _GROUP.fullmatch(parts[0]) is not None))
    if not (parts and plain and _PLAIN.fullmatch(parts[-1]) and len(name) <= 255):  # type: ignore[arg-type]
        raise DatasetError(
            f"{what} names {name!r}, which is not a plain file name inside the dataset "
            "(expected e.g. 'shard.00000.mds' or 'group-0/shard.00000.mds'); refusing to use it"
        )
    return name  # type: ignore[return-value]


def member_path(folder: str, name: str, what: str) -> str:
    """The local path of dataset member ``name`` under ``folder``, refused if it resolves outside.

    Besides :func:`check_member`, the resolved path (symbolic links followed) must lie inside
    ``folder``'s resolved path.

    Raises:
        DatasetError: if it does not.
    """
    path = os.path.join(folder, check_member(name, what))
    root = os.path.realpath(folder)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise DatasetError(f"{what} {name!r} resolves outside {folder}; refusing to use it")
    return path


def is_remote(uri: str) -> bool:
    """Whether ``uri`` names object storage (``s3://``, ``gs://``, …) rather than a local path."""
    return "://" in uri


def normalize_uri(uri: str) -> str:
    """A remote URI in its one spelling: no doubled slashes in its path, no trailing slash.

    ``s3://b/x/``, ``s3://b/x`` and ``s3://b//x`` name the same objects; local paths come back
    unchanged.
    """
    if not is_remote(uri):
        return uri
    scheme, _, rest = uri.partition("://")
    return f"{scheme}://" + "/".join(part for part in rest.split("/") if part)


def join_uri(uri: str, *parts: str) -> str:
    """``uri`` with path ``parts`` appended, for local paths and URIs alike."""
    if is_remote(uri):
        return "/".join([uri.rstrip("/"), *parts])
    return os.path.join(uri, *parts)


def resolve_spec(spec: str) -> str:
    """A ``--source`` spec with its local path made absolute (``cifar10:data`` → ``cifar10:/…/data``).

    Specs without a path (``digits``) and remote ones (``mds:s3://…``) come back unchanged.
    """
    kind, sep, rest = spec.partition(":")
    if not sep or not rest or is_remote(rest):
        return spec
    return f"{kind}:{os.path.abspath(rest)}"


def fetch(uri: str, name: str, into: str) -> None:
    """Download member ``name`` of the remote dataset at ``uri`` into the local folder ``into``.

    Raises:
        DatasetError: if the name is not a plain member name (checked before downloading).
        FileNotFoundError: if it cannot be downloaded (whatever the store's client raised).
    """
    from streaming.base.storage.download import CloudDownloader

    target = member_path(into, name, "download")
    try:
        CloudDownloader.direct_download(join_uri(uri, name), target, 60)
    except Exception as e:  # each store's client raises its own kinds
        raise FileNotFoundError(f"cannot read {join_uri(uri, name)}: {e}") from None


#: JSON from a dataset deeper than this is refused before it is parsed (a crafted index nested
#: 100,000 deep makes Python's parser raise RecursionError). Ours are 4 deep.
MAX_JSON_DEPTH = 64
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')


def open_member(folder: str, name: str, what: str) -> int:
    """Open dataset member ``name`` under the local ``folder`` for reading; return the descriptor.

    The one rule for every member a reader or writer opens: a plain name (:func:`check_member`),
    resolving inside ``folder`` (a link leading out is refused), and a regular file: a FIFO, a
    device or a socket is refused without blocking on it.

    Raises:
        DatasetError: if the name is not plain, leads outside, or is not a regular file.
        FileNotFoundError: if it does not exist.
    """
    path = member_path(folder, name, what)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once instead of waiting
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        if os.path.isdir(path):
            raise IsADirectoryError(f"{what} {name!r} in {folder} is a folder, not a file")
        raise DatasetError(f"{what} {name!r} in {folder} is not a regular file (a FIFO, device "
                           "or socket); refusing to read it")
    os.set_blocking(fd, True)
    return fd


def read_member(uri: str, name: str, scratch: str, what: str = "read") -> bytes:
    """The bytes of dataset member ``name`` of ``uri`` (downloaded into ``scratch`` if remote).

    Raises:
        DatasetError: see :func:`open_member`.
        FileNotFoundError: if it does not exist or cannot be downloaded.
    """
    if is_remote(uri):
        fetch(uri, name, scratch)
        uri = scratch
    with os.fdopen(open_member(uri, name, what), "rb") as f:
        return f.read()


def parse_json(data: bytes, what: str) -> dict:
    """Parse untrusted JSON that must be an object, nested at most :data:`MAX_JSON_DEPTH` deep.

    Raises:
        ValueError: if it is not JSON, not an object, or nested deeper.
    """
    brackets = np.frombuffer(_STRINGS.sub(b"", data), np.uint8)
    steps = np.isin(brackets, (ord("["), ord("{"))).astype(np.int64) - np.isin(brackets, (ord("]"), ord("}")))
    if steps.size and int(np.cumsum(steps).max()) > MAX_JSON_DEPTH:
        raise ValueError(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep")
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError(f"{what} holds a JSON {type(value).__name__}, not an object")
    return value


def read_json(uri: str, name: str, scratch: str) -> dict:
    """Load member ``name`` of ``uri`` as a JSON object (:func:`read_member`, :func:`parse_json`).

    Raises:
        FileNotFoundError: if it cannot be read.
        ValueError: if it is not a JSON object (``json.JSONDecodeError`` if not JSON at all).
        DatasetError: if ``name`` is not a plain member name, leads outside or is no regular file.
    """
    return parse_json(read_member(uri, name, scratch), join_uri(uri, name))
