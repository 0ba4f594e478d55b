r"""The Taylor pass: rewrite a circuit into truncated-Taylor arithmetic in C[z]/(z^{k+1}).

Seeded inputs move along z (for data deletion, the down-weights x = z * psi); every value that
depends on them becomes a *series* a(z) = a_0 + a_1 z + ... + a_k z^k, stored as the plain
coefficients a_j = f^{(j)}(0) / j! (never j!-scaled: those overflow). Values that do not depend
on a seed stay real. The lowered circuit is the same graph with each node typed real or series
(``: s`` in the text form) and ``order = k``; what a series node computes is ``SERIES_RULES``
below, the one place each op's rule lives, each O(k^2) per value:

* linear ops (add, sub, neg, sum) act termwise; a real operand is the series (r, 0, ..., 0)
* mul:   c_j = sum_{i<=j} a_i b_{j-i}                       (Cauchy product; dot = sum of these)
* div:   q_j = (a_j - sum_{i=1..j} b_i q_{j-i}) / b_0
* exp:   y_0 = e^{a_0},  y_j = (1/j) sum_{i=1..j} i a_i y_{j-i}
* log:   y_0 = log a_0,  y_j = (a_j - (1/j) sum_{i=1..j-1} i y_i a_{j-i}) / a_0
* pow p: y_0 = a_0^p,    y_j = (1/(j a_0)) sum_{i=1..j} (p i - (j-i)) a_i y_{j-i}
  (sqrt is p = 1/2); a non-negative integer p is repeated multiplication instead, exact
  whatever a_0 is (the recurrence divides by a_0)
* F(a) with known series g of F'(a):  y_j = (1/j) sum_{i=1..j} i a_i g_{j-i}   (``integrate``):
  exp (g = y itself), tanh (g = 1 - y^2, built one coefficient behind y), erf
  (g = 2/sqrt(pi) exp(-a^2)), and GELU(a) = a Phi(a) with Phi' = exp(-a^2/2)/sqrt(2 pi)
* non-analytic gates (relu, max, comparisons, select) decide their branch on the real constant
  term a_0 and return that branch's series. At a *kink* (the switching quantity: a for relu, a - b
  for max and comparisons, the condition for select, has constant term exactly 0 but is not
  identically 0 along z) the function has no Taylor series and the rule raises
  :class:`KinkError` unless ``ignore_kinks``, which takes the branch the real computation takes.
  Comparisons and stop_gradient return real values (zero higher terms): exact for microgpt's
  softmax, which subtracts a stop-gradient max.

Constant terms are the unperturbed real run, so they are real; a series input whose a_0 has an
imaginary part is rejected. A value here is a complex array ``[k+1, B]`` (B = batch of
directions) and a real value a float array ``[B]``; a rule is ``rule(eqn, k, *operands,
ignore_kinks)`` and raises :class:`DomainError` outside its op's domain (log of a non-positive
constant term, ...), which the interpreter reports with the node and its source line.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..backends.reference import DomainError, EvaluationError, erf, std_normal_cdf
from ..ir.circuit import Circuit, Eqn, Program
from ..ir.ops import NON_DIFFERENTIABLE, Op
from ..ir.verify import verify, verify_program


class KinkError(DomainError, EvaluationError):
    """A non-analytic gate evaluated exactly at its kink: the series is not defined there.

    The interpreter re-raises it as a ``KinkError`` (an :class:`EvaluationError`) naming the node.
    """


SeriesRule = Callable[..., np.ndarray]
#: op -> rule(eqn, k, *operand_values, ignore_kinks=False): the meaning of every series node
SERIES_RULES: dict[Op, SeriesRule] = {}


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
    if not is_series(value):
        return value
    if np.any(value[0].imag != 0):
        raise DomainError("a series constant term has an imaginary part; constant terms are the "
                          "real unperturbed run (seed series must have a real a_0)")
    return value[0].real


# ---------------------------------------------------------------- recurrences

def _cauchy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """c_j = sum_{i<=j} a_i b_{j-i} along axis 0, for any (broadcastable) trailing axes."""
    out = np.empty(np.broadcast_shapes(a.shape, b.shape), dtype=np.complex128)
    for j in range(out.shape[0]):
        out[j] = np.sum(a[: j + 1] * b[j::-1], axis=0)
    return out


def mul_series(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Product of two series [k+1, B]; a real [B] operand scales the other termwise."""
    return _cauchy(a, b) if is_series(a) and is_series(b) else a * b


