"""cutmix-writer merge on paths that are not what a scaled-out write leaves: one line, nothing touched.

OUT must be a folder of ``group-N`` folders, each holding an ``index.json`` and a
``cutmix_manifest.json`` file. A plain file where a folder should be (or a folder where a file
should be) is refused as a click error naming the path and what was expected, never a
``NotADirectoryError``/``IsADirectoryError`` traceback, and OUT is left exactly as it was.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import write_cifar10
from test_writer_cli import failed, ok, run, write


@pytest.fixture(scope="module")
def groups(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both groups of a two-group write, not merged; each test works on its own copy."""
    root = write_cifar10(tmp_path_factory.mktemp("cifar"))
    out = tmp_path_factory.mktemp("groups") / "out"
    for group in (0, 1):
        write(root, out, "--num-groups", 2, "--group", group)
    return out


def _tree(top: Path) -> dict[str, bytes | None]:
    """Everything under ``top`` (and ``top`` itself): a file's bytes, None for a folder."""
    paths = [top, *top.rglob("*")] if top.is_dir() else [top]
    return {str(p.relative_to(top.parent)): (None if p.is_dir() else p.read_bytes())
            for p in sorted(paths)}


def _refused(out: Path, *says: str) -> None:
    """``merge out`` fails in one click line saying each of ``says``, and changes nothing."""
    before = _tree(out)
    result = run("merge", out)
    failed(result, "Error:")
    for text in says:
        assert text in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert _tree(out) == before


def test_out_that_is_a_plain_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "afile"
    out.write_text("not a dataset\n")
    _refused(out, f"{out} is not a folder", "group-N sub-datasets")


def test_a_group_that_is_a_plain_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "group-0").write_text("not a group\n")
    _refused(out, f"{out / 'group-0'} is not a folder", "--group 0")


def test_a_later_group_that_is_a_plain_file_is_refused_before_anything_is_published(
        groups: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(groups, out)
    shutil.rmtree(out / "group-1")
    (out / "group-1").write_text("not a group\n")
    _refused(out, f"{out / 'group-1'} is not a folder", "--group 1")
    assert not (out / "index.json").exists() and not (out / "cutmix_manifest.json").exists()


@pytest.mark.parametrize("member", ["index.json", "cutmix_manifest.json"])
@pytest.mark.parametrize("group", [0, 1])
def test_a_group_member_that_is_a_folder_is_refused(groups: Path, tmp_path: Path, group: int,
                                                    member: str) -> None:
    out = tmp_path / "out"
    shutil.copytree(groups, out)
    path = out / f"group-{group}" / member
    path.unlink()
    path.mkdir()
    _refused(out, f"{path} is not a file", member)
    assert path.is_dir()


def test_a_merged_root_is_kept_when_a_group_turns_out_unreadable(groups: Path, tmp_path: Path) -> None:
    """merge removes OUT's old index before writing the new one: only after every group passed."""
    out = tmp_path / "out"
    shutil.copytree(groups, out)
    ok("merge", out)
    path = out / "group-1" / "index.json"
    path.unlink()
    path.mkdir()
    _refused(out, f"{path} is not a file")
    assert (out / "index.json").is_file() and (out / "cutmix_manifest.json").is_file()


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_a_group_with_a_truncated_or_missing_shard_is_refused(groups: Path, tmp_path: Path, damage: str) -> None:
    """merge said "merged 2 groups" over a shard cut to 10 bytes; only verify caught it."""
    out = tmp_path / "out"
    shutil.copytree(groups, out)
    shard = sorted((out / "group-1").glob("shard.*.mds"))[0]
    if damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:10])
        _refused(out, "group 1", f"{shard} has 10 bytes", "--group 1")
    else:
        shard.unlink()
        _refused(out, "group 1", f"{shard} is missing", "--group 1")
    assert not (out / "index.json").exists()


def test_well_formed_groups_still_merge(groups: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(groups, out)
    assert "merged 2 groups" in ok("merge", out).output
    ok("verify", out, "--no-progress")
