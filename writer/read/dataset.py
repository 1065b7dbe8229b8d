"""Reading pre-mixed datasets back: ``(image, label)`` tensors for training, and the manifest.

``PremixedDataset`` is a ``StreamingDataset``, so shuffling, sharding across ranks and workers,
and mid-epoch resumption (``state_dict``/``load_state_dict``, which Composer calls through
``StreamingDataLoader``) all come from streaming unchanged. What it adds is distrust: before
streaming sees the dataset, its index and manifest are checked (:mod:`writer.format.checks`: no
file name leaving the dataset, counts and columns agreeing, a merged root agreeing with its
groups); the local cache of a remote dataset is keyed by the dataset's identity, so a rewritten
dataset is never read from a stale cache; downloaded shards are checked against their hashes
and a local dataset's shards against their recorded sizes; and every sample read is checked
(it decodes, its label is a distribution), so a corrupt shard stops training with its name
instead of training on NaN. A local shard altered in place at its recorded size is not
re-hashed at open: ``cutmix-writer verify`` checks every shard's hashes. ``PremixedLoader``
is streaming's ``StreamingDataLoader`` for it, reading each batch in a few array operations
rather than a Python call per sample.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from writer.errors import CorruptShardError
from writer.format.checks import distribution_rows, is_distribution
from writer.format.manifest import INDEX_NAME
from writer.format.opening import open_dataset, read_manifest
from writer.streaming_seam import SeamDataset, SeamLoader, release_shared_memory

__all__ = ["CorruptShardError", "PremixedDataset", "PremixedLoader", "read_manifest"]


IMAGE_DTYPES = ("uint8", "float32")

# Numeric MDS scalar encodings (streaming decodes each as ``np.frombuffer(data, dtype)[0]``).
_SCALARS = frozenset(("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
                      "float16", "float32", "float64"))


class _FixedRowDecoder:
    """``MDSReader.decode_sample`` for rows whose columns all have a fixed size (raw images).

    Streaming's generic decoder parses every column's encoding string again for every sample,
    and slices (copies) each column out of the row; that was most of a sample's read time. Here
    the row layout is one numpy record dtype, built once, and every column is a view into one
    writable copy of the row, so ``torch.from_numpy`` can alias it. The values are the ones
    streaming's decoder returns (a test compares them column by column); a row whose length
    is not the record's raises ``ValueError``, which the dataset reports as a corrupt shard.
    """

    def __init__(self, names: list[str], record: np.dtype) -> None:
        self.names, self.record = names, record

    @classmethod
    def for_columns(cls, names: list[str], encodings: list[str],
                    sizes: list[int | None]) -> _FixedRowDecoder | None:
        """The decoder for these MDS columns, or None if a column is not fixed-size numeric."""
        fields = []
        for name, encoding, size in zip(names, encodings, sizes, strict=True):
            parts = encoding.split(":")
            if encoding in _SCALARS:
                dtype, shape = np.dtype(encoding), ()
            elif len(parts) == 3 and parts[0] == "ndarray" and parts[1] in _SCALARS and parts[2]:
                dtype, shape = np.dtype(parts[1]), tuple(int(d) for d in parts[2].split(","))
            else:
                return None
            if size is None or dtype.itemsize * int(np.prod(shape)) != size:
                return None
            fields.append((name, dtype, shape))
        return cls(list(names), np.dtype(fields))

    def __call__(self, data: bytes | bytearray | memoryview) -> dict[str, Any]:
        if len(data) != self.record.itemsize:
            raise ValueError(f"a row has {len(data)} bytes; its columns need {self.record.itemsize}")
        buffer = data if isinstance(data, (bytearray, memoryview)) else bytearray(data)  # writable
        row = np.frombuffer(buffer, dtype=self.record, count=1)[0]
        return {name: row[name] for name in self.names}


class _OpenShards:
    """The shard files this process reads rows from, kept open (at most ``limit``, LRU).

    Streaming's ``MDSReader.get_sample_data`` opens the shard for every sample: an open, two
    seeks, two reads and a close, each releasing the GIL, which on a busy machine streaming's
    own download threads then hold. Here a shard's offset table is read once when it is
    opened and a row is one ``preadv`` into a fresh ``bytearray`` (the buffer the decoder's
    views alias: no copy). Rows asked for in order (streaming's unshuffled order, and its
    shuffles' runs within a shard) are read ``readahead`` at a time, each row of such a read
    handed out once, so a caller changing a yielded tensor in place never changes another
    read. A missing file still raises ``FileNotFoundError``, which is how streaming learns
    to download it. Descriptors are not inherited by pickling (spawned loader workers open
    their own); forked ones share them, which ``pread`` allows.
    """

    def __init__(self, limit: int = 64, readahead: int = 64) -> None:
        self.limit, self.readahead = limit, readahead
        self._files: dict[str, _ShardFile] = {}  # path -> open shard, least recently used first
        self._lock = threading.Lock()  # a read-ahead buffer is state: one reader at a time

    def __getstate__(self) -> dict[str, Any]:
        return {"limit": self.limit, "readahead": self.readahead}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["limit"], state["readahead"])

    def __del__(self) -> None:
        for shard in self._files.values():
            os.close(shard.fd)

    def row(self, path: str, index: int) -> memoryview:
        """The bytes of row ``index`` of the shard at ``path``, writable and not shared."""
        with self._lock:
            return self._row(path, index)

    def _shard(self, path: str) -> _ShardFile:
        # The open shard at path, opened if need be, now the most recently used (last).
        shard = self._files.pop(path, None)
        if shard is None:
            shard = self._open(path)
        self._files[path] = shard
        return shard

    def _row(self, path: str, index: int) -> memoryview:
        shard = self._shard(path)
        offsets = shard.offsets
        if not 0 <= index < len(offsets) - 1:
            raise IndexError(f"row {index} is not in {os.path.basename(path)} "
                             f"({len(offsets) - 1} rows)")
        if not shard.first < index < shard.stop or index != shard.last + 1:
            # Not the next row of the last read: read from here, ahead only if in order.
            stop = min(index + self.readahead, len(offsets) - 1) if index == shard.last + 1 else index + 1
            begin, end = int(offsets[index]), int(offsets[stop])
            buffer = bytearray(max(end - begin, 0))
            got = os.preadv(shard.fd, [buffer], begin)
            if got != len(buffer):
                raise ValueError(f"rows {index} to {stop - 1} of {os.path.basename(path)} end "
                                 f"after the file ({got} of {len(buffer)} bytes)")
            shard.buffer, shard.first, shard.stop = memoryview(buffer), index, stop
        shard.last = index
        base = int(offsets[shard.first])
        return shard.buffer[int(offsets[index]) - base:int(offsets[index + 1]) - base]

    def read_rows(self, path: str, rows: np.ndarray, places: np.ndarray, size: int, into: memoryview) -> None:
        """Read rows ``rows`` (each ``size`` bytes) of the shard at ``path`` into a batch buffer.

        Row ``rows[i]`` lands at ``into[places[i] * size:]``. Rows that follow each other in
        the file are one ``preadv`` whatever their places (its buffers point at them), so a
        batch of consecutive rows is a single read. Raises :class:`_BadRow` (a ``ValueError``)
        naming the place of a row the shard's header does not hold, whose offsets do not span
        ``size`` bytes, or that ends after the file.
        """
        with self._lock:
            shard = self._shard(path)
            offsets = shard.offsets
            held = len(offsets) - 1
            outside = np.flatnonzero((rows < 0) | (rows >= held))
            if outside.size:  # the index lists rows the shard's header does not
                bad = int(outside[0])
                raise _BadRow(int(places[bad]), f"row {rows[bad]} is not in "
                                                f"{os.path.basename(path)} ({held} rows)")
            lengths = offsets[rows + 1] - offsets[rows]
            wrong = np.flatnonzero(lengths != size)
            if wrong.size:
                raise _BadRow(int(places[wrong[0]]),
                              f"a row has {lengths[wrong[0]]} bytes; its columns need {size}")
            order = np.argsort(rows, kind="stable")  # file order
            breaks = np.flatnonzero(np.diff(rows[order]) != 1) + 1
            for run in np.split(order, breaks) if breaks.size else (order,):
                at = places[run]  # a run: rows following each other in the file
                first = int(at[0])
                if len(at) == 1 or (np.diff(at) == 1).all():
                    buffers = [into[first * size:(first + len(at)) * size]]
                else:  # a run scattered over the batch (a shuffle): a buffer per row
                    buffers = [into[int(i) * size:(int(i) + 1) * size] for i in at]
                offset = int(offsets[rows[run[0]]])
                for begin in range(0, len(buffers), _IOV_MAX):
                    part = buffers[begin:begin + _IOV_MAX]
                    want = sum(len(b) for b in part)
                    got = os.preadv(shard.fd, part, offset)
                    if got != want:  # name the first row not read whole
                        row = begin * (len(at) // len(buffers)) + got // size
                        raise _BadRow(int(at[row]), f"a row of {os.path.basename(path)} ends after "
                                                    f"the file ({got} of {want} bytes read)")
                    offset += want

    def _open(self, path: str) -> _ShardFile:
        while len(self._files) >= self.limit:
            os.close(self._files.pop(next(iter(self._files))).fd)
        fd = os.open(path, os.O_RDONLY)  # FileNotFoundError: streaming downloads it and retries
        try:
            head = os.pread(fd, 4, 0)
            if len(head) != 4:
                raise ValueError(f"{os.path.basename(path)} is shorter than its header")
            count = int(np.frombuffer(head, np.uint32)[0])
            table = os.pread(fd, 4 * (count + 1), 4)
            if len(table) != 4 * (count + 1):
                raise ValueError(f"{os.path.basename(path)} is shorter than its offset table")
            offsets = np.frombuffer(table, np.uint32).astype(np.int64)
            if (np.diff(offsets) < 0).any():
                raise ValueError(f"{os.path.basename(path)}'s row offsets are not in order")
        except BaseException:
            os.close(fd)
            raise
        return _ShardFile(fd, offsets)


_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024  # buffers per preadv


class _BadRow(ValueError):
    """A row of a batch read that its shard does not hold as its index says."""

    def __init__(self, position: int, message: str) -> None:
        super().__init__(message)
        self.position = position  # in the batch


class _ShardFile:
    """An open shard: its descriptor, offset table, and the rows of its last read."""

    def __init__(self, fd: int, offsets: np.ndarray) -> None:
        self.fd, self.offsets = fd, offsets
        self.buffer, self.first, self.stop, self.last = memoryview(b""), -1, -1, -2


class _ShardRows:
    """``MDSReader.get_sample_data`` for one shard, through a shared :class:`_OpenShards`."""

    def __init__(self, path: str, files: _OpenShards) -> None:
        self.path, self.files = path, files

    def __call__(self, index: int) -> memoryview:
        return self.files.row(self.path, index)


def _image_tensor(image: Any, dtype: str) -> torch.Tensor:
    """``C x H x W`` uint8 (a view of ``image`` where it is an array), or float32 ``/ 255``."""
    if isinstance(image, np.ndarray):
        array = image if image.flags.writeable else image.copy()
    else:  # a decoded PNG/JPEG PIL image
        array = np.array(image)
    if array.ndim == 2:
        array = array[..., None]
    # A numpy view, not torch's permute: torch calls release the GIL, and on a busy machine
    # getting it back from streaming's download threads cost more than the rest of the read.
    chw = array.transpose(2, 0, 1)
    if dtype == "float32":
        # float32 division, as before uint8 became the default: the same values bit for bit.
        return torch.from_numpy(np.divide(chw, np.float32(255.0), dtype=np.float32))
    return torch.from_numpy(chw)


def _place_index(folder: str, data: bytes) -> None:
    """Put the checked index where streaming looks for it, atomically (ranks may race)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, INDEX_NAME)
    if os.path.isfile(path):
        with open(path, "rb") as f:
            if f.read() == data:
                return
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".index-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class PremixedDataset(SeamDataset):
    """A pre-mixed CutMix dataset yielding ``(image, label)``, checked as it is read.

    ``image`` is the stored pixels as a uint8 ``C x H x W`` tensor (a view of the row read:
    no per-sample conversion; PNG/JPEG samples are decoded), or with ``image_dtype="float32"``
    a float32 tensor in ``[0, 1]`` (``uint8 / 255``). ``label`` is the float32 ``[K]`` mixed
    class distribution, ready for a soft-target loss. uint8 is a quarter of float32's bytes
    through the loader; normalize on the device, as ``cutmix_train``'s models do in their first
    layer (they take uint8 and float input alike).

    Before streaming opens it, the dataset's ``index.json`` and manifest are checked against
    each other (file names inside the dataset, sample counts, epochs, batch size, columns), a
    merged root against its groups (a group rewritten after ``merge`` is refused), and the
    shards of a local dataset against their recorded sizes. Shards downloaded from ``remote``
    are checked against their ``validate_hash`` hash; every sample read must have a finite,
    non-negative label summing to 1. A bad shard raises :class:`CorruptShardError` naming it.

    Args:
        remote: remote URI (or another local folder) to stream from, or ``None`` for a local
            dataset read in place.
        local: with ``remote``, the cache folder: the shards land in ``local/premixed-ID``,
            ``ID`` a digest of the dataset's index and manifest, so a dataset rewritten under
            the same URI is downloaded afresh and never read from a stale cache. Without
            ``remote``, the dataset itself. Use a fresh folder per concurrent dataset:
            streaming keys its shared memory by it. ``None`` with ``remote``: a fresh temporary
            folder for this dataset (downloaded again by the next one; left for the OS's
            temporary-file clean-up).
        shuffle: shuffle samples (streaming's shuffle); the pre-mixed order is already
            random, so the default keeps it.
        shuffle_seed: streaming's shuffle seed.
        batch_size: the per-rank batch size of the loader, which streaming uses to partition
            samples for deterministic resumption.
        transform: applied to the image tensor (uint8, or float32 with ``image_dtype``).
        image_dtype: ``"uint8"`` (the stored pixels) or ``"float32"`` (scaled to ``[0, 1]``).
        validate_hash: the hash (recorded in the index) that downloaded shards are checked
            against; ``None`` skips the check.
        **kwargs: passed to ``StreamingDataset`` (not ``streams`` or ``split``: one dataset).

    Attributes:
        identity: the digest keying the cache.
        manifest: the checked manifest.

    Raises:
        ValueError: if ``image_dtype`` is not one of ``IMAGE_DTYPES``; if the dataset is
            unreadable, names files outside itself, or its manifest
            disagrees with its index or its groups; :class:`CorruptShardError` for a local shard
            whose size is not its index's.

    ``ds[[i, j, ...]]`` (or ``__getitems__``) reads a batch in a few array operations;
    :class:`PremixedLoader` iterates the dataset so, a batch at a time.

    Example:
        >>> ds = PremixedDataset(local="/data/cifar10-cutmix", batch_size=128)  # doctest: +SKIP
        >>> image, label = ds[0]  # doctest: +SKIP
        >>> images, labels = ds[[0, 1, 2]]  # doctest: +SKIP
    """

    def __init__(
        self,
        remote: str | None = None,
        local: str | None = None,
        shuffle: bool = False,
        shuffle_seed: int = 9176,
        batch_size: int | None = None,
        transform: Callable[[torch.Tensor], Any] | None = None,
        validate_hash: str | None = "xxh64",
        image_dtype: str = "uint8",
        **kwargs: Any,
    ) -> None:
        if image_dtype not in IMAGE_DTYPES:
            raise ValueError(f"image_dtype must be one of {', '.join(IMAGE_DTYPES)}, got {image_dtype!r}")
        for key in ("streams", "split"):
            if kwargs.get(key):
                raise ValueError(f"PremixedDataset reads one dataset: pass its folder as remote "
                                 f"or local, not {key}")
        where = remote if remote is not None else local
        if where is None:
            raise ValueError("PremixedDataset needs remote or local")
        with tempfile.TemporaryDirectory(prefix="cutmix-premixed-") as scratch:
            opened = open_dataset(where, scratch)
        self.identity = hashlib.sha256(opened.manifest_bytes + b"\0" + opened.index_bytes).hexdigest()[:16]
        self.manifest = opened.manifest
        self.where, self._layout = where, opened.layout
        if remote is None:
            validate_hash = None  # nothing is downloaded; sizes were checked at open, labels on read
        elif validate_hash is not None:
            for shard in opened.index["shards"]:
                stored = shard["zip_data"] or shard["raw_data"]
                if validate_hash not in stored["hashes"]:
                    raise ValueError(f"validate_hash: shard {stored['basename']} of {where} has no "
                                     f"{validate_hash} hash (it has {sorted(stored['hashes'])})")
        if remote is not None:
            if local is None:
                # streaming's own default is one folder per URI, which it refuses to reuse: a
                # second open of the same URI on this machine failed. A fresh folder per dataset.
                local = tempfile.mkdtemp(prefix="cutmix-premixed-cache-")
            local = os.path.join(local, f"premixed-{self.identity}")
            _place_index(local, opened.index_bytes)  # streaming reads exactly what was checked
        super().__init__(remote=remote, local=local, shuffle=shuffle, shuffle_seed=shuffle_seed,
                         batch_size=batch_size, validate_hash=validate_hash, **kwargs)
        self.transform, self.image_dtype = transform, image_dtype
        self._shard_bounds = np.concatenate([[0], np.cumsum(self.samples_per_shard)])
        # Raw rows: one read into one buffer, one record view of it, instead of streaming's
        # open per sample and copy per column. Not with a cache limit: an evicted shard's
        # descriptor would hold its disk space.
        files = _OpenShards()
        self._raw_records: list[np.dtype | None] = []  # per shard: its row record if read raw
        self._row_readers: list[_ShardRows | None] = []
        for shard in self.shards:
            decoder = _FixedRowDecoder.for_columns(shard.column_names, shard.column_encodings,
                                                   shard.column_sizes)
            raw = decoder is not None and not self.cache_limit
            rows = None
            if raw:
                rows = _ShardRows(os.path.join(shard.dirname, shard.split, shard.raw_data.basename), files)
            self.use_shard_reader(shard, decoder, rows)
            self._row_readers.append(rows)
            self._raw_records.append(decoder.record if raw else None)
        self._closed = False
        self._owner = os.getpid()  # copies in loader workers (pickled or forked) release nothing

    def close(self) -> None:
        """Release the shared memory streaming opened for this dataset, now rather than at exit.

        streaming registers every shared-memory block it opens for cleanup at interpreter exit,
        which keeps each block and its file descriptor open for the life of the process, and
        each new dataset opens every live earlier one's blocks while it looks for a free name:
        a process that builds many datasets (a test suite, a sweep) runs out of file descriptors
        (measured here: 6 + 12 n(n+1)/2 descriptors after n datasets). Called when the dataset is
        garbage-collected or leaves a ``with`` block; the dataset is unusable afterwards. Only the
        process that built the dataset releases anything: a copy in a dataloader worker, which
        exits before the loader is done with the blocks, leaves them alone.
        """
        if getattr(self, "_closed", True):  # closed, or never finished building
            return
        self._closed = True
        if os.getpid() != self._owner:
            return
        release_shared_memory(self)

    def __enter__(self) -> PremixedDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - a destructor must not raise (e.g. at interpreter exit)
            pass

    def _shard_name(self, index: int) -> str:
        # A sample id counts over the whole dataset (len(self) is one rank's share of an epoch).
        shard_id, _ = self.spanner[index % self.num_samples]
        shard = self.shards[shard_id]
        return (shard.zip_data or shard.raw_data).basename

    def hash_failure(self, shard_id: int) -> CorruptShardError:
        """The error for a downloaded shard failing its hash (raised by streaming's seam)."""
        shard = self.shards[shard_id]
        name = (shard.zip_data or shard.raw_data).basename
        return CorruptShardError(f"shard {name} of {self.where} is corrupt: it fails its "
                                 f"{self.streams[0].validate_hash} hash after download")

    def _unreadable(self, name: str, index: int, error: Exception) -> CorruptShardError:
        if self.failed_download is not None:
            return self.failed_download
        return CorruptShardError(f"shard {name} of {self.where} is corrupt or unreadable: sample {index}: "
                                 f"{type(error).__name__}: {error}")

    def _not_a_distribution(self, name: str, index: int) -> CorruptShardError:
        return CorruptShardError(
            f"shard {name} of {self.where} is corrupt: sample {index}'s label is not a distribution "
            f"over {self._layout.num_classes} classes (finite, non-negative, summing to 1); run "
            "`cutmix-writer verify` on it")

    def __getitem__(self, index: int | list[int] | np.ndarray) -> tuple[Any, torch.Tensor]:  # type: ignore[override]
        """Sample ``index`` as ``(image, label)``; a list or array of ids is :meth:`__getitems__`."""
        if isinstance(index, (list, np.ndarray)):
            return self.__getitems__(index)
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int sample id or a list or array of them, got "
                            f"{index!r} ({type(index).__name__})")
        return self._sample(int(index))

    def _sample(self, index: int) -> tuple[Any, torch.Tensor]:
        try:
            sample = super().__getitem__(index)
        except CorruptShardError:
            raise
        except IndexError as e:
            if -self.num_samples <= index < self.num_samples:  # an id the index lists: the shard lacks it
                raise self._unreadable(self._shard_name(index), index, e) from None
            raise  # outside the dataset, as a sequence says
        except Exception as e:  # a truncated or altered shard fails in numpy, struct, PIL, …
            raise self._unreadable(self._shard_name(index), index, e) from None
        label = sample["label"]
        if not (isinstance(label, np.ndarray) and label.dtype == np.float32 and label.flags.writeable):
            label = np.array(label, dtype=np.float32)
        if not is_distribution(label, self._layout.num_classes):
            raise self._not_a_distribution(self._shard_name(index), index)
        image = _image_tensor(sample["image"], self.image_dtype)
        if self.transform is not None:
            image = self.transform(image)
        return image, torch.from_numpy(label)

    def __getitems__(self, indices: list[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples ``indices`` as one batch: what stacking ``self[i]`` for each would give.

        Images come as one ``B x C x H x W`` tensor (uint8, or float32 with ``image_dtype``),
        labels as float32 ``B x K``, both contiguous. Raw rows are read with one ``preadv`` per
        run of rows that follow each other in a shard (a batch in streaming's unshuffled order
        is one read per shard it spans), viewed as one record array, and checked and converted in a few
        array operations; shards that streaming decodes itself (PNG/JPEG) or that a cache
        limit may evict are read a sample at a time. Every label is checked, as in ``self[i]``.

        Raises:
            IndexError: if an id is outside the dataset.
            ValueError: if ``indices`` is empty or not a flat sequence of integers.
            CorruptShardError: for a row its shard does not hold as its index says, or a label
                that is not a distribution; it names the shard and the sample.
        """
        ids = np.array(indices)
        if ids.ndim != 1 or not ids.size or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"indices: expected a non-empty flat sequence of sample ids, got shape "
                             f"{ids.shape} of {ids.dtype}")
        ids = ids.astype(np.int64)
        ids[ids < 0] += self.num_samples  # negative ids count from the end, as in self[i]
        outside = np.flatnonzero((ids < 0) | (ids >= self.num_samples))
        if outside.size:
            raise IndexError(f"indices: sample {indices[int(outside[0])]} is not in the dataset "
                             f"({self.num_samples} samples)")
        shard_ids = np.searchsorted(self._shard_bounds, ids, side="right") - 1
        used = np.unique(shard_ids) if shard_ids.min() != shard_ids.max() else shard_ids[:1]
        record = self._batch_record(used)
        if record is None:
            images, labels = zip(*(self._sample(int(i)) for i in ids), strict=True)
            return torch.stack(images), torch.stack(labels)
        rows = ids - self._shard_bounds[shard_ids]
        buffer = np.empty(len(ids) * record.itemsize, np.uint8)  # every byte is read into
        for shard_id in used:
            places = np.flatnonzero(shard_ids == shard_id) if len(used) > 1 else np.arange(len(ids))
            self._read_rows(int(shard_id), rows[places], places, record.itemsize, memoryview(buffer), ids)
        records = np.frombuffer(buffer, dtype=record)
        labels = np.array(records["label"], dtype=np.float32)
        good = distribution_rows(labels, self._layout.num_classes)
        if not good.all():
            place = int(np.flatnonzero(~good)[0])
            raise self._not_a_distribution(self._shard_name(int(ids[place])), int(ids[place]))
        image = records["image"]
        if image.ndim == 3:  # one channel stored as H x W
            image = image[..., None]
        chw = image.transpose(0, 3, 1, 2)
        if self.image_dtype == "float32":
            # float32 division, as in self[i]: the same values bit for bit.
            out = np.divide(chw, np.float32(255.0), out=np.empty(chw.shape, np.float32))
        else:
            out = np.empty(chw.shape, chw.dtype)
            np.copyto(out, chw)
        images = torch.from_numpy(out)
        if self.transform is not None:
            images = torch.stack([self.transform(one) for one in images])
        return images, torch.from_numpy(labels)

    def _batch_record(self, shard_ids: np.ndarray) -> np.dtype | None:
        """The row record shared by these shards if all are read as raw rows, else None."""
        records = {self._raw_records[int(shard_id)] for shard_id in shard_ids}
        return records.pop() if len(records) == 1 else None  # {None} pops None too

    def _read_rows(self, shard_id: int, rows: np.ndarray, places: np.ndarray, size: int,
                   into: memoryview, ids: np.ndarray) -> None:
        """:meth:`_OpenShards.read_rows` for one shard, downloading it if it is missing."""
        shard = self.shards[shard_id]
        reader = self._row_readers[shard_id]
        name = (shard.zip_data or shard.raw_data).basename
        for attempt in (0, 1):
            try:
                reader.files.read_rows(reader.path, rows, places, size, into)
                break
            except FileNotFoundError:  # not downloaded (yet): as streaming's get_item does
                if attempt:
                    raise
                self.prepare_shard(shard_id)
            except _BadRow as e:  # reported as the ValueError self[i] meets
                raise self._unreadable(name, int(ids[e.position]), ValueError(str(e))) from None
            except Exception as e:  # a short header or offset table, fewer rows than the index
                raise self._unreadable(name, int(ids[places[0]]), e) from None
        self.touch_shard(shard_id)


def _as_read(batch: Any) -> Any:
    """``collate_fn`` for :class:`PremixedLoader`: the dataset yields whole batches."""
    return batch


class PremixedLoader(SeamLoader):
    """``StreamingDataLoader`` over a :class:`PremixedDataset` that reads a batch at once.

    It yields what ``StreamingDataLoader(dataset, batch_size=dataset.batch_size, drop_last=...)``
    with a stacking ``collate_fn`` yields: the same samples in the same order on each rank and
    worker, as ``(images, labels)`` with ``images`` ``B x C x H x W`` and ``labels`` float32
    ``B x K``; its ``len``, ``state_dict`` and ``load_state_dict`` are the same too, and
    streaming's download and readiness threads run as they do for samples (ending at once
    when every shard is local and raw and there is no cache limit: nothing to download or
    evict). What differs is the cost: streaming's yield loop hands out a batch's ids at once, and
    :meth:`PremixedDataset.__getitems__` reads them in a few array operations instead of a
    Python call, a decode and a stack per sample.

    The dataset then iterates batches (``iter(dataset)`` yields them, not samples): give each
    loader a dataset of its own. Indexing it (``dataset[i]``) is unchanged.

    Args:
        dataset: the dataset; its ``batch_size`` is the loader's batch size.
        drop_last: drop a worker's short last batch, as ``DataLoader``'s ``drop_last`` does
            for an iterable dataset.
        **kwargs: passed to ``DataLoader`` (``num_workers``, ``pin_memory``,
            ``persistent_workers``, ``prefetch_factor``, ...).

    Raises:
        TypeError: if ``dataset`` is not a :class:`PremixedDataset`.
        ValueError: if the dataset has no ``batch_size``, or ``kwargs`` sets what the loader
            decides (``batch_size``, ``collate_fn``, ``sampler``, ``batch_sampler``, ``shuffle``).

    Example:
        >>> ds = PremixedDataset(local="/data/cifar10-cutmix", batch_size=128)  # doctest: +SKIP
        >>> images, labels = next(iter(PremixedLoader(ds)))  # doctest: +SKIP
    """

    def __init__(self, dataset: PremixedDataset, drop_last: bool = True, **kwargs: Any) -> None:
        if not isinstance(dataset, PremixedDataset):
            raise TypeError(f"dataset: PremixedLoader reads a PremixedDataset, got {type(dataset).__name__}")
        size = dataset.batch_size
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"dataset: PremixedLoader needs the dataset's batch_size, got {size!r}")
        taken = sorted(set(kwargs) & {"batch_size", "collate_fn", "sampler", "batch_sampler", "shuffle"})
        if taken:
            raise ValueError(f"{taken[0]}: PremixedLoader sets it (the dataset's batch_size, whole batches)")
        dataset.batch_drop_last = bool(drop_last)
        super().__init__(dataset, batch_size=None, collate_fn=_as_read, **kwargs)
        # Reported, not used: DataLoader batches nothing here (torch reads batch_size only in
        # __init__ and __len__), but Composer takes its default microbatch size from it.
        self.report_batch_size(size)

    def __len__(self) -> int:
        samples, size = len(self.dataset), self.batch_size  # this rank's samples per epoch
        return samples // size if self.dataset.batch_drop_last else -(-samples // size)
