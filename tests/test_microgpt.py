"""The traced microgpt program against the independent eager reference (tests/eager_microgpt.py).

The traced step is a fixed-shape padded circuit; the eager reference trains on variable-length
names with its own scalar autograd. Agreement to 1e-10 after a few dozen steps (float64 rounding
differences only) checks padding, masking, attention, GELU, Adam and the down-weights at once.
"""

import numpy as np
import pytest

from circuitsketch.frontends.microgpt import build_task
from circuitsketch.frontends.microgpt_data import MicrogptConfig
from eager_microgpt import loss_eager, train_eager

TINY = MicrogptConfig(n_embd=8, n_head=2, block_size=8, mlp_width=32)


@pytest.fixture(scope="module")
def task():
    return build_task(TINY, n_steps=20)


def _eager(task, down_weights=None):
    data = task.microgpt
    return train_eager(data.init_params, data.names, task.config, data.chars,
                       down_weights=down_weights, n_steps=task.n_examples)


def test_traced_training_matches_eager_reference(task):
    traced = task.retrain()
    eager = _eager(task)
    for name in task.param_names:
        np.testing.assert_allclose(traced[name], eager[name], rtol=0, atol=1e-10, err_msg=name)
    assert max(np.abs(traced[n] - task.init[n]).max() for n in task.param_names) > 1e-3


def test_down_weights_match_eager_reference(task):
    x = np.zeros(task.n_examples)
    x[[1, 5, 6]] = 1.0
    x[10] = 0.5
    traced = task.retrain(x)
    eager = _eager(task, list(x))
    for name in task.param_names:
        np.testing.assert_allclose(traced[name], eager[name], rtol=0, atol=1e-10, err_msg=name)
    plain = task.retrain()
    assert max(np.abs(traced[n] - plain[n]).max() for n in task.param_names) > 1e-4


def test_loss_measurement_matches_eager_loss(task):
    params = {n: task.init[n] for n in task.param_names}
    for name in ("max", "ava", "christopher"):
        circuit = task.loss_measurement(name)
        from circuitsketch import evaluate
        got = evaluate(circuit, params)["loss"]
        want = loss_eager(params, name, task.config, task.microgpt.chars)
        assert got == pytest.approx(want, abs=1e-12)


def test_step_circuit_is_one_loop_body_independent_of_steps():
    short, long = build_task(TINY, n_steps=5), build_task(TINY, n_steps=50)
    assert long.program.n_steps == 50
    assert len(short.program.step) == len(long.program.step)


def test_default_model_has_the_paper_parameter_count():
    from circuitsketch.frontends.microgpt_data import prepare

    data = prepare(MicrogptConfig())
    assert data.n_params == 4192


def test_measurement_rejects_unknown_characters(task):
    with pytest.raises(ValueError, match="Q"):
        task.loss_measurement("Qx")
    with pytest.raises(ValueError, match="empty"):
        task.loss_measurement("")
