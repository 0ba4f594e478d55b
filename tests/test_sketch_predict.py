"""predict() on small weighted regression tasks, against exact series and real retraining.

References: the exact-series coefficients a_{D,r} of w -> f(w 1_D) (one Taylor run along the
real direction 1_D), which the order-r sample mean estimates without bias, and real retraining
at x = 1_D. Tolerances are multiples of the reported standard errors (the seeds are fixed, so
the tests are deterministic; 4 s.e. leaves a margin for the ~10 comparisons per test).
"""

import importlib

import numpy as np
import pytest

import circuitsketch as cs
from circuitsketch.sketch import (SketchMismatchError, exact_series, precompute, predict,
                                  retrained_values)
from test_sketch_tasks import logit_measurement, point_loss_measurement, regression_task

predict_module = importlib.import_module("circuitsketch.sketch.predict")


@pytest.fixture(scope="module")
def logistic():
    task = regression_task()
    sketch = precompute(task, directions=1600, order=3, batch_size=800, progress=False)
    return task, sketch


@pytest.fixture(scope="module")
def polynomial():
    # squared loss, 3 steps of 4 examples: the parameters are polynomials of degree <= 3 in x
    task = regression_task(loss="squared", n=12, n_steps=3, lr=0.1)
    sketch = precompute(task, directions=4000, order=3, batch_size=2000, progress=False)
    return task, sketch


DELETIONS = [[0, 5, 7], lambda label: label in ("ex3", "ex11"), list(range(12))]


def test_prediction_matches_exact_series_and_retraining(logistic):
    task, sketch = logistic
    measurement = point_loss_measurement()
    predictions = predict(sketch, measurement, DELETIONS, task=task)
    exact = exact_series(task, DELETIONS, 3, measurement, progress=False)
    truths = retrained_values(task, measurement, exact.indicators, progress=False)
    for p, coefficients, truth, partial in zip(predictions, exact.coefficients, truths,
                                               exact.partial_sums(1.0)):
        assert p.f0 == pytest.approx(coefficients[0], abs=1e-12)
        assert np.all(np.abs(p.terms - coefficients[1:]) < 4 * p.term_stderr)
        truncation = abs(truth - partial[3])
        assert abs(p.estimate - truth) < 3 * p.stderr + truncation
        assert 1.7 < p.prefix(400).stderr / p.stderr < 2.3  # error ~ 1/sqrt(s)
    for p, truth in zip(predictions[:2], truths):  # small sets: the change is resolved
        assert p.stderr < 0.5 * abs(truth - p.f0)
    assert predictions[1].deleted == (3, 11)


def test_unbiased_when_f_is_a_polynomial_of_the_order(polynomial):
    task, sketch = polynomial
    measurement = logit_measurement()
    sets = [[0, 1], [2, 6, 9], list(range(0, 12, 2))]
    exact = exact_series(task, sets, 5, measurement, progress=False)
    truths = retrained_values(task, measurement, exact.indicators, progress=False)
    np.testing.assert_allclose(exact.coefficients[:, 4:], 0, atol=1e-12)  # degree <= 3
    np.testing.assert_allclose(exact.value(1.0), truths, rtol=1e-12)
    for p, coefficients, truth in zip(predict(sketch, measurement, sets), exact.coefficients, truths):
        assert np.all(np.abs(p.terms - coefficients[1:4]) < 4 * p.term_stderr)
        assert abs(p.estimate - truth) < 4 * p.stderr


def test_many_sets_reuse_the_coefficients(logistic, monkeypatch):
    task, sketch = logistic
    measurement = point_loss_measurement()
    calls = []
    original = predict_module.measurement_coefficients
    monkeypatch.setattr(predict_module, "measurement_coefficients",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    together = predict(sketch, measurement, DELETIONS)
    assert len(calls) == 1
    alone = [predict(sketch, measurement, d) for d in DELETIONS]
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a.samples, b.samples, rtol=1e-12, atol=1e-15)
    lower = predict(sketch, measurement, DELETIONS[0], order=2)
    assert lower.estimate == pytest.approx(together[0].partial(2), rel=1e-12)


def test_bad_inputs_are_clear_errors(logistic):
    task, sketch = logistic
    measurement = point_loss_measurement()
    with pytest.raises(ValueError, match="outside 0..23"):
        predict(sketch, measurement, [3, 24])
    with pytest.raises(ValueError, match="empty"):
        predict(sketch, measurement, [])
    with pytest.raises(ValueError, match="empty"):
        predict(sketch, measurement, lambda label: label == "nobody")
    with pytest.raises(ValueError, match="reads nothing of the model"):
        predict(sketch, cs.trace(lambda w: {"c": cs.stop_gradient(w[0]) * 2}, w=(3,)), [1])
    with pytest.raises(ValueError, match=r"reads \['v'\], which are not stored"):
        predict(sketch, cs.trace(lambda w, v: {"c": w[0] * v}, w=(3,), v=()), [1])
    with pytest.raises(ValueError, match="shapes differ"):
        predict(sketch, cs.trace(lambda w: {"c": w[0] * w[1]}, w=(2,)), [1])
    with pytest.raises(ValueError, match="must be a scalar"):
        predict(sketch, cs.trace(lambda w: {"c": w * 2}, w=(3,)), [1])
    with pytest.raises(SketchMismatchError, match="order 3: it cannot predict at order 4"):
        predict(sketch, measurement, [1], order=4)
    with pytest.raises(SketchMismatchError, match="fingerprint"):
        predict(sketch, measurement, [1], task=regression_task(seed=1))
    with pytest.raises(ValueError, match="delta"):
        predict(sketch, measurement, [1], delta=0)
