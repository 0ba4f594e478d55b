"""A traced training loop equals the same loop written in plain numpy.

Weighted logistic regression, 50 steps of SGD, example t's loss multiplied by (1 - x_t), the
gradient taken by ``cs.grad`` inside the traced step; the numpy loop uses the hand-derived
gradient dL/dz = (1 - x_t)(sigmoid(z) - y). Both are float64 with the same operation count per
step, so they agree to ~1e-13 after 50 steps. Also run_program's argument handling."""

from __future__ import annotations

import re

import numpy as np
import pytest

import circuitsketch as cs

N_STEPS, DIM, LR = 50, 3, 0.5


def _bce(z, label):
    """Binary cross-entropy of sigmoid(z) against label, written with traced primitives."""
    p = 1.0 / (1.0 + (-z).exp())
    return -(label * p.log() + (1.0 - label) * (1.0 - p).log())


def sgd_step(w, b, features, label, lr, x):
    loss = (1.0 - x[0]) * _bce(cs.dot(w, features) + b, label)
    return {"w": w - lr * cs.grad(loss, w), "b": b - lr * cs.grad(loss, b), "loss": loss}


def logistic_program():
    return cs.trace_program(sgd_step, n_steps=N_STEPS, state={"w": (DIM,), "b": ()},
                            per_step={"features": (DIM,), "label": ()}, static={"lr": ()}, weight="x")


def numpy_sgd(features, labels, x, w, b, lr=LR):
    """The same training loop with the hand-derived gradient."""
    w, b = w.copy(), float(b)
    for t in range(N_STEPS):
        p = 1.0 / (1.0 + np.exp(-(features[t] @ w + b)))
        dz = (1.0 - x[t]) * (p - labels[t])
        w, b = w - lr * dz * features[t], b - lr * dz
    return w, b


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(2024)
    features = rng.normal(size=(N_STEPS, DIM))
    labels = (features @ np.array([1.5, -2.0, 0.5]) + 0.3 * rng.normal(size=N_STEPS) > 0).astype(float)
    return dict(features=features, labels=labels, w0=rng.normal(scale=0.1, size=DIM), b0=0.05,
                program=logistic_program())


def _run(problem, x, **kwargs):
    return cs.run_program(problem["program"], {"w": problem["w0"], "b": problem["b0"]},
                          data={"features": problem["features"], "label": problem["labels"]},
                          static={"lr": LR}, x=x, **kwargs)


DELETED = [3, 7, 8, 19, 30, 41, 49]


@pytest.mark.parametrize("case", ["x=0", "deletion set", "fractional weights"])
def test_traced_loop_matches_numpy(problem, case):
    x = np.zeros(N_STEPS)
    if case == "deletion set":
        x[DELETED] = 1.0
    elif case == "fractional weights":
        x = np.random.default_rng(3).uniform(0, 1, N_STEPS)
    got = _run(problem, x)
    w, b = numpy_sgd(problem["features"], problem["labels"], x, problem["w0"], problem["b0"])
    np.testing.assert_allclose(got["w"], w, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got["b"], b, rtol=1e-12, atol=1e-14)
    assert np.max(np.abs(w - problem["w0"])) > 0.5  # it really trained


def test_deleting_an_example_is_skipping_its_sgd_step(problem):
    """Plain SGD has no momentum, so weight 0 for a step is the same as not taking it: an
    independent check of the deletion semantics that needs no gradient formula."""
    x = np.zeros(N_STEPS)
    x[DELETED] = 1.0
    got = _run(problem, x)
    keep = [t for t in range(N_STEPS) if t not in DELETED]
    short = cs.trace_program(sgd_step, n_steps=len(keep), state={"w": (DIM,), "b": ()},
                             per_step={"features": (DIM,), "label": ()}, static={"lr": ()}, weight="x")
    skipped = cs.run_program(short, {"w": problem["w0"], "b": problem["b0"]},
                             data={"features": problem["features"][keep], "label": problem["labels"][keep]},
                             static={"lr": LR}, x=np.zeros(len(keep)))
    np.testing.assert_allclose(got["w"], skipped["w"], rtol=1e-14)
    assert not np.allclose(got["w"], _run(problem, np.zeros(N_STEPS))["w"])


