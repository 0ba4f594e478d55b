r"""Truncated-Taylor semantics: ``SERIES_RULES``, the series rule of every op, in C[z]/(z^{k+1}).

A series value of shape S is a complex array ``[k+1, B, *S]`` of plain coefficients
a_j = f^{(j)}(0) / j! (never j!-scaled: those overflow); a real value is ``[B, *S]``. A rule is
``rule(eqn, k, args, kinds, ignore_kinks)``: ``kinds[i]`` says whether operand i is a series,
elementwise operands arrive aligned to the result's rank (``semantics.real.align``). Each
elementwise rule is O(k^2) per element:

* linear ops (add, sub, neg, sum, reduce_sum and every structural op) act on each coefficient
  alike: the real op with the lead ``[k+1, B]``; a real operand is the series (r, 0, ..., 0)
* mul:   c_j = sum_{i<=j} a_i b_{j-i}                       (Cauchy product; dot = sum of these)
* dot_general: the same Cauchy product over coefficients, each term a contraction of the original
  size, (k+1)(k+2)/2 of them; a real operand makes it k+1 (one contraction over the lead)
* div:   q_j = (a_j - sum_{i=1..j} b_i q_{j-i}) / b_0
* exp:   y_0 = e^{a_0},  y_j = (1/j) sum_{i=1..j} i a_i y_{j-i}
* log:   y_0 = log a_0,  y_j = (a_j - (1/j) sum_{i=1..j-1} i y_i a_{j-i}) / a_0
* pow p: y_0 = a_0^p,    y_j = (1/(j a_0)) sum_{i=1..j} (p i - (j-i)) a_i y_{j-i}
  (sqrt is p = 1/2); a non-negative integer p is repeated multiplication instead, exact
  whatever a_0 is (the recurrence divides by a_0)
* F(a) with known series g of F'(a):  y_j = (1/j) sum_{i=1..j} i a_i g_{j-i}   (``integrate``):
  exp (g = y itself), tanh (g = 1 - y^2, built one coefficient behind y), erf
  (g = 2/sqrt(pi) exp(-a^2)), and GELU(a) = a Phi(a) with Phi' = exp(-a^2/2)/sqrt(2 pi)
* non-analytic gates (relu, max, reduce_max, comparisons, select) decide their branch on the real
  constant term a_0 and return that branch's series. At a *kink* (the switching quantity: a for
  relu, a - b for max and comparisons, the tied elements for reduce_max, the condition for
  select, has constant term exactly 0 but is not identically 0 along z) the function has no
  Taylor series and the rule raises :class:`KinkError` unless ``ignore_kinks``, which takes the
  branch the real computation takes. Comparisons and stop_gradient return real values (zero
  higher terms): exact for microgpt's softmax, which subtracts a stop-gradient max.

Constant terms are the unperturbed real run, so they are real; a series whose a_0 has an
imaginary part is rejected. Rules raise :class:`DomainError` outside their op's domain (log of a
non-positive constant term, ...); the interpreter reports it with the node and its source line.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from ..ir.circuit import Eqn
from ..ir.ops import ELEMENTWISE_OPS, INDEX_OPERANDS, LINEAR_OPS, Op
from .errors import DomainError, KinkError
from .real import REAL_IMPL, align, erf, std_normal_cdf

SeriesRule = Callable[..., np.ndarray]
#: op -> rule(eqn, k, args, kinds, ignore_kinks): the meaning of every op on series operands
SERIES_RULES: dict[Op, SeriesRule] = {}


def lift(value: np.ndarray, is_series: bool, k: int) -> np.ndarray:
    """A value as a series ``[k+1, ...]``: a real one becomes the constant series."""
    if is_series:
        return value
    out = np.zeros((k + 1,) + value.shape, dtype=np.complex128)
    out[0] = value
    return out


def const_term(value: np.ndarray, is_series: bool = True) -> np.ndarray:
    """The real constant term a_0 of a series (the value of the unperturbed run), or a real."""
    if not is_series:
        return value
    if np.any(value[0].imag != 0):
        raise DomainError("a series constant term has an imaginary part; constant terms are the "
                          "real unperturbed run (seed series must have a real a_0)")
    return value[0].real


def _index(k: int, ndim: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """The coefficient numbers start..stop-1 shaped to broadcast over a series of ``ndim`` axes."""
    i = np.arange(start, k + 1 if stop is None else stop, dtype=np.float64)
    return i.reshape((-1,) + (1,) * (ndim - 1))


# ---------------------------------------------------------------- recurrences

def cauchy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """c_j = sum_{i<=j} a_i b_{j-i} along axis 0, for any (broadcastable) trailing axes."""
    out = np.empty(np.broadcast_shapes(a.shape, b.shape), dtype=np.complex128)
    for j in range(out.shape[0]):
        out[j] = np.sum(a[: j + 1] * b[j::-1], axis=0)
    return out


def mul_series(a: np.ndarray, b: np.ndarray, kinds: Sequence[bool]) -> np.ndarray:
    """Product; a real operand scales the other termwise (O(k))."""
    return cauchy(a, b) if kinds[0] and kinds[1] else a * b


def dot_series(args: list[np.ndarray], kinds: Sequence[bool], k: int) -> np.ndarray:
    """sum_i args[i] * args[m+i] elementwise: real pairs add to a_0, real-series pairs scale
    termwise, series-series pairs are Cauchy products."""
    half = len(args) // 2
    total = None
    for a, b, sa, sb in zip(args[:half], args[half:], kinds[:half], kinds[half:]):
        term = lift(a * b, False, k) if not (sa or sb) else mul_series(a, b, (sa, sb))
        total = term if total is None else total + term
    return total


def div_series(a: np.ndarray, b: np.ndarray, kinds: Sequence[bool], k: int) -> np.ndarray:
    """a / b; a series divisor's constant term must be non-zero (q_j recurrence, module doc)."""
    if not kinds[1]:
        if np.any(b == 0):
            raise DomainError("division by zero")
        return a / b
    if np.any(const_term(b) == 0):
        raise DomainError("division by a series whose constant term is zero")
    a = lift(a, kinds[0], k)
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
    weighted = a * _index(k, a.ndim)  # i * a_i
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
        i = _index(k, a.ndim, 1, j)
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
        i = _index(k, a.ndim, 1, j + 1)
        y[j] = np.sum((p * i - (j - i)) * a[1: j + 1] * y[j - 1:: -1][:j], axis=0) / (j * a[0])
    return y


