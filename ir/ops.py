"""The op set of the circuit IR.

Every node of a circuit is one *array* operation; a scalar gate is the 0-d case of the same op
(not a second IR). An op's *meaning* lives in exactly one place, the semantics layer
(``semantics/real.py`` for real values, ``semantics/series.py`` for truncated-Taylor series);
its result shape lives in ``ir/shapes.py``. This module only says what an op *is*: its printed
name, how many operands it takes, which attributes it needs, and its class.

Classes (``OpInfo.kind``):

* ``source``      const (a float, or a row-major tuple of floats with a ``shape``) and input
  (the whole input array, or with ``index`` one flat element of it as a 0-d value);
* ``elementwise`` every scalar op of the first IR, with numpy broadcasting between operands.
  ``sum`` adds any number >= 1 of operands; ``dot`` takes 2m operands and computes
  ``sum_i args[i] * args[m + i]`` elementwise (fused dot products of scalar programs);
* ``reduction``   reduce_sum / reduce_max over ``axes`` (the axes disappear);
* ``contraction`` dot_general with ``contract=((lhs axes), (rhs axes))`` and
  ``batch=((lhs axes), (rhs axes))``; result axes: batch, then lhs free, then rhs free
  (jax.lax.dot_general's convention);
* ``structure``   reshape, transpose, broadcast (numpy broadcast_to), slice (per-axis start,
  stop, step), concatenate (along ``axis``), take (operand, integer-valued indices along
  ``axis``: an embedding lookup) and its transpose scatter_add (updates, indices, ``axis``,
  ``size``: adds update rows into a zero array of ``size`` rows at ``axis``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

VARIADIC = -1


class Op(enum.Enum):
    CONST = "const"
    INPUT = "input"
    ADD = "add"
    SUB = "sub"
    NEG = "neg"
    MUL = "mul"
    DIV = "div"
    POW = "pow"
    EXP = "exp"
    LOG = "log"
    SQRT = "sqrt"
    TANH = "tanh"
    ERF = "erf"
    GELU = "gelu"
    RELU = "relu"
    MAX = "max"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    EQ = "eq"
    SELECT = "select"
    STOP_GRADIENT = "stop_gradient"
    SUM = "sum"
    DOT = "dot"
    REDUCE_SUM = "reduce_sum"
    REDUCE_MAX = "reduce_max"
    DOT_GENERAL = "dot_general"
    RESHAPE = "reshape"
    TRANSPOSE = "transpose"
    BROADCAST = "broadcast"
    SLICE = "slice"
    CONCATENATE = "concatenate"
    TAKE = "take"
    SCATTER_ADD = "scatter_add"

    def __repr__(self) -> str:  # keeps printed tuples of eqns short
        return f"Op.{self.name}"

    # members are singletons: identity hashing is exact and avoids Enum's Python-level
    # __hash__, which dominated hash-consing time when tracing 10^5-node circuits
    __hash__ = object.__hash__


SOURCE, ELEMENTWISE, REDUCTION, CONTRACTION, STRUCTURE = (
    "source", "elementwise", "reduction", "contraction", "structure")


@dataclass(frozen=True)
class OpInfo:
    """Static facts about an op: operand count, required (and optional) attribute names, class."""

    arity: int
    attrs: tuple[str, ...] = ()
    kind: str = ELEMENTWISE
    #: comparisons yield 0.0/1.0 and never carry derivative information
    is_comparison: bool = False
    optional_attrs: tuple[str, ...] = ()


OP_INFO: dict[Op, OpInfo] = {
    Op.CONST: OpInfo(0, ("value",), SOURCE, optional_attrs=("shape",)),
    Op.INPUT: OpInfo(0, ("name",), SOURCE, optional_attrs=("index",)),
    Op.ADD: OpInfo(2),
    Op.SUB: OpInfo(2),
    Op.NEG: OpInfo(1),
    Op.MUL: OpInfo(2),
    Op.DIV: OpInfo(2),
    Op.POW: OpInfo(1, ("p",)),
    Op.EXP: OpInfo(1),
    Op.LOG: OpInfo(1),
    Op.SQRT: OpInfo(1),
    Op.TANH: OpInfo(1),
    Op.ERF: OpInfo(1),
    Op.GELU: OpInfo(1),
    Op.RELU: OpInfo(1),
    Op.MAX: OpInfo(2),
    Op.LT: OpInfo(2, is_comparison=True),
    Op.LE: OpInfo(2, is_comparison=True),
    Op.GT: OpInfo(2, is_comparison=True),
    Op.GE: OpInfo(2, is_comparison=True),
    Op.EQ: OpInfo(2, is_comparison=True),
    Op.SELECT: OpInfo(3),
    Op.STOP_GRADIENT: OpInfo(1),
    Op.SUM: OpInfo(VARIADIC),
    Op.DOT: OpInfo(VARIADIC),
    Op.REDUCE_SUM: OpInfo(1, ("axes",), REDUCTION),
    Op.REDUCE_MAX: OpInfo(1, ("axes",), REDUCTION),
    Op.DOT_GENERAL: OpInfo(2, ("batch", "contract"), CONTRACTION),
    Op.RESHAPE: OpInfo(1, ("shape",), STRUCTURE),
    Op.TRANSPOSE: OpInfo(1, ("perm",), STRUCTURE),
    Op.BROADCAST: OpInfo(1, ("shape",), STRUCTURE),
    Op.SLICE: OpInfo(1, ("start", "step", "stop"), STRUCTURE),
    Op.CONCATENATE: OpInfo(VARIADIC, ("axis",), STRUCTURE),
    Op.TAKE: OpInfo(2, ("axis",), STRUCTURE),
    Op.SCATTER_ADD: OpInfo(2, ("axis", "size"), STRUCTURE),
}

OP_BY_NAME: dict[str, Op] = {op.value: op for op in Op}

#: ops whose output never depends on the derivative information of their operands
NON_DIFFERENTIABLE = frozenset(op for op, info in OP_INFO.items() if info.is_comparison) | {
    Op.STOP_GRADIENT
}

#: elementwise ops (numpy broadcasting between operands)
ELEMENTWISE_OPS = frozenset(op for op, info in OP_INFO.items() if info.kind == ELEMENTWISE)

#: ops linear in every operand that can be a series (index operands of take/scatter_add are
#: real): their Taylor rule applies the real op to each coefficient
LINEAR_OPS = frozenset({Op.ADD, Op.SUB, Op.NEG, Op.SUM, Op.REDUCE_SUM, Op.RESHAPE, Op.TRANSPOSE,
                        Op.BROADCAST, Op.SLICE, Op.CONCATENATE, Op.TAKE, Op.SCATTER_ADD})

#: operand positions that hold integer indices (always real, never differentiated)
INDEX_OPERANDS = {Op.TAKE: (1,), Op.SCATTER_ADD: (1,)}
