"""writer.pipeline.shards and .pool: shards cut where MDSWriter cuts them, built by workers, same bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from writer.pipeline.encode import encode_rows
from writer.pipeline.pool import write_shards
from writer.pipeline.premix import EpochOrders, Schedule, mix_batch
from writer.pipeline.shards import (
    RowPlacer,
    ShardFormat,
    ShardPlanner,
    build_shard,
    hasher,
    placements,
    plan_fixed,
    seal_shard,
)
from writer.pipeline.sources import ImageSet, load_cifar10
from writer.pipeline.write import HASHES
from writer.streaming_seam import index_writer


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _streaming_shards(folder: Path, rows: list[bytes], **kwargs: object) -> tuple[dict, list]:
    """What streaming's own MDSWriter writes for these encoded rows (its per-row path)."""
    from streaming import MDSWriter

    class Rows(MDSWriter):
        def encode_sample(self, sample: bytes) -> bytes:  # type: ignore[override]
            return sample

    with Rows(out=str(folder), columns={"x": "bytes"}, hashes=HASHES, **kwargs) as writer:
        for row in rows:
            writer.write(row)
    files = _files(folder)
    return files, json.loads(files.pop("index.json"))["shards"]


def _ours(folder: Path, pieces: list[list[bytes]], **kwargs: object) -> tuple[dict, list]:
    folder.mkdir()
    form = ShardFormat.from_writer(index_writer(out=str(folder / "cfg"), columns={"x": "bytes"},
                                                 hashes=HASHES, **kwargs))
    planner = ShardPlanner(form)
    blobs = {i: b"".join(rows) for i, rows in enumerate(pieces)}
    specs = [spec for rows in pieces for spec in planner.add(np.array([len(r) for r in rows]))]
    last = planner.finish()
    specs += [last] if last is not None else []
    entries = [build_shard(form, spec, blobs, str(folder)) for spec in specs]
    (folder / "cfg").rmdir()
    return _files(folder), entries


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(0, 900), min_size=1, max_size=60),
       cuts=st.lists(st.integers(0, 60), max_size=5),
       size_limit=st.integers(1100, 6000),
       compression=st.sampled_from([None, "zstd", "bz2"]))
