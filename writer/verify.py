"""Verifying a pre-mixed dataset: shard hashes against its index, samples against its source.

streaming is imported inside the functions that use it: its package import pulls in
transformers, which would make ``cutmix-writer --help`` take seconds.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import torch

from cutmix_algo.sampling import derive_generator
from writer.premix import (
    INDEX_NAME,
    MANIFEST_NAME,
    Schedule,
    ScheduleLookup,
    config_from_manifest,
    encode_rows,
    mix_pair,
)
from writer.sources import ImageSet
from writer.uri import fetch, is_remote, read_json

__all__ = [
    "VerifyError",
    "VerifyReport",
    "check_shards",
    "local_dataset",
    "recorded_args",
    "verify_dataset",
]

_VERIFY_KEY = 2**32 - 2  # generator key of verify's sample choice; never a seed's batch number


class VerifyError(Exception):
    """A dataset does not match its index or its source."""


@dataclass(frozen=True)
class VerifyReport:
    """What a successful verify checked."""

    shards: int
    samples_checked: int
    samples_total: int


def _read_dataset_json(out: str, name: str, scratch: str) -> dict:
    """Load ``out/name`` (see :func:`writer.uri.read_json`); ``VerifyError`` if unreadable."""
    try:
        return read_json(out, name, scratch)
    except (OSError, ValueError) as e:  # missing, a folder, unreadable, not JSON
        raise VerifyError(f"no readable {name} at {out}: {e}") from None


def recorded_args(out: str) -> dict:
    """The write arguments (``source``, ``split``, …) recorded in the manifest of ``out``.

    Raises:
        VerifyError: if ``out`` has no readable manifest.
    """
    with tempfile.TemporaryDirectory(prefix="cutmix-verify-") as scratch:
        args = _read_dataset_json(out, MANIFEST_NAME, scratch).get("args")
    missing = [key for key in ("source", "split", "image_size") if not isinstance(args, dict) or key not in args]
    if missing:
        raise VerifyError(f"{MANIFEST_NAME} at {out} is not a cutmix-writer manifest: no args {missing}")
    return args


def local_dataset(out: str, scratch: str) -> tuple[str, dict]:
    """A local folder holding the dataset at ``out`` (downloaded if remote), and its index."""
    index = _read_dataset_json(out, INDEX_NAME, scratch)
    if not is_remote(out):
        return out, index
    for shard in index["shards"]:
        name = (shard["zip_data"] or shard["raw_data"])["basename"]
        try:
            fetch(out, [name], scratch)
        except Exception as e:
            raise VerifyError(f"shard {name} cannot be downloaded from {out}: {e}") from None
    return scratch, index


def check_shards(folder: str, index: dict, unpacked: str) -> list[tuple[dict, str]]:
    """Check every shard's size and hashes; return ``(shard info, folder with raw file)``."""
    from streaming.base.compression import decompress
    from streaming.base.hashing import get_hash

    out = []
    for shard in index["shards"]:
        stored = shard["zip_data"] or shard["raw_data"]
        name = stored["basename"]
        try:
            with open(os.path.join(folder, name), "rb") as f:
                data = f.read()
        except OSError:
            raise VerifyError(f"shard {name} listed in {INDEX_NAME} is missing") from None
        if len(data) != stored["bytes"]:
            raise VerifyError(f"shard {name} has {len(data)} bytes, index says {stored['bytes']}")
        if not stored.get("hashes"):
            raise VerifyError(f"shard {name} has no hashes recorded in {INDEX_NAME}")
        for algo, expected in sorted(stored["hashes"].items()):
            if get_hash(algo, data) != expected:
                raise VerifyError(f"shard {name} fails its {algo} hash: the file is corrupt")
        raw_folder = folder
        if shard["zip_data"]:
            raw = decompress(shard["compression"], data)
            raw_name = shard["raw_data"]["basename"]
            for algo, expected in sorted(shard["raw_data"]["hashes"].items()):
                if get_hash(algo, raw) != expected:
                    raise VerifyError(f"shard {name} decompresses to data failing its {algo} hash")
            os.makedirs(os.path.dirname(os.path.join(unpacked, raw_name)), exist_ok=True)
            with open(os.path.join(unpacked, raw_name), "wb") as f:
                f.write(raw)
            raw_folder = unpacked
        out.append((shard, raw_folder))
    return out


