"""Regularity tangents and curiosity scores against independent references.

* t = d theta_N / d s from one order-1 Taylor run against central finite differences of real
  retraining at s +- h (any number of steps, any optimizer: t differentiates the algorithm).
  Error budget of the difference: truncation h^2 |theta'''| / 6 plus rounding
  ~ 1e-16 |theta| N / h; with h = 1e-4 s0 both stay below 1e-7 relative to max |t|.
* Near the optimum of convex ridge regression, t -> -H^-1 grad Omega and the labelled score
  equals the classical influence -grad Omega^T H^-1 grad l(z), with H = Phi^T Phi + s I and
  grad l built explicitly in numpy (agreement to 1e-8 once heavy-ball has converged).
* The score of a training point is -d Omega(theta*) / d x_i for its down-weight x_i, checked by
  retraining at x_i = +-h (the deletion machinery; no Hessian involved).
* The unlabelled curiosity by Gauss-Hermite quadrature against its closed form
  sigma^2 <t, grad f>^2 (exact for the squared loss with >= 2 nodes).
"""

from dataclasses import replace
from functools import lru_cache

import numpy as np
import pytest

from circuitsketch.active.curiosity import (curiosity_scores, expected_curiosity,
                                            loss_gradient_circuit, loss_gradients)
from circuitsketch.active.models import (Hyperparameters, PolynomialRidge, TanhMLP,
                                         heavy_ball_settings, polynomial_features, predict,
                                         ridge_solution)
from circuitsketch.active.regularity import (OPTIMIZERS, measure_slowdown, regression_task,
                                             regularity_tangent)

RNG = np.random.default_rng(7)
U = RNG.uniform(-1, 1, 8)
Y = np.sin(3 * U) + 0.05 * RNG.normal(size=8)
POLY = PolynomialRidge(degree=3)


def _retrained(task, strength):
    """Real training of ``task`` at each strength, batched: theta [len(strength), p]."""
    strength = np.asarray(strength, dtype=np.float64)
    batched = replace(task, static={**task.static, "s": strength})
    return batched.retrain(batch=len(strength))["theta"]


def _central_difference(task, s0, h):
    plus, minus = _retrained(task, [s0 + h, s0 - h])
    return (plus - minus) / (2 * h)


@pytest.mark.parametrize("model, optimizer, hyper, steps", [
    (POLY, "gd", Hyperparameters(0.05, 0.05, 0.8, 0.1), 60),
    (TanhMLP(hidden=3), "gd", Hyperparameters(0.02, 0.05, 0.9, 0.1), 40),
    (TanhMLP(hidden=3), "adam", Hyperparameters(0.02, 0.01, 0.0, 0.1), 40),
])
def test_tangent_matches_central_differences_of_retraining(model, optimizer, hyper, steps):
    task = regression_task(model, U, Y, hyper, n_steps=steps, optimizer=optimizer, seed=3)
    tangent = regularity_tangent(task)
    difference = _central_difference(task, hyper.strength, 1e-4 * hyper.strength)
    scale = np.max(np.abs(tangent.t))
    assert scale > 1e-3  # a vanishing tangent would make the comparison empty
    np.testing.assert_allclose(tangent.t, difference, rtol=0, atol=1e-7 * scale)


def test_constant_term_is_plain_training():
    task = regression_task(POLY, U, Y, Hyperparameters(0.1, 0.05, 0.5, 0.1), n_steps=30)
    tangent = regularity_tangent(task)
    np.testing.assert_array_equal(tangent.theta, task.retrain()["theta"])


def test_batched_strengths_match_single_runs():
    task = regression_task(POLY, U, Y, Hyperparameters(0.1, 0.05, 0.5, 0.1), n_steps=30)
    strengths = np.array([0.01, 0.1, 1.0])
    batched = regularity_tangent(task, strengths, batch=3)
    for i, s in enumerate(strengths):
        single = regularity_tangent(task, s)
        np.testing.assert_allclose(batched.t[i], single.t, rtol=1e-12)
        np.testing.assert_allclose(batched.theta[i], single.theta, rtol=1e-12)


@lru_cache(maxsize=1)
def _converged_ridge(strength=0.05, steps=400):
    """Heavy-ball with its optimal settings for this Hessian: converged to ~1e-14 in 400 steps."""
    features = polynomial_features(U, POLY.degree)
    hessian = features.T @ features + strength * np.eye(POLY.n_params)
    lr, momentum = heavy_ball_settings(hessian)
    task = regression_task(POLY, U, Y, Hyperparameters(strength, lr, momentum, 0.1), n_steps=steps)
    return task, regularity_tangent(task), features, hessian


def test_converged_tangent_is_minus_inverse_hessian_times_grad_omega():
    task, tangent, features, hessian = _converged_ridge()
    optimum = ridge_solution(features, Y, 0.05)
    np.testing.assert_allclose(tangent.theta, optimum, rtol=0, atol=1e-9)
    # grad Omega = theta for Omega = ||theta||^2 / 2
    np.testing.assert_allclose(tangent.t, -np.linalg.solve(hessian, optimum), rtol=0, atol=1e-8)


