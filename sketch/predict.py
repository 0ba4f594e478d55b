r"""Prediction (DESIGN §4): estimate f(1_D) = phi(A_{1_D}) from a sketch, for any D and phi.

Evaluate the measurement phi in Taylor arithmetic on every stored series-valued model
theta_j(z) (``taylor(measurement, order=k, seeds=<its inputs>)``) to get

    c_{j,r} = f^{(r)}(0)[psi_j^{(x) r}] / r!,      r = 0..k     (c_{j,0} = f(0))

and combine them with the deletion indicator v = 1_D:

    X_{j,r} = Re[ C(n+r-1, r) <psi_j, v>^r c_{j,r} ],   <psi, v> = sum_i conj(psi_i) v_i
    f_hat(v) = f(0) + sum_{r=1..k} mean_j X_{j,r}

Unbiasedness: write the r-th Taylor term of f as T_r(x) = sum_{|a|=r} t_a x^a, so
c_{j,r} = T_r(psi_j) and <psi, v>^r = sum_{|b|=r} (r!/b!) conj(psi)^b v^b. For psi uniform on
the complex sphere E[psi^a conj(psi)^b] = [a = b] a!(n-1)!/(n-1+r)! (directions.py), hence
E[C(n+r-1, r) <psi, v>^r c_r] = sum_a t_a v^a = T_r(v) exactly: each order's mean is an unbiased
estimate of that order's Taylor term at v, and f_hat has expectation sum_{r<=k} T_r(v) — the
order-k Taylor polynomial, whose distance to f(v) is the truncation error.

Error bars: each order's standard error is the sample standard deviation of X_{., r} over
directions / sqrt(s); the estimate's standard error uses the per-direction totals
Y_j = f(0) + sum_r X_{j,r} (orders are correlated through psi_j).

Median-of-means interval for failure probability delta: split Y_1..Y_s into
g = min(s, ceil(8 ln(1/delta))) contiguous groups (by direction index) of at least
m = floor(s/g) directions; centre = median of the group means; half-width = 2 sigma / sqrt(m)
with sigma the sample standard deviation of Y. By Chebyshev each group mean misses
E[Y] by more than 2 sigma/sqrt(m) with probability <= 1/4; the median misses only if half the
groups do, which by Hoeffding has probability <= exp(-g/8) <= delta. (sigma is estimated, and
when s < 8 ln(1/delta) the groups are single directions and the guarantee is weaker.) The
interval covers the order-k Taylor polynomial, not the truncation error.

Many deletion sets for one measurement share the c_{j,r}: they are computed once per call.
Several measurements (a list) give one result per measurement, in order.

Backends: ``backend=None`` (the default here and in the rest of ``circuitsketch.sketch``) is
the fastest one installed (``numba-cpu`` when Numba imports, else ``reference``); pass
``backend="reference"`` for the numpy interpreter that defines the semantics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..backends import evaluate, resolve_backend
from ..frontends.task import deletion_vector
from ..ir.circuit import Circuit
from ..passes.taylor import taylor
from .store import Sketch, SketchMismatchError, check_task

# ------------------------------------------------- the measurement, in Taylor arithmetic

def _output_name(measurement: Circuit, output: str | None) -> str:
    if output is None:
        if len(measurement.outputs) != 1:
            names = [o.name for o in measurement.outputs]
            raise ValueError(f"the measurement has outputs {names}; pick one with output=")
        output = measurement.outputs[0].name
    shape = measurement.output(output).shape
    if shape not in ((), (1,)):
        raise ValueError(f"measurement output {output!r} has shape {shape}; a measurement must "
                         "be a scalar")
    return output


def check_measurement(measurement: Circuit, state_shapes: Mapping[str, tuple],
                      output: str | None = None) -> str:
    """Check that ``measurement`` is a real circuit reading only the given state (with matching
    shapes) and has a scalar output; returns the output's name."""
    if measurement.order != 0:
        raise ValueError("the measurement must be a real circuit (order 0), not an already "
                         "lowered one")
    output = _output_name(measurement, output)
    shapes = measurement.input_shapes
    unknown = [name for name in shapes if name not in state_shapes]
    if unknown:
        raise ValueError(f"the measurement reads {unknown}, which are not stored model state; "
                         f"stored: {list(state_shapes)}")
    wrong = {name: (shape, tuple(state_shapes[name])) for name, shape in shapes.items()
             if tuple(shape) != tuple(state_shapes[name])}
    if wrong:
        raise ValueError(f"measurement input shapes differ from the stored state (measurement, "
                         f"stored): {wrong}")
    return output


