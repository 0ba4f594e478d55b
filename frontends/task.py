"""A training task: a traced training program together with everything needed to run it.

The deletion scheme (``sketch/``), the regularity tangents and the benchmarks all work on a
:class:`TrainingTask`: the real (order-0) :class:`~circuitsketch.ir.Program`, its initial state,
its per-step data and static inputs, and the map from steps to the training examples whose
down-weights they read. ``retrain(x)`` is the ground truth every estimate is compared with: the
same training, really run, at down-weights ``x``.

A *measurement* is a traced circuit whose inputs are (a subset of) the carried state — e.g. the
loss of the trained model on one test name — with one scalar output.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..backends import resolve_backend, run_program
from ..ir.circuit import Circuit, Program
from ..ir.text import print_program


@dataclass(frozen=True)
class TrainingTask:
    """A real training program with its inputs; ``x`` (length ``n_examples``) are the down-weights."""

    program: Program
    init: dict[str, np.ndarray]
    data: dict[str, np.ndarray] = field(default_factory=dict)
    static: dict[str, np.ndarray] = field(default_factory=dict)
    n_examples: int = 0
    example_ids: np.ndarray | None = None
    #: a human-readable label per example (e.g. the name), for predicates over examples
    example_labels: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if self.program.order != 0:
            raise ValueError("a TrainingTask holds the real program; lower it with taylor() when running")
        if self.program.weight is None:
            raise ValueError("the training program has no down-weight input (trace_program(weight=...))")
        if self.n_examples <= 0:
            raise ValueError(f"n_examples must be positive, got {self.n_examples}")
        if self.example_labels is not None and len(self.example_labels) != self.n_examples:
            raise ValueError(f"{len(self.example_labels)} labels for {self.n_examples} examples")

    @property
    def state_names(self) -> tuple[str, ...]:
        return self.program.carry

    def retrain(self, x: np.ndarray | None = None, *, backend: str | None = None,
                batch: int | None = None, progress: Callable[[int], None] | None = None
                ) -> dict[str, np.ndarray]:
        """Really train at down-weights ``x`` ([n] or, with ``batch``, [batch, n]); default 0.
        ``backend``: None is the fastest installed (``backends.default_backend``)."""
        if x is None:
            x = np.zeros(self.n_examples)
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != self.n_examples:
            raise ValueError(f"x must have {self.n_examples} down-weights per run, got shape {x.shape}")
        return run_program(self.program, self.init, data=self.data, static=self.static, x=x,
                           example_ids=self.example_ids, batch=batch,
                           backend=resolve_backend(backend), progress=progress,
                           n_examples=self.n_examples)

    def deletion_vector(self, deleted: Sequence[int] | Callable[[str], bool]) -> np.ndarray:
        """The indicator 1_D of a set of example indices or of a predicate over example labels."""
        return deletion_vector(self.n_examples, deleted, self.example_labels)

    def fingerprint(self) -> str:
        """sha256 over the program text (without source locations: editing the file that traced
        it does not change the program) and every input array: a sketch is valid only for this."""
        digest = hashlib.sha256(print_program(without_locations(self.program)).encode())
        for group in (self.init, self.data, self.static):
            for name in sorted(group):
                array = np.ascontiguousarray(group[name], dtype=np.float64)
                digest.update(name.encode() + str(array.shape).encode() + array.tobytes())
        if self.example_ids is not None:
            digest.update(np.ascontiguousarray(self.example_ids, dtype=np.int64).tobytes())
        digest.update(str(self.n_examples).encode())
        return digest.hexdigest()


def deletion_vector(n: int, deleted: Sequence[int] | Callable[[str], bool],
                    labels: Sequence[str] | None = None) -> np.ndarray:
    """1_D as a float vector of length n; clear errors for unknown indices or an empty set."""
    if callable(deleted):
        if labels is None:
            raise ValueError("a predicate over examples needs example labels")
        indices = [i for i, label in enumerate(labels) if deleted(label)]
    else:
        indices = [int(i) for i in np.asarray(deleted).ravel()]
        bad = [i for i in indices if not 0 <= i < n]
        if bad:
            raise ValueError(f"deletion set has indices outside 0..{n - 1}: {bad[:10]}")
    if not indices:
        raise ValueError("the deletion set is empty")
    vector = np.zeros(n)
    vector[indices] = 1.0
    return vector


def without_locations(target: Circuit | Program) -> Circuit | Program:
    """The same circuit or program with every node's source location dropped."""
    if isinstance(target, Program):
        return dataclasses.replace(target, step=without_locations(target.step))
    return dataclasses.replace(target, eqns=tuple(dataclasses.replace(e, loc=None)
                                                  for e in target.eqns))
