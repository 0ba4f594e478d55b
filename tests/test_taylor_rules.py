"""Every Taylor rule (``passes/taylor.py`` SERIES_RULES) against high-precision references.

A case is one op applied to operands that are series a(z) = a_0 + a_1 z + ... (real a_0; real or
complex higher coefficients) or plain reals, traced into a one-node circuit, lowered with
``taylor`` and run by the reference interpreter, so the pass's typing is exercised too.

* k = 1..8, sympy. The reference coefficients of F(a(z)) are sympy's Taylor expansion of F about
  the real point a_0 (exact symbolic derivatives F^(n)(a_0)/n!, ``evalf(40)``) composed with the
  perturbation: sum_n F_n (a(z) - a_0)^n, in truncated polynomial arithmetic at 40 digits.
  ``test_composition_equals_sympy_series_of_the_composite`` checks that this is exactly what
  ``sympy.series(F(a0 + a1 z + a2 z^2), z)`` gives; ``series`` on the composite is used only
  there because on degree-8 complex-coefficient inputs it takes minutes per case.
  Tolerance: |ours - ref| <= 1e-12 |ref| + 1e-14 max_j |ref_j|. Double rounding is 1.1e-16 per
  operation and an O(k^2) recurrence at k <= 8 sums < 100 terms; the rest is headroom for the
  conditioning of random points (measured worst: ~1e-15).
* k = 60, mpmath.taylor at 50 digits of the composite function (no blow-up): every coefficient
  within 1e-11 relative. For erf and GELU, mpmath's erf at the working precision mpmath.taylor
  needs for order 60 costs ~13 s per case, so their reference is mpmath.taylor of the derivative
  d/dz F(a(z)) = F'(a(z)) a'(z) (only exp), integrated termwise (GELU: times a(z) afterwards).
  Near a singularity (a_0 = 0.2, |a_j| ~ 1, coefficients growing to 1e36) pow/log/div keep
  the same relative accuracy.

``python tests/test_taylor_rules.py`` prints the largest relative error per rule and order range.
"""

from __future__ import annotations

import functools
import sys
import zlib
from dataclasses import dataclass, field
from typing import Callable

import mpmath as mp
import numpy as np
import pytest
import sympy as sp

import circuitsketch as cs
from circuitsketch.ir.ops import ELEMENTWISE_OPS
from circuitsketch.ir import Builder, Op, make_attrs

LOW_ORDER, HIGH_ORDER = 8, 60
X, Z = sp.Symbol("x"), sp.Symbol("z")
GELU_X = X * (1 + sp.erf(X / sp.sqrt(2))) / 2


# ---------------------------------------------------------------- reference series arithmetic

class MpSeries:
    """Truncated series with mpmath coefficients: the k <= 8 reference arithmetic."""

    def __init__(self, coeffs) -> None:
        self.c = [mp.mpmathify(c) for c in coeffs]

    @property
    def const(self) -> float:
        return float(mp.re(self.c[0]))

    def constant(self, value: float) -> "MpSeries":
        return MpSeries([value] + [0] * (len(self.c) - 1))

    def __add__(self, other: "MpSeries") -> "MpSeries":
        return MpSeries([a + b for a, b in zip(self.c, other.c)])

    def __sub__(self, other: "MpSeries") -> "MpSeries":
        return MpSeries([a - b for a, b in zip(self.c, other.c)])

    def __neg__(self) -> "MpSeries":
        return MpSeries([-a for a in self.c])

    def __mul__(self, other: "MpSeries") -> "MpSeries":
        return MpSeries([mp.fsum(self.c[i] * other.c[j - i] for i in range(j + 1))
                         for j in range(len(self.c))])

    def apply(self, expr: sp.Expr) -> "MpSeries":
        """F(a(z)) for F = expr(x): sympy's Taylor coefficients of F about a_0, composed."""
        n = len(self.c) - 1
        taylor = _taylor_about(expr, self.const, n)
        perturbation = MpSeries([0] + self.c[1:])
        power, total = self.constant(1.0), self.constant(0.0)
        for f_n in taylor:
            total = total + MpSeries([f_n * c for c in power.c])
            power = power * perturbation
        return total


