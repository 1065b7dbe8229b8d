"""The CutMix shard writer: pre-mix an image set into a byte-reproducible MDS dataset, and read it back.

The package is laid out by concern (``writer/README.md`` has the table):

* :mod:`writer.format`: what a dataset is on disk (names, columns, schedule, manifest) and the
  one checked way to open one (:func:`writer.format.opening.open_dataset`);
* :mod:`writer.pipeline`: sources → pre-mixing → encoding → shards, in worker processes;
* :mod:`writer.publish`: putting files in OUT (a folder or a bucket), and ``merge``;
* :mod:`writer.read`: :class:`PremixedDataset` and :class:`PremixedLoader` for training;
* :mod:`writer.audit`: ``verify`` and ``preview``;
* :mod:`writer.streaming_seam`: every use of streaming's private internals;
* :mod:`writer.cli`: the ``cutmix-writer`` command.

``PremixedDataset`` and ``PremixedLoader`` are imported on first use: they need streaming, whose
package import pulls in transformers (seconds), and the writer's worker processes, which import
this package, never read datasets.
"""

from __future__ import annotations

from typing import Any

from writer.format.opening import read_manifest
from writer.pipeline.imageset import ImageSet, SourceError
from writer.pipeline.sources import load_cifar10, load_digits, load_imagefolder, load_mds, open_source

__all__ = [
    "ImageSet",
    "PremixedDataset",
    "PremixedLoader",
    "SourceError",
    "load_cifar10",
    "load_digits",
    "load_imagefolder",
    "load_mds",
    "open_source",
    "read_manifest",
]


def __getattr__(name: str) -> Any:
    if name in ("PremixedDataset", "PremixedLoader"):
        from writer.read import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'writer' has no attribute {name!r}")