def _int_power(a: np.ndarray, p: int) -> np.ndarray:
    """a^p for an integer p >= 0 by binary powering: O(k^2 log p) and exact at a_0 = 0."""
    result = lift(np.ones(a.shape[1:]), False, a.shape[0] - 1)
    base = a
    while p:
        if p & 1:
            result = cauchy(result, base)
        p >>= 1
        if p:
            base = cauchy(base, base)
    return result


def tanh_series(a: np.ndarray, k: int) -> np.ndarray:
    a0 = const_term(a)
    y = np.empty_like(a)
    g = np.empty_like(a)  # g = 1 - y^2 = tanh'(a), built one coefficient behind y
    y[0] = np.tanh(a0)
    shrink = np.exp(-2 * np.abs(a0))
    g[0] = 4 * shrink / (1 + shrink) ** 2  # sech^2 a_0 without the cancellation in 1 - tanh^2
    weighted = a * _index(k, a.ndim)
    for j in range(1, k + 1):
        y[j] = np.sum(weighted[1: j + 1] * g[j - 1:: -1][:j], axis=0) / j
        g[j] = -np.sum(y[: j + 1] * y[j::-1], axis=0)
    return y


def erf_series(a: np.ndarray, k: int) -> np.ndarray:
    derivative = exp_series(-cauchy(a, a), k) * (2 / math.sqrt(math.pi))  # erf'(a)
    return integrate(a, derivative, erf(const_term(a)))


