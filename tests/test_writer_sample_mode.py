"""cutmix-writer write --mode sample: a λ and a box per image, per-row provenance, verified."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_writer_cli import failed, files, ok, read_samples, run, write
from test_writer_verify import _rewrite

from cutmix_algo.sampling import (
    EXACT_SUM_ROWS,
    Box,
    kept_fraction,
    label_lam,
    sample_row_params,
    writer_batch_generator,
)
from writer.pipeline.premix import epoch_order
from writer.pipeline.sources import load_cifar10


@pytest.fixture
def sampled(cifar_root: Path, tmp_path: Path) -> Path:
    out = tmp_path / "sample"
    write(cifar_root, out, "--mode", "sample", "--epochs", 2, "--seed", 4, "--size-limit", 300_000)
    return out


def test_every_row_is_the_cutmix_of_its_two_sources_with_its_own_box(sampled: Path,
                                                                     cifar_root: Path) -> None:
    source = load_cifar10(cifar_root, "train")
    samples = read_samples(sampled)
    assert len(samples) == 200
    for position, s in enumerate(samples):
        epoch, rest = divmod(position, 100)
        batch, row = divmod(rest, 16)
        n = min(16, 100 - batch * 16)
        # The row's draws are the writer's (seed, epoch, batch) key through sample_row_params.
        params = sample_row_params(n, 32, 32, 1.0, writer_batch_generator(4, epoch, batch))
        order = epoch_order(4, epoch, 100)[batch * 16:batch * 16 + n]
        a, b = int(s["index_a"]), int(s["index_b"])
        assert (a, b) == (order[row], order[int(params.perm[row])])
        box = Box(*(int(v) for v in s["box"].tolist()))
        assert box == Box(*params.boxes[row].tolist()) and int(s["epoch"]) == epoch
        expected = source.images[a].copy()
        expected[box.top:box.bottom, box.left:box.right] = source.images[b][box.top:box.bottom,
                                                                            box.left:box.right]
        np.testing.assert_array_equal(s["image"], expected)
        lam = float(s["lam"])
        own = 1.0 if a == b else kept_fraction(box, 32, 32)  # a row pasted from itself keeps all
        assert lam == label_lam(own, EXACT_SUM_ROWS)
        label = np.zeros(10, np.float32)
        label[source.labels[a]] += np.float32(lam)
        label[source.labels[b]] += np.float32(1 - lam)
        np.testing.assert_array_equal(s["label"], label)
        assert s["label"].sum(dtype=np.float32) == 1.0
    for start in range(0, 100, 16):  # rows of one batch have their own boxes and λ
        batch = samples[start:start + 16]
        assert len({tuple(s["box"].tolist()) for s in batch}) > 1
        assert len({float(s["lam"]) for s in batch}) > 1
    manifest = json.loads((sampled / "cutmix_manifest.json").read_text())
    assert manifest["args"]["mode"] == "sample"
    assert manifest["generator_keys"]["batch"].startswith("sample_row_params(")


def test_sample_mode_bytes_do_not_depend_on_workers_and_batch_mode_records_no_mode(
        cifar_root: Path, sampled: Path, tmp_path: Path) -> None:
    write(cifar_root, tmp_path / "two", "--mode", "sample", "--epochs", 2, "--seed", 4,
          "--size-limit", 300_000, "--workers", 2)
    assert files(tmp_path / "two") == files(sampled)
    write(cifar_root, tmp_path / "batch", "--seed", 4)
    assert "mode" not in json.loads((tmp_path / "batch" / "cutmix_manifest.json").read_text())["args"]


def test_verify_recomputes_sample_mode_and_catches_a_tampered_row(sampled: Path, cifar_root: Path,
                                                                  tmp_path: Path) -> None:
    result = ok("verify", sampled, "--source", f"cifar10:{cifar_root}")
    assert "200 of 200 samples recomputed" in result.output
    assert "200 of 200" in ok("verify", sampled).output  # provenance and labels, no source
    assert "drew 4 samples" in ok("preview", sampled, "--out", tmp_path / "grid.png", "--n", 4).output
    row = read_samples(sampled)[70]
    box = row["box"].copy()
    box[2] = box[0] if box[2] != box[0] else box[0] + 1  # another box for this one row
    _rewrite(sampled, tmp_path / "box", 70, "box", box)
    result = run("verify", tmp_path / "box")
    failed(result, "sample 70")
    assert "box" in result.output
    image = np.array(row["image"])
    image[5, 5, 1] ^= 0xFF
    _rewrite(sampled, tmp_path / "pixels", 70, "image", image)
    result = run("verify", tmp_path / "pixels", "--source", f"cifar10:{cifar_root}")
    failed(result, "sample 70")
    assert "image" in result.output


def test_a_bad_mode_is_a_click_error(cifar_root: Path, tmp_path: Path) -> None:
    failed(run("write", "--source", f"cifar10:{cifar_root}", "--out", tmp_path / "out",
               "--mode", "pixel"), "--mode")
    assert not (tmp_path / "out").exists()


def test_a_manifest_with_an_unknown_mode_is_refused(sampled: Path) -> None:
    path = sampled / "cutmix_manifest.json"
    manifest = json.loads(path.read_text())
    manifest["args"]["mode"] = "elem"
    path.write_text(json.dumps(manifest))
    failed(run("verify", sampled), "args.mode")
