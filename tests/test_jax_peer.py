"""Tests for the JAX peer benchmarks/jax_microgpt.py (skipped when jax is not installed).

The peer is only worth timing if it computes the same training as our step circuit, so:
(1) the padded, fixed-shape JAX step, trained a few steps with some steps down-weighted or
    deleted, equals the independent eager reference tests/eager_microgpt.py (plain Python
    floats, variable-length names, no padding) to ~1e-10 — on a tiny config whose names are
    padded, exactly full and truncated, and on the default config;
(2) jet's Taylor coefficients of the final params along a real direction ψ equal central finite
    differences of real training in x = w·ψ (order 1, and order 2, which also pins the
    plain, non-factorial-scaled coefficients), and the vmapped jet and the vmapped batch of
    retrainings equal their one-at-a-time counterparts.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")

from circuitsketch.frontends.microgpt_data import MicrogptConfig, prepare  # noqa: E402

# pytest runs with --import-mode=importlib: put tests/ and benchmarks/ on sys.path.
_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT / "tests"))
sys.path.insert(0, str(_ROOT / "benchmarks"))
import eager_microgpt  # noqa: E402
import jax_microgpt  # noqa: E402

# Block 8: the first five names are padded (yuheng, xavien, jori), exactly full (diondre) and
# truncated (juanluis, 9 predictions > 8 positions).
TINY = MicrogptConfig(n_embd=8, n_head=2, block_size=8, mlp_width=32, n_steps=5)


@pytest.fixture(scope="module")
def quick_compile():
    """XLA without most optimisations: the jet steps compile ~2x faster (same float64 math)."""
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


def _max_abs_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


@pytest.mark.parametrize("config, x", [
    (TINY, [0.0, 0.3, 1.0, 0.0, -0.5]),
    (MicrogptConfig(n_steps=3), [0.0, 1.0, 0.25]),
], ids=["tiny-5-steps", "default-3-steps"])
def test_padded_jax_training_matches_eager_reference(config, x):
    data = prepare(config)
    n = len(x)
    got = jax_microgpt.train(config, n, x)
    want = eager_microgpt.train_eager(data.init_params, data.names, config, data.chars, x)
    # Both are float64 with different summation orders: agreement to ~1e-16 relative per
    # operation; 1e-10 absolute on parameters of size ~0.1-0.3 leaves a wide margin.
    assert _max_abs_diff(got, want) < 1e-10
    # ...and the comparison is not vacuous: training moved the parameters.
    assert _max_abs_diff(got, data.init_params) > 1e-3


def test_jet_coefficients_match_finite_differences_of_training(quick_compile):
    n = TINY.n_steps
    psi = np.array([0.5, -0.3, 0.7, 0.2, -0.4])
    coeffs = jax_microgpt.train_taylor(TINY, n, psi, order=2)
    f0 = jax_microgpt.train(TINY, n)
    assert _max_abs_diff(coeffs[0], f0) < 1e-13

    # Central differences of w -> theta(w psi): first derivative with h = 1e-5, second with
    # h = 1e-3 (theta_2 = f''/2!).  Truncation (h^2 |f'''| / 6, h^2 |f''''| / 12) and rounding
    # (eps |f| / h, eps |f| / h^2) stay near 1e-10 and 1e-7 of the coefficients' scale.
    h1, h2 = 1e-5, 1e-3
    fp1, fm1 = jax_microgpt.train(TINY, n, h1 * psi), jax_microgpt.train(TINY, n, -h1 * psi)
    fp2, fm2 = jax_microgpt.train(TINY, n, h2 * psi), jax_microgpt.train(TINY, n, -h2 * psi)
    first = {k: (fp1[k] - fm1[k]) / (2 * h1) for k in f0}
    second = {k: (fp2[k] - 2 * f0[k] + fm2[k]) / (2 * h2 * h2) for k in f0}
    scale1 = max(float(np.max(np.abs(a))) for a in first.values())
    scale2 = max(float(np.max(np.abs(a))) for a in second.values())
    assert scale1 > 1e-4 and scale2 > 1e-4  # the params really depend on x, to 2nd order
    assert _max_abs_diff(coeffs[1], first) < 1e-7 * scale1
    assert _max_abs_diff(coeffs[2], second) < 1e-5 * scale2


def test_vmapped_jet_and_batched_retraining_match_one_at_a_time(quick_compile):
    n = TINY.n_steps
    psis = np.array([[0.6, -0.8, 0.0, 0.0, 0.0], [0.1, 0.2, -0.9, 0.3, 0.2]])
    batched = jax_microgpt.train_taylor(TINY, n, psis, order=2)
    for i, psi in enumerate(psis):
        single = jax_microgpt.train_taylor(TINY, n, psi, order=2)
        for r in range(3):
            assert _max_abs_diff({k: a[i] for k, a in batched[r].items()}, single[r]) < 1e-14

    xs = np.array([[0.0, 1.0, 0.5, 0.0, 0.0], [0.3, 0.0, 0.0, 1.0, 0.0]])
    together = jax_microgpt.train(TINY, n, xs)
    for i, x in enumerate(xs):
        alone = jax_microgpt.train(TINY, n, x)
        assert _max_abs_diff({k: a[i] for k, a in together.items()}, alone) < 1e-14