def test_batched_retrainings_match_numpy_one_by_one(problem):
    """Four retrainings at once: batch axis on x and on the initial state."""
    rng = np.random.default_rng(4)
    xs = (rng.random((4, N_STEPS)) < 0.2).astype(float)
    w0s = problem["w0"] + rng.normal(scale=0.1, size=(4, DIM))
    got = cs.run_program(problem["program"], {"w": w0s, "b": problem["b0"]},
                         data={"features": problem["features"], "label": problem["labels"]},
                         static={"lr": LR}, x=xs, batch=4)
    assert got["w"].shape == (4, DIM) and got["b"].shape == (4,)
    for i in range(4):
        w, b = numpy_sgd(problem["features"], problem["labels"], xs[i], w0s[i], problem["b0"])
        np.testing.assert_allclose(got["w"][i], w, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(got["b"][i], b, rtol=1e-12, atol=1e-14)


def test_minibatches_gather_their_down_weights(problem):
    """Two examples per step: the step reads x[example_ids[t]], here a fixed shuffle of 100."""
    n = 2 * N_STEPS
    rng = np.random.default_rng(6)
    features = rng.normal(size=(n, DIM))
    labels = (rng.random(n) < 0.5).astype(float)
    order = rng.permutation(n).reshape(N_STEPS, 2)

    def step(w, b, features, label, lr, x):
        loss = cs.vsum([(1.0 - x[i]) * _bce(cs.dot(w, features[i]) + b, label[i]) for i in range(2)])
        return {"w": w - lr * cs.grad(loss, w), "b": b - lr * cs.grad(loss, b)}
    program = cs.trace_program(step, n_steps=N_STEPS, state={"w": (DIM,), "b": ()},
                               per_step={"features": (2, DIM), "label": (2,)}, static={"lr": ()},
                               weight="x", examples_per_step=2)
    x = np.zeros(n)
    x[rng.choice(n, 15, replace=False)] = 1.0
    got = cs.run_program(program, {"w": problem["w0"], "b": 0.0},
                         data={"features": features[order], "label": labels[order]},
                         static={"lr": 0.1}, x=x, example_ids=order)
    w, b = problem["w0"].copy(), 0.0
    for ids in order:
        p = 1.0 / (1.0 + np.exp(-(features[ids] @ w + b)))
        dz = (1.0 - x[ids]) * (p - labels[ids])
        w, b = w - 0.1 * dz @ features[ids], b - 0.1 * dz.sum()
    np.testing.assert_allclose(got["w"], w, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got["b"], b, rtol=1e-12, atol=1e-14)


def test_progress_and_zero_steps(problem):
    seen = []
    _run(problem, np.zeros(N_STEPS), progress=seen.append)
    assert seen == list(range(1, N_STEPS + 1))
    idle = cs.trace_program(sgd_step, n_steps=0, state={"w": (DIM,), "b": ()},
                            per_step={"features": (DIM,), "label": ()}, static={"lr": ()}, weight="x")
    got = cs.run_program(idle, {"w": problem["w0"], "b": 0.25}, data={"features": np.zeros((0, DIM)),
                         "label": np.zeros(0)}, static={"lr": LR}, x=np.zeros(0))
    np.testing.assert_array_equal(got["w"], problem["w0"])
    assert got["b"] == 0.25


def test_the_step_is_one_circuit_not_unrolled(problem):
    program = problem["program"]
    assert program.n_steps == N_STEPS
    assert len(program.step) < 100  # one forward + backward step, whatever N_STEPS is


@pytest.mark.parametrize("change, message", [
    (dict(x=None), "the program reads down-weights 'x': pass x"),
    (dict(init={"w": np.zeros(DIM)}), "initial state: missing ['b'], unknown []"),
    (dict(init={"w": np.zeros(DIM), "b": 0.0, "c": 1.0}), "initial state: missing [], unknown ['c']"),
    (dict(static={}), "static input: missing ['lr'], unknown []"),
    (dict(data={"features": np.zeros((N_STEPS, DIM))}), "per-step data: missing ['label'], unknown []"),
    (dict(data={"features": np.zeros((10, DIM)), "label": np.zeros(N_STEPS)}),
     "per-step data 'features' has 10 rows for 50 steps"),
    (dict(data={"features": np.zeros((N_STEPS, DIM + 1)), "label": np.zeros(N_STEPS)}),
     "input 'features': expected shape (3,), got (4,)"),
    (dict(init={"w": np.zeros(DIM + 1), "b": 0.0}), "input 'w': expected shape (3,), got (4,)"),
    (dict(example_ids=np.zeros((N_STEPS, 2), int)), "example_ids must have shape (50, 1) (steps, slots), got (50, 2)"),
])
def test_run_program_rejects_bad_arguments(problem, change, message):
    args = dict(init={"w": problem["w0"], "b": problem["b0"]},
                data={"features": problem["features"], "label": problem["labels"]},
                static={"lr": LR}, x=np.zeros(N_STEPS))
    args.update(change)
    with pytest.raises(ValueError, match=re.escape(message)):
        cs.run_program(problem["program"], args.pop("init"), **args)


@pytest.mark.parametrize("backend", ["reference", "numba-cpu"])
def test_down_weights_for_a_program_without_weight_input_are_refused(problem, backend):
    # silently training at x = 0 would answer a deletion question with the undeleted model
    unweighted = cs.trace_program(lambda w, b, features, label, lr: {"w": w - lr * label * features,
                                                                     "b": b - lr * label},
                                  n_steps=N_STEPS, state={"w": (DIM,), "b": ()},
                                  per_step={"features": (DIM,), "label": ()}, static={"lr": ()})
    with pytest.raises(ValueError, match="the program has no weight input"):
        cs.run_program(unweighted, {"w": problem["w0"], "b": 0.0},
                       data={"features": problem["features"], "label": problem["labels"]},
                       static={"lr": LR}, x=np.zeros(N_STEPS), backend=backend)
