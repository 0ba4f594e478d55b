r"""Fused groups of elementwise ops: one generated loop nest for a chain of same-shape nodes.

The planner (``array_engine._Planner._groups``) makes a group of elementwise nodes where each
member has exactly one reader, the next member, of the same shape; the group root (the last
member) is the only value stored. Its leaves (operands from outside the group) are loaded once
per element, through the descriptors of :mod:`.array_codegen`.

* **Real groups** (:func:`fused_kernel`): every member is a real op; each member's value is a
  local scalar (a register), computed by the expression of ``array_codegen.REAL_EXPR``.
* **Series groups** (:func:`fused_series_kernel`): the root is a series. Per (direction,
  element) each series value -- a series leaf or member, or a real one read by a series member
  -- is a scratch row of ``K1`` coefficients (a real value sits in coefficient 0, the others
  stay 0), and each series member runs the per-element rule of ``array_codegen.series_body``
  (the helpers ``s_exp``, ``s_pow``, ... of ``SERIES_HELPERS``) on its operands' rows: the one
  table of Taylor rules, with its operand names bound to the rows. Real members stay scalars.
  The kernel is specialised to its order (``K1 = K1C``, a literal trip count for every
  coefficient loop), as the library is.

Error codes: a member's failure returns ``member * MEMBER + code`` (the unfused kernel's own
code: a domain error, :data:`KINK`, :data:`IMAGINARY`, or :data:`NONFINITE` when one of its
values is Inf or NaN), so ``Plan.describe`` names the member's node and traced line. Within a
group the elements run in order through every member, so with errors in two members the one
reported is the first element's (unfused: the first member's).
"""

from __future__ import annotations

import re
import textwrap
import threading
from dataclasses import dataclass

from ..ir.ops import Op
from .array_codegen import (COEFFICIENTWISE, COMMON_MESSAGES, DECORATOR, EW_PARAMS, HEADER,
                            IMAGINARY, KINK, NONFINITE, REAL_ERRORS, REAL_EXPR, REAL_RESULT,
                            SERIES_ERRORS, SERIES_HELPERS, UNROLL_K1, Kernel, div_body, exp_body,
                            pow_body, series_body, source_hash, specialise)
from .emit import load_kernel_module

#: error codes of a fused kernel: member * MEMBER + the member's own code
MEMBER = 256
#: real ops a real group may hold
FUSABLE = frozenset(REAL_EXPR)
#: ops a series group may hold as series members: every per-element rule with a series result
SERIES_FUSABLE = frozenset({Op.ADD, Op.SUB, Op.NEG, Op.MUL, Op.DIV, Op.POW, Op.SQRT, Op.EXP,
                            Op.LOG, Op.TANH, Op.ERF, Op.GELU, Op.RELU, Op.MAX, Op.SELECT})
assert not SERIES_FUSABLE & REAL_RESULT


@dataclass(frozen=True)
class FusedMember:
    """One op of a fused group: its operands are leaves ``("leaf", i)`` or earlier members
    ``("member", i)``; ``p`` the attribute of pow."""

    op: Op
    operands: tuple[tuple[str, int], ...]
    p: float = 0.0


@dataclass(frozen=True)
class FusedKernel(Kernel):
    """A fused group's kernel; ``k1``: the coefficients it is specialised to (0: a real group,
    which does not depend on the order)."""

    k1: int = 0


def _leaf_params(n_leaves: int) -> str:
    # "_" keeps leaf 1's offset (l1_0) apart from leaf 10's value (l10)
    return ", ".join(f"l{q}_0, l{q}_j, l{q}_d, l{q}_e" for q in range(n_leaves))


def _real_member(m: int, member: FusedMember, names: dict[str, str | None]) -> list[str]:
    """Lines computing real member ``m`` into the scalar ``v{m}`` (its check returns first)."""
    expr, check = REAL_EXPR[member.op]

    def bind(text: str) -> str:
        text = re.sub(r"\bp\b", repr(float(member.p)), text)
        return re.sub(r"\b([xyz])\b", lambda hit: names[hit.group(1)], text)
    lines = [f"c = {bind(check)}", "if c:", f"    return {m * MEMBER} + c"] if check else []
    return lines + [f"v{m} = {bind(expr)}", f"chk{m} += v{m} - v{m}"]


