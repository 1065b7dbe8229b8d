"""cutmix-writer under interruption: the old dataset survives, a rerun resumes byte-identically.

Every interruption here is real: SIGTERM and SIGKILL sent to a writer process, and a write
running out of space on a small tmpfs. The resumed result is compared byte for byte with an
uninterrupted write of the same arguments.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_writer_cli import failed, files, ok, run

pytestmark = pytest.mark.timeout(300)

STAGING = ".cutmix-staging"
# Many raw shards of ~316 rows (digits rows are 3,160 bytes): a write of a second or two to watch.
ARGS = ("--source", "digits", "--batch-size", "64", "--size-limit", "1000000", "--workers", "1",
        "--no-progress")


def _start(out: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "writer.cli", "write", "--out", str(out), *ARGS, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _staged(out: Path) -> int:
    journal = out / STAGING / "journal.jsonl"
    return max(journal.read_text().count("\n") - 1, 0) if journal.exists() else 0


def _wait_for_staged(proc: subprocess.Popen, out: Path, count: int) -> None:
    deadline = time.monotonic() + 120
    while _staged(out) < count:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the write never staged a shard"
        time.sleep(0.01)


def _killed(out: Path, staged: int, *args: str, watch: Path | None = None) -> None:
    """Start a write to ``out``, kill -9 it once ``staged`` shards are staged (in ``watch``)."""
    proc = _start(out, *args)
    try:
        _wait_for_staged(proc, watch or out, staged)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()


def _dataset(out: Path) -> dict[str, bytes]:
    """The published dataset: every file but a write's staging and claim (a killed writer's stays;
    the kernel dropped its lock, and the next write takes it)."""
    return {name: data for name, data in files(out).items()
            if not name.startswith(STAGING) and name != ".cutmix-claim.json"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, bytes]]:
    """Uninterrupted writes: the old dataset (1 epoch) and the new one (40 epochs)."""
    root = tmp_path_factory.mktemp("reference")
    ok("write", "--out", root / "old", *ARGS)
    ok("write", "--out", root / "new", *ARGS, "--epochs", "40")
    return {"old": files(root / "old"), "new": files(root / "new")}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_an_interrupted_overwrite_keeps_the_old_dataset_and_a_rerun_resumes(
        tmp_path: Path, reference: dict, signum: int) -> None:
    out = tmp_path / "ds"
    ok("write", "--out", out, *ARGS)
    proc = _start(out, "--epochs", "40", "--overwrite")
    try:
        _wait_for_staged(proc, out, 5)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode in (128 + signum, -signum), stderr
    if signum == signal.SIGTERM:
        assert "holds its previous dataset, unchanged" in stderr and "rerun the same command" in stderr
    assert _dataset(out) == reference["old"], "the old dataset is whole and untouched"
    assert "OK" in ok("verify", out, "--no-progress").output
    staged = _staged(out)
    assert staged >= 5
    again = run("write", "--out", out, *ARGS, "--epochs", "40", "--overwrite")
    assert again.exit_code == 0, again.output
    kept = json.loads(again.output.split("resuming: ")[1].split(" ")[0])
    assert kept >= 5, again.output  # every journaled shard whose bytes match is kept
    assert _dataset(out) == reference["new"] and not (out / STAGING).exists()


def test_a_killed_group_write_resumes_to_the_uninterrupted_groups_bytes(tmp_path: Path) -> None:
    out, clean = tmp_path / "out", tmp_path / "clean"
    group = ("--epochs", "30", "--num-groups", "2")
    _killed(out, 3, *group, "--group", "1", watch=out / "group-1")
    assert not (out / "group-1" / "index.json").exists()
    assert "resuming" in ok("write", "--out", out, *ARGS, *group, "--group", "1").output
    ok("write", "--out", clean, *ARGS, *group, "--group", "1")
    assert files(out / "group-1") == files(clean / "group-1")  # so its merge is a whole write's too


def test_a_rerun_with_other_arguments_discards_the_staged_work_and_says_so(tmp_path: Path,
                                                                           reference: dict) -> None:
    out = tmp_path / "ds"
    _killed(out, 2, "--epochs", "40")
    result = ok("write", "--out", out, *ARGS)  # 1 epoch, not 40
    assert "discarding the staged shards of an interrupted write with other arguments" in result.output
    assert files(out) == reference["old"]


def test_a_staged_shard_altered_after_the_kill_is_written_again(tmp_path: Path, reference: dict) -> None:
    out = tmp_path / "ds"
    _killed(out, 4, "--epochs", "40")
    shard = out / STAGING / "shard.00001.mds"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes: only its hash tells
    shard.write_bytes(bytes(data))
    result = ok("write", "--out", out, *ARGS, "--epochs", "40")
    assert "resuming: 1 shards already written are kept" in result.output, result.output
    assert files(out) == reference["new"]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 20 MB tmpfs (needs root and mount, as on this project's machines and CI)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_mid_write_keeps_the_old_dataset(small_disk: Path) -> None:
    out = small_disk / "ds"
    png = ("--encoding", "png", "--size-limit", "200000")
    ok("write", "--out", out, *ARGS, *png, "--epochs", "2")
    before = files(out)
    # png rows vary, so the size check cannot refuse it up front: it runs out of space.
    result = run("write", "--out", out, *ARGS, *png, "--epochs", "30", "--overwrite")
    failed(result, "No space left on device")
    assert "holds its previous dataset, unchanged" in result.output
    assert _dataset(out) == before
    assert "OK" in ok("verify", out, "--no-progress").output
    shutil.rmtree(out / STAGING)


def test_a_raw_write_that_cannot_fit_is_refused_before_it_starts(small_disk: Path) -> None:
    out = small_disk / "ds"
    ok("write", "--out", out, *ARGS)
    before = files(out)
    for epochs in ("6", "2147483647"):
        result = run("write", "--out", out, *ARGS, "--epochs", epochs, "--overwrite")
        failed(result, "--out")
        assert "free" in result.output and "samples x 3,160 bytes" in result.output, result.output
        assert files(out) == before and not (out / STAGING).exists()


def test_every_write_prints_its_size(tmp_path: Path) -> None:
    result = ok("write", "--out", tmp_path / "ds", *ARGS, "--epochs", "2")
    assert "writing 2,874 samples x 3,160 bytes = 9.1 MB" in result.output


def test_a_group_folder_linking_outside_out_is_refused_and_left_alone(tmp_path: Path) -> None:
    other = tmp_path / "other_dataset"
    ok("write", "--out", other, *ARGS)
    before = files(other)
    out = tmp_path / "out"
    out.mkdir()
    os.symlink("../other_dataset", out / "group-0")
    for extra in ((), ("--overwrite",)):
        result = run("write", "--out", out, *ARGS, "--num-groups", "2", "--group", "0", *extra)
        failed(result, "resolves outside")
    assert files(other) == before
