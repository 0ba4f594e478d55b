"""The README's main job, ``circuitsketch demo``, on a tiny microgpt: its retrained truth and
its f(0) equal the independent eager reference (tests/eager_microgpt.py), its prediction is
within its own error bars, and bad arguments fail before any tracing."""

import dataclasses
import io

import numpy as np
import pytest

from circuitsketch.cli import main
from circuitsketch.demo import run_demo
from circuitsketch.frontends.microgpt_data import MicrogptConfig, names_for_steps, prepare
from eager_microgpt import loss_eager, train_eager

TINY = MicrogptConfig(n_embd=8, n_head=2, block_size=8, mlp_width=32)
STEPS = 12


def test_demo_table_matches_eager_retraining():
    out = io.StringIO()
    report = run_demo(steps=STEPS, directions=16, order=2, contains="a", measure_name="max",
                      batch_size=16, out=out, config=TINY)
    prediction, = report.predictions
    data = prepare(TINY)
    names = names_for_steps(data, STEPS)
    deleted = [i for i, name in enumerate(names) if "a" in name]
    assert list(prediction.deleted) == deleted and 0 < len(deleted) < STEPS
    config = dataclasses.replace(TINY, n_steps=STEPS)
    weights = np.isin(np.arange(STEPS), deleted) * 1.0
    kept = train_eager(data.init_params, data.names, config, data.chars, weights, STEPS)
    full = train_eager(data.init_params, data.names, config, data.chars, None, STEPS)
    assert report.truths[0] == pytest.approx(loss_eager(kept, "max", config, data.chars), abs=1e-10)
    assert prediction.f0 == pytest.approx(loss_eager(full, "max", config, data.chars), abs=1e-10)
    assert report.within_error_bars(3.0)[0]
    text = out.getvalue()
    assert f"retrained f(1_D) = {report.truths[0]:.6g}" in text
    assert "(first-order baseline)" in text and "median-of-means" in text


@pytest.mark.parametrize("argv, message", [
    (["--contains", "qqq", "--steps", "10"], "no training name among the first 10 contains 'qqq'"),
    (["--measure-name", "Max"], "character 'M' of name 'Max' is not in the vocabulary"),
    (["--steps", "0"], "--steps must be at least 1"),
])
def test_demo_rejects_bad_arguments_before_tracing(argv, message, capsys):
    assert main(["demo", *argv]) == 1
    assert message in capsys.readouterr().err
