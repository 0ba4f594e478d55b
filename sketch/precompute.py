r"""Precomputation (DESIGN §4): train once in order-k Taylor arithmetic per random direction.

For j = 0..s-1 the down-weights move along x = z psi_j (psi_j from directions.py) and the
training program, lowered with ``taylor(program, order=k, seeds={program.weight})``, runs in
C[z]/(z^{k+1}). Its final state is the series theta_j(z) = sum_r theta_{j,r} z^r with
theta_{j,r} = (d^r/dz^r) theta(z psi_j) / r! at z = 0; coefficient 0 is the ordinary trained
model theta(0), the same for every j.

Directions run in batches of ``batch_size``: one ``run_program(..., batch=B)`` call trains B
directions at once, with x given as a series ``[B, k+1, n]`` whose coefficient 1 is psi_j and
whose other coefficients are 0. With a ``path``, every finished batch is a shard written
atomically into ``PATH.partial`` and a rerun skips the shards already there (store.py); the
finished sketch appears at ``path`` only when all batches are done.

A batch is a pure function of (task, order, seed, its direction indices) (:func:`compute_batch`),
so batches may run anywhere and in any order: with ``cluster=`` they run as Dask tasks
(``circuitsketch.cluster``) and the driver writes each shard as it arrives. Reproducibility:
the same (task, seed, s, k, backend) gives a bitwise-identical sketch for any number of workers
and any completion order. On the reference backend it is also bitwise independent of the batch
size: numpy sums a batch of one direction along a contiguous axis (pairwise summation) but a
batch of B >= 2 column by column, so a one-direction batch is run padded to two (the copy is
discarded); other backends are guaranteed identical for the same ``batch_size``.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..backends import resolve_backend, run_program
from ..backends.checks import check_budget
from ..cluster import require_dask, run_tasks
from ..ir.circuit import Program
from ..passes.taylor import taylor
from .directions import directions as make_directions
from .progress import ProgressBar, compile_note
from .store import (PartialSketch, Sketch, SketchMismatchError, batch_ranges, load_sketch,
                    run_header)


#: lowered programs by (id of the real program, order), while the real program lives
_LOWERED: dict[tuple[int, int], tuple[weakref.ref, Program]] = {}


def lower_program(task, order: int) -> Program:
    """The task's training program in order-``order`` Taylor arithmetic along its down-weights.

    Cached per program object and order: lowering microgpt takes seconds, and handing the
    backends the same lowered object lets them reuse its verification and compiled tape
    (precompute, then exact series, of one task)."""
    key = (id(task.program), int(order))
    hit = _LOWERED.get(key)
    if hit is not None and hit[0]() is task.program:
        return hit[1]
    lowered = taylor(task.program, order=order, seeds={task.program.weight})
    _LOWERED[key] = (weakref.ref(task.program, lambda _, key=key: _LOWERED.pop(key, None)),
                     lowered)
    return lowered


def train_series(task, lowered: Program, xs: np.ndarray, keep: Sequence[str], *,
                 backend: str | None = None,
                 progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Train along x = z xs[b] for every row b of ``xs`` ([B, n], complex or real) in one run.

    Returns state name -> complex128 ``[B, k+1, *shape]``: the Taylor coefficients of each final
    state along its direction (a state that does not depend on x is lifted: zero higher terms).
    """
    xs = np.atleast_2d(xs)
    batch, k1 = xs.shape[0], lowered.order + 1
    # refuse an order that cannot fit before allocating x ([B, k+1, n] complex) for it
    check_budget(lowered.step, width=batch, n_steps=lowered.n_steps,
                 backend=resolve_backend(backend), memory_bytes=16 * batch * k1 * task.n_examples)
    x = np.zeros((batch, k1, task.n_examples), dtype=np.complex128)
    x[:, 1, :] = xs
    final = run_program(lowered, task.init, data=task.data, static=task.static, x=x,
                        example_ids=task.example_ids, batch=batch, backend=backend,
                        progress=progress, n_examples=task.n_examples)
    shapes = lowered.step.input_shapes
    out = {}
    for name in keep:
        array = np.asarray(final[name])
        if array.shape == (batch,) + shapes[name]:  # real: independent of the down-weights
            lifted = np.zeros((batch, k1) + shapes[name], dtype=np.complex128)
            lifted[:, 0] = array
            array = lifted
        out[name] = np.asarray(array, dtype=np.complex128)
    return out