def gelu_series(a: np.ndarray, k: int) -> np.ndarray:
    density = exp_series(-0.5 * cauchy(a, a), k) / math.sqrt(2 * math.pi)  # Phi'(a)
    return cauchy(a, integrate(a, density, std_normal_cdf(const_term(a))))


def dot_general_series(eqn: Eqn, a: np.ndarray, b: np.ndarray, kinds: Sequence[bool]) -> np.ndarray:
    """Bilinear: a real operand is one contraction over the lead; two series a Cauchy product
    of contractions, c_r = sum_{i+j=r} A_i . B_j."""
    contract = REAL_IMPL[Op.DOT_GENERAL]
    if not (kinds[0] and kinds[1]):
        return contract(eqn, a, b, lead=2 if kinds[0] else 1, b_lead=2 if kinds[1] else 1)
    terms = [[contract(eqn, a[i], b[r - i]) for i in range(r + 1)] for r in range(a.shape[0])]
    return np.stack([sum(row[1:], row[0]) for row in terms]).astype(np.complex128)


# ---------------------------------------------------------------- non-analytic gates

def _check_kink(switch: np.ndarray, message: str, ignore_kinks: bool) -> None:
    """Raise KinkError where the switching series is 0 at z = 0 but not identically 0."""
    if ignore_kinks:
        return
    at_kink = (const_term(switch) == 0) & np.any(switch[1:] != 0, axis=0)
    if np.any(at_kink):
        raise KinkError(message)


def _relu(eqn, k, args, kinds, ignore_kinks=False):
    (a,) = args
    _check_kink(a, "relu at exactly 0: not analytic there (pass ignore_kinks=True to accept)",
                ignore_kinks)
    return np.where(const_term(a) > 0, a, 0.0)


def _max(eqn, k, args, kinds, ignore_kinks=False):
    a, b = (lift(v, s, k) for v, s in zip(args, kinds))
    _check_kink(a - b, "max of two equal values: not analytic there (pass ignore_kinks=True)",
                ignore_kinks)
    return np.where(const_term(a) >= const_term(b), a, b)


def _select(eqn, k, args, kinds, ignore_kinks=False):
    c, a, b = args
    if kinds[0]:
        _check_kink(c, "select on a series condition that is exactly 0: the choice jumps here "
                    "(pass ignore_kinks=True to accept)", ignore_kinks)
    return np.where(const_term(c, kinds[0]) != 0, lift(a, kinds[1], k), lift(b, kinds[2], k))


def _reduce_max(eqn, k, args, kinds, ignore_kinks=False):
    """The series of the element whose constant term is largest; a tie between elements whose
    series differ is a kink."""
    (a,) = args
    axes = [2 + ax for ax in eqn.attr("axes")]
    keep = [ax for ax in range(2, a.ndim) if ax not in axes]
    flat = a.transpose([0, 1] + keep + axes).reshape(a.shape[:2] + tuple(a.shape[ax] for ax in keep)
                                                     + (-1,))
    a0 = const_term(flat)
    winner = np.argmax(a0, axis=-1)[..., None]
    chosen = np.take_along_axis(flat, winner[None], axis=-1)
    tied = a0 == np.take_along_axis(a0, winner, axis=-1)
    if not ignore_kinks and np.any(tied.sum(-1) > 1):
        if np.any(tied[None] & (flat != chosen)):
            raise KinkError("reduce_max over tied values whose series differ: not analytic there "
                            "(pass ignore_kinks=True, or take the max of stop_gradient values)")
    return chosen[..., 0]


# ---------------------------------------------------------------- registrars (jet style)

def _register(op: Op, rule: SeriesRule) -> None:
    if op in SERIES_RULES:
        raise ValueError(f"two Taylor rules for op {op.value}")
    SERIES_RULES[op] = rule


