"""``cutmix-writer``: write, verify, preview and merge pre-mixed CutMix MDS datasets.

Every failure the user can cause (a bad flag, a missing source, a non-empty OUT, an unreachable
bucket, a corrupt dataset) ends as a click error: one line, no traceback, non-zero exit.

streaming is imported inside the functions that use it: its package import pulls in
transformers, which would make ``--help`` and flag errors take seconds.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import click
import numpy as np
import torch

from cutmix_algo.sampling import check_alpha, derive_generator
from writer.premix import (
    DEFAULT_SIZE_LIMIT,
    ENCODINGS,
    INDEX_NAME,
    MANIFEST_NAME,
    PremixConfig,
    Schedule,
    ScheduleLookup,
    build_manifest,
    config_from_manifest,
    default_workers,
    encode_rows,
    iter_encoded,
    manifest_bytes,
    mix_pair,
)
from writer.sources import SPLITS, ImageSet, SourceError, open_source

__all__ = [
    "Destination",
    "DestinationError",
    "VerifyError",
    "WriteSummary",
    "main",
    "merge_groups",
    "render_preview",
    "verify_dataset",
    "write_premixed",
]

HASHES = ["sha1", "xxh64"]
_STAGING_NAME = ".cutmix-staging"
_VERIFY_KEY = 2**32 - 2  # generator key of verify's sample choice; never a seed's batch number


# ---------------------------------------------------------------------------------------------
# Destinations: a local folder or a remote prefix; files are staged locally, then published.
# ---------------------------------------------------------------------------------------------


class DestinationError(RuntimeError):
    """OUT cannot be used: unreachable, or not deletable for ``--overwrite``."""


def is_remote(uri: str) -> bool:
    """Whether ``uri`` names object storage (``s3://``, ``gs://``, …) rather than a local path."""
    return "://" in uri


def join_uri(uri: str, *parts: str) -> str:
    """``uri`` with path ``parts`` appended, for local paths and URIs alike."""
    if is_remote(uri):
        return "/".join([uri.rstrip("/"), *parts])
    return os.path.join(uri, *parts)


class Destination:
    """Where a dataset is published: a local folder or a remote prefix.

    Files are staged in a local folder (inside OUT for a local OUT, so publishing is an atomic
    rename) and published one by one; callers publish ``index.json`` last, so whatever a crash
    leaves behind, no index lists a shard that is not there.

    Args:
        uri: local folder or remote URI (S3-compatible endpoints via ``S3_ENDPOINT_URL``).
        retry: attempts per upload (streaming's ``retry``); small, so errors surface quickly.

    Raises:
        DestinationError: if a remote URI's bucket cannot be reached.
    """

    def __init__(self, uri: str, retry: int = 2) -> None:
        from streaming.base.storage.upload import CloudUploader

        self.remote = is_remote(uri)
        self.uri = uri.rstrip("/") if self.remote else os.path.abspath(uri)
        self._uploader = None
        if self.remote:
            self.staging = tempfile.mkdtemp(prefix="cutmix-writer-")
            try:
                self._uploader = CloudUploader.get((self.staging, self.uri), retry=retry)
            except Exception as e:  # botocore & co. raise many kinds; all mean "unusable"
                shutil.rmtree(self.staging, ignore_errors=True)
                raise DestinationError(f"cannot reach {uri}: {e}") from None
        else:
            self.staging = os.path.join(self.uri, _STAGING_NAME)

    def existing(self) -> list[str]:
        """Names of the files (or object keys) already under the destination."""
        if not self.remote:
            if os.path.exists(self.uri) and not os.path.isdir(self.uri):
                raise DestinationError(f"{self.uri} exists and is not a directory")
            return sorted(os.listdir(self.uri)) if os.path.isdir(self.uri) else []
        try:
            return sorted(self._uploader.list_objects() or [])  # type: ignore[union-attr]
        except NotImplementedError:
            return []
        except Exception as e:
            raise DestinationError(f"cannot list {self.uri}: {e}") from None

    def clear(self) -> None:
        """Delete everything under the destination, ``index.json`` first.

        Raises:
            DestinationError: for remote stores other than S3, where streaming has no delete.
        """
        if not self.remote:
            index = os.path.join(self.uri, INDEX_NAME)
            if os.path.lexists(index):
                os.remove(index)
            for name in self.existing():
                path = os.path.join(self.uri, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
            return
        keys = self.existing()
        client = getattr(self._uploader, "s3", None)
        if keys and (client is None or not self.uri.startswith("s3://")):
            raise DestinationError(
                f"{self.uri} is not empty and --overwrite can only delete from s3:// buckets; "
                "empty it yourself first"
            )
        bucket = self.uri[len("s3://"):].split("/", 1)[0]
        keys.sort(key=lambda key: key.rsplit("/", 1)[-1] != INDEX_NAME)  # indexes first
        for key in keys:  # one by one, so no moment has an index without its shards
            try:
                client.delete_object(Bucket=bucket, Key=key)  # type: ignore[union-attr]
            except Exception as e:
                raise DestinationError(f"cannot delete s3://{bucket}/{key}: {e}") from None

    def open_staging(self) -> str:
        """Return the local staging folder's path, with no leftovers from a killed run."""
        if not self.remote:
            shutil.rmtree(self.staging, ignore_errors=True)
        return self.staging

    def publish(self, basename: str) -> None:
        """Move ``staging/basename`` to the destination (a rename locally, an upload remotely)."""
        if self.remote:
            try:
                self._uploader.upload_file(basename)  # type: ignore[union-attr]
            except Exception as e:
                raise DestinationError(f"cannot upload {basename} to {self.uri}: {e}") from None
            return
        target = os.path.join(self.uri, basename)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(os.path.join(self.staging, basename), target)

    def publish_bytes(self, basename: str, data: bytes) -> None:
        """Write ``data`` as ``basename`` at the destination, atomically where the store allows."""
        os.makedirs(self.staging, exist_ok=True)
        with open(os.path.join(self.staging, basename), "wb") as f:
            f.write(data)
        self.publish(basename)

    def close(self) -> None:
        """Remove the staging folder."""
        shutil.rmtree(self.staging, ignore_errors=True)


def _fetch(uri: str, names: list[str], into: str) -> None:
    """Download ``names`` (paths relative to ``uri``) into the local folder ``into``."""
    from streaming.base.storage.download import CloudDownloader

    for name in names:
        CloudDownloader.direct_download(join_uri(uri, name), os.path.join(into, name), 60)


def _read_json(uri: str, name: str, scratch: str) -> dict:
    """Load ``uri/name`` (downloaded into ``scratch`` if remote); ``FileNotFoundError`` if absent."""
    if not is_remote(uri):
        with open(os.path.join(uri, name)) as f:
            return json.load(f)
    try:
        _fetch(uri, [name], scratch)
    except Exception as e:
        raise FileNotFoundError(f"cannot read {join_uri(uri, name)}: {e}") from None
    with open(os.path.join(scratch, name)) as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------
# write
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteSummary:
    """What a write produced."""

    samples: int
    shards: int
    bytes: int
    seconds: float


def _row_writer(on_shard: Callable[[str], None], **kwargs: Any) -> Any:
    from streaming import MDSWriter

    class RowWriter(MDSWriter):
        """An ``MDSWriter`` fed rows :func:`encode_rows` already encoded.

        It keeps MDSWriter's shard layout, size limit, compression, hashes and index, and
        reports each shard's file name as soon as the shard is on disk.
        """

        def encode_sample(self, sample: bytes) -> bytes:  # type: ignore[override]
            return sample

        def flush_shard(self) -> None:
            super().flush_shard()
            info = self.shards[-1]
            on_shard((info["zip_data"] or info["raw_data"])["basename"])

    return RowWriter(**kwargs)


def write_premixed(
    source: ImageSet,
    destination: Destination,
    config: PremixConfig,
    manifest: dict,
    *,
    start: int = 0,
    stop: int | None = None,
    workers: int = 1,
    progress: bool = True,
) -> WriteSummary:
    """Pre-mix ``source`` into one MDS dataset at an empty ``destination``.

    Shards are published as they are flushed, then the manifest, then ``index.json``; a crash
    anywhere before the end leaves no index. Call it under ``if __name__ == "__main__":`` in
    scripts: ``workers > 1`` starts processes.

    Args:
        source: the source images.
        destination: where to publish (empty; see :meth:`Destination.clear`).
        config: the arguments that decide the bytes.
        manifest: the manifest to publish (:func:`writer.premix.build_manifest`).
        start: first global batch to write (a group's share).
        stop: end global batch (default: all).
        workers: processes that mix and encode.
        progress: show a tqdm bar (img/s) on stderr.

    Returns:
        WriteSummary: samples, shards, bytes and seconds.

    Raises:
        DestinationError: if an upload fails.
    """
    from tqdm import tqdm

    schedule = Schedule(len(source), config.batch_size, config.epochs)
    stop = schedule.total_batches if stop is None else stop
    total = schedule.first_sample(stop) - schedule.first_sample(start)
    uploads = ThreadPoolExecutor(max_workers=4) if destination.remote else None
    futures: list[Future] = []

    def on_shard(basename: str) -> None:
        if uploads is None:
            destination.publish(basename)
            return
        for future in futures:  # stop early, not after mixing everything, if an upload failed
            if future.done() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        futures.append(uploads.submit(destination.publish, basename))

    began = time.perf_counter()
    writer = _row_writer(
        on_shard,
        out=destination.open_staging(),
        columns=manifest["columns"],
        compression=config.compression,
        hashes=HASHES,
        size_limit=config.size_limit,
    )
    try:
        chunks = iter_encoded(source, schedule, seed=config.seed, alpha=config.alpha,
                              encoding=config.encoding, start=start, stop=stop, workers=workers)
        with tqdm(total=total, unit="img", unit_scale=True, desc="premix", file=sys.stderr,
                  disable=not progress, mininterval=0.5) as bar:
            for rows in chunks:
                for row in rows:
                    writer.write(row)
                bar.update(len(rows))
        writer.finish()  # last shard; index.json in staging
        for future in futures:
            future.result()  # an upload failure surfaces here, before any index is published
        destination.publish_bytes(MANIFEST_NAME, manifest_bytes(manifest))
        destination.publish(INDEX_NAME)
    finally:
        writer.cancel_future_jobs()
        if uploads is not None:
            uploads.shutdown(wait=True, cancel_futures=True)
        destination.close()
    shards = writer.shards
    size = sum((s["zip_data"] or s["raw_data"])["bytes"] for s in shards)
    return WriteSummary(total, len(shards), size, time.perf_counter() - began)


# ---------------------------------------------------------------------------------------------
# merge
# ---------------------------------------------------------------------------------------------


def _group_name(index: int) -> str:
    return f"group-{index}"


def _strip_group(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k != "group"}


def merge_groups(out: str, retry: int = 2) -> int:
    """Join ``OUT/group-0`` … ``OUT/group-{G-1}`` into one dataset at ``OUT``.

    The manifest (without its ``group`` entry, so byte-equal to a single write's) is published
    first, then streaming's ``merge_index`` writes the joined ``index.json``.

    Args:
        out: the folder or URI holding the groups.
        retry: attempts per upload.

    Returns:
        int: the number of groups merged.

    Raises:
        click.ClickException: if a group is missing, unfinished or from other arguments.
        DestinationError: if OUT cannot be reached or written.
    """
    from streaming.base.util import merge_index

    with tempfile.TemporaryDirectory(prefix="cutmix-merge-") as scratch:
        manifests = []
        count = None
        index = 0
        while count is None or index < count:
            name = _group_name(index)
            try:
                manifest = _read_json(out, f"{name}/{MANIFEST_NAME}", scratch)
                _read_json(out, f"{name}/{INDEX_NAME}", scratch)
            except (FileNotFoundError, json.JSONDecodeError):
                raise click.ClickException(
                    f"group {index} is missing or unfinished: no {name}/{INDEX_NAME} with its "
                    f"{MANIFEST_NAME} under {out}; write it with --group {index}"
                ) from None
            group = manifest.get("group")
            if group is None or group.get("index") != index:
                raise click.ClickException(f"{join_uri(out, name)} is not group {index}")
            count = group["count"] if count is None else count
            reference = manifests[0] if manifests else manifest
            if group["count"] != count or _strip_group(manifest) != _strip_group(reference):
                raise click.ClickException(
                    f"group {index} was written with other arguments or another source than "
                    "group 0; rewrite it"
                )
            manifests.append(manifest)
            index += 1
        destination = Destination(out, retry=retry)
        try:
            if not destination.remote:
                index_path = os.path.join(destination.uri, INDEX_NAME)
                if os.path.lexists(index_path):
                    os.remove(index_path)  # merge_index refuses to replace it
            destination.publish_bytes(MANIFEST_NAME, manifest_bytes(_strip_group(manifests[0])))
        finally:
            destination.close()
        urls = [join_uri(destination.uri, _group_name(i), INDEX_NAME) for i in range(count)]
        try:
            # keep_local: for a local OUT the "local copy" is OUT itself.
            merge_index(urls, destination.uri, keep_local=not destination.remote)
        except Exception as e:  # downloads and uploads of indexes; streaming raises many kinds
            raise DestinationError(f"cannot merge the group indexes under {out}: {e}") from None
    return count


# ---------------------------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------------------------


class VerifyError(Exception):
    """A dataset does not match its index or its source."""


@dataclass(frozen=True)
class VerifyReport:
    """What a successful verify checked."""

    shards: int
    samples_checked: int
    samples_total: int


def _local_dataset(out: str, scratch: str) -> tuple[str, dict]:
    """A local folder holding the dataset at ``out`` (downloaded if remote), and its index."""
    try:
        index = _read_json(out, INDEX_NAME, scratch)
    except (FileNotFoundError, json.JSONDecodeError) as e:
        raise VerifyError(f"no readable {INDEX_NAME} at {out}: {e}") from None
    if not is_remote(out):
        return out, index
    for shard in index["shards"]:
        name = (shard["zip_data"] or shard["raw_data"])["basename"]
        try:
            _fetch(out, [name], scratch)
        except Exception as e:
            raise VerifyError(f"shard {name} cannot be downloaded from {out}: {e}") from None
    return scratch, index


def _check_shards(folder: str, index: dict, unpacked: str) -> list[tuple[dict, str]]:
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
        folder, index = _local_dataset(out, scratch)
        try:
            manifest = _read_json(out, MANIFEST_NAME, scratch)
        except (FileNotFoundError, json.JSONDecodeError) as e:
            raise VerifyError(f"no readable {MANIFEST_NAME} at {out}: {e}") from None
        unpacked = os.path.join(scratch, "unpacked")
        shards = _check_shards(folder, index, unpacked)
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


# ---------------------------------------------------------------------------------------------
# preview
# ---------------------------------------------------------------------------------------------


def render_preview(out: str, png: str, n: int = 16) -> int:
    """Draw the first ``n`` samples of a dataset in a PNG grid, box outlined, classes titled.

    Args:
        out: the dataset (local folder or remote URI).
        png: the PNG file to write.
        n: how many samples to draw.

    Returns:
        int: the number of samples drawn.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    from streaming.base.format import reader_from_json

    with tempfile.TemporaryDirectory(prefix="cutmix-preview-") as scratch:
        folder, index = _local_dataset(out, scratch)
        manifest = _read_json(out, MANIFEST_NAME, scratch)
        names = manifest["class_names"]
        shards = _check_shards(folder, index, os.path.join(scratch, "unpacked"))
        samples = []
        for info, raw_folder in shards:
            reader = reader_from_json(raw_folder, "", info)
            for i in range(info["samples"]):
                if len(samples) == n:
                    break
                samples.append(reader.get_item(i))
        if not samples:
            raise VerifyError(f"{out} holds no samples")
        cols = math.ceil(math.sqrt(len(samples)))
        rows = math.ceil(len(samples) / cols)
        figure = Figure(figsize=(2.2 * cols, 2.5 * rows), dpi=100)
        FigureCanvasAgg(figure)
        for k, item in enumerate(samples):
            axes = figure.add_subplot(rows, cols, k + 1)
            axes.imshow(np.asarray(item["image"]).squeeze(), cmap="gray", interpolation="nearest")
            top, left, bottom, right = (int(v) for v in item["box"])
            axes.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top,
                                     fill=False, edgecolor="red", linewidth=1.5))
            label = np.asarray(item["label"])
            weights = [(float(label[c]), c) for c in np.flatnonzero(label)]
            weights.sort(reverse=True)
            axes.set_title("\n".join(f"{names[c]} {w:.2f}" for w, c in weights[:2]), fontsize=8)
            axes.set_axis_off()
        figure.tight_layout()
        figure.savefig(png, format="png")
    return len(samples)


# ---------------------------------------------------------------------------------------------
# The click commands
# ---------------------------------------------------------------------------------------------


def _alpha(ctx: click.Context, param: click.Parameter, value: float) -> float:
    try:
        return check_alpha(value)
    except ValueError as e:
        raise click.BadParameter(str(e), ctx, param) from None


def _compression(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from streaming.base.compression import get_compressions, is_compression

    if value in (None, "", "none"):
        return None
    if not is_compression(value):
        raise click.BadParameter(
            f"{value!r} is not one of streaming's compressions: "
            f"{', '.join(sorted(get_compressions()))}", ctx, param)
    return value


def _load(source: str, split: str, image_size: int | None) -> ImageSet:
    try:
        return open_source(source, split, image_size)
    except SourceError as e:
        raise click.BadParameter(str(e), param_hint="'--source'") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Pre-mix image datasets with CutMix into byte-reproducible MDS shards."""


@main.command()
@click.option("--source", required=True,
              help="cifar10:DIR, imagefolder:DIR, mds:URI or digits.")
@click.option("--split", type=click.Choice(SPLITS), default="train", show_default=True)
@click.option("--out", required=True, help="Local folder or remote URI (s3://, gs://, ...).")
@click.option("--alpha", type=float, default=1.0, show_default=True, callback=_alpha,
              help="Beta(alpha, alpha) parameter for λ.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True,
              help="Images sharing one λ and one box.")
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes that mix and encode [default: all CPUs].")
@click.option("--encoding", type=click.Choice(ENCODINGS), default="raw", show_default=True)
@click.option("--compression", default=None, callback=_compression,
              help="Shard compression, e.g. zstd [default: none].")
@click.option("--size-limit", type=click.IntRange(min=1 << 10, max=(1 << 32) - 1),
              default=DEFAULT_SIZE_LIMIT, show_default=True, help="Shard size limit in bytes.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty OUT.")
@click.option("--image-size", type=click.IntRange(min=1), default=None,
              help="imagefolder: resize the short side and center-crop to N x N.")
@click.option("--num-groups", type=click.IntRange(min=1), default=None,
              help="Split the batches into G contiguous groups (with --group).")
@click.option("--group", type=click.IntRange(min=0), default=None,
              help="Which group to write, into OUT/group-I.")
@click.option("--retry", type=click.IntRange(min=1, max=10), default=2, show_default=True,
              help="Attempts per upload.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def write(source: str, split: str, out: str, alpha: float, batch_size: int, epochs: int,
          seed: int, workers: int | None, encoding: str, compression: str | None,
          size_limit: int, overwrite: bool, image_size: int | None, num_groups: int | None,
          group: int | None, retry: int, progress: bool) -> None:
    """Write OUT: the CutMix of SOURCE, epoch by epoch, batch by batch, as one MDS dataset."""
    if (num_groups is None) != (group is None):
        raise click.UsageError("--num-groups and --group go together")
    if num_groups is not None and group >= num_groups:  # type: ignore[operator]
        raise click.BadParameter(f"{group} is not in [0, {num_groups})", param_hint="'--group'")
    target = out if group is None else join_uri(out, _group_name(group))
    try:
        destination = Destination(target, retry=retry)
        existing = destination.existing()
    except DestinationError as e:
        raise click.ClickException(str(e)) from None
    try:
        if existing and not overwrite:
            raise click.UsageError(f"{target} is not empty; pass --overwrite to replace it")
        images = _load(source, split, image_size)
        config = PremixConfig(alpha, batch_size, epochs, seed, encoding, compression, size_limit)
        schedule = Schedule(len(images), batch_size, epochs)
        start, stop, group_info = 0, schedule.total_batches, None
        if num_groups is not None:
            if num_groups > schedule.total_batches:
                raise click.BadParameter(
                    f"{num_groups} groups for {schedule.total_batches} batches: some would be "
                    "empty", param_hint="'--num-groups'")
            start, stop = schedule.group_range(num_groups, group)  # type: ignore[arg-type]
            group_info = {
                "index": group, "count": num_groups, "start_batch": start, "stop_batch": stop,
                "num_samples": schedule.first_sample(stop) - schedule.first_sample(start),
            }
        manifest = build_manifest(images, config, source_spec=source, split=split,
                                  image_size=image_size, group=group_info)
        if existing:
            destination.clear()
        summary = write_premixed(images, destination, config, manifest, start=start, stop=stop,
                                 workers=workers or default_workers(), progress=progress)
    except DestinationError as e:
        raise click.ClickException(str(e)) from None
    finally:
        if destination.remote:  # its staging is a temp folder; a local one lives in OUT
            destination.close()
    rate = summary.samples / summary.seconds if summary.seconds else float("inf")
    click.echo(f"wrote {summary.samples} samples in {summary.shards} shards, "
               f"{summary.bytes:,} bytes, {summary.seconds:.2f} s ({rate:,.0f} img/s) to {target}")


@main.command()
@click.argument("out")
@click.option("--source", default=None, help="The source OUT was written from [default: the "
              "manifest's].")
@click.option("--split", type=click.Choice(SPLITS), default=None,
              help="Its split [default: the manifest's].")
@click.option("--sample", type=click.FloatRange(0, 1, min_open=True), default=1.0,
              show_default=True, help="Fraction of samples to recompute, in (0, 1].")
def verify(out: str, source: str | None, split: str | None, sample: float) -> None:
    """Check OUT's shard hashes and recompute its samples from the source."""
    with tempfile.TemporaryDirectory(prefix="cutmix-verify-") as scratch:
        try:
            args = _read_json(out, MANIFEST_NAME, scratch)["args"]
        except (FileNotFoundError, json.JSONDecodeError) as e:
            raise click.ClickException(f"verify failed: no readable {MANIFEST_NAME} at {out}: "
                                       f"{e}") from None
    images = _load(source or args["source"], split or args["split"], args["image_size"])
    try:
        report = verify_dataset(out, images, sample)
    except VerifyError as e:
        raise click.ClickException(f"verify failed: {e}") from None
    click.echo(f"OK: {report.shards} shards match their hashes; {report.samples_checked} of "
               f"{report.samples_total} samples recomputed from the source and equal")


@main.command()
@click.argument("out")
@click.option("--out", "png", required=True, help="The PNG file to write.")
@click.option("--n", type=click.IntRange(min=1, max=256), default=16, show_default=True,
              help="Samples to draw.")
def preview(out: str, png: str, n: int) -> None:
    """Draw OUT's first samples in a PNG grid, with the box and both classes' weights."""
    try:
        drawn = render_preview(out, png, n)
    except VerifyError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"drew {drawn} samples to {png}")


@main.command()
@click.argument("out")
@click.option("--retry", type=click.IntRange(min=1, max=10), default=2, show_default=True)
def merge(out: str, retry: int) -> None:
    """Join OUT/group-0 … group-{G-1} into one dataset at OUT."""
    try:
        count = merge_groups(out, retry)
    except DestinationError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"merged {count} groups into {out}")


if __name__ == "__main__":
    main()
