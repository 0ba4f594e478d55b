"""Exact-series mode against independent references: real retraining at w 1_D (to truncation
accuracy) and finite differences of retraining (orders 1 and 2)."""

import numpy as np
import pytest

from circuitsketch.sketch import exact_series, retrained_values
from test_sketch_tasks import point_loss_measurement, regression_task

SETS = [[0, 5, 7], list(range(12))]


@pytest.fixture(scope="module")
def logistic():
    task = regression_task()
    measurement = point_loss_measurement()
    return task, measurement, exact_series(task, SETS, 10, measurement, progress=False)


def test_partial_sums_converge_to_retraining(logistic):
    task, measurement, series = logistic
    weights = np.array([0.25, 0.5, 1.0])
    xs = (weights[:, None, None] * series.indicators[None]).reshape(-1, task.n_examples)
    truths = retrained_values(task, measurement, xs, progress=False).reshape(3, len(SETS))
    for w, truth in zip(weights, truths):
        sums = series.partial_sums(w)
        errors = np.abs(sums - truth[:, None])
        # what order 6 misses is the tail of the series (orders 7..10 measure it)
        assert np.all(errors[:, 6] <= 2 * np.abs(sums[:, 10] - sums[:, 6]) + 1e-13)
        assert np.all(errors[:, 10] <= 1e-3 * errors[:, 1] + 1e-14)
        assert np.all(errors[:, 10] < 1e-5)


def test_low_orders_match_finite_differences(logistic):
    task, measurement, series = logistic
    h = 1e-3
    xs = np.concatenate([h * series.indicators, -h * series.indicators, 0 * series.indicators])
    plus, minus, zero = retrained_values(task, measurement, xs, progress=False).reshape(3, -1)
    np.testing.assert_allclose(series.coefficients[:, 0], zero, rtol=1e-13)
    # central differences: error h^2 a_3 (~1e-8) plus rounding (~1e-16 / h)
    np.testing.assert_allclose(series.coefficients[:, 1], (plus - minus) / (2 * h), atol=1e-7)
    np.testing.assert_allclose(series.coefficients[:, 2], (plus - 2 * zero + minus) / (2 * h * h),
                               rtol=1e-3, atol=1e-6)


def test_batched_sets_equal_single_runs(logistic):
    task, measurement, series = logistic
    for i, deleted in enumerate(SETS):
        alone = exact_series(task, deleted, 10, measurement, batch_size=1, progress=False)
        np.testing.assert_allclose(alone.coefficients[0], series.coefficients[i], rtol=1e-12,
                                   atol=1e-16)
    predicate = exact_series(task, lambda label: label in ("ex0", "ex5", "ex7"), 10, measurement,
                             progress=False)
    np.testing.assert_allclose(predicate.coefficients[0], series.coefficients[0], rtol=1e-12,
                               atol=1e-16)


def test_bad_inputs(logistic):
    task, measurement, _ = logistic
    with pytest.raises(ValueError, match="order >= 1"):
        exact_series(task, [1], 0, measurement, progress=False)
    with pytest.raises(ValueError, match="empty"):
        exact_series(task, [[1], []], 2, measurement, progress=False)
