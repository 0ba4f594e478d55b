"""The estimator's combination formula on functions with known Taylor tensors.

For f(x) = f0 + a.x + x^T B x + T[x, x, x] (symmetric B, T) the sketch coefficients along a
direction psi are exactly c_1 = a.psi, c_2 = psi^T B psi, c_3 = T[psi, psi, psi]. The mean of
X_{j,r} over many uniform directions must converge to the r-th term at v (a.v, v^T B v,
T[v, v, v]) within its standard error, for indicators and for arbitrary real v alike.
"""

import math

import numpy as np
import pytest

from circuitsketch.sketch import Prediction, directions
from circuitsketch.sketch.predict import median_of_means, order_samples


def _symmetric(rng, n, rank):
    t = rng.normal(size=(n,) * rank)
    perms = {2: [(0, 1), (1, 0)], 3: [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]}
    return sum(t.transpose(p) for p in perms[rank]) / len(perms[rank])


@pytest.fixture(scope="module")
def polynomial():
    rng = np.random.default_rng(5)
    n = 6
    a, B, T = rng.normal(size=n), _symmetric(rng, n, 2), _symmetric(rng, n, 3)
    terms = [lambda v: a @ v, lambda v: v @ B @ v, lambda v: np.einsum("ijk,i,j,k", T, v, v, v)]
    psi = directions(2, range(20000), n)
    coefficients = np.stack([np.full(len(psi), 0.7 + 0j), psi @ a,
                             np.einsum("ij,sj,si->s", B, psi, psi),
                             np.einsum("ijk,si,sj,sk->s", T, psi, psi, psi)], axis=1)
    return n, terms, psi, coefficients


def test_each_order_is_unbiased_for_its_taylor_term(polynomial):
    n, terms, psi, coefficients = polynomial
    rng = np.random.default_rng(9)
    vs = np.stack([np.isin(np.arange(n), [1, 4]).astype(float),
                   np.isin(np.arange(n), [0, 2, 3, 5]).astype(float),
                   rng.uniform(-1, 1, size=n)])
    samples = order_samples(coefficients, psi, vs)
    assert samples.shape == (3, len(psi), 3)
    for v, x in zip(vs, samples):
        mean = x.mean(axis=0)
        stderr = x.std(axis=0, ddof=1) / math.sqrt(len(psi))
        truth = np.array([term(v) for term in terms])
        assert np.all(np.abs(mean - truth) < 4 * stderr), (mean, truth, stderr)
        assert np.all(stderr < 0.1 * (1 + np.abs(truth)))  # the check is not vacuous


def test_prediction_sums_orders_and_scales_with_the_weight(polynomial):
    n, terms, psi, coefficients = polynomial
    v = np.isin(np.arange(n), [1, 4]).astype(float)
    samples = order_samples(coefficients, psi, v[None])[0]
    p = Prediction(0.7, samples, (1, 4))
    truth = 0.7 + sum(term(v) for term in terms)
    assert abs(p.estimate - truth) < 4 * p.stderr
    assert p.first_order == pytest.approx(0.7 + samples[:, 0].mean())
    assert p.partial(0) == 0.7 and p.partial(3) == p.estimate
    half = p.at_weight(0.5)
    truth_half = 0.7 + sum(0.5 ** r * term(v) for r, term in enumerate(terms, start=1))
    assert abs(half.estimate - truth_half) < 4 * half.stderr
    np.testing.assert_allclose(half.terms, p.terms * 0.5 ** np.arange(1, 4))
    small = p.prefix(100)
    np.testing.assert_array_equal(small.samples, samples[:100])
    assert small.stderr > p.stderr
    lo, hi = p.interval
    assert lo < truth < hi


def test_median_of_means_groups_and_coverage():
    assert median_of_means(np.arange(100.0), 0.05)[2] == math.ceil(8 * math.log(20))
    assert median_of_means(np.arange(5.0), 0.05)[2] == 5  # never more groups than samples
    rng = np.random.default_rng(0)
    misses = 0
    for _ in range(400):  # heavy-tailed samples (Student t, 3 dof) with mean 1
        values = 1 + rng.standard_t(3, size=200)
        centre, half, _ = median_of_means(values, 0.1)
        misses += abs(centre - 1) > half
    assert misses / 400 <= 0.1
    with pytest.raises(ValueError, match="delta"):
        median_of_means(np.ones(3), 1.5)
