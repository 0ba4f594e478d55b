"""Small weighted training tasks for the sketch tests, and tests that they train correctly.

``regression_task``: a linear model (weights ``w`` [d], bias ``b``) trained by minibatch SGD on
``n`` examples, ``m`` per step (step t reads examples (t*m + i) mod n), each example's loss
multiplied by (1 - x_i). With ``loss="logistic"`` it is logistic regression (f is analytic but
not polynomial in x); with ``loss="squared"`` the parameters after T steps are polynomials of
degree <= T in x, so the Taylor series of any linear measurement ends at order T.

Other test files import the builders from here (tests/ is on sys.path); the tests below check
the traced training against an independent numpy implementation of the same SGD.
"""

from __future__ import annotations

import numpy as np

import circuitsketch as cs
from circuitsketch.frontends.task import TrainingTask


def _data(n: int, d: int, seed: int, loss: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, d))
    truth = rng.normal(size=d)
    if loss == "logistic":
        labels = (rng.uniform(size=n) < 1 / (1 + np.exp(-features @ truth))).astype(float)
    else:
        labels = features @ truth + 0.3 * rng.normal(size=n)
    return features, labels


def _example_loss(z, y, loss: str):
    return (1 + z.exp()).log() - y * z if loss == "logistic" else 0.5 * (z - y) * (z - y)


def regression_task(*, n: int = 24, d: int = 3, m: int = 4, n_steps: int = 24, lr: float = 0.5,
                    loss: str = "logistic", seed: int = 0) -> TrainingTask:
    features, labels = _data(n, d, seed, loss)
    example_ids = (np.arange(n_steps)[:, None] * m + np.arange(m)[None, :]) % n

    def step(w, b, X, y, x):
        total = cs.vsum([(1 - x[i]) * _example_loss(cs.dot(w, X[i]) + b, y[i], loss)
                         for i in range(m)]) / m
        grads = cs.grad(total, list(w) + [b])
        return {"w": w - lr * grads[:d], "b": b - lr * grads[d]}

    program = cs.trace_program(step, n_steps=n_steps, state={"w": (d,), "b": ()},
                               per_step={"X": (m, d), "y": (m,)}, weight="x",
                               examples_per_step=m)
    return TrainingTask(program=program, init={"w": np.zeros(d), "b": np.zeros(())},
                        data={"X": features[example_ids], "y": labels[example_ids]},
                        n_examples=n, example_ids=example_ids,
                        example_labels=[f"ex{i}" for i in range(n)])


def logit_measurement(d: int = 3, point=(0.5, -1.0, 0.8)):
    """The model's score w . point + b on a test point (linear in the parameters)."""
    return cs.trace(lambda w, b: {"score": cs.dot(w, point[:d]) + b}, w=(d,), b=())


def point_loss_measurement(d: int = 3, point=(0.5, -1.0, 0.8), label: float = 1.0):
    """Logistic loss on a test point (nonlinear in the parameters)."""
    def loss(w, b):
        z = cs.dot(w, point[:d]) + b
        return {"loss": (1 + z.exp()).log() - label * z}
    return cs.trace(loss, w=(d,), b=())


def numpy_training(task: TrainingTask, x: np.ndarray, *, lr: float = 0.5, loss: str = "logistic"):
    """The same SGD written directly in numpy: final (w, b) at down-weights x."""
    w, b = np.zeros(task.init["w"].shape), 0.0
    for t in range(task.program.n_steps):
        X, y, weights = task.data["X"][t], task.data["y"][t], 1 - x[task.example_ids[t]]
        z = X @ w + b
        residual = 1 / (1 + np.exp(-z)) - y if loss == "logistic" else z - y
        gz = weights * residual / len(y)
        w, b = w - lr * X.T @ gz, b - lr * gz.sum()
    return w, b


def test_regression_task_trains_like_numpy():
    rng = np.random.default_rng(1)
    for loss in ("logistic", "squared"):
        task = regression_task(loss=loss, lr=0.5 if loss == "logistic" else 0.1)
        xs = rng.uniform(-0.5, 1.0, size=(3, task.n_examples))
        final = task.retrain(xs, batch=3)
        for i, x in enumerate(xs):
            w, b = numpy_training(task, x, lr=0.5 if loss == "logistic" else 0.1, loss=loss)
            np.testing.assert_allclose(final["w"][i], w, rtol=1e-12, atol=1e-13)
            np.testing.assert_allclose(final["b"][i], b, rtol=1e-12, atol=1e-13)


def test_measurements_evaluate_the_formulas():
    w, b = np.array([0.3, -0.2, 0.7]), 0.1
    z = w @ np.array([0.5, -1.0, 0.8]) + b
    assert cs.evaluate(logit_measurement(), {"w": w, "b": b})["score"] == np.float64(z)
    np.testing.assert_allclose(cs.evaluate(point_loss_measurement(), {"w": w, "b": b})["loss"],
                               np.log1p(np.exp(z)) - z, rtol=1e-14)