def _errors(m: int, table: dict[int, str], codes=(NONFINITE,)) -> dict[int, str]:
    out = {m * MEMBER + code: message for code, message in table.items()}
    out.update({m * MEMBER + code: COMMON_MESSAGES[code] for code in codes})
    return out


def fused_kernel(members: list[FusedMember], n_leaves: int) -> FusedKernel:
    """One loop nest computing a chain of same-shape real elementwise ops: leaves are loaded
    once per element, every member is a local value (register), only the last is stored.
    A member's domain check or non-finite value returns ``member * MEMBER + code``, so the
    error names the member's node; its messages are the unfused kernels'."""
    params = _leaf_params(n_leaves)
    body = [f"l{q} = R[l{q}_0 + d * l{q}_d + i * l{q}_e]" for q in range(n_leaves)]
    errors: dict[int, str] = {}
    for m, member in enumerate(members):
        names = {"x": None, "y": None, "z": None}
        for name, (kind, q) in zip("xyz", member.operands):
            names[name] = f"l{q}" if kind == "leaf" else f"v{q}"
        body += _real_member(m, member, names)
        errors.update(_errors(m, REAL_ERRORS.get(member.op, {})))
    body.append(f"R[o + d * n + i] = v{len(members) - 1}")
    text = "\n".join(body)
    name = "fused_" + source_hash(text + params)
    checks = [line for m in range(len(members))
              for line in (f"    if chk{m} != 0.0:", f"        return {m * MEMBER + NONFINITE}")]
    source = "\n".join([
        DECORATOR, f"def {name}({EW_PARAMS}, {params}):",
        *[f"    chk{m} = 0.0" for m in range(len(members))],
        "    for d in range(nb):", "        for i in range(n):", textwrap.indent(text, " " * 12),
        *checks, "    return 0"])
    return FusedKernel(name, source, errors)


def _bind(body: str, p: float, base: int) -> str:
    """A rule's text with ``p`` the member's literal and each ``return code`` offset by
    ``base`` (the member's error codes)."""
    body = re.sub(r"\bp\b", repr(float(p)), body)
    return re.sub(r"\breturn (.+)$", rf"return {base} + (\1)", body, flags=re.M)


def _row_member(m: int, member: FusedMember, kinds: str, rows: list[str]) -> list[str]:
    """Series member ``m`` on rows (any order): the table rule with its operands ``A``/``B``/
    ``C`` and result ``Y`` renamed to rows (an operand the op does not have -- a unary rule
    passes ``B``, ``C`` on unread -- as ``A``)."""
    names = dict(zip("ABC", rows), Y=f"M{m}")
    body = re.sub(r"\b[ABCY]\b", lambda hit: names.get(hit.group(0), rows[0]),
                  series_body(member.op, kinds))
    return ["c = 0", _bind(body, member.p, m * MEMBER), "if c:", f"    return {m * MEMBER} + c",
            f"for j in range(K1):\n    chk{m} += M{m}[j] - M{m}[j]"]


#: series rules written out for a literal number of coefficients (array_codegen's unrolled
#: kernels): op -> (operand kinds it serves, body builder, p it forces)
_WRITTEN_OUT = {Op.DIV: (("ss", "rs"), div_body, None), Op.EXP: (("s",), exp_body, None),
                Op.POW: (("s",), pow_body, None), Op.SQRT: (("s",), pow_body, 0.5)}