def _choose(total: int, fraction: float) -> np.ndarray:
    """A deterministic, sorted choice of ``ceil(fraction * total)`` positions."""
    if fraction >= 1.0:
        return np.arange(total)
    count = max(1, math.ceil(fraction * total))
    perm = torch.randperm(total, generator=derive_generator(_VERIFY_KEY)).numpy()
    return np.sort(perm[:count])


def _first_difference(stored: dict, expected: dict) -> str:
    """The first column (by name) whose decoded values differ; PIL images compare as pixels."""
    for key in sorted(expected):
        if not np.array_equal(np.asarray(stored[key]), np.asarray(expected[key])):
            return key
    return "the encoded bytes"


def verify_dataset(out: str, source: ImageSet, sample: float = 1.0) -> VerifyReport:
    """Check a pre-mixed dataset against its index and its source.

    Every shard's size and recorded hashes are checked; then every sample (or a deterministic
    ``sample`` fraction) is recomputed: its provenance (``index_a``, ``index_b``, ``box``,
    ``lam``, ``epoch``) must be what the manifest's seed schedules for its position, and its
    bytes must equal the CutMix of those two source images by that box, encoded the same way.

    Args:
        out: the dataset (local folder or remote URI).
        source: the source it was written from.
        sample: fraction of samples to recompute, in (0, 1].

    Returns:
        VerifyReport: what was checked.

    Raises:
        VerifyError: naming the first bad shard or sample.
    """
    from streaming.base.format import reader_from_json

    with tempfile.TemporaryDirectory(prefix="cutmix-verify-") as scratch:
        folder, index = local_dataset(out, scratch)
        manifest = _read_dataset_json(out, MANIFEST_NAME, scratch)
        unpacked = os.path.join(scratch, "unpacked")
        shards = check_shards(folder, index, unpacked)
        if source.fingerprint() != manifest["source"]["fingerprint"]:
            raise VerifyError(
                "the source's fingerprint differs from the one in the manifest: it is not the "
                f"source {out} was written from (manifest: {manifest['args']['source']} "
                f"split {manifest['args']['split']})"
            )
        config = config_from_manifest(manifest)
        schedule = Schedule(len(source), config.batch_size, config.epochs)
        group = manifest.get("group")
        offset = schedule.first_sample(group["start_batch"]) if group else 0
        readers = [reader_from_json(raw_folder, "", info) for info, raw_folder in shards]
        ends = np.cumsum([info["samples"] for info, _ in shards])
        total = int(ends[-1]) if len(ends) else 0
        expected_total = (group["num_samples"] if group else manifest["num_samples"])
        if total != expected_total:
            raise VerifyError(f"the dataset holds {total} samples, the manifest {expected_total}")
        _, height, width, _ = source.images.shape
        lookup = ScheduleLookup(schedule, config.seed, config.alpha, height, width)
        chosen = _choose(total, sample)
        for position in chosen:
            shard_id = int(np.searchsorted(ends, position, side="right"))
            reader = readers[shard_id]
            data = reader.get_sample_data(int(position - (ends[shard_id - 1] if shard_id else 0)))
            stored = reader.decode_sample(data)
            want = lookup(offset + int(position))
            where = (f"sample {position} (epoch {want.epoch}, batch {want.batch}, row {want.row}; "
                     f"shard {reader.raw_data.basename})")
            for key in ("epoch", "index_a", "index_b", "lam", "box"):
                value = np.asarray(getattr(want, key))
                if not np.array_equal(np.asarray(stored[key]), value):
                    raise VerifyError(f"{where}: {key} is {np.asarray(stored[key]).tolist()} but "
                                      f"the seed's schedule gives {value.tolist()}")
            mixed = mix_pair(source, want.index_a, want.index_b, want.lam, want.box, want.epoch)
            expected = encode_rows(mixed, config.encoding)[0]
            if expected != data:
                column = _first_difference(stored, reader.decode_sample(expected))
                raise VerifyError(
                    f"{where}: {column} differs from the CutMix of source images "
                    f"{want.index_a} and {want.index_b} by box {tuple(want.box)}"
                )
        return VerifyReport(len(shards), len(chosen), total)
