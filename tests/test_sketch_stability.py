"""Stability diagnostic against exact derivative norms from finite differences of retraining.

On a squared-loss task trained for 2 SGD steps, f is a quadratic polynomial in x, so central
finite differences of real retraining give its gradient and Hessian exactly (up to rounding).
E[4^{L_r}] = ||grad^r f / r!||_F^2; with 2000 directions the sample mean of |c_r|^2-based
estimates has a relative standard error of ~3%, so 15% is a safe tolerance.
"""

import numpy as np
import pytest

from circuitsketch.sketch import plot_stability, precompute, retrained_values, stability_profile
from circuitsketch.sketch.stability import log2_binomial
from test_sketch_tasks import logit_measurement, regression_task


def test_profile_estimates_the_derivative_norms(tmp_path):
    task = regression_task(loss="squared", n=8, m=4, n_steps=2, lr=0.1)
    measurement = logit_measurement()
    sketch = precompute(task, directions=2000, order=3, batch_size=2000, progress=False)
    profile = stability_profile(sketch, measurement)
    n, h = task.n_examples, 1e-2
    eye = np.eye(n)
    points = [np.zeros(n)] + [sign * h * eye[i] for i in range(n) for sign in (1, -1)]
    pairs = [(i, k) for i in range(n) for k in range(n)]
    points += [h * (si * eye[i] + sk * eye[k]) for i, k in pairs for si, sk in
               ((1, 1), (1, -1), (-1, 1), (-1, -1))]
    f = retrained_values(task, measurement, np.array(points), batch_size=len(points), progress=False)
    gradient = (f[1: 2 * n + 1: 2] - f[2: 2 * n + 1: 2]) / (2 * h)
    corners = f[2 * n + 1:].reshape(n, n, 4)
    hessian = (corners[..., 0] - corners[..., 1] - corners[..., 2] + corners[..., 3]) / (4 * h * h)
    estimates = np.mean(4.0 ** profile.log2_norms, axis=0)
    assert estimates[1] == pytest.approx(gradient @ gradient, rel=0.15)
    assert estimates[2] == pytest.approx(np.sum((hessian / 2) ** 2), rel=0.15)
    assert profile.log2_norms[:, 3].max() < np.log2(np.sqrt(estimates[2])) - 30  # degree 2
    assert np.isfinite(profile.growth_bits_per_order())
    plot_stability(profile, str(tmp_path / "stability.png"))
    assert (tmp_path / "stability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_log2_binomial_does_not_overflow():
    from math import comb, log2
    assert log2_binomial(10, np.array([0, 3]))[1] == pytest.approx(log2(comb(12, 3)), rel=1e-12)
    assert log2_binomial(1000, np.array([100]))[0] == pytest.approx(log2(comb(1099, 100)), rel=1e-12)
