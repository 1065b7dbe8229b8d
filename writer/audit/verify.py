"""Verifying a pre-mixed dataset: its index, manifest and shards, and its samples against its seed.

A dataset may come from a stranger, so verify trusts nothing it reads: every file name is
checked before use (:mod:`writer.format.names`), the manifest is checked against the index
(:mod:`writer.format.checks`), and no source is loaded that the user did not name. Without a source
verify still checks each shard's hashes, each sample's provenance (``epoch``, ``index_a``,
``index_b``, ``lam``, ``box`` against the seed's schedule) and each label against its ``lam``
and the classes the other samples give the same source images; with a source it also recomputes
every checked sample's bytes.

streaming is imported inside the functions that use it: its package import pulls in
transformers, which would make ``cutmix-writer --help`` take seconds.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cutmix_algo.sampling import verify_generator
from writer.errors import DatasetError
from writer.format.checks import Layout, check_recorded_args, check_sample, label_classes, shown
from writer.format.manifest import INDEX_NAME, MANIFEST_NAME
from writer.format.names import fetch, is_remote, member_path, open_member
from writer.format.opening import open_dataset, read_manifest
from writer.pipeline.encode import encode_rows
from writer.pipeline.premix import ScheduleLookup, mix_pair
from writer.pipeline.sources import ImageSet

#: A dataset does not match its index, manifest, seed or source: a
#: :class:`~writer.errors.DatasetError` (the name is kept for callers).
VerifyError = DatasetError

__all__ = [
    "VerifyError",
    "VerifyReport",
    "check_shards",
    "fetch_shards",
    "read_sample",
    "recorded_args",
    "source_hint",
    "trusted_recorded_source",
    "verify_dataset",
]

# Sources that name no path: loading them reads nothing a dataset points at (scikit-learn's
# bundled digits are a CSV). Every other kind reads files the manifest names, and a cifar10:
# folder is pickles, so those are loaded only when the user passes --source.
_PATHLESS_SOURCES = ("digits",)



@dataclass(frozen=True)
class VerifyReport:
    """What a successful verify checked.

    Attributes:
        shards: shards whose size and hashes matched the index.
        samples_checked: samples whose provenance and label were checked (and, with a source,
            whose bytes were recomputed).
        samples_total: samples in the dataset.
        recomputed: whether the checked samples were recomputed from a source.
    """

    shards: int
    samples_checked: int
    samples_total: int
    recomputed: bool


def recorded_args(out: str) -> dict:
    """The write arguments (``source``, ``split``, …) recorded in the manifest of ``out``.

    Only the manifest is read, its recorded arguments checked as opening the dataset checks them
    (:func:`~writer.format.checks.check_recorded_args`); :func:`verify_dataset` opens the rest.

    Raises:
        DatasetError: if ``out`` has no readable manifest or its arguments are not what
            ``cutmix-writer write`` records.
    """
    args = read_manifest(out).get("args")
    check_recorded_args(args)
    assert isinstance(args, dict)
    return args


def recorded_mds_options(args: dict) -> dict:
    """The ``mds:`` loader options a write recorded (``args.mds``: the columns, ``num_classes``), or {}.

    Verify recomputes with them, so an ``mds:`` source written with ``--image-column``,
    ``--label-column`` or ``--num-classes`` is loaded as it was written (their types were checked
    when the dataset was opened).
    """
    return dict(args.get("mds") or {})


def trusted_recorded_source(args: dict) -> str | None:
    """The recorded ``--source`` if verify may load it unasked (it names no path), else ``None``."""
    return args["source"] if args["source"] in _PATHLESS_SOURCES else None


def source_hint(args: dict) -> str:
    """Why pixels were not recomputed and the ``--source`` that would recompute them.

    ``args.source_resolved`` (the absolute path the writer found the source at) is suggested
    when it exists here; otherwise the spec as typed, saying the recorded path is not here.
    """
    spec = shown(args["source"])
    resolved = args.get("source_resolved")
    kind, _, path = (resolved if isinstance(resolved, str) else str(args["source"])).partition(":")
    hint = ("pixels not recomputed: verify loads no source a dataset names (a cifar10: source "
            "is pickles, which can run code); to recompute, pass the source yourself")
    if isinstance(resolved, str) and path and not is_remote(path):
        if os.path.exists(path):
            return f"{hint}: --source {shown(resolved)}"
        return f"{hint} (recorded as {spec}, at {shown(path)}, which does not exist here): --source {kind}:DIR"
    return f"{hint}: --source {spec}"


def fetch_shards(out: str, shards: Iterable[dict], scratch: str) -> None:
    """Download the stored files of ``shards`` of the remote dataset ``out`` into ``scratch``."""
    for shard in shards:
        name = (shard["zip_data"] or shard["raw_data"])["basename"]
        try:
            fetch(out, name, scratch)
        except FileNotFoundError as e:
            raise DatasetError(f"shard {name} cannot be downloaded from {out}: {e}") from None


def check_shards(folder: str, shards: list[dict], unpacked: str,
                 progress: bool = False) -> list[tuple[dict, str]]:
    """Check every shard's size and hashes; return ``(shard info, folder with raw file)``.

    Compressed shards are decompressed into ``unpacked``; no path leaves ``folder`` or
    ``unpacked``.

    Raises:
        DatasetError: naming the first shard that is missing, unsafe or corrupt.
    """
    from streaming.base.compression import decompress
    from streaming.base.hashing import get_hash
    from tqdm import tqdm

    out = []
    for shard in tqdm(shards, desc="verify shards", unit="shard", file=sys.stderr,
                      disable=not progress, mininterval=0.5):
        stored = shard["zip_data"] or shard["raw_data"]
        name = stored["basename"]
        try:
            with os.fdopen(open_member(folder, name, f"{INDEX_NAME} shard"), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                # The size first: an index may claim any size, and reading is what costs.
                if size != stored["bytes"]:
                    raise DatasetError(f"shard {name} has {size} bytes, index says "
                                      f"{stored['bytes']}: the file is corrupt")
                data = f.read()
        except OSError:
            raise DatasetError(f"shard {name} listed in {INDEX_NAME} is missing") from None
        if not stored["hashes"]:
            raise DatasetError(f"shard {name} has no hashes recorded in {INDEX_NAME}")
        for algo, expected in sorted(stored["hashes"].items()):
            try:
                actual = get_hash(algo, data)
            except ValueError:
                raise DatasetError(f"shard {name}: {INDEX_NAME} records an unknown hash "
                                  f"{shown(algo)}") from None
            if actual != expected:
                raise DatasetError(f"shard {name} fails its {algo} hash: the file is corrupt")
        raw_folder = folder
        if shard["zip_data"]:
            raw_name = shard["raw_data"]["basename"]
            try:
                raw = decompress(shard["compression"], data)
            except Exception as e:  # a codec's own errors for data that is not what it says
                raise DatasetError(f"shard {name} does not decompress: {e}") from None
            target = member_path(unpacked, raw_name, f"{INDEX_NAME} shard")
            if len(raw) != shard["raw_data"]["bytes"] or not shard["raw_data"]["hashes"] or any(
                    get_hash(algo, raw) != expected
                    for algo, expected in sorted(shard["raw_data"]["hashes"].items())):
                raise DatasetError(f"shard {name} decompresses to data failing its size or hashes")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(raw)
            raw_folder = unpacked
        out.append((shard, raw_folder))
    return out


def read_sample(reader: Any, row: int, layout: Layout, where: str) -> tuple[bytes, dict]:
    """Read row ``row`` of a checked shard: its bytes and decoded columns, checked.

    Raises:
        DatasetError: if the row cannot be decoded or a column is out of range (a crafted shard
            can have valid hashes and still hold anything).
    """
    try:
        data = reader.get_sample_data(row)
        item = reader.decode_sample(data)
    except Exception as e:  # numpy, struct and PIL errors for bytes that are not a sample
        raise DatasetError(f"{where}: cannot be decoded ({type(e).__name__}: {e}); the shard "
                          "is not what its index says") from None
    check_sample(item, layout, where)
    return data, item


def _choose(total: int, fraction: float) -> np.ndarray:
    """A deterministic, sorted choice of ``ceil(fraction * total)`` positions."""
    if fraction >= 1.0:
        return np.arange(total)
    count = max(1, math.ceil(fraction * total))
    perm = torch.randperm(total, generator=verify_generator())  # sampling's key table.numpy()
    return np.sort(perm[:count])


def _first_difference(stored: dict, expected: dict) -> str:
    """The first column (by name) whose decoded values differ; PIL images compare as pixels."""
    for key in sorted(expected):
        if not np.array_equal(np.asarray(stored[key]), np.asarray(expected[key])):
            return key
    return "the encoded bytes"


class _ClassBook:
    """The class of each source image, as the labels of the checked samples say.

    Without the source, a label is checked two ways: it must be the CutMix of two one-hot
    labels by the sample's ``lam``, and it must give each source image the class every other
    checked sample gives it.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.known: dict[int, tuple[int, str]] = {}  # source index → (class, where it was seen)
        self.open: list[tuple[str, list[tuple[int | None, int | None]], int, int]] = []

    def _learn(self, index: int, cls: int, where: str) -> None:
        seen = self.known.setdefault(index, (cls, where))
        if seen[0] != cls:
            raise DatasetError(f"{where}: label gives source image {index} class {cls}, but "
                              f"{seen[1]} gives it class {seen[0]}")

    def add(self, item: dict, where: str) -> None:
        lam, a, b = float(item["lam"]), int(item["index_a"]), int(item["index_b"])
        pairs = label_classes(np.asarray(item["label"]), lam, self.num_classes)
        if not pairs:
            raise DatasetError(f"{where}: label is not lam * onehot(a) + (1 - lam) * onehot(b) "
                              f"for lam {lam}")
        if a == b:  # one image, so one class: a pair naming two is impossible
            pairs = [(x, y) for x, y in pairs if x is None or y is None or x == y]
            if not pairs:
                raise DatasetError(f"{where}: label names two classes for one source image {a}")
        for position, index in ((0, a), (1, b)):
            classes = {pair[position] for pair in pairs}
            if len(classes) == 1 and None not in classes:
                self._learn(index, classes.pop(), where)  # type: ignore[arg-type]
        if len(pairs) > 1:
            self.open.append((where, pairs, a, b))

    def finish(self) -> None:
        for where, pairs, a, b in self.open:
            ca, cb = self.known.get(a, (None, ""))[0], self.known.get(b, (None, ""))[0]
            if not any((x is None or ca is None or x == ca) and (y is None or cb is None or y == cb)
                       for x, y in pairs):
                raise DatasetError(f"{where}: label disagrees with the classes other samples "
                                  f"give source images {a} ({ca}) and {b} ({cb})")