def _unrolled_member(m: int, member: FusedMember, kinds: str, coeffs: list[list[str]],
                     reals: list[str | None], k1: int) -> list[str]:
    """Series member ``m`` with every coefficient a scalar local (orders below UNROLL_K1):
    ``coeffs[k][q]`` is operand k's coefficient q, ``reals[k]`` its real scalar (real
    operands). Coefficientwise ops and the Cauchy product are written out; div, exp, pow, sqrt
    run array_codegen's written-out recurrences; any other op copies its operands into the
    rows ``A``/``B``/``C`` and runs its table rule into ``Y``."""
    op, base, out = member.op, m * MEMBER, [f"M{m}c{q}" for q in range(k1)]
    if (op, kinds) in COEFFICIENTWISE:
        lines = [f"if {reals[1]} == 0.0:", f"    return {base + 1}"] if op is Op.DIV else []
        for q in range(k1):
            names = {"X": coeffs[0][q], "x": reals[0], "z0": "1.0" if q == 0 else "0.0",
                     "Y": coeffs[-1][q], "y": reals[-1]}
            expr = re.sub(r"\b(X|Y|x|y|z0)\b", lambda hit: names[hit.group(1)],
                          COEFFICIENTWISE[op, kinds])
            lines.append(f"{out[q]} = {expr}")
    elif op is Op.MUL and kinds == "ss":
        lines = [f"{out[r]} = " + " + ".join(f"{coeffs[0][q]} * {coeffs[1][r - q]}"
                                             for q in range(r + 1)) for r in range(k1)]
    elif op in _WRITTEN_OUT and kinds in _WRITTEN_OUT[op][0] and not _binary_power(member):
        _, body, forced = _WRITTEN_OUT[op]
        names = {"x": coeffs[0], "y": coeffs[-1], "c": out}
        text = "\n".join(body(k1))
        if op in (Op.POW, Op.SQRT):  # p is known: only the recurrence's branch (see below)
            text = textwrap.dedent(text.split("\nelse:\n", 1)[1])
        text = re.sub(r"\b([xyc])(\d+)\b", lambda hit: names[hit.group(1)][int(hit.group(2))],
                      text)
        lines = [_bind(text, member.p if forced is None else forced, base)]
    else:
        lines = [f"{name}[{q}] = {coeffs[k][q]}" for k, name in zip(range(len(coeffs)), "ABC")
                 for q in range(k1)]
        lines += ["c = 0", _bind(series_body(op, kinds), member.p, base), "if c:",
                  f"    return {base} + c", *[f"{out[q]} = Y[{q}]" for q in range(k1)]]
    return lines + [f"chk{m} += " + " + ".join(f"({c} - {c})" for c in out)]


def _binary_power(member: FusedMember) -> bool:
    """A pow by a non-negative integer: the table's binary powering (``s_pow``), exact at
    a_0 = 0, rather than the written-out recurrence (which divides by a_0)."""
    return member.op is Op.POW and float(member.p).is_integer() and member.p >= 0


class _Group:
    """The values of a series group: leaves first, then members; which are series, and how
    a member reads its operands (rows, or scalar coefficients when ``unrolled``)."""

    def __init__(self, members: list[FusedMember], leaf_kinds: str, k1: int) -> None:
        self.members, self.k1, self.n_leaves = members, k1, len(leaf_kinds)
        self.unrolled = k1 <= UNROLL_K1
        self.series = [kind == "s" for kind in leaf_kinds]
        for member in members:
            self.series.append(any(self.series[v] for v in self.operands(member)))
        if not self.series[-1]:
            raise ValueError("a series group's root must be a series (real groups: fused_kernel)")
        self.lifted = {v for member, s in zip(members, self.series[self.n_leaves:]) if s
                       for v in self.operands(member) if not self.series[v]}

    def operands(self, member: FusedMember) -> list[int]:
        return [q if kind == "leaf" else self.n_leaves + q for kind, q in member.operands]

    def row(self, v: int) -> str:
        return f"L{v}" if v < self.n_leaves else f"M{v - self.n_leaves}"

    def scalar(self, v: int) -> str:
        return f"l{v}" if v < self.n_leaves else f"v{v - self.n_leaves}"

    def coeffs(self, v: int) -> list[str]:
        if self.series[v]:
            return [f"{self.row(v)}c{q}" for q in range(self.k1)]
        return [f"({self.scalar(v)} + 0j)"] + ["0j"] * (self.k1 - 1)

    def load(self, q: int) -> list[str]:
        """Leaf q's loads (a real leaf read by a series member: its row's coefficient 0)."""
        if not self.series[q]:
            lift = [f"L{q}[0] = l{q}"] if q in self.lifted and not self.unrolled else []
            return [f"l{q} = R[l{q}_0 + d * l{q}_d + i * l{q}_e]"] + lift
        at = f"S[l{q}_0 + {{j}} * l{q}_j + d * l{q}_d + i * l{q}_e]"
        if self.unrolled:
            return [f"L{q}c{j} = {at.format(j=j)}" for j in range(self.k1)]
        return [f"for j in range(K1):\n    L{q}[j] = {at.format(j='j')}"]

    def member(self, m: int) -> list[str]:
        member, values = self.members[m], self.operands(self.members[m])
        if not self.series[self.n_leaves + m]:
            lines = _real_member(m, member, dict(zip("xyz", map(self.scalar, values))))
            lifted = self.n_leaves + m in self.lifted and not self.unrolled
            return lines + ([f"M{m}[0] = v{m}"] if lifted else [])
        kinds = "".join("s" if self.series[v] else "r" for v in values)
        if not self.unrolled:
            return _row_member(m, member, kinds, [self.row(v) for v in values])
        reals = [None if self.series[v] else self.scalar(v) for v in values]
        return _unrolled_member(m, member, kinds, [self.coeffs(v) for v in values], reals,
                                self.k1)

    def store(self) -> list[str]:
        root = len(self.members) - 1
        at = "S[o + ({j} * nb + d) * n + i]"
        if self.unrolled:
            return [f"{at.format(j=j)} = M{root}c{j}" for j in range(self.k1)]
        return [f"for j in range(K1):\n    {at.format(j='j')} = M{root}[j]"]

    def scratch(self, text: str) -> list[str]:
        """The rows ``text`` uses (unrolled: none unless a member runs a table rule)."""
        if self.unrolled:
            rows = [name for name in "ABCY" if re.search(rf"\b{name}\b", text)]
        else:
            rows = [self.row(v) for v in range(len(self.series))
                    if self.series[v] or v in self.lifted]
        work = ["W = np.zeros((4, K1), np.complex128)"] if re.search(r"\bW\b", text) else []
        return [f"{name} = np.zeros(K1, np.complex128)" for name in rows] + work