def compute_batch(task, lowered: Program, seed: int, first: int, count: int,
                  keep: Sequence[str], *, backend: str | None = None,
                  progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """The shard of directions j = first .. first+count-1: state name -> complex128
    ``[count, k+1, *shape]``, computed from (task, lowered, seed, j) alone."""
    psi = make_directions(seed, range(first, first + count), task.n_examples)
    if count == 1:  # see the module doc: a batch of one takes numpy's other summation order
        psi = np.concatenate([psi, psi])
    arrays = train_series(task, lowered, psi, keep, backend=backend, progress=progress)
    return {name: np.ascontiguousarray(array[:count]) for name, array in arrays.items()}


def default_state_names(task) -> tuple[str, ...]:
    """What a measurement may read: ``task.param_names`` if the task defines it (microgpt keeps
    its parameters, not Adam's moments), else every carried state."""
    return tuple(getattr(task, "param_names", None) or task.state_names)


def precompute(task, *, directions: int, order: int, seed: int = 0, batch_size: int = 32,
               backend: str | None = None, path: str | os.PathLike | None = None,
               progress: bool = True, resume: bool = True, keep: Sequence[str] | None = None,
               info: Mapping[str, Any] | None = None, cluster: Any = None) -> Sketch:
    """Sketch ``task``'s training with ``directions`` random directions at Taylor order ``order``.

    ``keep``: state names to store (default :func:`default_state_names`). ``path``: write the
    sketch there (resumable; see module doc); if a finished sketch of the same run is already
    there it is loaded instead. ``info``: free-form JSON stored with the sketch. ``cluster``:
    run the batches as Dask tasks on a ``dask.distributed.Client``, a scheduler address, or an
    int number of local worker processes (see ``circuitsketch.cluster.connect``).
    ``backend``: None is the fastest installed (``numba-cpu`` when Numba imports, else
    ``reference``).
    """
    if int(directions) < 1 or int(order) < 1 or int(batch_size) < 1 or int(seed) < 0:
        raise ValueError(f"need directions >= 1, order >= 1, batch_size >= 1 and seed >= 0; got "
                         f"directions={directions}, order={order}, batch_size={batch_size}, "
                         f"seed={seed}")
    backend = resolve_backend(backend)  # here, not on the workers: they may differ
    if cluster is not None:
        require_dask()  # before any work: a clear error if the extra is missing
    keep = tuple(keep) if keep is not None else default_state_names(task)
    unknown = [name for name in keep if name not in task.state_names]
    if unknown or not keep:
        raise ValueError(f"cannot keep state(s) {unknown or '(none)'}: the program carries "
                         f"{list(task.state_names)}")
    shapes = task.program.step.input_shapes
    header = run_header(task.fingerprint(), task.n_examples, order, seed,
                        {name: shapes[name] for name in keep})
    if path is not None and os.path.exists(path):
        return _existing(path, task, header, directions, resume)
    work = PartialSketch(path, header, resume=resume) if path is not None else None
    batches = batch_ranges(directions, batch_size)
    parts: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    steps = task.program.n_steps
    # ``work`` holds the sketch path's lock; an error below releases it (see PartialSketch)
    bar = ProgressBar(len(batches) * steps, label=f"precompute k={order}",
                      enabled=progress, note=None if cluster is not None else
                      compile_note(backend, series=True,
                                   width=max(2, min(batch_size, directions))))
    with work or contextlib.nullcontext(), bar:
        for first, count in batches:
            arrays = work.shard(first, count) if work is not None else None
            if arrays is not None:
                parts[first, count] = arrays
                bar.skip(steps)
        todo = [batch for batch in batches if batch not in parts]
        if cluster is None:
            finished = _batches_here(task, order, seed, keep, backend, todo, bar)
        else:
            finished = batches_on_cluster(cluster, task, order, seed, keep, backend, todo, bar)
        with contextlib.closing(finished):  # stops the cluster's tasks if the driver stops
            for first, count, arrays in finished:
                if work is not None:
                    work.write_shard(first, count, arrays)
                parts[first, count] = arrays
    series = {name: np.concatenate([parts[batch][name] for batch in batches]) for name in keep}
    sketch = Sketch(fingerprint=header["fingerprint"], n=task.n_examples, order=order, seed=seed,
                    theta0={name: _theta0(name, series[name]) for name in keep}, series=series,
                    example_labels=_labels(task), info=dict(info or {}))
    if work is not None:
        work.finish(sketch, batches)
    return sketch


def _batches_here(task, order: int, seed: int, keep: Sequence[str], backend: str,
                  batches: Iterable[tuple[int, int]], bar: ProgressBar
                  ) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """Train the batches one after the other in this process, yielding each shard."""
    batches = list(batches)
    lowered = lower_program(task, order) if batches else None
    for number, (first, count) in enumerate(batches):
        bar.label = f"precompute k={order} batch {number + 1}/{len(batches)}"
        yield first, count, compute_batch(task, lowered, seed, first, count, keep,
                                          backend=backend, progress=lambda step: bar.advance(1))


def _lowered_context(task, order: int) -> tuple:
    """What every batch task needs, computed once on a worker: the task and its lowered program."""
    return task, lower_program(task, order)


def batches_on_cluster(cluster: Any, task, order: int, seed: int, keep: Sequence[str],
                       backend: str, batches: Iterable[tuple[int, int]], bar: ProgressBar
                       ) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """(first, count, shard arrays) for every batch, each one task on ``cluster`` (the generic
    ``cluster.run_tasks``: the task shared once, lowered once on a worker), as they finish."""
    bar.label = f"precompute k={order} on dask"
    calls = {(first, count): (seed, first, count, tuple(keep)) for first, count in batches}
    for (first, count), arrays in run_tasks(cluster, compute_batch, calls, shared=(task, order),
                                            prepare=_lowered_context, kwargs={"backend": backend},
                                            name="shard"):
        bar.advance(task.program.n_steps)
        yield first, count, arrays


def _theta0(name: str, series: np.ndarray) -> np.ndarray:
    """The real model from coefficient 0 (real by construction: the run at x = 0)."""
    constant = series[0, 0]
    if np.any(np.abs(constant.imag) > 1e-12 * (1 + np.abs(constant.real))):
        raise ArithmeticError(f"state {name!r}: the constant Taylor term is not real; the "
                              "lowered program does not start from a real run")
    return np.array(constant.real)


def _labels(task) -> tuple[str, ...] | None:
    if task.example_labels is None:
        return None
    return tuple(str(label) for label in task.example_labels)


def _existing(path, task, header: Mapping[str, Any], directions: int, resume: bool) -> Sketch:
    """A finished sketch already at ``path``: reuse it if it is this very run."""
    if not resume:
        raise FileExistsError(f"{path} already exists; remove it or choose another path")
    sketch = load_sketch(path, task=task)
    if sketch.header() != dict(header) or sketch.s != directions:
        raise SketchMismatchError(f"{path} holds a finished sketch of another run (order "
                                  f"{sketch.order}, seed {sketch.seed}, s {sketch.s}, states "
                                  f"{list(sketch.state_shapes)}); remove it or choose another path")
    return sketch


__all__ = ["compute_batch", "default_state_names", "lower_program", "precompute",
           "train_series"]
