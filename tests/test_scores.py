"""Exact per-example scores against independent references: central differences of real
retraining (logistic regression, the README's SGD program, a tiny microgpt), the exact series'
order-1 coefficient along sets (sum of the scores over D = c_1), and the same numbers whatever
the checkpointing, the batching of measurements or the backend."""

import json

import numpy as np
import pytest

import circuitsketch as cs
from circuitsketch.frontends.microgpt import build_task
from circuitsketch.frontends.microgpt_data import MicrogptConfig
from circuitsketch.frontends.task import TrainingTask
from circuitsketch.sketch import exact_series, retrained_values
from circuitsketch.backends import default_backend
from circuitsketch.sketch.scores import choose_backend, influence_scores, scores, step_vjp
from test_sketch_tasks import logit_measurement, point_loss_measurement, regression_task

SETS = [[0, 5, 7], list(range(12)), [3]]


def central_differences(task, measurement, h: float) -> np.ndarray:
    """(f(h e_i) - f(-h e_i)) / 2h for every example i, by really retraining."""
    n = task.n_examples
    xs = np.concatenate([h * np.eye(n), -h * np.eye(n)])
    values = retrained_values(task, measurement, xs, batch_size=2 * n, progress=False)
    return (values[:n] - values[n:]) / (2 * h)


def readme_task(n_steps: int = 30) -> TrainingTask:
    """The README's SGD program on labels +-1, one example per step, lr a static input."""
    def step(w, b, features, label, lr, x):
        loss = (1.0 - x[0]) * (1.0 + (-label * (cs.dot(w, features) + b)).exp()).log()
        return {"w": w - lr * cs.grad(loss, w), "b": b - lr * cs.grad(loss, b)}

    program = cs.trace_program(step, n_steps=n_steps, state={"w": (3,), "b": ()},
                               per_step={"features": (3,), "label": ()}, static={"lr": ()},
                               weight="x")
    rng = np.random.default_rng(4)
    features = rng.normal(size=(n_steps, 3))
    labels = np.sign(features @ np.array([1.0, -2.0, 0.5]) + 0.5 * rng.normal(size=n_steps))
    return TrainingTask(program=program, init={"w": np.zeros(3), "b": np.zeros(())},
                        data={"features": features, "label": labels},
                        static={"lr": np.array(0.3)}, n_examples=n_steps)


def tiny_microgpt():
    config = MicrogptConfig(n_embd=4, n_head=2, block_size=4, mlp_width=8)
    task = build_task(config, 10)
    return task, [task.loss_measurement(name) for name in ("max", "zoe")]


@pytest.fixture(scope="module")
def logistic():
    task = regression_task()
    measurements = [point_loss_measurement(), logit_measurement()]
    return task, measurements, scores(task, measurements, backend="reference")


@pytest.fixture(scope="module")
def microgpt():
    task, measurements = tiny_microgpt()
    return task, measurements, scores(task, measurements, backend="reference")


def test_logistic_scores_match_central_differences(logistic):
    task, measurements, values = logistic
    assert values.shape == (task.n_examples, 2)
    for j, measurement in enumerate(measurements):
        # h = 1e-4: truncation h^2 f''' ~ 1e-9, rounding 1e-16 / h ~ 1e-12
        np.testing.assert_allclose(values[:, j], central_differences(task, measurement, 1e-4),
                                   atol=1e-8)
    assert np.abs(values).max() > 1e-2  # the comparison is not between zeros


def test_readme_program_scores_match_central_differences():
    task = readme_task()
    measurement = point_loss_measurement()
    values = scores(task, measurement, backend="reference")
    np.testing.assert_allclose(values[:, 0], central_differences(task, measurement, 1e-4),
                               atol=1e-8)
    assert np.abs(values).max() > 1e-2


def test_microgpt_scores_match_central_differences(microgpt):
    task, measurements, values = microgpt
    for j, measurement in enumerate(measurements):
        # h = 1e-5: the loss is O(1), its third derivatives along one example modest
        np.testing.assert_allclose(values[:, j], central_differences(task, measurement, 1e-5),
                                   rtol=1e-5, atol=1e-8)
    assert np.abs(values).min() > 1e-5  # every example matters a little: atol is no escape


