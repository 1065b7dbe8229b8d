"""Run a recipe under Composer's launcher and record, per rank, which pre-mixed samples it read.

Launched by tests/test_distributed.py as ``composer -n 2 tests/ddp_probe.py OUT RECIPE [k=v ...]``;
not a test module itself. Each rank writes ``OUT/rank{R}.json`` with the sample ids its
``PremixedDataset`` yielded, and the eval accuracy it computed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    from composer.utils import dist

    from cutmix_train.builder import build_trainer, summarize
    from cutmix_train.config import load_recipe
    from writer import PremixedDataset

    out, recipe_path, *overrides = sys.argv[1:]
    seen: list[int] = []
    read_sample, read_rows = PremixedDataset._sample, PremixedDataset._read_rows

    # Every sample read goes through exactly one of these: alone (self[i]), or as raw rows of a
    # batch (the recipes' PremixedLoader), a shard's share of the batch at a time.
    def recording_sample(self: PremixedDataset, index: int):  # type: ignore[no-untyped-def]
        seen.append(int(index))
        return read_sample(self, index)

    def recording_rows(self: PremixedDataset, shard_id, rows, places, size, into, ids):  # type: ignore[no-untyped-def]
        seen.extend(int(i) for i in ids[places])
        return read_rows(self, shard_id, rows, places, size, into, ids)

    PremixedDataset._sample = recording_sample  # type: ignore[method-assign]
    PremixedDataset._read_rows = recording_rows  # type: ignore[method-assign]
    recipe = load_recipe(recipe_path, overrides)
    trainer = build_trainer(recipe)
    trainer.fit()
    summary = summarize(trainer, recipe)
    trainer.close()
    rank = dist.get_global_rank()
    Path(out, f"rank{rank}.json").write_text(json.dumps({"seen": seen, "summary": summary}))


if __name__ == "__main__":
    main()
