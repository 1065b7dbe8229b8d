"""The recipe runner behind ``cutmix-train``: YAML recipes in, a Composer Trainer and a JSON summary out.

Modules: ``config`` (the recipe schema, loading, overrides, validation), ``models`` (CIFAR
ResNets), ``data`` (CIFAR-10, digits, pre-mixed shards), ``augment`` (crop and flip on the
device), ``builder`` (Trainer assembly), ``cli`` (the command), ``demo`` (``make demo``).
Nothing heavy is imported here, so ``cutmix-train --help`` stays quick.
"""

from __future__ import annotations