def lower_measurement(measurement: Circuit, order: int, state_shapes: Mapping[str, tuple],
                      output: str | None = None) -> tuple[Circuit, str]:
    """``taylor(measurement, order, seeds=<its inputs>)`` after :func:`check_measurement`; also
    refuses a measurement whose output does not depend on the state."""
    output = check_measurement(measurement, state_shapes, output)
    shapes = measurement.input_shapes
    lowered = taylor(measurement, order=order, seeds=set(shapes))
    if not any(lowered.eqns[node].series for node in lowered.output(output).nodes):
        raise ValueError(f"the measurement's output {output!r} reads nothing of the model: it "
                         "does not depend on any stored state, so deletions cannot change it")
    return lowered, output


def measurement_list(measurement: Circuit | Sequence[Circuit], output: Any = None
                     ) -> tuple[list[Circuit], list[str | None], bool]:
    """One measurement or a list of them, with their outputs (None, one name, or one per
    measurement); also whether a single circuit was given."""
    if isinstance(measurement, Circuit):
        if output is not None and not isinstance(output, str):
            raise ValueError(f"one measurement takes one output name, got {output!r}")
        return [measurement], [output], True
    measurements = list(measurement)
    if not measurements or not all(isinstance(m, Circuit) for m in measurements):
        raise ValueError("measurement must be a Circuit or a non-empty list of Circuits, got "
                         f"{type(measurement).__name__}")
    outputs = [output] * len(measurements) if output is None or isinstance(output, str) else \
        list(output)
    if len(outputs) != len(measurements):
        raise ValueError(f"{len(outputs)} output names for {len(measurements)} measurements")
    return measurements, outputs, False


def measure_series(lowered: Circuit, output: str, states: Mapping[str, np.ndarray], *,
                   backend: str | None = None) -> np.ndarray:
    """phi on series-valued models: ``states[name]`` is ``[B, k+1, *shape]``; returns [B, k+1]."""
    inputs = {name: states[name] for name in lowered.input_shapes}
    batch = next(iter(inputs.values())).shape[0]
    value = evaluate(lowered, inputs, batch=batch, backend=backend)[output]
    return np.asarray(value, dtype=np.complex128).reshape(batch, lowered.order + 1)


def measurement_coefficients(sketch: Sketch, measurement: Circuit, *, order: int | None = None,
                             output: str | None = None, batch_size: int = 64,
                             backend: str | None = None) -> np.ndarray:
    """c_{j,r} for every stored direction j and r = 0..order: complex ``[s, order+1]``."""
    order = _checked_order(sketch, order)
    lowered, output = lower_measurement(measurement, order, sketch.state_shapes, output)
    blocks = []
    for first in range(0, sketch.s, batch_size):
        states = {name: sketch.series[name][first: first + batch_size, : order + 1]
                  for name in lowered.input_shapes}
        blocks.append(measure_series(lowered, output, states, backend=backend))
    return np.concatenate(blocks)


def _checked_order(sketch: Sketch, order: int | None) -> int:
    if order is None:
        return sketch.order
    if not 1 <= order <= sketch.order:
        raise SketchMismatchError(f"the sketch has order {sketch.order}: it cannot predict at "
                                  f"order {order} (choose 1..{sketch.order} or recompute it)")
    return order


# ---------------------------------------------------------------- deletion sets

def _is_one_set(deleted: Any) -> bool:
    if callable(deleted) or isinstance(deleted, (set, frozenset, int, np.integer)):
        return True
    if isinstance(deleted, np.ndarray):
        return deleted.ndim <= 1
    items = list(deleted)
    return all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in items)


