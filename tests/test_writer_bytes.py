"""The writer's output, pinned: the sha256 of every file it writes for fixed arguments.

These digests were computed from the writer before it was split into modules and before it
mixed through ``cutmix_algo.functional.apply_params``; a refactor must not change one byte (the
label λ grid of ``EXACT_SUM_ROWS`` is already in). Both worker counts must give the same bytes.

The manifest records things that vary with the machine, not with the arguments: the source path
(``args.source``/``args.source_resolved`` of a ``cifar10:`` temp folder) and the installed
``tool_version``; those fields are blanked before hashing, everything else in it is pinned.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_cifar10

from writer.cli import main

MANIFEST = "cutmix_manifest.json"


def _digests(out: Path) -> dict[str, str]:
    digests = {}
    for path in sorted(out.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.name == MANIFEST:
            manifest = json.loads(data)
            manifest["tool_version"] = "-"
            manifest["args"]["source"] = manifest["args"]["source_resolved"] = "-"
            data = json.dumps(manifest, indent=2, sort_keys=True).encode()
        digests[str(path.relative_to(out))] = hashlib.sha256(data).hexdigest()
    return digests


def _write(out: Path, source: str, *args: str) -> dict[str, str]:
    argv = ["write", "--source", source, "--out", str(out), "--no-progress", *args]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return _digests(out)


# 25 fake CIFAR images in batches of 8: the last batch of each epoch has one row.
CASES = {
    "cifar-raw": ("cifar", ["--batch-size", "8", "--epochs", "2", "--seed", "3",
                            "--size-limit", "20000"]),
    "cifar-png": ("cifar", ["--batch-size", "8", "--epochs", "2", "--seed", "3",
                            "--encoding", "png", "--size-limit", "20000"]),
    "digits-png": ("digits", ["--batch-size", "64", "--epochs", "2", "--seed", "1",
                              "--encoding", "png", "--alpha", "0.5"]),
}

PINNED: dict[str, dict[str, str]] = {
    "cifar-png": {
        "cutmix_manifest.json": "fd477d17de177c771a82712c213c59e509e52e1f5afb169e00f8e808300d0836",
        "index.json": "0772e15c607b84f91c602607335a1e19f775dc25a10b17fef0f24e1c42b5cf24",
        "shard.00000.mds": "0dcd145a628f45625fd9d733b8b8f7d37cb749dbffc114b3d69d05d4ce6f44c6",
        "shard.00001.mds": "a1d060fe5538c1a3b0a34d80720b343253152c71c1bb58a1de1c3f9208d76330",
        "shard.00002.mds": "47831df2a0846d321d1fcda3c0e82336ab9d21005f7539dae37f26767e4834be",
        "shard.00003.mds": "d645b4450535b85f48ffca5236a367487ef63bee372be43dc420522e7e729cd5",
        "shard.00004.mds": "42aa61694f962eb51595d19c45f707e3edea491c0c09b999d6dfd3dc817cfcc3",
        "shard.00005.mds": "54f5bb7c3b97c87741252db462d8c18f13212d62b669c081c5c0a9d5c1c6e587",
        "shard.00006.mds": "ef2c215e8a80d351da869a2d5c1391e3a29cb33ccee54643a38a03bc56ca7036",
        "shard.00007.mds": "d87d0ab510469c70ab3d9305f8fe1c4853f569873a2000c9296a1e8ae9d1558f",
        "shard.00008.mds": "ef0215302a3e5cea573a150710f68a8c00749e09a242875442074dc6b2f46332",
    },
    "cifar-raw": {
        "cutmix_manifest.json": "7f93b27739ac9a3062a0f275a5dfcb90ae1e4ade18040155207a5542b630be5a",
        "index.json": "d6536c551227608a17261694d52c60071d4a1bbfda416b40f10634c646531b5a",
        "shard.00000.mds": "4350113df30fe9cfe2dba9d18fd6b538755ca253906b77de6b3cbbb1328b9888",
        "shard.00001.mds": "88527f12e363fde90bbbb1f529b3bb14781ab0ced14f0b8072068a38230df9d1",
        "shard.00002.mds": "058ccd832b9240134f64e718003baca48caec0bc000f3c922ef720656936b6ef",
        "shard.00003.mds": "db99d946c44e5ae3f82f412d4189892270961c7fe8c70cdd0f095c400dba6702",
        "shard.00004.mds": "a41556546ae9c3d6ebcc2547d478d61f070279be079eb9b52904aacf17a1c17f",
        "shard.00005.mds": "3b6233161f16d345cff2552a49e0a93d38b8115b3bdf45e93aef7c77f09a89c8",
        "shard.00006.mds": "a5690798dbdb76da411c73a61efce3044d507ff840a0aef788dd0972a67b4e80",
        "shard.00007.mds": "4c5dbaea92c823540ba20207da4bb8f158048a8f11579efccaca33909987a066",
        "shard.00008.mds": "1719a86959466bf8bf2b2a4d688add4cce328b03a8cf02eacf71c09c6399139b",
    },
    "digits-png": {
        "cutmix_manifest.json": "6896fe344c9bcff371d6265ce876767adb181af15c83b29443662cb3c7d9cef6",
        "index.json": "bcd74596d1d3aa7b8008707411f23afa00bc2c25904d1495ff9c2babc6aaeabf",
        "shard.00000.mds": "3f6a9aec9b6a2737fef15803607610042d956f13e3f07a6c8b8ba7d0e5fee93c",
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_writer_bytes_are_pinned_for_any_worker_count(case: str, tmp_path: Path) -> None:
    kind, args = CASES[case]
    source = "digits"
    if kind == "cifar":
        source = f"cifar10:{write_cifar10(tmp_path / 'src', per_batch=5)}"
    got = {w: _write(tmp_path / f"out-{w}", source, "--workers", str(w), *args) for w in (1, 2)}
    assert got[1] == got[2]
    assert got[1] == PINNED[case]
