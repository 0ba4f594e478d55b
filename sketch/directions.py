r"""Random sketch directions: psi_j uniform on the unit sphere of C^n, reproducible from (seed, j).

Construction (counter-based, DESIGN §4 step 1)::

    rng   = numpy.random.default_rng([seed, j])
    g_i   = (a_i + i b_i) / sqrt(2),   a, b = rng.standard_normal((2, n))   (i.i.d. N(0, 1))
    psi_j = g / ||g||_2

A standard complex Gaussian vector is invariant under every unitary map, so its direction is
uniform on the complex sphere. ``psi_j`` depends on ``(seed, j, n)`` only: never on the batch
size, on the order in which directions are generated, or on how many workers generate them, so
a sketch stores ``seed`` instead of the directions.

Moments the estimator rests on (for uniform psi on the complex sphere of C^n, multi-indices
alpha, beta with |alpha| = |beta| = r)::

    E[psi^alpha conj(psi)^beta] = [alpha == beta] * alpha! (n-1)! / (n-1+r)!

so E|psi_i|^2 = 1/n and E[psi_i^2] = 0 (the phases are uniform).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np


def direction(seed: int, j: int, n: int) -> np.ndarray:
    """psi_j: a complex128 unit vector of length ``n`` determined by ``(seed, j)`` alone."""
    if n <= 0:
        raise ValueError(f"a direction needs n >= 1 coordinates, got n = {n}")
    if seed < 0 or j < 0:
        raise ValueError(f"seed and direction index must be non-negative, got seed={seed}, j={j}")
    real, imag = np.random.default_rng([int(seed), int(j)]).standard_normal((2, n))
    gaussian = (real + 1j * imag) / np.sqrt(2.0)
    return gaussian / np.linalg.norm(gaussian)


def directions(seed: int, indices: Iterable[int], n: int) -> np.ndarray:
    """The directions ``psi_j`` for ``j`` in ``indices``, stacked: complex128 ``[len, n]``."""
    rows = [direction(seed, j, n) for j in indices]
    return np.stack(rows) if rows else np.zeros((0, n), dtype=np.complex128)


__all__ = ["direction", "directions"]
