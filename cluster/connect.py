"""Getting a Dask cluster: ``connect(cluster)`` and the optional-dependency guard.

Contract. ``cluster`` is one of

* a ``dask.distributed.Client``: used as is and left open (the caller owns it);
* a scheduler address (``"tcp://host:8786"``): a Client is opened on it and closed afterwards;
* an int N >= 1: a ``LocalCluster`` of N worker *processes* with one thread each (our kernels
  hold the GIL, so threads would not run in parallel), started here and shut down afterwards.

Dask is an optional extra. Importing circuitsketch never imports it; :func:`require_dask`
imports ``dask.distributed`` when a cluster is asked for and otherwise raises an ImportError that
names the extra to install.

:func:`share` puts one large object (a training task, its lowered program) on the cluster once:
it becomes the result of a small task, so every worker fetches it once and the scheduler can
recompute it if the worker holding it dies (scattered data could not be recomputed).
:func:`completed` reads task results in the order they finish and cancels the rest if the
driver stops early (an exception or Ctrl-C while it writes a shard).
"""

from __future__ import annotations

import contextlib
import uuid
import warnings
from typing import Any, Hashable, Iterator

INSTALL_HINT = "pip install 'circuitsketch[distributed]'"


class MissingExtraError(ImportError):
    """An optional extra (here Dask) is needed for what was asked and is not installed."""


def require_dask() -> Any:
    """The ``dask.distributed`` module, or a MissingExtraError (an ImportError) naming the extra to install."""
    try:
        import dask.distributed
    except ImportError as exc:
        raise MissingExtraError(f"running on a Dask cluster needs dask.distributed, which is not "
                          f"installed ({exc}); install the extra: {INSTALL_HINT}") from exc
    return dask.distributed


@contextlib.contextmanager
def connect(cluster: Any) -> Iterator[Any]:
    """A ``dask.distributed.Client`` for ``cluster`` (see the module doc) for a ``with`` block."""
    distributed = require_dask()
    if isinstance(cluster, distributed.Client):
        yield cluster
    elif isinstance(cluster, str):
        with distributed.Client(cluster) as client:
            yield client
    elif isinstance(cluster, int) and not isinstance(cluster, bool) and cluster >= 1:
        with distributed.LocalCluster(n_workers=cluster, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as local, \
                distributed.Client(local) as client:
            yield client
    else:
        raise TypeError(f"cluster must be a dask.distributed.Client, a scheduler address (str) or "
                        f"a number of local worker processes (int >= 1); got {cluster!r}")


def completed(futures: dict[Any, Hashable]) -> Iterator[tuple[Hashable, Any]]:
    """(label, result) for each future of ``futures`` (future -> label) as it finishes; each is
    released once read, and those still pending are cancelled if the caller stops early."""
    distributed = require_dask()
    pending = dict(futures)
    try:
        for future in distributed.as_completed(list(pending)):
            label = pending.pop(future)
            result = future.result()
            future.release()
            yield label, result
    finally:
        for future in pending:
            future.cancel()


def run_key(what: str) -> str:
    """A fresh, readable task key (what the Dask dashboard shows)."""
    return f"circuitsketch-{what}-{uuid.uuid4().hex[:8]}"


def share(client: Any, value: Any, key: str) -> Any:
    """A future holding ``value``, computed once by a task (recomputable if its worker dies)."""
    with warnings.catch_warnings():
        # Dask warns about large task graphs; this one object is meant to travel once.
        warnings.filterwarnings("ignore", message=".*[Ll]arge.*graph")
        return client.submit(_identity, value, key=key, pure=False)


def _identity(value: Any) -> Any:
    return value


__all__ = ["INSTALL_HINT", "completed", "connect", "require_dask", "run_key", "share"]
