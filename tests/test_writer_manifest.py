"""writer.format.manifest and writer.errors: the one manifest reader, streaming's index name, WriterError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from writer.errors import ManifestError, ManifestNotFoundError, WriterError
from writer.format.manifest import INDEX_NAME, MANIFEST_NAME, PremixConfig, config_from_manifest
from writer.format.opening import read_manifest


def test_index_name_is_streamings() -> None:
    from streaming.base.format import get_index_basename

    assert INDEX_NAME == get_index_basename()


def test_read_manifest_is_the_one_reader(tmp_path: Path) -> None:
    import writer
    from writer.read import dataset

    assert writer.read_manifest is read_manifest and dataset.read_manifest is read_manifest
    with pytest.raises(ManifestNotFoundError, match=MANIFEST_NAME) as missing:
        read_manifest(str(tmp_path))
    assert isinstance(missing.value, FileNotFoundError)  # what callers caught before
    (tmp_path / MANIFEST_NAME).write_text("[1, 2]")
    with pytest.raises(ManifestError, match="not an object") as bad:
        read_manifest(str(tmp_path))
    assert isinstance(bad.value, ValueError)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"args": {"seed": 1}}))
    assert read_manifest(str(tmp_path)) == {"args": {"seed": 1}}


def test_the_writer_has_one_error_base_and_each_error_keeps_its_builtin_base() -> None:
    import inspect

    import writer.errors
    from writer.audit.preview import PreviewError
    from writer.audit.verify import VerifyError
    from writer.format.checks import DatasetError
    from writer.format.names import UnsafeNameError
    from writer.pipeline.sources import SourceError
    from writer.publish.merge import MergeError
    from writer.publish.store import DestinationError
    from writer.read.dataset import CorruptShardError

    for error, old in ((SourceError, ValueError), (DatasetError, ValueError),
                       (VerifyError, DatasetError), (UnsafeNameError, ValueError),
                       (DestinationError, RuntimeError), (CorruptShardError, ValueError),
                       (PreviewError, ValueError), (MergeError, Exception)):
        assert issubclass(error, WriterError) and issubclass(error, old), error
    classes = [c for _, c in inspect.getmembers(writer.errors, inspect.isclass) if issubclass(c, Exception)]
    assert len(set(classes)) == 6  # WriterError and the five a caller catches differently


def test_the_cli_turns_any_writer_error_into_one_click_line(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    from writer import cli

    def broken(out: str, retry: int) -> int:
        raise WriterError("the groups are broken")

    monkeypatch.setattr(cli, "merge_groups", broken)
    result = CliRunner().invoke(cli.main, ["merge", str(tmp_path)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "Error: the groups are broken" in result.output and "Traceback" not in result.output


def test_mode_is_recorded_only_for_sample_mode() -> None:
    manifest = {"args": {"alpha": 1.0, "batch_size": 4, "epochs": 1, "seed": 0, "encoding": "raw",
                         "compression": None, "size_limit": 1 << 20}}
    assert config_from_manifest(manifest) == PremixConfig(batch_size=4, size_limit=1 << 20)
    manifest["args"]["mode"] = "sample"
    assert config_from_manifest(manifest).mode == "sample"
