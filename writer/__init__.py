"""The CutMix shard writer: pre-mix an image set into a byte-reproducible MDS dataset.

``PremixedDataset``, ``PremixedLoader`` and ``read_manifest`` are imported on first use: they need streaming, whose
package import pulls in transformers (seconds), and the writer's worker processes, which import
this package, never read datasets.
"""

from __future__ import annotations

from typing import Any

from writer.sources import (
    ImageSet,
    SourceError,
    load_cifar10,
    load_digits,
    load_imagefolder,
    load_mds,
    open_source,
)

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
    if name in ("PremixedDataset", "PremixedLoader", "read_manifest"):
        from writer import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'writer' has no attribute {name!r}")
