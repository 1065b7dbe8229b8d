"""What a write may replace (``--overwrite``), and how one write claims OUT against another."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_writer_cli import failed, files, ok, run, write

from writer.publish import store
from writer.publish.store import CLAIM_NAME, Destination, DestinationError, check_out


def _boto(moto_endpoint: str):  # noqa: ANN202
    import boto3

    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


def _keys(client, bucket: str) -> list[str]:  # noqa: ANN001
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


# -- OUT that no write may use ---------------------------------------------------------------


def test_empty_out_is_refused_and_the_current_folder_untouched(cifar_root: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "cwd"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    monkeypatch.chdir(home)
    result = run("write", "--source", f"cifar10:{cifar_root}", "--out", "", "--overwrite")
    failed(result, "--out")
    assert "empty" in result.output
    assert files(home) == {"thesis.tex": b"years of work"}


def test_the_file_system_root_is_refused(cifar_root: Path) -> None:
    # Without --overwrite, so even a broken guard could not delete anything.
    result = run("write", "--source", f"cifar10:{cifar_root}", "--out", "/")
    failed(result, "--out")
    assert "root" in result.output


def test_dot_resolving_to_a_user_folder_is_not_replaced(cifar_root: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "cwd"
    (home / "notes").mkdir(parents=True)
    (home / "notes" / "a.txt").write_text("a")
    (home / "index.json").write_text("{}")
    monkeypatch.chdir(home)
    result = run("write", "--source", f"cifar10:{cifar_root}", "--out", ".", "--overwrite")
    failed(result, "notes/a.txt")
    assert files(home) == {"index.json": b"{}", "notes/a.txt": b"a"}


@pytest.mark.parametrize(("out", "relation"), [
    ("{src}", "contains"),                          # cifar10:DIR reads DIR/cifar-10-batches-py
    ("{src}/cifar-10-batches-py", "is the source"),
    ("{src}/cifar-10-batches-py/inner", "is inside"),
])
def test_out_overlapping_a_cifar_source_is_refused(cifar_root: Path, out: str,
                                                   relation: str) -> None:
    before = files(cifar_root)
    result = run("write", "--source", f"cifar10:{cifar_root}", "--out", out.format(src=cifar_root),
                 "--overwrite")
    failed(result, "--out")
    assert relation in result.output
    assert files(cifar_root) == before


def test_out_equal_to_an_imagefolder_source_is_refused(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    root = tmp_path / "imgs"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / name / "0.png")
    before = files(root)
    for out in (root, root / "premixed", tmp_path):
        failed(run("write", "--source", f"imagefolder:{root}", "--out", out, "--overwrite"),
               "--out")
    assert files(root) == before


def test_check_out_compares_remote_paths_by_segment() -> None:
    check_out("s3://b/x2", ["s3://b/x"])  # a sibling that shares a prefix of characters
    with pytest.raises(DestinationError, match="is inside"):
        check_out("s3://b/x/y", ["s3://b/x"])
    with pytest.raises(DestinationError, match="contains"):
        check_out("s3://b/x/", ["s3://b/x/y"])


# -- what --overwrite replaces ---------------------------------------------------------------


def test_overwrite_refuses_another_tools_mds_dataset(cifar_root: Path, tmp_path: Path) -> None:
    from streaming import MDSWriter

    out = tmp_path / "theirs"
    with MDSWriter(out=str(out), columns={"x": "int"}) as writer:
        writer.write({"x": 1})
    before = files(out)
    result = run("write", "--source", f"cifar10:{cifar_root}", "--out", out, "--overwrite")
    failed(result, "cutmix_manifest.json")
    assert files(out) == before


def test_overwrite_refuses_a_dataset_with_files_the_writer_did_not_write(cifar_root: Path,
                                                                        tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(cifar_root, out)
    (out / "README.txt").write_text("mine")
    before = files(out)
    failed(run("write", "--source", f"cifar10:{cifar_root}", "--out", out, "--overwrite"),
           "README.txt")
    assert files(out) == before


def test_overwrite_replaces_a_merged_root_with_its_groups(cifar_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for group in (0, 1):
        write(cifar_root, out, "--epochs", 2, "--num-groups", 2, "--group", group)
    ok("merge", out)
    write(cifar_root, out, "--overwrite")
    write(cifar_root, tmp_path / "clean")
    assert files(out) == files(tmp_path / "clean")


def test_bucket_root_is_refused_and_other_objects_survive(cifar_root: Path, s3_bucket: str,
                                                          moto_endpoint: str) -> None:
    client = _boto(moto_endpoint)
    client.put_object(Bucket=s3_bucket, Key="other-dataset/index.json", Body=b"{}")
    for out in (f"s3://{s3_bucket}/", f"s3://{s3_bucket}"):
        result = run("write", "--source", f"cifar10:{cifar_root}", "--out", out, "--overwrite")
        failed(result, "--out")
        assert "bucket root" in result.output
    assert _keys(client, s3_bucket) == ["other-dataset/index.json"]


def test_bucket_overwrite_refuses_foreign_objects_and_spares_sibling_prefixes(
        cifar_root: Path, tmp_path: Path, s3_bucket: str, moto_endpoint: str) -> None:
    client = _boto(moto_endpoint)
    client.put_object(Bucket=s3_bucket, Key="x/photo.jpg", Body=b"jpeg")
    failed(run("write", "--source", f"cifar10:{cifar_root}", "--out", f"s3://{s3_bucket}/x",
               "--overwrite"), "photo.jpg")
    assert _keys(client, s3_bucket) == ["x/photo.jpg"]
    write(cifar_root, f"s3://{s3_bucket}/y", "--seed", 1)
    client.put_object(Bucket=s3_bucket, Key="y2/keep.txt", Body=b"keep")
    write(cifar_root, f"s3://{s3_bucket}/y", "--overwrite")
    assert "y2/keep.txt" in _keys(client, s3_bucket)
    assert CLAIM_NAME not in " ".join(_keys(client, s3_bucket))


# -- claims: one writer at a time ------------------------------------------------------------


def _writer(cifar_root: Path, out: Path, seed: int, epochs: int) -> subprocess.Popen:
    args = ["--source", f"cifar10:{cifar_root}", "--batch-size", "16", "--epochs", str(epochs),
            "--size-limit", "200000", "--seed", str(seed), "--workers", "1", "--no-progress",
            "--overwrite"]
    return subprocess.Popen([sys.executable, "-m", "writer.cli", "write", "--out", str(out), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_second_writer_is_refused_while_the_first_runs(cifar_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _writer(cifar_root, out, seed=1, epochs=60)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob(".cutmix-staging/shard.*.mds")) and time.monotonic() < deadline:
            assert first.poll() is None, first.communicate()
            time.sleep(0.02)
        result = run("write", "--source", f"cifar10:{cifar_root}", "--out", out, "--overwrite",
                     "--batch-size", 16, "--seed", 2)
        failed(result, "being written by another cutmix-writer")
        assert len(result.output.strip().splitlines()) == 1
        _, stderr = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, stderr
    ok("write", "--source", f"cifar10:{cifar_root}", "--out", tmp_path / "clean", "--batch-size",
       16, "--epochs", 60, "--size-limit", 200_000, "--seed", 1)
    assert files(out) == files(tmp_path / "clean")


def test_two_writers_started_together_publish_one_consistent_dataset(cifar_root: Path,
                                                                    tmp_path: Path) -> None:
    out = tmp_path / "out"
    procs = {seed: _writer(cifar_root, out, seed=seed, epochs=3) for seed in (1, 2)}
    results = {seed: (*p.communicate(timeout=300), p.returncode) for seed, p in procs.items()}
    winners = [seed for seed, (_, _, code) in results.items() if code == 0]
    assert len(winners) >= 1, results
    for _, stderr, code in results.values():
        if code != 0:
            lines = [line for line in stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and "Traceback" not in stderr, stderr
    # Whoever published last, the index lists exactly its own shards: a clean write's bytes.
    seed = json.loads((out / "cutmix_manifest.json").read_text())["args"]["seed"]
    assert seed in winners
    ok("write", "--source", f"cifar10:{cifar_root}", "--out", tmp_path / "clean", "--batch-size",
       16, "--epochs", 3, "--size-limit", 200_000, "--seed", seed)
    assert files(out) == files(tmp_path / "clean")


def test_a_local_claim_removed_mid_write_stops_the_publish(tmp_path: Path) -> None:
    destination = Destination(str(tmp_path / "out"))
    destination.claim()
    with pytest.raises(DestinationError, match="being written"):
        Destination(str(tmp_path / "out")).claim()
    os.remove(tmp_path / "out" / CLAIM_NAME)
    with pytest.raises(DestinationError, match="removed while this write ran"):
        destination.ensure_claimed()
    destination.release()


def test_a_bucket_claim_refuses_a_live_writer_and_yields_to_a_stale_one(
        s3_bucket: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"s3://{s3_bucket}/c"
    first = Destination(uri)
    first.claim()
    second = Destination(uri)
    with pytest.raises(DestinationError, match="being written by another cutmix-writer"):
        second.claim()
    monkeypatch.setattr(store, "STALE_S", -1.0)  # as if the first had died a minute ago
    second.claim()
    with pytest.raises(DestinationError, match="took s3://"):
        first.ensure_claimed()  # the first, were it alive after all, publishes nothing
    first.release()
    assert CLAIM_NAME in " ".join(_keys(_boto(moto_endpoint), s3_bucket))  # the second's
    second.release()
    assert _keys(_boto(moto_endpoint), s3_bucket) == []
    first.close()
    second.close()


def test_a_bucket_shard_replaced_after_upload_stops_the_publish(
        tmp_path: Path, s3_bucket: str, moto_endpoint: str) -> None:
    destination = Destination(f"s3://{s3_bucket}/d")
    destination.claim()
    destination.publish_bytes("shard.00000.mds", b"ours")
    destination.check_published()
    _boto(moto_endpoint).put_object(Bucket=s3_bucket, Key="d/shard.00000.mds", Body=b"theirs")
    with pytest.raises(DestinationError, match="changed or vanished"):
        destination.check_published()
    destination.release()
    destination.close()


def test_a_bucket_writer_is_refused_while_another_claims_the_prefix(
        cifar_root: Path, s3_bucket: str, moto_endpoint: str) -> None:
    holder = Destination(f"s3://{s3_bucket}/e")
    holder.claim()
    try:
        result = run("write", "--source", f"cifar10:{cifar_root}", "--out",
                     f"s3://{s3_bucket}/e", "--overwrite")
        failed(result, "being written by another cutmix-writer")
    finally:
        holder.release()
        holder.close()
    assert _keys(_boto(moto_endpoint), s3_bucket) == []


# -- a group rewrite after merge -------------------------------------------------------------


def test_rewriting_a_group_removes_the_merged_root(cifar_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for group in (0, 1):
        write(cifar_root, out, "--epochs", 2, "--num-groups", 2, "--group", group)
    ok("merge", out)
    result = write(cifar_root, out, "--epochs", 2, "--num-groups", 2, "--group", 1, "--seed", 5,
                   "--overwrite")
    assert "merge" in result.output
    assert not (out / "index.json").exists() and not (out / "cutmix_manifest.json").exists()
    failed(run("merge", out), "group 1")  # other arguments than group 0: refused, not merged
