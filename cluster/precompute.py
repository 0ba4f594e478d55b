"""Precompute on a Dask cluster: every batch of directions is one Dask task.

Contract (what ``sketch.precompute(..., cluster=...)`` relies on). The training task is shared
once (``connect.share``); one task lowers it to order k on a worker; then each batch
(first, count) runs ``sketch.precompute.compute_batch`` on a worker, from (task, lowered program,
seed, first, count) alone, and returns its shard arrays. :func:`batches_on_cluster` yields the
shards in completion order; the driver writes each one atomically into ``PATH.partial`` and
assembles the sketch in batch order, so the result is the same bits as the local run whatever
the number of workers or the order in which tasks finish.

Faults. A task that raises is retried ``RETRIES`` times (``retries=`` on submit). A worker process
that dies mid-task costs only the batches it was running (and finished results the driver had
not read yet): the scheduler reruns them elsewhere, up to Dask's
``distributed.scheduler.allowed-failures`` deaths per task. An interrupted driver keeps the shards
it wrote; the next precompute skips them (and recomputes any that fails its checksum).
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..sketch.precompute import compute_batch, lower_program
from ..sketch.progress import ProgressBar
from .connect import completed, connect, run_key, share

#: how often Dask reruns a batch whose task raised (worker deaths are counted separately)
RETRIES = 2


def batches_on_cluster(cluster: Any, task, order: int, seed: int, keep: Sequence[str],
                       backend: str, batches: Iterable[tuple[int, int]], bar: ProgressBar
                       ) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """(first, count, shard arrays) for every batch, computed on ``cluster``, as they finish.

    ``bar`` advances by the task's step count per finished batch.
    """
    batches = list(batches)
    if not batches:
        return
    with connect(cluster) as client:
        bar.label = f"precompute k={order} on dask"
        shared_task = share(client, task, run_key("task"))
        lowered = client.submit(lower_program, shared_task, order, key=run_key(f"lower-k{order}"),
                                retries=RETRIES)
        futures = {client.submit(compute_batch, shared_task, lowered, seed, first, count,
                                 tuple(keep), backend=backend, retries=RETRIES,
                                 key=run_key(f"shard-{first:06d}-{first + count:06d}")):
                   (first, count) for first, count in batches}
        for (first, count), arrays in completed(futures):
            bar.advance(task.program.n_steps)
            yield first, count, arrays


__all__ = ["RETRIES", "batches_on_cluster"]
