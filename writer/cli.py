"""``cutmix-writer``: the click commands that write, verify, preview and merge pre-mixed datasets.

Each command parses its flags, calls the library (:mod:`writer.pipeline.write`, :mod:`writer.audit.verify`,
:mod:`writer.audit.preview`, :mod:`writer.publish.merge`) and turns its errors into click errors: every failure
the user can cause (a bad flag, a missing source, a non-empty OUT, an unreachable bucket, a
corrupt dataset) ends as one line, no traceback, non-zero exit.

streaming is imported inside the functions that use it: its package import pulls in
transformers, which would make ``--help`` and flag errors take seconds.
"""

from __future__ import annotations

import math
import os
import signal
from typing import Any

import click

from cutmix_algo.sampling import check_alpha
from writer.audit.preview import render_preview
from writer.audit.verify import (
    recorded_args,
    recorded_mds_options,
    source_hint,
    trusted_recorded_source,
    verify_dataset,
)
from writer.errors import DatasetError, WriterError
from writer.format.manifest import DEFAULT_SIZE_LIMIT, INDEX_NAME, MODES, PremixConfig
from writer.format.names import is_remote, join_uri, member_path, normalize_uri
from writer.pipeline import interrupts
from writer.pipeline.encode import ENCODINGS
from writer.pipeline.pool import default_workers, start_fork_server
from writer.pipeline.premix import Schedule
from writer.pipeline.scratch import sweep_stale
from writer.pipeline.sources import SPLITS, ImageSet, SourceError, open_source, source_locations
from writer.pipeline.write import build_manifest, write_premixed
from writer.publish.merge import group_name, merge_groups
from writer.publish.store import DEFAULT_TIMEOUT, Destination, DestinationError, check_out

__all__ = ["main"]


def _uri(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """OUT as used and printed: a remote URI in its one spelling (:func:`normalize_uri`)."""
    return normalize_uri(value)


def _alpha(ctx: click.Context, param: click.Parameter, value: float) -> float:
    try:
        return check_alpha(value)
    except ValueError as e:
        raise click.BadParameter(str(e), ctx, param) from None


def _compression(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value in (None, "", "none"):
        return None  # before importing streaming, whose package import takes seconds
    from streaming.base.compression import get_compressions, is_compression

    if not is_compression(value):
        raise click.BadParameter(
            f"{value!r} is not one of streaming's compressions: "
            f"{', '.join(sorted(get_compressions()))}", ctx, param)
    if value.split(":")[0] == "gz":
        # gzip stores the time of compression in its header: no two writes would match.
        raise click.BadParameter(
            f"{value!r} writes the current time into every shard, so the output would not be "
            "byte-reproducible; use zstd, bz2, br or snappy", ctx, param)
    return value


def _load(source: str, split: str, image_size: int | None, **mds_options: Any) -> ImageSet:
    try:
        return open_source(source, split, image_size, **mds_options)
    except SourceError as e:
        raise click.BadParameter(str(e), param_hint="'--source'") from None


class _Interrupted(click.ClickException):
    """Ctrl-C or SIGTERM during a write: one line, exit 128 + the signal's number."""

    def __init__(self, signum: int, state: str) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name}: stopped the workers; {state}")
        self.exit_code = 128 + signum


def _check_size(destination: Destination, images: ImageSet, config: PremixConfig, samples: int) -> None:
    """Say how big the write will be; refuse a raw write that cannot fit in a local OUT's free space."""
    from writer.pipeline.encode import raw_record

    row = raw_record(images.images.shape[1:], images.num_classes).itemsize + 4  # + its offset
    size = samples * row
    exact = config.encoding == "raw" and config.compression is None
    kind = "" if exact else f" as raw rows; {config.encoding}/{config.compression or 'uncompressed'} rows vary"
    click.echo(f"writing {samples:,} samples x {row:,} bytes = {_bytes(size)}{kind}", err=True)
    if destination.remote or not exact:
        return
    folder = destination.uri
    while not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize + destination.staged_bytes()
    if size > free:
        raise click.BadParameter(
            f"the write needs about {_bytes(size)} ({samples:,} samples x {row:,} bytes) but "
            f"{folder} has {_bytes(free)} free", param_hint="'--out'")


def _bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} PB"