def deletion_sets(deleted: Any, n: int, labels: Sequence[str] | None) -> tuple[np.ndarray, bool]:
    """Indicators [m, n] of one set or of a list of sets (indices or predicates over labels);
    also whether a single set was given."""
    def one(d: Any) -> np.ndarray:
        if isinstance(d, (set, frozenset)):
            d = sorted(d)
        elif isinstance(d, (int, np.integer)):
            d = [d]
        return deletion_vector(n, d, labels)

    if _is_one_set(deleted):
        return one(deleted)[None], True
    sets = list(deleted)
    if not sets:
        raise ValueError("no deletion sets given")
    return np.stack([one(d) for d in sets]), False


# ---------------------------------------------------------------- the estimator

def order_samples(coefficients: np.ndarray, psi: np.ndarray, indicators: np.ndarray) -> np.ndarray:
    """X_{j,r} = Re[C(n+r-1, r) <psi_j, v>^r c_{j,r}] for each v: real ``[m, s, k]`` (r = 1..k).

    ``coefficients``: [s, k+1]; ``psi``: [s, n]; ``indicators`` (the v's): [m, n].
    """
    n, k = psi.shape[1], coefficients.shape[1] - 1
    inner = np.asarray(indicators, dtype=np.float64) @ psi.conj().T  # [m, s]
    samples = np.empty(inner.shape + (k,))
    for r in range(1, k + 1):
        samples[:, :, r - 1] = (float(math.comb(n + r - 1, r)) * inner ** r
                                * coefficients[None, :, r]).real
    return samples


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise ValueError(f"delta (the failure probability) must be in (0, 1), got {delta}")


