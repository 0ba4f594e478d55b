r"""Numba source for array circuits: one table entry per (op, operand kinds), plus fused groups.

Values live in three flat arenas that every kernel receives: ``R`` (float64: real values),
``S`` (complex128: series coefficients) and ``I`` (int64: gather tables and indices). A real
value of ``n`` elements over ``nb`` directions is ``R[o + d*n + i]``; a series value is
``S[o + (j*nb + d)*n + i]`` (coefficient j, direction d, element i: the reference's
``[k+1, B, *S]`` layout, flattened). An operand is read through a descriptor
``(off, cj, cd, ce)``: element i of direction d, coefficient j sits at
``off + j*cj + d*cd + i*ce``, so a batch stride ``cd = 0`` shares one value across the
directions (constants, per-step data) and an element stride ``ce = 0`` broadcasts a one-element
operand; any other broadcast is a gather into a temporary first (``array_engine``).

:data:`KERNELS` maps a kernel name to a :class:`Kernel`: its Numba source and the messages of
its error codes. Names say the op and the kinds, e.g. ``ew_mul_sr`` (elementwise mul of a
series by a real) or ``dg_ss`` (dot_general of two series: the Cauchy product of contractions,
c_r = sum_{i+j=r} A_i . B_j; with one real operand it is k+1 contractions). Elementwise series
kernels run, per element, the recurrences of ``semantics/series.py`` over the coefficients
(helpers ``s_*``); real ones are one expression per element. Fused groups of them (one loop
nest for a chain of same-shape ops) are written by :mod:`.array_fusion` from these rules.

A kernel returns 0, or an error code: ``DOMAIN_CODES`` (per op, see ``Kernel.errors``),
:data:`KINK`, :data:`IMAGINARY` or :data:`NONFINITE` (an output that is Inf or NaN: with finite
inputs an overflow at this node). Every source is written to a real file under the kernel cache
(``emit.cache_dir``) before import, so tracebacks point at real lines, and Numba caches the
compiled code on disk (``cache=True``) keyed by that file.
"""

from __future__ import annotations

import hashlib
import textwrap
import threading
from dataclasses import dataclass, field

from ..ir.ops import Op
from .array_contract import dg_ss_source
from .emit import load_kernel_module

KINK, IMAGINARY, NONFINITE = 90, 91, 99
DECORATOR = '@numba.njit(cache=True, nogil=True, error_model="numpy")'
COMMON_MESSAGES = {
    KINK: "not analytic here (a kink: the switching value is exactly 0 but moves along z); "
          "pass ignore_kinks=True to accept the branch the real computation takes",
    IMAGINARY: "a series constant term has an imaginary part; constant terms are the real "
               "unperturbed run (seed series must have a real a_0)",
    NONFINITE: "a non-finite value (overflow or an invalid operation) at this node",
}


@dataclass(frozen=True)
class Kernel:
    """One generated kernel: its name, Numba source, and the message of each error code."""

    name: str
    source: str
    errors: dict[int, str] = field(default_factory=dict)

    def message(self, code: int) -> str:
        return self.errors.get(code) or COMMON_MESSAGES.get(code, f"kernel error code {code}")


# ---------------------------------------------------------------- series helpers (per element)

