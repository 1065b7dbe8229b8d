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
    read = PremixedDataset.__getitem__

    def recording_getitem(self: PremixedDataset, index: int):  # type: ignore[no-untyped-def]
        seen.append(int(index))
        return read(self, index)

    PremixedDataset.__getitem__ = recording_getitem  # type: ignore[method-assign]
    recipe = load_recipe(recipe_path, overrides)
    trainer = build_trainer(recipe)
    trainer.fit()
    summary = summarize(trainer, recipe)
    trainer.close()
    rank = dist.get_global_rank()
    Path(out, f"rank{rank}.json").write_text(json.dumps({"seen": seen, "summary": summary}))


if __name__ == "__main__":
    main()
