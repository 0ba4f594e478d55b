r"""Stability diagnostic (DESIGN §4, paper Fig. 1): how fast do the Taylor tensors of f grow?

For psi uniform on the complex unit sphere of C^n and the symmetric tensor
T_r = nabla^r f(0) / r! (so c_r = T_r[psi^{(x) r}]),

    E |c_r|^2 = ||T_r||_F^2 / C(n+r-1, r)

(from E[psi^a conj(psi)^b] = [a = b] a!(n-1)!/(n-1+r)!, see directions.py), so each direction
gives the estimate

    L_{j,r} = log2( sqrt(C(n+r-1, r)) |c_{j,r}| )  ~  log2 ||nabla^r f(0) / r!||_F .

The paper's stability assumption is that these norms grow at most geometrically in r, i.e.
L_{., r} grows at most linearly; then the truncation error of the order-k estimator decays
geometrically once the deletion is small enough. ``growth_bits_per_order`` is the slope of a
least-squares line through the median over directions for r >= 1. log2 C(n+r-1, r) is
computed with lgamma, so large n and k (n = 1000, k = 100) do not overflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..ir.circuit import Circuit
from .predict import measurement_coefficients
from .store import Sketch


def log2_binomial(n: int, r: np.ndarray) -> np.ndarray:
    """log2 C(n+r-1, r) for each r (lgamma: no overflow)."""
    return np.array([(math.lgamma(n + int(q)) - math.lgamma(int(q) + 1) - math.lgamma(n))
                     / math.log(2) for q in np.atleast_1d(r)])


@dataclass(frozen=True)
class StabilityProfile:
    """``log2_norms[j, r]`` = L_{j,r} for each direction j and order r = 0..k."""

    log2_norms: np.ndarray
    n: int

    @property
    def order(self) -> int:
        return self.log2_norms.shape[1] - 1

    def median(self) -> np.ndarray:
        return np.median(self.log2_norms, axis=0)

    def growth_bits_per_order(self) -> float:
        """Slope of the least-squares line through the median profile over r = 1..k."""
        r = np.arange(1, self.order + 1)
        median = self.median()[1:]
        finite = np.isfinite(median)
        if finite.sum() < 2:
            return float("nan")
        return float(np.polyfit(r[finite], median[finite], 1)[0])

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "order": self.order, "log2_norms": self.log2_norms.tolist(),
                "median": self.median().tolist(),
                "growth_bits_per_order": self.growth_bits_per_order()}


def stability_profile(sketch: Sketch, measurement: Circuit, *, output: str | None = None,
                      backend: str | None = None) -> StabilityProfile:
    """L_{j,r} for every direction of ``sketch`` (precompute a few directions at a high order);
    ``backend``: None is the fastest installed (``numba-cpu`` when Numba imports)."""
    coefficients = measurement_coefficients(sketch, measurement, output=output, backend=backend)
    with np.errstate(divide="ignore"):  # an exactly zero coefficient is log2 0 = -inf
        logs = np.log2(np.abs(coefficients))
    orders = np.arange(sketch.order + 1)
    return StabilityProfile(logs + 0.5 * log2_binomial(sketch.n, orders)[None, :], sketch.n)


def plot_stability(profile: StabilityProfile, path: str, *, title: str = "") -> None:
    """PNG of L_{j,r} against r: one thin line per direction, the median in black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    orders = np.arange(profile.order + 1)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for row in profile.log2_norms:
        ax.plot(orders, row, lw=0.7, alpha=0.6)
    ax.plot(orders, profile.median(), "k-", lw=2,
            label=f"median ({profile.growth_bits_per_order():.2f} bits/order)")
    ax.set_xlabel("order r")
    ax.set_ylabel(r"$\log_2(\sqrt{\binom{n+r-1}{r}}\,|c_r|)$")
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["StabilityProfile", "log2_binomial", "plot_stability", "stability_profile"]