SERIES_HELPERS = '''
@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def cauchy(A, B, Y, K1):
    for j in range(K1):
        acc = 0j
        for i in range(j + 1):
            acc += A[i] * B[j - i]
        Y[j] = acc


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def integrate(A, G, Y, K1):
    """y_j = (1/j) sum_{i=1..j} i a_i g_{j-i} (Y[0] already set; G may be Y: exp)."""
    for j in range(1, K1):
        acc = 0j
        for i in range(1, j + 1):
            acc += i * A[i] * G[j - i]
        Y[j] = acc / j


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def exp_into(A, Y, K1):
    Y[0] = math.exp(A[0].real)
    integrate(A, Y, Y, K1)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def s_exp(A, B, C, Y, W, K1, p, kinks):
    if A[0].imag != 0:
        return IMAGINARY
    exp_into(A, Y, K1)
    return 0


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def s_log(A, B, C, Y, W, K1, p, kinks):
    if A[0].imag != 0:
        return IMAGINARY
    a0 = A[0].real
    if a0 <= 0:
        return 1
    Y[0] = math.log(a0)
    for j in range(1, K1):
        acc = 0j
        for i in range(1, j):
            acc += i * Y[i] * A[j - i]
        Y[j] = (A[j] - acc / j) / A[0]
    return 0


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def s_pow(A, B, C, Y, W, K1, p, kinks):
    if p == math.floor(p) and p >= 0:  # binary powering: exact whatever a_0 is
        for j in range(K1):
            W[0, j] = 0j
            W[1, j] = A[j]
        W[0, 0] = 1.0
        q = int(p)
        while q:
            if q & 1:
                cauchy(W[0], W[1], W[2], K1)
                W[0, :] = W[2, :]
            q >>= 1
            if q:
                cauchy(W[1], W[1], W[2], K1)
                W[1, :] = W[2, :]
        Y[:] = W[0, :]
        return 0
    if A[0].imag != 0:
        return IMAGINARY
    a0 = A[0].real
    if a0 == 0:
        return 1
    if p != math.floor(p) and a0 < 0:
        return 2
    Y[0] = a0 ** p
    for j in range(1, K1):
        acc = 0j
        for i in range(1, j + 1):
            acc += (p * i - (j - i)) * A[i] * Y[j - i]
        Y[j] = acc / (j * A[0])
    return 0


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def s_tanh(A, B, C, Y, W, K1, p, kinks):
    if A[0].imag != 0:
        return IMAGINARY
    a0 = A[0].real
    G = W[0]
    Y[0] = math.tanh(a0)
    shrink = math.exp(-2 * abs(a0))
    G[0] = 4 * shrink / (1 + shrink) ** 2  # sech^2 without the cancellation in 1 - tanh^2
    for j in range(1, K1):
        acc = 0j
        for i in range(1, j + 1):
            acc += i * A[i] * G[j - i]
        Y[j] = acc / j
        acc = 0j
        for i in range(j + 1):
            acc += Y[i] * Y[j - i]
        G[j] = -acc
    return 0


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def s_erf(A, B, C, Y, W, K1, p, kinks):
    if A[0].imag != 0:
        return IMAGINARY
    cauchy(A, A, W[0], K1)
    for j in range(K1):
        W[0, j] = -W[0, j]
    exp_into(W[0], W[1], K1)
    for j in range(K1):
        W[1, j] = W[1, j] * (2 / math.sqrt(math.pi))
    Y[0] = math.erf(A[0].real)
    integrate(A, W[1], Y, K1)
    return 0


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def s_gelu(A, B, C, Y, W, K1, p, kinks):
    if A[0].imag != 0:
        return IMAGINARY
    cauchy(A, A, W[0], K1)
    for j in range(K1):
        W[0, j] = -0.5 * W[0, j]
    exp_into(W[0], W[1], K1)
    for j in range(K1):
        W[1, j] = W[1, j] / math.sqrt(2 * math.pi)
    W[2, 0] = 0.5 * math.erfc(-A[0].real / math.sqrt(2.0))
    integrate(A, W[1], W[2], K1)
    cauchy(A, W[2], Y, K1)
    return 0


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def kink_at(X, Z, K1, kinks):
    """0, or KINK when the switching series X - Z is 0 at z = 0 but not identically (or
    IMAGINARY when its constant term is not real)."""
    if (X[0] - Z[0]).imag != 0:
        return IMAGINARY
    if not kinks or (X[0] - Z[0]).real != 0:
        return 0
    for j in range(1, K1):
        if X[j] - Z[j] != 0:
            return KINK
    return 0


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def index_at(R, at, size):
    """The integer held by the real R[at], or -1 (not an integer) / -2 (out of range)."""
    v = R[at]
    if v != math.floor(v):
        return -1
    if v < 0 or v >= size:
        return -2
    return int(v)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def pack_real(R, bp, b0, C, N, yc, yn):
    """A contraction's real rhs B[c, n] (at b0 + c*yc + n*yn) into the contiguous bp[C, N]."""
    for c in range(C):
        for nn in range(N):
            bp[c, nn] = R[b0 + c * yc + nn * yn]


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def pack_series(F, br, bi, b0, C, K1, N, yj, yc, yn):
    """A contraction's series rhs (coefficient j of B[c, n] at b0 + j*yj + c*yc + n*yn, in
    complex entries of the float view F) into real and imaginary rows br/bi[c, j*N + n]."""
    for c in range(C):
        for j in range(K1):
            b = 2 * (b0 + j * yj + c * yc)
            for nn in range(N):
                br[c, j * N + nn] = F[b + 2 * nn * yn]
                bi[c, j * N + nn] = F[b + 2 * nn * yn + 1]
'''

ZERO_SERIES = "W[3]"  # an all-zero row of the scratch (the second operand of a one-operand switch)

#: series rule bodies per (op, kinds): code on the element's loaded operands A, B, C giving Y
#: (series out) or ``Y[0].real`` (real out); ``return`` codes as the kernels'
_SERIES_BODIES: dict[Op, str] = {
    Op.ADD: "for j in range(K1):\n    Y[j] = A[j] + B[j]",
    Op.SUB: "for j in range(K1):\n    Y[j] = A[j] - B[j]",
    Op.NEG: "for j in range(K1):\n    Y[j] = -A[j]",
    Op.EXP: "c = s_exp(A, B, C, Y, W, K1, p, kinks)",
    Op.LOG: "c = s_log(A, B, C, Y, W, K1, p, kinks)",
    Op.POW: "c = s_pow(A, B, C, Y, W, K1, p, kinks)",
    Op.SQRT: "c = s_pow(A, B, C, Y, W, K1, 0.5, kinks)",
    Op.TANH: "c = s_tanh(A, B, C, Y, W, K1, p, kinks)",
    Op.ERF: "c = s_erf(A, B, C, Y, W, K1, p, kinks)",
    Op.GELU: "c = s_gelu(A, B, C, Y, W, K1, p, kinks)",
    Op.RELU: (f"c = kink_at(A, {ZERO_SERIES}, K1, kinks)\n"
              "for j in range(K1):\n    Y[j] = A[j] if A[0].real > 0 else 0j"),
    Op.MAX: ("c = kink_at(A, B, K1, kinks)\n"
             "for j in range(K1):\n    Y[j] = A[j] if A[0].real >= B[0].real else B[j]"),
    Op.SELECT: ("for j in range(K1):\n    Y[j] = B[j] if C0 != 0 else C[j]"),
    Op.STOP_GRADIENT: "c = IMAGINARY if A[0].imag != 0 else 0\nY[0] = A[0].real",
}
_COMPARE = {Op.LT: "<", Op.LE: "<=", Op.GT: ">", Op.GE: ">=", Op.EQ: "=="}
for _op, _sym in _COMPARE.items():
    _SERIES_BODIES[_op] = (
        "c = IMAGINARY if A[0].imag != 0 or B[0].imag != 0 else kink_at(A, B, K1, kinks)\n"
        f"Y[0] = 1.0 if A[0].real {_sym} B[0].real else 0.0")