def dot_series(*args: np.ndarray) -> np.ndarray:
    """sum_i args[i] * args[m+i]. Real pairs add to a_0, real-series pairs are one stacked scale
    (O(k)), series-series pairs one stacked Cauchy product (O(k^2)), each summed over the pairs."""
    half = len(args) // 2
    k = next(a.shape[0] for a in args if is_series(a)) - 1
    real_pairs, scaled, products = [], [], []
    for a, b in zip(args[:half], args[half:]):
        if is_series(a) and is_series(b):
            products.append((a, b))
        elif is_series(a) or is_series(b):
            scaled.append((a, b) if is_series(a) else (b, a))
        else:
            real_pairs.append((a, b))
    total = lift(sum((a * b for a, b in real_pairs), np.zeros(1)), k)
    if scaled:
        total = total + (_stack([s for s, _ in scaled], 1) * _stack([r for _, r in scaled], 0)).sum(1)
    if products:
        total = total + _cauchy(_stack([a for a, _ in products], 1),
                                _stack([b for _, b in products], 1)).sum(axis=1)
    return total


def _stack(values: list[np.ndarray], axis: int) -> np.ndarray:
    return np.stack(np.broadcast_arrays(*values), axis=axis)


def div_series(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b; a series divisor's constant term must be non-zero (q_j recurrence, module doc)."""
    if not is_series(b):
        if np.any(b == 0):
            raise DomainError("division by zero")
        return a / b
    if np.any(const_term(b) == 0):
        raise DomainError("division by a series whose constant term is zero")
    k = b.shape[0] - 1
    a = lift(a, k)
    q = np.empty(np.broadcast_shapes(a.shape, b.shape), dtype=np.complex128)
    for j in range(k + 1):
        q[j] = (a[j] - np.sum(b[1: j + 1] * q[j - 1:: -1][:j], axis=0)) / b[0]
    return q


def integrate(a: np.ndarray, derivative: np.ndarray | None, y0: np.ndarray) -> np.ndarray:
    """Series of F(a) from F(a_0) and the series g of F'(a): y_j = (1/j) sum i a_i g_{j-i}.

    ``derivative=None`` means F' = F (exp): g is the result itself, read one coefficient behind."""
    k = a.shape[0] - 1
    y = np.empty_like(a)
    g = y if derivative is None else derivative
    y[0] = y0
    weighted = a * np.arange(k + 1)[:, None]  # i * a_i
    for j in range(1, k + 1):
        y[j] = np.sum(weighted[1: j + 1] * g[j - 1:: -1][:j], axis=0) / j
    return y


def exp_series(a: np.ndarray, k: int) -> np.ndarray:
    return integrate(a, None, np.exp(const_term(a)))


def log_series(a: np.ndarray, k: int) -> np.ndarray:
    a0 = const_term(a)
    if np.any(a0 <= 0):
        raise DomainError("log of a non-positive constant term")
    y = np.empty_like(a)
    y[0] = np.log(a0)
    for j in range(1, k + 1):
        i = np.arange(1, j)[:, None]
        y[j] = (a[j] - np.sum(i * y[1:j] * a[j - 1: 0: -1], axis=0) / j) / a[0]
    return y


def pow_series(a: np.ndarray, k: int, p: float) -> np.ndarray:
    integer = float(p).is_integer()
    if integer and p >= 0:
        return _int_power(a, int(p))
    a0 = const_term(a)
    if np.any(a0 == 0):
        raise DomainError(f"power {p} of a series whose constant term is zero")
    if not integer and np.any(a0 < 0):
        raise DomainError(f"non-integer power {p} of a negative constant term")
    y = np.empty_like(a)
    y[0] = a0 ** p
    for j in range(1, k + 1):
        i = np.arange(1, j + 1)[:, None]
        y[j] = np.sum((p * i - (j - i)) * a[1: j + 1] * y[j - 1:: -1][:j], axis=0) / (j * a[0])
    return y


def _int_power(a: np.ndarray, p: int) -> np.ndarray:
    """a^p for an integer p >= 0 by binary powering: O(k^2 log p) and exact at a_0 = 0."""
    result = lift(np.ones(a.shape[-1]), a.shape[0] - 1)
    base = a
    while p:
        if p & 1:
            result = _cauchy(result, base)
        p >>= 1
        if p:
            base = _cauchy(base, base)
    return result


def tanh_series(a: np.ndarray, k: int) -> np.ndarray:
    a0 = const_term(a)
    y = np.empty_like(a)
    g = np.empty_like(a)  # g = 1 - y^2 = tanh'(a), built one coefficient behind y
    y[0] = np.tanh(a0)
    shrink = np.exp(-2 * np.abs(a0))
    g[0] = 4 * shrink / (1 + shrink) ** 2  # sech^2 a_0 without the cancellation in 1 - tanh^2
    weighted = a * np.arange(k + 1)[:, None]
    for j in range(1, k + 1):
        y[j] = np.sum(weighted[1: j + 1] * g[j - 1:: -1][:j], axis=0) / j
        g[j] = -np.sum(y[: j + 1] * y[j::-1], axis=0)
    return y


def erf_series(a: np.ndarray, k: int) -> np.ndarray:
    derivative = exp_series(-_cauchy(a, a), k) * (2 / math.sqrt(math.pi))  # erf'(a)
    return integrate(a, derivative, erf(const_term(a)))


def gelu_series(a: np.ndarray, k: int) -> np.ndarray:
    density = exp_series(-0.5 * _cauchy(a, a), k) / math.sqrt(2 * math.pi)  # Phi'(a)
    return _cauchy(a, integrate(a, density, std_normal_cdf(const_term(a))))


# ---------------------------------------------------------------- non-analytic gates

def _check_kink(switch: np.ndarray, message: str, ignore_kinks: bool) -> None:
    """Raise KinkError where the switching series is 0 at z = 0 but not identically 0."""
    if ignore_kinks or not is_series(switch):
        return
    at_kink = (const_term(switch) == 0) & np.any(switch[1:] != 0, axis=0)
    if np.any(at_kink):
        raise KinkError(message)


def _difference(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    return lift(a, k) - lift(b, k)


def _branch(condition: np.ndarray, a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    return np.where(condition, lift(a, k), lift(b, k))


def _relu(eqn: Eqn, k: int, a, ignore_kinks: bool = False):
    _check_kink(a, "relu at exactly 0: not analytic there (pass ignore_kinks=True to accept)",
                ignore_kinks)
    return _branch(const_term(a) > 0, a, np.zeros(1), k)


def _max(eqn: Eqn, k: int, a, b, ignore_kinks: bool = False):
    _check_kink(_difference(a, b, k), "max of two equal values: not analytic there (pass "
                "ignore_kinks=True)", ignore_kinks)
    return _branch(const_term(a) >= const_term(b), a, b, k)


def _select(eqn: Eqn, k: int, c, a, b, ignore_kinks: bool = False):
    _check_kink(c, "select on a series condition that is exactly 0: the choice jumps here (pass "
                "ignore_kinks=True to accept)", ignore_kinks)
    return _branch(const_term(c) != 0, a, b, k)


# ---------------------------------------------------------------- registrars (jet style)

def _register(op: Op, rule: SeriesRule) -> None:
    if op in SERIES_RULES:
        raise ValueError(f"two Taylor rules for op {op.value}")
    SERIES_RULES[op] = rule


def deflinear(op: Op, combine: Callable[..., np.ndarray]) -> None:
    """A linear op acts on each coefficient alike: ``combine`` the lifted operands termwise."""
    _register(op, lambda eqn, k, *args, ignore_kinks=False: combine(*(lift(a, k) for a in args)))


def defproduct(op: Op, series_fn: Callable[..., np.ndarray]) -> None:
    """A multilinear-or-rational op given by ``series_fn(*operands)`` that mixes real and
    series operands itself (a real operand of a product is a cheap termwise scale)."""
    _register(op, lambda eqn, k, *args, ignore_kinks=False: series_fn(*args))


def defunary(op: Op, series_fn: Callable[..., np.ndarray]) -> None:
    """A unary analytic op given by a coefficient recurrence ``series_fn(a, k, **attrs)``."""
    _register(op, lambda eqn, k, a, ignore_kinks=False: series_fn(lift(a, k), k, **dict(eqn.attrs)))


def defconstant(op: Op, value_fn: Callable[..., np.ndarray], kink: str | None = None) -> None:
    """An op whose result is real: ``value_fn`` of the constant terms, zero higher terms.

    ``kink``: for a comparison, the message raised when the compared series tie at z = 0."""
    def rule(eqn: Eqn, k: int, *args, ignore_kinks: bool = False) -> np.ndarray:
        if kink is not None:
            _check_kink(_difference(*args, k), kink.format(op=op.value), ignore_kinks)
        return np.asarray(value_fn(*(const_term(a) for a in args)), dtype=np.float64)
    _register(op, rule)


deflinear(Op.ADD, lambda a, b: a + b)
deflinear(Op.SUB, lambda a, b: a - b)
deflinear(Op.NEG, lambda a: -a)
deflinear(Op.SUM, lambda *args: sum(args[1:], args[0]))
defproduct(Op.MUL, mul_series)
defproduct(Op.DOT, dot_series)
defproduct(Op.DIV, div_series)
defunary(Op.POW, pow_series)
defunary(Op.SQRT, lambda a, k: pow_series(a, k, 0.5))
defunary(Op.EXP, exp_series)
defunary(Op.LOG, log_series)
defunary(Op.TANH, tanh_series)
defunary(Op.ERF, erf_series)
defunary(Op.GELU, gelu_series)
_register(Op.RELU, _relu)
_register(Op.MAX, _max)
_register(Op.SELECT, _select)
defconstant(Op.STOP_GRADIENT, np.copy)
_COMPARISON_KINK = ("{op} of two equal values: the comparison jumps here, so its Taylor series is "
                    "undefined (pass ignore_kinks=True to accept)")
defconstant(Op.LT, np.less, _COMPARISON_KINK)
defconstant(Op.LE, np.less_equal, _COMPARISON_KINK)
defconstant(Op.GT, np.greater, _COMPARISON_KINK)
defconstant(Op.GE, np.greater_equal, _COMPARISON_KINK)
defconstant(Op.EQ, np.equal, _COMPARISON_KINK)


# ---------------------------------------------------------------- the pass

def _type_nodes(circuit: Circuit, seeds: set[str]) -> list[bool]:
    """Series iff a seed flows in: seeded inputs, and nodes reading a series operand unless the
    op's result is real (comparisons, stop_gradient)."""
    series: list[bool] = []
    for eqn in circuit.eqns:
        if eqn.op is Op.INPUT:
            series.append(eqn.attr("name") in seeds)
        elif eqn.op in NON_DIFFERENTIABLE:
            series.append(False)
        else:
            series.append(any(series[a] for a in eqn.args))
    return series


def _lower_circuit(circuit: Circuit, order: int, seeds: set[str]) -> Circuit:
    flags = _type_nodes(circuit, seeds)
    for node, (eqn, flag) in enumerate(zip(circuit.eqns, flags)):
        reads_series = any(flags[a] for a in eqn.args)
        if reads_series and eqn.op not in SERIES_RULES:
            raise NotImplementedError(f"{circuit.describe(node)}: no Taylor rule for op "
                                      f"{eqn.op.value!r} (add one to passes/taylor.py SERIES_RULES)")
    eqns = tuple(Eqn(e.op, e.args, e.attrs, e.loc, flag) for e, flag in zip(circuit.eqns, flags))
    return Circuit(eqns, circuit.inputs, circuit.outputs, order)


def taylor(target: Circuit | Program, order: int, seeds=None) -> Circuit | Program:
    """Lower a real circuit or program to order-``order`` Taylor arithmetic along ``seeds``.

    ``seeds``: name(s) of the inputs that move along z; for a program it defaults to
    ``{program.weight}``. Running the result needs each seed input as a series ``(k+1,)+shape``
    (real constant term). In a program, carried state that becomes a series at the step output is
    a series at the step input too (found by fixed-point iteration), so the loop stays a loop.
    The result is the same graph with nodes typed ``series`` and ``order`` set; it verifies, prints
    and parses. Order 0 returns ``target`` itself (the real computation).
    """
    if not isinstance(order, int) or isinstance(order, bool) or order < 0:
        raise ValueError(f"order must be a non-negative integer, got {order!r}")
    step = target.step if isinstance(target, Program) else target
    if seeds is None:
        if not isinstance(target, Program) or target.weight is None:
            raise ValueError("taylor needs seeds= (the inputs that move along z); only a program "
                             "with a weight input has a default")
        seeds = {target.weight}
    seeds = {seeds} if isinstance(seeds, str) else set(seeds)
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


__all__ = ["KinkError", "SERIES_RULES", "const_term", "deflinear", "defconstant", "defproduct",
           "defunary", "div_series", "dot_series", "erf_series", "exp_series", "gelu_series",
           "integrate", "is_series", "lift", "log_series", "mul_series", "pow_series",
           "tanh_series", "taylor"]
