"""Precompute and evaluation on a Dask cluster (optional extra: ``pip install
'circuitsketch[distributed]'``).

A sketch is s independent Taylor training runs and an evaluation many independent retrainings,
so both spread over machines: each batch of directions (``sketch.precompute(...,
cluster=...)``) or block of retrainings (``retrained_values``, ``evaluate_deletions``,
``deletion_curve``, ``linear_datamodeling_score`` with ``cluster=...``) is one Dask task,
computed from the training task and its own indices alone. The driver writes each shard
atomically as it arrives and assembles the result exactly as the local path does, so the same
(seed, s, k) gives bitwise the same sketch on any number of workers in any completion order.

``cluster`` is a ``dask.distributed.Client``, a scheduler address, or an int number of local
worker processes (:func:`connect`). Importing this package does not import Dask; asking for a
cluster without it raises an ImportError naming the extra. See docs/distributed.md.

Modules: ``connect`` (connect, the import guard, shared objects, completion order),
``precompute`` (shards as tasks), ``evaluate`` (retrainings as tasks). The package is called
``cluster``, not ``distributed``: the repository root is the package root, so a top-level
``distributed/`` directory would shadow Dask's own ``distributed`` whenever the root is on
``sys.path`` (``python -m pytest`` from the checkout).
"""

from .connect import INSTALL_HINT, MissingExtraError, connect, require_dask
from .evaluate import blocks_on_cluster
from .precompute import RETRIES, batches_on_cluster

__all__ = ["INSTALL_HINT", "MissingExtraError", "RETRIES", "batches_on_cluster", "blocks_on_cluster", "connect",
           "require_dask"]