SERIES_ERRORS: dict[Op, dict[int, str]] = {
    Op.DIV: {1: "division by zero", 2: "division by a series whose constant term is zero"},
    Op.LOG: {1: "log of a non-positive constant term"},
    Op.POW: {1: "power of a series whose constant term is zero",
             2: "non-integer power of a negative constant term"},
    Op.SQRT: {1: "power 0.5 of a series whose constant term is zero",
              2: "non-integer power 0.5 of a negative constant term"},
}


def series_body(op: Op, kinds: str) -> str:
    """The per-element series code of ``op`` on operand kinds ``kinds`` (``c`` = error code)."""
    if op is Op.MUL:
        if kinds == "ss":
            return "cauchy(A, B, Y, K1)"
        scale, other = ("B", "A") if kinds == "sr" else ("A", "B")
        return f"for j in range(K1):\n    Y[j] = {other}[j] * {scale}[0].real"
    if op is Op.DIV:
        if kinds == "sr":
            return ("if B[0].real == 0:\n    return 1\n"
                    "for j in range(K1):\n    Y[j] = A[j] / B[0].real")
        return ("if B[0].imag != 0:\n    return IMAGINARY\nif B[0].real == 0:\n    return 2\n"
                "for j in range(K1):\n    acc = A[j]\n    for m in range(1, j + 1):\n"
                "        acc -= B[m] * Y[j - m]\n    Y[j] = acc / B[0]")
    if op is Op.SELECT:
        head = ("c = kink_at(A, W[3], K1, kinks)\nC0 = A[0].real\n" if kinds[0] == "s"
                else "C0 = A[0].real\n")
        return head + _SERIES_BODIES[op]
    return _SERIES_BODIES[op]


# ---------------------------------------------------------------- real expressions

#: real elementwise ops: (expression of the operands x, y, z; domain check -> code, or None)
REAL_EXPR: dict[Op, tuple[str, str | None]] = {
    Op.ADD: ("x + y", None), Op.SUB: ("x - y", None), Op.NEG: ("-x", None),
    Op.MUL: ("x * y", None), Op.DIV: ("x / y", "1 if y == 0.0 else 0"),
    Op.POW: ("x ** p", "(1 if p < 0 and x == 0.0 else 0) if p == math.floor(p) else "
                       "(2 if x < 0.0 or (p < 0 and x == 0.0) else 0)"),
    Op.EXP: ("math.exp(x)", None), Op.LOG: ("math.log(x)", "1 if x <= 0.0 else 0"),
    Op.SQRT: ("math.sqrt(x)", "1 if x < 0.0 else 0"), Op.TANH: ("math.tanh(x)", None),
    Op.ERF: ("math.erf(x)", None),
    Op.GELU: ("x * (0.5 * math.erfc(-x / math.sqrt(2.0)))", None),
    Op.RELU: ("x if x > 0.0 else 0.0", None), Op.MAX: ("x if x >= y else y", None),
    Op.SELECT: ("y if x != 0.0 else z", None),
    **{op: (f"1.0 if x {sym} y else 0.0", None) for op, sym in _COMPARE.items()},
}
REAL_ERRORS: dict[Op, dict[int, str]] = {
    Op.DIV: {1: "division by zero"},
    Op.POW: {1: "zero raised to a negative power",
             2: "non-positive base raised to a non-integer power"},
    Op.LOG: {1: "log of a non-positive value"}, Op.SQRT: {1: "sqrt of a negative value"},
}
ARITY = {Op.NEG: 1, Op.EXP: 1, Op.LOG: 1, Op.SQRT: 1, Op.TANH: 1, Op.ERF: 1, Op.GELU: 1,
         Op.RELU: 1, Op.POW: 1, Op.STOP_GRADIENT: 1, Op.SELECT: 3}
NAMES = "xyz"
_OPERAND = "{v}0, {v}j, {v}d, {v}e"
EW_PARAMS = "R, S, I, K1, kinks, p, nb, n, o"


def ew_name(op: Op, kinds: str) -> str:
    return f"ew_{op.value}_{kinds}"


def _real_ew(op: Op) -> Kernel:
    arity = ARITY.get(op, 2)
    expr, check = REAL_EXPR[op]
    names = NAMES[:arity]
    params = ", ".join(_OPERAND.format(v=v) for v in names)
    loads = [f"{v} = R[{v}0 + d * {v}d + i * {v}e]" for v in names]
    body = loads + ([f"c = {check}", "if c:", "    return c"] if check else [])
    body += [f"v = {expr}", "R[o + d * n + i] = v", "chk += v - v"]
    name = ew_name(op, "r" * arity)
    source = "\n".join([
        DECORATOR, f"def {name}({EW_PARAMS}, {params}):", "    chk = 0.0",
        "    for d in range(nb):", "        for i in range(n):",
        textwrap.indent("\n".join(body), " " * 12),
        "    if chk != 0.0:", "        return NONFINITE", "    return 0"])
    return Kernel(name, source, REAL_ERRORS.get(op, {}))


