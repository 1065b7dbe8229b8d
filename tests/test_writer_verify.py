"""cutmix-writer verify: passes on a good dataset, names the first bad shard or sample."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import write_cifar10
from test_writer_cli import failed, ok, read_samples, run, write


@pytest.fixture
def dataset(cifar_root: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    write(cifar_root, out, "--epochs", 2, "--size-limit", 300_000)
    return out


def _rewrite(out: Path, tampered: Path, position: int, key: str, value: object) -> None:
    """Copy ``out`` with one sample's column changed, through MDSWriter, so hashes stay valid."""
    from streaming import MDSWriter

    manifest = json.loads((out / "cutmix_manifest.json").read_text())
    samples = read_samples(out)
    samples[position][key] = value
    with MDSWriter(out=str(tampered), columns=manifest["columns"], hashes=["sha1", "xxh64"],
                   size_limit=300_000) as writer:
        for sample in samples:
            writer.write(sample)
    shutil.copy(out / "cutmix_manifest.json", tampered / "cutmix_manifest.json")


def test_verify_passes_on_a_good_dataset(dataset: Path, cifar_root: Path) -> None:
    result = ok("verify", dataset, "--source", f"cifar10:{cifar_root}", "--split", "train")
    assert "200 of 200" in result.output
    assert "25 of 200" in ok("verify", dataset, "--sample", 0.125).output


def test_a_flipped_shard_byte_names_the_shard(dataset: Path) -> None:
    shard = dataset / "shard.00001.mds"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    failed(run("verify", dataset), "shard.00001.mds")


def test_a_missing_shard_is_named(dataset: Path) -> None:
    (dataset / "shard.00000.mds").unlink()
    failed(run("verify", dataset), "shard.00000.mds")


def test_a_wrong_lam_names_the_sample(dataset: Path, tmp_path: Path) -> None:
    _rewrite(dataset, tmp_path / "bad", 137, "lam", 0.5)
    result = run("verify", tmp_path / "bad")
    failed(result, "sample 137")
    assert "lam" in result.output


def test_a_box_outside_the_image_names_the_sample(dataset: Path, tmp_path: Path) -> None:
    _rewrite(dataset, tmp_path / "bad", 9, "box", np.array([0, 0, 99, 99], dtype=np.int32))
    result = run("verify", tmp_path / "bad")
    failed(result, "sample 9 (epoch 0, batch 0, row 9; shard shard.00000.mds)")
    assert "box [0, 0, 99, 99] is outside the 32 x 32 image" in result.output


def test_tampered_pixels_name_the_sample(dataset: Path, tmp_path: Path, cifar_root: Path) -> None:
    image = np.array(read_samples(dataset)[41]["image"])
    image[0, 0, 0] ^= 0xFF
    _rewrite(dataset, tmp_path / "bad", 41, "image", image)
    result = run("verify", tmp_path / "bad", "--source", f"cifar10:{cifar_root}")
    failed(result, "sample 41")
    assert "image" in result.output


def test_another_source_is_refused_by_fingerprint(dataset: Path, tmp_path: Path) -> None:
    other = write_cifar10(tmp_path / "other", seed=1)
    failed(run("verify", dataset, "--source", f"cifar10:{other}", "--split", "train"),
           "fingerprint")


def test_compressed_png_dataset_verifies_and_catches_corruption(cifar_root: Path,
                                                                tmp_path: Path) -> None:
    out = tmp_path / "zstd"
    write(cifar_root, out, "--encoding", "png", "--compression", "zstd")
    ok("verify", out)
    shard = out / "shard.00000.mds.zstd"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0x40
    shard.write_bytes(bytes(data))
    failed(run("verify", out), "shard.00000.mds.zstd")


@pytest.mark.parametrize("fraction", ["0", "1.5"])
def test_bad_sample_fraction_is_a_click_error(dataset: Path, fraction: str) -> None:
    failed(run("verify", dataset, "--sample", fraction), "--sample")


def test_verify_without_a_dataset_is_a_click_error(tmp_path: Path, cifar_root: Path) -> None:
    failed(run("verify", tmp_path, "--source", f"cifar10:{cifar_root}", "--split", "train"),
           "cutmix_manifest.json")


def test_progress_bars_count_shards_and_samples(dataset: Path) -> None:
    shown = ok("verify", dataset, "--sample", 0.5).output
    assert "verify shards" in shown and "3/3" in shown
    assert "verify samples" in shown and "100/100" in shown
    quiet = ok("verify", dataset, "--sample", 0.5, "--no-progress").output
    assert "verify shards" not in quiet and "verify samples" not in quiet
    assert quiet.startswith("OK: 3 shards")


def test_a_label_edited_in_place_is_caught_without_the_source(dataset: Path, tmp_path: Path) -> None:
    label = np.array(read_samples(dataset)[137]["label"])
    _rewrite(dataset, tmp_path / "bad", 137, "label", np.roll(label, 1))  # same weights, other classes
    failed(run("verify", tmp_path / "bad", "--no-progress"), "sample 137")


def test_a_label_not_weighted_by_lam_is_caught_without_the_source(dataset: Path, tmp_path: Path) -> None:
    label = np.zeros(10, dtype=np.float32)
    label[[2, 3]] = 0.5
    _rewrite(dataset, tmp_path / "bad", 3, "label", label)
    result = run("verify", tmp_path / "bad", "--no-progress")
    failed(result, "sample 3")
    assert "label" in result.output


def test_verify_from_another_directory_needs_no_source_and_suggests_the_recorded_one(
        cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(cifar_root.parent)
    ok("write", "--source", f"cifar10:{cifar_root.name}", "--out", "rel", "--batch-size", 16)
    manifest = json.loads((tmp_path / "rel" / "cutmix_manifest.json").read_text())
    assert manifest["args"]["source"] == f"cifar10:{cifar_root.name}"
    assert manifest["args"]["source_resolved"] == f"cifar10:{cifar_root}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = ok("verify", tmp_path / "rel", "--no-progress")
    assert "100 of 100 samples match the seed's schedule" in result.output
    assert f"--source cifar10:{cifar_root}" in result.output
    recomputed = ok("verify", tmp_path / "rel", "--no-progress", "--source", f"cifar10:{cifar_root}")
    assert "100 of 100 samples recomputed from the source and equal" in recomputed.output
    shutil.move(cifar_root, tmp_path / "moved")
    moved = ok("verify", tmp_path / "rel", "--no-progress").output
    assert f"at {cifar_root}, which does not exist here" in moved and "--source cifar10:DIR" in moved


def test_split_without_a_source_is_a_usage_error(dataset: Path) -> None:
    failed(run("verify", dataset, "--split", "test"), "--split")


def test_digits_names_no_path_so_verify_recomputes_it_unasked(tmp_path: Path) -> None:
    out = tmp_path / "digits"
    ok("write", "--source", "digits", "--out", out, "--batch-size", 64)
    result = ok("verify", out, "--sample", 0.05, "--no-progress")
    assert "72 of 1437 samples recomputed from the source and equal" in result.output


def test_a_merged_root_is_verified_against_its_groups(cifar_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "groups"
    for group in (0, 1):
        write(cifar_root, out, "--epochs", 2, "--num-groups", 2, "--group", group)
    ok("merge", out)
    ok("verify", out, "--no-progress")
    manifest = out / "group-1" / "cutmix_manifest.json"
    edited = json.loads(manifest.read_text())
    edited["args"]["seed"] = 5
    manifest.write_text(json.dumps(edited))
    failed(run("verify", out, "--no-progress"), "group-1/cutmix_manifest.json disagrees")
