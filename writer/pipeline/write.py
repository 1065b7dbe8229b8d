"""Writing one pre-mixed dataset: mixed rows into MDS shards, published as they are written.

streaming is imported inside the functions that use it: its package import pulls in
transformers, which would make ``cutmix-writer --help`` take seconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass

from cutmix_algo.sampling import ORDER_KEY
from writer.format.columns import column_encodings
from writer.format.manifest import INDEX_NAME, PremixConfig, manifest_bytes
from writer.format.names import resolve_spec
from writer.pipeline.imageset import ImageSet
from writer.pipeline.pool import write_shards
from writer.pipeline.premix import Schedule
from writer.pipeline.shards import ShardFormat
from writer.publish.store import Destination

__all__ = ["HASHES", "WriteSummary", "build_manifest", "plan_key", "tool_version", "write_premixed"]

HASHES = ["sha1", "xxh64"]


@dataclass(frozen=True)
class WriteSummary:
    """What a write produced."""

    samples: int
    shards: int
    bytes: int
    seconds: float


def plan_key(manifest: dict) -> str:
    """The identity of a write's output: a digest of its manifest, which records everything
    that decides the bytes (arguments, source fingerprint, group, tool version)."""
    return hashlib.sha256(manifest_bytes(manifest) + repr(HASHES).encode()).hexdigest()[:32]


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
    before_commit: Callable[[], None] | None = None,
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> WriteSummary:
    """Pre-mix ``source`` into one MDS dataset at ``destination``, replacing what it holds.

    The write claims ``destination`` first (unless the caller did: :meth:`Destination.claim`),
    stages every shard (keeping those an interrupted write of the same arguments finished),
    and only when all are written commits them: the manifest and ``index.json`` are published
    last and what OUT held before is removed after (:meth:`Destination.commit`). Interrupted
    or failed at any point before the commit, OUT holds what it held before, and the staged
    shards stay for a rerun to resume. Call it under ``if __name__ == "__main__":`` in scripts:
    ``workers > 1`` starts processes.

    Args:
        source: the source images.
        destination: where to publish.
        config: the arguments that decide the bytes.
        manifest: the manifest to publish (:func:`build_manifest`).
        start: first global batch to write (a group's share).
        stop: end global batch (default: all).
        workers: processes that mix, encode and write shards.
        progress: show a tqdm bar (img/s) on stderr.
        before_commit: called just before the commit (with interrupts held).
        say: where the line about resumed or discarded staged shards goes.

    Returns:
        WriteSummary: samples, shards, bytes and seconds.

    Raises:
        DestinationError: if an upload fails or another writer holds or took the claim.
    """
    from tqdm import tqdm

    from writer.streaming_seam import add_finished_shard, index_writer

    schedule = Schedule(len(source), config.batch_size, config.epochs)
    stop = schedule.total_batches if stop is None else stop
    total = schedule.first_sample(stop) - schedule.first_sample(start)
    began = time.perf_counter()
    own_claim = not destination.claimed
    destination.claim()
    uploads = ThreadPoolExecutor(max_workers=4) if destination.remote else None
    futures: list[Future] = []

    def on_shard(entry: dict) -> None:
        if uploads is None:
            destination.stage(entry)
            return
        for future in futures:  # stop early, not after mixing everything, if an upload failed
            if future.done() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        futures.append(uploads.submit(destination.stage, entry))

    writer = None
    try:
        if destination.roll_forward():
            say(f"finished publishing the dataset an interrupted write had completed at {destination.uri}")
        folder, kept, note = destination.start_staging(plan_key(manifest), tuple(HASHES))
        resumed = sum(entry["samples"] for entry in kept)
        if note is not None and (kept or not note.startswith("resuming")):
            say(note if not kept else f"{note} ({resumed:,} of {total:,} samples)")
        # The index is assembled in a folder of its own: MDSWriter wants an empty one, and the
        # staging folder may hold a resumed write's shards.
        index_folder = os.path.join(folder, "index")
        shutil.rmtree(index_folder, ignore_errors=True)
        writer = index_writer(out=index_folder, columns=manifest["columns"],
                              compression=config.compression, hashes=HASHES,
                              size_limit=config.size_limit)
        for entry in kept:
            add_finished_shard(writer, entry)
        steps = write_shards(source, schedule, ShardFormat.from_writer(writer), folder,
                             seed=config.seed, alpha=config.alpha, encoding=config.encoding,
                             start=start, stop=stop, workers=workers, mode=config.mode,
                             first_shard=len(kept), first_row=resumed)
        # closing(): on an error the pool stops here, not whenever the generator is collected.
        with closing(steps), tqdm(total=total, initial=resumed, unit="img", unit_scale=True,
                                  desc="premix", file=sys.stderr, disable=not progress,
                                  mininterval=0.5) as bar:
            for rows, entries in steps:
                for entry in entries:
                    add_finished_shard(writer, entry)
                    on_shard(entry)
                bar.update(rows)
        writer.finish()  # index.json in the local staging folder
        for future in futures:
            future.result()  # an upload failure surfaces here, before anything is published
        names = [(s["zip_data"] or s["raw_data"])["basename"] for s in writer.shards]
        destination.commit(names, manifest_bytes(manifest), os.path.join(writer.local, INDEX_NAME),
                           before=before_commit)
    finally:
        if writer is not None:
            writer.cancel_future_jobs()
        if uploads is not None:
            uploads.shutdown(wait=True, cancel_futures=True)
        destination.close()
        if own_claim:
            destination.release()
    shards = writer.shards
    size = sum((s["zip_data"] or s["raw_data"])["bytes"] for s in shards)
    return WriteSummary(total, len(shards), size, time.perf_counter() - began)


def tool_version() -> str:
    """The installed ``cutmix`` distribution's version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cutmix")
    except PackageNotFoundError:
        return "unknown"


def build_manifest(
    source: ImageSet,
    config: PremixConfig,
    *,
    source_spec: str,
    split: str,
    image_size: int | None = None,
    group: dict | None = None,
    mds_options: dict | None = None,
) -> dict:
    """The manifest stored beside ``index.json``: arguments, source fingerprint, classes, keys.

    It holds nothing that varies between runs with the same arguments (no time, no OUT, no
    worker count), so it is part of the byte-identical output; a group's manifest adds a
    ``group`` entry, which ``merge`` drops again.

    Args:
        source: the source images.
        config: the arguments that decide the bytes.
        source_spec: the ``--source`` text.
        split: the ``--split``.
        image_size: the ``--image-size``, if any.
        group: ``{"index", "count", "start_batch", "stop_batch"}`` for a group's share.
        mds_options: ``{"image_column", "label_column", "num_classes"}`` of an ``mds:`` source;
            recorded as ``args["mds"]`` only where one differs from its default, so other
            writes keep their manifest bytes.

    Returns:
        dict: the manifest.
    """
    schedule = Schedule(len(source), config.batch_size, config.epochs)
    sampler = "sample_row_params" if config.mode == "sample" else "sample_params"
    manifest = {
        "format": "cutmix-premixed",
        "format_version": 1,
        "tool": "cutmix",
        "tool_version": tool_version(),
        "args": {
            "alpha": config.alpha,
            "batch_size": config.batch_size,
            "compression": config.compression,
            "encoding": config.encoding,
            "epochs": config.epochs,
            "image_size": image_size,
            "seed": config.seed,
            "size_limit": config.size_limit,
            "source": source_spec,
            # Where this machine found the source, so verify elsewhere can suggest --source.
            "source_resolved": resolve_spec(source_spec),
            "split": split,
        },
        "source": {
            "fingerprint": source.fingerprint(),
            "num_images": len(source),
            "image_shape": [int(d) for d in source.images.shape[1:]],
        },
        "num_classes": source.num_classes,
        "class_names": list(source.class_names),
        "num_samples": schedule.total_samples,
        "batches_per_epoch": schedule.batches_per_epoch,
        "columns": column_encodings(config.encoding, source.images.shape[1:], source.num_classes),
        "generator_keys": {
            "epoch_order": f"torch.randperm(N, generator=derive_generator(seed, epoch, {ORDER_KEY}))",
            "batch": f"{sampler}(len(batch), H, W, alpha, derive_generator(seed, epoch, batch))",
        },
    }
    if config.mode != "batch":  # recorded only where it is not the default: batch bytes unchanged
        manifest["args"]["mode"] = config.mode
    defaults = {"image_column": "image", "label_column": "label", "num_classes": None}
    if mds_options and any(mds_options.get(k, v) != v for k, v in defaults.items()):
        manifest["args"]["mds"] = {k: mds_options.get(k, v) for k, v in defaults.items()}
    if group is not None:
        manifest["group"] = group
    return manifest