def _series_ew(op: Op, kinds: str, real_out: bool) -> Kernel:
    arity = len(kinds)
    names = "ABC"[:arity]
    params = ", ".join(_OPERAND.format(v=v) for v in NAMES[:arity])
    loads = []
    for var, v, kind in zip(names, NAMES, kinds):
        if kind == "s":
            loads.append(f"for j in range(K1):\n    {var}[j] = S[{v}0 + j * {v}j + d * {v}d + i * {v}e]")
        else:
            loads.append(f"{var}[0] = R[{v}0 + d * {v}d + i * {v}e]")
    store = ("R[o + d * n + i] = Y[0].real\nchk += Y[0] - Y[0]" if real_out else
             "for j in range(K1):\n    v = Y[j]\n    S[o + (j * nb + d) * n + i] = v\n    chk += v - v")
    body = "\n".join(loads + ["c = 0", series_body(op, kinds), "if c:", "    return c", store])
    name = ew_name(op, kinds)
    source = "\n".join([
        DECORATOR, f"def {name}({EW_PARAMS}, {params}):",
        "    A = np.zeros(K1, np.complex128)", "    B = np.zeros(K1, np.complex128)",
        "    C = np.zeros(K1, np.complex128)", "    Y = np.zeros(K1, np.complex128)",
        "    W = np.zeros((4, K1), np.complex128)", "    chk = 0j",
        "    for d in range(nb):", "        for i in range(n):",
        textwrap.indent(body, " " * 12),
        "    if chk.real != 0.0 or chk.imag != 0.0 or chk != chk:", "        return NONFINITE",
        "    return 0"])
    return Kernel(name, source, SERIES_ERRORS.get(op, {}))


#: series ops that act coefficient by coefficient: (op, kinds) -> the value of coefficient j
#: from X/Y (series operands' coefficient j), x/y (real operands), z0 (1 at j = 0, else 0)
COEFFICIENTWISE: dict[tuple[Op, str], str] = {
    (Op.ADD, "ss"): "X + Y", (Op.ADD, "sr"): "X + z0 * y", (Op.ADD, "rs"): "z0 * x + Y",
    (Op.SUB, "ss"): "X - Y", (Op.SUB, "sr"): "X - z0 * y", (Op.SUB, "rs"): "z0 * x - Y",
    (Op.NEG, "s"): "-X", (Op.MUL, "sr"): "X * y", (Op.MUL, "rs"): "x * Y",
    (Op.DIV, "sr"): "X * (1.0 / y)",  # numba divides complex by real as complex by complex
}


def _coefficientwise(op: Op, kinds: str) -> Kernel:
    """A linear series op (or a product with a real operand) as flat loops over coefficient,
    direction and element (contiguous along the elements: vectorised)."""
    params = ", ".join(_OPERAND.format(v=v) for v in NAMES[:len(kinds)])
    loads = []
    for v, kind in zip(NAMES, kinds):
        loads.append(f"{v.upper()} = S[{v}0 + j * {v}j + d * {v}d + i * {v}e]" if kind == "s"
                     else f"{v} = R[{v}0 + d * {v}d + i * {v}e]")
    check = ["if y == 0.0:", "    return 1"] if op is Op.DIV else []
    body = loads + check + [f"v = {COEFFICIENTWISE[op, kinds]}", "S[o + (j * nb + d) * n + i] = v",
                            "chk += v - v"]
    name = ew_name(op, kinds)
    source = "\n".join([
        DECORATOR, f"def {name}({EW_PARAMS}, {params}):", "    chk = 0j",
        "    for j in range(K1):", "        z0 = 1.0 if j == 0 else 0.0",
        "        for d in range(nb):", "            for i in range(n):",
        textwrap.indent("\n".join(body), " " * 16),
        "    if chk.real != 0.0 or chk.imag != 0.0 or chk != chk:", "        return NONFINITE",
        "    return 0"])
    return Kernel(name, source, SERIES_ERRORS.get(op, {}))


def _cauchy_kernel() -> Kernel:
    """mul of two series: c_r = sum_{q<=r} a_q b_{r-q}, each term a flat loop over directions
    and elements (vectorised), accumulated in place."""
    params = ", ".join(_OPERAND.format(v=v) for v in "xy")
    source = "\n".join([
        DECORATOR, f"def ew_mul_ss({EW_PARAMS}, {params}):", "    chk = 0j",
        "    for r in range(K1):", "        for d in range(nb):", "            for i in range(n):",
        "                S[o + (r * nb + d) * n + i] = 0.0",
        "        for q in range(r + 1):", "            for d in range(nb):",
        "                for i in range(n):",
        "                    S[o + (r * nb + d) * n + i] += (S[x0 + q * xj + d * xd + i * xe]",
        "                                                    * S[y0 + (r - q) * yj + d * yd + i * ye])",
        "        for d in range(nb):", "            for i in range(n):",
        "                v = S[o + (r * nb + d) * n + i]", "                chk += v - v",
        "    if chk.real != 0.0 or chk.imag != 0.0 or chk != chk:", "        return NONFINITE",
        "    return 0"])
    return Kernel("ew_mul_ss", source, {})


def _series_kinds(arity: int) -> list[str]:
    """Operand kind strings with at least one series operand."""
    out = []
    for bits in range(1, 1 << arity):
        out.append("".join("s" if bits >> (arity - 1 - i) & 1 else "r" for i in range(arity)))
    return out


