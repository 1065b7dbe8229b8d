"""``python -m cutmix_train RECIPE.yaml ...``: the same command as ``cutmix-train``."""

from __future__ import annotations

from cutmix_train.cli import main

if __name__ == "__main__":
    main()