def deflinear(op: Op) -> None:
    """A linear op acts on each coefficient alike: the real op on lifted operands with the
    series lead ``[k+1, B]`` (index operands stay real)."""
    index_slots = INDEX_OPERANDS.get(op, ())
    elementwise = op in ELEMENTWISE_OPS

    def rule(eqn, k, args, kinds, ignore_kinks=False):
        lifted = [a if i in index_slots else lift(a, s, k) for i, (a, s) in enumerate(zip(args, kinds))]
        if elementwise:
            return REAL_IMPL[op](eqn, *lifted)
        return REAL_IMPL[op](eqn, *lifted, lead=2)
    _register(op, rule)


def defunary(op: Op, series_fn: Callable[..., np.ndarray]) -> None:
    """A unary analytic op given by a coefficient recurrence ``series_fn(a, k, **attrs)``."""
    _register(op, lambda eqn, k, args, kinds, ignore_kinks=False: series_fn(
        lift(args[0], kinds[0], k), k, **dict(eqn.attrs)))


def defconstant(op: Op, value_fn: Callable[..., np.ndarray], kink: str | None = None) -> None:
    """An op whose result is real: ``value_fn`` of the constant terms, zero higher terms.

    ``kink``: for a comparison, the message raised when the compared series tie at z = 0."""
    def rule(eqn, k, args, kinds, ignore_kinks=False):
        if kink is not None:
            a, b = (lift(v, s, k) for v, s in zip(args, kinds))
            _check_kink(a - b, kink.format(op=op.value), ignore_kinks)
        return np.asarray(value_fn(*(const_term(a, s) for a, s in zip(args, kinds))), dtype=np.float64)
    _register(op, rule)


for _op in LINEAR_OPS:
    deflinear(_op)
_register(Op.MUL, lambda eqn, k, args, kinds, ignore_kinks=False: mul_series(*args, kinds))
_register(Op.DOT, lambda eqn, k, args, kinds, ignore_kinks=False: dot_series(args, kinds, k))
_register(Op.DIV, lambda eqn, k, args, kinds, ignore_kinks=False: div_series(*args, kinds, k))
_register(Op.DOT_GENERAL, lambda eqn, k, args, kinds, ignore_kinks=False:
          dot_general_series(eqn, *args, kinds))
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
_register(Op.REDUCE_MAX, _reduce_max)
defconstant(Op.STOP_GRADIENT, np.copy)
_COMPARISON_KINK = ("{op} of two equal values: the comparison jumps here, so its Taylor series is "
                    "undefined (pass ignore_kinks=True to accept)")
defconstant(Op.LT, np.less, _COMPARISON_KINK)
defconstant(Op.LE, np.less_equal, _COMPARISON_KINK)
defconstant(Op.GT, np.greater, _COMPARISON_KINK)
defconstant(Op.GE, np.greater_equal, _COMPARISON_KINK)
defconstant(Op.EQ, np.equal, _COMPARISON_KINK)


def apply_series(eqn: Eqn, k: int, args: list[np.ndarray], arg_shapes: list[tuple[int, ...]],
                 kinds: Sequence[bool], ignore_kinks: bool = False) -> np.ndarray:
    """The value of ``eqn`` when some operand is a series (module doc for the layouts)."""
    if eqn.op in ELEMENTWISE_OPS:
        rank = len(eqn.shape)
        args = [align(v, s, rank) for v, s in zip(args, arg_shapes)]
    return SERIES_RULES[eqn.op](eqn, k, args, kinds, ignore_kinks)


__all__ = ["SERIES_RULES", "apply_series", "cauchy", "const_term", "deflinear", "defconstant",
           "defunary", "div_series", "dot_general_series", "dot_series", "erf_series", "exp_series",
           "gelu_series", "integrate", "lift", "log_series", "mul_series", "pow_series",
           "tanh_series"]