def _taylor_about(expr: sp.Expr, x0: float, n: int) -> list:
    point = sp.Float(x0, 40)  # the double exactly
    return [mp.mpf(sp.N(d.subs(X, point), 40)) for d in _derivatives(expr, n)]


@functools.cache
def _derivatives(expr: sp.Expr, n: int) -> list[sp.Expr]:
    return [sp.diff(expr, X, j) / sp.factorial(j) for j in range(n + 1)]


def _poly(coeffs, z):
    return mp.polyval(list(reversed(coeffs)), z)


def _mp_taylor(fn: Callable, operands: list[list], k: int) -> list:
    return mp.taylor(lambda z: fn(*(_poly(c, z) for c in operands)), 0, k)


def _integrated(derivative: Callable, a: list, value0, k: int) -> list:
    """Coefficients of F(a(z)) from F(a_0) and mpmath.taylor of F'(a(z)) a'(z)."""
    slope = [j * a[j] for j in range(1, len(a))]
    rate = mp.taylor(lambda z: derivative(_poly(a, z)) * _poly(slope, z), 0, k - 1)
    return [value0] + [rate[j - 1] / j for j in range(1, k + 1)]


def _erf_high(a: list, k: int) -> list:
    return _integrated(lambda w: 2 / mp.sqrt(mp.pi) * mp.exp(-w * w), a, mp.erf(mp.re(a[0])), k)


def _gelu_high(a: list, k: int) -> list:
    cdf = _integrated(mp.npdf, a, mp.ncdf(mp.re(a[0])), k)
    return (MpSeries(a) * MpSeries(cdf)).c


# ---------------------------------------------------------------- the cases

@dataclass(frozen=True)
class RuleCase:
    """``op`` on operands of ``kinds`` ('s' series, 'r' real) whose constant terms lie in
    ``domains``. ``exact`` builds the k <= 8 reference from MpSeries operands; ``pointwise`` is the
    mpmath function for k = 60 (``high`` replaces mpmath.taylor of it where given)."""

    name: str
    op: Op
    kinds: str
    domains: tuple[tuple[float, float], ...]
    exact: Callable
    pointwise: Callable | None = None
    high: Callable | None = None
    attrs: dict = field(default_factory=dict)

    @property
    def analytic(self) -> bool:
        return self.pointwise is not None or self.high is not None


WIDE, POSITIVE, NONZERO_NEG = (-1.5, 1.5), (0.5, 2.0), (-2.0, -0.5)
ABOVE, BELOW = (0.5, 1.0), (-1.0, -0.5)


def _unary(name, op, expr, pointwise=None, domain=WIDE, high=None, **attrs) -> RuleCase:
    return RuleCase(name, op, "s", (domain,), lambda a: a.apply(expr), pointwise, high, attrs)


def _pow(p, exact_p, domain) -> RuleCase:
    exponent = int(p) if float(p).is_integer() else mp.mpf(p)
    return _unary(f"pow {p}", Op.POW, X ** exact_p, lambda w: mp.power(w, exponent), domain,
                  p=float(p))


def _constant(compare: Callable) -> Callable:
    return lambda a, b: a.constant(float(compare(a.const, b.const)))


