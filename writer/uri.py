"""Where a dataset lives: a local folder or a remote prefix (``s3://``, ``gs://``, …), read alike.

streaming is imported inside the function that downloads: its package import pulls in
transformers, which would make every importer of this module take seconds.
"""

from __future__ import annotations

import json
import os

__all__ = ["fetch", "is_remote", "join_uri", "read_json"]


def is_remote(uri: str) -> bool:
    """Whether ``uri`` names object storage (``s3://``, ``gs://``, …) rather than a local path."""
    return "://" in uri


def join_uri(uri: str, *parts: str) -> str:
    """``uri`` with path ``parts`` appended, for local paths and URIs alike."""
    if is_remote(uri):
        return "/".join([uri.rstrip("/"), *parts])
    return os.path.join(uri, *parts)


def fetch(uri: str, names: list[str], into: str) -> None:
    """Download ``names`` (paths relative to ``uri``) into the local folder ``into``."""
    from streaming.base.storage.download import CloudDownloader

    for name in names:
        CloudDownloader.direct_download(join_uri(uri, name), os.path.join(into, name), 60)


def read_json(uri: str, name: str, scratch: str) -> dict:
    """Load ``uri/name`` (downloaded into ``scratch`` if remote); ``FileNotFoundError`` if absent."""
    if not is_remote(uri):
        with open(os.path.join(uri, name)) as f:
            return json.load(f)
    try:
        fetch(uri, [name], scratch)
    except Exception as e:
        raise FileNotFoundError(f"cannot read {join_uri(uri, name)}: {e}") from None
    with open(os.path.join(scratch, name)) as f:
        return json.load(f)
