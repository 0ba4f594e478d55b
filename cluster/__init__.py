"""A generic task service on a Dask cluster (optional extra: ``pip install
'circuitsketch[distributed]'``).

``run_tasks`` runs independent calls on the workers and yields their results as they finish,
with digests checked on arrival, retries of failed tasks and reruns of a lost worker's tasks
(``tasks.py``). It knows nothing of sketches: ``sketch.precompute(..., cluster=...)`` sends each
batch of directions as one task and ``sketch.evaluate.retrained_values(..., cluster=...)`` each
block of retrainings; the driver assembles results exactly as the local path does, so the same
(seed, s, k) gives bitwise the same sketch on any number of workers in any completion order.

``cluster`` is a ``dask.distributed.Client``, a scheduler address, or an int number of local
worker processes (:func:`connect`). Importing this package does not import Dask; asking for a
cluster without it raises an ImportError naming the extra. See docs/distributed.md.

The package is called ``cluster``, not ``distributed``: the repository root is the package root,
so a top-level ``distributed/`` directory would shadow Dask's own ``distributed`` whenever the
root is on ``sys.path`` (``python -m pytest`` from the checkout).
"""

from .connect import INSTALL_HINT, MissingExtraError, connect, require_dask
from .tasks import RETRIES, TaskIntegrityError, digest, run_tasks

__all__ = ["INSTALL_HINT", "MissingExtraError", "RETRIES", "TaskIntegrityError", "connect",
           "digest", "require_dask", "run_tasks"]
