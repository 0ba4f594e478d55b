"""The series contraction kernel (backends/array_contract.py) against the reference interpreter.

``dg_ss`` is written per order: one result row at a time below ``ROWS_FROM`` coefficients,
``ROWS`` rows at a time from there (with a remainder when M is not a multiple), and it skips
the products with the imaginary parts of the constant terms (which are zero). Every path is
compared with the reference's einsum Cauchy product, over several directions and batch
dimensions; and a series input with a complex constant term is refused by every backend,
since the kernel's shortcut would otherwise give wrong numbers silently.
"""

from __future__ import annotations

import numpy as np
import pytest

from circuitsketch.backends import array_contract, array_engine, numba_cpu, reference
from circuitsketch.backends.checks import InputError
from circuitsketch.ir import Builder, Op, make_attrs, verify
from circuitsketch.passes.taylor import taylor


def _contraction(lhs: tuple, rhs: tuple, contract, batch):
    b = Builder()
    x = b.input_array("x", lhs)
    w = b.input_array("w", rhs)
    y = b.add(Op.DOT_GENERAL, (x, w), make_attrs(contract=contract, batch=batch),
              loc="model.py:7")
    b.output("y", [b.add(Op.TANH, (y,))])  # a nonlinear reader: the result's a_0 must be real
    return verify(b.build())


def _series(rng, batch: int, k1: int, shape: tuple) -> np.ndarray:
    value = (rng.normal(size=(batch, k1) + shape) + 1j * rng.normal(size=(batch, k1) + shape))
    value[:, 0] = value[:, 0].real * 0.3
    return value * 0.5


CASES = [  # lhs shape, rhs shape, ((lhs contract, rhs contract), (lhs batch, rhs batch))
    ((6, 5), (5, 7), ((1,), (0,)), ((), ())),          # matmul, M = 6: a 4-row tile + remainder
    ((3, 4, 5), (3, 5, 2), ((2,), (1,)), ((0,), (0,))),  # batched matmul
    ((9, 3), (9, 4), ((0,), (0,)), ((), ())),          # x^T w (a transposed operand)
    ((2, 3, 4), (2, 4, 5), ((0, 2), (0, 1)), ((), ())),  # lhs contracted axes apart: a gather
    ((5, 3, 2), (2, 4, 3), ((1,), (2,)), ((2,), (0,))),  # batch axis last: strided groups
]


# orders 6 and 9 straddle ROWS_FROM (one-row and tiled kernels); 6, 9 and 100 are also used
# by test_array_fusion and test_high_order, so the suite compiles no extra kernel library
@pytest.mark.parametrize("order", [0, 1, 3, 6, 9, 100])
@pytest.mark.parametrize("lhs, rhs, contract, batch", CASES)
def test_series_contraction_matches_the_reference(order, lhs, rhs, contract, batch):
    circuit = taylor(_contraction(lhs, rhs, contract, batch), order, {"x", "w"})
    rng = np.random.default_rng(order)
    inputs = {"x": _series(rng, 3, order + 1, lhs), "w": _series(rng, 3, order + 1, rhs)}
    if order == 0:
        inputs = {name: value[:, 0].real for name, value in inputs.items()}
    want = reference.evaluate(circuit, inputs, batch=3)["y"]
    got = numba_cpu.evaluate(circuit, inputs, batch=3)["y"]
    scale = np.abs(want).max(axis=tuple(i for i in range(want.ndim) if i != 1), keepdims=True)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13 * float(scale.max()))


@pytest.mark.parametrize("order", [0, 3])
def test_a_transpose_read_by_contractions_is_read_in_place(order):
    """y = tanh(x @ w.T) @ w + x: w is read transposed and plain by two dot_generals; the plan
    has no gather for the transpose, and the numbers are the reference's."""
    b = Builder()
    x, w = b.input_array("x", (3, 4)), b.input_array("w", (5, 4))
    wt = b.add(Op.TRANSPOSE, (w,), make_attrs(perm=(1, 0)))
    mm = make_attrs(contract=((1,), (0,)), batch=((), ()))
    h = b.add(Op.DOT_GENERAL, (x, wt), mm)
    b.output("y", [b.add(Op.ADD, (b.add(Op.DOT_GENERAL, (b.add(Op.TANH, (h,)), w), mm), x))])
    circuit = taylor(verify(b.build()), order, {"x", "w"})
    rng = np.random.default_rng(1)
    inputs = {"x": _series(rng, 2, order + 1, (3, 4)), "w": _series(rng, 2, order + 1, (5, 4))}
    if order == 0:
        inputs = {name: value[:, 0].real for name, value in inputs.items()}
    np.testing.assert_allclose(numba_cpu.evaluate(circuit, inputs, batch=2)["y"],
                               reference.evaluate(circuit, inputs, batch=2)["y"], rtol=1e-12,
                               atol=1e-12)
    kernels = [e.kernel for e in array_engine.plan(circuit).entries]
    assert not [k for k in kernels if k.startswith("gather")], kernels


def test_the_tiled_path_is_the_one_compiled_from_rows_from_on():
    assert 6 + 1 < array_contract.ROWS_FROM <= 9 + 1  # the orders tested above straddle it
    low = array_contract.dg_ss_source(array_contract.ROWS_FROM - 1)
    high = array_contract.dg_ss_source(array_contract.ROWS_FROM)
    assert f"if rows == {array_contract.ROWS}:" in high and "if rows ==" not in low


@pytest.mark.parametrize("backend", [reference, numba_cpu])
def test_a_complex_constant_term_in_a_series_input_is_refused(backend):
    circuit = taylor(_contraction((2, 3), (3, 2), ((1,), (0,)), ((), ())), 2, {"x", "w"})
    rng = np.random.default_rng(0)
    inputs = {"x": _series(rng, 1, 3, (2, 3))[0], "w": _series(rng, 1, 3, (3, 2))[0]}
    inputs["x"][0, 1, 2] += 0.25j
    with pytest.raises(InputError, match=r"input 'x'.*constant term.*index \(0, 1, 2\).*not real"):
        backend.evaluate(circuit, inputs)


@pytest.mark.parametrize("seeds", [{"x"}, {"w"}])  # dg_sr and dg_rs: one real operand
@pytest.mark.parametrize("lhs, rhs, contract, batch", CASES)
def test_contraction_with_a_real_operand_matches_the_reference(seeds, lhs, rhs, contract, batch):
    circuit = taylor(_contraction(lhs, rhs, contract, batch), 3, seeds)
    rng = np.random.default_rng(7)
    inputs = {name: (_series(rng, 3, 4, shape) if name in seeds
                     else rng.normal(size=(3,) + shape) * 0.5)
              for name, shape in (("x", lhs), ("w", rhs))}
    kinds = {e.kernel for e in array_engine.plan(circuit).entries if e.kernel.startswith("dg_")}
    assert kinds == {"dg_sr" if seeds == {"x"} else "dg_rs"}
    np.testing.assert_allclose(numba_cpu.evaluate(circuit, inputs, batch=3)["y"],
                               reference.evaluate(circuit, inputs, batch=3)["y"], rtol=1e-12,
                               atol=1e-13)
