r"""Regression models for regularity tangents and active learning, written with the tracer.

A model maps parameters theta [p] and an input u [input_dim] to a prediction f(u; theta); its
``predict`` is traceable (it records into the current circuit) and every numeric evaluation
goes through a traced circuit and a backend (:func:`predict`). The per-example loss is the
squared error l((u, y); theta) = (f(u; theta) - y)^2 / 2 and the complexity the ridge penalty
Omega(theta) = ||theta||^2 / 2, so the regularised objective is

    L(theta; s) = sum_i (1 - x_i) l(z_i; theta) + s Omega(theta)        (x: down-weights)

Two models, each with a rule :meth:`hyperparameters` that sets s, the optimizer settings and
the label-noise level from a labelled set:

* :class:`PolynomialRidge`: f = sum_j theta_j u^j (features 1, u, ..., u^d). The objective is
  quadratic with Hessian H(s) = Phi^T Phi + s I, so s is chosen by exact leave-one-out
  cross-validation over a grid (closed form: with the hat matrix A = Phi H^-1 Phi^T the LOO
  residual is (y_i - f_i) / (1 - A_ii)), and heavy-ball momentum gets its optimal settings from
  H's extreme eigenvalues L and m: lr = 4 / (sqrt L + sqrt m)^2,
  momentum = ((sqrt k - 1) / (sqrt k + 1))^2 with k = L / m (error shrinks ~ momentum^(N/2)).
* :class:`TanhMLP`: f = w2 . tanh(W1 u + b1) + b2, theta = [W1, b1, w2, b2] flattened; s,
  lr and momentum are fixed, the initialisation is N(0, init_scale^2) from a seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import numpy as np

from ..backends import evaluate
from ..frontends.tracer import dot, trace
from ..ir.circuit import Circuit
from ..passes.simplify import simplify


@dataclass(frozen=True)
class Hyperparameters:
    """Settings of one training run: regularity strength, optimizer settings, label noise."""

    strength: float
    lr: float
    momentum: float
    noise_std: float


class RegressionModel(Protocol):
    """What the regularity and active-learning code needs from a model."""

    n_params: int
    input_dim: int

    def predict(self, theta: np.ndarray, u: np.ndarray) -> Any:
        """The prediction f(u; theta) as a traced Value (theta, u: object arrays of Values)."""

    def initial_params(self, seed: int) -> np.ndarray:
        """theta at the start of training, float [n_params]."""

    def hyperparameters(self, inputs: np.ndarray, targets: np.ndarray) -> Hyperparameters:
        """s, lr, momentum and the label-noise estimate for training on (inputs, targets)."""


def squared_loss(prediction: Any, target: Any) -> Any:
    """l = (prediction - target)^2 / 2 (traceable)."""
    residual = prediction - target
    return 0.5 * residual * residual


def half_squared_norm(theta: np.ndarray) -> Any:
    """Omega(theta) = ||theta||^2 / 2 (traceable)."""
    return 0.5 * dot(theta, theta)


# ---------------------------------------------------------------- polynomial ridge regression

def polynomial_features(u: np.ndarray, degree: int) -> np.ndarray:
    """Phi[i, j] = u_i^j for j = 0..degree; u is [n] or [n, 1]."""
    u = np.asarray(u, dtype=np.float64).reshape(-1)
    return u[:, None] ** np.arange(degree + 1)


def ridge_solution(features: np.ndarray, targets: np.ndarray, strength: float) -> np.ndarray:
    """argmin_theta sum_i (Phi_i theta - y_i)^2 / 2 + s ||theta||^2 / 2 = (Phi^T Phi + s I)^-1 Phi^T y."""
    hessian = features.T @ features + strength * np.eye(features.shape[1])
    return np.linalg.solve(hessian, features.T @ targets)


def ridge_loo_mse(features: np.ndarray, targets: np.ndarray, strength: float) -> float:
    """Exact leave-one-out mean squared error of ridge regression at strength s (closed form)."""
    hessian = features.T @ features + strength * np.eye(features.shape[1])
    hat = features @ np.linalg.solve(hessian, features.T)
    residuals = targets - hat @ targets
    return float(np.mean((residuals / (1.0 - np.diag(hat))) ** 2))


def heavy_ball_settings(hessian: np.ndarray) -> tuple[float, float]:
    """(lr, momentum) optimal for heavy-ball momentum on a quadratic with this Hessian."""
    eigenvalues = np.linalg.eigvalsh(hessian)
    largest, smallest = float(eigenvalues[-1]), float(eigenvalues[0])
    if smallest <= 0:
        raise ValueError(f"the Hessian is not positive definite (smallest eigenvalue {smallest:g})")
    root_kappa = np.sqrt(largest / smallest)
    lr = 4.0 / (np.sqrt(largest) + np.sqrt(smallest)) ** 2
    return float(lr), float(((root_kappa - 1.0) / (root_kappa + 1.0)) ** 2)


@dataclass(frozen=True)
class PolynomialRidge:
    """f(u) = sum_{j<=degree} theta_j u^j with s chosen by leave-one-out over ``strength_grid``."""

    degree: int = 5
    strength_grid: tuple[float, ...] = tuple(np.logspace(-3, 2, 21))
    input_dim: int = 1

    @property
    def n_params(self) -> int:
        return self.degree + 1

    def predict(self, theta: np.ndarray, u: np.ndarray) -> Any:
        powers = [1.0, u[0]]
        for _ in range(2, self.degree + 1):
            powers.append(powers[-1] * u[0])
        return dot(theta, powers[: self.degree + 1])

    def initial_params(self, seed: int) -> np.ndarray:
        return np.zeros(self.n_params)

    def features(self, inputs: np.ndarray) -> np.ndarray:
        return polynomial_features(inputs, self.degree)

    def choose_strength(self, inputs: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
        """(s, LOO MSE) minimising the exact leave-one-out error over the grid."""
        features = self.features(inputs)
        errors = [ridge_loo_mse(features, targets, s) for s in self.strength_grid]
        best = int(np.argmin(errors))
        return float(self.strength_grid[best]), float(errors[best])

    def hyperparameters(self, inputs: np.ndarray, targets: np.ndarray) -> Hyperparameters:
        strength, loo_mse = self.choose_strength(inputs, targets)
        features = self.features(inputs)
        lr, momentum = heavy_ball_settings(features.T @ features + strength * np.eye(self.n_params))
        return Hyperparameters(strength, lr, momentum, float(np.sqrt(loo_mse)))


# ---------------------------------------------------------------- one-hidden-layer tanh MLP

@dataclass(frozen=True)
class TanhMLP:
    """f(u) = w2 . tanh(W1 u + b1) + b2 with fixed s, lr, momentum and noise level."""

    hidden: int = 8
    input_dim: int = 1
    strength: float = 1e-3
    lr: float = 0.02
    momentum: float = 0.9
    noise_std: float = 0.1
    init_scale: float = 0.5

    @property
    def n_params(self) -> int:
        return self.hidden * (self.input_dim + 2) + 1

    def _unpack(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
        h, d = self.hidden, self.input_dim
        w1 = theta[: h * d].reshape(h, d)
        b1 = theta[h * d: h * d + h]
        w2 = theta[h * d + h: h * d + 2 * h]
        return w1, b1, w2, theta[-1]

    def predict(self, theta: np.ndarray, u: np.ndarray) -> Any:
        w1, b1, w2, b2 = self._unpack(theta)
        hidden = [(dot(row, u) + bias).tanh() for row, bias in zip(w1, b1)]
        return dot(w2, hidden) + b2

    def initial_params(self, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).normal(0.0, self.init_scale, self.n_params)

    def hyperparameters(self, inputs: np.ndarray, targets: np.ndarray) -> Hyperparameters:
        return Hyperparameters(self.strength, self.lr, self.momentum, self.noise_std)


# ---------------------------------------------------------------- evaluation through circuits

@lru_cache(maxsize=32)
def prediction_circuit(model: RegressionModel) -> Circuit:
    """The traced circuit theta [p], input [input_dim] -> prediction."""
    return simplify(trace(lambda theta, input: {"prediction": model.predict(theta, input)},
                          theta=(model.n_params,), input=(model.input_dim,)))


def as_inputs(model: RegressionModel, inputs: np.ndarray) -> np.ndarray:
    """Inputs as a float array [m, input_dim] (a flat [m] array is read as m scalar inputs)."""
    inputs = np.asarray(inputs, dtype=np.float64)
    if inputs.ndim == 1 and model.input_dim == 1:
        inputs = inputs[:, None]
    if inputs.ndim != 2 or inputs.shape[1] != model.input_dim:
        raise ValueError(f"inputs must have shape [m, {model.input_dim}], got {inputs.shape}")
    return inputs


def predict(model: RegressionModel, theta: np.ndarray, inputs: np.ndarray, *,
            backend: str = "reference") -> np.ndarray:
    """f(u_i; theta) for every row of ``inputs`` (one batched circuit evaluation)."""
    inputs = as_inputs(model, inputs)
    out = evaluate(prediction_circuit(model), {"theta": np.asarray(theta, dtype=np.float64),
                                               "input": inputs}, batch=len(inputs), backend=backend)
    return out["prediction"]