CASES = [
    RuleCase("add", Op.ADD, "ss", (WIDE, WIDE), lambda a, b: a + b, lambda a, b: a + b),
    RuleCase("add sr", Op.ADD, "sr", (WIDE, WIDE), lambda a, b: a + b, lambda a, b: a + b),
    RuleCase("sub", Op.SUB, "ss", (WIDE, WIDE), lambda a, b: a - b, lambda a, b: a - b),
    RuleCase("sub rs", Op.SUB, "rs", (WIDE, WIDE), lambda a, b: a - b, lambda a, b: a - b),
    RuleCase("neg", Op.NEG, "s", (WIDE,), lambda a: -a, lambda a: -a),
    RuleCase("mul", Op.MUL, "ss", (WIDE, WIDE), lambda a, b: a * b, lambda a, b: a * b),
    RuleCase("mul rs", Op.MUL, "rs", (WIDE, WIDE), lambda a, b: a * b, lambda a, b: a * b),
    RuleCase("div", Op.DIV, "ss", (WIDE, NONZERO_NEG), lambda a, b: a * b.apply(1 / X),
             lambda a, b: a / b),
    RuleCase("div rs", Op.DIV, "rs", (WIDE, POSITIVE), lambda a, b: a * b.apply(1 / X),
             lambda a, b: a / b),
    RuleCase("div sr", Op.DIV, "sr", (WIDE, NONZERO_NEG), lambda a, b: a * b.apply(1 / X),
             lambda a, b: a / b),
    _pow(2, sp.Integer(2), WIDE),
    _pow(3, sp.Integer(3), WIDE),
    _pow(-1, sp.Integer(-1), NONZERO_NEG),
    _pow(0.5, sp.Rational(1, 2), POSITIVE),
    _pow(-0.5, sp.Rational(-1, 2), POSITIVE),
    _pow(1.5, sp.Rational(3, 2), POSITIVE),
    _unary("sqrt", Op.SQRT, sp.sqrt(X), mp.sqrt, POSITIVE),
    _unary("exp", Op.EXP, sp.exp(X), mp.exp),
    _unary("log", Op.LOG, sp.log(X), mp.log, POSITIVE),
    _unary("tanh", Op.TANH, sp.tanh(X), mp.tanh),
    _unary("tanh saturated", Op.TANH, sp.tanh(X), mp.tanh, (8.0, 12.0)),  # sech^2 a_0 ~ 1e-8
    _unary("erf", Op.ERF, sp.erf(X), high=_erf_high),
    _unary("gelu", Op.GELU, GELU_X, high=_gelu_high),
    _unary("gelu lower tail", Op.GELU, GELU_X, high=_gelu_high, domain=(-9.0, -7.0)),  # Phi ~ 1e-15
    RuleCase("sum", Op.SUM, "srs", (WIDE,) * 3, lambda a, b, c: a + b + c,
             lambda a, b, c: a + b + c),
    # pairs (u0, u3), (u1, u4), (u2, u5) are series*series, real*series, real*real
    RuleCase("dot", Op.DOT, "srrssr", (WIDE,) * 6,
             lambda a, b, c, d, e, f: a * d + b * e + c * f,
             lambda a, b, c, d, e, f: a * d + b * e + c * f),
    RuleCase("relu a0>0", Op.RELU, "s", (ABOVE,), lambda a: a),
    RuleCase("relu a0<0", Op.RELU, "s", (BELOW,), lambda a: a.constant(0.0)),
    RuleCase("max a0>b0", Op.MAX, "ss", (ABOVE, BELOW), lambda a, b: a),
    RuleCase("max a0<b0", Op.MAX, "sr", (BELOW, ABOVE), lambda a, b: b),
    RuleCase("select c=1", Op.SELECT, "rss", ((1.0, 1.0), WIDE, WIDE), lambda c, a, b: a),
    RuleCase("select c=0", Op.SELECT, "rsr", ((0.0, 0.0), WIDE, WIDE), lambda c, a, b: b),
    RuleCase("select series c", Op.SELECT, "sss", (ABOVE, WIDE, WIDE), lambda c, a, b: a),
    RuleCase("stop_gradient", Op.STOP_GRADIENT, "s", (WIDE,), lambda a: a.constant(a.const)),
    RuleCase("lt", Op.LT, "ss", (BELOW, ABOVE), _constant(lambda u, v: u < v)),
    RuleCase("le", Op.LE, "sr", (ABOVE, BELOW), _constant(lambda u, v: u <= v)),
    RuleCase("gt", Op.GT, "ss", (ABOVE, BELOW), _constant(lambda u, v: u > v)),
    RuleCase("ge", Op.GE, "rs", (BELOW, ABOVE), _constant(lambda u, v: u >= v)),
    RuleCase("eq", Op.EQ, "ss", (ABOVE, BELOW), _constant(lambda u, v: u == v)),
]
CASE_BY_NAME = {case.name: case for case in CASES}


def test_cases_cover_every_rule():
    # elementwise rules here; the array ops' rules are tested in tests/test_array_semantics.py
    assert {case.op for case in CASES} == set(cs.passes.SERIES_RULES) & ELEMENTWISE_OPS


# ---------------------------------------------------------------- running a rule through the pass