def verify_dataset(out: str, source: ImageSet | None, sample: float = 1.0,
                   progress: bool = False) -> VerifyReport:
    """Check a pre-mixed dataset against its index, its manifest, its seed and (given) its source.

    Every shard's size and recorded hashes are checked, and the manifest against the index.
    Then every sample (or a deterministic ``sample`` fraction) is checked: its provenance
    (``index_a``, ``index_b``, ``box``, ``lam``, ``epoch``) must be what the manifest's seed
    schedules for its position and its label a CutMix of two one-hot labels by ``lam``,
    consistent with the other checked samples. With ``source``, its bytes must also equal the
    CutMix of those two source images by that box, encoded the same way.

    Args:
        out: the dataset (local folder or remote URI).
        source: the source it was written from, or ``None`` to check without recomputing
            pixels (what is safe for a dataset from a stranger: nothing it names is loaded).
        sample: fraction of samples to check, in (0, 1].
        progress: show tqdm bars (shards checked, samples checked) on stderr.

    Returns:
        VerifyReport: what was checked.

    Raises:
        DatasetError: naming the first bad entry, shard or sample.
    """
    from streaming.base.format import reader_from_json
    from tqdm import tqdm

    with tempfile.TemporaryDirectory(prefix="cutmix-verify-") as scratch:
        opened = open_dataset(out, scratch, shards=False)  # verify checks sizes and hashes below
        folder, manifest, layout = opened.folder, opened.manifest, opened.layout
        if source is not None:
            if source.fingerprint() != manifest["source"].get("fingerprint"):
                raise DatasetError(
                    "the source's fingerprint differs from the one in the manifest: it is not the "
                    f"source {out} was written from (manifest: {shown(manifest['args']['source'])} "
                    f"split {shown(manifest['args'].get('split'))})"
                )
            if len(source) != layout.schedule.num_images or source.images.shape[1:] != layout.image_shape:
                raise DatasetError(f"{MANIFEST_NAME}: source.num_images or image_shape is not the "
                                  "source's")
        shards = opened.index["shards"]  # checked by open_dataset
        if is_remote(out):
            fetch_shards(out, shards, scratch)
        checked = check_shards(folder, shards, os.path.join(scratch, "unpacked"), progress)
        # No reader.validate(False): check_layout pins the columns, so none is pickled.
        readers = [reader_from_json(raw_folder, "", info) for info, raw_folder in checked]
        ends = np.cumsum([info["samples"] for info, _ in checked])
        height, width, _ = layout.image_shape
        config = layout.config
        lookup = ScheduleLookup(layout.schedule, config.seed, config.alpha, height, width,
                                config.mode)
        classes = _ClassBook(layout.num_classes)
        chosen = _choose(layout.total, sample)
        for position in tqdm(chosen.tolist(), desc="verify samples", unit="img", unit_scale=True,
                             file=sys.stderr, disable=not progress, mininterval=0.5):
            shard_id = int(np.searchsorted(ends, position, side="right"))
            reader = readers[shard_id]
            want = lookup(layout.offset + position)
            where = (f"sample {position} (epoch {want.epoch}, batch {want.batch}, row {want.row}; "
                     f"shard {reader.raw_data.basename})")
            data, stored = read_sample(reader, int(position - (ends[shard_id - 1] if shard_id else 0)),
                                       layout, where)
            for key in ("epoch", "index_a", "index_b", "lam", "box"):
                value = np.asarray(getattr(want, key))
                if not np.array_equal(np.asarray(stored[key]), value):
                    raise DatasetError(f"{where}: {key} is {np.asarray(stored[key]).tolist()} but "
                                      f"the seed's schedule gives {value.tolist()}")
            if source is None:
                classes.add(stored, where)
                continue
            mixed = mix_pair(source, want.index_a, want.index_b, want.lam, want.box, want.epoch,
                             config.mode)
            expected = encode_rows(mixed, config.encoding)[0]
            if expected != data:
                column = _first_difference(stored, reader.decode_sample(expected))
                raise DatasetError(
                    f"{where}: {column} differs from the CutMix of source images "
                    f"{want.index_a} and {want.index_b} by box {tuple(want.box)}"
                )
        classes.finish()
        return VerifyReport(len(checked), len(chosen), layout.total, source is not None)
