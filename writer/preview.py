"""Previewing a pre-mixed dataset: its first samples in a PNG grid, box outlined, classes titled.

matplotlib and streaming are imported inside :func:`render_preview`: both are slow to import,
and streaming's package import pulls in transformers.
"""

from __future__ import annotations

import math
import os
import tempfile

import numpy as np

from writer.premix import MANIFEST_NAME
from writer.uri import read_json
from writer.verify import VerifyError, check_shards, local_dataset

__all__ = ["render_preview"]


def render_preview(out: str, png: str, n: int = 16) -> int:
    """Draw the first ``n`` samples of a dataset in a PNG grid, box outlined, classes titled.

    Args:
        out: the dataset (local folder or remote URI).
        png: the PNG file to write.
        n: how many samples to draw.

    Returns:
        int: the number of samples drawn.

    Raises:
        VerifyError: if the dataset has no readable index, a bad shard, or no samples.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    from streaming.base.format import reader_from_json

    with tempfile.TemporaryDirectory(prefix="cutmix-preview-") as scratch:
        folder, index = local_dataset(out, scratch)
        try:
            names = read_json(out, MANIFEST_NAME, scratch)["class_names"]
        except (OSError, ValueError, KeyError) as e:
            raise VerifyError(f"{out}: no readable {MANIFEST_NAME} with class_names ({e})") from None
        shards = check_shards(folder, index, os.path.join(scratch, "unpacked"))
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