def _check_existing(destination: Destination, target: str, overwrite: bool) -> None:
    if destination.existing():
        if not overwrite:
            raise click.UsageError(f"{target} is not empty; pass --overwrite to replace it")
        destination.check_replaceable()


def _invalidate_merged_root(out: str, retry: int, timeout: float, *, check_only: bool = False) -> bool:
    """Remove OUT's merged index and manifest before a group of it changes; True if removed.

    ``check_only``: only refuse a root that holds a dataset written whole (before anything is
    claimed or written), remove nothing.
    """
    root = Destination(out, retry=retry, timeout=timeout)
    try:
        if check_only:
            root.refuse_whole_dataset()
            return False
        return root.remove_merged()
    finally:
        root.close()


_TARGET = "cutmix_writer.target"  # ctx.meta key: the OUT (or group folder) a write is writing
_STATE = "cutmix_writer.state"  # ctx.meta key: says what a failed write left at OUT


class _Main(click.Group):
    """The command group: catches every :class:`~writer.errors.WriterError`, here and only here.

    A command's library error ends as one click error line, prefixed with what was being done:
    ``verify failed: …``, ``cannot write OUT: …``; preview's and merge's errors say it already.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WriterError as e:
            target = ctx.meta.get(_TARGET)
            if ctx.invoked_subcommand == "verify":
                raise click.ClickException(f"verify failed: {e}") from None
            if target is not None:
                state = ctx.meta.get(_STATE)
                raise click.ClickException(f"cannot write {target}: {e}"
                                           + (f"; {state()}" if state else "")) from None
            raise click.ClickException(str(e)) from None


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    # click's FloatRange lets NaN through (it fails every comparison) and takes inf.
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Pre-mix image datasets with CutMix into byte-reproducible MDS shards."""


@main.command()
@click.option("--source", required=True,
              help="cifar10:DIR, imagefolder:DIR, mds:URI or digits.")
@click.option("--split", type=click.Choice(SPLITS), default="train", show_default=True)
@click.option("--out", required=True, callback=_uri, help="Local folder or remote URI (s3://, gs://, ...).")
@click.option("--alpha", type=float, default=1.0, show_default=True, callback=_alpha,
              help="Beta(alpha, alpha) parameter for λ.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True,
              help="Images per batch: one permutation, and one λ and box in batch mode.")
@click.option("--epochs", type=click.IntRange(min=1, max=2**31 - 1), default=1, show_default=True,
              help="Passes over the source (the epoch column is int32).")
@click.option("--seed", type=click.IntRange(min=0, max=2**64 - 1), default=0, show_default=True,
              help="The root of every generator key, in [0, 2**64).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes that mix and encode [default: all CPUs].")
@click.option("--encoding", type=click.Choice(ENCODINGS), default="raw", show_default=True)
@click.option("--mode", type=click.Choice(MODES), default="batch", show_default=True,
              help="batch: one λ and box per batch (the paper's); sample: one per image.")
@click.option("--compression", default=None, callback=_compression,
              help="Shard compression, e.g. zstd [default: none].")
@click.option("--size-limit", type=click.IntRange(min=1 << 10, max=(1 << 32) - 1),
              default=DEFAULT_SIZE_LIMIT, show_default=True, help="Shard size limit in bytes.")
@click.option("--overwrite", is_flag=True,
              help="Replace OUT if it holds only a dataset cutmix-writer wrote (nothing else).")
@click.option("--image-size", type=click.IntRange(min=1), default=None,
              help="imagefolder: resize the short side and center-crop to N x N.")
@click.option("--image-column", default="image", show_default=True,
              help="mds: the source column holding images.")
@click.option("--label-column", default="label", show_default=True,
              help="mds: the source column holding int labels.")
@click.option("--num-classes", type=click.IntRange(min=1), default=None,
              help="mds: the number of classes K [default: the largest label + 1, every class "
              "used].")
@click.option("--num-groups", type=click.IntRange(min=1), default=None,
              help="Split the batches into G contiguous groups (with --group).")
@click.option("--group", type=click.IntRange(min=0), default=None,
              help="Which group to write, into OUT/group-I.")
