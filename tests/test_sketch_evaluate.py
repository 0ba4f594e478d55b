"""Evaluation: the report against retraining, deletion curves, Spearman and the LDS."""

import json

import numpy as np
import pytest

from circuitsketch.sketch import (deletion_curve, evaluate_deletions, exact_series,
                                  linear_datamodeling_score, precompute, predict,
                                  retrained_values, spearman)
from circuitsketch.sketch.evaluate import (DeletionReport, plot_deletion_curve, plot_stderr_by_s,
                                           random_subsets)
from circuitsketch.sketch.predict import Prediction
from test_sketch_tasks import point_loss_measurement, regression_task


@pytest.fixture(scope="module")
def logistic():
    task = regression_task()
    sketch = precompute(task, directions=1600, order=3, batch_size=800, progress=False)
    return task, sketch, point_loss_measurement()


def test_spearman_against_scipy_and_the_textbook_formula():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=30), rng.normal(size=30)
    d = np.argsort(np.argsort(a)) - np.argsort(np.argsort(b))
    assert spearman(a, b) == pytest.approx(1 - 6 * (d ** 2).sum() / (30 * (30 ** 2 - 1)), rel=1e-12)
    assert spearman(a, 2 * a + 1) == pytest.approx(1.0) and spearman(a, -a) == pytest.approx(-1.0)
    # ties: Pearson correlation of average ranks, the ranks counted by brute force
    ties_a, ties_b = rng.integers(0, 5, size=40), rng.integers(0, 4, size=40)

    def average_ranks(v):
        return np.array([(v < x).sum() + ((v == x).sum() + 1) / 2 for x in v])

    expected = np.corrcoef(average_ranks(ties_a), average_ranks(ties_b))[0, 1]
    assert spearman(ties_a, ties_b) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="equally long"):
        spearman([1, 2, 3], [1, 2])


def test_report_compares_orders_and_prefixes_with_retraining(logistic):
    task, sketch, measurement = logistic
    sets = [[0, 5, 7], lambda label: label in ("ex3", "ex11")]
    report = evaluate_deletions(sketch, task, measurement, sets, names=["a", "b"],
                                s_values=[100, 400, 1600], progress=False)
    exact = exact_series(task, sets, 3, measurement, progress=False)
    np.testing.assert_allclose(report.truths,
                               retrained_values(task, measurement, exact.indicators, progress=False))
    predictions = predict(sketch, measurement, sets)
    errors = report.order_errors()
    for i, p in enumerate(predictions):
        np.testing.assert_allclose(errors[i], [p.partial(r) - report.truths[i] for r in range(4)])
        assert report.s_errors()[i, -1] == pytest.approx(p.estimate - report.truths[i])
        assert report.s_errors()[i, 0] == pytest.approx(p.prefix(100).estimate - report.truths[i])
    for i, p in enumerate(predictions):
        for j, s in enumerate([100, 400, 1600]):
            first = p.samples[:s]
            expected = np.sqrt(((first - first.mean(axis=0)) ** 2).sum(axis=0) / (s - 1) / s)
            np.testing.assert_allclose(report.s_term_stderr()[i, j], expected, rtol=1e-12)
    assert report.within_error_bars(3.0).all()
    assert "first-order baseline" in report.table() and "s=400" in report.table()
    assert "term s.e. by s" in report.table()
    assert json.loads(json.dumps(report.to_dict()))["sets"][1]["deleted"] == [3, 11]


def test_stderr_slopes_of_independent_and_of_repeated_samples(tmp_path):
    """Independent samples: s.e. ~ s^(-1/2), slope -1/2; samples whose size grows with j (a
    sketch that drifts along its directions) give a slope far from it."""
    rng = np.random.default_rng(0)
    independent = rng.normal(size=(4096, 3)) * [1.0, 10.0, 100.0]
    drifting = independent * np.arange(1, 4097)[:, None]
    s_values = (16, 64, 256, 1024, 4096)
    report = DeletionReport((Prediction(0.0, independent, (0,)), Prediction(0.0, drifting, (0,))),
                            np.zeros(2), s_values, ("independent", "drifting"))
    slopes = report.stderr_slopes()
    np.testing.assert_allclose(slopes[0], -0.5, atol=0.06)
    assert (slopes[1] > 0.3).all()
    plot_stderr_by_s(report, 0, str(tmp_path / "stderr.png"))
    assert (tmp_path / "stderr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_deletion_curve_scales_orders_and_retrains_each_weight(logistic, tmp_path):
    task, sketch, measurement = logistic
    weights = [0.0, 0.5, 1.0]
    curve = deletion_curve(sketch, task, measurement, [0, 5, 7], weights, progress=False)
    full = predict(sketch, measurement, [0, 5, 7])
    v = np.zeros(task.n_examples)
    v[[0, 5, 7]] = 1
    np.testing.assert_allclose(curve.truths, retrained_values(
        task, measurement, np.outer(weights, v), progress=False))
    for w, p in zip(weights, curve.predictions):
        np.testing.assert_allclose(p.terms, full.terms * w ** np.arange(1, 4), atol=1e-15)
    assert curve.predictions[0].estimate == curve.truths[0] == full.f0
    plot_deletion_curve(curve, str(tmp_path / "curve.png"))
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_linear_datamodeling_score(logistic):
    task, sketch, measurement = logistic
    result = linear_datamodeling_score(sketch, task, measurement, n_subsets=16, fraction=0.25,
                                       seed=1, progress=False)
    subsets = random_subsets(task.n_examples, 16, 6, seed=1)
    assert [list(s) for s in result.subsets] == subsets
    assert all(len(set(s)) == 6 for s in subsets)
    predictions = predict(sketch, measurement, subsets)
    np.testing.assert_allclose(result.predicted, [p.estimate for p in predictions])
    np.testing.assert_allclose(result.first_order, [p.first_order for p in predictions])
    indicators = np.zeros((16, task.n_examples))
    for i, s in enumerate(subsets):
        indicators[i, s] = 1
    np.testing.assert_allclose(result.truths, retrained_values(task, measurement, indicators,
                                                               progress=False))
    assert result.lds == spearman(result.predicted, result.truths)
    assert result.lds > 0.8  # the sketch ranks deletion effects well on this task