#: ops whose result is real even on series operands
REAL_RESULT = frozenset(_COMPARE) | {Op.STOP_GRADIENT}

# ---------------------------------------------------------------- array kernels (hand-written)

ARRAY_SOURCE = '''
@numba.njit(cache=True, nogil=True, error_model="numpy")
def gather_r(R, S, I, K1, nb, n, o, x0, xj, xd, xe, ix):
    for d in range(nb):
        for i in range(n):
            R[o + d * n + i] = R[x0 + d * xd + I[ix + i]]
    return 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def gather_s(R, S, I, K1, nb, n, o, x0, xj, xd, xe, ix):
    for j in range(K1):
        for d in range(nb):
            for i in range(n):
                S[o + (j * nb + d) * n + i] = S[x0 + j * xj + d * xd + I[ix + i]]
    return 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def place_r(R, S, I, K1, nb, n_out, o, n, x0, xj, xd, xe, ix):
    for d in range(nb):
        for i in range(n):
            R[o + d * n_out + I[ix + i]] = R[x0 + d * xd + i]
    return 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def place_s(R, S, I, K1, nb, n_out, o, n, x0, xj, xd, xe, ix):
    for j in range(K1):
        for d in range(nb):
            for i in range(n):
                S[o + (j * nb + d) * n_out + I[ix + i]] = S[x0 + j * xj + d * xd + i]
    return 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def place_rs(R, S, I, K1, nb, n_out, o, n, x0, xj, xd, xe, ix):
    """A real operand into a series result (coefficient 0; the others are 0)."""
    for j in range(K1):
        for d in range(nb):
            for i in range(n):
                S[o + (j * nb + d) * n_out + I[ix + i]] = R[x0 + d * xd + i] if j == 0 else 0.0
    return 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def copy_r(R, S, I, K1, n, o, x0):
    for i in range(n):
        R[o + i] = R[x0 + i]
    return 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def copy_s(R, S, I, K1, n, o, x0):
    for i in range(n):
        S[o + i] = S[x0 + i]
    return 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def copy_rs(R, S, I, K1, n, o, x0):
    """A real value lifted into a series buffer of K1 * n entries (n per coefficient)."""
    for i in range(n):
        S[o + i] = R[x0 + i]
    for i in range(n, K1 * n):
        S[o + i] = 0.0
    return 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def reduce_sum_r(R, S, I, K1, nb, m, nr, o, x0, xj, xd, xe, ix):
    chk = 0.0
    for d in range(nb):
        for q in range(m):
            acc = 0.0
            for r in range(nr):
                acc += R[x0 + d * xd + I[ix + q * nr + r]]
            R[o + d * m + q] = acc
            chk += acc - acc
    return NONFINITE if chk != 0.0 else 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def reduce_sum_s(R, S, I, K1, nb, m, nr, o, x0, xj, xd, xe, ix):
    chk = 0j
    for j in range(K1):
        for d in range(nb):
            for q in range(m):
                acc = 0j
                for r in range(nr):
                    acc += S[x0 + j * xj + d * xd + I[ix + q * nr + r]]
                S[o + (j * nb + d) * m + q] = acc
                chk += acc - acc
    return NONFINITE if chk != 0 or chk != chk else 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def reduce_max_r(R, S, I, K1, nb, m, nr, o, x0, xj, xd, xe, ix):
    for d in range(nb):
        for q in range(m):
            best = R[x0 + d * xd + I[ix + q * nr]]
            for r in range(1, nr):
                v = R[x0 + d * xd + I[ix + q * nr + r]]
                if v > best:
                    best = v
            R[o + d * m + q] = best
    return 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def reduce_max_s(R, S, I, K1, kinks, nb, m, nr, o, x0, xj, xd, xe, ix):
    """The series of the element with the largest constant term; tied elements whose series
    differ are a kink."""
    for d in range(nb):
        for q in range(m):
            base = x0 + d * xd
            win = base + I[ix + q * nr]
            for r in range(nr):
                if S[base + I[ix + q * nr + r]].imag != 0:
                    return IMAGINARY
            for r in range(1, nr):
                at = base + I[ix + q * nr + r]
                if S[at].real > S[win].real:
                    win = at
            if kinks:
                for r in range(nr):
                    at = base + I[ix + q * nr + r]
                    if at != win and S[at].real == S[win].real:
                        for j in range(1, K1):
                            if S[at + j * xj] != S[win + j * xj]:
                                return KINK
            for j in range(K1):
                S[o + (j * nb + d) * m + q] = S[win + j * xj]
    return 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def dg_rr(R, S, I, K1, nb, G, M, N, C, o, x0, xj, xd, xg, xm, xc, y0, yj, yd, yg, yc, yn):
    """out[g, m, n] = sum_c A[g, m, c] B[g, c, n]; A[g, m, c] is at x0 + g*xg + m*xm + c*xc (a
    transposed operand is read in place), B likewise. Per (direction, g) B is packed into a
    contiguous [C, N] block, then each result row is built by axpys along n (vectorised)."""
    acc = np.zeros(N)
    bp = np.empty((C, N))
    chk = 0.0
    for d in range(nb):
        for g in range(G):
            pack_real(R, bp, y0 + d * yd + g * yg, C, N, yc, yn)
            for mm in range(M):
                acc[:] = 0.0
                a0 = x0 + d * xd + g * xg + mm * xm
                for c in range(C):
                    a = R[a0 + c * xc]
                    row = bp[c]
                    for nn in range(N):
                        acc[nn] += a * row[nn]
                out = o + d * G * M * N + (g * M + mm) * N
                for nn in range(N):
                    R[out + nn] = acc[nn]
                    chk += acc[nn] - acc[nn]
    return NONFINITE if chk != 0.0 else 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def dg_sr(R, S, I, K1, nb, G, M, N, C, o, x0, xj, xd, xg, xm, xc, y0, yj, yd, yg, yc, yn):
    """A series lhs and a real rhs: one contraction per coefficient (k+1 in all)."""
    F = S.view(np.float64)
    size = G * M * N
    sr = np.zeros((K1, N))
    si = np.zeros((K1, N))
    bp = np.empty((C, N))
    chk = 0.0
    for d in range(nb):
        for g in range(G):
            pack_real(R, bp, y0 + d * yd + g * yg, C, N, yc, yn)
            for mm in range(M):
                sr[:, :] = 0.0
                si[:, :] = 0.0
                for c in range(C):
                    row = bp[c]
                    for r in range(K1):
                        at = 2 * (x0 + r * xj + d * xd + g * xg + mm * xm + c * xc)
                        pr = F[at]
                        pi = F[at + 1]
                        for nn in range(N):
                            sr[r, nn] += pr * row[nn]
                            si[r, nn] += pi * row[nn]
                for r in range(K1):
                    out = 2 * (o + (r * nb + d) * size + (g * M + mm) * N)
                    for nn in range(N):
                        F[out + 2 * nn] = sr[r, nn]
                        F[out + 2 * nn + 1] = si[r, nn]
                        chk += (sr[r, nn] - sr[r, nn]) + (si[r, nn] - si[r, nn])
    return NONFINITE if chk != 0.0 else 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def dg_rs(R, S, I, K1, nb, G, M, N, C, o, x0, xj, xd, xg, xm, xc, y0, yj, yd, yg, yc, yn):
    """A real lhs and a series rhs: one contraction per coefficient (k+1 in all)."""
    F = S.view(np.float64)
    size = G * M * N
    sr = np.zeros((K1, N))
    si = np.zeros((K1, N))
    br = np.empty((C, K1 * N))
    bi = np.empty((C, K1 * N))
    chk = 0.0
    for d in range(nb):
        for g in range(G):
            pack_series(F, br, bi, y0 + d * yd + g * yg, C, K1, N, yj, yc, yn)
            for mm in range(M):
                sr[:, :] = 0.0
                si[:, :] = 0.0
                for c in range(C):
                    a = R[x0 + d * xd + g * xg + mm * xm + c * xc]
                    for r in range(K1):
                        for nn in range(N):
                            sr[r, nn] += a * br[c, r * N + nn]
                            si[r, nn] += a * bi[c, r * N + nn]
                for r in range(K1):
                    out = 2 * (o + (r * nb + d) * size + (g * M + mm) * N)
                    for nn in range(N):
                        F[out + 2 * nn] = sr[r, nn]
                        F[out + 2 * nn + 1] = si[r, nn]
                        chk += (sr[r, nn] - sr[r, nn]) + (si[r, nn] - si[r, nn])
    return NONFINITE if chk != 0.0 else 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def take_r(R, S, I, K1, nb, pre, size, post, m, o, x0, xj, xd, xe, i0, id):
    n = pre * m * post
    for d in range(nb):
        for q in range(m):
            k = index_at(R, i0 + d * id + q, size)
            if k < 0:
                return -k
            for p in range(pre):
                for r in range(post):
                    R[o + d * n + (p * m + q) * post + r] = R[x0 + d * xd + (p * size + k) * post + r]
    return 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def take_s(R, S, I, K1, nb, pre, size, post, m, o, x0, xj, xd, xe, i0, id):
    n = pre * m * post
    for d in range(nb):
        for q in range(m):
            k = index_at(R, i0 + d * id + q, size)
            if k < 0:
                return -k
            for j in range(K1):
                for p in range(pre):
                    for r in range(post):
                        S[o + (j * nb + d) * n + (p * m + q) * post + r] = \\
                            S[x0 + j * xj + d * xd + (p * size + k) * post + r]
    return 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def scatter_add_r(R, S, I, K1, nb, pre, size, post, m, o, x0, xj, xd, xe, i0, id):
    n = pre * size * post
    for i in range(nb * n):
        R[o + i] = 0.0
    for d in range(nb):
        for q in range(m):
            k = index_at(R, i0 + d * id + q, size)
            if k < 0:
                return -k
            for p in range(pre):
                for r in range(post):
                    R[o + d * n + (p * size + k) * post + r] += R[x0 + d * xd + (p * m + q) * post + r]
    return 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def scatter_add_s(R, S, I, K1, nb, pre, size, post, m, o, x0, xj, xd, xe, i0, id):
    n = pre * size * post
    for i in range(K1 * nb * n):
        S[o + i] = 0.0
    for d in range(nb):
        for q in range(m):
            k = index_at(R, i0 + d * id + q, size)
            if k < 0:
                return -k
            for j in range(K1):
                for p in range(pre):
                    for r in range(post):
                        S[o + (j * nb + d) * n + (p * size + k) * post + r] += \\
                            S[x0 + j * xj + d * xd + (p * m + q) * post + r]
    return 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def load_rows_r(R, S, I, K1, D, t, n, o, col):
    """Per-step data: row t, columns col.. col+n-1 of D into R[o:o+n] (shared by directions)."""
    for i in range(n):
        R[o + i] = D[t, col + i]
    return 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def load_weights_r(R, S, I, K1, X, ids, t, nb, m, o):
    """Down-weights of step t: R[o + d*m + q] = X[d, ids[t, q]]."""
    for d in range(nb):
        for q in range(m):
            R[o + d * m + q] = X[d, ids[t, q]]
    return 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def load_weights_s(R, S, I, K1, X, ids, t, nb, m, o):
    """Series down-weights of step t: S[o + (j*nb + d)*m + q] = X[d, j, ids[t, q]]."""
    for j in range(K1):
        for d in range(nb):
            for q in range(m):
                S[o + (j * nb + d) * m + q] = X[d, j, ids[t, q]]
    return 0
'''

