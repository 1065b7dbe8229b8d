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
import datetime
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
from writer.pipeline.shards import hasher

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
_JOURNAL_NAME = "journal.jsonl"  # local staging: the plan, then one line per finished shard
_PLAN_NAME = "plan.json"  # remote staging: the plan; entry-NAME.json per finished shard
_COMMIT_NAME = "commit.json"  # in staging: the new dataset is complete; what to move, in order
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


def _server_time(reply: dict) -> datetime.datetime:
    """The server's clock from a reply's ``Date`` header (UTC); this machine's if it is unusable.

    A server may send the header twice (joined with a comma) or without a zone.
    """
    header = str(reply.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date", ""))
    first = ",".join(header.split(",")[:2])  # "Mon, 07 Dec 2026 10:00:00 GMT" of a doubled header
    for text in (header, first):
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            continue
        return when if when.tzinfo is not None else when.replace(tzinfo=datetime.timezone.utc)
    return datetime.datetime.now(datetime.timezone.utc)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _write_synced(path: str, data: bytes) -> None:
    """Write ``path`` whole or not at all (a temporary renamed over it), and sync it."""
    with open(path + ".tmp", "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)
    _sync_folder(os.path.dirname(path))


def _sync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _matches_local(path: str, stored: dict, hashes: tuple[str, ...]) -> bool:
    """Whether the staged file at ``path`` is the shard ``stored`` records: size and hashes."""
    try:
        if not os.path.isfile(path) or os.path.getsize(path) != stored.get("bytes"):
            return False
        recorded = stored.get("hashes") or {}
        algo = next((a for a in hashes if a in recorded), None)
        if algo is None:
            return False
        digest = hasher(algo)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest() == recorded[algo]
    except OSError:
        return False


class Destination:
    """Where a dataset is published: a local folder or a remote prefix.

    A write stages its files (:meth:`start_staging`, :meth:`stage`) and publishes them all at
    the end (:meth:`commit`), ``index.json`` last, so whatever a crash leaves behind, OUT holds
    its old dataset or the new one. ``merge`` publishes its manifest directly
    (:meth:`publish_bytes`).

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
        self._staged = False  # staging was opened by this write
        self._journal: Any = None
        self.staged_shards = 0
        self.committed = False
        if self.remote:
            self._scratch = Scratch("cutmix-writer-stage-")
            # A sub-folder: the uploader wants an empty one, and the Scratch holds its .lock.
            self.staging = os.path.join(self._scratch.path, "staging")
            try:
                if self.uri.startswith("s3://"):
                    from writer.streaming_seam import timed_s3_uploader

                    self._uploader = timed_s3_uploader(self.staging, self.uri, timeout)
                    # finished shards go to OUT's staging prefix, published by a commit
                    self._staging_uploader = timed_s3_uploader(
                        self.staging, f"{self.uri}/{_STAGING_NAME}", timeout)
                else:
                    self._uploader = CloudUploader.get((self.staging, self.uri), retry=1)
            except Exception as e:  # botocore & co. raise many kinds; all mean "unusable"
                self._scratch.close()
                raise DestinationError(f"cannot reach {uri}: {e}") from None
        else:
            self.staging = os.path.join(self.uri, _STAGING_NAME)
        self._had_index = self._read(INDEX_NAME) is not None

    # -- what is there -------------------------------------------------------------------------

    @property
    def _s3(self) -> Any:
        return getattr(self._uploader, "s3", None) if self.uri.startswith("s3://") else None

    def _bucket_key(self, name: str = "") -> tuple[str, str]:
        bucket, _, prefix = self.uri[len("s3://"):].partition("/")
        return bucket, f"{prefix}/{name}" if prefix else name

    def _listing(self) -> dict[str, dict]:
        """Every object under the prefix, by path relative to it, with its listing entry.

        Raises:
            DestinationError: if the prefix cannot be listed.
        """
        try:
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
        except Exception as e:
            raise DestinationError(f"cannot list {self.uri}: {e}") from None

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
        yield from self._listing()

    def existing(self) -> list[str]:
        """What a write would replace, less a dead writer's claim and staging.

        Locally the names directly under OUT (enough to tell empty from not, without walking a
        big folder someone named by mistake); remotely every object, as :meth:`entries`.
        """
        if not self.remote and os.path.isdir(self.uri):
            names = sorted(os.listdir(self.uri))
        else:
            names = self.entries()  # locally: raises for a file; [] for nothing
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
        age = (_server_time(reply) - reply["LastModified"]).total_seconds()
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
                # Release what this step made: a claim object left behind would refuse the next
                # writer for a minute.
                with contextlib.suppress(Exception):
                    self._delete([CLAIM_NAME])
                self._run_id = None
                raise DestinationError(f"cannot claim {self.uri}: the claim step failed ({e}); "
                                       "nothing was written") from None
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
                        self._delete([CLAIM_NAME])
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

    def _delete(self, names: list[str]) -> None:
        for name in names:
            bucket, key = self._bucket_key(name)
            try:
                self._s3.delete_object(Bucket=bucket, Key=key)
            except Exception as e:
                raise DestinationError(f"cannot delete s3://{bucket}/{key}: {e}") from None

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

        Called before a commit: a shard another writer replaced or deleted would otherwise be
        listed with a hash it does not have.

        Raises:
            DestinationError: naming the first shard that changed or vanished.
        """
        if self._s3 is None or not self._etags:
            return
        listing = self._listing()
        for name, etag in sorted(self._etags.items()):
            if listing.get(name, {}).get("ETag") != etag:
                raise DestinationError(
                    f"{self.uri}/{name} changed or vanished after this write uploaded it: "
                    "another writer is using this OUT; no index was published")

    def publish_bytes(self, basename: str, data: bytes) -> None:
        """Write ``data`` as ``basename`` at the destination, atomically where the store allows."""
        os.makedirs(self.staging, exist_ok=True)
        with open(os.path.join(self.staging, basename), "wb") as f:
            f.write(data)
        self.publish(basename)

    def close(self) -> None:
        """Close the journal and remove this object's local scratch; a local OUT's staging stays
        for a resume."""
        self._close_journal()
        if self._scratch is not None:
            self._scratch.close()
            self._scratch = None

    # -- staging, resuming and committing a write ---------------------------------------------
    #
    # A write stages its whole dataset first: locally in OUT/.cutmix-staging (the workers write
    # the shard files there), in a bucket under the prefix OUT/.cutmix-staging/ (each finished
    # shard uploaded). Each finished shard is journaled (its index entry), so a rerun with the
    # same plan keeps every journaled shard whose bytes still match and writes the rest. Only
    # when the new dataset is complete is it committed: a commit record is written into
    # staging, then each file is moved into OUT (a rename locally, a server-side copy in a
    # bucket), index.json last, and only then is whatever else OUT held removed. Until the
    # commit record exists OUT holds the old dataset untouched; once it exists, a commit cut
    # short (kill -9, a network failure) is completed by the next write to OUT before anything
    # else (roll_forward).

    @property
    def _direct(self) -> bool:
        # Remote stores other than s3:// have no copy or delete here: files go straight to OUT,
        # which must then be empty (a write refuses to replace anything there).
        return self.remote and self._s3 is None

    def _staging_key(self, name: str) -> str:
        return f"{_STAGING_NAME}/{name}"

    def start_staging(self, plan: str, hashes: tuple[str, ...]) -> tuple[str, list[dict], str | None]:
        """Open staging for a write whose output is decided by ``plan``.

        Returns:
            tuple: the local folder shards are written into; the index entries of the shards an
            interrupted write of the same plan finished (in order, each checked: size and
            ``hashes`` locally, size and ETag in a bucket); and a line saying what was kept or
            discarded, or None when there was nothing staged.
        """
        if self._direct:
            return self.staging, [], None
        kept, note = self._start_remote(plan) if self.remote else self._start_local(plan, hashes)
        self._staged = True
        self.staged_shards = len(kept)
        return self.staging, kept, note

    def _start_local(self, plan: str, hashes: tuple[str, ...]) -> tuple[list[dict], str | None]:
        journal = os.path.join(self.staging, _JOURNAL_NAME)
        lines = []
        with contextlib.suppress(OSError), open(journal, "rb") as f:
            lines = f.read().split(b"\n")
        header = _parse(lines[0]) if lines else None
        note = None
        kept: list[dict] = []
        if header is not None and header.get("plan") == plan:
            for line in lines[1:]:
                entry = _parse(line)
                stored = entry and (entry.get("zip_data") or entry.get("raw_data"))
                if not isinstance(stored, dict) or not _matches_local(
                        os.path.join(self.staging, str(stored.get("basename"))), stored, hashes):
                    break
                kept.append(entry)
            note = f"resuming: {len(kept)} shards already written are kept"
            names = {(e["zip_data"] or e["raw_data"])["basename"] for e in kept}
            for name in os.listdir(self.staging):  # a partial shard, a piece: written again
                if name not in names and name != _JOURNAL_NAME:
                    _remove(os.path.join(self.staging, name))
        else:
            if header is not None:
                note = "discarding the staged shards of an interrupted write with other arguments"
            shutil.rmtree(self.staging, ignore_errors=True)
        os.makedirs(self.staging, exist_ok=True)
        _write_synced(journal, b"".join(json.dumps(line, sort_keys=True).encode() + b"\n"
                                        for line in [{"plan": plan}, *kept]))
        self._journal = open(journal, "ab")  # noqa: SIM115 - kept open for the write's journal lines
        return kept, note

    def _start_remote(self, plan: str) -> tuple[list[dict], str | None]:
        listing = self._staged_listing()
        recorded = _parse(self._read(self._staging_key(_PLAN_NAME)) or b"") if listing else None
        kept: list[dict] = []
        note = None
        if recorded is not None and recorded.get("plan") == plan:
            entries = {}
            for key in listing:
                if key.startswith("entry-") and key.endswith(".json"):
                    entry = _parse(self._read(self._staging_key(key)) or b"")
                    if entry is not None:
                        entries[key[len("entry-"):-len(".json")]] = entry
            while True:  # the finished shards, in order, as long as each is there unchanged
                name = f"shard.{len(kept):05}.mds"
                entry = next((e for n, e in entries.items() if n.startswith(name)), None)
                stored = entry and (entry.get("zip_data") or entry.get("raw_data"))
                if not isinstance(stored, dict):
                    break
                there = listing.get(str(stored.get("basename")), {})
                if there.get("Size") != stored.get("bytes") or there.get("ETag") != entry.get("etag"):
                    break
                kept.append({k: v for k, v in entry.items() if k != "etag"})
                self._etags[self._staging_key(stored["basename"])] = entry["etag"]
            note = f"resuming: {len(kept)} shards already uploaded are kept"
        elif listing:
            note = "discarding the staged shards of an interrupted write with other arguments"
            self._delete([self._staging_key(k) for k in listing])
        if recorded is None or recorded.get("plan") != plan:
            self._put(self._staging_key(_PLAN_NAME), json.dumps({"plan": plan}).encode())
        os.makedirs(self.staging, exist_ok=True)
        return kept, note

    def _staged_listing(self) -> dict[str, dict]:
        prefix = _STAGING_NAME + "/"
        return {k[len(prefix):]: v for k, v in self._listing().items() if k.startswith(prefix)}

    def _put(self, key: str, data: bytes) -> None:
        bucket, name = self._bucket_key(key)
        self._attempt(f"upload {key} to {self.uri}",
                      lambda: self._s3.put_object(Bucket=bucket, Key=name, Body=data))

    def stage(self, entry: dict) -> None:
        """Record a finished shard (its index ``entry``): journaled locally, uploaded remotely."""
        if self._lost is not None:
            raise DestinationError(f"{_describe(self._lost)} took {self.uri} while this write "
                                   "ran; this write stops and publishes no index")
        name = (entry["zip_data"] or entry["raw_data"])["basename"]
        if not self.remote:
            self._journal.write(json.dumps(entry, sort_keys=True).encode() + b"\n")
            self._journal.flush()
            os.fsync(self._journal.fileno())
        elif self._direct:
            self.publish(name)
        else:
            key = self._staging_key(name)
            self._attempt(f"upload {name} to {self.uri}",
                          lambda: self._staging_uploader.upload_file(name))
            bucket, object_key = self._bucket_key(key)
            etag = self._s3.head_object(Bucket=bucket, Key=object_key)["ETag"]
            self._etags[key] = etag
            self._put(self._staging_key(f"entry-{name}.json"),
                      json.dumps({**entry, "etag": etag}, sort_keys=True).encode())
        self.staged_shards += 1

    def commit(self, names: list[str], manifest: bytes, index_path: str,
               before: Callable[[], None] | None = None) -> None:
        """Publish the staged dataset: ``names`` (its shards), the manifest, ``index_path`` last.

        Ctrl-C and SIGTERM are held back until it is done. ``before`` runs first (a group write
        removes its root's merged index there).

        Raises:
            DestinationError: if the claim was lost or a staged shard changed; if a move fails
                midway, the commit record stays and the next write to OUT completes it.
        """
        from writer.pipeline.interrupts import held

        self.ensure_claimed()
        self.check_published()
        if self._direct:
            self.publish_bytes(MANIFEST_NAME, manifest)
            shutil.copyfile(index_path, os.path.join(self.staging, INDEX_NAME))
            self.publish(INDEX_NAME)
            return
        moves = [*names, MANIFEST_NAME, INDEX_NAME]
        with held():
            if before is not None:
                before()
            if self.remote:
                self._put(self._staging_key(MANIFEST_NAME), manifest)
                with open(index_path, "rb") as f:
                    self._put(self._staging_key(INDEX_NAME), f.read())
                self._put(self._staging_key(_COMMIT_NAME), json.dumps({"moves": moves}).encode())
            else:
                with open(os.path.join(self.staging, MANIFEST_NAME), "wb") as f:
                    f.write(manifest)
                os.replace(index_path, os.path.join(self.staging, INDEX_NAME))
                _write_synced(os.path.join(self.staging, _COMMIT_NAME), json.dumps({"moves": moves}).encode())
            self.roll_forward()

    def roll_forward(self) -> bool:
        """Complete a commit whose record is in staging (this write's, or one cut short).

        Returns:
            bool: whether there was a commit record to complete.
        """
        if self._direct:
            return False
        record = _parse(self._read(self._staging_key(_COMMIT_NAME)) or b"")
        moves = record.get("moves") if record is not None else None
        if not isinstance(moves, list) or not all(isinstance(m, str) and is_writer_path(m) and "/" not in m
                                                   for m in moves):
            return False
        for name in moves:
            if self.remote:
                self._copy(self._staging_key(name), name)
            else:
                source = os.path.join(self.staging, name)
                if os.path.lexists(source):
                    os.replace(source, os.path.join(self.uri, name))
        if not self.remote:
            _sync_folder(self.uri)
        keep = {*moves, CLAIM_NAME}
        stale = [e for e in self.entries() if e not in keep and e.split("/")[0] != _STAGING_NAME]
        if self.remote:
            self._delete(stale)
            staged = sorted(self._staged_listing(), key=lambda k: k == _COMMIT_NAME)
            self._delete([self._staging_key(k) for k in staged])  # the commit record last
        else:
            for entry in sorted(stale, key=lambda e: -e.count("/")):
                _remove(os.path.join(self.uri, *entry.split("/")))
            for folder, dirs, _ in os.walk(self.uri, topdown=False):  # emptied group folders
                for d in dirs:
                    with contextlib.suppress(OSError):
                        os.rmdir(os.path.join(folder, d))
            self._close_journal()
            shutil.rmtree(self.staging, ignore_errors=True)
        self._staged = False
        self.committed = True
        return True

    def _copy(self, source: str, target: str) -> None:
        bucket, source_key = self._bucket_key(source)
        _, target_key = self._bucket_key(target)
        self._attempt(f"publish {target} in {self.uri}", lambda: self._s3.copy_object(
            Bucket=bucket, Key=target_key, CopySource={"Bucket": bucket, "Key": source_key}))

    def _close_journal(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def staged_bytes(self) -> int:
        """Bytes a local OUT's staging holds (what a resumed write keeps needs no new space)."""
        if self.remote:
            return 0
        return sum(os.path.getsize(os.path.join(folder, name))
                   for folder, _, names in os.walk(self.staging) for name in names
                   if os.path.isfile(os.path.join(folder, name)))

    def interrupted_state(self) -> str:
        """What an interrupted write leaves at OUT, in words, for its one-line message."""
        if self.committed:
            return f"{self.uri} holds the new dataset, published before the interrupt was handled"
        had = "holds its previous dataset, unchanged" if self._had_index else "holds no dataset"
        if self._direct or not self._staged:
            return f"{self.uri} {had}"
        where = f"{self.uri}/{_STAGING_NAME}"
        return (f"{self.uri} {had}; {self.staged_shards} finished shards are kept in {where}: "
                "rerun the same command to resume")
