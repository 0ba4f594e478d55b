r"""The op-to-code table shared by the Numba CPU and CUDA backends.

Every tape instruction kind (a *variant*: an op specialised to real/series operands, plus the
loop plumbing ``copy``/``lift``/``load``/``check``) has one snippet of Python source computing
the instruction for **one direction** ``d``. The snippets are the backends' meaning of each op;
they follow the reference interpreter (``REAL_IMPL``) and the Taylor rules (``SERIES_RULES``)
formula by formula, so results agree to rounding.

Names a snippet may use::

    o, a, b, c   output and operand slots               x      the float attribute (p, op code)
    R[s, d]      real slot s, direction d               S[s, j, d]  coefficient j of series slot s
    T[i, j, d]   scratch series i (0..2)                K1     number of coefficients (order + 1)
    DR[t, q], DS[t, q, j]   per-step data column q at step t (real, series)
    XR[e, d], XS[e, j, d], ids[t, q]   per-example down-weights and the examples of step t
    check_kinks, check_finite   flags;  math and the helpers below

Two line markers carry the per-direction structure, so one snippet serves both targets:

* ``@ stmt`` runs for each direction: for a *hot* variant the CPU emitter groups consecutive
  ``@`` lines into an innermost ``for d in range(nd)`` loop over the direction block (``nd`` a
  compile-time constant), for the others it runs the whole snippet per direction inside one
  loop over the block; the CUDA emitter runs them once per thread (``d = cuda.grid(1)``).
* ``! CODE cond`` fails the instruction with error ``CODE`` if ``cond`` holds for a direction;
  the kernel returns ``n * 64 + CODE`` (``n``: instruction index) and Python raises the
  reference's error, naming the node and its source line (``ERRORS``).

Series helpers (``cauchy``, ``integrate``, ...) are snippets too, compiled once as functions
and called with ``K1, DIR`` (``DIR``: the block size on the CPU, the direction on CUDA).

The table is kept small on purpose (Numba's compile time grows with the kernel's source): the
tape compiler swaps commutative operands and *lifts* a real operand into a series temporary
where a variant takes series only, so most series ops exist in one kind combination. Variadic
``sum``/``dot`` keep per-operand kinds: they are the hot path, and a real*series pair is an O(k)
scale where a series*series pair is an O(k^2) Cauchy product.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

# ---------------------------------------------------------------- errors

NONFINITE = 13
_IMAGINARY = ("a series constant term has an imaginary part; constant terms are the real "
              "unperturbed run (seed series must have a real a_0)")
#: error code -> (message, is a kink). ``{p}``: the node's pow exponent, ``{op}``: its op.
ERRORS: dict[int, tuple[str, bool]] = {
    1: ("division by zero", False),
    2: ("zero raised to the negative power {p}", False),
    3: ("non-positive base raised to the non-integer power {p}", False),
    4: ("log of a non-positive value", False),
    5: ("sqrt of a negative value", False),
    6: ("division by a series whose constant term is zero", False),
    7: ("log of a non-positive constant term", False),
    8: ("power {p} of a series whose constant term is zero", False),
    9: ("non-integer power {p} of a negative constant term", False),
    10: ("relu at exactly 0: not analytic there (pass ignore_kinks=True to accept)", True),
    11: ("max of two equal values: not analytic there (pass ignore_kinks=True)", True),
    12: ("{op} of two equal values: the comparison jumps here, so its Taylor series is undefined "
         "(pass ignore_kinks=True to accept)", True),
    NONFINITE: ("a non-finite value reached an output", False),
    14: (_IMAGINARY, False),
    15: ("select on a series condition that is exactly 0: the choice jumps here (pass "
         "ignore_kinks=True to accept)", True),
}

# ---------------------------------------------------------------- helpers

#: scalar functions of one direction's values; each target decorates them as device functions
SCALAR_HELPERS = """
def unary(code, v):
    # exp, tanh, erf, gelu = v Phi(v), relu, neg, identity (code 0..6)
    if code == 0.0:
        return math.exp(v)
    if code == 1.0:
        return math.tanh(v)
    if code == 2.0:
        return math.erf(v)
    if code == 3.0:
        return v * (0.5 * math.erfc(-v / SQRT2))
    if code == 4.0:
        return max(v, 0.0)
    if code == 5.0:
        return -v
    return v


