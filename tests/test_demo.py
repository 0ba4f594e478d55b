"""The README's main job, ``circuitsketch demo``, on a tiny microgpt: its retrained truths (at
w = 1 and along the curve) and its f(0) equal the independent eager reference
(tests/eager_microgpt.py), its exact-series column is exact_series' partial sums, its
prediction is within its own error bars, it writes the PNG, and bad arguments fail before any
tracing."""

import dataclasses
import io

import numpy as np
import pytest

from circuitsketch.cli import main
from circuitsketch.demo import CURVE_WEIGHTS, run_demo
from circuitsketch.frontends.microgpt import build_task
from circuitsketch.frontends.microgpt_data import MicrogptConfig, names_for_steps, prepare
from circuitsketch.sketch import exact_series
from eager_microgpt import loss_eager, train_eager

TINY = MicrogptConfig(n_embd=8, n_head=2, block_size=8, mlp_width=32)
STEPS = 12


def test_demo_table_matches_eager_retraining(tmp_path):
    out = io.StringIO()
    result = run_demo(steps=STEPS, directions=16, order=2, contains="a", measure_name="max",
                      batch_size=16, out=out, config=TINY, plot=str(tmp_path / "demo.png"))
    prediction = result.prediction
    data = prepare(TINY)
    names = names_for_steps(data, STEPS)
    deleted = [i for i, name in enumerate(names) if "a" in name]
    assert list(prediction.deleted) == deleted and 0 < len(deleted) < STEPS
    config = dataclasses.replace(TINY, n_steps=STEPS)
    indicator = np.isin(np.arange(STEPS), deleted) * 1.0
    full = train_eager(data.init_params, data.names, config, data.chars, None, STEPS)
    assert prediction.f0 == pytest.approx(loss_eager(full, "max", config, data.chars), abs=1e-10)
    for w, truth in list(zip(CURVE_WEIGHTS, result.truths))[1::2]:  # w = 0.5, 1 (eager: slow)
        kept = train_eager(data.init_params, data.names, config, data.chars, w * indicator, STEPS)
        assert truth == pytest.approx(loss_eager(kept, "max", config, data.chars), abs=1e-10)
    assert result.truth == result.truths[-1] and list(result.weights) == list(CURVE_WEIGHTS)
    assert result.report.within_error_bars(3.0)[0]
    task = build_task(TINY, n_steps=STEPS)
    expected = exact_series(task, deleted, 2, task.loss_measurement("max"), progress=False)
    np.testing.assert_allclose(result.exact.coefficients, expected.coefficients, rtol=1e-12)
    text = out.getvalue()
    assert f"retrained f(1_D) = {result.truth:.6g}" in text
    assert "(first-order baseline)" in text and "median-of-means" in text
    order_2, = [line for line in text.splitlines() if line.startswith("      2  ")]
    assert f"{expected.partial_sums(1.0)[0, 2]:12.6g}" in order_2  # the exact-series column
    assert f"exact series, order 2: {expected.value(1.0)[0] - prediction.f0:+.4g}" in text
    assert f"plot: {tmp_path / 'demo.png'}" in text
    assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, message", [
    (["--contains", "qqq", "--steps", "10"], "no training name among the first 10 contains 'qqq'"),
    (["--measure-name", "Max"], "character 'M' of name 'Max' is not in the vocabulary"),
])
def test_demo_rejects_bad_arguments_before_tracing(argv, message, capsys):
    assert main(["demo", *argv]) == 1
    assert message in capsys.readouterr().err


def test_demo_rejects_a_bad_step_count_in_the_parser(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--steps", "0"])
    assert "--steps: 0 is less than 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--steps must be at least 1"):
        run_demo(steps=0)
