r"""The Taylor pass: rewrite a circuit into truncated-Taylor arithmetic in C[z]/(z^{k+1}).

Seeded inputs move along z (for data deletion, the down-weights x = z * psi); every value that
depends on them becomes a *series* a(z) = a_0 + a_1 z + ... + a_k z^k, stored as the plain
coefficients a_j = f^{(j)}(0) / j! (never j!-scaled: those overflow). Values that do not depend
on a seed stay real. The lowered circuit is the same graph with each node typed real or series
(``: s`` in the text form) and ``order = k``; its meaning is given by ``SERIES_RULES`` below,
one rule per op, each O(k^2):

* linear ops (add, sub, neg, sum, select) act termwise; a real operand is the series (r, 0, ..., 0)
* mul:   c_j = sum_{i<=j} a_i b_{j-i}                       (Cauchy product; dot = sum of these)
* div:   q_j = (a_j - sum_{i=1..j} b_i q_{j-i}) / b_0
* exp:   y_0 = e^{a_0},  y_j = (1/j) sum_{i=1..j} i a_i y_{j-i}
* log:   y_0 = log a_0,  y_j = (a_j - (1/j) sum_{i=1..j-1} i y_i a_{j-i}) / a_0
* pow p: y_0 = a_0^p,    y_j = (1/(j a_0)) sum_{i=1..j} (p i - (j-i)) a_i y_{j-i}
  (sqrt is p = 1/2; non-negative integer p with a_0 = 0 uses repeated multiplication)
* F(a) with known F'(a) series g:  y_j = (1/j) sum_{i=1..j} i a_i g_{j-i}   (``_integrate``):
  tanh (g = 1 - y^2, built alongside y), erf (g = 2/sqrt(pi) exp(-a^2)) and GELU(a) = a Phi(a) with Phi' = exp(-a^2/2)/sqrt(2 pi)
* non-analytic gates (relu, max, comparisons, select) decide their branch on the real constant
  term a_0; at a tie (a_0 exactly on the kink) the function is not analytic and the rule raises
  :class:`KinkError` unless ``ignore_kinks``; comparisons and stop_gradient yield real values
  (zero higher terms), which is exact for microgpt's softmax that subtracts a constant max.

A value here is a complex array ``[k+1, B]`` (B = batch of directions) and a real value a float
array ``[B]``; rules take ``(eqn, k, *operands, ignore_kinks)`` and raise ``DomainError`` for
points outside an op's domain, which the interpreter reports with the node and source line.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..backends.reference import DomainError, std_normal_cdf
from ..ir.circuit import Circuit, Eqn, Program
from ..ir.ops import Op
from ..ir.verify import verify, verify_program


class KinkError(DomainError):
    """A non-analytic gate evaluated exactly at its kink: the series is not defined there."""


SeriesRule = Callable[..., np.ndarray]
SERIES_RULES: dict[Op, SeriesRule] = {}

#: ops whose result is real even when an operand is a series
REAL_RESULT_OPS = frozenset({Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.STOP_GRADIENT})


def is_series(value: np.ndarray) -> bool:
    return value.ndim == 2


def lift(value: np.ndarray, k: int) -> np.ndarray:
    """A real value [B] as the constant series [k+1, B]; series pass through."""
    if is_series(value):
        return value
    out = np.zeros((k + 1, value.shape[-1]), dtype=np.complex128)
    out[0] = value
    return out


def const_term(value: np.ndarray) -> np.ndarray:
    """The real constant term a_0 of a series (the value of the unperturbed run), or a real."""
    return value[0].real if is_series(value) else value


# ---------------------------------------------------------------- registrars (jet style)

def _register(op: Op):
    def wrap(rule: SeriesRule) -> SeriesRule:
        if op in SERIES_RULES:
            raise ValueError(f"two Taylor rules for {op}")
        SERIES_RULES[op] = rule
        return rule
    return wrap


def deflinear(op: Op, combine: Callable[..., np.ndarray]) -> None:
    """Linear ops act on each coefficient: combine the lifted operands termwise."""
    SERIES_RULES[op] = lambda eqn, k, *args, ignore_kinks=False: combine(*(lift(a, k) for a in args))


def defunary(op: Op, series_fn: Callable[[np.ndarray, int], np.ndarray]) -> None:
    """A unary analytic op given by a coefficient recurrence ``series_fn(a, k)``."""
    SERIES_RULES[op] = lambda eqn, k, a, ignore_kinks=False: series_fn(lift(a, k), k)


def defcompare(op: Op, compare: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    """Comparisons read only constant terms and give a real 0/1: zero higher terms."""
    def rule(eqn: Eqn, k: int, a, b, ignore_kinks: bool = False) -> np.ndarray:
        a0, b0 = const_term(a), const_term(b)
        if not ignore_kinks and np.any(a0 == b0) and (is_series(a) or is_series(b)):
            raise KinkError(f"{op.value} of two equal values: the comparison jumps here, so its "
                            "Taylor series is undefined (pass ignore_kinks=True to accept)")
        return compare(a0, b0).astype(np.float64)
    SERIES_RULES[op] = rule


# ---------------------------------------------------------------- recurrences

def mul_series(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cauchy product of two series [k+1, B] (or a series and a real [B], which scales)."""
    if not is_series(a) or not is_series(b):
        return a * b
    k = a.shape[0] - 1
    out = np.zeros(np.broadcast_shapes(a.shape, b.shape), dtype=np.complex128)
    for j in range(k + 1):
        out[j] = np.sum(a[: j + 1] * b[j::-1], axis=0)
    return out