@click.option("--retry", type=click.IntRange(min=1, max=10), default=2, show_default=True,
              help="Attempts per upload; each retry is reported.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True, max=86400), default=DEFAULT_TIMEOUT,
              callback=_finite,
              show_default=True, help="s3://: seconds to wait to connect and for each read.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def write(source: str, split: str, out: str, alpha: float, batch_size: int, epochs: int,
          seed: int, workers: int | None, encoding: str, mode: str, compression: str | None,
          size_limit: int, overwrite: bool, image_size: int | None, image_column: str,
          label_column: str, num_classes: int | None, num_groups: int | None,
          group: int | None, retry: int, timeout: float, progress: bool) -> None:
    """Write OUT: the CutMix of SOURCE, epoch by epoch, batch by batch, as one MDS dataset.

    OUT must be empty, or hold only a dataset cutmix-writer wrote (or a killed write's
    leftovers) with --overwrite given. One write at a time holds OUT (a claim). SIGTERM stops a
    write like Ctrl-C.
    """
    with interrupts.handling():
        _write(source, split, out, alpha, batch_size, epochs, seed, workers, encoding, mode,
               compression, size_limit, overwrite, image_size,
               {"image_column": image_column, "label_column": label_column,
                "num_classes": num_classes},
               num_groups, group, retry, timeout, progress)


def _write(source: str, split: str, out: str, alpha: float, batch_size: int, epochs: int,
           seed: int, workers: int | None, encoding: str, mode: str, compression: str | None,
           size_limit: int, overwrite: bool, image_size: int | None, mds_options: dict,
           num_groups: int | None, group: int | None, retry: int, timeout: float,
           progress: bool) -> None:
    if (num_groups is None) != (group is None):
        raise click.UsageError("--num-groups and --group go together")
    if num_groups is not None and group >= num_groups:  # type: ignore[operator]
        raise click.BadParameter(f"{group} is not in [0, {num_groups})", param_hint="'--group'")
    try:
        check_out(out, source_locations(source, split))
    except DestinationError as e:
        raise click.BadParameter(str(e), param_hint="'--out'") from None
    target = out if group is None else join_uri(out, group_name(group))
    if group is not None and not is_remote(out):
        # The one rule every reader applies: a group folder is inside OUT (no link leading out).
        try:
            member_path(out, f"{group_name(group)}/{INDEX_NAME}", "the group folder")
        except DatasetError as e:
            raise click.BadParameter(str(e), param_hint="'--out'") from None
    click.get_current_context().meta[_TARGET] = target
    workers = workers or default_workers()
    if workers > 1:
        start_fork_server()  # its imports run while this process loads the source
    sweep_stale()  # scratch copies a killed write could not remove
    destination = None
    try:
        destination = Destination(target, retry=retry, timeout=timeout)
        destination.check_free()
        _check_existing(destination, target, overwrite)  # before loading, so a refusal comes at once
        images = _load(source, split, image_size, **mds_options)
        config = PremixConfig(alpha, batch_size, epochs, seed, encoding, compression, size_limit,
                              mode)
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
                                  image_size=image_size, group=group_info,
                                  mds_options=mds_options)
        if group is not None:  # before the claim: a refusal leaves OUT exactly as it was
            _invalidate_merged_root(out, retry, timeout, check_only=True)
        destination.claim()
        _check_existing(destination, target, overwrite)  # again: what was there may have changed meanwhile
        _check_size(destination, images, config, schedule.first_sample(stop) - schedule.first_sample(start))

        def invalidate_root() -> None:  # the merged root lists the group's old shards
            if group is not None and _invalidate_merged_root(out, retry, timeout):
                click.echo(f"removed the merged {INDEX_NAME} at {out}, which group {group} "
                           f"invalidates; run `cutmix-writer merge {out}` again", err=True)

        click.get_current_context().meta[_STATE] = destination.interrupted_state
        summary = write_premixed(images, destination, config, manifest, start=start, stop=stop,
                                 workers=workers, progress=progress, before_commit=invalidate_root,
                                 say=lambda line: click.echo(line, err=True))
    except KeyboardInterrupt as e:
        signum = signal.SIGTERM if isinstance(e, interrupts.Terminated) else signal.SIGINT
        raise _Interrupted(signum, destination.interrupted_state() if destination else
                           f"{target} is unchanged") from None
    except OSError as e:  # a local OUT that cannot be written (a WriterError goes to _Main)
        state = f"; {destination.interrupted_state()}" if destination else ""
        raise click.ClickException(f"cannot write {target}: {e}{state}") from None
    finally:
        if destination is not None:
            destination.close()
            destination.release()
    rate = summary.samples / summary.seconds if summary.seconds else float("inf")
    click.echo(f"wrote {summary.samples} samples in {summary.shards} shards, "
               f"{summary.bytes:,} bytes, {summary.seconds:.2f} s ({rate:,.0f} img/s) to {target}")


