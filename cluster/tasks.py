"""The generic service: run these tasks on these workers, as they finish, with recovery.

``run_tasks(cluster, fn, calls, shared=..., prepare=...)`` calls ``fn(*context, *args,
**kwargs)`` on the cluster once per ``label -> args`` of ``calls`` and yields ``(label, result)``
in completion order. ``context`` is ``shared`` (each value sent to the cluster once), or
``prepare(*shared)`` computed once on a worker (e.g. lowering a program) when ``prepare`` is
given. The service knows nothing of what the tasks compute; ``sketch/`` calls it.

Guarantees. Each result travels with a SHA-256 digest of its contents computed on the worker;
the driver recomputes it and raises :class:`TaskIntegrityError` on a mismatch. A task that raises
is retried ``retries`` times; a worker that dies mid-task costs only the tasks it was running
(the scheduler reruns them elsewhere, up to Dask's ``allowed-failures``). Resume is the caller's:
pass only the calls not done yet (the sketch store skips the shards it already holds). Stopping
the iterator early cancels the tasks still pending.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Hashable, Iterator, Mapping, Sequence

import numpy as np

from .connect import completed, connect, run_key, share

#: how often Dask reruns a task that raised (worker deaths are counted separately)
RETRIES = 2


class TaskIntegrityError(RuntimeError):
    """A task's result arrived with contents that differ from what the worker computed."""


def digest(value: Any) -> str:
    """SHA-256 of a result's contents: arrays by dtype, shape and bytes; containers in order."""
    h = hashlib.sha256()
    _feed(h, value)
    return h.hexdigest()


def _feed(h, value: Any) -> None:
    if isinstance(value, np.ndarray):
        h.update(f"array:{value.dtype.str}:{value.shape}:".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, Mapping):
        h.update(f"map:{len(value)}:".encode())
        for key in sorted(value, key=repr):
            h.update(repr(key).encode())
            _feed(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(f"seq:{len(value)}:".encode())
        for item in value:
            _feed(h, item)
    else:
        h.update(f"{type(value).__name__}:{value!r}".encode())


def _checked_call(fn: Callable, context: Sequence[Any], args: Sequence[Any],
                  kwargs: Mapping[str, Any]) -> tuple[Any, str]:
    result = fn(*context, *args, **kwargs)
    return result, digest(result)


def run_tasks(cluster: Any, fn: Callable, calls: Mapping[Hashable, Sequence[Any]], *,
              shared: Sequence[Any] = (), prepare: Callable | None = None,
              kwargs: Mapping[str, Any] | None = None, name: str = "task",
              retries: int = RETRIES) -> Iterator[tuple[Hashable, Any]]:
    """Run ``fn(*context, *args, **kwargs)`` for every ``label -> args`` of ``calls`` on
    ``cluster`` (a Client, scheduler address or number of local workers; see ``connect``) and
    yield ``(label, result)`` as each finishes (module doc for context, digests and faults)."""
    if not calls:
        return
    with connect(cluster) as client:
        futures = [share(client, value, run_key(f"{name}-shared{i}")) for i, value in enumerate(shared)]
        context: Any = (client.submit(prepare, *futures, key=run_key(f"{name}-prepare"),
                                      retries=retries) if prepare is not None else tuple(futures))
        submitted = {client.submit(_checked_call, fn, context, tuple(args), dict(kwargs or {}),
                                   key=run_key(f"{name}-{i:06d}"), retries=retries): label
                     for i, (label, args) in enumerate(calls.items())}
        for label, (result, sent) in completed(submitted):
            if digest(result) != sent:
                raise TaskIntegrityError(f"the result of {name} task {label!r} arrived changed "
                                         "(its digest differs from the worker's)")
            yield label, result


__all__ = ["RETRIES", "TaskIntegrityError", "digest", "run_tasks"]
