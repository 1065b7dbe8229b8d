"""Writing one pre-mixed dataset: mixed rows into MDS shards, published as they are written.

streaming is imported inside the functions that use it: its package import pulls in
transformers, which would make ``cutmix-writer --help`` take seconds.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass

from cutmix_algo.sampling import ORDER_KEY
from writer.format.columns import column_encodings
from writer.format.manifest import INDEX_NAME, MANIFEST_NAME, PremixConfig, manifest_bytes
from writer.format.names import resolve_spec
from writer.pipeline.imageset import ImageSet
from writer.pipeline.pool import write_shards
from writer.pipeline.premix import Schedule
from writer.pipeline.shards import ShardFormat
from writer.publish.store import Destination

__all__ = ["HASHES", "WriteSummary", "build_manifest", "tool_version", "write_premixed"]

HASHES = ["sha1", "xxh64"]


@dataclass(frozen=True)
class WriteSummary:
    """What a write produced."""

    samples: int
    shards: int
    bytes: int
    seconds: float


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

    The write claims ``destination`` first (unless the caller did: :meth:`Destination.claim`),
    publishes shards as they are written, checks that it still holds the claim (and, in a
    bucket, that its shards are unchanged), then publishes the manifest and ``index.json``. A
    crash anywhere before the end leaves no index; a failure or an interrupt (Ctrl-C, SIGTERM
    turned into ``KeyboardInterrupt``) also removes the shards this write published. Call it
    under ``if __name__ == "__main__":`` in scripts: ``workers > 1`` starts processes.

    Args:
        source: the source images.
        destination: where to publish (empty; see :meth:`Destination.clear`).
        config: the arguments that decide the bytes.
        manifest: the manifest to publish (:func:`writer.format.manifest.build_manifest`).
        start: first global batch to write (a group's share).
        stop: end global batch (default: all).
        workers: processes that mix, encode and write shards.
        progress: show a tqdm bar (img/s) on stderr.

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
    own_claim = not destination.claimed
    destination.claim()
    done = False
    writer = index_writer(
        out=destination.open_staging(),
        columns=manifest["columns"],
        compression=config.compression,
        hashes=HASHES,
        size_limit=config.size_limit,
    )
    try:
        steps = write_shards(source, schedule, ShardFormat.from_writer(writer), writer.local,
                             seed=config.seed, alpha=config.alpha, encoding=config.encoding,
                             start=start, stop=stop, workers=workers, mode=config.mode)
        # closing(): on an error the pool stops here, not whenever the generator is collected.
        with closing(steps), tqdm(total=total, unit="img", unit_scale=True, desc="premix",
                                  file=sys.stderr, disable=not progress, mininterval=0.5) as bar:
            for rows, entries in steps:
                for entry in entries:
                    add_finished_shard(writer, entry)
                    on_shard((entry["zip_data"] or entry["raw_data"])["basename"])
                bar.update(rows)
        writer.finish()  # index.json in staging
        for future in futures:
            future.result()  # an upload failure surfaces here, before any index is published
        destination.check_published()
        destination.ensure_claimed()
        destination.publish_bytes(MANIFEST_NAME, manifest_bytes(manifest))
        destination.ensure_claimed()
        destination.publish(INDEX_NAME)
        done = True
    finally:
        writer.cancel_future_jobs()
        if uploads is not None:
            uploads.shutdown(wait=True, cancel_futures=True)
        if not done:
            destination.remove_published()
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