def binary(code, u, v):
    # u < v, u <= v, u > v, u >= v, u == v as 1.0/0.0, and max (code 0..5)
    if code == 0.0:
        return 1.0 if u < v else 0.0
    if code == 1.0:
        return 1.0 if u <= v else 0.0
    if code == 2.0:
        return 1.0 if u > v else 0.0
    if code == 3.0:
        return 1.0 if u >= v else 0.0
    if code == 4.0:
        return 1.0 if u == v else 0.0
    return max(u, v)
"""

#: the op code ``unary``/``binary`` read from an instruction's attribute
UNARY_CODES = {"exp": 0.0, "tanh": 1.0, "erf": 2.0, "gelu": 3.0, "relu": 4.0, "neg": 5.0,
               "stop_gradient": 6.0}
BINARY_CODES = {"lt": 0.0, "le": 1.0, "gt": 2.0, "ge": 3.0, "eq": 4.0, "max": 5.0}

#: series helpers (name, parameters, snippet): Y, A, G are series arrays (S or the scratch T),
#: y, a, g their slots; every target appends the parameters ``K1, DIR``.
SERIES_HELPERS = (
    ("cauchy", "Y, y, A, a, G, g", """
        # Y = A * G: y_j = sum_{i<=j} a_i g_{j-i}, summed from i = 0 as numpy does
        for j in range(K1):
            @ Y[y, j, d] = A[a, 0, d] * G[g, j, d]
            for i in range(1, j + 1):
                @ Y[y, j, d] += A[a, i, d] * G[g, j - i, d]
    """),
    ("cauchy_add4", "Y, y, A, a, G, g", """
        # Y += A * G at order 3 (K1 == 4), each direction's 4 sums in registers, added in
        # cauchy's order; the CPU runs this as hand-vectorised LLVM (backends/cpu_native.py)
        @ a0, a1, a2, a3 = A[a, 0, d], A[a, 1, d], A[a, 2, d], A[a, 3, d]
        @ g0, g1, g2, g3 = G[g, 0, d], G[g, 1, d], G[g, 2, d], G[g, 3, d]
        @ Y[y, 0, d] = Y[y, 0, d] + a0 * g0
        @ Y[y, 1, d] = Y[y, 1, d] + a0 * g1 + a1 * g0
        @ Y[y, 2, d] = Y[y, 2, d] + a0 * g2 + a1 * g1 + a2 * g0
        @ Y[y, 3, d] = Y[y, 3, d] + a0 * g3 + a1 * g2 + a2 * g1 + a3 * g0
    """),
    ("cauchy_add2", "Y, y, A, a, G, g", """
        # the same at order 1 (K1 == 2)
        @ a0, a1, g0, g1 = A[a, 0, d], A[a, 1, d], G[g, 0, d], G[g, 1, d]
        @ Y[y, 0, d] = Y[y, 0, d] + a0 * g0
        @ Y[y, 1, d] = Y[y, 1, d] + a0 * g1 + a1 * g0
    """),
    ("cauchy_add7", "Y, y, A, a, G, g", """
        # the same at order 6 (K1 == 7; the loop serves CUDA, the CPU's version is unrolled)
        for j in range(K1):
            for i in range(j + 1):
                @ Y[y, j, d] += A[a, i, d] * G[g, j - i, d]
    """),
    ("integrate", "Y, y, A, a, G, g", """
        # F(A) from y_0 = F(a_0) (already in Y) and the series G of F'(A):
        # y_j = (1/j) sum_{i=1..j} i a_i g_{j-i}; G may be Y itself (exp: F' = F)
        for j in range(1, K1):
            @ Y[y, j, d] = (1 * A[a, 1, d]) * G[g, j - 1, d]
            for i in range(2, j + 1):
                @ Y[y, j, d] += (i * A[a, i, d]) * G[g, j - i, d]
            @ Y[y, j, d] = Y[y, j, d] / j
    """),
    ("exp_series", "Y, y, A, a", """
        # Y = exp(A): y_0 = e^{a_0}, y_j = (1/j) sum_{i=1..j} i a_i y_{j-i}
        @ Y[y, 0, d] = math.exp(A[a, 0, d].real)
        integrate(Y, y, A, a, Y, y, K1, DIR)
    """),
    ("scale", "Y, y, A, a, v", """
        # Y = A * v for a constant v
        for j in range(K1):
            @ Y[y, j, d] = A[a, j, d] * v
    """),
    ("copy", "Y, y, A, a", """
        for j in range(K1):
            @ Y[y, j, d] = A[a, j, d]
    """),
    ("zero", "Y, y", """
        for j in range(K1):
            @ Y[y, j, d] = 0j
    """),
)

# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class Variant:
    """One instruction kind: ``key`` = (name, result kind, operand kinds) and its snippet."""

    key: tuple[str, str, str]
    body: str
    #: variadic ops: per-operand (sum) or per-pair (dot) snippets keyed by operand kinds
    terms: tuple[tuple[str, str], ...] = ()
    #: variadic ops: run after the terms (e.g. store an accumulator)
    final: str = ""
    #: frequent in training steps: the CPU runs it vectorised over the direction block
    hot: bool = False
    #: output coefficient j depends only on operand coefficient j and is written after they are
    #: read: the output may take an operand's slot (in-place update of carried state)
    elementwise: bool = False

    @property
    def name(self) -> str:
        name, result, kinds = self.key
        return f"{name}_{result}{'_' + kinds if kinds else ''}"

    @property
    def variadic(self) -> bool:
        return bool(self.terms)

    @property
    def reads_series(self) -> bool:
        """Whether the variant touches series arrays (a real circuit's kernel leaves it out)."""
        code = self.body + "".join(t for _, t in self.terms)
        return any(name in code for name in ("S[", "T[", "XS[", "DS[", "(S,", "(T,"))


VARIANTS: list[Variant] = []


def _add(name: str, result: str, kinds: str, *body: str, terms: dict[str, str] | None = None,
         final: str = "", hot: bool = False, elementwise: bool = False) -> None:
    """Register a variant; ``body`` parts are dedented one by one and joined."""
    VARIANTS.append(Variant((name, result, kinds), _block(*body),
                            tuple((k, _block(v)) for k, v in (terms or {}).items()), _block(final),
                            hot, elementwise))


def _block(*parts: str) -> str:
    return "\n".join(textwrap.dedent(part).strip("\n") for part in parts)


def _real_const_term(slot: str) -> str:
    """``const_term`` of a series operand: its a_0 must be real (error 14)."""
    return f"! 14 S[{slot}, 0, d].imag != 0.0"


def _kink(code: int, switch: str) -> str:
    """Kink check on the series ``switch`` (a format with {} for the coefficient): a_0 == 0 but
    not identically 0 along z (the reference's ``_check_kink``)."""
    return f"""
        if check_kinks:
            ! 14 ({switch.format(0)}).imag != 0.0
            for j in range(1, K1):
                ! {code} ({switch.format(0)}).real == 0.0 and ({switch.format("j")}) != 0
    """


# The hot path first (the interpreter tests the opcode in this order).
# ---- dot and sum: a real*series pair is a scale, O(k); series*series a Cauchy product, O(k^2)
_add("dot", "s", "", "zero(S, o, K1, DIR)", terms={
    "ss": """
        if K1 == 4:
            cauchy_add4(S, o, S, a, S, b, K1, DIR)
        elif K1 == 2:
            cauchy_add2(S, o, S, a, S, b, K1, DIR)
        elif K1 == 7:
            cauchy_add7(S, o, S, a, S, b, K1, DIR)
        else:
            for j in range(K1):
                for i in range(j + 1):
                    @ S[o, j, d] += S[a, i, d] * S[b, j - i, d]
    """,
    "sr": "for j in range(K1):\n    @ S[o, j, d] += S[a, j, d] * R[b, d]",
    "rs": "for j in range(K1):\n    @ S[o, j, d] += R[a, d] * S[b, j, d]",
    "rr": "@ S[o, 0, d] += R[a, d] * R[b, d]"}, hot=True)
# a real dot runs per direction with its sum in a register (s is one direction's local)
_add("dot", "r", "", "s = 0.0", terms={"rr": "s += R[a, d] * R[b, d]"}, final="R[o, d] = s")
_add("mul", "s", "ss", "cauchy(S, o, S, a, S, b, K1, DIR)", hot=True)
_add("mul", "s", "sr", "for j in range(K1):\n    @ S[o, j, d] = S[a, j, d] * R[b, d]", hot=True,
     elementwise=True)
for _name, _sym in (("add", "+"), ("sub", "-")):
    _add(_name, "s", "ss", f"for j in range(K1):\n    @ S[o, j, d] = S[a, j, d] {_sym} S[b, j, d]",
         hot=True, elementwise=True)
    _add(_name, "s", "sr", "copy(S, o, S, a, K1, DIR)", f"@ S[o, 0, d] = S[a, 0, d] {_sym} R[b, d]",
         hot=True, elementwise=True)
for _name, _sym in (("add", "+"), ("sub", "-"), ("mul", "*")):
    _add(_name, "r", "", f"@ R[o, d] = R[a, d] {_sym} R[b, d]", hot=True, elementwise=True)
_add("sum", "s", "", "zero(S, o, K1, DIR)", terms={
    "s": "for j in range(K1):\n    @ S[o, j, d] += S[a, j, d]",
    "r": "@ S[o, 0, d] += R[a, d]"}, hot=True)
_add("sum", "r", "", "@ R[o, d] = 0.0", terms={"r": "@ R[o, d] += R[a, d]"}, hot=True)
# q_j = (a_j - sum_{i=1..j} b_i q_{j-i}) / b_0; b_0 is real (checked), and dividing by it as a
# real number gives the same bits as numpy's complex division by (b_0, 0)
_add("div", "s", "ss", """
    ! 14 S[b, 0, d].imag != 0.0
    ! 6 S[b, 0, d] == 0
    for j in range(K1):
        @ T[0, 0, d] = 0j
        for i in range(1, j + 1):
            @ T[0, 0, d] += S[b, i, d] * S[o, j - i, d]
        @ S[o, j, d] = (S[a, j, d] - T[0, 0, d]) / S[b, 0, d].real
""", hot=True)
_add("div", "s", "sr", """
    ! 1 R[b, d] == 0.0
    for j in range(K1):
        @ S[o, j, d] = S[a, j, d] / R[b, d]
""", hot=True, elementwise=True)
_add("div", "r", "", """
    ! 1 R[b, d] == 0.0
    @ R[o, d] = R[a, d] / R[b, d]
""", hot=True, elementwise=True)

# ---- real results
_add("pow", "r", "", """
    if x == math.floor(x):
        if x < 0.0:
            ! 2 R[a, d] == 0.0
    else:
        ! 3 R[a, d] < 0.0 or (x < 0.0 and R[a, d] == 0.0)
    @ R[o, d] = R[a, d] ** x
""", elementwise=True)
_add("log", "r", "", """
    ! 4 R[a, d] <= 0.0
    @ R[o, d] = math.log(R[a, d])
""", elementwise=True)
_add("sqrt", "r", "", """
    ! 5 R[a, d] < 0.0
    @ R[o, d] = math.sqrt(R[a, d])
""", elementwise=True)
_add("unary", "r", "", "@ R[o, d] = unary(x, R[a, d])", elementwise=True)
_add("binary", "r", "", "@ R[o, d] = binary(x, R[a, d], R[b, d])", elementwise=True)
_add("select", "r", "", "@ R[o, d] = R[b, d] if R[a, d] != 0.0 else R[c, d]", elementwise=True)
# stop_gradient and comparisons of series read the constant terms (comparisons: of both series)
_add("const_term", "r", "s", _real_const_term("a"), "@ R[o, d] = S[a, 0, d].real")
_add("compare", "r", "ss", _kink(12, "S[a, {0}, d] - S[b, {0}, d]"), _real_const_term("a"),
     _real_const_term("b"), "@ R[o, d] = binary(x, S[a, 0, d].real, S[b, 0, d].real)")

# ---- series results
_add("neg", "s", "s", "scale(S, o, S, a, -1.0, K1, DIR)", hot=True, elementwise=True)
# integer p >= 0: binary powering of series (exact whatever a_0 is)
_add("ipow", "s", "s", """
    zero(T, 0, K1, DIR)
    @ T[0, 0, d] = 1.0
    copy(T, 1, S, a, K1, DIR)
    e = int(x)
    while e:
        if e & 1:
            cauchy(T, 2, T, 0, T, 1, K1, DIR)
            copy(T, 0, T, 2, K1, DIR)
        e >>= 1
        if e:
            cauchy(T, 2, T, 1, T, 1, K1, DIR)
            copy(T, 1, T, 2, K1, DIR)
    copy(S, o, T, 0, K1, DIR)
""")
# other p: y_0 = a_0^p, y_j = (1/(j a_0)) sum_{i=1..j} (p i - (j - i)) a_i y_{j-i}
_add("pow", "s", "s", _real_const_term("a"), """
    ! 8 S[a, 0, d] == 0
    if x != math.floor(x):
        ! 9 S[a, 0, d].real < 0.0
    @ S[o, 0, d] = S[a, 0, d].real ** x
    for j in range(1, K1):
        @ S[o, j, d] = ((x * 1 - (j - 1)) * S[a, 1, d]) * S[o, j - 1, d]
        for i in range(2, j + 1):
            @ S[o, j, d] += ((x * i - (j - i)) * S[a, i, d]) * S[o, j - i, d]
        @ S[o, j, d] = S[o, j, d] / (j * S[a, 0, d].real)
""")
# exp, erf and gelu of series are hot: few instructions (microgpt's softmax and MLP) but each a
# chain of helper calls, which per direction (cold) cost ~20% of the order-3 step
_add("exp", "s", "s", _real_const_term("a"), "exp_series(S, o, S, a, K1, DIR)", hot=True)
_add("log", "s", "s", _real_const_term("a"), """
    ! 7 S[a, 0, d].real <= 0.0
    @ S[o, 0, d] = math.log(S[a, 0, d].real)
    for j in range(1, K1):
        @ T[0, 0, d] = 0j
        for i in range(1, j):
            @ T[0, 0, d] += (i * S[o, i, d]) * S[a, j - i, d]
        @ S[o, j, d] = (S[a, j, d] - T[0, 0, d] / j) / S[a, 0, d].real
""")
# tanh' = 1 - tanh^2 =: g, built one coefficient behind y; g_0 = sech^2 a_0 without cancellation
_add("tanh", "s", "s", _real_const_term("a"), """
    @ S[o, 0, d] = math.tanh(S[a, 0, d].real)
    @ T[0, 0, d] = 4.0 * math.exp(-2.0 * abs(S[a, 0, d].real)) / (1.0 + math.exp(-2.0 * abs(S[a, 0, d].real))) ** 2
    for j in range(1, K1):
        @ S[o, j, d] = (1 * S[a, 1, d]) * T[0, j - 1, d]
        for i in range(2, j + 1):
            @ S[o, j, d] += (i * S[a, i, d]) * T[0, j - i, d]
        @ S[o, j, d] = S[o, j, d] / j
        @ T[0, j, d] = S[o, 0, d] * S[o, j, d]
        for i in range(1, j + 1):
            @ T[0, j, d] += S[o, i, d] * S[o, j - i, d]
        @ T[0, j, d] = -T[0, j, d]
""")
# erf' = 2/sqrt(pi) exp(-a^2);  GELU = a Phi(a) with Phi' = exp(-a^2/2) / sqrt(2 pi)
_add("erf", "s", "s", _real_const_term("a"), """
    cauchy(T, 0, S, a, S, a, K1, DIR)
    scale(T, 0, T, 0, -1.0, K1, DIR)
    exp_series(T, 1, T, 0, K1, DIR)
    scale(T, 1, T, 1, TWO_OVER_SQRTPI, K1, DIR)
    @ S[o, 0, d] = math.erf(S[a, 0, d].real)
    integrate(S, o, S, a, T, 1, K1, DIR)
""", hot=True)
_add("gelu", "s", "s", _real_const_term("a"), """
    cauchy(T, 0, S, a, S, a, K1, DIR)
    scale(T, 0, T, 0, -0.5, K1, DIR)
    exp_series(T, 1, T, 0, K1, DIR)
    for j in range(K1):
        @ T[1, j, d] = T[1, j, d] / SQRT_2PI
    @ T[2, 0, d] = 0.5 * math.erfc(-S[a, 0, d].real / SQRT2)
    integrate(T, 2, S, a, T, 1, K1, DIR)
    cauchy(S, o, S, a, T, 2, K1, DIR)
""", hot=True)
# non-analytic gates: the branch is decided on the real constant term
_add("relu", "s", "s", _kink(10, "S[a, {0}, d]"), _real_const_term("a"), """
    for j in range(K1):
        @ S[o, j, d] = S[a, j, d] if S[a, 0, d].real > 0.0 else 0j
""")
_add("max", "s", "ss", _kink(11, "S[a, {0}, d] - S[b, {0}, d]"), _real_const_term("a"),
     _real_const_term("b"), """
    for j in range(K1):
        @ S[o, j, d] = S[a, j, d] if S[a, 0, d].real >= S[b, 0, d].real else S[b, j, d]
""")
_add("select", "s", "rss", """
    for j in range(K1):
        @ S[o, j, d] = S[b, j, d] if R[a, d] != 0.0 else S[c, j, d]
""")
_add("select", "s", "sss", _kink(15, "S[a, {0}, d]"), _real_const_term("a"), """
    for j in range(K1):
        @ S[o, j, d] = S[b, j, d] if S[a, 0, d].real != 0.0 else S[c, j, d]
""")

# ---- loop plumbing: carried state, lifted operands, per-step inputs, output checks
_add("copy", "r", "r", "@ R[o, d] = R[a, d]", hot=True)
_add("copy", "s", "s", "copy(S, o, S, a, K1, DIR)", hot=True)
_add("lift", "s", "r", "zero(S, o, K1, DIR)", "@ S[o, 0, d] = R[a, d]", hot=True)
_add("load_data", "r", "", "@ R[o, d] = DR[t, a]")
_add("load_data", "s", "", "for j in range(K1):\n    @ S[o, j, d] = DS[t, a, j]")
_add("load_weight", "r", "", "@ R[o, d] = XR[ids[t, a], d]")
_add("load_weight", "s", "", "for j in range(K1):\n    @ S[o, j, d] = XS[ids[t, a], j, d]")
# one instruction per kind checks every output slot listed as its operands
_add("check", "r", "", """
    if check_finite:
        for q in range(p0, p1):
            a = arg[q] >> 1
            ! 13 not math.isfinite(R[a, d])
""", hot=True)
_add("check", "s", "", """
    if check_finite:
        for q in range(p0, p1):
            a = arg[q] >> 1
            for j in range(K1):
                ! 13 not (math.isfinite(S[a, j, d].real) and math.isfinite(S[a, j, d].imag))
""", hot=True)

#: variant id (the opcode stored in a tape) by key
VARIANT_ID: dict[tuple[str, str, str], int] = {v.key: i for i, v in enumerate(VARIANTS)}

#: module-level constants of every generated kernel
CONSTANTS = {"SQRT2": "math.sqrt(2.0)", "SQRT_2PI": "math.sqrt(2.0 * math.pi)",
             "TWO_OVER_SQRTPI": "2.0 / math.sqrt(math.pi)"}
