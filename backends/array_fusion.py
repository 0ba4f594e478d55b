r"""Fused groups of elementwise ops: one generated loop nest for a chain of same-shape nodes.

The planner (``array_engine._Planner._groups``) makes a group of elementwise nodes where each
member has exactly one reader, the next member, of the same shape; the group root (the last
member) is the only value stored. Its leaves (operands from outside the group) are loaded once
per element, through the descriptors of :mod:`.array_codegen`.

* **Real groups** (:func:`fused_kernel`): every member is a real op; each member's value is a
  local scalar (a register), computed by the expression of ``array_codegen._REAL_EXPR``.
* **Series groups** (:func:`fused_series_kernel`): the root is a series. Per (direction,
  element) each series value -- a series leaf or member, or a real one read by a series member
  -- is a scratch row of ``K1`` coefficients (a real value sits in coefficient 0, the others
  stay 0), and each series member runs the per-element rule of ``array_codegen._series_body``
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
from .array_codegen import (_REAL_ERRORS, _REAL_EXPR, _SERIES_ERRORS, COMMON_MESSAGES, DECORATOR,
                            EW_PARAMS, HEADER, IMAGINARY, KINK, NONFINITE, REAL_RESULT,
                            SERIES_HELPERS, Kernel, _series_body, source_hash, specialise)
from .emit import load_kernel_module

#: error codes of a fused kernel: member * MEMBER + the member's own code
MEMBER = 256
#: real ops a real group may hold
FUSABLE = frozenset(_REAL_EXPR)
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
    expr, check = _REAL_EXPR[member.op]

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
        errors.update(_errors(m, _REAL_ERRORS.get(member.op, {})))
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


def _bind_series(body: str, rows: dict[str, str], p: float, base: int) -> str:
    """A per-element series rule with its operands ``A``/``B``/``C`` and result ``Y`` renamed
    to rows (an operand the op does not have -- a unary rule passes ``B``, ``C`` on unread --
    as ``A``), ``p`` the member's literal, and each ``return code`` offset by ``base``."""
    body = re.sub(r"\b[ABCY]\b", lambda hit: rows.get(hit.group(0), rows["A"]), body)
    body = re.sub(r"\bp\b", repr(float(p)), body)
    return re.sub(r"\breturn (.+)$", rf"return {base} + (\1)", body, flags=re.M)


def fused_series_kernel(members: list[FusedMember], leaf_kinds: str, k1: int) -> FusedKernel:
    """One loop nest over (direction, element) computing a same-shape group whose root is a
    series (module doc): ``leaf_kinds`` says which leaves are series (``"s"``) or real
    (``"r"``); a member is a series when one of its operands is. Specialised to ``k1``
    coefficients."""
    series = [kind == "s" for kind in leaf_kinds]
    leaf_count = len(series)

    def ref(kind: str, q: int) -> int:  # values numbered leaves first, then members
        return q if kind == "leaf" else leaf_count + q
    for member in members:
        series.append(any(series[ref(*a)] for a in member.operands))
    if not series[-1]:
        raise ValueError("a series group's root must be a series (real groups: fused_kernel)")
    rowed = set(v for v, s in enumerate(series) if s)
    for m, member in enumerate(members):
        if series[leaf_count + m]:
            rowed.update(ref(*a) for a in member.operands)
    row = lambda v: f"L{v}" if v < leaf_count else f"M{v - leaf_count}"
    scalar = lambda v: f"l{v}" if v < leaf_count else f"v{v - leaf_count}"
    body, errors = [], {}
    for q in range(leaf_count):
        if series[q]:
            body.append(f"for j in range(K1):\n    L{q}[j] = S[l{q}_0 + j * l{q}_j + d * l{q}_d"
                        f" + i * l{q}_e]")
            continue
        body.append(f"l{q} = R[l{q}_0 + d * l{q}_d + i * l{q}_e]")
        if q in rowed:
            body.append(f"L{q}[0] = l{q}")
    for m, member in enumerate(members):
        values = [ref(*a) for a in member.operands]
        if not series[leaf_count + m]:
            body += _real_member(m, member, dict(zip("xyz", map(scalar, values))))
            if leaf_count + m in rowed:
                body.append(f"M{m}[0] = v{m}")
            errors.update(_errors(m, _REAL_ERRORS.get(member.op, {})))
            continue
        kinds = "".join("s" if series[v] else "r" for v in values)
        rows = dict(zip("ABC", map(row, values)), Y=f"M{m}")
        rule = _bind_series(_series_body(member.op, kinds), rows, member.p, m * MEMBER)
        body += ["c = 0", rule, "if c:", f"    return {m * MEMBER} + c",
                 f"for j in range(K1):\n    chk{m} += M{m}[j] - M{m}[j]"]
        errors.update(_errors(m, _SERIES_ERRORS.get(member.op, {}), (KINK, IMAGINARY, NONFINITE)))
    root = len(members) - 1
    body.append(f"for j in range(K1):\n    S[o + (j * nb + d) * n + i] = M{root}[j]")
    text = "\n".join(body)
    params = _leaf_params(leaf_count)
    name = "fused_s_" + source_hash(f"{k1}\n{params}\n{text}")
    scratch = [f"    {row(v)} = np.zeros(K1, np.complex128)" for v in sorted(rowed)]
    checks = []
    for m in range(len(members)):
        zero = "0j" if series[leaf_count + m] else "0.0"
        checks += [f"    if chk{m} != {zero} or chk{m} != chk{m}:",
                   f"        return {m * MEMBER + NONFINITE}"]
    source = "\n".join([
        DECORATOR, f"def {name}({EW_PARAMS}, {params}):", *scratch,
        "    W = np.zeros((4, K1), np.complex128)",
        *[f"    chk{m} = {'0j' if series[leaf_count + m] else '0.0'}" for m in range(len(members))],
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
