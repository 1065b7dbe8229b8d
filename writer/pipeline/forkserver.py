"""The writer's fork server preload: what the server does once, so that no worker does it again.

Every worker is forked from the server (:func:`writer.pipeline.pool.start_fork_server`), so each module
the server has imported is there in every worker from its first instruction. Without these,
each worker paid for them again in every write:

* :mod:`writer.pipeline.pool`, with torch: what a worker runs;
* ``numpy.random``, which numpy imports on first use: the first draw of each worker's first
  piece paid for it (about 7 ms here).

And the writer's workers skip re-running the caller's main script. multiprocessing runs it in
every process it starts, so that a child finds the functions defined there; the workers run only
:mod:`writer.pipeline.pool`'s functions on plain data, and the re-run cost as much as the script's own
imports: seconds per worker, in every write, for a training script that imports composer, and
about 60 ms for ``cutmix-writer``, whose script imports the CLI. Any other process this server
forks (a caller's own forkserver pool shares the server) keeps the default.

Nothing else runs here: torch ops would start thread pools in the server, which its forks would
inherit without their threads.
"""

from multiprocessing import spawn

import numpy.random  # noqa: F401

from writer.pipeline.pool import WORKER_NAME

_MAIN_KEYS = ("init_main_from_name", "init_main_from_path")
_default_prepare = spawn.prepare


def _prepare(data: dict) -> None:
    # Runs in each child this server forks, before the child unpickles anything: `name` is the
    # process's name, which for a writer worker starts with its class name.
    if str(data.get("name", "")).startswith(WORKER_NAME + "-"):
        data = {key: value for key, value in data.items() if key not in _MAIN_KEYS}
    _default_prepare(data)


spawn.prepare = _prepare
