"""Several measurements at once (``predict``, ``exact``, ``evaluate``): the list form gives the
numbers of one-at-a-time calls, and the training it needs runs once however many measurements
read it (counted by wrapping ``run_program`` where the sketch and the task call it)."""

import argparse
import importlib
import json

import numpy as np
import pytest

from circuitsketch.sketch import (deletion_curve, evaluate_deletions, exact_series,
                                  linear_datamodeling_score, precompute, predict, retrained_values)
from circuitsketch.sketch.cli import CLI_TASKS, CliTask, register_cli
from test_sketch_tasks import logit_measurement, point_loss_measurement, regression_task

SETS = [[0, 5, 7], list(range(12))]


def measurements():
    """Three measurements of one model: a linear one and two nonlinear ones."""
    return [logit_measurement(), point_loss_measurement(),
            point_loss_measurement(point=(-1.0, 0.3, 2.0), label=0.0)]


@pytest.fixture(scope="module")
def task():
    return regression_task()


@pytest.fixture(scope="module")
def sketch(task):
    return precompute(task, directions=16, order=2, progress=False)


@pytest.fixture
def count_runs(monkeypatch):
    """Counts the training runs of the Taylor run (exact) and of retraining (evaluate)."""
    counts = {"series": 0, "retrain": 0}
    for name, key in (("circuitsketch.sketch.precompute", "series"),
                      ("circuitsketch.frontends.task", "retrain")):
        module = importlib.import_module(name)

        def counted(*args, _original=module.run_program, _key=key, **kwargs):
            counts[_key] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, "run_program", counted)
    return counts


def test_exact_series_trains_once_for_all_measurements(task, count_runs):
    together = exact_series(task, SETS, 3, measurements(), progress=False, batch_size=16)
    assert count_runs["series"] == 1  # both sets in one batch, three measurements read it
    for m, found in zip(measurements(), together):
        alone = exact_series(task, SETS, 3, m, progress=False, batch_size=16)
        np.testing.assert_array_equal(found.coefficients, alone.coefficients)
        np.testing.assert_array_equal(found.indicators, alone.indicators)
    assert count_runs["series"] == 1 + 3


def test_retraining_is_shared_by_the_measurements(task, count_runs):
    xs = np.stack([task.deletion_vector(s) for s in SETS] * 3) * 0.5
    together = retrained_values(task, measurements(), xs, batch_size=4, progress=False)
    assert together.shape == (6, 3) and count_runs["retrain"] == 2  # blocks of 4 and 2
    for column, m in enumerate(measurements()):
        np.testing.assert_array_equal(together[:, column],
                                      retrained_values(task, m, xs, batch_size=4, progress=False))


def test_evaluate_curve_and_lds_give_the_one_at_a_time_numbers(task, sketch, count_runs):
    reports = evaluate_deletions(sketch, task, measurements(), SETS, progress=False)
    curves = deletion_curve(sketch, task, measurements(), SETS[0], [0.5, 1.0], progress=False)
    lds = linear_datamodeling_score(sketch, task, measurements(), n_subsets=5, fraction=0.25,
                                    progress=False)
    assert count_runs["retrain"] == 3  # one batched retraining each, for all measurements
    for m, report, curve, score in zip(measurements(), reports, curves, lds):
        alone = evaluate_deletions(sketch, task, m, SETS, progress=False)
        np.testing.assert_array_equal(report.truths, alone.truths)
        assert [p.estimate for p in report.predictions] == [p.estimate for p in alone.predictions]
        assert report.table() == alone.table()
        one_curve = deletion_curve(sketch, task, m, SETS[0], [0.5, 1.0], progress=False)
        np.testing.assert_array_equal(curve.truths, one_curve.truths)
        assert curve.prediction.estimate == one_curve.prediction.estimate
        one_lds = linear_datamodeling_score(sketch, task, m, n_subsets=5, fraction=0.25,
                                            progress=False)
        np.testing.assert_array_equal(score.truths, one_lds.truths)
        np.testing.assert_array_equal(score.predicted, one_lds.predicted)
    # the measurements differ, so a mix-up of columns would show
    assert len({float(r.truths[0]) for r in reports}) == 3


def test_predict_list_matches_single_calls(sketch):
    together = predict(sketch, measurements(), SETS)
    for m, predictions in zip(measurements(), together):
        alone = predict(sketch, m, SETS)
        assert [p.estimate for p in predictions] == [p.estimate for p in alone]
        assert [p.stderr for p in predictions] == [p.stderr for p in alone]
    one_set = predict(sketch, measurements(), SETS[0])
    # one set against a list of two: the same sums up to numpy's blocking of the products
    assert [p.estimate for p in one_set] == pytest.approx([p[0].estimate for p in together],
                                                          rel=1e-14)


def test_bad_measurement_lists_are_refused(sketch, task):
    with pytest.raises(ValueError, match="non-empty list of Circuits"):
        predict(sketch, [], SETS)
    with pytest.raises(ValueError, match="2 output names for 3 measurements"):
        exact_series(task, SETS, 2, measurements(), output=["score", "loss"], progress=False)
    with pytest.raises(ValueError, match="coefficients= is for one measurement"):
        predict(sketch, measurements(), SETS, coefficients=np.zeros((16, 3)))


@pytest.fixture
def run(monkeypatch, task):
    """The CLI on the regression task; --measure-name picks one of the three measurements."""
    by_name = dict(zip(("score", "loss", "other"), measurements()))
    monkeypatch.setitem(CLI_TASKS, "regression", CliTask(
        add_options=lambda parser: None, settings=lambda args: {},
        build=lambda settings: task,
        measurement=lambda settings, name: (by_name[name], f"test {name}")))
    parser = argparse.ArgumentParser(prog="circuitsketch")
    register_cli(parser.add_subparsers(dest="command"))

    def run(*argv):
        args = parser.parse_args([str(a) for a in argv])
        return args.run(args)

    return run


def test_cli_writes_one_table_per_measurement(run, tmp_path, capsys):
    path = tmp_path / "s.sketch"
    assert run("precompute", "--task", "regression", "--directions", 8, "--order", 2,
               "--out", path, "--quiet") == 0
    common = ["--delete-indices", "0,5,7", "--quiet"]
    assert run("predict", "--sketch", path, "--measure-name", "score,loss", "--out",
               tmp_path / "p", *common) == 0
    assert run("evaluate", "--sketch", path, "--measure-name", "score,loss", "--out",
               tmp_path / "e", *common) == 0
    assert run("exact", "--task", "regression", "--measure-name", "score,loss", "--order", 2,
               "--weights", "0,1", "--out", tmp_path / "x", *common) == 0
    out = capsys.readouterr().out
    assert out.count("measurement: test score") == 3 and out.count("measurement: test loss") == 3
    for name in ("score", "loss"):  # each entry is what a one-measurement run writes
        assert run("predict", "--sketch", path, "--measure-name", name, "--out",
                   tmp_path / f"p-{name}", *common) == 0
        assert run("evaluate", "--sketch", path, "--measure-name", name, "--out",
                   tmp_path / f"e-{name}", *common) == 0
        assert run("exact", "--task", "regression", "--measure-name", name, "--order", 2,
                   "--weights", "0,1", "--out", tmp_path / f"x-{name}", *common) == 0
    for stem, file in (("p", "predict.json"), ("e", "evaluate.json"), ("x", "exact.json")):
        both = json.loads((tmp_path / stem / file).read_text())["measurements"]
        assert both == [json.loads((tmp_path / f"{stem}-{name}" / file).read_text())
                        for name in ("score", "loss")]
    assert (tmp_path / "x" / "exact-1-0.png").exists()
