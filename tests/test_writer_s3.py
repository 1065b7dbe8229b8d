"""Writing to and reading from a bucket (a real moto S3 server) through streaming's S3 code."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
from streaming.base.storage.upload import S3Uploader
from streaming.base.util import clean_stale_shared_memory
from test_writer_cli import failed, files, ok, run, write

from writer import PremixedDataset, read_manifest


def _bucket_files(bucket: str, prefix: str) -> dict[str, bytes]:
    import boto3

    client = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])
    keys = client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])
    return {
        k["Key"][len(prefix) + 1:]: client.get_object(Bucket=bucket, Key=k["Key"])["Body"].read()
        for k in keys
    }


def test_bucket_write_has_the_local_bytes_and_streams_back(cifar_root: Path, tmp_path: Path,
                                                           s3_bucket: str) -> None:
    write(cifar_root, tmp_path / "local", "--epochs", 2, "--size-limit", 300_000)
    remote = f"s3://{s3_bucket}/x"
    write(cifar_root, remote, "--epochs", 2, "--size-limit", 300_000, "--workers", 2)
    assert _bucket_files(s3_bucket, "x") == files(tmp_path / "local")
    assert read_manifest(remote)["num_classes"] == 10
    clean_stale_shared_memory()
    streamed = PremixedDataset(remote=remote, local=str(tmp_path / "cache"), batch_size=8)
    local = PremixedDataset(local=str(tmp_path / "local"), batch_size=8)
    assert len(streamed) == len(local) == 200
    for i in range(0, 200, 13):
        torch.testing.assert_close(streamed[i], local[i], rtol=0, atol=0)
    ok("verify", remote)


def test_index_is_uploaded_last(cifar_root: Path, s3_bucket: str,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    uploaded = []
    real_upload = S3Uploader.upload_file

    def record(self: S3Uploader, filename: str) -> None:
        time.sleep(0.05 if filename.startswith("shard") else 0)  # give a race a chance
        real_upload(self, filename)
        uploaded.append(filename)

    monkeypatch.setattr(S3Uploader, "upload_file", record)
    write(cifar_root, f"s3://{s3_bucket}/y", "--size-limit", 100_000)
    assert len(uploaded) > 3
    assert uploaded[-2:] == ["cutmix_manifest.json", "index.json"]


def test_non_empty_prefix_needs_overwrite_which_replaces_it(cifar_root: Path, tmp_path: Path,
                                                            s3_bucket: str) -> None:
    remote = f"s3://{s3_bucket}/z"
    write(cifar_root, remote, "--seed", 1, "--size-limit", 100_000)
    failed(run("write", "--source", f"cifar10:{cifar_root}", "--out", remote), "--overwrite")
    write(cifar_root, remote, "--overwrite")  # one shard now, where seed 1 left four
    write(cifar_root, tmp_path / "local")
    assert _bucket_files(s3_bucket, "z") == files(tmp_path / "local")


def test_groups_in_a_bucket_merge_to_the_single_write(cifar_root: Path, tmp_path: Path,
                                                      s3_bucket: str) -> None:
    remote = f"s3://{s3_bucket}/g"
    for group in (0, 1):
        write(cifar_root, remote, "--epochs", 2, "--num-groups", 2, "--group", group)
    ok("merge", remote)
    write(cifar_root, tmp_path / "single", "--epochs", 2)
    clean_stale_shared_memory()
    merged = PremixedDataset(remote=remote, local=str(tmp_path / "cache"), batch_size=8)
    single = PremixedDataset(local=str(tmp_path / "single"), batch_size=8)
    assert len(merged) == len(single) == 200
    for i in range(200):
        torch.testing.assert_close(merged[i], single[i], rtol=0, atol=0)


def test_unreachable_endpoint_is_a_quick_click_error(cifar_root: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    began = time.monotonic()
    result = run("write", "--source", f"cifar10:{cifar_root}", "--out", "s3://nobucket/x")
    failed(result, "s3://nobucket/x")
    assert time.monotonic() - began < 60
