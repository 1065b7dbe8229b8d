"""MDS shards from encoded rows: where streaming's ``MDSWriter`` would cut them, and one job each.

The writer's workers mix and encode pieces of the schedule; the parent feeds the pieces' row
sizes to a :class:`ShardPlanner`, which closes a shard exactly where ``MDSWriter.write`` would
(the rule is sequential in the row sizes, so it does not depend on the number of workers); each
closed shard is then built, hashed and written by one worker (:func:`build_shard`), and the
parent only appends the returned entry to the index. For raw rows, whose size is fixed, the
boundaries are a function of the arguments alone.

The shard layout is MDS's joint shard: ``uint32`` sample count, ``uint32`` offsets (one per
sample plus the end), the writer's config JSON, the rows. The config, its size and the per-row
overhead are read from a real ``MDSWriter`` (:meth:`ShardFormat.from_writer`), and a test checks
the files against ``MDSWriter``'s own for the same rows, compressed or not.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "Placement",
    "RowPlacer",
    "ShardFormat",
    "ShardPlanner",
    "ShardSpec",
    "build_shard",
    "hasher",
    "header_size",
    "placements",
    "plan_fixed",
    "seal_shard",
    "shard_header",
]


def hasher(algo: str) -> Any:
    """A running hash whose ``hexdigest()`` is streaming's ``get_hash(algo, data)``.

    Built here, not by importing streaming, whose package import pulls in transformers
    (seconds in every worker); the algorithms are hashlib's and xxhash's, as in streaming, and a
    test checks each one against ``get_hash``.
    """
    if algo.startswith("xxh"):
        import xxhash

        return getattr(xxhash, algo)()
    return hashlib.new(algo)


@dataclass(frozen=True)
class ShardFormat:
    """What every shard of one dataset shares: the config block, hashes, compression, limit.

    Attributes:
        config: ``MDSWriter.get_config()``: written into each shard and each index entry.
        config_data: the config's JSON bytes, as stored inside each shard.
        hashes: hash algorithms recorded for each file, sorted.
        compression: ``None`` or a streaming compression name (e.g. ``"zstd"``).
        size_limit: the shard size limit in bytes (``None``: one shard).
        extra_bytes_per_shard: the fixed bytes of a shard: count, last offset and config.
        extra_bytes_per_sample: the bytes a row adds beyond its own (its offset).
    """

    config: dict
    config_data: bytes
    hashes: tuple[str, ...]
    compression: str | None
    size_limit: int | None
    extra_bytes_per_shard: int
    extra_bytes_per_sample: int

    @classmethod
    def from_writer(cls, writer: Any) -> ShardFormat:
        """The format of an ``MDSWriter``: its own config bytes and size accounting."""
        return cls(writer.get_config(), writer.config_data, tuple(writer.hashes),
                   writer.compression, writer.size_limit, writer.extra_bytes_per_shard,
                   writer.extra_bytes_per_sample)

    def basenames(self, index: int) -> tuple[str, str | None]:
        """``(raw, compressed)`` file names of shard ``index``, as ``MDSWriter`` names them."""
        raw = f"shard.{index:05}.{self.config['format']}"
        if not self.compression:
            return raw, None
        from streaming.base.compression import get_compression_extension

        return raw, f"{raw}.{get_compression_extension(self.compression)}"


@dataclass(frozen=True)
class ShardSpec:
    """One closed shard: its number and where its rows lie in the pieces.

    Attributes:
        index: the shard's number.
        segments: ``(piece, start, end)`` byte ranges, in order, of the pieces' row data.
        sizes: uint32 byte size of each row, in order.
    """

    index: int
    segments: tuple[tuple[int, int, int], ...]
    sizes: np.ndarray = field(repr=False)


class ShardPlanner:
    """Closes shards where ``MDSWriter.write`` would, from the rows' sizes alone.

    ``MDSWriter`` starts a new shard before a row when ``size_limit < shard size + row size``
    (the row's size counting its offset). One difference: where the dataset's very first row is
    over the limit, ``MDSWriter`` writes an empty shard before it; here no empty shard is
    written (later oversized rows get a shard of their own in both).

    Feed each piece's row sizes in order with :meth:`add`; it returns the shards that closed.
    """

    def __init__(self, form: ShardFormat, first_index: int = 0) -> None:
        self.form = form
        self._piece = 0
        self._open: list[tuple[int, int, int]] = []  # segments of the shard being filled
        self._sizes: list[np.ndarray] = []
        self._bytes = form.extra_bytes_per_shard
        self._rows = 0
        # Each shard's cut depends on its own rows alone, so planning can start at any shard
        # boundary (a resumed write starts at its first unfinished shard).
        self._shards = first_index

    def add(self, sizes: np.ndarray) -> list[ShardSpec]:
        """Take the next piece's row sizes; return the shards that are now complete."""
        piece, self._piece = self._piece, self._piece + 1
        sizes = np.asarray(sizes, dtype=np.int64)
        ends = np.cumsum(sizes)  # byte end of each row within the piece
        costs = np.cumsum(sizes + self.form.extra_bytes_per_sample)
        limit = self.form.size_limit
        closed = []
        row = 0
        while row < len(sizes):
            if limit is None:
                take = len(sizes) - row
            else:
                before = costs[row - 1] if row else 0
                # Rows row..k-1 fit while shard bytes + their costs stay within the limit.
                fit = int(np.searchsorted(costs, before + limit - self._bytes, side="right"))
                take = max(0, fit - row)  # none, when one oversized row filled the shard
                if take == 0 and self._rows == 0:
                    take = 1  # a row alone over the limit: its own shard, not an empty one
            if take > 0:
                start = int(ends[row - 1]) if row else 0
                self._open.append((piece, start, int(ends[row + take - 1])))
                self._sizes.append(sizes[row:row + take])
                self._bytes += int(costs[row + take - 1] - (costs[row - 1] if row else 0))
                self._rows += take
                row += take
            if row < len(sizes):  # the next row does not fit: this shard is complete
                closed.append(self._close())
        return closed

    @property
    def first_needed(self) -> int:
        """The first piece the shard being filled (or the next one) still needs."""
        return self._open[0][0] if self._open else self._piece

    def finish(self) -> ShardSpec | None:
        """Close the last shard, if it holds any rows."""
        return self._close() if self._rows else None

    def _close(self) -> ShardSpec:
        spec = ShardSpec(self._shards, tuple(self._open),
                         np.concatenate(self._sizes).astype(np.uint32))
        self._shards += 1
        self._open, self._sizes = [], []
        self._bytes, self._rows = self.form.extra_bytes_per_shard, 0
        return spec


def header_size(form: ShardFormat, count: int) -> int:
    """The size of :func:`shard_header` for a shard of ``count`` rows."""
    return 4 + 4 * (count + 1) + len(form.config_data)


def shard_header(form: ShardFormat, sizes: np.ndarray) -> bytes:
    """The bytes before a shard's rows: sample count, offsets (one per row plus the end), config."""
    count = len(sizes)
    head = header_size(form, count)
    offsets = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return b"".join((np.uint32(count).tobytes(), (offsets + head).astype(np.uint32).tobytes(),
                     form.config_data))


def plan_fixed(form: ShardFormat, row_size: int, piece_rows: Sequence[int],
               first_index: int = 0) -> list[ShardSpec]:
    """Every shard of pieces of ``piece_rows`` rows of ``row_size`` bytes, planned in advance."""
    planner = ShardPlanner(form, first_index)
    specs = [spec for n in piece_rows for spec in planner.add(np.full(n, row_size))]
    last = planner.finish()
    return specs + ([last] if last is not None else [])


def placements(form: ShardFormat, specs: Sequence[ShardSpec]) -> dict[int, list[Placement]]:
    """For each piece, where its rows go in the planned shards' files (see :func:`seal_shard`)."""
    out: dict[int, list[Placement]] = {}
    for spec in specs:
        header = shard_header(form, spec.sizes)
        at = len(header)
        for k, (piece, start, end) in enumerate(spec.segments):
            out.setdefault(piece, []).append(
                Placement(form.basenames(spec.index)[0], at, start, end, header if k == 0 else None))
            at += end - start
    return out


class Placement(NamedTuple):
    """Rows ``[start, end)`` (bytes) of a piece go at ``offset`` of shard file ``name``.

    The piece holding a shard's first rows also writes its ``header``.
    """

    name: str
    offset: int
    start: int
    end: int
    header: bytes | None


class RowPlacer:
    """Writes a piece's rows, as they are made, where the plan puts them in ``folder``'s shard files.

    ``where`` is the piece's :class:`Placement` list; :meth:`write` takes any run of the piece's
    bytes with its offset in the piece, so a worker can write each batch while it is still in
    the core's cache instead of first assembling the whole piece. Use as a context manager: the
    files stay open until it exits.
    """

    def __init__(self, where: Sequence[Placement], folder: str) -> None:
        self.where, self.folder = list(where), folder
        self._fds: dict[str, int] = {}

    def __enter__(self) -> RowPlacer:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def write(self, rows: Any, at: int) -> None:
        """Write ``rows`` (a buffer), which are bytes ``[at, at + len)`` of the piece."""
        view = memoryview(rows).cast("B")
        end = at + len(view)
        for place in self.where:
            lo, hi = max(at, place.start), min(end, place.end)
            if lo >= hi:
                continue
            fd = self._fds.get(place.name)
            if fd is None:
                fd = self._fds[place.name] = os.open(os.path.join(self.folder, place.name),
                                                     os.O_WRONLY | os.O_CREAT, 0o644)
            # Two workers often fill one shard at once. Taking turns is cheap; racing for the
            # file's lock in the kernel was measured here at up to 10x the time of the write.
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if place.header is not None and lo == place.start:
                    _pwrite_all(fd, memoryview(place.header), 0)
                _pwrite_all(fd, view[lo - at:hi - at], place.offset + lo - place.start)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def seal_shard(form: ShardFormat, spec: ShardSpec, folder: str) -> dict:
    """Hash (and compress) a planned shard whose rows a :class:`RowPlacer` wrote; its index entry."""
    raw_name, _ = form.basenames(spec.index)
    path = os.path.join(folder, raw_name)
    size = header_size(form, len(spec.sizes)) + int(spec.sizes.sum(dtype=np.int64))
    if os.path.getsize(path) != size:
        raise OSError(f"{raw_name} holds {os.path.getsize(path)} bytes, expected {size}")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        entry = _write_entry(form, spec, [memoryview(data)], folder, written=True)
    if entry["zip_data"] is not None:
        os.unlink(path)
    return entry


def build_shard(form: ShardFormat, spec: ShardSpec, pieces: Mapping[int, Any], folder: str) -> dict:
    """Build shard ``spec`` from the pieces, write it to ``folder``, return its index entry.

    Uncompressed, the rows go from the pieces to the file without being assembled: they are
    hashed and written segment by segment (a piece in a file is memory-mapped, so its bytes are
    read once, from the page cache). Compressed, the shard is assembled, then compressed.

    Args:
        form: the dataset's shard format.
        spec: the shard's number, segments and row sizes.
        pieces: for each piece number in ``spec.segments``, either its row bytes (a buffer) or
            an open file descriptor to memory-map them from.
        folder: where the shard file goes.

    Returns:
        dict: the shard's entry in ``index.json``, as ``MDSWriter`` records it.
    """
    with ExitStack() as stack:
        buffers: dict[int, memoryview] = {}
        for piece in {piece for piece, _, _ in spec.segments}:
            source = pieces[piece]
            if isinstance(source, int):
                source = stack.enter_context(mmap.mmap(source, 0, access=mmap.ACCESS_READ))
            buffers[piece] = stack.enter_context(memoryview(source).cast("B"))
        parts = [memoryview(shard_header(form, spec.sizes))]
        for piece, start, end in spec.segments:
            if len(buffers[piece]) < end:
                raise OSError(f"piece {piece} is shorter than its rows ({end} bytes)")
            parts.append(buffers[piece][start:end])
        return _write_entry(form, spec, parts, folder, written=False)


def _write_entry(form: ShardFormat, spec: ShardSpec, parts: list[memoryview], folder: str,
                 written: bool) -> dict:
    # Hashes the raw shard (``parts``, back to back), writes it unless ``written``, or its
    # compressed form; releases the views before the caller closes what they view.
    raw_name, zip_name = form.basenames(spec.index)
    try:
        raw_info = _file_info(raw_name, parts, form.hashes)
        zip_info = None
        if zip_name is not None:
            from streaming.base.compression import compress

            compressed = memoryview(compress(form.compression, b"".join(parts)))
            for part in parts:
                part.release()
            parts[:] = [compressed]
            zip_info = _file_info(zip_name, parts, form.hashes)
        if zip_name is not None or not written:
            with open(os.path.join(folder, zip_name or raw_name), "wb") as f:
                for part in parts:
                    f.write(part)
    finally:
        for part in parts:
            part.release()
    return {"samples": len(spec.sizes), "raw_data": raw_info, "zip_data": zip_info, **form.config}
def _file_info(basename: str, parts: list[memoryview], hashes: tuple[str, ...]) -> dict:
    running = {algo: hasher(algo) for algo in hashes}
    for part in parts:
        for algo in hashes:
            running[algo].update(part)
    return {"basename": basename, "bytes": sum(len(p) for p in parts),
            "hashes": {algo: running[algo].hexdigest() for algo in hashes}}
