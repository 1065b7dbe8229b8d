"""cutmix-writer write/merge/preview: what lands in OUT, byte identity, safety, and flag errors."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from cutmix_algo.sampling import EXACT_SUM_ROWS, Box, kept_fraction, label_lam
from writer.cli import main
from writer.pipeline.sources import load_cifar10


def run(*args: object) -> Result:
    """Invoke the CLI in-process, quietly, with a single worker unless told otherwise."""
    argv = [str(a) for a in args]
    if argv[0] == "write":
        if "--workers" not in argv:
            argv += ["--workers", "1"]
        argv.append("--no-progress")
    return CliRunner().invoke(main, argv)


def ok(*args: object) -> Result:
    result = run(*args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def files(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` by relative path (the dataset's bytes)."""
    return {
        str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
    }


def read_samples(out: Path, raw: bool = False) -> list:
    """The dataset's samples in order, decoded (or their raw MDS bytes), read shard by shard."""
    from streaming.base.format import reader_from_json

    index = json.loads((out / "index.json").read_text())
    rows = []
    for info in index["shards"]:
        reader = reader_from_json(str(out), "", info)
        for i in range(info["samples"]):
            rows.append(reader.get_sample_data(i) if raw else reader.get_item(i))
    return rows


def failed(result: Result, flag: str) -> None:
    """A clean click failure: non-zero exit, the flag named, no traceback."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert flag in result.output, result.output
    assert "Traceback" not in result.output


def write(src: Path, out: Path, *extra: object) -> Result:
    return ok("write", "--source", f"cifar10:{src}", "--out", out, "--batch-size", 16, *extra)


def test_samples_are_cutmix_of_their_sources_one_box_per_batch(cifar_root: Path,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(cifar_root, out, "--epochs", 2, "--seed", 7)
    source = load_cifar10(cifar_root, "train")
    samples = read_samples(out)
    assert len(samples) == 200
    for epoch in range(2):
        epoch_rows = samples[epoch * 100:(epoch + 1) * 100]
        assert sorted(int(s["index_a"]) for s in epoch_rows) == list(range(100))
        assert {int(s["epoch"]) for s in epoch_rows} == {epoch}
        for start in range(0, 100, 16):
            batch = epoch_rows[start:start + 16]
            assert len({(float(s["lam"]), tuple(s["box"].tolist())) for s in batch}) == 1
    for s in samples:
        a, b, lam = int(s["index_a"]), int(s["index_b"]), float(s["lam"])
        top, left, bottom, right = s["box"].tolist()
        expected = source.images[a].copy()
        expected[top:bottom, left:right] = source.images[b][top:bottom, left:right]
        np.testing.assert_array_equal(s["image"], expected)
        assert lam == label_lam(kept_fraction(Box(top, left, bottom, right), 32, 32), EXACT_SUM_ROWS)
        label = np.zeros(10)
        label[source.labels[a]] += lam
        label[source.labels[b]] += 1 - lam
        np.testing.assert_allclose(s["label"], label, atol=1e-6)
        assert s["label"].dtype == np.float32 and s["box"].dtype == np.int32
    manifest = json.loads((out / "cutmix_manifest.json").read_text())
    assert manifest["num_classes"] == 10 and manifest["class_names"][0] == "airplane"
    assert manifest["source"]["fingerprint"] == source.fingerprint()
    assert manifest["args"]["seed"] == 7 and manifest["tool_version"]


def test_bytes_identical_across_workers_and_reruns_and_seed_matters(cifar_root: Path,
                                                                   tmp_path: Path) -> None:
    # A small size limit gives several shards, so shard boundaries are compared too.
    common = ("--epochs", 3, "--size-limit", 200_000)
    write(cifar_root, tmp_path / "w1", *common)
    write(cifar_root, tmp_path / "w2", *common, "--workers", 2)
    write(cifar_root, tmp_path / "again", *common)
    write(cifar_root, tmp_path / "seed1", *common, "--seed", 1)
    reference = files(tmp_path / "w1")
    assert len([n for n in reference if n.endswith(".mds")]) > 1
    assert files(tmp_path / "w2") == reference
    assert files(tmp_path / "again") == reference
    other = files(tmp_path / "seed1")
    assert other.keys() == reference.keys()
    assert other["shard.00000.mds"] != reference["shard.00000.mds"]


def test_png_encoding_round_trips_to_the_raw_pixels(cifar_root: Path, tmp_path: Path) -> None:
    write(cifar_root, tmp_path / "raw")
    write(cifar_root, tmp_path / "png", "--encoding", "png")
    raw, png = read_samples(tmp_path / "raw"), read_samples(tmp_path / "png")
    for a, b in zip(raw, png, strict=True):
        assert isinstance(b["image"], Image.Image)
        np.testing.assert_array_equal(np.asarray(b["image"]), a["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


def test_non_empty_out_is_refused_untouched_and_overwrite_replaces(cifar_root: Path,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    result = run("write", "--source", f"cifar10:{cifar_root}", "--out", out)
    failed(result, "--overwrite")
    assert files(out) == {"precious.txt": b"keep me"}
    # --overwrite replaces only what cutmix-writer wrote: the user's file is named, not deleted.
    failed(run("write", "--source", f"cifar10:{cifar_root}", "--out", out, "--overwrite"),
           "precious.txt")
    assert files(out) == {"precious.txt": b"keep me"}
    write(cifar_root, tmp_path / "clean")
    write(cifar_root, tmp_path / "ours", "--seed", 3, "--size-limit", 100_000)
    write(cifar_root, tmp_path / "ours", "--overwrite")
    assert files(tmp_path / "ours") == files(tmp_path / "clean")


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (("--alpha", "-1"), "--alpha"),
        (("--alpha", "nan"), "--alpha"),
        (("--batch-size", "0"), "--batch-size"),
        (("--epochs", "0"), "--epochs"),
        (("--workers", "0"), "--workers"),
        (("--num-groups", "2", "--group", "2"), "--group"),
        (("--num-groups", "2"), "--group"),
        (("--num-groups", "99", "--group", "0"), "--num-groups"),
        (("--compression", "lzma9"), "--compression"),
        (("--compression", "gz:9"), "--compression"),  # gzip headers hold the time
        (("--encoding", "webp"), "--encoding"),
        (("--seed", str(2**64)), "--seed"),  # derive_generator takes keys in [0, 2**64)
        (("--seed", "-1"), "--seed"),
        (("--epochs", str(2**31)), "--epochs"),  # the epoch column is int32
        (("--epochs", str(2**31), "--num-groups", "1000", "--group", "999"), "--epochs"),
        (("--num-classes", "10"), "--source"),  # mds: only
        (("--timeout", "0"), "--timeout"),
        (("--timeout", "nan"), "--timeout"),  # click's FloatRange lets NaN through
        (("--timeout", "inf"), "--timeout"),
        (("--alpha", "1e308"), "--alpha"),  # numpy's Beta gives 0 there: alpha 0 in silence
    ],
)
def test_bad_write_flags_are_click_errors(cifar_root: Path, tmp_path: Path, args: tuple,
                                          flag: str) -> None:
    out = tmp_path / "out"
    failed(run("write", "--source", f"cifar10:{cifar_root}", "--out", out, *args), flag)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("spec", ["cifar10:{missing}", "cifar100:/x", "imagefolder:{missing}"])
def test_bad_sources_are_click_errors(tmp_path: Path, spec: str) -> None:
    source = spec.format(missing=tmp_path / "nowhere")
    failed(run("write", "--source", source, "--out", tmp_path / "out"), "--source")


def test_malformed_cifar_meta_is_a_click_error(cifar_root: Path, tmp_path: Path) -> None:
    meta = cifar_root / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(pickle.dumps({"num_vis": 3072}))
    failed(run("write", "--source", f"cifar10:{cifar_root}", "--out", tmp_path / "out"), "label_names")


def test_unwritable_out_is_a_click_error(cifar_root: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    failed(run("write", "--source", f"cifar10:{cifar_root}", "--out", blocker / "out"), "cannot write")


def test_preview_to_a_missing_folder_is_a_click_error(cifar_root: Path, tmp_path: Path) -> None:
    write(cifar_root, tmp_path / "out")
    failed(run("preview", tmp_path / "out", "--out", tmp_path / "no" / "grid.png"), "--out")


def test_verify_with_a_foreign_manifest_is_a_click_error(cifar_root: Path, tmp_path: Path) -> None:
    write(cifar_root, tmp_path / "out")
    (tmp_path / "out" / "cutmix_manifest.json").write_text('{"x": 1}')
    failed(run("verify", tmp_path / "out"), "cutmix_manifest.json")


def test_two_groups_merged_equal_a_single_write(cifar_root: Path, tmp_path: Path) -> None:
    common = ("--epochs", 2, "--seed", 4)
    write(cifar_root, tmp_path / "single", *common)
    out = tmp_path / "groups"
    write(cifar_root, out, *common, "--num-groups", 2, "--group", 1)
    failed(run("merge", out), "group 0")
    write(cifar_root, out, *common, "--num-groups", 2, "--group", 0)
    ok("merge", out)
    assert read_samples(out, raw=True) == read_samples(tmp_path / "single", raw=True)
    assert (out / "cutmix_manifest.json").read_bytes() == (
        tmp_path / "single" / "cutmix_manifest.json").read_bytes()
    ok("verify", out)
    ok("verify", out / "group-1")  # a group alone checks against its share of the schedule
    ok("merge", out)  # merging again replaces the merged index
    assert read_samples(out, raw=True) == read_samples(tmp_path / "single", raw=True)


def test_preview_writes_a_png_grid(cifar_root: Path, tmp_path: Path) -> None:
    write(cifar_root, tmp_path / "out")
    ok("preview", tmp_path / "out", "--out", tmp_path / "grid.png", "--n", 6)
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.format == "PNG" and grid.size[0] > 100 and grid.size[1] > 100


def test_preview_without_a_manifest_is_a_click_error(cifar_root: Path, tmp_path: Path) -> None:
    write(cifar_root, tmp_path / "out")
    (tmp_path / "out" / "cutmix_manifest.json").unlink()
    failed(run("preview", tmp_path / "out", "--out", tmp_path / "grid.png"), "cutmix_manifest.json")
    assert not (tmp_path / "grid.png").exists()


def _listed_shards_exist(out: Path) -> bool:
    index = out / "index.json"
    if not index.exists():
        return True
    shards = json.loads(index.read_text())["shards"]
    return all((out / (s["zip_data"] or s["raw_data"])["basename"]).exists() for s in shards)


def test_sigkill_mid_write_leaves_no_index_and_a_rerun_resumes(cifar_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    args = ["--source", f"cifar10:{cifar_root}", "--batch-size", "16", "--epochs", "150",
            "--size-limit", "300000", "--workers", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "writer.cli", "write", "--out", str(out), *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    journal = out / ".cutmix-staging" / "journal.jsonl"
    deadline = time.monotonic() + 120
    try:
        while (not journal.exists() or journal.read_text().count("\n") < 3) and time.monotonic() < deadline:
            assert proc.poll() is None, "the writer finished before it could be killed"
            time.sleep(0.005)
        assert proc.poll() is None, "the writer finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "index.json").exists() and _listed_shards_exist(out)
    assert "resuming" in ok("write", "--out", out, *args).output  # OUT held no dataset: no --overwrite
    ok("write", "--out", tmp_path / "clean", *args)
    assert files(out) == files(tmp_path / "clean")


def test_the_largest_seed_and_epoch_write(cifar_root: Path, tmp_path: Path) -> None:
    # One batch at the very end of 2**31 - 1 epochs, seeded with 2**64 - 1.
    out = tmp_path / "out"
    epochs, batches = 2**31 - 1, 7  # 100 images in batches of 16
    total = epochs * batches
    write(cifar_root, out, "--epochs", epochs, "--seed", 2**64 - 1, "--num-groups", total,
          "--group", total - 1)
    [sample] = read_samples(out / f"group-{total - 1}")[:1]
    assert int(sample["epoch"]) == epochs - 1


def test_mds_source_with_soft_labels_is_refused_and_nothing_written(tmp_path: Path) -> None:
    from streaming import MDSWriter

    src = tmp_path / "soft"
    with MDSWriter(out=str(src), columns={"image": "ndarray:uint8", "label": "ndarray:float32:10"}) as w:
        for i in range(4):
            w.write({"image": np.zeros((8, 8, 3), np.uint8), "label": np.eye(10, dtype=np.float32)[i]})
    out = tmp_path / "out"
    result = run("write", "--source", f"mds:{src}", "--out", out)
    failed(result, "--source")
    assert "'ndarray:float32:10'" in result.output and "label" in result.output
    assert not out.exists()


def test_mds_source_columns_from_flags(tmp_path: Path) -> None:
    from streaming import MDSWriter

    src = tmp_path / "renamed"
    with MDSWriter(out=str(src), columns={"img": "png", "y": "int"}) as w:
        for i in range(6):
            w.write({"img": Image.fromarray(np.full((8, 8, 3), i, np.uint8)), "y": i % 3})
    failed(run("write", "--source", f"mds:{src}", "--out", tmp_path / "a"), "--image-column")
    ok("write", "--source", f"mds:{src}", "--out", tmp_path / "b", "--image-column", "img",
       "--label-column", "y", "--num-classes", 4, "--batch-size", 2)
    manifest = json.loads((tmp_path / "b" / "cutmix_manifest.json").read_text())
    assert manifest["num_classes"] == 4
    assert manifest["args"]["mds"] == {"image_column": "img", "label_column": "y", "num_classes": 4}
    # verify loads the source with the recorded columns and class count, and recomputes every pixel
    assert "recomputed from the source and equal" in ok("verify", tmp_path / "b", "--source", f"mds:{src}",
                                                       "--no-progress").output
    manifest["args"]["mds"]["num_classes"] = "4"  # an untrusted manifest's options are checked
    (tmp_path / "b" / "cutmix_manifest.json").write_text(json.dumps(manifest))
    assert "args.mds" in run("verify", tmp_path / "b", "--source", f"mds:{src}", "--no-progress").output


def test_a_group_write_into_a_whole_dataset_is_refused_and_leaves_it_readable(tmp_path: Path) -> None:
    """Only a merge's index (group-N/ shards) is removed by a group write, never a whole dataset's."""
    out = tmp_path / "whole"
    args = ("--source", "digits", "--split", "test", "--batch-size", 50, "--workers", 1, "--no-progress")
    ok("write", "--out", out, *args)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = run("write", "--out", out, *args, "--num-groups", 2, "--group", 0)
    failed(result, "without --num-groups")
    assert "shard.00000.mds" in result.output and "Traceback" not in result.output
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not (out / "group-0").exists()
    ok("verify", out, "--no-progress")
    merged = tmp_path / "merged"  # a merge's root is still invalidated by a group's rewrite, as before
    for group in (0, 1):
        ok("write", "--out", merged, *args, "--num-groups", 2, "--group", group)
    ok("merge", merged)
    result = ok("write", "--out", merged, *args, "--num-groups", 2, "--group", 1, "--overwrite")
    assert "removed the merged index.json" in result.output and not (merged / "index.json").exists()


def test_empty_cifar_source_is_a_one_line_error(cifar_root: Path, tmp_path: Path) -> None:
    path = cifar_root / "cifar-10-batches-py" / "test_batch"
    batch = pickle.loads(path.read_bytes())
    batch.update({b"labels": [], b"data": np.zeros((0, 3072), np.uint8)})
    path.write_bytes(pickle.dumps(batch))
    result = run("write", "--source", f"cifar10:{cifar_root}", "--split", "test", "--out",
                 tmp_path / "out")
    failed(result, "holds no images")
    assert [line for line in result.output.splitlines() if line.startswith("Error")] == [
        result.output.strip().splitlines()[-1]]  # one error line, after click's usage lines


def test_image_over_pils_limit_is_a_click_error(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "imgs" / "a" / "0.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    failed(run("write", "--source", f"imagefolder:{tmp_path / 'imgs'}", "--out", tmp_path / "o"),
           "size limit")


def test_imagefolder_test_split_without_a_test_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "imgs" / "a" / "0.png")
    result = run("write", "--source", f"imagefolder:{tmp_path / 'imgs'}", "--split", "test",
                 "--out", tmp_path / "o")
    failed(result, "without train/ and test/")
    assert not (tmp_path / "o").exists()
