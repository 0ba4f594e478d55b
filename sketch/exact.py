r"""Exact-series mode (DESIGN §4, paper Fig. 2): deletion sets known in advance, no sampling noise.

For a deletion set D, train once in order-k Taylor arithmetic along the *real* direction
x = w 1_D (w plays the role of z). The measurement of the final series-valued model gives the
exact Taylor coefficients of the one-variable function

    g_D(w) = f(w 1_D) = sum_{r=0..k} a_{D,r} w^r + O(w^{k+1}),   a_{D,r} = g_D^{(r)}(0) / r!

and the partial sums sum_{r<=R} a_{D,r} w^r approximate the retrained value f(w 1_D) (at w = 1:
D deleted) with only the truncation error. a_{D,r} is also exactly what the random-direction
estimator's order-r term estimates in expectation (predict.py), which makes this mode the
noise-free reference for it. Many sets run at once: the rows 1_{D_1}, ..., 1_{D_m} are a batch
of directions of one lowered run (``batch_size`` sets per run). Many measurements (a list)
share the training: each batch of sets trains once and every measurement is read off the same
series-valued models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..backends import resolve_backend
from ..ir.circuit import Circuit
from .precompute import lower_program, train_series
from .predict import deletion_sets, lower_measurement, measure_series, measurement_list
from .progress import ProgressBar, compile_note


@dataclass(frozen=True)
class ExactSeries:
    """Coefficients a_{D,r} ([m, k+1], real) of w -> f(w 1_D) for each deletion set D."""

    coefficients: np.ndarray
    indicators: np.ndarray

    @property
    def order(self) -> int:
        return self.coefficients.shape[1] - 1

    def partial_sums(self, w: float) -> np.ndarray:
        """[m, k+1]: column R is sum_{r<=R} a_{D,r} w^r, the order-R prediction of f(w 1_D)."""
        powers = float(w) ** np.arange(self.order + 1)
        return np.cumsum(self.coefficients * powers, axis=1)

    def value(self, w: float, order: int | None = None) -> np.ndarray:
        """The order-``order`` (default k) prediction of f(w 1_D) for every set: [m]."""
        return self.partial_sums(w)[:, self.order if order is None else order]

    def to_dict(self) -> dict[str, Any]:
        return {"order": self.order, "coefficients": self.coefficients.tolist(),
                "deleted": [np.flatnonzero(v).tolist() for v in self.indicators]}


def exact_series(task, deleted: Any, order: int, measurement: Circuit | Sequence[Circuit], *,
                 output: Any = None, backend: str | None = None, batch_size: int = 16,
                 progress: bool = True) -> ExactSeries | list[ExactSeries]:
    """Exact Taylor coefficients of w -> f(w 1_D) up to ``order`` for one set or a list of sets.

    ``deleted`` takes the forms :func:`~circuitsketch.sketch.predict` takes (indices, a
    predicate over ``task.example_labels``, or a list of these). ``measurement``: one circuit,
    or a list of circuits, all read off one training run per batch of sets (then one
    :class:`ExactSeries` per measurement, in order; ``output`` may be a list too).
    ``backend``: None is the fastest installed.
    """
    if int(order) < 1 or int(batch_size) < 1:
        raise ValueError(f"need order >= 1 and batch_size >= 1, got {order} and {batch_size}")
    backend = resolve_backend(backend)
    measurements, outputs, single = measurement_list(measurement, output)
    shapes = {name: task.program.step.input_shapes[name] for name in task.state_names}
    lowered_measurements = [lower_measurement(m, order, shapes, o)
                            for m, o in zip(measurements, outputs)]
    indicators, _ = deletion_sets(deleted, task.n_examples, task.example_labels)
    lowered = lower_program(task, order)
    keep = tuple(dict.fromkeys(name for m in measurements for name in m.input_shapes))
    batches = range(0, len(indicators), batch_size)
    blocks: list[list[np.ndarray]] = [[] for _ in measurements]
    with ProgressBar(len(batches) * task.program.n_steps, label=f"exact series k={order}",
                     enabled=progress,
                     note=compile_note(backend, series=True,
                                      width=min(batch_size, len(indicators)))) as bar:
        for first in batches:
            states = train_series(task, lowered, indicators[first: first + batch_size], keep,
                                  backend=backend, progress=lambda step: bar.advance(1))
            for found, (lowered_measurement, name) in zip(blocks, lowered_measurements):
                found.append(measure_series(lowered_measurement, name, states, backend=backend))
    results = [ExactSeries(_real(np.concatenate(found)), indicators) for found in blocks]
    return results[0] if single else results


def _real(coefficients: np.ndarray) -> np.ndarray:
    """The coefficients' real part, after checking they are real (real directions, real f)."""
    scale = 1e-9 * (1 + np.abs(coefficients.real).max())
    if np.abs(coefficients.imag).max() > scale:
        raise ArithmeticError("exact-series coefficients along real directions came out complex "
                              f"(max imaginary part {np.abs(coefficients.imag).max():.3g}): the "
                              "lowered program does not compute a real function")
    return coefficients.real.copy()


__all__ = ["ExactSeries", "exact_series"]
