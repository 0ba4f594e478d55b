r"""Are the order-k Taylor coefficients of a whole training run right? (issue 13, paper Fig. 1)

For a direction v (real, or complex like Fig. 1's psi_j) one Taylor training run gives the
coefficients c_r(v), r = 0..k, of g(w) = f(w v) (f = a measurement of the trained model). Three
independent checks, none trusting the engine that computed c_r:

(a) **backends**: the same run on ``reference`` (numpy, defines meaning). Differences are
    rounding (other summation orders), measured per r relative to the *envelope*
    e_r = max_{|r'-r| <= 3} |c_{r'}(v)|: a coefficient that crosses zero between its neighbours
    is small by cancellation, and its rounding error is that of its neighbours, not of itself.
    This tests the engine (plan, kernels, memory reuse), not the recurrences: both backends
    run the rules of ``semantics/series.py`` (tests/test_taylor_rules.py checks those against
    mpmath).
(b) **retraining**: partial sums S_R(w) = sum_{r<=R} c_r w^r against the model really trained
    at down-weights w v (real v only), for w inside the convergence region. The residual
    e(w) = S_k(w) - f(w v) pins c_r down only where the term is large: a relative error
    delta of c_r moves S_k(w) by delta e_r w^r, so ``retraining_resolution`` =
    min_w |e(w)| / (e_r w^r) is the relative error of c_r that (b) would have seen (if errors
    of different orders do not cancel); terms below the residual are not tested at all.
(c) **rescaling**: c_r(a v) = a^r c_r(v) exactly in real arithmetic. With a non-power-of-two
    a (0.7) every rounding of the run differs, so |c_r(a v) - a^r c_r(v)| / (a^r e_r) measures
    the rounding error accumulated at order r. A power of two would scale every operation
    exactly and agree bitwise whatever the error. It cannot see a wrong rule: a consistently
    wrong recurrence still scales as a^r.

:func:`order_check` runs the three (each step resumable through ``checkpoint``: a stage whose
settings match is loaded, not recomputed) and returns an :class:`OrderCheck`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..backends import resolve_backend
from ..frontends.task import without_locations
from ..ir.circuit import Circuit
from ..ir.text import print_circuit
from .evaluate import retrained_values
from .precompute import lower_program, train_series
from .predict import lower_measurement, measure_series
from .progress import ProgressBar, compile_note

#: half-width of the window of orders whose largest |c_r| is the scale of order r
ENVELOPE_WIDTH = 3


def series_coefficients(task, measurement: Circuit, xs: np.ndarray, order: int, *,
                        backend: str | None = None, output: str | None = None,
                        label: str = "series", progress: bool = True) -> np.ndarray:
    """c_r(x_b) for every row x_b of ``xs`` ([B, n]): complex ``[B, k+1]``, one Taylor run."""
    backend = resolve_backend(backend)
    xs = np.atleast_2d(xs)
    if xs.shape[1] != task.n_examples:
        raise ValueError(f"directions must have n = {task.n_examples} entries, got {xs.shape}")
    shapes = {name: task.program.step.input_shapes[name] for name in task.state_names}
    lowered_measurement, name = lower_measurement(measurement, order, shapes, output)
    with ProgressBar(task.program.n_steps, label=f"{label} k={order} on {backend}",
                     enabled=progress,
                     note=compile_note(backend, series=True, width=len(xs))) as bar:
        states = train_series(task, lower_program(task, order), xs,
                              tuple(measurement.input_shapes), backend=backend,
                              progress=lambda step: bar.advance(1))
    return measure_series(lowered_measurement, name, states, backend=backend)


def envelope(coefficients: np.ndarray, width: int = ENVELOPE_WIDTH) -> np.ndarray:
    """e_r = max |c_{r'}| over |r' - r| <= width (the scale of order r's rounding)."""
    size = np.abs(np.asarray(coefficients))
    return np.array([size[max(0, r - width): r + width + 1].max() for r in range(len(size))])


def _relative(difference: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """|difference| / scale, 0 where both are 0 (a coefficient that is exactly zero)."""
    difference, tiny = np.abs(difference), np.finfo(float).tiny
    return np.where(difference == 0, 0.0, difference / np.maximum(scale, tiny))


def backend_mismatch(coefficients: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(a): |c_r - c_r^ref| / e_r(ref) per order."""
    return _relative(coefficients - reference, envelope(reference))


def rescaling_mismatch(coefficients: np.ndarray, scaled: np.ndarray, scale: float) -> np.ndarray:
    """(c): |c_r(a v) - a^r c_r(v)| / (a^r e_r(v)) per order."""
    powers = float(scale) ** np.arange(len(coefficients))
    return _relative(scaled - powers * coefficients, powers * envelope(coefficients))


def partial_sums(coefficients: np.ndarray, w: float) -> np.ndarray:
    """S_R(w) = sum_{r<=R} c_r w^r for R = 0..k (real part: v and f real)."""
    return np.cumsum(np.real(coefficients) * float(w) ** np.arange(len(coefficients)))


def radius_estimate(coefficients: np.ndarray) -> float:
    """Convergence radius from the root test on the envelope over the upper half of the orders
    (exp of minus the fitted slope of log e_r); inf if the coefficients vanish there."""
    k = len(coefficients) - 1
    r = np.arange(max(1, k // 2), k + 1)
    logs = np.log(envelope(coefficients)[r])
    if len(r) < 2 or not np.all(np.isfinite(logs)):
        return float("inf")
    return float(np.exp(-np.polyfit(r, logs, 1)[0]))


def retraining_resolution(coefficients: np.ndarray, weights: np.ndarray,
                          truths: np.ndarray, floor: float) -> np.ndarray:
    """(b): per order, min over w of max(|S_k(w) - f(w v)|, floor) / (e_r w^r): the relative
    error of c_r that would have moved some partial sum by more than its residual."""
    scale = envelope(coefficients)
    best = np.full(len(coefficients), np.inf)
    for w, truth in zip(weights, truths):
        if w == 0:
            continue
        residual = max(abs(partial_sums(coefficients, w)[-1] - truth), floor)
        best = np.minimum(best, residual / np.maximum(scale * abs(w) ** np.arange(len(scale)),
                                                      np.finfo(float).tiny))
    return best


def tail_estimate(coefficients: np.ndarray, w: float, radius: float) -> float:
    """What truncating at k leaves out at w, from the last terms: max_{r>k-5} |c_r w^r| times
    the geometric factor q / (1 - q), q = w / radius (capped at 0.95)."""
    k = len(coefficients) - 1
    first = max(0, k - 4)
    last = envelope(coefficients)[first:] * abs(w) ** np.arange(first, k + 1)
    q = min(abs(w) / radius, 0.95) if radius > 0 else 0.95
    return float(last.max() * q / (1 - q))


@dataclass(frozen=True)
class OrderCheck:
    """The coefficients and the three checks' raw material (see the module doc)."""

    order: int
    scale: float
    coefficients: np.ndarray  # c_r(v), the checked run
    scaled: np.ndarray  # c_r(a v), same backend
    backend: str
    compared: np.ndarray | None = None  # c_r on the (a) task, checked backend
    reference: np.ndarray | None = None  # c_r on the (a) task, reference backend
    reference_steps: int | None = None
    weights: np.ndarray | None = None
    truths: np.ndarray | None = None  # retrained f(w v)
    floor: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def rescaling(self) -> np.ndarray:
        return rescaling_mismatch(self.coefficients, self.scaled, self.scale)

    def backends(self) -> np.ndarray | None:
        if self.reference is None:
            return None
        return backend_mismatch(self.compared, self.reference)

    def radius(self) -> float:
        return radius_estimate(self.coefficients)

    def residuals(self) -> np.ndarray | None:
        """[W, k+1]: S_R(w) - f(w v) for every weight and order."""
        if self.truths is None:
            return None
        return np.array([partial_sums(self.coefficients, w) - t
                         for w, t in zip(self.weights, self.truths)])

    def resolution(self) -> np.ndarray | None:
        if self.truths is None:
            return None
        return retraining_resolution(self.coefficients, self.weights, self.truths, self.floor)

    def tails(self) -> np.ndarray | None:
        if self.truths is None:
            return None
        return np.array([tail_estimate(self.coefficients, w, self.radius()) for w in self.weights])

    def failures(self, *, backend_tolerance: float = 1e-10, rescaling_tolerance: float = 1e-10,
                 tail_factor: float = 10.0) -> list[str]:
        """What fails, one line each (empty: all pass): (a) or (c) above its tolerance at some
        order (relative to e_r), or (b) a residual |S_k(w) - f(w v)| above ``tail_factor``
        times the estimated tail plus the rounding floor."""
        found = []
        checks = (("(a) backends", self.backends(), backend_tolerance),
                  ("(c) rescaling", self.rescaling(), rescaling_tolerance))
        for what, mismatch, tolerance in checks:
            if mismatch is not None and not mismatch.max() <= tolerance:  # NaN fails too
                r = int(np.nanargmax(mismatch)) if np.any(np.isfinite(mismatch)) else 0
                found.append(f"{what}: mismatch {mismatch[r]:.3g} at order {r} > {tolerance:.3g}")
        if self.truths is not None:
            for w, residual, tail in zip(self.weights, self.residuals()[:, -1], self.tails()):
                if not abs(residual) <= tail_factor * tail + self.floor:
                    found.append(f"(b) retraining at w = {w:.4g}: |S_k - f| = {abs(residual):.3g}"
                                 f" > {tail_factor:g} x tail {tail:.3g} + {self.floor:.3g}")
        return found

    def to_dict(self) -> dict[str, Any]:
        def listed(a):
            return None if a is None else np.asarray(a).tolist()

        def pairs(a):
            return None if a is None else [[float(z.real), float(z.imag)] for z in a]

        return {"order": self.order, "scale": self.scale, "backend": self.backend,
                "reference_steps": self.reference_steps, "radius_estimate": self.radius(),
                "coefficients": pairs(self.coefficients), "scaled": pairs(self.scaled),
                "compared": pairs(self.compared), "reference": pairs(self.reference),
                "envelope": listed(envelope(self.coefficients)),
                "rescaling_mismatch": listed(self.rescaling()),
                "backend_mismatch": listed(self.backends()),
                "weights": listed(self.weights), "retrained": listed(self.truths),
                "residuals": listed(self.residuals()), "tails": listed(self.tails()),
                "retraining_floor": self.floor, "retraining_resolution": listed(self.resolution()),
                "timings_s": dict(self.timings)}


def _stage(checkpoint: Path | None, name: str, settings: dict[str, Any],
           compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``compute()``, or its saved result in ``checkpoint/name.npy`` if saved with ``settings``."""
    if checkpoint is None:
        return compute()
    array_path, meta_path = checkpoint / f"{name}.npy", checkpoint / f"{name}.json"
    if array_path.exists() and meta_path.exists() and \
            json.loads(meta_path.read_text()) == settings:
        return np.load(array_path)
    result = compute()
    checkpoint.mkdir(parents=True, exist_ok=True)
    np.save(str(array_path) + ".tmp.npy", result)
    os.replace(str(array_path) + ".tmp.npy", array_path)  # atomic: a kill leaves no half file
    meta_path.write_text(json.dumps(settings))
    return result


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _direction_key(v: np.ndarray) -> str:
    return _digest(np.ascontiguousarray(v, dtype=np.complex128).tobytes())


def order_check(task, measurement: Circuit, direction: np.ndarray, order: int, *,
                scale: float = 0.7, backend: str | None = None,
                reference_task: Any = None, reference_backend: str = "reference",
                weights: Sequence[float] | None = None, retrain_backend: str | None = None,
                checkpoint: str | os.PathLike | None = None, progress: bool = True) -> OrderCheck:
    """Run checks (a)-(c) on the order-``order`` coefficients of w -> f(w direction).

    ``reference_task``: the task of check (a) (default ``task``; a shorter run of the same
    model keeps the slow reference affordable), along ``direction[:reference_task.n_examples]``;
    ``None`` with ``reference_backend=None`` skips (a). ``weights`` for (b) (real directions
    only): default 0.25, 0.5, 0.75 and 0.9 times the estimated convergence radius, and 0;
    the retrainings run on ``retrain_backend`` (default ``backend``).
    ``checkpoint``: a directory where each finished stage is kept (rerunning resumes).
    """
    if isinstance(order, bool) or int(order) != order or order < 1:
        raise ValueError(f"order must be an int >= 1, got {order!r}")
    direction = np.asarray(direction)
    if direction.shape != (task.n_examples,) or not np.all(np.isfinite(direction)):
        raise ValueError(f"direction must be a finite vector of n = {task.n_examples} entries, got "
                         f"shape {direction.shape}")
    if not np.isfinite(scale) or scale <= 0 or np.log2(scale) == round(np.log2(scale)):
        raise ValueError(f"scale must be positive and not a power of two (powers of two scale "
                         f"every rounding exactly, so they prove nothing), got {scale}")
    backend = resolve_backend(backend)
    folder = Path(checkpoint) if checkpoint is not None else None
    base = {"task": task.fingerprint(),
            "measurement": _digest(print_circuit(without_locations(measurement)).encode()),
            "order": int(order), "direction": _direction_key(direction)}
    timings: dict[str, float] = {}

    def timed(name, settings, compute):
        start = time.monotonic()
        result = _stage(folder, name, settings, compute)
        timings[name] = time.monotonic() - start
        return result

    both = timed("checked", {**base, "scale": scale, "backend": backend},
                 lambda: series_coefficients(task, measurement, np.stack([direction,
                                             scale * direction]), order, backend=backend,
                                             label="(c) v and a v", progress=progress))
    check = {"order": int(order), "scale": float(scale), "coefficients": both[0],
             "scaled": both[1], "backend": backend}
    if reference_backend is not None:
        check.update(_backend_stage(task, reference_task, measurement, direction, order, backend,
                                    reference_backend, both[0], base, timed, progress))
    if np.all(np.isreal(direction)):
        check.update(_retraining_stage(task, measurement, direction.real, both[0], weights,
                                       resolve_backend(retrain_backend or backend), base, timed,
                                       progress))
    return OrderCheck(**check, timings=timings)


def _backend_stage(task, reference_task, measurement, direction, order, backend,
                   reference_backend, checked, base, timed, progress) -> dict[str, Any]:
    """Check (a): the (shorter) task on both backends, or the checked run itself again."""
    short = reference_task if reference_task is not None else task
    v = direction[:short.n_examples]
    settings = {**base, "task": short.fingerprint(), "direction": _direction_key(v)}
    if short is task:
        compared = checked
    else:
        compared = timed("compared", {**settings, "backend": backend},
                         lambda: series_coefficients(short, measurement, v, order,
                                                     backend=backend, label="(a) checked",
                                                     progress=progress)[0])
    reference = timed("reference", {**settings, "backend": reference_backend},
                      lambda: series_coefficients(short, measurement, v, order,
                                                  backend=reference_backend, label="(a) reference",
                                                  progress=progress)[0])
    return {"compared": compared, "reference": reference,
            "reference_steps": int(short.program.n_steps)}


def _retraining_stage(task, measurement, v, coefficients, weights, backend, base, timed,
                      progress) -> dict[str, Any]:
    """Check (b): really train at w v for each weight (w = 0 included: S_0 = f(0))."""
    if weights is None:
        radius = min(radius_estimate(coefficients), 1e3)
        weights = [0.0] + [fraction * radius for fraction in (0.25, 0.5, 0.75, 0.9)]
    weights = np.asarray(weights, dtype=np.float64)
    truths = timed("retrained", {**base, "weights": weights.tolist(), "backend": backend},
                   lambda: retrained_values(task, measurement, weights[:, None] * v[None],
                                            backend=backend, progress=progress))
    # what two ways of computing the same real training may differ by: rounding of f, ~1e-13
    floor = 1e-13 * max(1.0, float(np.abs(truths).max()))
    return {"weights": weights, "truths": np.asarray(truths, dtype=np.float64), "floor": floor}


__all__ = ["OrderCheck", "backend_mismatch", "envelope", "order_check", "partial_sums",
           "radius_estimate", "rescaling_mismatch", "retraining_resolution",
           "series_coefficients", "tail_estimate"]
