"""What every reader checks before trusting a pre-mixed dataset, which may come from a stranger.

``verify``, ``preview`` and :class:`writer.PremixedDataset` all start here: the index must name
only plain files inside the dataset (:func:`writer.format.names.check_member`) with no column encoding
but this writer's (streaming's ``pkl`` would unpickle), and the manifest must agree with the
index and with itself (counts, epochs, batch size, columns, the group's share of the schedule),
so no later step divides by a zero batch size or reads samples a manifest does not describe.
A merged root must also agree with the groups its index reads from.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from cutmix_algo.functional import MODES
from cutmix_algo.sampling import check_alpha
from writer.errors import DatasetError
from writer.format.columns import ENCODINGS, column_encodings
from writer.format.manifest import INDEX_NAME, MANIFEST_NAME, SPLITS, PremixConfig
from writer.format.names import check_member, member_path
from writer.format.schedule import Schedule

__all__ = [
    "DatasetError",
    "Layout",
    "check_index",
    "check_layout",
    "check_recorded_args",
    "check_merged_groups",
    "check_sample",
    "is_distribution",
    "label_classes",
    "shown",
    "strip_group",
]

_MAX_EPOCHS = 2**31 - 1  # the ``epoch`` column is int32
_LABEL_TOLERANCE = 1e-4  # float32 rows sum to 1 up to rounding


def shown(value: object) -> str:
    """``value`` as text safe to print: a string from a dataset may hold terminal escapes."""
    text = str(value)
    return text if text.isprintable() else ascii(text)


@dataclass(frozen=True)
class Layout:
    """What a checked manifest says about the samples its index lists.

    Attributes:
        config: the write's arguments.
        schedule: the full write's batch schedule.
        offset: global position of the first listed sample (non-zero for a group).
        total: number of listed samples.
        image_shape: ``(H, W, C)``.
        class_names: one name per class.
    """

    config: PremixConfig
    schedule: Schedule
    offset: int
    total: int
    image_shape: tuple[int, int, int]
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        """Number of classes (the label's length)."""
        return len(self.class_names)


def _int(value: object, what: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        bound = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise DatasetError(f"{MANIFEST_NAME}: {what} must be {bound}, got {shown(repr(value))}")
    return value


def _get(mapping: object, key: str, what: str) -> object:
    if not isinstance(mapping, dict) or key not in mapping:
        raise DatasetError(f"{what} has no {key!r}: not a cutmix-writer dataset")
    return mapping[key]


# The keys of one index entry, exactly: streaming's ``MDSReader.from_json`` reads ``version``,
# ``format``, ``raw_data`` and ``zip_data`` itself and passes every other key to
# ``MDSReader.__init__`` as a keyword, so a key missing or added is a TypeError deep inside
# streaming. ``raw_data`` and ``zip_data`` become ``FileInfo(**info)``, whose fields are fixed too.
_SHARD_KEYS = ("column_encodings", "column_names", "column_sizes", "compression", "format",
               "hashes", "raw_data", "samples", "size_limit", "version", "zip_data")
_FILE_KEYS = ("basename", "bytes", "hashes")


def _brief(value: object) -> str:
    """``repr(value)`` cut to a line, safe to print (an index may hold a huge or escaped value)."""
    text = repr(value)
    return shown(text if len(text) <= 60 else text[:57] + "...")


def _is_count(value: object) -> bool:
    """A JSON integer >= 0 (``true`` is not one, though Python's bool is an int)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _keys(entry: dict, expected: tuple[str, ...], what: str, reader: str) -> None:
    """Refuse ``entry`` unless its keys are exactly ``expected`` (what ``reader`` accepts)."""
    missing = [key for key in expected if key not in entry]
    if missing:
        raise DatasetError(f"{what} has no {missing[0]!r}, a key {reader} needs")
    extra = sorted(_brief(key) for key in entry if key not in expected)
    if extra:
        raise DatasetError(f"{what} has an unknown key {extra[0]}: {reader} takes only "
                           f"{', '.join(expected)}")


def _check_file(info: object, what: str) -> str:
    """Check a ``raw_data``/``zip_data`` object; return its (plain) basename."""
    if not isinstance(info, dict):
        raise DatasetError(f"{what} must be an object")
    _keys(info, _FILE_KEYS, what, "streaming's FileInfo")
    name = check_member(info["basename"], f"{what}.basename")
    if not _is_count(info["bytes"]):
        raise DatasetError(f"{what}.bytes must be a non-negative integer, got "
                           f"{_brief(info['bytes'])}")
    hashes = info["hashes"]
    if not (isinstance(hashes, dict) and all(isinstance(v, str) for v in hashes.values())):
        raise DatasetError(f"{what}.hashes must be an object of hash names to digests (strings)")
    return name


def _check_columns(shard: dict, what: str) -> None:
    """Check ``column_names``, ``column_encodings`` and ``column_sizes``: equal-length lists."""
    names, encodings, sizes = shard["column_names"], shard["column_encodings"], shard["column_sizes"]
    for key, column in (("column_names", names), ("column_encodings", encodings)):
        if not (isinstance(column, list) and column and all(isinstance(c, str) for c in column)):
            raise DatasetError(f"{what}: {key} must be a non-empty list of strings")
    if len(names) != len(encodings) or len(set(names)) != len(names):
        raise DatasetError(f"{what}: column_names and column_encodings must be equal-length "
                           "lists, the names distinct")
    if not (isinstance(sizes, list) and len(sizes) == len(names)):
        raise DatasetError(f"{what}: column_sizes must be a list of {len(names)} sizes, one per "
                           "column in column_names")
    for name, size in zip(names, sizes, strict=True):
        if size is not None and not _is_count(size):
            raise DatasetError(f"{what}: column_sizes of column {_brief(name)} must be a "
                               f"non-negative integer or null, got {_brief(size)}")


def check_index(index: object) -> list[dict]:
    """Check an ``index.json``'s structure and every file name in it; return its shard list.

    Each shard entry must be what streaming's MDS reader takes (``reader_from_json``): exactly
    its keys, each of the type it expects, so no reader built from a checked entry fails.

    Raises:
        DatasetError: naming the first bad entry.
    """
    if _get(index, "version", INDEX_NAME) != 2:
        raise DatasetError(f"{INDEX_NAME}: version must be 2 (streaming's MDS index)")
    shards = _get(index, "shards", INDEX_NAME)
    if not isinstance(shards, list):
        raise DatasetError(f"{INDEX_NAME}: 'shards' must be a list")
    seen: set[str] = set()
    for i, shard in enumerate(shards):
        what = f"{INDEX_NAME} shard {i}"
        if not isinstance(shard, dict) or shard.get("format") != "mds":
            raise DatasetError(f"{what} is not an MDS shard entry")
        _keys(shard, _SHARD_KEYS, what, "streaming's MDS reader")
        version = shard["version"]
        if isinstance(version, bool) or version != 2 or not isinstance(version, int):
            raise DatasetError(f"{what}: version must be 2 (streaming's MDS shard), got "
                               f"{_brief(version)}")
        for part in ("raw_data", "zip_data"):
            info = shard[part]
            if info is None and part == "zip_data":
                continue
            name = _check_file(info, f"{what} {part}")
            if name in seen:
                raise DatasetError(f"{what} {part}.basename {name!r} is listed twice")
            seen.add(name)
        raw = shard["raw_data"]
        samples = shard["samples"]
        # Each sample costs at least its 4-byte offset, so a count the file cannot hold is a lie
        # (and would make a reader allocate for it).
        if not _is_count(samples) or samples < 1 or 4 * (samples + 2) > raw["bytes"]:
            raise DatasetError(f"{what}: samples must be a positive count its "
                               f"{raw['bytes']} bytes can hold, got {_brief(samples)}")
        _check_columns(shard, what)
        if shard["compression"] is not None and not isinstance(shard["compression"], str):
            raise DatasetError(f"{what}: compression must be a string or null, got "
                               f"{_brief(shard['compression'])}")
        hashes = shard["hashes"]
        if not (isinstance(hashes, list) and all(isinstance(h, str) for h in hashes)):
            raise DatasetError(f"{what}: hashes must be a list of hash names (strings), got "
                               f"{_brief(hashes)}")
        if shard["size_limit"] is not None and not _is_count(shard["size_limit"]):
            raise DatasetError(f"{what}: size_limit must be a non-negative integer or null, got "
                               f"{_brief(shard['size_limit'])}")
    return shards


def _group(manifest: dict, schedule: Schedule) -> tuple[int, int] | None:
    """``(offset, num_samples)`` of a group manifest's share, checked against the schedule."""
    group = manifest.get("group")
    if group is None:
        return None
    count = _int(_get(group, "count", "group"), "group.count", 1, schedule.total_batches)
    index = _int(_get(group, "index", "group"), "group.index", 0, count - 1)
    start, stop = schedule.group_range(count, index)
    expected = {"start_batch": start, "stop_batch": stop,
                "num_samples": schedule.first_sample(stop) - schedule.first_sample(start)}
    for key, value in expected.items():
        if _get(group, key, "group") != value:
            raise DatasetError(f"{MANIFEST_NAME}: group.{key} is {shown(repr(group[key]))} but group "
                               f"{index} of {count} of this schedule has {value}")
    return schedule.first_sample(start), expected["num_samples"]


class LocalShardMismatch(NamedTuple):
    """A local shard file that is not what its index records (see :func:`mismatched_local_shard`)."""

    basename: str
    path: str
    size: int | None  # None: missing
    recorded: int

    @property
    def found(self) -> str:
        return "is missing" if self.size is None else f"has {self.size} bytes"


def mismatched_local_shard(folder: str, shards: list[dict]) -> LocalShardMismatch | None:
    """The first shard of a local dataset whose file is missing or not its recorded size, else None.

    One stat per shard (the file the index names: ``zip_data`` if compressed, else ``raw_data``);
    hashes are ``verify``'s to check.

    Raises:
        DatasetError: if a shard's name resolves outside ``folder``.
    """
    for shard in shards:
        stored = shard["zip_data"] or shard["raw_data"]
        path = member_path(folder, stored["basename"], f"{INDEX_NAME} shard")
        size = os.path.getsize(path) if os.path.isfile(path) else None
        if size != stored["bytes"]:
            return LocalShardMismatch(stored["basename"], path, size, stored["bytes"])
    return None


def check_layout(manifest: object, index: object) -> Layout:
    """Check a manifest against itself and against the index it sits beside.

    Args:
        manifest: the loaded ``cutmix_manifest.json`` (untrusted).
        index: the loaded ``index.json`` (untrusted).

    Returns:
        Layout: the checked arguments, schedule and listed range.

    Raises:
        DatasetError: in one line, naming the first disagreement (e.g. ``epochs`` edited).
    """
    shards = check_index(index)
    args = _get(manifest, "args", MANIFEST_NAME)
    source = _get(manifest, "source", MANIFEST_NAME)
    alpha = _get(args, "alpha", "args")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise DatasetError(f"{MANIFEST_NAME}: args.alpha must be a JSON number, got {_brief(alpha)}")
    try:
        alpha = check_alpha(alpha)
    except ValueError as e:
        raise DatasetError(f"{MANIFEST_NAME}: args.{e}") from None
    check_recorded_args(args)
    batch_size = _int(_get(args, "batch_size", "args"), "args.batch_size", 1)
    epochs = _int(_get(args, "epochs", "args"), "args.epochs", 1, _MAX_EPOCHS)
    seed = _int(_get(args, "seed", "args"), "args.seed", 0, 2**64 - 1)
    encoding = _get(args, "encoding", "args")
    if encoding not in ENCODINGS:
        raise DatasetError(f"{MANIFEST_NAME}: args.encoding must be one of {', '.join(ENCODINGS)}")
    compression = _get(args, "compression", "args")
    if compression is not None and not isinstance(compression, str):
        raise DatasetError(f"{MANIFEST_NAME}: args.compression must be a string or null")
    size_limit = _int(_get(args, "size_limit", "args"), "args.size_limit", 1)
    mode = args.get("mode", "batch")  # written only for sample mode: older manifests lack it
    if mode not in MODES:
        raise DatasetError(f"{MANIFEST_NAME}: args.mode must be one of {', '.join(MODES)}, "
                           f"got {shown(repr(mode))}")
    num_images = _int(_get(source, "num_images", "source"), "source.num_images", 1)
    shape = _get(source, "image_shape", "source")
    if not (isinstance(shape, list) and len(shape) == 3):
        raise DatasetError(f"{MANIFEST_NAME}: source.image_shape must be [H, W, C]")
    height, width, channels = (_int(d, "source.image_shape", 1) for d in shape)
    names = _get(manifest, "class_names", MANIFEST_NAME)
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise DatasetError(f"{MANIFEST_NAME}: class_names must be a non-empty list of strings")
    if _get(manifest, "num_classes", MANIFEST_NAME) != len(names):
        raise DatasetError(f"{MANIFEST_NAME}: num_classes is {shown(repr(manifest['num_classes']))} "
                           f"but class_names has {len(names)}")
    schedule = Schedule(num_images, batch_size, epochs)
    for key, value in (("num_samples", schedule.total_samples),
                       ("batches_per_epoch", schedule.batches_per_epoch)):
        if _get(manifest, key, MANIFEST_NAME) != value:
            raise DatasetError(
                f"{MANIFEST_NAME}: {key} is {shown(repr(manifest[key]))} but {epochs} epochs of "
                f"{num_images} images in batches of {batch_size} give {value}")
    columns = column_encodings(encoding, (height, width, channels), len(names))
    if manifest.get("columns") != columns:
        raise DatasetError(f"{MANIFEST_NAME}: columns do not match args.encoding {encoding}, "
                           f"source.image_shape {shape} and {len(names)} classes")
    share = _group(manifest, schedule)
    offset, expected = share if share is not None else (0, schedule.total_samples)
    if shards:
        # Here, not at the top: streaming's package import pulls in transformers.
        from streaming.base.format.mds.encodings import get_mds_encoded_size

        sizes = {name: get_mds_encoded_size(enc) for name, enc in columns.items()}
    for i, shard in enumerate(shards):
        if dict(zip(shard["column_names"], shard["column_encodings"], strict=True)) != columns:
            raise DatasetError(f"{INDEX_NAME} shard {i}: its columns are not the manifest's")
        for name, size in zip(shard["column_names"], shard["column_sizes"], strict=True):
            if size != sizes[name]:
                raise DatasetError(f"{INDEX_NAME} shard {i}: column_sizes of column {name} is "
                                   f"{size}, its encoding {columns[name]} has size {sizes[name]}")
        if shard.get("compression") != compression or (shard["zip_data"] is None) != (compression is None):
            raise DatasetError(f"{INDEX_NAME} shard {i}: compression is not the manifest's "
                               f"{compression}")
    total = sum(shard["samples"] for shard in shards)
    if total != expected:
        raise DatasetError(f"{INDEX_NAME} lists {total} samples but the manifest's {epochs} epochs "
                           f"of {num_images} images{' (this group)' if share else ''} are {expected}")
    config = PremixConfig(alpha, batch_size, epochs, seed, encoding, compression, size_limit, mode)
    return Layout(config, schedule, offset, total, (height, width, channels), list(names))


_MDS_OPTIONS = ("image_column", "label_column", "num_classes")


def check_recorded_args(args: object) -> None:
    """Check the recorded ``source``, ``split``, ``image_size`` and ``mds`` options' types.

    Part of :func:`check_layout`; ``verify`` also calls it alone, on the manifest it reads first
    to decide which source to load.

    Raises:
        DatasetError: naming the first bad field.
    """
    what = f"{MANIFEST_NAME}: args"
    source, split = _get(args, "source", what), _get(args, "split", what)
    if not isinstance(source, str):
        raise DatasetError(f"{MANIFEST_NAME}: args.source must be a string, got {_brief(source)}")
    if split not in SPLITS:
        raise DatasetError(f"{MANIFEST_NAME}: args.split must be one of {', '.join(SPLITS)}, got {_brief(split)}")
    size = _get(args, "image_size", what)
    if size is not None:
        _int(size, "args.image_size", 1)
    resolved = args.get("source_resolved")
    if resolved is not None and not isinstance(resolved, str):
        raise DatasetError(f"{MANIFEST_NAME}: args.source_resolved must be a string, got {_brief(resolved)}")
    options = args.get("mds")
    if options is None:
        return
    classes = options.get("num_classes") if isinstance(options, dict) else None
    if not (isinstance(options, dict) and set(options) <= set(_MDS_OPTIONS)
            and all(isinstance(options.get(key, "column"), str) for key in _MDS_OPTIONS[:2])
            and (classes is None or _is_count(classes) and classes >= 1)):
        raise DatasetError(f"{MANIFEST_NAME}: args.mds is not what cutmix-writer records, got {_brief(options)}")


def strip_group(manifest: dict) -> dict:
    """A group's manifest as the merged one reads: no ``group``; ``args.source_resolved`` is where
    that machine found the source, so it may differ between groups and is left out too."""
    out = {k: v for k, v in manifest.items() if k != "group"}
    if isinstance(out.get("args"), dict):
        out["args"] = {k: v for k, v in out["args"].items() if k != "source_resolved"}
    return out


def check_merged_groups(manifest: dict, index: dict, read: Callable[[str], dict]) -> None:
    """Refuse a merged root whose groups were rewritten (or removed) after ``merge``.

    Each ``group-I/`` its index reads from must still hold a manifest equal to the root's (up to
    :func:`strip_group`) and an index listing exactly the shards the root's index lists for it.

    Args:
        manifest: the root's manifest.
        index: the root's index (already through :func:`check_index`).
        read: loads a JSON member of the root by name (``"group-0/index.json"``).

    Raises:
        DatasetError: naming the group that disagrees and saying to re-run merge.
    """
    listed: dict[str, list[dict]] = {}
    for shard in index["shards"]:
        folder, sep, _ = shard["raw_data"]["basename"].partition("/")
        if sep:
            listed.setdefault(folder, []).append(shard)
    for folder, shards in sorted(listed.items()):
        again = "re-run `cutmix-writer merge` on the root"
        try:
            group_manifest = read(f"{folder}/{MANIFEST_NAME}")
            group_index = read(f"{folder}/{INDEX_NAME}")
        except (OSError, ValueError) as e:
            raise DatasetError(f"the merged index reads {folder}/, which has no readable "
                               f"manifest and index ({e}); {again}") from None
        if not isinstance(group_manifest, dict) or strip_group(group_manifest) != strip_group(manifest):
            raise DatasetError(f"{folder}/{MANIFEST_NAME} disagrees with the merged "
                               f"{MANIFEST_NAME} (the group was rewritten after merge); {again}")
        theirs = check_index(group_index)

        def key(shard: dict, prefix: str = "") -> tuple:
            raw, zipped = shard["raw_data"], shard["zip_data"]
            return (shard["samples"], raw["basename"].removeprefix(prefix), raw["bytes"],
                    raw["hashes"], zipped and (zipped["basename"].removeprefix(prefix),
                                               zipped["bytes"], zipped["hashes"]))

        if [key(s, folder + "/") for s in shards] != [key(s) for s in theirs]:
            raise DatasetError(f"{folder}/{INDEX_NAME} lists other shards than the merged "
                               f"{INDEX_NAME} (the group was rewritten after merge); {again}")


def label_classes(label: np.ndarray, lam: float, num_classes: int) -> list[tuple[int | None, int | None]]:
    """The ``(class of the base image, class of the patch)`` pairs that give exactly ``label``.

    ``None`` means any class: with ``lam == 1`` nothing was pasted, so the patch's class is not
    in the label (and with ``lam == 0`` the base's). With ``lam == 0.5`` and two classes both
    orders fit. An empty list means the label is no CutMix of two one-hot labels by ``lam``.
    """
    present = [int(c) for c in np.flatnonzero(label)]
    if not 1 <= len(present) <= 2:
        return []
    # mix_targets' arithmetic for one row: float32 λ at a, then 1 - λ (in float32) added at b.
    kept = np.float32(lam)
    pairs: list[tuple[int | None, int | None]] = []
    for a in present:
        for b in present:
            mixed = np.zeros(num_classes, dtype=np.float32)
            mixed[a] = kept
            mixed[b] += np.float32(1.0) - kept
            if np.array_equal(mixed, label):
                pairs.append((a, b))
    if lam == 1.0 and len(present) == 1:
        pairs.append((present[0], None))
    if lam == 0.0 and len(present) == 1:
        pairs.append((None, present[0]))
    return pairs


def is_distribution(label: np.ndarray, num_classes: int) -> bool:
    """Whether ``label`` is ``num_classes`` finite, non-negative weights summing to 1."""
    # Two reductions, not four (it runs for every sample read): a NaN makes the min NaN and an
    # inf makes the sum inf, each failing its comparison, so finiteness needs no pass of its own.
    return bool(label.shape == (num_classes,) and label.size > 0 and label.min() >= 0
                and abs(float(label.sum(dtype=np.float64)) - 1.0) <= _LABEL_TOLERANCE)


def distribution_rows(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """For each row of ``labels`` (``N x K``), whether :func:`is_distribution` accepts it.

    The same two reductions, once for the whole array: ``PremixedDataset`` checks a batch so.
    """
    if labels.ndim != 2 or labels.shape[1] != num_classes or num_classes == 0:
        return np.zeros(len(labels), dtype=bool)
    return (labels.min(1) >= 0) & (np.abs(labels.sum(1, dtype=np.float64) - 1.0) <= _LABEL_TOLERANCE)


def check_sample(item: dict, layout: Layout, where: str) -> None:
    """Check one decoded sample's columns against the layout (shapes, ranges, a valid label).

    Raises:
        DatasetError: naming ``where`` and the first bad column.
    """
    height, width, channels = layout.image_shape
    image = np.asarray(item["image"])
    # A one-channel PNG/JPEG decodes to a 2-D (grey) image.
    if image.shape != (height, width, channels) and not (channels == 1 and image.shape == (height, width)):
        raise DatasetError(f"{where}: image has shape {image.shape}, the manifest says "
                           f"{layout.image_shape}")
    if not is_distribution(np.asarray(item["label"]), layout.num_classes):
        raise DatasetError(f"{where}: label is not a class distribution over "
                           f"{layout.num_classes} classes (finite, non-negative, summing to 1)")
    lam = float(item["lam"])
    if not 0.0 <= lam <= 1.0:
        raise DatasetError(f"{where}: lam {lam} is outside [0, 1]")
    box = np.asarray(item["box"])
    top, left, bottom, right = (int(v) for v in box.reshape(-1)[:4]) if box.size == 4 else (-1,) * 4
    if not (0 <= top <= bottom <= height and 0 <= left <= right <= width):
        raise DatasetError(f"{where}: box {box.tolist()} is outside the {height} x {width} image")
    for key in ("index_a", "index_b"):
        if not 0 <= int(item[key]) < layout.schedule.num_images:
            raise DatasetError(f"{where}: {key} {int(item[key])} is not a source index "
                               f"(the source has {layout.schedule.num_images} images)")
    if not 0 <= int(item["epoch"]) < layout.config.epochs:
        raise DatasetError(f"{where}: epoch {int(item['epoch'])} is not one of the "
                           f"{layout.config.epochs} epochs")
