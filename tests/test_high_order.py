"""Order-100 Taylor coefficients of a whole (tiny) microgpt run, checked three independent ways
(sketch/order_check.py): (a) numba-cpu against the reference backend, (b) partial sums against
real retraining (on the reference backend) inside the convergence region, (c) c_r(0.7 v) =
0.7^r c_r(v). Each check is also shown to catch a coefficient perturbed far below any visible
change of the low orders, and (b)'s blind spot (orders whose terms are below its residual) is
pinned down rather than hidden.

Tolerances: in these runs (a) and (c) stay below 2e-13 and 5e-13 relative to the envelope e_r at
every r <= 100; the tests allow 1e-11, 20-40x the measured rounding, and 100x below the 1e-9
perturbation they must catch.
"""

import dataclasses
import time

import numpy as np
import pytest

from circuitsketch.frontends.microgpt_array import build_task_array, loss_measurement_array
from circuitsketch.frontends.microgpt_data import MicrogptConfig, names_for_steps, prepare
from circuitsketch.sketch.directions import direction as random_direction
from circuitsketch.sketch.order_check import envelope, order_check

TINY = MicrogptConfig(n_embd=4, n_head=2, block_size=8, mlp_width=16)
ORDER = 100
TOLERANCE = 1e-11


def _tiny(steps):
    task = build_task_array(TINY, steps)
    data = prepare(TINY)
    return task, loss_measurement_array(data, TINY, names_for_steps(data, 1)[0])


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """1_D for two of four names; the retrainings on the reference backend."""
    task, measurement = _tiny(4)
    v = np.zeros(task.n_examples)
    v[[0, 2]] = 1.0
    folder = tmp_path_factory.mktemp("order_check")
    check = order_check(task, measurement, v, ORDER, backend="numba-cpu",
                        retrain_backend="reference", checkpoint=folder, progress=False)
    return task, measurement, v, folder, check


def test_coefficients_reach_order_100_with_size(real_run):
    check = real_run[-1]
    scale = envelope(check.coefficients)
    # the series does not die out: a check of tiny numbers against tiny numbers proves nothing
    assert scale[-1] > 1e-8 and np.abs(check.coefficients[-1]) > 1e-9
    assert 0.5 < check.radius() < 2.0
    assert np.abs(check.coefficients.imag).max() == 0.0  # a real direction gives a real series


def test_backends_agree_at_every_order(real_run):
    check = real_run[-1]
    assert check.reference_steps == 4  # the checked run itself, no shorter stand-in
    np.testing.assert_array_equal(check.compared, check.coefficients)
    assert check.backends().max() <= TOLERANCE


def test_rescaling_by_a_non_power_of_two(real_run):
    check = real_run[-1]
    mismatch = check.rescaling()
    assert mismatch.max() <= TOLERANCE
    assert mismatch[ORDER // 2:].max() > 0  # 0.7 changed the roundings: not trivially exact


def test_partial_sums_match_retraining(real_run):
    check = real_run[-1]
    assert check.failures(backend_tolerance=TOLERANCE, rescaling_tolerance=TOLERANCE) == []
    residuals = np.abs(check.residuals()[:, -1])
    inside = check.weights < 0.8 * check.radius()
    assert np.all(residuals[inside] <= 1e-13)  # truncation far below rounding there
    resolution = check.resolution()
    # (b) pins every coefficient to 1% up to order 40, to 1e-6 up to order 10, but says
    # nothing about the top orders: their terms are below the residual at every weight
    assert resolution[:41].max() <= 1e-2 and resolution[:11].max() <= 1e-6
    assert resolution[ORDER] > 1


def _perturbed(values, r, relative):
    changed = np.array(values, copy=True)
    changed[r] += relative * envelope(values)[r]
    return changed


def test_a_wrong_order_100_coefficient_is_caught(real_run):
    check = real_run[-1]
    changed = _perturbed(check.coefficients, ORDER, 1e-9)
    wrong = dataclasses.replace(check, coefficients=changed, compared=changed)
    failures = wrong.failures(backend_tolerance=TOLERANCE, rescaling_tolerance=TOLERANCE)
    assert [f[:13] for f in failures] == ["(a) backends:", "(c) rescaling"]
    assert all(f"at order {ORDER}" in f for f in failures)


def test_retraining_catches_a_wrong_order_30_coefficient_but_not_order_100(real_run):
    check = real_run[-1]
    wrong = dataclasses.replace(check, coefficients=_perturbed(check.coefficients, 30, 1e-2),
                                compared=None, reference=None)
    assert any(f.startswith("(b)") for f in wrong.failures(rescaling_tolerance=1.0))
    top = dataclasses.replace(check, coefficients=_perturbed(check.coefficients, ORDER, 1e-2),
                              compared=None, reference=None)
    assert top.failures(rescaling_tolerance=1.0) == []  # (b)'s blind spot: (a) and (c) cover it


def test_checkpoint_resumes_without_recomputing(real_run):
    task, measurement, v, folder, check = real_run
    start = time.monotonic()
    again = order_check(task, measurement, v, ORDER, backend="numba-cpu",
                        retrain_backend="reference", checkpoint=folder, progress=False)
    assert time.monotonic() - start < 2.0
    for name in ("coefficients", "scaled", "reference", "truths"):
        np.testing.assert_array_equal(getattr(again, name), getattr(check, name))


def test_complex_direction_of_fig1():
    """Fig. 1's directions are complex psi_j: checks (a) and (c) only (no retraining at complex
    down-weights)."""
    task, measurement = _tiny(2)
    psi = random_direction(0, 0, task.n_examples)
    check = order_check(task, measurement, psi, ORDER, backend="numba-cpu", progress=False)
    assert check.truths is None and check.resolution() is None
    assert np.all(np.abs(check.coefficients[1:].imag) > 1e-3 * envelope(check.coefficients)[1:])
    assert check.backends().max() <= TOLERANCE and check.rescaling().max() <= TOLERANCE
    assert check.failures(backend_tolerance=TOLERANCE, rescaling_tolerance=TOLERANCE) == []


def test_bad_arguments(real_run):
    task, measurement, v, _, _ = real_run
    with pytest.raises(ValueError, match="power of two"):
        order_check(task, measurement, v, 3, scale=0.5, progress=False)
    with pytest.raises(ValueError, match="n = 4 entries"):
        order_check(task, measurement, v[:3], 3, progress=False)
    with pytest.raises(ValueError, match="finite"):
        order_check(task, measurement, np.full(4, np.nan), 3, progress=False)
