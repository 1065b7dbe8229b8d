"""A dataset is untrusted input: crafted indexes and manifests never make a reader leave it.

Each test writes a real tiny dataset with the CLI, then tampers with it as an attacker sharing
a bucket could: file names that climb out (``../``), a manifest naming a malicious CIFAR
pickle, a shard with garbage but matching hashes, counts edited in the manifest.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
from conftest import write_cifar10
from streaming.base.hashing import get_hash
from streaming.base.util import clean_stale_shared_memory
from test_writer_cli import failed, ok, run, write

from writer import PremixedDataset
from writer.format.checks import DatasetError, check_index, check_layout
from writer.format.names import UnsafeNameError, check_member, member_path
from writer.publish.merge import MergeError, merge_groups


def _climb(target: Path) -> str:
    """A relative name that, joined to any temporary folder, lands on ``target``."""
    return "../" * 16 + str(target).lstrip("/")


def _edit_json(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.fixture
def zstd(cifar_root: Path, tmp_path: Path) -> Path:
    out = tmp_path / "zstd"
    write(cifar_root, out, "--compression", "zstd", "--epochs", 2)
    return out


@pytest.mark.parametrize("name", ["../x.mds", "/tmp/x.mds", "a/b.mds", "group-0/../x", "..",
                                  ".hidden", "", "c:\\x", "group-x/shard.mds", "a\\..\\b", 5])
def test_check_member_refuses_anything_but_a_plain_name(name: object) -> None:
    with pytest.raises(UnsafeNameError, match="not a plain file name"):
        check_member(name, "index.json shard 0")


def test_check_member_accepts_what_the_writer_and_merge_write(tmp_path: Path) -> None:
    for name in ("shard.00000.mds", "shard.00012.mds.zstd", "group-3/shard.00000.mds", "index.json"):
        assert check_member(name, "x") == name
    (tmp_path / "link").symlink_to("/etc/hostname")
    with pytest.raises(UnsafeNameError, match="resolves outside"):
        member_path(str(tmp_path), "link", "index.json shard 0")


@pytest.mark.parametrize("command", ["verify", "preview"])
def test_an_index_climbing_out_is_refused_and_nothing_is_written_there(
        zstd: Path, tmp_path: Path, command: str) -> None:
    evil = tmp_path / "evil" / "evil.sh"
    _edit_json(zstd / "index.json",
               lambda index: index["shards"][0]["raw_data"].update(basename=_climb(evil)))
    extra = ["--out", tmp_path / "grid.png"] if command == "preview" else []
    result = run(command, zstd, *extra)
    failed(result, "raw_data.basename")
    assert "not a plain file name" in result.output
    assert not evil.exists() and not evil.parent.exists()
    assert not (tmp_path / "grid.png").exists()


def test_a_bucket_index_climbing_out_is_refused_before_any_download(
        cifar_root: Path, tmp_path: Path, s3_bucket: str) -> None:
    import boto3

    local = tmp_path / "local"
    write(cifar_root, local)
    evil = tmp_path / "evil" / "evil.sh"
    _edit_json(local / "index.json",
               lambda index: index["shards"][0]["raw_data"].update(basename=_climb(evil)))
    client = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])
    for path in local.iterdir():
        client.put_object(Bucket=s3_bucket, Key=f"p/{path.name}", Body=path.read_bytes())
    # The object the crafted name points at exists, so a download would succeed.
    client.put_object(Bucket=s3_bucket, Key=f"p/{_climb(evil)}", Body=b"#!/bin/sh\n")
    result = run("verify", f"s3://{s3_bucket}/p")
    failed(result, "not a plain file name")
    assert not evil.exists()


def test_reader_refuses_an_index_climbing_out(cifar_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(cifar_root, out)
    _edit_json(out / "index.json",
               lambda index: index["shards"][0]["raw_data"].update(basename="../../etc/passwd"))
    clean_stale_shared_memory()
    with pytest.raises(ValueError, match="not a plain file name"):
        PremixedDataset(remote=str(out), local=str(tmp_path / "cache"), batch_size=4)
    assert not (tmp_path / "etc").exists()


class _Plant:
    """Unpickling this creates a file: what a malicious ``batches.meta`` could do, harmlessly."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.marker, "w"))