_INDEX_ERRORS = {1: "index operand holds a non-integer value",
                 2: "index out of range for the indexed axis"}
_ARRAY_ERRORS = {"take_r": _INDEX_ERRORS, "take_s": _INDEX_ERRORS,
                 "scatter_add_r": _INDEX_ERRORS, "scatter_add_s": _INDEX_ERRORS}


def _build_table() -> dict[str, Kernel]:
    table: dict[str, Kernel] = {}

    def put(kernel: Kernel) -> None:
        if kernel.name in table:
            raise ValueError(f"two kernels named {kernel.name}")
        table[kernel.name] = kernel

    for op in REAL_EXPR:
        put(_real_ew(op))
    for (op, kinds) in COEFFICIENTWISE:
        put(_coefficientwise(op, kinds))
    put(_cauchy_kernel())
    for op in list(_SERIES_BODIES) + [Op.MUL, Op.DIV]:
        for kinds in _series_kinds(ARITY.get(op, 2)):
            if ew_name(op, kinds) not in table:  # the per-element recurrence
                put(_series_ew(op, kinds, op in REAL_RESULT))
    for chunk in ARRAY_SOURCE.strip().split("\n\n\n"):
        name = chunk.split("def ", 1)[1].split("(", 1)[0]
        put(Kernel(name, chunk.strip(), _ARRAY_ERRORS.get(name, {})))
    put(Kernel("dg_ss", dg_ss_source(None).strip()))  # the library's is written per order
    return table