@functools.cache
def lowered_rule(name: str, order: int):
    case = CASE_BY_NAME[name]
    b = Builder()
    operands = [b.input(f"u{i}", ())[0] for i in range(len(case.kinds))]
    b.output("y", [b.add(case.op, tuple(operands), make_attrs(**case.attrs))], ())
    seeds = {f"u{i}" for i, kind in enumerate(case.kinds) if kind == "s"}
    return cs.taylor(b.build(), order=order, seeds=seeds)


def run_rule(case: RuleCase, operands: list[np.ndarray], order: int) -> np.ndarray:
    """The rule's k+1 coefficients for operands given as coefficient arrays (reals: length 1)."""
    inputs = {f"u{i}": (u[: order + 1] if kind == "s" else u[0].real)
              for i, (kind, u) in enumerate(zip(case.kinds, operands))}
    out = np.asarray(cs.evaluate(lowered_rule(case.name, order), inputs)["y"])
    return out if out.ndim else np.r_[out, np.zeros(order)]  # a real result: zero higher terms


def draw_operands(case: RuleCase, variant: str, k: int, decay: float) -> list[np.ndarray]:
    """Constant terms in the case's domains; a_j = u_j decay^j, u_j uniform (complex: in a square)."""
    rng = np.random.default_rng(zlib.crc32(f"{case.name}/{variant}/{k}".encode()))
    operands = []
    for kind, (lo, hi) in zip(case.kinds, case.domains):
        coeffs = rng.uniform(-1, 1, k + 1).astype(complex)
        if variant == "complex":
            coeffs += 1j * rng.uniform(-1, 1, k + 1)
        coeffs *= decay ** np.arange(k + 1)
        coeffs[0] = rng.uniform(lo, hi)
        operands.append(coeffs if kind == "s" else coeffs[:1].real.astype(complex))
    return operands


def _mp_lists(operands: list[np.ndarray], k: int) -> list[list]:
    return [[mp.mpc(c.real, c.imag) for c in u] + [0] * (k + 1 - len(u)) for u in operands]


def low_order_errors(case: RuleCase, variant: str) -> list[np.ndarray]:
    """Per k = 1..8: |ours - sympy reference| / (|ref| + 1e-2 max|ref|) for coefficients 0..k."""
    operands = draw_operands(case, variant, LOW_ORDER, decay=0.7)
    with mp.workdps(40):
        reference = case.exact(*(MpSeries(c) for c in _mp_lists(operands, LOW_ORDER)))
        ref = np.array([complex(c) for c in reference.c])
    errors = []
    for k in range(1, LOW_ORDER + 1):
        ours = run_rule(case, operands, k)
        scale = np.abs(ref[: k + 1]) + 1e-2 * np.abs(ref).max() + np.finfo(float).tiny
        errors.append(np.abs(ours - ref[: k + 1]) / scale)
    return errors


def high_order_errors(case: RuleCase, operands: list[np.ndarray]) -> np.ndarray:
    """|ours - mpmath| / |mpmath| per coefficient at k = 60."""
    with mp.workdps(50):
        lists = _mp_lists(operands, HIGH_ORDER)
        if case.high is not None:
            reference = case.high(*lists, HIGH_ORDER)
        else:
            reference = _mp_taylor(case.pointwise, lists, HIGH_ORDER)
        ref = np.array([complex(c) for c in reference])
    ours = run_rule(case, operands, HIGH_ORDER)
    return np.abs(ours - ref) / np.abs(ref)


# ---------------------------------------------------------------- tests

@pytest.mark.parametrize("variant", ["real", "complex"])
@pytest.mark.parametrize("name", list(CASE_BY_NAME))
def test_rule_matches_sympy_series_for_orders_1_to_8(name, variant):
    for k, error in enumerate(low_order_errors(CASE_BY_NAME[name], variant), start=1):
        assert error.max() < 1e-12, f"{name} {variant} k={k}: relative errors {error}"


@pytest.mark.parametrize("name", [case.name for case in CASES if case.analytic])
def test_rule_stays_accurate_at_order_60(name):
    case = CASE_BY_NAME[name]
    error = high_order_errors(case, draw_operands(case, "complex", HIGH_ORDER, decay=0.6))
    assert error.max() < 1e-11, f"{name}: worst relative error {error.max():.2e} at a_{error.argmax()}"