def fused_series_kernel(members: list[FusedMember], leaf_kinds: str, k1: int) -> FusedKernel:
    """One loop nest over (direction, element) computing a same-shape group whose root is a
    series (module doc): ``leaf_kinds`` says which leaves are series (``"s"``) or real
    (``"r"``); a member is a series when one of its operands is. Specialised to ``k1``
    coefficients; below ``UNROLL_K1`` every coefficient is a scalar local."""
    group = _Group(members, leaf_kinds, k1)
    body = [line for q in range(group.n_leaves) for line in group.load(q)]
    errors: dict[int, str] = {}
    for m, member in enumerate(members):
        body += group.member(m)
        if group.series[group.n_leaves + m]:
            table, codes = SERIES_ERRORS.get(member.op, {}), (KINK, IMAGINARY, NONFINITE)
        else:
            table, codes = REAL_ERRORS.get(member.op, {}), (NONFINITE,)
        errors.update(_errors(m, table, codes))
    text = "\n".join(body + group.store())
    params = _leaf_params(group.n_leaves)
    name = "fused_s_" + source_hash(f"{k1}\n{params}\n{text}")
    zeros = ["0j" if s else "0.0" for s in group.series[group.n_leaves:]]
    checks = [line for m, zero in enumerate(zeros)
              for line in (f"    if chk{m} != {zero} or chk{m} != chk{m}:",
                           f"        return {m * MEMBER + NONFINITE}")]
    source = "\n".join([
        DECORATOR, f"def {name}({EW_PARAMS}, {params}):",
        *["    " + line for line in group.scratch(text)],
        *[f"    chk{m} = {zero}" for m, zero in enumerate(zeros)],
        "    for d in range(nb):", "        for i in range(n):", textwrap.indent(text, " " * 12),
        *checks, "    return 0"])
    return FusedKernel(name, specialise(source, k1), errors, k1)


def module_source(kernel: FusedKernel) -> str:
    """The module text of one fused kernel: a series group's brings its order and the
    series helpers."""
    head = [HEADER, ""]
    if kernel.k1:
        head += [f"K1C = {kernel.k1}", "", SERIES_HELPERS.strip(), "", ""]
    return "\n".join(head + [kernel.source, ""])


_MODULES: dict[str, object] = {}
_LOCK = threading.Lock()


def fused_module(kernel: FusedKernel):
    """The imported module holding one fused kernel (a real file, Numba-cached on disk)."""
    with _LOCK:
        if kernel.name not in _MODULES:
            module = load_kernel_module(module_source(kernel), "cs_array_fused")
            getattr(module, kernel.name).__source__ = kernel.source
            _MODULES[kernel.name] = module
    return _MODULES[kernel.name]


__all__ = ["FUSABLE", "FusedKernel", "FusedMember", "MEMBER", "SERIES_FUSABLE", "fused_kernel",
           "fused_module", "fused_series_kernel", "module_source"]
