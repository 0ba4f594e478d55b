"""The five subcommands end to end on a small logistic-regression task registered as a CLI task
(the microgpt plumbing is exercised in test_sketch_microgpt.py): each writes what it promises,
and its numbers equal the library functions' (which the other sketch tests check)."""

import argparse
import json

import numpy as np
import pytest

from circuitsketch.sketch import (exact_series, load_sketch, precompute, predict,
                                  retrained_values, save_sketch)
from circuitsketch.sketch.cli import CLI_TASKS, CliTask, register_cli
from test_sketch_tasks import point_loss_measurement, regression_task

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run(monkeypatch):
    task = regression_task()
    monkeypatch.setitem(CLI_TASKS, "logistic", CliTask(
        add_options=lambda parser: None, settings=lambda args: {"lr": 0.5},
        build=lambda settings: task,
        measurement=lambda settings, name: (point_loss_measurement(), "test loss")))
    parser = argparse.ArgumentParser(prog="circuitsketch")
    register_cli(parser.add_subparsers(dest="command"))

    def run(*argv):
        # the CLI and the API default to the same backend (the fastest installed), so the
        # tests compare the two directly
        args = parser.parse_args([str(a) for a in argv])
        return args.run(args)

    run.task, run.parser = task, parser
    return run


def test_precompute_predict_evaluate(run, tmp_path, capsys):
    sketch_path = tmp_path / "s.sketch"
    assert run("precompute", "--task", "logistic", "--directions", 64, "--order", 2,
               "--batch-size", 32, "--seed", 3, "--out", sketch_path, "--quiet") == 0
    sketch = load_sketch(sketch_path, task=run.task)
    assert (sketch.s, sketch.order, sketch.seed) == (64, 2, 3)
    assert sketch.info == {"task": "logistic", "settings": {"lr": 0.5}}
    assert run("predict", "--sketch", sketch_path, "--delete-indices", "0,5,7",
               "--delete-contains", "ex1", "--out", tmp_path / "p") == 0
    assert "examples containing 'ex1'" in capsys.readouterr().out
    written = json.loads((tmp_path / "p" / "predict.json").read_text())["sets"]
    expected = predict(sketch, point_loss_measurement(),
                       [[0, 5, 7], lambda label: "ex1" in label])
    assert [s["estimate"] for s in written] == pytest.approx([p.estimate for p in expected])
    assert written[1]["deleted"] == [1] + list(range(10, 20))
    assert run("evaluate", "--sketch", sketch_path, "--delete-indices", "0,5,7", "--weights",
               "0,1", "--lds-subsets", 6, "--out", tmp_path / "e", "--quiet") == 0
    report = json.loads((tmp_path / "e" / "evaluate.json").read_text())
    truth = retrained_values(run.task, point_loss_measurement(),
                             np.isin(np.arange(24), [0, 5, 7])[None] * 1.0, progress=False)
    assert report["sets"][0]["truth"] == pytest.approx(truth[0])
    assert report["curves"][0]["truths"][1] == pytest.approx(truth[0])
    assert len(report["lds"]["truths"]) == 6 and -1 <= report["lds"]["lds"] <= 1
    assert (tmp_path / "e" / "curve-0.png").read_bytes()[:8] == PNG
    assert (tmp_path / "e" / "stderr-0.png").read_bytes()[:8] == PNG
    assert len(report["sets"][0]["s_term_stderr"]) == len(report["sets"][0]["s_values"]) == 4
    assert "first-order baseline" in capsys.readouterr().out


def test_exact_and_stability(run, tmp_path):
    assert run("exact", "--task", "logistic", "--delete-indices", "0,5,7", "--order", 4,
               "--weights", "0,0.5,1", "--out", tmp_path / "x", "--quiet") == 0
    written = json.loads((tmp_path / "x" / "exact.json").read_text())["sets"][0]
    assert written["deleted"] == [0, 5, 7]
    series = exact_series(run.task, [0, 5, 7], 4, point_loss_measurement(), progress=False)
    np.testing.assert_allclose(written["coefficients"], series.coefficients[0])
    v = np.isin(np.arange(24), [0, 5, 7]) * 1.0
    np.testing.assert_allclose(written["retrained"], retrained_values(
        run.task, point_loss_measurement(), np.outer([0, 0.5, 1], v), progress=False))
    assert (tmp_path / "x" / "exact-0.png").read_bytes()[:8] == PNG
    assert run("stability", "--task", "logistic", "--directions", 4, "--order", 6,
               "--out", tmp_path / "st", "--quiet") == 0
    profile = json.loads((tmp_path / "st" / "stability.json").read_text())
    assert np.array(profile["log2_norms"]).shape == (4, 7)
    assert (tmp_path / "st" / "stability.png").read_bytes()[:8] == PNG


def test_help_and_user_errors(run, tmp_path, capsys):
    for command in ("precompute", "predict", "exact", "stability", "evaluate"):
        with pytest.raises(SystemExit):
            run(command, "--help")
        text = capsys.readouterr().out
        assert "--backend" in text and "--out" in text
    assert "--delete-contains" in text and "--lds-subsets" in text
    sketch = precompute(run.task, directions=4, order=1, progress=False)
    save_sketch(sketch, tmp_path / "api.sketch")
    with pytest.raises(ValueError, match="not made by the CLI"):
        run("predict", "--sketch", tmp_path / "api.sketch")
    with pytest.raises(SystemExit):
        run("exact", "--task", "logistic", "--delete-indices", "1,a", "--quiet")
    assert "comma-separated integers" in capsys.readouterr().err


def test_cli_runs_on_numba_cpu_by_default(run, tmp_path):
    args = run.parser.parse_args(["precompute", "--out", "s"])
    assert args.backend == "numba-cpu"
    sketch_path = tmp_path / "s.sketch"
    assert run("precompute", "--task", "logistic", "--directions", 6, "--order", 2,
               "--backend", "numba-cpu", "--out", sketch_path, "--quiet") == 0
    compiled = load_sketch(sketch_path, task=run.task)
    interpreted = precompute(run.task, directions=6, order=2, progress=False, backend="reference")
    for name, series in interpreted.series.items():
        np.testing.assert_allclose(compiled.series[name], series, rtol=1e-11, atol=1e-13)
