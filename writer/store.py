"""Publishing a dataset to a local folder or a remote prefix: staged locally, ``index.json`` last.

streaming is imported inside :class:`Destination`: its package import pulls in transformers,
which would make ``cutmix-writer --help`` take seconds.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from writer.premix import INDEX_NAME
from writer.uri import is_remote

__all__ = ["Destination", "DestinationError"]

_STAGING_NAME = ".cutmix-staging"


class DestinationError(RuntimeError):
    """OUT cannot be used: unreachable, or not deletable for ``--overwrite``."""


class Destination:
    """Where a dataset is published: a local folder or a remote prefix.

    Files are staged in a local folder (inside OUT for a local OUT, so publishing is an atomic
    rename) and published one by one; callers publish ``index.json`` last, so whatever a crash
    leaves behind, no index lists a shard that is not there.

    Args:
        uri: local folder or remote URI (S3-compatible endpoints via ``S3_ENDPOINT_URL``).
        retry: attempts per upload (streaming's ``retry``); small, so errors surface quickly.

    Raises:
        DestinationError: if a remote URI's bucket cannot be reached.
    """

    def __init__(self, uri: str, retry: int = 2) -> None:
        from streaming.base.storage.upload import CloudUploader

        self.remote = is_remote(uri)
        self.uri = uri.rstrip("/") if self.remote else os.path.abspath(uri)
        self._uploader = None
        if self.remote:
            self.staging = tempfile.mkdtemp(prefix="cutmix-writer-")
            try:
                self._uploader = CloudUploader.get((self.staging, self.uri), retry=retry)
            except Exception as e:  # botocore & co. raise many kinds; all mean "unusable"
                shutil.rmtree(self.staging, ignore_errors=True)
                raise DestinationError(f"cannot reach {uri}: {e}") from None
        else:
            self.staging = os.path.join(self.uri, _STAGING_NAME)

    def existing(self) -> list[str]:
        """Names of the files (or object keys) already under the destination."""
        if not self.remote:
            if os.path.exists(self.uri) and not os.path.isdir(self.uri):
                raise DestinationError(f"{self.uri} exists and is not a directory")
            return sorted(os.listdir(self.uri)) if os.path.isdir(self.uri) else []
        try:
            return sorted(self._uploader.list_objects() or [])  # type: ignore[union-attr]
        except NotImplementedError:
            return []
        except Exception as e:
            raise DestinationError(f"cannot list {self.uri}: {e}") from None

    def clear(self) -> None:
        """Delete everything under the destination, ``index.json`` first.

        Raises:
            DestinationError: for remote stores other than S3, where streaming has no delete.
        """
        if not self.remote:
            index = os.path.join(self.uri, INDEX_NAME)
            if os.path.lexists(index):
                os.remove(index)
            for name in self.existing():
                path = os.path.join(self.uri, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
            return
        keys = self.existing()
        client = getattr(self._uploader, "s3", None)
        if keys and (client is None or not self.uri.startswith("s3://")):
            raise DestinationError(
                f"{self.uri} is not empty and --overwrite can only delete from s3:// buckets; "
                "empty it yourself first"
            )
        bucket = self.uri[len("s3://"):].split("/", 1)[0]
        keys.sort(key=lambda key: key.rsplit("/", 1)[-1] != INDEX_NAME)  # indexes first
        for key in keys:  # one by one, so no moment has an index without its shards
            try:
                client.delete_object(Bucket=bucket, Key=key)  # type: ignore[union-attr]
            except Exception as e:
                raise DestinationError(f"cannot delete s3://{bucket}/{key}: {e}") from None

    def open_staging(self) -> str:
        """Return the local staging folder's path, with no leftovers from a killed run."""
        if not self.remote:
            shutil.rmtree(self.staging, ignore_errors=True)
        return self.staging

    def publish(self, basename: str) -> None:
        """Move ``staging/basename`` to the destination (a rename locally, an upload remotely)."""
        if self.remote:
            try:
                self._uploader.upload_file(basename)  # type: ignore[union-attr]
            except Exception as e:
                raise DestinationError(f"cannot upload {basename} to {self.uri}: {e}") from None
            return
        target = os.path.join(self.uri, basename)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(os.path.join(self.staging, basename), target)

    def publish_bytes(self, basename: str, data: bytes) -> None:
        """Write ``data`` as ``basename`` at the destination, atomically where the store allows."""
        os.makedirs(self.staging, exist_ok=True)
        with open(os.path.join(self.staging, basename), "wb") as f:
            f.write(data)
        self.publish(basename)

    def close(self) -> None:
        """Remove the staging folder."""
        shutil.rmtree(self.staging, ignore_errors=True)