@pytest.mark.parametrize("which", ["logistic", "microgpt"])
def test_sum_over_a_set_is_the_exact_series_c1(which, request):
    task, measurements, values = request.getfixturevalue(which)
    sets = SETS if which == "logistic" else [[0, 3], list(range(10)), [7]]
    for j, measurement in enumerate(measurements):
        series = exact_series(task, sets, 1, measurement, progress=False)
        sums = np.array([values[d, j].sum() for d in sets])
        np.testing.assert_allclose(sums, series.coefficients[:, 1], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("which", ["logistic", "microgpt"])
def test_checkpointing_gives_bitwise_the_stored_trajectory_result(which, request):
    task, measurements, _ = request.getfixturevalue(which)
    n_steps = task.program.n_steps
    stored = scores(task, measurements, backend="numba-cpu", checkpoint_every=1)
    for every in (2, 3, 5, n_steps, 2 * n_steps, None):
        again = scores(task, measurements, backend="numba-cpu", checkpoint_every=every)
        np.testing.assert_array_equal(again, stored)


def test_numba_and_batching_agree_with_the_reference(logistic, microgpt):
    for task, measurements, values in (logistic, microgpt):
        fast = scores(task, measurements, backend="numba-cpu")
        np.testing.assert_allclose(fast, values, rtol=1e-11, atol=1e-15)
        one = scores(task, measurements[0], backend="numba-cpu")  # a batch of one adjoint
        np.testing.assert_allclose(one[:, 0], values[:, 0], rtol=1e-11, atol=1e-15)
        for j, measurement in enumerate(measurements):
            alone = scores(task, [measurement], backend="reference")
            np.testing.assert_allclose(alone[:, 0], values[:, j], rtol=1e-13, atol=1e-16)


def test_f0_and_top_examples(logistic):
    task, measurements, values = logistic
    result = influence_scores(task, measurements, backend="reference")
    truths = retrained_values(task, measurements[0], np.zeros((1, task.n_examples)),
                              progress=False)
    assert result.f0[0] == pytest.approx(truths[0], rel=1e-13)
    top = result.top(0, 3, task.example_labels)
    raise_ = [row for row in top if row["direction"] == "raise"]
    lower = [row for row in top if row["direction"] == "lower"]
    assert [row["index"] for row in raise_] == list(np.argsort(-values[:, 0])[:3])
    assert [row["index"] for row in lower] == list(np.argsort(values[:, 0])[:3])
    assert raise_[0]["label"] == f"ex{raise_[0]['index']}"
    assert raise_[0]["score"] == values[:, 0].max()


def array_regression_task(scalar: TrainingTask, m: int = 4, lr: float = 0.5) -> TrainingTask:
    """``regression_task``'s logistic SGD traced with Tensors: one node per array operation."""
    def step(w, b, X, y, x):
        z = X @ w + b
        loss = (((1 + z.exp()).log() - y * z) * (1 - x)).sum() / m
        grad_w, grad_b = cs.grad(loss, [w, b])
        return {"w": w - lr * grad_w, "b": b - lr * grad_b}

    program = cs.trace_program(step, n_steps=scalar.program.n_steps, state={"w": (3,), "b": ()},
                               per_step={"X": (m, 3), "y": (m,)}, weight="x",
                               examples_per_step=m, inputs="tensors")
    return TrainingTask(program=program, init=scalar.init, data=scalar.data,
                        n_examples=scalar.n_examples, example_ids=scalar.example_ids)


def test_array_program_scores_equal_the_scalar_programs(logistic):
    task, measurements, values = logistic
    array_task = array_regression_task(task)
    assert not array_task.program.step.is_scalar
    # the default backend: the fastest installed for a scalar step, the reference for an array one
    assert choose_backend(task.program, None) == default_backend()
    assert choose_backend(array_task.program, None) == "reference"
    np.testing.assert_allclose(scores(array_task, measurements), values, rtol=1e-12, atol=1e-15)


def test_step_vjp_is_the_transposed_jacobian():
    """<adjoint, J v> from the VJP circuit equals the directional derivative of the step by
    central differences (one random adjoint, one random direction in state and weight)."""
    task = readme_task(1)
    program = task.program
    vjp = step_vjp(program)
    rng = np.random.default_rng(0)
    base = {"w": rng.normal(size=3), "b": np.array(0.2), "features": task.data["features"][0],
            "label": task.data["label"][0], "lr": task.static["lr"], "x": np.array([0.1])}
    tangent = {"w": rng.normal(size=3), "b": np.array(rng.normal()), "x": rng.normal(size=1)}
    adjoint = {"w": rng.normal(size=3), "b": np.array(rng.normal())}

    def moved(h):
        inputs = {k: v + h * tangent[k] if k in tangent else v for k, v in base.items()}
        out = cs.evaluate(program.step, inputs)
        return sum(float(np.sum(adjoint[k] * out[k])) for k in adjoint)

    h = 1e-5
    expected = (moved(h) - moved(-h)) / (2 * h)
    out = cs.evaluate(vjp, {**base, **{f"adjoint.{k}": v for k, v in adjoint.items()}})
    got = sum(float(np.sum(out[f"adjoint.{k}"] * tangent[k])) for k in tangent)
    assert got == pytest.approx(expected, rel=1e-8)


def test_bad_inputs(logistic):
    task, measurements, _ = logistic
    with pytest.raises(ValueError, match="no measurements"):
        scores(task, [], backend="reference")
    with pytest.raises(ValueError, match="checkpoint_every"):
        scores(task, measurements, backend="reference", checkpoint_every=0)
    with pytest.raises(ValueError, match="unknown backend"):
        scores(task, measurements, backend="fortran")
    stranger = cs.trace(lambda w, c: {"out": cs.dot(w, [1.0, 2.0, 3.0]) * c}, w=(3,), c=())
    with pytest.raises(ValueError, match=r"\['c'\]"):
        scores(task, [stranger], backend="reference")
    with pytest.raises(ValueError, match="1 output names for 2"):
        scores(task, measurements, outputs=["loss"], backend="reference")
    unweighted = cs.trace_program(lambda w: {"w": w * 0.5}, n_steps=2, state={"w": (1,)})
    with pytest.raises(ValueError, match="no down-weight"):
        step_vjp(unweighted)


def test_cli_writes_the_score_matrix_and_top_examples(tmp_path, monkeypatch, capsys):
    import argparse

    from circuitsketch.sketch.cli import CLI_TASKS, CliTask, register_cli

    task = regression_task()
    measurements = {"loss": point_loss_measurement(), "logit": logit_measurement()}
    monkeypatch.setitem(CLI_TASKS, "logistic", CliTask(
        add_options=lambda parser: None, settings=lambda args: {},
        build=lambda settings: task,
        measurement=lambda settings, name: (measurements[name], f"test {name}")))
    parser = argparse.ArgumentParser(prog="circuitsketch")
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["scores", "--task", "logistic", "--measure-name", "loss, logit",
                              "--top-k", "2", "--backend", "reference", "--quiet",
                              "--out", str(tmp_path)])
    assert args.run(args) == 0
    written = np.load(tmp_path / "scores.npy")
    np.testing.assert_array_equal(written, scores(task, list(measurements.values()),
                                                  backend="reference"))
    report = json.loads((tmp_path / "scores.json").read_text())
    assert report["n_train"] == 24
    assert [m["measurement"] for m in report["measurements"]] == ["test loss", "test logit"]
    best = int(np.argmax(written[:, 1]))
    top = report["measurements"][1]["top"]
    assert len(top) == 4 and top[0] == {"direction": "raise", "index": best,
                                         "score": written[best, 1], "label": f"ex{best}"}
    assert f"'ex{best}'" in capsys.readouterr().out
    args = parser.parse_args(["scores", "--task", "logistic", "--measure-name", " , ",
                              "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="at least one name"):
        args.run(args)
