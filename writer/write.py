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
from typing import Any

from writer.manifest import INDEX_NAME, MANIFEST_NAME, PremixConfig, manifest_bytes
from writer.pool import write_shards
from writer.premix import Schedule
from writer.shards import ShardFormat
from writer.sources import ImageSet
from writer.store import Destination

__all__ = ["HASHES", "WriteSummary", "write_premixed"]

HASHES = ["sha1", "xxh64"]


@dataclass(frozen=True)
class WriteSummary:
    """What a write produced."""

    samples: int
    shards: int
    bytes: int
    seconds: float


def _index_writer(**kwargs: Any) -> Any:
    from streaming import MDSWriter

    class IndexWriter(MDSWriter):
        """An ``MDSWriter`` that is handed finished shards: it writes none, only the index.

        Its config, size accounting and index are streaming's own; the shards come from
        :func:`writer.pool.write_shards`, which cuts them where ``write`` would have.
        """

        def exception_callback(self, future: Future) -> None:
            # streaming's callback calls future.exception(), which raises CancelledError for the
            # jobs cancel_future_jobs() cancels after a failure: concurrent.futures would log a
            # traceback per job above the one-line error.
            if not future.cancelled():
                super().exception_callback(future)

    return IndexWriter(**kwargs)


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
        manifest: the manifest to publish (:func:`writer.manifest.build_manifest`).
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
    writer = _index_writer(
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
                    writer.shards.append(entry)
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