#: kernel name -> Kernel: the one table of generated array code (module doc)
KERNELS: dict[str, Kernel] = _build_table()

# ---------------------------------------------------------------- fused groups: array_fusion

HEADER = "\n".join([
    "import math", "import numpy as np", "import numba", "",
    f"KINK, IMAGINARY, NONFINITE = {KINK}, {IMAGINARY}, {NONFINITE}",
    # no fastmath anywhere: with reassociation or FMA contraction a kernel compiled in this
    # process and the same kernel loaded from Numba's disk cache gave different last bits, so
    # a sketch depended on whether the cache was warm (tests/test_distributed.py catches it)
    ""])


def specialise(source: str, k1: int) -> str:
    """A kernel's source for a library of one order: its ``K1`` argument is ignored in favour
    of the module constant ``K1C`` (Numba freezes globals at compile time, so every
    coefficient loop has a literal trip count that LLVM unrolls and vectorises)."""
    lines = source.splitlines()
    for n, line in enumerate(lines):
        if line.startswith("def ") and "(R, S, I, K1," in line:
            lines[n] = line.replace("(R, S, I, K1,", "(R, S, I, K1_,", 1)
            lines.insert(n + 1, "    K1 = K1C")
            break
    return "\n".join(lines)


#: orders up to which the Cauchy product of ``ew_mul_ss`` is unrolled into scalars
UNROLL_K1 = 8


def unrolled_cauchy(k1: int) -> str:
    """``ew_mul_ss`` for exactly ``k1`` coefficients: the element's coefficients in scalar
    locals (registers), c_r = sum_{q<=r} a_q b_{r-q} written out term by term."""
    params = ", ".join(_OPERAND.format(v=v) for v in "xy")
    loads = [f"a{q} = S[x0 + {q} * xj + d * xd + i * xe]" for q in range(k1)]
    loads += [f"b{q} = S[y0 + {q} * yj + d * yd + i * ye]" for q in range(k1)]
    terms = [f"c{r} = " + " + ".join(f"a{q} * b{r - q}" for q in range(r + 1)) for r in range(k1)]
    stores = [f"S[o + ({r} * nb + d) * n + i] = c{r}\nchk += c{r} - c{r}" for r in range(k1)]
    body = "\n".join(loads + terms + stores)
    return "\n".join([
        DECORATOR, f"def ew_mul_ss({EW_PARAMS}, {params}):", "    chk = 0j",
        "    for d in range(nb):", "        for i in range(n):", textwrap.indent(body, " " * 12),
        "    if chk.real != 0.0 or chk.imag != 0.0 or chk != chk:", "        return NONFINITE",
        "    return 0"])


