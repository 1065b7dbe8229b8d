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


def test_shards_are_staged_and_index_is_published_last(cifar_root: Path, s3_bucket: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from writer.publish.store import Destination

    uploaded, published = [], []
    real_upload, real_copy = S3Uploader.upload_file, Destination._copy

    def record(self: S3Uploader, filename: str) -> None:
        time.sleep(0.05 if filename.startswith("shard") else 0)  # give a race a chance
        real_upload(self, filename)
        uploaded.append((self.remote, filename))

    def copied(self: Destination, source: str, target: str) -> None:
        assert not published or published[-1] != "index.json", "nothing after the index"
        real_copy(self, source, target)
        published.append(target)

    monkeypatch.setattr(S3Uploader, "upload_file", record)
    monkeypatch.setattr(Destination, "_copy", copied)
    write(cifar_root, f"s3://{s3_bucket}/y", "--size-limit", 100_000)
    assert len(uploaded) > 3 and all(remote.endswith("/y/.cutmix-staging") for remote, _ in uploaded)
    assert published[-2:] == ["cutmix_manifest.json", "index.json"]
    assert sorted(published[:-2]) == sorted(name for _, name in uploaded)
    assert not [k for k in _bucket_keys(s3_bucket) if ".cutmix-staging" in k]


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


def _bucket_keys(bucket: str) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_upload_failing_mid_write_is_one_line_and_a_rerun_resumes(
        cifar_root: Path, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    real_upload = S3Uploader.upload_file

    def flaky(self: S3Uploader, filename: str) -> None:
        if filename == "shard.00003.mds":
            raise ConnectionError("connection reset by peer")
        time.sleep(0.02)
        real_upload(self, filename)

    args = ("--source", f"cifar10:{cifar_root}", "--batch-size", 16, "--epochs", 3,
            "--size-limit", 20_000, "--workers", 1)
    with monkeypatch.context() as patched:
        patched.setattr(S3Uploader, "upload_file", flaky)
        result = run("write", "--out", f"s3://{s3_bucket}/f", *args, "--retry", 1)
    failed(result, "cannot upload shard.00003.mds")
    assert "holds no dataset" in result.output and "resume" in result.output
    assert "CancelledError" not in result.output + caplog.text
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    keys = _bucket_keys(s3_bucket)
    assert keys and all(k.startswith("f/.cutmix-staging/") for k in keys), keys  # claim dropped
    assert "f/.cutmix-staging/shard.00000.mds" in keys
    again = run("write", "--out", f"s3://{s3_bucket}/f", *args)
    assert again.exit_code == 0, again.output
    assert "resuming: 3 shards already uploaded are kept" in again.output
    ok("write", "--out", tmp_path / "local", *args)
    assert _bucket_files(s3_bucket, "f") == files(tmp_path / "local")


def test_cancelled_shard_jobs_log_no_traceback(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    from concurrent.futures import Future

    from writer.streaming_seam import index_writer

    # MDSWriter hands each staged shard to a thread pool; after a failure its queued jobs are
    # cancelled, and streaming's done-callback calls future.exception() on each, which raises
    # CancelledError: concurrent.futures logs that with a traceback above our one-line error.
    writer = index_writer(out=str(tmp_path / "staging"), columns={"x": "int"})
    future: Future = Future()
    future.add_done_callback(writer.exception_callback)
    future.cancel()
    assert not caplog.records, caplog.text
    assert not writer.event.is_set()  # a cancelled job is no failure of its own
    writer.cancel_future_jobs()


def test_failed_uploads_are_retried_and_said_so(cifar_root: Path, tmp_path: Path, s3_bucket: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real_upload = S3Uploader.upload_file
    failures: set[str] = set()

    def once(self: S3Uploader, filename: str) -> None:
        if filename not in failures:
            failures.add(filename)
            raise ConnectionError("read timeout")
        real_upload(self, filename)

    monkeypatch.setattr(S3Uploader, "upload_file", once)
    monkeypatch.setattr(time, "sleep", lambda s: None)  # the backoff between attempts
    result = ok("write", "--source", f"cifar10:{cifar_root}", "--out", f"s3://{s3_bucket}/r",
                "--batch-size", 16, "--retry", 2)
    assert "upload shard.00000.mds to s3://" in result.output
    assert "retrying, attempt 2 of 2" in result.output
    write(cifar_root, tmp_path / "local")
    assert _bucket_files(s3_bucket, "r") == files(tmp_path / "local")


def test_frozen_endpoint_times_out_quickly(cifar_root: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []

    def accept_and_say_nothing() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept_and_say_nothing, daemon=True).start()
    monkeypatch.setenv("S3_ENDPOINT_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    began = time.monotonic()
    try:
        result = run("write", "--source", f"cifar10:{cifar_root}", "--out", "s3://frozen/x",
                     "--timeout", 1, "--retry", 1)
    finally:
        server.close()
        for conn in held:
            conn.close()
    failed(result, "s3://frozen/x")
    assert "timeout" in result.output.lower()
    assert time.monotonic() - began < 30


def test_out_uris_are_normalized_once_and_printed_as_used(cifar_root: Path, s3_bucket: str) -> None:
    result = write(cifar_root, f"s3://{s3_bucket}//double/")
    assert f"to s3://{s3_bucket}/double\n" in result.output, result.output
    assert "index.json" in _bucket_files(s3_bucket, "double")
    # the same dataset under its other spellings: a rewrite needs --overwrite
    failed(run("write", "--source", f"cifar10:{cifar_root}", "--out", f"s3://{s3_bucket}/double"),
           "--overwrite")
    assert "OK" in ok("verify", f"s3://{s3_bucket}/double//").output


def test_a_server_date_header_sent_twice_or_without_a_zone_is_read() -> None:
    from writer.publish.store import _server_time

    def reply(date: str) -> dict:
        return {"ResponseMetadata": {"HTTPHeaders": {"date": date}}}

    one = _server_time(reply("Mon, 07 Dec 2026 10:00:00 GMT"))
    assert _server_time(reply("Mon, 07 Dec 2026 10:00:00 GMT, Mon, 07 Dec 2026 10:00:00 GMT")) == one
    assert _server_time(reply("Mon, 07 Dec 2026 10:00:00")) == one
    assert _server_time(reply("garbage")).tzinfo is not None  # this machine's clock, with a zone


def test_a_failed_claim_step_releases_its_claim_and_says_so_in_one_line(
        cifar_root: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from writer.publish.store import Destination

    real = Destination._remote_claim

    def broken(self: Destination) -> tuple:  # fails once this write's claim object is up
        if self.claimed:
            raise TypeError("can't subtract offset-naive and offset-aware datetimes")
        return real(self)

    with monkeypatch.context() as patched:
        patched.setattr(Destination, "_remote_claim", broken)
        result = run("write", "--source", f"cifar10:{cifar_root}", "--out", f"s3://{s3_bucket}/c")
    failed(result, "the claim step failed")
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert _bucket_keys(s3_bucket) == []  # no claim object left to refuse the next writer
    write(cifar_root, f"s3://{s3_bucket}/c")  # at once, not after 60 s
