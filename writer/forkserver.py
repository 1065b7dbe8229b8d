"""The writer's fork server preload: imports made once, so that no worker makes them again.

Every worker is forked from the server (:func:`writer.pool.start_fork_server`), so each module
the server has imported is there in every worker from its first instruction. Without these,
each worker paid for them again in every write:

* :mod:`writer.pool`, with torch: what a worker runs;
* ``numpy.random``, which numpy imports on first use: the first draw of each worker's first
  piece paid for it (about 7 ms here);
* what :mod:`writer.cli` imports: multiprocessing re-runs the caller's main script in every
  worker it starts, and ``cutmix-writer``'s script imports the CLI (about 40 ms here, all but
  5 ms of it in these modules). Not the CLI module itself: ``python -m writer.cli`` workers
  run it afresh as their main module, and runpy warns when it is already imported.

Imports only: running torch ops here would start thread pools in the server, which its forks
would inherit without their threads.
"""

import click  # noqa: F401
import numpy.random  # noqa: F401

import writer.merge  # noqa: F401
import writer.pool  # noqa: F401
import writer.preview  # noqa: F401
import writer.scratch  # noqa: F401
import writer.sources  # noqa: F401
import writer.store  # noqa: F401
import writer.uri  # noqa: F401
import writer.verify  # noqa: F401
import writer.write  # noqa: F401
