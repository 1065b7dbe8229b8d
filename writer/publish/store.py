"""Publishing a dataset to a local folder or a remote prefix: claimed, staged, ``index.json`` last.

What ``--overwrite`` may delete, and how two writers to one OUT are kept apart, live here:

* :func:`check_out` refuses an empty OUT, a root (``/``, a bucket root) and an OUT equal to,
  inside or containing a source path.
* :meth:`Destination.check_replaceable` lets ``--overwrite`` replace only what cutmix-writer
  wrote: every entry must be one of its file names (``index.json``, ``cutmix_manifest.json``,
  ``shard.*.mds*``, ``group-N/`` of those, its claim and staging) and a cutmix manifest or claim
  must be there; anything else is refused, by name.
* :meth:`Destination.claim` takes OUT for one write: locally an ``flock`` on
  ``OUT/.cutmix-claim.json`` (dropped by the kernel when the writer dies, however it dies); in
  an ``s3://`` bucket a claim object holding a unique run id, refreshed every
  :data:`HEARTBEAT_S` seconds and re-read before the manifest and the index are published. A
  second writer finding a live claim fails at once, with or without ``--overwrite``.

streaming and boto3 are imported inside :class:`Destination`: streaming's package import pulls
in transformers, which would make ``cutmix-writer --help`` take seconds.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from writer.errors import DestinationError
from writer.format.manifest import INDEX_NAME, MANIFEST_NAME
from writer.format.names import is_remote
from writer.pipeline.scratch import Scratch

__all__ = [
    "CLAIM_NAME",
    "DEFAULT_TIMEOUT",
    "HEARTBEAT_S",
    "STALE_S",
    "Destination",
    "DestinationError",
    "check_out",
    "is_writer_path",
]

_STAGING_NAME = ".cutmix-staging"
CLAIM_NAME = ".cutmix-claim.json"
# A bucket claim is refreshed this often, and taken for dead once it is this old (server clock).
HEARTBEAT_S = 10.0
STALE_S = 60.0
# Seconds botocore waits to connect and for each read; a frozen endpoint fails after this.
DEFAULT_TIMEOUT = 60.0
_SHARD = re.compile(r"shard\.\d{5,}\.mds(\.[A-Za-z0-9]+)?")
_GROUP = re.compile(r"group-\d+")
_WRITER_FILES = (INDEX_NAME, MANIFEST_NAME, CLAIM_NAME)



def is_writer_path(path: str) -> bool:
    """Whether ``path`` (relative to OUT, ``/``-separated) is a name cutmix-writer writes."""
    parts = path.split("/")
    if parts[0] == _STAGING_NAME:
        return True
    if len(parts) > 1 and _GROUP.fullmatch(parts[0]):
        parts = parts[1:]
        if parts[0] == _STAGING_NAME:
            return True
    return len(parts) == 1 and (parts[0] in _WRITER_FILES or bool(_SHARD.fullmatch(parts[0])))


def _segments(location: str) -> tuple[str, ...]:
    if is_remote(location):
        scheme, _, rest = location.partition("://")
        return (scheme + "://", *[p for p in rest.split("/") if p])
    return tuple(p for p in os.path.realpath(location).split(os.sep) if p) or ("",)


def check_out(out: str, sources: Iterable[str] = ()) -> None:
    """Refuse an OUT no write may use, whatever ``--overwrite`` says.

    Args:
        out: the ``--out`` text.
        sources: the paths or URIs the source reads (:func:`writer.pipeline.sources.source_locations`).

    Raises:
        DestinationError: for an empty OUT, a root (``/``, ``s3://bucket``), or an OUT equal
            to, inside or containing a source.
    """
    if not out.strip():
        raise DestinationError("--out is empty; name the folder or URI to write")
    if is_remote(out):
        scheme, _, rest = out.partition("://")
        if len([p for p in rest.split("/") if p]) < 2:
            raise DestinationError(
                f"--out {out} is a bucket root; write into a prefix of it, e.g. "
                f"{scheme}://{rest.strip('/') or 'BUCKET'}/my-dataset")
    elif os.path.realpath(out) == os.path.realpath(os.sep):
        raise DestinationError(f"--out {out} is the file system root; name a folder of its own")
    mine = _segments(out)
    for source in sources:
        theirs = _segments(source)
        if is_remote(out) != is_remote(source):
            continue
        if mine == theirs:
            relation = "is"
        elif mine[:len(theirs)] == theirs:
            relation = "is inside"
        elif theirs[:len(mine)] == mine:
            relation = "contains"
        else:
            continue
        raise DestinationError(f"--out {out} {relation} the source {source}; write elsewhere")


def _run_info(run_id: str) -> dict:
    return {"format": "cutmix-write-claim", "run_id": run_id, "host": socket.gethostname(),
            "pid": os.getpid(), "started": time.time()}


def _describe(info: dict | None) -> str:
    if not isinstance(info, dict):
        return "another cutmix-writer"
    return (f"another cutmix-writer (run {info.get('run_id')}, pid {info.get('pid')} on host "
            f"{info.get('host')})")


def _parse(data: bytes) -> dict | None:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class Destination:
    """Where a dataset is published: a local folder or a remote prefix.

    Files are staged in a local folder (inside OUT for a local OUT, so publishing is an atomic
    rename) and published one by one; callers publish ``index.json`` last, so whatever a crash
    leaves behind, no index lists a shard that is not there.

    Args:
        uri: local folder or remote URI (S3-compatible endpoints via ``S3_ENDPOINT_URL``).
        retry: attempts per upload; each failed attempt is reported on stderr.
        timeout: ``s3://``: seconds to wait to connect and for each read.

    Raises:
        DestinationError: if a remote URI's bucket cannot be reached.
    """

    def __init__(self, uri: str, retry: int = 2, timeout: float = DEFAULT_TIMEOUT) -> None:
        from streaming.base.storage.upload import CloudUploader

        self.remote = is_remote(uri)
        self.uri = uri.rstrip("/") if self.remote else os.path.abspath(uri)
        self.retry = retry
        self._uploader: Any = None
        self._scratch: Scratch | None = None
        self._run_id: str | None = None
        self._claim_fd: int | None = None
        self._created = False
        self._lost: dict | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._etags: dict[str, str] = {}
        self._staged = False  # a local staging folder is removed only by the write that made it
        self.published: list[str] = []
        if self.remote:
            self._scratch = Scratch("cutmix-writer-stage-")
            # A sub-folder: the uploader wants an empty one, and the Scratch holds its .lock.
            self.staging = os.path.join(self._scratch.path, "staging")
            try:
                if self.uri.startswith("s3://"):
                    from writer.streaming_seam import timed_s3_uploader

                    self._uploader = timed_s3_uploader(self.staging, self.uri, timeout)
                else:
                    self._uploader = CloudUploader.get((self.staging, self.uri), retry=1)
            except Exception as e:  # botocore & co. raise many kinds; all mean "unusable"
                self._scratch.close()
                raise DestinationError(f"cannot reach {uri}: {e}") from None
        else:
            self.staging = os.path.join(self.uri, _STAGING_NAME)

    # -- what is there -------------------------------------------------------------------------

    @property
    def _s3(self) -> Any:
        return getattr(self._uploader, "s3", None) if self.uri.startswith("s3://") else None

    def _bucket_key(self, name: str = "") -> tuple[str, str]:
        bucket, _, prefix = self.uri[len("s3://"):].partition("/")
        return bucket, f"{prefix}/{name}" if prefix else name

    def _listing(self) -> dict[str, dict]:
        """Every object under the prefix, by path relative to it, with its listing entry."""
        if self._s3 is None:
            try:
                keys = self._uploader.list_objects() or []
            except NotImplementedError:
                return {}
            _, prefix = self._bucket_key()
            return {k[len(prefix) + 1:] if k.startswith(prefix + "/") else k: {} for k in keys}
        bucket, prefix = self._bucket_key("")
        pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {obj["Key"][len(prefix):]: obj for page in pages for obj in page.get("Contents", [])}

    def entries(self) -> list[str]:
        """Every file (or object) under the destination, and every empty folder, relative to it.

        Raises:
            DestinationError: if a local OUT is a file, or a remote one cannot be listed.
        """
        return sorted(self._iter_entries())

    def _iter_entries(self) -> Iterator[str]:
        if not self.remote:
            if os.path.lexists(self.uri) and not os.path.isdir(self.uri):
                raise DestinationError(f"{self.uri} exists and is not a directory")
            for folder, dirs, names in os.walk(self.uri):
                relative = os.path.relpath(folder, self.uri)
                prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
                yield from (prefix + n for n in names)
                yield from (prefix + d for d in dirs if os.path.islink(os.path.join(folder, d)))
                if not dirs and not names and prefix:
                    yield prefix.rstrip("/")
            return
        try:
            listing = self._listing()
        except Exception as e:
            raise DestinationError(f"cannot list {self.uri}: {e}") from None
        yield from listing

    def existing(self) -> list[str]:
        """What a write would replace, less a dead writer's claim and staging.

        Locally the names directly under OUT (enough to tell empty from not, without walking a
        big folder someone named by mistake); remotely every object, as :meth:`entries`.
        """
        if self.remote:
            names = self.entries()
        elif os.path.isdir(self.uri):
            names = sorted(os.listdir(self.uri))
        else:
            names = self.entries()  # raises for a file; [] for nothing
        return [e for e in names if e != CLAIM_NAME and e.split("/")[0] != _STAGING_NAME]

    def _read(self, name: str) -> bytes | None:
        if not self.remote:
            try:
                with open(os.path.join(self.uri, name), "rb") as f:
                    return f.read()
            except OSError:
                return None
        if self._s3 is None:
            return None
        bucket, key = self._bucket_key(name)
        try:
            return self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception:
            return None

    def _ours(self, entries: list[str]) -> bool:
        for entry in entries:
            if entry.rsplit("/", 1)[-1] == CLAIM_NAME:
                return True
            if entry.rsplit("/", 1)[-1] == MANIFEST_NAME:
                manifest = _parse(self._read(entry) or b"")
                if manifest is not None and manifest.get("format") == "cutmix-premixed":
                    return True
        return False

    def check_replaceable(self) -> None:
        """Refuse to replace anything but a dataset (or the leftovers of a write) of this writer.

        Raises:
            DestinationError: naming the entries cutmix-writer did not write, or saying that no
                cutmix manifest or claim was found.
        """
        entries, foreign = [], []
        for entry in self._iter_entries():
            entries.append(entry)
            if not is_writer_path(entry):
                foreign.append(entry)
                if len(foreign) > 5:
                    break  # enough to name; a big folder named by mistake is not walked whole
        if not entries:
            return
        foreign.sort()
        if foreign:
            shown = ", ".join(foreign[:5]) + (", …" if len(foreign) > 5 else "")
            raise DestinationError(
                f"--overwrite refused: {self.uri} holds {shown}, which cutmix-writer did not "
                "write; --overwrite replaces only a dataset cutmix-writer wrote. Pick another "
                "--out or move those away")
        if not self._ours(entries):
            raise DestinationError(
                f"--overwrite refused: {self.uri} holds {', '.join(entries[:3])}"
                f"{', …' if len(entries) > 3 else ''} but no {MANIFEST_NAME} or write claim of "
                "cutmix-writer (another tool's dataset?); --overwrite replaces only a dataset "
                "cutmix-writer wrote")

    # -- claiming ------------------------------------------------------------------------------

    @property
    def claimed(self) -> bool:
        """Whether this object holds OUT's claim."""
        return self._run_id is not None

    def _busy(self, info: dict | None, detail: str = "") -> DestinationError:
        dies = (f"a killed writer's claim expires {STALE_S:.0f} s after its last refresh"
                if self.remote else "its claim dies with it")
        return DestinationError(
            f"{self.uri} is being written by {_describe(info)}{detail}; wait for it to finish or "
            f"stop it ({dies}), then rerun")

    def _remote_claim(self) -> tuple[dict | None, float]:
        """The bucket claim's content and its age in seconds by the server's clock."""
        bucket, key = self._bucket_key(CLAIM_NAME)
        try:
            reply = self._s3.get_object(Bucket=bucket, Key=key)
        except Exception as e:
            if getattr(e, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None, float("inf")
            raise DestinationError(f"cannot read {self.uri}/{CLAIM_NAME}: {e}") from None
        now = email.utils.parsedate_to_datetime(reply["ResponseMetadata"]["HTTPHeaders"]["date"])
        age = (now - reply["LastModified"]).total_seconds()
        return _parse(reply["Body"].read()) or {}, age

    def _put_claim(self) -> None:
        bucket, key = self._bucket_key(CLAIM_NAME)
        body = json.dumps(_run_info(self._run_id or "")).encode()  # type: ignore[arg-type]
        self._s3.put_object(Bucket=bucket, Key=key, Body=body)

    def check_free(self) -> None:
        """Refuse an OUT that a live writer claims (so nothing is loaded for nothing).

        Raises:
            DestinationError: naming the other writer.
        """
        if self.remote:
            if self._s3 is not None:
                info, age = self._remote_claim()
                if info is not None and age < STALE_S and info.get("run_id") != self._run_id:
                    raise self._busy(info, f", last seen {max(age, 0):.0f} s ago")
            return
        path = os.path.join(self.uri, CLAIM_NAME)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raise self._busy(_parse(os.pread(fd, 1 << 16, 0))) from None
        finally:
            os.close(fd)

    def claim(self) -> None:
        """Take OUT for this write; idempotent. Other remote stores than ``s3://`` get no claim.

        Raises:
            DestinationError: if a live writer holds OUT, or took it at the same moment.
        """
        if self.claimed:
            return
        run_id = uuid.uuid4().hex
        if self.remote:
            if self._s3 is None:
                return
            self.check_free()
            self._run_id = run_id
            try:
                self._put_claim()
                info, _ = self._remote_claim()
            except Exception as e:
                self._run_id = None
                raise DestinationError(f"cannot claim {self.uri}: {e}") from None
            if info is None or info.get("run_id") != run_id:
                self._run_id = None
                raise self._busy(info, ", which claimed it at the same moment")
            self._heartbeat = threading.Thread(target=self._beat, name="cutmix-claim",
                                               daemon=True)
            self._heartbeat.start()
            return
        if not os.path.isdir(self.uri):
            os.makedirs(self.uri)
            self._created = True
        path = os.path.join(self.uri, CLAIM_NAME)
        while True:  # the file may be unlinked between open and flock by a finishing writer
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                info = _parse(os.pread(fd, 1 << 16, 0))
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise self._busy(info) from None
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_run_info(run_id)).encode(), 0)
        self._claim_fd, self._run_id = fd, run_id

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                info, _ = self._remote_claim()
                if info is None or info.get("run_id") != self._run_id:
                    self._lost = info or {}
                    return
                self._put_claim()
            except Exception:  # a transient error; the checks before publishing decide
                continue

    def ensure_claimed(self) -> None:
        """Fail if another writer took OUT since :meth:`claim`; no-op where there is no claim.

        Raises:
            DestinationError: naming the other writer.
        """
        if not self.claimed:
            return
        if self.remote:
            info, _ = self._remote_claim() if self._lost is None else (self._lost, 0.0)
            if info is None or info.get("run_id") != self._run_id:
                self._lost = info or {}
                raise DestinationError(
                    f"{_describe(info) if info else 'another writer'} took {self.uri} while this "
                    "write ran; this write stops and publishes no index")
            return
        path = os.path.join(self.uri, CLAIM_NAME)
        try:
            same = os.stat(path).st_ino == os.fstat(self._claim_fd).st_ino  # type: ignore[arg-type]
        except FileNotFoundError:
            same = False
        if not same:
            raise DestinationError(f"{path} was removed while this write ran; it publishes no index")

    def release(self) -> None:
        """Drop the claim (idempotent); a local OUT this write created and left empty goes too."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
            self._heartbeat = None
        if self.remote:
            if self.claimed and self._lost is None:
                with contextlib.suppress(Exception):
                    info, _ = self._remote_claim()
                    if info is not None and info.get("run_id") == self._run_id:
                        bucket, key = self._bucket_key(CLAIM_NAME)
                        self._s3.delete_object(Bucket=bucket, Key=key)
            self._run_id = None
            return
        if self._claim_fd is not None:
            path = os.path.join(self.uri, CLAIM_NAME)
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == os.fstat(self._claim_fd).st_ino:
                    os.remove(path)
            os.close(self._claim_fd)  # drops the flock
            self._claim_fd = None
        self._run_id = None
        if self._created:
            with contextlib.suppress(OSError):
                os.rmdir(self.uri)  # only if empty: a failed first write leaves no folder

    # -- replacing -----------------------------------------------------------------------------

    def clear(self) -> None:
        """Delete everything under the destination but this write's claim, indexes first.

        Callers check :meth:`check_replaceable` first. One by one, so no moment has an index
        without its shards.

        Raises:
            DestinationError: for remote stores other than S3, where streaming has no delete.
        """
        entries = [e for e in self.entries() if not (self.claimed and e == CLAIM_NAME)]

        def order(entry: str) -> tuple[int, int, str]:
            name = entry.rsplit("/", 1)[-1]
            rank = 0 if name == INDEX_NAME else 1 if name == MANIFEST_NAME else 2
            return rank, entry.count("/"), entry

        entries.sort(key=order)
        if not self.remote:
            for entry in entries:
                path = os.path.join(self.uri, *entry.split("/"))
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                elif os.path.lexists(path):
                    os.remove(path)
            for folder, dirs, _ in os.walk(self.uri, topdown=False):  # the emptied group folders
                for d in dirs:
                    with contextlib.suppress(OSError):
                        os.rmdir(os.path.join(folder, d))
            return
        if entries and self._s3 is None:
            raise DestinationError(
                f"{self.uri} is not empty and --overwrite can only delete from s3:// buckets; "
                "empty it yourself first")
        self._delete(entries)

    def _delete(self, names: list[str]) -> None:
        for name in names:
            bucket, key = self._bucket_key(name)
            try:
                self._s3.delete_object(Bucket=bucket, Key=key)
            except Exception as e:
                raise DestinationError(f"cannot delete s3://{bucket}/{key}: {e}") from None

    def remove_published(self) -> None:
        """Best effort: delete what this write published, after a failure or an interrupt.

        Only while this write holds the claim: the files are then surely its own.
        """
        if not self.claimed or self._lost is not None:
            return
        names = sorted(self.published, key=lambda n: n != INDEX_NAME)
        for name in names:  # one failure does not keep the rest
            with contextlib.suppress(Exception):
                if not self.remote:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(os.path.join(self.uri, name))
                elif self._s3 is not None:
                    self._delete([name])
        self.published = []

    def refuse_whole_dataset(self) -> None:
        """Refuse a root whose ``index.json`` lists shards of its own: a dataset written whole.

        A merge's index lists only its groups' shards (``group-N/shard.…``); a group write into
        a root that holds a whole dataset would otherwise delete that dataset's index.

        Raises:
            DestinationError: naming the root and a shard its index lists at the root.
        """
        index = _parse(self._read(INDEX_NAME) or b"")
        shards = index.get("shards") if index is not None else None
        for shard in shards if isinstance(shards, list) else []:
            raw = shard.get("raw_data") if isinstance(shard, dict) else None
            name = raw.get("basename") if isinstance(raw, dict) else None
            if isinstance(name, str) and "/" not in name:
                raise DestinationError(
                    f"{self.uri} holds a dataset written without --num-groups (its {INDEX_NAME} "
                    f"lists {name} at the root), not a merge of groups; a group write there would "
                    "delete its index: write the groups into another OUT, or remove it first")

    def remove_merged(self) -> bool:
        """Delete a merged dataset's ``index.json``, then its cutmix manifest, at this root.

        A group's rewrite calls it on OUT first: the merged index lists the group's old shards
        and hashes.

        Returns:
            bool: whether there was a merged index or manifest to remove.

        Raises:
            DestinationError: where it cannot be deleted (remote stores other than S3).
        """
        if not self._ours([MANIFEST_NAME]):
            return False  # no merge wrote here (or not ours to delete)
        self.refuse_whole_dataset()
        names = [n for n in (INDEX_NAME, MANIFEST_NAME) if self._read(n) is not None]
        if not self.remote:
            for name in names:
                os.remove(os.path.join(self.uri, name))
            return True
        if self._s3 is None:
            raise DestinationError(
                f"{self.uri} holds a merged {INDEX_NAME} this group rewrite would make wrong, "
                "and only s3:// objects can be deleted; delete it yourself, then rewrite")
        self._delete(names)
        return True

    # -- publishing ----------------------------------------------------------------------------

    def open_staging(self) -> str:
        """Return the local staging folder's path, with no leftovers from a killed run."""
        if not self.remote:
            shutil.rmtree(self.staging, ignore_errors=True)
        self._staged = True
        return self.staging

    def _attempt(self, what: str, action: Callable[[], None]) -> None:
        for attempt in range(1, self.retry + 1):
            try:
                action()
                return
            except Exception as e:
                if attempt == self.retry:
                    raise DestinationError(f"cannot {what}: {e}") from None
                print(f"cutmix-writer: {what} failed ({e}); retrying, attempt {attempt + 1} of "
                      f"{self.retry}", file=sys.stderr, flush=True)
                time.sleep(min(2.0**attempt, 10.0))

    def publish(self, basename: str) -> None:
        """Move ``staging/basename`` to the destination (a rename locally, an upload remotely)."""
        if self._lost is not None:
            raise DestinationError(f"{_describe(self._lost)} took {self.uri} while this write "
                                   "ran; this write stops and publishes no index")
        # Listed first: an interrupt that lands just after the rename or upload (a signal
        # handler runs between any two bytecodes) must still find the file to remove.
        self.published.append(basename)
        if self.remote:
            self._attempt(f"upload {basename} to {self.uri}",
                          lambda: self._uploader.upload_file(basename))
            if self._s3 is not None and basename != INDEX_NAME:
                bucket, key = self._bucket_key(basename)
                with contextlib.suppress(Exception):
                    self._etags[basename] = self._s3.head_object(Bucket=bucket, Key=key)["ETag"]
        else:
            target = os.path.join(self.uri, basename)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(os.path.join(self.staging, basename), target)

    def check_published(self) -> None:
        """Fail unless every object this write uploaded is still there, unchanged (``s3://``).

        Called before the index is published: a shard another writer replaced or deleted would
        otherwise be listed with a hash it does not have.

        Raises:
            DestinationError: naming the first shard that changed or vanished.
        """
        if self._s3 is None or not self._etags:
            return
        try:
            listing = self._listing()
        except Exception as e:
            raise DestinationError(f"cannot list {self.uri}: {e}") from None
        for name, etag in sorted(self._etags.items()):
            if listing.get(name, {}).get("ETag") != etag:
                raise DestinationError(
                    f"{self.uri}/{name} changed or vanished after this write uploaded it: "
                    "another writer is using this OUT; no index was published")

    def publish_bytes(self, basename: str, data: bytes) -> None:
        """Write ``data`` as ``basename`` at the destination, atomically where the store allows."""
        os.makedirs(self.staging, exist_ok=True)
        self._staged = True
        with open(os.path.join(self.staging, basename), "wb") as f:
            f.write(data)
        self.publish(basename)

    def close(self) -> None:
        """Remove the staging folder this object used (another writer's is left alone)."""
        if self._scratch is not None:
            self._scratch.close()
        elif self._staged:
            shutil.rmtree(self.staging, ignore_errors=True)
