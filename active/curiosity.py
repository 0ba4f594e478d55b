r"""Curiosity scores: the influence of a candidate point on the model's complexity.

With the regularity tangent t = d theta / d s (``active.regularity``), the score of a labelled
candidate z = (u, y) is

    score(z) = <t, grad_theta l(z; theta)>.

At a minimum theta*, up-weighting z by eps (adding eps l(z; theta) to the objective) moves
theta* by -H^-1 grad l(z), so the complexity changes at the rate
d Omega(theta*) / d eps = -grad Omega^T H^-1 grad l(z) = <t, grad l(z)> with t = -H^-1 grad Omega:
the score is the classical influence function of z on Omega. Scoring costs one loss gradient:
the per-example loss and its ``grad`` are traced once into a circuit with inputs theta, the
input u and the label y (:func:`loss_gradient_circuit`), evaluated batched over candidates.

An unlabelled candidate u is scored by the expected squared score over a label model, here
the Gaussian predictive y ~ N(f(u; theta), sigma^2):

    curiosity(u) = E_y[score(u, y)^2],

computed by Gauss-Hermite QUADRATURE with q nodes: E[g(y)] = pi^-1/2 sum_k w_k g(mu + sqrt 2 sigma xi_k),
exact when g is a polynomial in y of degree <= 2q - 1. For the squared loss,
grad l = (f - y) grad f is affine in y, so score^2 is quadratic and q = 2 (the default) is
exact, equal to the closed form sigma^2 <t, grad_theta f(u)>^2 = sigma^2 (d f(u) / d s)^2: the
candidate is interesting where the prediction depends most on the regularity, i.e. where the
labelled data leave the function least determined. More nodes serve other losses.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..backends import evaluate
from ..frontends.tracer import grad, trace
from ..ir.circuit import Circuit
from ..passes.simplify import simplify
from .models import RegressionModel, as_inputs, predict, squared_loss


@lru_cache(maxsize=32)
def loss_gradient_circuit(model: RegressionModel) -> Circuit:
    """theta [p], input [input_dim], target -> loss l and its gradient grad_theta l [p]."""
    def loss_and_gradient(theta, input, target):
        loss = squared_loss(model.predict(theta, input), target)
        return {"loss": loss, "grad": grad(loss, theta)}

    return simplify(trace(loss_and_gradient, theta=(model.n_params,), input=(model.input_dim,),
                          target=()))


def loss_gradients(model: RegressionModel, theta: np.ndarray, inputs: np.ndarray,
                   targets: np.ndarray, *, backend: str = "reference") -> np.ndarray:
    """grad_theta l((u_i, y_i); theta) for every candidate: [m, p] (one batched evaluation)."""
    inputs = as_inputs(model, inputs)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    if len(targets) != len(inputs):
        raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
    out = evaluate(loss_gradient_circuit(model),
                   {"theta": np.asarray(theta, dtype=np.float64), "input": inputs,
                    "target": targets}, batch=len(inputs), backend=backend)
    return out["grad"]


def curiosity_scores(model: RegressionModel, theta: np.ndarray, tangent: np.ndarray,
                     inputs: np.ndarray, targets: np.ndarray, *,
                     backend: str = "reference") -> np.ndarray:
    """<t, grad_theta l(z_i; theta)> for labelled candidates z_i = (u_i, y_i): [m]."""
    return loss_gradients(model, theta, inputs, targets, backend=backend) @ np.asarray(tangent)


def expected_curiosity(model: RegressionModel, theta: np.ndarray, tangent: np.ndarray,
                       inputs: np.ndarray, noise_std: float, *, nodes: int = 2,
                       backend: str = "reference") -> np.ndarray:
    """E_y[score(u_i, y)^2] over y ~ N(f(u_i; theta), noise_std^2), by ``nodes``-point
    Gauss-Hermite quadrature (exact for the squared loss with nodes >= 2): [m]."""
    if nodes < 1:
        raise ValueError(f"quadrature needs at least one node, got {nodes}")
    inputs = as_inputs(model, inputs)
    mean = predict(model, theta, inputs, backend=backend)
    xi, weights = np.polynomial.hermite.hermgauss(nodes)
    labels = mean[:, None] + np.sqrt(2.0) * noise_std * xi[None, :]  # [m, q]
    scores = curiosity_scores(model, theta, tangent, np.repeat(inputs, nodes, axis=0),
                              labels.reshape(-1), backend=backend).reshape(len(inputs), nodes)
    return scores ** 2 @ weights / np.sqrt(np.pi)