@main.command()
@click.argument("out", callback=_uri)
@click.option("--source", default=None, help="The source OUT was written from; needed to "
              "recompute pixels (only digits is loaded unasked) [default: none].")
@click.option("--split", type=click.Choice(SPLITS), default=None,
              help="Its split [default: the manifest's].")
@click.option("--sample", type=click.FloatRange(0, 1, min_open=True), default=1.0, callback=_finite,
              show_default=True, help="Fraction of samples to check, in (0, 1].")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
def verify(out: str, source: str | None, split: str | None, sample: float, progress: bool) -> None:
    """Check OUT's index, manifest, shard hashes and samples; recompute pixels from --source.

    Safe on a dataset from anyone: without --source nothing the dataset names is loaded.
    """
    args = recorded_args(out)
    spec = source or trusted_recorded_source(args)
    if spec is None and split is not None:
        raise click.UsageError("--split is only used with --source")
    mds = recorded_mds_options(args) if spec is not None and spec.startswith("mds:") else {}
    # --image-size only ever resized image folders (older writes recorded it for other sources too)
    size = args["image_size"] if spec is not None and spec.startswith("imagefolder:") else None
    images = None if spec is None else _load(spec, split or args["split"], size, **mds)
    report = verify_dataset(out, images, sample, progress=progress)
    checked = f"{report.samples_checked} of {report.samples_total} samples"
    if report.recomputed:
        click.echo(f"OK: {report.shards} shards match their hashes; {checked} recomputed from "
                   "the source and equal")
    else:
        click.echo(f"OK: {report.shards} shards match their hashes; {checked} match the seed's "
                   f"schedule and their labels; {source_hint(args)}")


@main.command()
@click.argument("out", callback=_uri)
@click.option("--out", "png", required=True, help="The PNG file to write.")
@click.option("--n", type=click.IntRange(min=1, max=256), default=16, show_default=True,
              help="Samples to draw, spread over the epochs and batches.")
def preview(out: str, png: str, n: int) -> None:
    """Draw N samples of OUT in a PNG grid: box outlined, base and patch classes with weights."""
    _check_preview_path(out, png)
    try:
        drawn = render_preview(out, png, n)
    except OSError as e:
        raise click.ClickException(f"cannot write --out {png}: {e}") from None
    click.echo(f"drew {len(drawn)} samples to {png}")


def _check_preview_path(out: str, png: str) -> None:
    # A PNG written into the dataset could replace its index.json or a shard, and any extra file
    # there makes a later --overwrite refuse the folder.
    if not png.lower().endswith(".png"):
        raise click.BadParameter(f"{png!r} does not end in .png; preview writes a PNG file", param_hint="'--out'")
    if is_remote(out):
        return
    target, dataset = os.path.realpath(png), os.path.realpath(out)
    if os.path.commonpath([target, dataset]) == dataset:
        raise click.BadParameter(
            f"{png} is inside the dataset {out}; write the preview outside it", param_hint="'--out'"
        )


@main.command()
@click.argument("out", callback=_uri)
@click.option("--retry", type=click.IntRange(min=1, max=10), default=2, show_default=True)
def merge(out: str, retry: int) -> None:
    """Join OUT/group-0 … group-{G-1} into one dataset at OUT.

    Rewriting a group later removes OUT's merged index and manifest: merge again then.
    """
    count = merge_groups(out, retry)
    click.echo(f"merged {count} groups into {out}")


if __name__ == "__main__":
    main()