def test_verify_without_source_never_unpickles_what_the_manifest_names(
        cifar_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(cifar_root, out)
    planted = tmp_path / "planted" / "cifar-10-batches-py"
    planted.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    for name in ["batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]:
        (planted / name).write_bytes(pickle.dumps(_Plant(marker)))
    spec = f"cifar10:{planted.parent}"
    _edit_json(out / "cutmix_manifest.json",
               lambda m: m["args"].update(source=spec, source_resolved=spec))
    result = ok("verify", out, "--no-progress")
    assert not marker.exists(), "verify unpickled a file the dataset named"
    assert "pixels not recomputed" in result.output and "--source" in result.output
    ok("preview", out, "--out", tmp_path / "grid.png")
    assert not marker.exists()


def test_a_crafted_shard_with_matching_hashes_is_a_one_line_preview_error(
        cifar_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(cifar_root, out)
    shard = out / "shard.00000.mds"
    data = bytearray(shard.read_bytes())
    data[4:4 + 4 * 20] = b"\xff" * 80  # the first offsets now point far past the end
    shard.write_bytes(bytes(data))

    def rehash(index: dict) -> None:
        raw = index["shards"][0]["raw_data"]
        raw["hashes"] = {algo: get_hash(algo, bytes(data)) for algo in raw["hashes"]}

    _edit_json(out / "index.json", rehash)
    result = run("preview", out, "--out", tmp_path / "grid.png", "--n", 100)
    failed(result, "shard.00000.mds")
    assert not (tmp_path / "grid.png").exists()
    failed(run("verify", out, "--no-progress"), "sample 0")


@pytest.mark.parametrize(("edit", "says"), [
    (lambda m: m["args"].update(batch_size=0), "args.batch_size must be an integer >= 1"),
    (lambda m: m["args"].update(batch_size="16"), "args.batch_size"),
    (lambda m: m["args"].update(epochs=1), "num_samples is 200"),
    (lambda m: (m["args"].update(epochs=1), m.update(num_samples=100, batches_per_epoch=7)),
     "index.json lists 200 samples"),
    (lambda m: m["args"].update(batch_size=20), "batches_per_epoch is 7"),
    (lambda m: m["source"].update(num_images=50), "num_samples is 200"),
    (lambda m: m.update(num_classes=9), "num_classes"),
    (lambda m: m["columns"].update(label="pkl"), "columns"),
    (lambda m: m["args"].update(encoding="pickle"), "args.encoding"),
    (lambda m: m["args"].update(seed=-1), "args.seed"),
])
def test_a_manifest_disagreeing_with_its_index_is_one_line(cifar_root: Path, tmp_path: Path,
                                                           edit, says: str) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    write(cifar_root, out, "--epochs", 2)
    _edit_json(out / "cutmix_manifest.json", edit)
    failed(run("verify", out, "--no-progress"), says)
    failed(run("preview", out, "--out", tmp_path / "grid.png"), says)
    clean_stale_shared_memory()
    with pytest.raises(DatasetError, match="cutmix_manifest.json|index.json"):
        PremixedDataset(local=str(out), batch_size=4)


def test_an_index_with_pickled_columns_is_refused(cifar_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(cifar_root, out)
    index = json.loads((out / "index.json").read_text())
    manifest = json.loads((out / "cutmix_manifest.json").read_text())
    index["shards"][0]["column_encodings"] = ["pkl"] * len(index["shards"][0]["column_names"])
    with pytest.raises(DatasetError, match="columns are not the manifest's"):
        check_layout(manifest, index)


def test_merge_refuses_a_group_whose_index_climbs_out(cifar_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "groups"
    for group in (0, 1):
        write(cifar_root, out, "--num-groups", 2, "--group", group)
    _edit_json(out / "group-1" / "index.json",
               lambda index: index["shards"][0]["raw_data"].update(basename="../group-0/x.mds"))
    with pytest.raises(MergeError, match="group-1.*not a plain file name"):
        merge_groups(str(out))
    assert not (out / "index.json").exists()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real dataset, written once; each test below tampers with its own copy."""
    root = write_cifar10(tmp_path_factory.mktemp("cifar"))
    out = tmp_path_factory.mktemp("written") / "out"
    write(root, out)
    return out


def _refused_everywhere(out: Path, tmp_path: Path, says: str) -> None:
    """verify, preview and PremixedDataset each refuse ``out`` in one line naming shard 0 and
    saying ``says``."""
    for result in (run("verify", out, "--no-progress"),
                   run("preview", out, "--out", tmp_path / "grid.png")):
        failed(result, says)
        assert "index.json shard 0" in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "grid.png").exists()
    clean_stale_shared_memory()
    with pytest.raises(DatasetError, match=r"index\.json shard 0.*" + re.escape(says)):
        PremixedDataset(local=str(out), batch_size=4)


# Every key streaming's MDSReader.from_json reads or passes to MDSReader.__init__ (format
# aside: an entry without it is no MDS entry at all).
@pytest.mark.parametrize("key", ["column_encodings", "column_names", "column_sizes", "compression",
                                 "hashes", "raw_data", "samples", "size_limit", "version", "zip_data"])
def test_an_index_entry_missing_a_key_the_mds_reader_needs_is_one_line(
        written: Path, tmp_path: Path, key: str) -> None:
    out = tmp_path / "out"
    shutil.copytree(written, out)
    _edit_json(out / "index.json", lambda index: index["shards"][0].pop(key))
    _refused_everywhere(out, tmp_path, f"has no {key!r}, a key streaming's MDS reader needs")


@pytest.mark.parametrize(("edit", "says"), [
    (lambda s: s.update(column_sizes=None), "column_sizes must be a list of 7"),
    (lambda s: s.update(column_sizes=s["column_sizes"][:3]), "column_sizes must be a list of 7"),
    (lambda s: s["column_sizes"].__setitem__(0, True), "column_sizes of column 'box' must be"),
    (lambda s: s["column_sizes"].__setitem__(0, "16"), "column_sizes of column 'box' must be"),
    (lambda s: s["column_sizes"].__setitem__(0, -16), "column_sizes of column 'box' must be"),
    (lambda s: s["column_sizes"].__setitem__(2, 3000), "column_sizes of column image is 3000"),
    (lambda s: s.update(column_sizes=[None] * 7), "column_sizes of column box is None"),
    (lambda s: s["column_names"].__setitem__(0, ["box"]), "column_names must be a non-empty list"),
    (lambda s: s["column_names"].__setitem__(1, "box"), "the names distinct"),
    (lambda s: s.update(column_encodings="int32"), "column_encodings must be a non-empty list"),
    (lambda s: s.update(size_limit="64mb"), "size_limit must be a non-negative integer or null"),
    (lambda s: s.update(size_limit=-1), "size_limit must be a non-negative integer or null"),
    (lambda s: s.update(version=3), "version must be 2"),
    (lambda s: s.update(version="2"), "version must be 2"),
    (lambda s: s.update(hashes="sha1"), "hashes must be a list of hash names"),
    (lambda s: s.update(hashes=[1]), "hashes must be a list of hash names"),
    (lambda s: s.update(compression=5), "compression must be a string or null"),
    (lambda s: s.update(extra=1), "has an unknown key 'extra'"),
    (lambda s: s["raw_data"].update(extra=1), "raw_data has an unknown key 'extra'"),
    (lambda s: s["raw_data"].pop("hashes"), "raw_data has no 'hashes'"),
    (lambda s: s["raw_data"].update(hashes={"sha1": 5}), "raw_data.hashes must be an object"),
])
def test_an_index_entry_of_the_wrong_type_is_one_line(written: Path, tmp_path: Path, edit,
                                                      says: str) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    shutil.copytree(written, out)
    _edit_json(out / "index.json", lambda index: edit(index["shards"][0]))
    _refused_everywhere(out, tmp_path, says)


def test_the_written_index_passes_the_entry_checks(written: Path) -> None:
    index = json.loads((written / "index.json").read_text())
    assert check_index(index) == index["shards"]


# -- the one open path: special files, deep JSON, manifest types ---------------------------------


def _refused_everywhere(out: Path, tmp_path: Path, says: str) -> None:
    """verify, preview and PremixedDataset refuse ``out`` in one line saying ``says``; none hangs."""
    failed(run("verify", out, "--no-progress"), says)
    failed(run("preview", out, "--out", tmp_path / "grid.png"), says)
    clean_stale_shared_memory()
    with pytest.raises(DatasetError, match=re.escape(says)):
        PremixedDataset(local=str(out), batch_size=4)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("member", ["index.json", "shard.00000.mds"])
def test_a_fifo_in_a_dataset_is_refused_without_blocking(cifar_root: Path, tmp_path: Path,
                                                         member: str) -> None:
    out = tmp_path / "out"
    write(cifar_root, out)
    (out / member).unlink()
    os.mkfifo(out / member)  # opening a FIFO for reading waits for a writer: forever
    says = "not a regular file" if member == "index.json" else "shard.00000.mds"
    failed(run("verify", out, "--no-progress"), says)
    if member == "index.json":
        _refused_everywhere(out, tmp_path, says)


def test_an_index_nested_too_deep_is_a_dataset_error_not_a_recursion_error(cifar_root: Path,
                                                                          tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(cifar_root, out)
    (out / "index.json").write_text("[" * 100_000 + "]" * 100_000)
    _refused_everywhere(out, tmp_path, "nested more than 64 levels deep")


@pytest.mark.parametrize(("key", "value", "says"), [
    ("alpha", "1.0", "args.alpha must be a JSON number"),
    ("source", 5, "args.source must be a string"),
    ("split", "validation", "args.split must be one of"),
    ("image_size", "32", "args.image_size must be an integer"),
    ("mds", {"image_column": 3}, "args.mds is not what cutmix-writer records"),
])
def test_every_recorded_argument_has_its_type_checked(cifar_root: Path, tmp_path: Path, key: str,
                                                      value: object, says: str) -> None:
    out = tmp_path / "out"
    write(cifar_root, out)
    _edit_json(out / "cutmix_manifest.json", lambda m: m["args"].__setitem__(key, value))
    _refused_everywhere(out, tmp_path, says)