def test_score_equals_classical_influence_function():
    _, tangent, _, hessian = _converged_ridge()
    theta = tangent.theta
    u = np.array([-0.9, -0.3, 0.2, 0.95])
    y = np.array([0.4, -1.0, 0.3, 2.0])
    phi = polynomial_features(u, POLY.degree)
    grad_loss = (phi @ theta - y)[:, None] * phi  # d/dtheta (phi.theta - y)^2 / 2
    influence = -theta @ np.linalg.solve(hessian, grad_loss.T)  # -grad Omega^T H^-1 grad l
    scores = curiosity_scores(POLY, theta, tangent.t, u, y)
    np.testing.assert_allclose(scores, influence, rtol=1e-7)


def test_score_of_training_point_is_rate_of_change_of_complexity():
    """Up-weighting example i by eps (down-weight x_i = -eps) changes Omega(theta*) at the rate
    <t, grad l(z_i)>: central differences of retraining at x_i = -+h."""
    task, tangent, _, _ = _converged_ridge()
    h = 1e-4
    for i in (0, 5):
        x = np.zeros((2, task.n_examples))
        x[0, i], x[1, i] = -h, h  # up-weight, down-weight
        theta = task.retrain(x, batch=2)["theta"]
        omega = 0.5 * np.sum(theta ** 2, axis=1)
        rate = (omega[0] - omega[1]) / (2 * h)
        score = curiosity_scores(POLY, tangent.theta, tangent.t, U[i:i + 1], Y[i:i + 1])[0]
        assert score == pytest.approx(rate, rel=1e-6, abs=1e-9)


def test_loss_gradient_circuit_matches_numpy_gradient():
    theta = RNG.normal(size=POLY.n_params)
    u, y = np.array([0.3, -0.7]), np.array([1.0, -2.0])
    phi = polynomial_features(u, POLY.degree)
    expected = (phi @ theta - y)[:, None] * phi
    np.testing.assert_allclose(loss_gradients(POLY, theta, u, y), expected, rtol=1e-13)
    assert loss_gradient_circuit(POLY) is loss_gradient_circuit(POLY)  # traced once


@pytest.mark.parametrize("nodes", [2, 5])
def test_expected_curiosity_quadrature_matches_closed_form(nodes):
    _, tangent, _, _ = _converged_ridge()
    candidates = np.linspace(-1, 1, 9)
    sigma = 0.3
    phi = polynomial_features(candidates, POLY.degree)
    closed_form = sigma ** 2 * (phi @ tangent.t) ** 2  # sigma^2 (d f / d s)^2
    got = expected_curiosity(POLY, tangent.theta, tangent.t, candidates, sigma, nodes=nodes)
    np.testing.assert_allclose(got, closed_form, rtol=1e-10)


def test_expected_curiosity_against_monte_carlo_for_the_mlp():
    model = TanhMLP(hidden=3)
    task = regression_task(model, U, Y, Hyperparameters(0.02, 0.05, 0.9, 0.1), n_steps=20, seed=1)
    tangent = regularity_tangent(task)
    candidates = np.array([-0.5, 0.1, 0.8])
    sigma = 0.2
    mean = predict(model, tangent.theta, candidates)
    labels = mean[:, None] + sigma * np.random.default_rng(0).normal(size=(3, 20000))
    scores = curiosity_scores(model, tangent.theta, tangent.t, np.repeat(candidates, 20000),
                              labels.ravel()).reshape(3, -1)
    monte_carlo = np.mean(scores ** 2, axis=1)
    got = expected_curiosity(model, tangent.theta, tangent.t, candidates, sigma)
    np.testing.assert_allclose(got, monte_carlo, rtol=0.05)  # MC error ~ sqrt(2/20000) = 1%


def test_slowdown_is_measured_on_the_same_backend():
    task = regression_task(POLY, U, Y, Hyperparameters(0.1, 0.05, 0.5, 0.1), n_steps=20)
    slowdown = measure_slowdown(task, repeats=1)
    assert slowdown.real_seconds > 0 and slowdown.tangent_seconds > 0
    assert slowdown.factor == pytest.approx(slowdown.tangent_seconds / slowdown.real_seconds)


def test_clear_errors():
    task = regression_task(POLY, U, Y, Hyperparameters(0.1, 0.05, 0.5, 0.1), n_steps=5)
    with pytest.raises(ValueError, match="no static scalar input 'lam'"):
        regularity_tangent(task, strength="lam")
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        regression_task(POLY, U, Y, Hyperparameters(0.1, 0.05, 0.5, 0.1), n_steps=5, optimizer="sgd")
    with pytest.raises(ValueError, match="at least one node"):
        expected_curiosity(POLY, np.zeros(4), np.zeros(4), U, 0.1, nodes=0)
    assert set(OPTIMIZERS) == {"gd", "adam"}
