"""The array-traced microgpt step against the scalar-traced one and the eager reference.

Three independent computations of the same training (DESIGN §5): the array step
(frontends/microgpt_array.py: take, einsum, row-wise reductions), the scalar-traced step
(frontends/microgpt.py: one node per scalar gate, one-hot lookups) and tests/eager_microgpt.py
(plain floats, variable-length names, no padding). They differ only in float64 summation order,
so after 20 steps they agree to 1e-12; the order-3 Taylor runs of the two circuits agree to
1e-12 in every coefficient, and their first coefficient matches central differences of real
retraining. Rows of each batch: plain training and training with down-weights.
"""

import numpy as np
import pytest

from circuitsketch.backends.reference import evaluate, run_program
from circuitsketch.frontends.microgpt import build_task
from circuitsketch.frontends.microgpt_array import build_task_array, trace_step_program_array
from circuitsketch.frontends.microgpt_data import MicrogptConfig
from circuitsketch.ir.ops import Op
from circuitsketch.passes.taylor import taylor
from eager_microgpt import loss_eager, train_eager

#: small enough that the scalar-traced step (14k nodes, vs 31k at n_embd 8) runs 20 order-3
#: steps on the reference interpreter in seconds; still two heads and a truncated long name
SMALL = MicrogptConfig(n_embd=4, n_head=2, block_size=8, mlp_width=16)
N_STEPS = 20
ORDER = 3


def _down_weights() -> np.ndarray:
    """Row 0: plain training; row 1: three steps deleted, one half-weighted."""
    x = np.zeros((2, N_STEPS))
    x[1, [1, 5, 6]] = 1.0
    x[1, 10] = 0.5
    return x


@pytest.fixture(scope="module")
def tasks():
    return build_task_array(SMALL, n_steps=N_STEPS), build_task(SMALL, n_steps=N_STEPS)


def _close(got: np.ndarray, want: np.ndarray, what: str, tol: float = 1e-12) -> None:
    # float64 rounding of differently ordered sums, relative to the size of the values
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale, err_msg=what)


def _retrain(task, x: np.ndarray, batch: int) -> dict:
    return run_program(task.program, task.init, data=task.data, x=x,
                       example_ids=task.example_ids, batch=batch)


def test_state_is_interchangeable_with_the_scalar_version(tasks):
    array, scalar = tasks
    assert array.program.carry == scalar.program.carry
    assert {n: a.shape for n, a in array.init.items()} == {n: a.shape for n, a in scalar.init.items()}
    for name in array.init:
        np.testing.assert_array_equal(array.init[name], scalar.init[name])


def test_real_steps_match_scalar_step_and_eager_reference(tasks):
    array, scalar = tasks
    x = _down_weights()
    got, want = _retrain(array, x, 2), _retrain(scalar, x, 2)
    for name in array.state_names:
        _close(got[name], want[name], name)
    data = array.microgpt
    for row in range(2):
        eager = train_eager(data.init_params, data.names, array.config, data.chars,
                            down_weights=list(x[row]), n_steps=N_STEPS)
        for name in array.param_names:
            _close(got[name][row], eager[name], f"{name}, row {row}")
    moved = max(np.abs(got[n][0] - array.init[n]).max() for n in array.param_names)
    deleted = max(np.abs(got[n][1] - got[n][0]).max() for n in array.param_names)
    assert moved > 1e-3 and deleted > 1e-4


def _series_weights(rng: np.random.Generator) -> np.ndarray:
    """x = x0 + z·psi, psi random complex unit directions; x0 = the rows of _down_weights."""
    psi = rng.normal(size=(2, N_STEPS)) + 1j * rng.normal(size=(2, N_STEPS))
    x = np.zeros((2, ORDER + 1, N_STEPS), dtype=complex)
    x[:, 0] = _down_weights()
    x[:, 1] = psi / np.linalg.norm(psi, axis=1, keepdims=True)
    return x


def test_order_3_steps_match_scalar_taylor_and_differences(tasks):
    array, scalar = tasks
    x = _series_weights(np.random.default_rng(11))
    got = run_program(taylor(array.program, ORDER), array.init, data=array.data, x=x,
                      example_ids=array.example_ids, batch=2)
    want = run_program(taylor(scalar.program, ORDER), scalar.init, data=scalar.data, x=x,
                       example_ids=scalar.example_ids, batch=2)
    real = _retrain(array, x[:, 0].real, 2)
    for name in array.state_names:
        _close(got[name], want[name], name)
        _close(got[name][:, 0].real, real[name], f"{name}, constant term")
    assert max(np.abs(got[n][:, ORDER]).max() for n in array.param_names) > 1e-8
    # first coefficient = directional derivative: central differences along Re psi and Im psi
    h, psi = 1e-4, x[:, 1]
    diffs = [(_retrain(array, x[:, 0].real + h * d, 2)["wte"]
              - _retrain(array, x[:, 0].real - h * d, 2)["wte"]) / (2 * h)
             for d in (psi.real, psi.imag)]
    _close(got["wte"][:, 1], diffs[0] + 1j * diffs[1], "d wte / dz", tol=1e-6)


def test_loss_measurement_matches_eager_and_scalar(tasks):
    array, scalar = tasks
    params = {n: array.init[n] for n in array.param_names}
    for name in ("max", "ava", "christopher"):  # christopher is cut to block_size positions
        got = evaluate(array.loss_measurement(name), params)["loss"]
        assert got == pytest.approx(loss_eager(params, name, SMALL, array.microgpt.chars), abs=1e-12)
        assert got == pytest.approx(evaluate(scalar.loss_measurement(name), params)["loss"],
                                    abs=1e-12)


def test_measurement_rejects_unknown_characters_and_empty_names(tasks):
    array, _ = tasks
    with pytest.raises(ValueError, match="Q"):
        array.loss_measurement("Qx")
    with pytest.raises(ValueError, match="empty"):
        array.loss_measurement("")


def _operations(circuit) -> list:
    # constants can merge differently (cse) when a width-derived number equals another constant
    return [e.op for e in circuit.eqns if e.op is not Op.CONST]


def test_step_node_count_does_not_grow_with_width():
    """At most 1,000 nodes for the paper's model, and the same operations 4x wider."""
    default = trace_step_program_array(MicrogptConfig(), 27, 1000).step
    wide = trace_step_program_array(MicrogptConfig(n_embd=64, mlp_width=256), 27, 1000).step
    assert len(default) <= 1000
    assert _operations(wide) == _operations(default)
    assert abs(len(wide) - len(default)) <= 2
    assert wide.input_shapes["layer0.mlp_fc1"] == (256, 64)