SINGULAR_CASES = ["div", "div rs", "log", "sqrt", "pow -1", "pow -0.5", "pow 1.5"]


def near_singularity_errors(case: RuleCase) -> np.ndarray:
    """a_0 = 0.2 with |a_j| ~ 1: radius of convergence ~0.2, coefficients grow like 5^j."""
    operands = draw_operands(case, "complex", HIGH_ORDER, decay=1.0)
    operands[1 if case.op is Op.DIV else 0][0] = 0.2  # the divisor, or the only operand
    return high_order_errors(case, operands)


@pytest.mark.parametrize("name", SINGULAR_CASES)
def test_recurrences_near_a_singularity_keep_relative_accuracy(name):
    error = near_singularity_errors(CASE_BY_NAME[name])
    assert error.max() < 1e-11, f"{name}: worst relative error {error.max():.2e} at a_{error.argmax()}"


def test_non_analytic_rules_copy_the_chosen_branch_exactly_at_order_60():
    for case in CASES:
        if case.analytic:
            continue
        operands = draw_operands(case, "complex", HIGH_ORDER, decay=1.0)
        with mp.workdps(20):
            expected = case.exact(*(MpSeries(c) for c in _mp_lists(operands, HIGH_ORDER)))
        np.testing.assert_array_equal(run_rule(case, operands, HIGH_ORDER),
                                      [complex(c) for c in expected.c], err_msg=case.name)


@pytest.mark.parametrize("expr, ours", [
    (sp.exp(X), "exp"), (sp.log(X), "log"), (sp.tanh(X), "tanh"), (sp.erf(X), "erf"),
    (GELU_X, "gelu"), (X ** sp.Rational(3, 2), "pow 1.5"), (1 / sp.sqrt(X), "pow -0.5"),
])
def test_composition_equals_sympy_series_of_the_composite(expr, ours):
    """sympy.series(F(a0 + a1 z + a2 z^2), z) directly, k = 4, complex a1, a2: equals the
    composition reference and the pass."""
    k = 4
    a = [sp.Rational(7, 8), sp.Rational(-3, 8) + sp.I / 4, sp.Rational(1, 4) - sp.I / 8]
    direct = sp.series(expr.subs(X, a[0] + a[1] * Z + a[2] * Z ** 2), Z, 0, k + 1).removeO()
    series = np.array([complex(c) for c in a] + [0] * (k - 2))  # dyadic: exact in binary
    with mp.workdps(40):
        expected = [sp.N(direct.coeff(Z, j), 30) for j in range(k + 1)]
        expected = [mp.mpc(sp.re(c), sp.im(c)) for c in expected]
        composed = MpSeries([mp.mpc(c.real, c.imag) for c in series]).apply(expr)
        assert max(abs(c - e) for c, e in zip(composed.c, expected)) < 1e-27
    np.testing.assert_allclose(run_rule(CASE_BY_NAME[ours], [series], k),
                               [complex(c) for c in expected], rtol=1e-13)


# ---------------------------------------------------------------- report

def _report() -> None:
    ranges = {"0-8": slice(0, 9), "9-30": slice(9, 31), "31-60": slice(31, 61)}
    print(f"{'rule':<18} {'sympy k=1..8':>13} " + " ".join(f"{'k=60 a_' + r:>13}" for r in ranges))
    for case in CASES:
        low = max(max(e.max() for e in low_order_errors(case, v)) for v in ("real", "complex"))
        row = f"{case.name:<18} {low:13.1e} "
        if case.analytic:
            high = high_order_errors(case, draw_operands(case, "complex", HIGH_ORDER, decay=0.6))
            row += " ".join(f"{high[s].max():13.1e}" for s in ranges.values())
        print(row)
    print("\nnear a singularity (a_0 = 0.2, |a_j| ~ 1), k = 60")
    for name in SINGULAR_CASES:
        error = near_singularity_errors(CASE_BY_NAME[name])
        print(f"{name:<18} " + " ".join(f"{error[s].max():13.1e}" for s in ranges.values()))


if __name__ == "__main__":
    sys.exit(_report())
