"""Shared fixtures: a tiny CIFAR-10 in its own on-disk format, and a real S3 server (moto) on loopback."""

from __future__ import annotations

import pickle
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

# The longest tests (each launches processes that import Composer), started first so that under
# pytest-xdist they spread over the workers instead of one of them ending the run alone.
_LONGEST = (
    "tests/test_distributed.py::",
    "tests/test_readme.py::test_readme_commands_run",
    "tests/test_demo.py::test_demo_end_to_end",
    "tests/test_compare.py::test_compare_end_to_end",
    "tests/test_recipes_cli.py::test_nproc_dry_run",
    "tests/test_writer_dataset.py::test_a_shard_that_fails_its_hash",
    "tests/test_recipes_train.py::test_demo_recipe_trains",
    "tests/test_compare.py::test_a_failing_run_fails",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.nodeid.startswith(_LONGEST))  # stable: else as collected


CIFAR_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]


def write_cifar10(root: Path, per_batch: int = 20, test_size: int = 20, seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-py`` as the official python tarball unpacks (random pixels).

    Each batch is a pickle dict with ``b"data"`` (uint8, (n, 3072), channel-major rows),
    ``b"labels"`` (list of int) and ``b"filenames"``; ``batches.meta`` holds ``label_names``.
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = test_size if name == "test_batch" else per_batch
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    meta = {"label_names": CIFAR_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return root


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    """A directory holding a 100-train / 20-test CIFAR-10 in the official on-disk format."""
    return write_cifar10(tmp_path / "cifar")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    """A real S3-compatible server (moto_server) on 127.0.0.1 at a free port, for the session."""
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        exe = Path(shutil.which("moto_server") or "moto_server")
    port = _free_port()
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("moto_server exited before it listened") from None
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("moto_server did not start within 30 s")
    yield endpoint
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def s3_bucket(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the moto server; S3_ENDPOINT_URL and dummy credentials are set.

    Returns the bucket's name; streaming's own S3 code reaches it through ``s3://NAME/...``.
    """
    import boto3

    monkeypatch.setenv("S3_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    name = f"bucket-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(
        Bucket=name
    )
    return name


class Allocations(TorchDispatchMode):
    """A dispatch-mode recorder: ``(op, numel)`` of every new tensor an aten op returns.

    Views and in-place results (outputs sharing an input's storage) are not counted, so a test can
    assert that no batch-sized tensor was made: ``with Allocations() as seen: ...; seen.numels``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.numels: list[tuple[str, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        storages = {a.untyped_storage().data_ptr() for a in inputs}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in storages:
                self.numels.append((str(func), t.numel()))
        return out
