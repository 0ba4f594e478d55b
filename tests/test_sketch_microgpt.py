"""End to end on a tiny microgpt (3 steps, one name each, reference backend): the sketch's
prediction agrees with real retraining within its error bars plus the truncation error, and the
exact series agrees with retraining to truncation accuracy.

With 3 steps each name is a third of the training and Adam's sqrt(v_hat + eps) puts a complex
singularity of w -> f(w 1_D) near |w| = 1, so the series converges fast at w = 0.25 and 0.5 and
slowly at w = 1; the tolerances use the truncation error measured from the exact series and
retraining, never a fixed guess.
"""

import argparse

import numpy as np
import pytest

from circuitsketch.frontends.microgpt import build_task
from circuitsketch.frontends.microgpt_data import MicrogptConfig
from circuitsketch.sketch import (exact_series, precompute, predict, retrained_values,
                                  save_sketch)
from circuitsketch.sketch.cli import register_cli

SETTINGS = {"n_steps": 3, "n_embd": 8, "n_head": 2, "n_layer": 1, "block_size": 8,
            "mlp_width": 32, "seed": 42}
SETS = [[1], lambda name: "x" in name]  # "diondre"; "xavien"
WEIGHTS = np.array([0.25, 0.5, 1.0])


@pytest.fixture(scope="module")
def run():
    config = MicrogptConfig(**SETTINGS)
    task = build_task(config, 3)
    measurement = task.loss_measurement("max")
    sketch = precompute(task, directions=64, order=3, batch_size=64, progress=False,
                        info={"task": "microgpt", "settings": SETTINGS})
    series = exact_series(task, SETS, 4, measurement, progress=False)
    xs = (WEIGHTS[:, None, None] * series.indicators[None]).reshape(-1, task.n_examples)
    truths = retrained_values(task, measurement, xs, progress=False).reshape(len(WEIGHTS), -1)
    return task, measurement, sketch, series, truths


def test_sketch_keeps_the_parameters_of_the_real_run(run):
    task, _, sketch, _, _ = run
    assert list(sketch.series) == list(task.param_names)  # not Adam's moments
    assert sketch.example_labels == ("yuheng", "diondre", "xavien")
    trained = task.retrain()
    for name in task.param_names:
        np.testing.assert_allclose(sketch.theta0[name], trained[name], rtol=1e-12, atol=1e-14)


def test_exact_series_agrees_with_retraining_to_truncation_accuracy(run):
    _, _, _, series, truths = run
    for w, truth in zip(WEIGHTS[:2], truths[:2]):
        errors = np.abs(series.partial_sums(w) - truth[:, None])
        last_term = np.abs(series.coefficients[:, 4]) * w ** 4
        assert np.all(errors[:, 4] <= 2 * last_term)  # what is left is the (geometric) tail
        assert np.all(errors[:, 4] <= 0.05 * errors[:, 0])
    assert np.all(np.abs(series.partial_sums(0.25)[:, 4] - truths[0]) < 1e-5)


def test_prediction_agrees_with_retraining_within_error_bars(run):
    task, measurement, sketch, series, truths = run
    predictions = predict(sketch, measurement, SETS, task=task)
    for i, p in enumerate(predictions):
        assert np.all(np.abs(p.terms - series.coefficients[i, 1:4]) < 4 * p.term_stderr)
        for w, truth in zip(WEIGHTS[1:], truths[1:, i]):
            scaled = p.at_weight(w)
            truncation = abs(truth - series.value(w, order=3)[i])
            assert abs(scaled.estimate - truth) <= 3 * scaled.stderr + truncation
    for w, truth in zip(WEIGHTS[1:], truths[1:, 0]):  # deleting "diondre": a resolved change
        assert predictions[0].at_weight(w).stderr < 0.3 * abs(truth - predictions[0].f0)


def test_cli_predict_on_a_microgpt_sketch(run, tmp_path, capsys):
    task, measurement, sketch, _, _ = run
    save_sketch(sketch, tmp_path / "mg.sketch")
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())
    args = parser.parse_args(["predict", "--sketch", str(tmp_path / "mg.sketch"),
                              "--measure-name", "max", "--delete-contains", "x"])
    assert args.run(args) == 0
    expected = predict(sketch, measurement, SETS[1])
    out = capsys.readouterr().out
    assert "loss on 'max'" in out and f"{expected.estimate:.6g}" in out