def div_series(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if not is_series(b):
        if np.any(b == 0):
            raise DomainError("division by zero")
        return a / b
    if np.any(b[0] == 0):
        raise DomainError("division by a series whose constant term is zero")
    a = lift(a, b.shape[0] - 1)
    k = b.shape[0] - 1
    q = np.zeros(np.broadcast_shapes(a.shape, b.shape), dtype=np.complex128)
    for j in range(k + 1):
        q[j] = (a[j] - np.sum(b[1: j + 1] * q[j - 1:: -1][:j], axis=0)) / b[0]
    return q


def exp_series(a: np.ndarray, k: int) -> np.ndarray:
    y = np.zeros_like(a)
    y[0] = np.exp(a[0])
    scaled = a * np.arange(k + 1)[:, None]  # i * a_i
    for j in range(1, k + 1):
        y[j] = np.sum(scaled[1: j + 1] * y[j - 1:: -1][:j], axis=0) / j
    return y


def log_series(a: np.ndarray, k: int) -> np.ndarray:
    if np.any(a[0].real <= 0) or np.any(a[0].imag != 0):
        raise DomainError("log of a non-positive constant term")
    y = np.zeros_like(a)
    y[0] = np.log(a[0].real)
    for j in range(1, k + 1):
        i = np.arange(1, j)[:, None]
        y[j] = (a[j] - np.sum(i * y[1:j] * a[j - 1: 0: -1], axis=0) / j) / a[0]
    return y


def pow_series(a: np.ndarray, k: int, p: float) -> np.ndarray:
    integer = float(p).is_integer()
    if integer and p >= 0 and np.any(a[0] == 0):
        return _int_power(a, int(p))
    if np.any(a[0] == 0):
        raise DomainError(f"power {p} of a series whose constant term is zero")
    if not integer and np.any(a[0].real < 0):
        raise DomainError(f"non-integer power {p} of a negative constant term")
    y = np.zeros_like(a)
    y[0] = a[0] ** int(p) if integer else a[0].real ** p
    for j in range(1, k + 1):
        i = np.arange(1, j + 1)[:, None]
        y[j] = np.sum((p * i - (j - i)) * a[1: j + 1] * y[j - 1:: -1][:j], axis=0) / (j * a[0])
    return y


def _int_power(a: np.ndarray, p: int) -> np.ndarray:
    result = lift(np.ones(a.shape[-1]), a.shape[0] - 1)
    base = a
    while p:
        if p & 1:
            result = mul_series(result, base)
        base = mul_series(base, base)
        p >>= 1
    return result


def _integrate(a: np.ndarray, derivative: np.ndarray, y0: np.ndarray) -> np.ndarray:
    """Series of F(a) from F(a_0) and the series of F'(a): y_j = (1/j) sum i a_i g_{j-i}."""
    k = a.shape[0] - 1
    y = np.zeros_like(a)
    y[0] = y0
    for j in range(1, k + 1):
        i = np.arange(1, j + 1)[:, None]
        y[j] = np.sum(i * a[1: j + 1] * derivative[j - 1:: -1][:j], axis=0) / j
    return y


def tanh_series(a: np.ndarray, k: int) -> np.ndarray:
    y = np.zeros_like(a)
    g = np.zeros_like(a)  # g = 1 - y^2 = tanh', built one coefficient behind y
    y[0] = np.tanh(a[0])
    g[0] = 1 - y[0] * y[0]
    for j in range(1, k + 1):
        i = np.arange(1, j + 1)[:, None]
        y[j] = np.sum(i * a[1: j + 1] * g[j - 1:: -1][:j], axis=0) / j
        g[j] = -np.sum(y[: j + 1] * y[j::-1], axis=0)
    return y


def erf_series(a: np.ndarray, k: int) -> np.ndarray:
    derivative = exp_series(mul_series(a, a) * -1.0, k) * (2 / math.sqrt(math.pi))  # erf'(a)
    return _integrate(a, derivative, 2 * std_normal_cdf(a[0].real * math.sqrt(2)) - 1)


def gelu_series(a: np.ndarray, k: int) -> np.ndarray:
    density = exp_series(mul_series(a, a) * -0.5, k) / math.sqrt(2 * math.pi)  # Phi'(a)
    cdf = _integrate(a, density, std_normal_cdf(a[0].real))
    return mul_series(a, cdf)


# ---------------------------------------------------------------- non-analytic gates

def _branch(condition: np.ndarray, a, b, k: int) -> np.ndarray:
    return np.where(condition, lift(a, k), lift(b, k))


def _relu(eqn: Eqn, k: int, a, ignore_kinks: bool = False):
    a0 = const_term(a)
    if not ignore_kinks and np.any(a0 == 0):
        raise KinkError("relu at exactly 0: not analytic there (pass ignore_kinks=True to accept)")
    return _branch(a0 > 0, a, np.zeros_like(a0), k)


def _max(eqn: Eqn, k: int, a, b, ignore_kinks: bool = False):
    a0, b0 = const_term(a), const_term(b)
    if not ignore_kinks and np.any(a0 == b0):
        raise KinkError("max of two equal values: not analytic there (pass ignore_kinks=True)")
    return _branch(a0 >= b0, a, b, k)


def _select(eqn: Eqn, k: int, c, a, b, ignore_kinks: bool = False):
    return _branch(const_term(c) != 0, a, b, k)


def _dot(eqn: Eqn, k: int, *args, ignore_kinks: bool = False):
    half = len(args) // 2
    total = lift(np.zeros(1), k)
    for i in range(half):
        total = total + lift(mul_series(args[i], args[half + i]), k)
    return total


deflinear(Op.ADD, lambda a, b: a + b)
deflinear(Op.SUB, lambda a, b: a - b)
deflinear(Op.NEG, lambda a: -a)
deflinear(Op.SUM, lambda *args: sum(args[1:], args[0]))
SERIES_RULES[Op.MUL] = lambda eqn, k, a, b, ignore_kinks=False: mul_series(a, b)
SERIES_RULES[Op.DOT] = _dot
SERIES_RULES[Op.DIV] = lambda eqn, k, a, b, ignore_kinks=False: div_series(a, b)
SERIES_RULES[Op.POW] = lambda eqn, k, a, ignore_kinks=False: pow_series(lift(a, k), k, eqn.attr("p"))
defunary(Op.SQRT, lambda a, k: pow_series(a, k, 0.5))
defunary(Op.EXP, exp_series)
defunary(Op.LOG, log_series)
defunary(Op.TANH, tanh_series)
defunary(Op.ERF, erf_series)
defunary(Op.GELU, gelu_series)
SERIES_RULES[Op.RELU] = _relu
SERIES_RULES[Op.MAX] = _max
SERIES_RULES[Op.SELECT] = _select
SERIES_RULES[Op.STOP_GRADIENT] = lambda eqn, k, a, ignore_kinks=False: const_term(a).copy()
defcompare(Op.LT, np.less)
defcompare(Op.LE, np.less_equal)
defcompare(Op.GT, np.greater)
defcompare(Op.GE, np.greater_equal)
defcompare(Op.EQ, np.equal)


# ---------------------------------------------------------------- the pass

def _type_nodes(circuit: Circuit, seeds: set[str]) -> list[bool]:
    series: list[bool] = []
    for eqn in circuit.eqns:
        if eqn.op is Op.INPUT:
            series.append(eqn.attr("name") in seeds)
        elif eqn.op in REAL_RESULT_OPS or eqn.op is Op.CONST:
            series.append(False)
        else:
            series.append(any(series[a] for a in eqn.args))
    return series


def _lower_circuit(circuit: Circuit, order: int, seeds: set[str]) -> Circuit:
    flags = _type_nodes(circuit, seeds)
    eqns = tuple(Eqn(e.op, e.args, e.attrs, e.loc, flag) for e, flag in zip(circuit.eqns, flags))
    return Circuit(eqns, circuit.inputs, circuit.outputs, order)


def taylor(target: Circuit | Program, order: int, seeds) -> Circuit | Program:
    """Lower a real circuit or program to order-``order`` Taylor arithmetic along ``seeds``.

    ``seeds``: names of the inputs that move along z (for a program, typically
    ``{program.weight}``). In a program, carried state that becomes a series at the step output
    is a series at the step input too (found by fixed-point iteration), so the loop stays a loop.
    Order 0 returns the real computation unchanged.
    """
    if not isinstance(order, int) or order < 0:
        raise ValueError(f"order must be a non-negative integer, got {order!r}")
    seeds = {seeds} if isinstance(seeds, str) else set(seeds)
    step = target.step if isinstance(target, Program) else target
    if step.order != 0:
        raise ValueError(f"taylor expects a real circuit, got one already lowered to order {step.order}")
    unknown = seeds - set(step.input_shapes)
    if unknown:
        raise ValueError(f"seed(s) {sorted(unknown)} are not inputs; inputs are {list(step.input_shapes)}")
    if order == 0:
        return target
    if not isinstance(target, Program):
        return verify(_lower_circuit(target, order, seeds))
    while True:
        lowered = _lower_circuit(step, order, seeds)
        grown = seeds | {name for name in target.carry
                         if any(lowered.eqns[n].series for n in lowered.output(name).nodes)}
        if grown == seeds:
            break
        seeds = grown
    return verify_program(Program(lowered, target.n_steps, target.carry, target.per_step,
                                  target.weight))
