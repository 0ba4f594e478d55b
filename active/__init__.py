"""Regularity tangents and curiosity scores for active learning (Eaton, arXiv 2411.15292).

``regularity`` computes t = d theta / d s alongside training (one order-1 Taylor run along the
regularity strength s); ``curiosity`` scores candidates with <t, grad loss> and its expected
square over a label model; ``models`` holds polynomial ridge regression (s by leave-one-out)
and a tanh MLP; ``loop`` runs pool-based active learning against random queries; ``cli`` adds
``circuitsketch curiosity``. See docs/regularity.md.
"""

from .curiosity import curiosity_scores, expected_curiosity, loss_gradient_circuit, loss_gradients
from .loop import (STRATEGIES, TARGETS, ActiveLearningProblem, ActiveLearningRun, noisy_sample,
                   plot_learning_curves, run_active_learning)
from .models import (Hyperparameters, PolynomialRidge, RegressionModel, TanhMLP,
                     half_squared_norm, heavy_ball_settings, polynomial_features, predict,
                     prediction_circuit, ridge_loo_mse, ridge_solution, squared_loss)
from .regularity import (OPTIMIZERS, RegressionTask, RegularityTangent, Slowdown,
                         measure_slowdown, regression_task, regularised_program,
                         regularity_tangent)

__all__ = ["OPTIMIZERS", "STRATEGIES", "TARGETS", "ActiveLearningProblem", "ActiveLearningRun",
           "Hyperparameters", "PolynomialRidge", "RegressionModel", "RegressionTask",
           "RegularityTangent", "Slowdown", "TanhMLP", "curiosity_scores", "expected_curiosity",
           "half_squared_norm", "heavy_ball_settings", "loss_gradient_circuit", "loss_gradients",
           "measure_slowdown", "noisy_sample", "plot_learning_curves", "polynomial_features",
           "predict", "prediction_circuit", "regression_task", "regularised_program",
           "regularity_tangent", "ridge_loo_mse", "ridge_solution", "run_active_learning",
           "squared_loss"]
