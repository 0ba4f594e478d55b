"""Directions psi_j: reproducible from (seed, j) alone, unit norm, uniform on the complex sphere
(checked through the moments the estimator relies on, against their closed forms)."""

import numpy as np
import pytest

from circuitsketch.sketch import direction, directions


def test_direction_depends_only_on_seed_and_index():
    n = 7
    all_at_once = directions(3, range(10), n)
    in_pieces = np.concatenate([directions(3, range(0, 4), n), directions(3, range(4, 10), n)])
    reversed_order = directions(3, range(9, -1, -1), n)[::-1]
    np.testing.assert_array_equal(all_at_once, in_pieces)
    np.testing.assert_array_equal(all_at_once, reversed_order)
    np.testing.assert_array_equal(all_at_once[6], direction(3, 6, n))
    assert not np.allclose(direction(3, 6, n), direction(4, 6, n))
    assert not np.allclose(direction(3, 6, n), direction(3, 7, n))


def test_directions_are_complex_unit_vectors():
    psi = directions(0, range(50), 11)
    assert psi.dtype == np.complex128 and psi.shape == (50, 11)
    np.testing.assert_allclose(np.linalg.norm(psi, axis=1), 1.0, rtol=1e-14)


def test_moments_match_the_uniform_complex_sphere():
    # E[psi psi^H] = I/n, E[psi psi^T] = 0, E|psi_i|^4 = 2/(n(n+1)), E|psi_i|^2|psi_l|^2 = 1/(n(n+1))
    n, s = 5, 20000
    psi = directions(11, range(s), n)
    second = psi.T @ psi.conj() / s
    pseudo = psi.T @ psi / s
    tol = 5 / np.sqrt(s) / n  # a few standard errors of a mean of terms of size ~1/n
    np.testing.assert_allclose(second, np.eye(n) / n, atol=tol)
    np.testing.assert_allclose(pseudo, 0, atol=tol)
    power = np.abs(psi) ** 2
    np.testing.assert_allclose(np.mean(power ** 2, axis=0), 2 / (n * (n + 1)), rtol=0.05)
    np.testing.assert_allclose(np.mean(power[:, 0] * power[:, 1]), 1 / (n * (n + 1)), rtol=0.05)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="n >= 1"):
        direction(0, 0, 0)
    with pytest.raises(ValueError, match="non-negative"):
        direction(-1, 0, 3)
