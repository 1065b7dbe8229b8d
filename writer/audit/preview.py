"""Previewing a pre-mixed dataset: samples spread over its epochs and batches, in a PNG grid.

Each tile outlines the box, marks the pasted patch, and says which class is the base image and
which the patch, with their weights. Like ``verify``, preview trusts nothing the dataset says:
the index and manifest are checked first, only the shards holding the drawn samples are read
(each checked against its hashes) and every drawn sample is range-checked before it is drawn.

matplotlib and streaming are imported inside :func:`render_preview`: both are slow to import,
and streaming's package import pulls in transformers.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass

import numpy as np

from cutmix_algo.sampling import Box
from writer.audit.verify import check_shards, fetch_shards, read_sample
from writer.errors import DatasetError
from writer.format.checks import Layout, label_classes
from writer.format.names import is_remote
from writer.format.opening import open_dataset

#: A dataset preview cannot draw: a :class:`~writer.errors.DatasetError` (the name is kept for callers).
PreviewError = DatasetError

__all__ = ["PreviewError", "Tile", "preview_positions", "render_preview"]



@dataclass(frozen=True)
class Tile:
    """One drawn sample: where it sits in the schedule and what was mixed into it.

    Attributes:
        position: the sample's position in the dataset.
        epoch: its epoch.
        batch: its batch within the epoch.
        index_a: source index of the base image.
        index_b: source index of the pasted patch.
        base_class: the base image's class name.
        patch_class: the patch's class name (``None`` if nothing was pasted, ``lam == 1``).
        lam: the base image's weight; the patch's is ``1 - lam``.
        box: ``(top, left, bottom, right)`` of the patch.
    """

    position: int
    epoch: int
    batch: int
    index_a: int
    index_b: int
    base_class: str
    patch_class: str | None
    lam: float
    box: Box


def preview_positions(total: int, n: int) -> list[int]:
    """``min(n, total)`` positions evenly spread over ``[0, total)``: the middle of each n-th.

    Samples are stored epoch by epoch, batch by batch, so these fall in different batches (one
    box each) and, over several epochs, in every epoch.
    """
    count = min(n, total)
    return sorted({(2 * k + 1) * total // (2 * count) for k in range(count)})


def _tile(item: dict, position: int, layout: Layout) -> Tile:
    schedule = layout.schedule
    epoch, rest = divmod(layout.offset + position, schedule.num_images)
    lam = float(item["lam"])
    pairs = label_classes(np.asarray(item["label"]), lam, layout.num_classes)
    base, patch = pairs[0] if pairs else (None, None)
    names = layout.class_names
    return Tile(
        position=position,
        epoch=epoch,
        batch=rest // schedule.batch_size,
        index_a=int(item["index_a"]),
        index_b=int(item["index_b"]),
        base_class="?" if base is None else names[base],
        patch_class=None if patch is None else names[patch],
        lam=lam,
        box=Box(*(int(v) for v in np.asarray(item["box"]))),
    )


def _draw(out: str, n: int) -> tuple[list[Tile], list[np.ndarray]]:
    """Read and check the ``n`` drawn samples of ``out``: their tiles and images."""
    from streaming.base.format import reader_from_json

    with tempfile.TemporaryDirectory(prefix="cutmix-preview-") as scratch:
        opened = open_dataset(out, scratch, shards=False)  # check_shards checks sizes and hashes
        folder, index, layout = opened.folder, opened.index, opened.layout
        shards = index["shards"]
        ends = np.cumsum([shard["samples"] for shard in shards])
        positions = preview_positions(layout.total, n)
        wanted = sorted({int(np.searchsorted(ends, p, side="right")) for p in positions})
        if is_remote(out):
            fetch_shards(out, [shards[i] for i in wanted], scratch)
        checked = check_shards(folder, [shards[i] for i in wanted], os.path.join(scratch, "unpacked"))
        # No reader.validate(False): check_layout pins the columns, so none is pickled.
        readers = {shard_id: reader_from_json(raw_folder, "", info)
                   for shard_id, (info, raw_folder) in zip(wanted, checked, strict=True)}
        tiles, images = [], []
        for position in positions:
            shard_id = int(np.searchsorted(ends, position, side="right"))
            reader = readers[shard_id]
            row = position - (int(ends[shard_id - 1]) if shard_id else 0)
            _, item = read_sample(reader, row, layout,
                                  f"sample {position} (shard {reader.raw_data.basename})")
            tiles.append(_tile(item, position, layout))
            images.append(np.asarray(item["image"]))
    return tiles, images


def render_preview(out: str, png: str, n: int = 16) -> list[Tile]:
    """Draw ``n`` samples of a dataset, spread over its epochs and batches, in a PNG grid.

    Each tile shows the mixed image with the box outlined in red and labelled "patch", and a
    title with the epoch and batch, the base image's class and weight ``lam``, and the patch's
    class and weight ``1 - lam``.

    Args:
        out: the dataset (local folder or remote URI).
        png: the PNG file to write.
        n: how many samples to draw.

    Returns:
        list[Tile]: the drawn samples, in grid order.

    Raises:
        DatasetError: if the dataset is unreadable, inconsistent, empty, or a drawn shard or
            sample is bad.
        OSError: if ``png`` cannot be written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    tiles, images = _draw(out, n)
    if not tiles:
        raise DatasetError(f"{out} holds no samples")
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    figure = Figure(figsize=(2.4 * cols, 2.9 * rows), dpi=100)
    FigureCanvasAgg(figure)
    for k, (tile, image) in enumerate(zip(tiles, images, strict=True)):
        axes = figure.add_subplot(rows, cols, k + 1)
        axes.imshow(image.squeeze(), cmap="gray", interpolation="nearest")
        top, left, bottom, right = tile.box
        if bottom > top and right > left:
            axes.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top,
                                     fill=False, edgecolor="red", linewidth=1.5))
            axes.text(left, top, "patch", color="red", fontsize=6, va="top",
                      bbox={"facecolor": "white", "alpha": 0.6, "pad": 0.5, "linewidth": 0})
        patch = f"{tile.patch_class} {1 - tile.lam:.2f}" if tile.patch_class else "none"
        title = axes.set_title(f"epoch {tile.epoch}, batch {tile.batch}\nbase: {tile.base_class} "
                               f"{tile.lam:.2f}\npatch: {patch}", fontsize=7)
        title.set_parse_math(False)  # class names come from the dataset: "$" is no formula
        axes.set_axis_off()
    figure.tight_layout()
    figure.savefig(png, format="png")
    return tiles
