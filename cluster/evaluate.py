"""Retraining ground truth on a Dask cluster: every block of retrainings is one Dask task.

Contract (what ``sketch.evaluate.retrained_values(..., cluster=...)`` relies on). The training
task and the measurement are shared once; each block of down-weight vectors ([B, n], the same
blocks as the local run) runs ``sketch.evaluate.measure_retrained`` on a worker and returns its
B measured values. :func:`blocks_on_cluster` yields (block index, values) in completion order and
the driver puts them back in block order, so the values are the local run's, bit for bit.
Deletion reports, deletion curves and the LDS all go through it. Faults as in precompute.py: a
task that raises is retried, a lost worker's blocks are rerun elsewhere.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np

from ..ir.circuit import Circuit
from ..sketch.evaluate import measure_retrained
from ..sketch.progress import ProgressBar
from .connect import completed, connect, run_key, share
from .precompute import RETRIES


def blocks_on_cluster(cluster: Any, task, measurement: Circuit, blocks: Sequence[np.ndarray],
                      output: str, backend: str, bar: ProgressBar
                      ) -> Iterator[tuple[int, np.ndarray]]:
    """(i, f(x) for the rows x of blocks[i]) for every block, computed on ``cluster``, as they
    finish. ``bar`` advances by the task's step count per finished block."""
    if not len(blocks):
        return
    with connect(cluster) as client:
        bar.label = "retrain on dask"
        shared_task = share(client, task, run_key("task"))
        shared_measurement = share(client, measurement, run_key("measurement"))
        futures = {client.submit(measure_retrained, shared_task, shared_measurement, block, output,
                                 backend=backend, retries=RETRIES,
                                 key=run_key(f"retrain-{i:06d}")): i
                   for i, block in enumerate(blocks)}
        for i, values in completed(futures):
            bar.advance(task.program.n_steps)
            yield i, values


__all__ = ["blocks_on_cluster"]
