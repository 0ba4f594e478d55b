"""Models, leave-one-out, the active-learning loop and the ``curiosity`` CLI.

The headline check: on a small fast case (degree-5 polynomial ridge regression of sin(3u),
noise 0.05, 6 initial labels, 4 queries, 8 seeds; random querying averaged over 4 draws per
seed) the held-out error after the queries is lower with curiosity scores than with random
queries, by a clear margin: the mean over seeds of log10(MSE_random / MSE_curiosity) must
exceed 0.3 (a factor 2). Measured: 0.93, curiosity better on 7 of 8 seeds. With t = 0 (every
score 0) the margin is -0.18, with theta in place of t -0.01, so a broken tangent fails this
test. A random direction in place of t still passes (0.73): on polynomials any score
<v, grad f>^2 first queries the ends of the interval. The tangent itself is checked against
independent references in test_regularity.py.
"""

import json

import numpy as np
import pytest

from circuitsketch.active.cli import register_cli
from circuitsketch.active.loop import (ActiveLearningProblem, noisy_sample, plot_learning_curves,
                                       run_active_learning)
from circuitsketch.active.models import (PolynomialRidge, TanhMLP, heavy_ball_settings,
                                         polynomial_features, predict, ridge_loo_mse,
                                         ridge_solution)


def test_closed_form_loo_matches_refitting_without_each_point():
    u, y = noisy_sample("sin", 9, 0.1, np.random.default_rng(0))
    features = polynomial_features(u, 4)
    for s in (1e-3, 0.1, 10.0):
        held_out = []
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            theta = ridge_solution(features[keep], y[keep], s)
            held_out.append(features[i] @ theta - y[i])
        assert ridge_loo_mse(features, y, s) == pytest.approx(np.mean(np.square(held_out)), rel=1e-9)


def test_polynomial_hyperparameters_pick_the_loo_minimum_and_a_convergent_optimizer():
    u, y = noisy_sample("cubic", 12, 0.05, np.random.default_rng(1))
    model = PolynomialRidge(degree=3)
    hyper = model.hyperparameters(u, y)
    features = model.features(u)
    errors = [ridge_loo_mse(features, y, s) for s in model.strength_grid]
    assert hyper.strength == model.strength_grid[int(np.argmin(errors))]
    assert hyper.noise_std == pytest.approx(np.sqrt(min(errors)))
    hessian = features.T @ features + hyper.strength * np.eye(4)
    lr, momentum = heavy_ball_settings(hessian)
    # heavy ball on a quadratic contracts at rate sqrt(momentum) < 1
    assert (hyper.lr, hyper.momentum) == (lr, momentum) and 0 <= momentum < 1
    with pytest.raises(ValueError, match="not positive definite"):
        heavy_ball_settings(np.diag([1.0, 0.0]))


def test_predictions_through_the_circuit_match_numpy():
    theta = np.array([0.5, -1.0, 2.0])
    u = np.linspace(-1, 1, 7)
    np.testing.assert_allclose(predict(PolynomialRidge(degree=2), theta, u),
                               polynomial_features(u, 2) @ theta, rtol=1e-14)
    mlp = TanhMLP(hidden=2)
    theta = np.arange(mlp.n_params, dtype=float) / 10  # W1 = [0, .1], b1 = [.2, .3], w2 = [.4, .5], b2 = .6
    expected = 0.4 * np.tanh(0.0 * u + 0.2) + 0.5 * np.tanh(0.1 * u + 0.3) + 0.6
    np.testing.assert_allclose(predict(mlp, theta, u), expected, rtol=1e-14)


def test_curiosity_beats_random_querying_on_a_small_case(tmp_path):
    model = PolynomialRidge(degree=5)
    problem = ActiveLearningProblem(target="sin", noise_std=0.05, n_initial=6)
    run = run_active_learning(model, problem, seeds=range(8), n_rounds=4, n_steps=600,
                              random_draws=4)
    assert run.errors["curiosity"].shape == (8, 1, 5) and run.errors["random"].shape == (8, 4, 5)
    # both strategies start from the same labelled set and train identically
    np.testing.assert_allclose(run.errors["random"][:, :, 0], run.errors["curiosity"][:, :, 0].repeat(4, 1))
    assert run.final_log10_margin() > 0.3
    assert run.win_fraction() >= 0.75
    queried = [q[0] for q in run.queries["curiosity"]]
    assert all(len(q) == 4 and len(set(q)) == 4 for q in queried)  # no point queried twice
    plot_learning_curves(run, str(tmp_path / "curves.png"))
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_the_loop_runs_the_mlp_with_adam():
    model = TanhMLP(hidden=3, lr=0.02)
    problem = ActiveLearningProblem(target="tanh", pool_size=20, n_initial=5)
    run = run_active_learning(model, problem, seeds=[0, 1], n_rounds=1, per_round=2, n_steps=30,
                              optimizer="adam")
    assert run.errors["curiosity"].shape == (2, 1, 2)
    assert np.all(np.isfinite(run.errors["random"]))
    assert all(len(q[0]) == 2 for q in run.queries["curiosity"])
    with pytest.raises(ValueError, match="unknown strategies"):
        run_active_learning(model, problem, seeds=[0], n_rounds=1, strategies=["greedy"])


def _cli(argv):
    import argparse

    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.run(args)


def test_cli_score_and_compare(tmp_path, capsys):
    assert _cli(["curiosity", "score", "--degree", "3", "--steps", "300", "--repeats", "1",
                 "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "curiosity_scores.json").read_text())
    u, y = noisy_sample("sin", 10, 0.05, np.random.default_rng(0))
    features = polynomial_features(u, 3)
    s = result["strength"]
    hessian = features.T @ features + s * np.eye(4)
    optimum = ridge_solution(features, y, s)
    # 300 heavy-ball steps converge this small problem: t is the fixed point -H^-1 theta*
    np.testing.assert_allclose(result["tangent"], -np.linalg.solve(hessian, optimum), rtol=1e-6)
    assert result["slowdown"]["factor"] > 0
    assert "most curious candidates" in capsys.readouterr().out

    assert _cli(["curiosity", "compare", "--degree", "3", "--seeds", "2", "--rounds", "1",
                 "--steps", "100", "--random-draws", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "active_learning.json").read_text())
    assert len(result["geometric_mean_error"]["curiosity"]) == 2
    assert (tmp_path / "active_learning.png").exists()
    assert "curiosity beats random" in capsys.readouterr().out