def test_planned_shards_equal_mdswriters_own(tmp_path_factory: pytest.TempPathFactory,
                                             sizes: list[int], cuts: list[int], size_limit: int,
                                             compression: str | None) -> None:
    rng = np.random.default_rng(len(sizes))
    rows = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]
    bounds = sorted({0, len(rows), *(min(c, len(rows)) for c in cuts)})
    pieces = [rows[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    root = tmp_path_factory.mktemp("shards")
    kwargs = dict(size_limit=size_limit, compression=compression)
    want_files, want_index = _streaming_shards(root / "streaming", rows, **kwargs)
    got_files, got_index = _ours(root / "ours", pieces, **kwargs)
    assert got_index == want_index
    assert got_files == want_files


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(row_size=st.integers(1, 300),
       piece_rows=st.lists(st.integers(1, 40), min_size=1, max_size=6),
       batch=st.integers(1, 17),
       size_limit=st.integers(1500, 8000),
       reverse=st.booleans())
def test_rows_placed_batch_by_batch_make_mdswriters_shards(
        tmp_path_factory: pytest.TempPathFactory, row_size: int, piece_rows: list[int],
        batch: int, size_limit: int, reverse: bool) -> None:
    # Raw rows: the plan is made from the sizes alone, each piece's rows are written in runs of
    # ``batch`` rows (as a worker writes each mixed batch), pieces in any order, then sealed.
    rng = np.random.default_rng(row_size * 1000 + batch)
    rows = [rng.integers(0, 256, row_size, dtype=np.uint8).tobytes() for _ in range(sum(piece_rows))]
    root = tmp_path_factory.mktemp("placed")
    want_files, want_index = _streaming_shards(root / "streaming", rows, size_limit=size_limit)
    (root / "ours").mkdir()
    form = ShardFormat.from_writer(index_writer(out=str(root / "cfg"), columns={"x": "bytes"},
                                                 hashes=HASHES, size_limit=size_limit))
    specs = plan_fixed(form, row_size, piece_rows)
    where = placements(form, specs)
    starts = np.cumsum([0, *piece_rows])
    order = range(len(piece_rows))
    for piece in reversed(order) if reverse else order:
        blob = b"".join(rows[starts[piece]:starts[piece + 1]])
        with RowPlacer(where[piece], str(root / "ours")) as placer:
            for at in range(0, len(blob), batch * row_size):
                placer.write(blob[at:at + batch * row_size], at)
    got_index = [seal_shard(form, spec, str(root / "ours")) for spec in specs]
    assert got_index == want_index
    assert _files(root / "ours") == want_files


def test_a_row_over_the_limit_gets_its_own_shard_not_an_empty_one(tmp_path: Path) -> None:
    rows = [b"b" * 5000, b"a" * 100, b"c" * 100]
    want_files, want_index = _streaming_shards(tmp_path / "streaming", rows, size_limit=2000)
    got_files, got_index = _ours(tmp_path / "ours", [rows], size_limit=2000)
    assert [e["samples"] for e in want_index] == [0, 1, 2]  # streaming writes an empty shard
    assert [e["samples"] for e in got_index] == [1, 2]
    assert [e["raw_data"]["hashes"] for e in got_index] == [
        e["raw_data"]["hashes"] for e in want_index if e["samples"]]


@pytest.mark.parametrize("algo", HASHES + ["md5", "sha256", "xxh3_64", "xxh128"])
def test_hasher_fed_in_parts_is_streamings_get_hash(algo: str) -> None:
    from streaming.base.hashing import get_hash

    data = bytes(range(256)) * 33
    running = hasher(algo)
    for part in (data[:1000], bytearray(data[1000:5000]), memoryview(data)[5000:]):
        running.update(part)  # as shards are hashed: segment by segment, any buffer
    assert running.hexdigest() == get_hash(algo, data)


@pytest.fixture
def source(cifar_root: Path) -> ImageSet:
    return load_cifar10(cifar_root, "train")


@pytest.mark.parametrize(("encoding", "compression"),
                         [("raw", None), ("png", None), ("raw", "zstd"), ("png", "bz2")])
def test_pool_shards_equal_mdswriter_fed_row_by_row(source: ImageSet, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    encoding: str, compression: str | None) -> None:
    # Pieces of 2 batches of 8: many pieces per shard, shards that start and end inside pieces.
    monkeypatch.setattr("writer.pipeline.premix._IMAGES_PER_TASK", 16)
    schedule = Schedule(len(source), 8, 2)
    start, stop = 3, schedule.total_batches - 1
    orders = EpochOrders(5, len(source))
    rows = []
    for g in range(start, stop):
        epoch, batch = schedule.locate(g)
        rows += encode_rows(mix_batch(source, orders(epoch), 5, epoch, batch, 8, 1.0), encoding)
    want_files, want_index = _streaming_shards(tmp_path / "streaming", rows, size_limit=9000,
                                               compression=compression)
    for workers in (1, 2):
        staging = tmp_path / f"w{workers}"
        writer = index_writer(out=str(staging), columns={"x": "bytes"}, hashes=HASHES,
                               size_limit=9000, compression=compression)
        steps = list(write_shards(source, schedule, ShardFormat.from_writer(writer), str(staging),
                                  seed=5, alpha=1.0, encoding=encoding, start=start, stop=stop,
                                  workers=workers))
        assert sum(n for n, _ in steps) == len(rows)
        assert [e for _, entries in steps for e in entries] == want_index
        assert _files(staging) == want_files
    assert len(want_index) > 3  # several shards, so boundaries were exercised