def _unrolled_elementwise(name: str, kinds: str, k1: int, body: list[str]) -> str:
    """A per-element series kernel for exactly ``k1`` coefficients with every coefficient a
    scalar local: operand x's are ``x0..``, y's ``y0..`` (a real operand has only ``x0``, its
    higher terms 0.0); ``body`` computes ``c0..`` (the result) or returns an error code."""
    params = ", ".join(_OPERAND.format(v=v) for v in NAMES[:len(kinds)])
    loads = []
    for v, kind in zip(NAMES, kinds):
        if kind == "s":
            loads += [f"{v}{q} = S[{v}0_ + {q} * {v}j + d * {v}d + i * {v}e]" for q in range(k1)]
        else:
            loads += [f"{v}0 = R[{v}0_ + d * {v}d + i * {v}e] + 0j"]
            loads += [f"{v}{q} = 0j" for q in range(1, k1)]
    stores = [f"S[o + ({r} * nb + d) * n + i] = c{r}\nchk += c{r} - c{r}" for r in range(k1)]
    text = "\n".join(loads + body + stores)
    head = f"def {name}({EW_PARAMS}, {params}):".replace("x0,", "x0_,").replace("y0,", "y0_,")
    return "\n".join([
        DECORATOR, head, "    chk = 0j", "    A = np.empty(K1, np.complex128)",
        "    Y = np.empty(K1, np.complex128)", "    W = np.zeros((4, K1), np.complex128)",
        "    for d in range(nb):", "        for i in range(n):",
        textwrap.indent(text, " " * 12),
        "    if chk.real != 0.0 or chk.imag != 0.0 or chk != chk:", "        return NONFINITE",
        "    return 0"])


def div_body(k1: int) -> list[str]:
    """q_j = (a_j - sum_{i=1..j} b_i q_{j-i}) / b_0, written out."""
    lines = ["if y0.imag != 0:", "    return IMAGINARY", "if y0.real == 0:", "    return 2"]
    for j in range(k1):
        terms = "".join(f" - y{i} * c{j - i}" for i in range(1, j + 1))
        lines.append(f"c{j} = (x{j}{terms}) / y0")
    return lines


def exp_body(k1: int) -> list[str]:
    """y_0 = e^{a_0}, y_j = (1/j) sum_{i=1..j} i a_i y_{j-i}, written out."""
    lines = ["if x0.imag != 0:", "    return IMAGINARY", "c0 = math.exp(x0.real) + 0j"]
    for j in range(1, k1):
        lines.append(f"c{j} = (" + " + ".join(f"{i} * x{i} * c{j - i}" for i in range(1, j + 1))
                     + f") / {j}")
    return lines


def pow_body(k1: int) -> list[str]:
    """y_j = (1/(j a_0)) sum_{i=1..j} (p i - (j-i)) a_i y_{j-i}; a non-negative integer p
    (binary powering, exact at a_0 = 0) calls the generic helper."""
    lines = ["if p == math.floor(p) and p >= 0:",
             *[f"    A[{q}] = x{q}" for q in range(k1)],
             "    s_pow(A, A, A, Y, W, K1, p, kinks)",
             *[f"    c{q} = Y[{q}]" for q in range(k1)],
             "else:", "    if x0.imag != 0:", "        return IMAGINARY",
             "    if x0.real == 0:", "        return 1",
             "    if p != math.floor(p) and x0.real < 0:", "        return 2",
             "    c0 = x0.real ** p + 0j"]
    for j in range(1, k1):
        lines.append(f"    c{j} = (" + " + ".join(f"(p * {i} - {j - i}) * x{i} * c{j - i}"
                                                 for i in range(1, j + 1)) + f") / ({j} * x0)")
    return lines


#: kernels written out for a literal number of coefficients (orders up to UNROLL_K1 - 1)
_UNROLLED = {
    "ew_div_ss": ("ss", div_body), "ew_div_rs": ("rs", div_body),
    "ew_exp_s": ("s", exp_body), "ew_pow_s": ("s", pow_body),
}


def _library_kernel(name: str, k1: int) -> str:
    if name == "dg_ss":
        return dg_ss_source(k1)
    if k1 <= UNROLL_K1:
        if name == "ew_mul_ss":
            return unrolled_cauchy(k1)
        if name in _UNROLLED:
            kinds, body = _UNROLLED[name]
            return specialise(_unrolled_elementwise(name, kinds, k1, body(k1)), k1)
    return specialise(KERNELS[name].source, k1)


def library_source(k1: int) -> str:
    """The module of every table kernel for series of ``k1`` coefficients (compiled lazily,
    one kernel at a time, on first use)."""
    kernels = "\n\n\n".join(_library_kernel(name, k1) for name in KERNELS)
    return "\n".join([f'"""Generated by circuitsketch: the array kernel library for {k1} '
                      'coefficient(s). Do not edit."""',
                      HEADER, f"K1C = {k1}", "", SERIES_HELPERS.strip(), "", "", kernels, ""])


_LIBRARY: dict[int, object] = {}
_LOCK = threading.Lock()


def library(k1: int = 1):
    """The imported kernel library for ``k1`` coefficients (order k1 - 1; written under the
    kernel cache, Numba-cached on disk); imported once, under a lock (blocks of directions ask
    for it from several threads)."""
    with _LOCK:
        if k1 not in _LIBRARY:
            module = load_kernel_module(library_source(k1), "cs_array_lib")
            for name in KERNELS:
                getattr(module, name).__source__ = _library_kernel(name, k1)
            _LIBRARY[k1] = module
    return _LIBRARY[k1]


def source_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


__all__ = ["ARITY", "COEFFICIENTWISE", "COMMON_MESSAGES", "IMAGINARY", "KERNELS", "KINK", "Kernel",
           "NONFINITE", "REAL_ERRORS", "REAL_EXPR", "REAL_RESULT", "SERIES_ERRORS", "div_body",
           "ew_name", "exp_body", "library", "library_source", "pow_body", "series_body"]