def median_of_means(values: np.ndarray, delta: float) -> tuple[float, float, int]:
    """(centre, half-width, groups) of the median-of-means interval (module doc)."""
    _check_delta(delta)
    s = len(values)
    groups = min(s, math.ceil(8 * math.log(1 / delta)))
    centre = float(np.median([g.mean() for g in np.array_split(values, groups)]))
    sigma = float(np.std(values, ddof=1)) if s > 1 else float("nan")
    return centre, 2 * sigma / math.sqrt(s // groups), groups


def _stderr(values: np.ndarray) -> np.ndarray:
    s = values.shape[0]
    if s < 2:
        return np.full(values.shape[1:], np.nan)
    return np.std(values, axis=0, ddof=1) / math.sqrt(s)


@dataclass(frozen=True)
class Prediction:
    """f(1_D) estimated from ``samples`` X_{j,r} ([s, k], r = 1..k) and f(0)."""

    f0: float
    samples: np.ndarray
    deleted: tuple[int, ...]
    delta: float = 0.05

    @property
    def s(self) -> int:
        return self.samples.shape[0]

    @property
    def order(self) -> int:
        return self.samples.shape[1]

    @property
    def terms(self) -> np.ndarray:
        """mean_j X_{j,r} for r = 1..k: the estimated Taylor terms at 1_D."""
        return self.samples.mean(axis=0)

    @property
    def term_stderr(self) -> np.ndarray:
        return _stderr(self.samples)

    def partial(self, order: int) -> float:
        """f(0) + the terms of orders 1..order (order 0 gives f(0))."""
        return self.f0 + float(self.terms[:order].sum())

    def partial_stderr(self, order: int) -> float:
        if order == 0:
            return 0.0
        return float(_stderr(self.samples[:, :order].sum(axis=1, keepdims=True))[0])

    @property
    def estimate(self) -> float:
        return self.partial(self.order)

    @property
    def stderr(self) -> float:
        return self.partial_stderr(self.order)

    @property
    def change(self) -> float:
        """Predicted f(1_D) - f(0)."""
        return self.estimate - self.f0

    @property
    def first_order(self) -> float:
        """The first-order-only prediction (the baseline: trajectory influence)."""
        return self.partial(1)

    @property
    def first_order_stderr(self) -> float:
        return self.partial_stderr(1)

    @property
    def interval(self) -> tuple[float, float]:
        """Median-of-means interval holding the order-k polynomial with probability >= 1-delta."""
        centre, half, _ = median_of_means(self.f0 + self.samples.sum(axis=1), self.delta)
        return centre - half, centre + half

    def prefix(self, s: int) -> "Prediction":
        """The prediction from the first ``s`` directions only."""
        if not 1 <= s <= self.s:
            raise ValueError(f"prefix of {s} directions out of 1..{self.s}")
        return Prediction(self.f0, self.samples[:s], self.deleted, self.delta)

    def at_weight(self, w: float) -> "Prediction":
        """The prediction of f(w 1_D): the order-r samples scale by w^r (X is homogeneous in v)."""
        powers = float(w) ** np.arange(1, self.order + 1)
        return Prediction(self.f0, self.samples * powers, self.deleted, self.delta)

    def to_dict(self) -> dict[str, Any]:
        return {"deleted": list(self.deleted), "s": self.s, "order": self.order, "f0": self.f0,
                "estimate": self.estimate, "stderr": self.stderr,
                "terms": self.terms.tolist(), "term_stderr": self.term_stderr.tolist(),
                "partial_sums": [self.partial(r) for r in range(self.order + 1)],
                "first_order": self.first_order, "first_order_stderr": self.first_order_stderr,
                "delta": self.delta, "interval": list(self.interval)}

    def __str__(self) -> str:
        lines = [f"|D| = {len(self.deleted)}, s = {self.s}: f(0) = {self.f0:.6g}"]
        for r, (term, err) in enumerate(zip(self.terms, self.term_stderr), start=1):
            lines.append(f"  order {r}: term {term:+.6g} +- {err:.2g}   "
                         f"partial sum {self.partial(r):.6g}")
        lo, hi = self.interval
        lines.append(f"  estimate f(1_D) = {self.estimate:.6g} +- {self.stderr:.2g}   "
                     f"median-of-means {1 - self.delta:.0%} interval [{lo:.6g}, {hi:.6g}]")
        return "\n".join(lines)


def predict(sketch: Sketch, measurement: Circuit | Sequence[Circuit], deleted: Any, *,
            delta: float = 0.05, order: int | None = None, output: Any = None, task=None,
            backend: str | None = None, batch_size: int = 64,
            coefficients: np.ndarray | None = None) -> Any:
    """Estimate phi(A_{1_D}) for one deletion set D or for each of a list of sets.

    ``deleted``: example indices, a predicate over example labels, or a list of these (one
    :class:`Prediction` each, sharing the c_{j,r}). ``measurement``: one circuit, or a list of
    circuits (then a list with one result per measurement; ``output`` may be a list too).
    ``order``: use orders 1..order of the sketch (default all). ``task``: check the sketch was
    made for it and take its labels. ``coefficients``: c_{j,r} from
    :func:`measurement_coefficients`, to reuse across calls (one measurement only).
    ``backend``: None is the fastest installed (module doc).
    """
    measurements, outputs, single = measurement_list(measurement, output)
    if not single:
        if coefficients is not None:
            raise ValueError("coefficients= is for one measurement; got a list of measurements")
        return [predict(sketch, m, deleted, delta=delta, order=order, output=o, task=task,
                        backend=backend, batch_size=batch_size)
                for m, o in zip(measurements, outputs)]
    backend = resolve_backend(backend)
    order = _checked_order(sketch, order)
    _check_delta(delta)
    labels = sketch.example_labels
    if task is not None:
        check_task(sketch, task)
        labels = task.example_labels
    indicators, single = deletion_sets(deleted, sketch.n, labels)
    output = check_measurement(measurement, sketch.state_shapes, output)
    if coefficients is None:
        coefficients = measurement_coefficients(sketch, measurement, order=order, output=output,
                                                batch_size=batch_size, backend=backend)
    elif coefficients.shape[0] != sketch.s or coefficients.shape[1] < order + 1:
        raise ValueError(f"coefficients of shape {coefficients.shape} do not fit a sketch of "
                         f"s = {sketch.s} at order {order}")
    inputs = {name: sketch.theta0[name] for name in measurement.input_shapes}
    f0 = float(np.asarray(evaluate(measurement, inputs, backend=backend)[output]).reshape(()))
    samples = order_samples(coefficients[:, : order + 1], sketch.psi(), indicators)
    predictions = [Prediction(f0, samples[i], tuple(int(j) for j in np.flatnonzero(v)), delta)
                   for i, v in enumerate(indicators)]
    return predictions[0] if single else predictions


__all__ = ["Prediction", "check_measurement", "deletion_sets", "lower_measurement",
           "measure_series", "measurement_coefficients", "measurement_list", "median_of_means",
           "order_samples", "predict"]
