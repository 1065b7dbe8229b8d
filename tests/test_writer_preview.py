"""cutmix-writer preview: samples spread over epochs and batches, base and patch classes named."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from test_writer_cli import failed, ok, read_samples, run, write

from writer.audit.preview import preview_positions, render_preview
from writer.pipeline.sources import load_cifar10


def test_positions_are_spread_over_the_whole_dataset() -> None:
    assert preview_positions(200, 4) == [25, 75, 125, 175]
    assert preview_positions(3, 16) == [0, 1, 2]
    assert preview_positions(1, 1) == [0]


def test_tiles_come_from_every_epoch_and_different_batches(cifar_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(cifar_root, out, "--epochs", 2, "--size-limit", 300_000)
    tiles = render_preview(str(out), str(tmp_path / "grid.png"), n=6)
    assert len(tiles) == 6
    assert {t.epoch for t in tiles} == {0, 1}
    assert len({(t.epoch, t.batch) for t in tiles}) == 6  # six batches, six boxes
    assert len({t.box for t in tiles}) > 1
    source = load_cifar10(cifar_root, "train")
    samples = read_samples(out)
    for tile in tiles:
        sample = samples[tile.position]
        assert (tile.index_a, tile.index_b) == (int(sample["index_a"]), int(sample["index_b"]))
        assert tile.base_class == source.class_names[source.labels[tile.index_a]]
        same = source.labels[tile.index_a] == source.labels[tile.index_b]
        if tile.lam < 1 and not same:
            assert tile.patch_class == source.class_names[source.labels[tile.index_b]]
        assert tile.lam == pytest.approx(float(sample["lam"]))
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.format == "PNG"


def test_preview_reads_a_group_and_says_how_many_it_drew(cifar_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "groups"
    write(cifar_root, out, "--epochs", 2, "--num-groups", 2, "--group", 1)
    tiles = render_preview(str(out / "group-1"), str(tmp_path / "grid.png"), n=4)
    assert {t.epoch for t in tiles} == {1}  # group 1 holds the second epoch's batches
    result = ok("preview", out / "group-1", "--out", tmp_path / "cli.png", "--n", 4)
    assert "drew 4 samples" in result.output


def test_class_names_with_dollars_are_drawn_as_text(cifar_root: Path, tmp_path: Path) -> None:
    import json

    out = tmp_path / "out"
    write(cifar_root, out)
    manifest = json.loads((out / "cutmix_manifest.json").read_text())
    manifest["class_names"] = ["$\\frac{$" + name for name in manifest["class_names"]]
    (out / "cutmix_manifest.json").write_text(json.dumps(manifest))
    ok("preview", out, "--out", tmp_path / "grid.png", "--n", 4)
    failed(run("preview", out, "--out", tmp_path / "missing" / "grid.png"), "--out")


def test_a_preview_into_the_dataset_or_not_named_png_is_refused(cifar_root: Path, tmp_path: Path) -> None:
    """--out index.json overwrote the dataset's index with a PNG, and exited 0."""
    out = tmp_path / "out"
    write(cifar_root, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for png in (out / "index.json", out / "grid.png", out / "sub" / ".." / "x.png", tmp_path / "grid.jpg"):
        failed(run("preview", out, "--out", png), "--out")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not (tmp_path / "grid.jpg").exists()
    result = run("verify", out, "--sample", "nan")  # click's FloatRange lets NaN through
    failed(result, "--sample")


def test_a_missing_dataset_is_a_dataset_not_found_error(cifar_root: Path, tmp_path: Path) -> None:
    from writer.errors import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError, match="cutmix_manifest.json|index.json"):
        render_preview(str(tmp_path / "nothing"), str(tmp_path / "grid.png"))
    failed(run("preview", tmp_path / "nothing", "--out", tmp_path / "grid.png"), "index.json")
