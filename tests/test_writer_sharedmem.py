"""The loaders' pixels live in shared memory, and the writer's workers map them instead of a copy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_cifar10

from writer.pipeline.pool import write_shards
from writer.pipeline.premix import Schedule
from writer.pipeline.shards import ShardFormat
from writer.pipeline.sharedmem import attach, shareable, shared_empty
from writer.pipeline.sources import ImageSet, load_cifar10, load_digits, load_imagefolder
from writer.pipeline.write import HASHES
from writer.streaming_seam import index_writer


def test_shareable_finds_the_buffer_and_offset_of_contiguous_views() -> None:
    images = shared_empty((6, 4, 4, 3))
    raw, offset = shareable(images)
    assert offset == 0
    assert shareable(images[2:])[0] is raw
    assert shareable(images[2:])[1] == 2 * 4 * 4 * 3
    assert shareable(images[:, :2]) is None  # skips bytes: not one run of the buffer
    assert shareable(images[::-1]) is None
    assert shareable(np.zeros((6, 4, 4, 3), np.uint8)) is None
    assert shareable(np.ascontiguousarray(images)) is not None  # no copy was made


def test_attach_sees_the_same_bytes_read_only() -> None:
    images = shared_empty((3, 2, 2, 3))
    images[:] = np.arange(images.size, dtype=np.uint8).reshape(images.shape)
    raw, offset = shareable(images[1:])
    view = attach(raw, offset, (2, 2, 2, 3), np.uint8)
    np.testing.assert_array_equal(view, images[1:])
    assert not view.flags.writeable
    images[2, 0, 0, 0] = 200  # the same memory, not a copy
    assert view[1, 0, 0, 0] == 200


def test_the_loaders_put_their_pixels_in_shared_memory(tmp_path: Path) -> None:
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / "folder" / label).mkdir(parents=True)
        Image.new("RGB", (5, 4), (10, 20, 30)).save(tmp_path / "folder" / label / "x.png")
    sources = [load_cifar10(write_cifar10(tmp_path / "cifar"), "train"), load_digits("test"),
               load_imagefolder(tmp_path / "folder")]
    for source in sources:
        assert shareable(source.images) is not None
        assert shareable(source.labels) is not None and source.labels.dtype == np.int64
        assert source.images.dtype == np.uint8 and source.images.flags.c_contiguous
    np.testing.assert_array_equal(sources[2].images[1], np.broadcast_to([10, 20, 30], (4, 5, 3)))


def _write(source: ImageSet, folder: Path, workers: int) -> dict[str, bytes]:
    schedule = Schedule(len(source), 8, 2)
    writer = index_writer(out=str(folder), columns={"x": "bytes"}, hashes=HASHES, size_limit=9000)
    for _ in write_shards(source, schedule, ShardFormat.from_writer(writer), str(folder), seed=3,
                          alpha=1.0, encoding="raw", workers=workers):
        pass
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_workers_map_the_loaders_pixels_and_copy_any_other_array(
        cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("writer.pipeline.premix._IMAGES_PER_TASK", 16)  # several pieces: the pool runs
    shared = load_cifar10(cifar_root, "train")
    plain = ImageSet(np.array(shared.images), shared.labels, shared.class_names)
    assert shareable(plain.images) is None
    want = _write(shared, tmp_path / "w1", workers=1)
    saves: list[str] = []
    real_save = np.save
    monkeypatch.setattr("writer.pipeline.pool.np.save", lambda path, array: (saves.append(str(path)),
                                                                     real_save(path, array)))
    assert _write(shared, tmp_path / "shared", workers=2) == want
    assert saves == []  # the loader's memory went to the workers as it is
    assert _write(plain, tmp_path / "plain", workers=2) == want
    assert len(saves) == 1 and saves[0].endswith("images.npy")


def test_start_fork_server_starts_the_workers_server_at_once() -> None:
    # In a fresh interpreter (this one's server may already run): right after the call, and
    # before any write, a child of that process is the fork server, with its preload module.
    script = """
import os, sys
from writer.pipeline.pool import start_fork_server
start_fork_server()
me = str(os.getpid())
children = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode()
    except OSError:
        continue
    if stat[1] == me:
        children.append(cmdline)
print(sum("forkserver" in c and "writer.pipeline.forkserver" in c for c in children))
"""
    if not Path("/proc/self/stat").exists():
        pytest.skip("reads /proc")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "1", out.stderr


def test_workers_do_not_rerun_the_callers_script_but_other_forkserver_children_do(
        tmp_path: Path) -> None:
    # A script with a side effect outside its main guard: multiprocessing re-runs a script in
    # every child it starts, which for a training script means its imports (composer: seconds)
    # in every worker of every write. The writer's workers skip it; a forkserver pool of the
    # script's own, which shares the server, still gets the script (its function is found).
    runs = tmp_path / "runs"
    script = tmp_path / "caller.py"
    script.write_text(f"""
import multiprocessing, os
from concurrent.futures import ProcessPoolExecutor
with open({str(runs)!r}, "a") as f:
    f.write(str(os.getpid()) + "\\n")

def square(x):
    return x * x

if __name__ == "__main__":
    import numpy as np
    from writer.format.manifest import PremixConfig
    from writer.pipeline.write import build_manifest
    from writer.pipeline.sources import ImageSet
    from writer.publish.store import Destination
    from writer.pipeline.write import write_premixed
    rng = np.random.default_rng(0)
    source = ImageSet(rng.integers(0, 256, (600, 8, 8, 3), dtype=np.uint8),
                      rng.integers(0, 3, 600), ["a", "b", "c"])
    config = PremixConfig(batch_size=32, epochs=8)
    manifest = build_manifest(source, config, source_spec="test", split="train")
    summary = write_premixed(source, Destination({str(tmp_path / "out")!r}), config, manifest,
                             workers=2, progress=False)
    assert summary.samples == 4800
    with ProcessPoolExecutor(1, multiprocessing.get_context("forkserver")) as pool:
        assert pool.submit(square, 7).result() == 49
""")
    subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True,
                   timeout=300, cwd=Path(__file__).parent.parent)
    pids = runs.read_text().split()
    assert len(pids) == 2, pids  # the script itself and its own pool's one process
