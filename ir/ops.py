"""The op set of the circuit IR.

Every node of a circuit is one scalar gate. An op's *meaning* lives in exactly one place: the
reference interpreter's table (`backends/reference.py`) for real values and the Taylor rule
table (`passes/taylor.py`) for series values. This module only says what an op *is*: its
printed name, how many operands it takes, which attributes it needs, and which
transformation-relevant class it belongs to.

Arity ``VARIADIC`` means any number >= 1 of operands; ``DOT`` takes an even number 2m and
computes ``sum_i args[i] * args[m + i]`` (the first half times the second half), so fused
dot products and n-ary sums are single nodes instead of chains of binary gates.
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

    def __repr__(self) -> str:  # keeps printed tuples of eqns short
        return f"Op.{self.name}"

    # members are singletons: identity hashing is exact and avoids Enum's Python-level
    # __hash__, which dominated hash-consing time when tracing 10^5-node circuits
    __hash__ = object.__hash__


@dataclass(frozen=True)
class OpInfo:
    """Static facts about an op: operand count and required attribute names."""

    arity: int
    attrs: tuple[str, ...] = ()
    #: comparisons yield 0.0/1.0 and never carry derivative information
    is_comparison: bool = False


OP_INFO: dict[Op, OpInfo] = {
    Op.CONST: OpInfo(0, ("value",)),
    Op.INPUT: OpInfo(0, ("name", "index")),
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
}

OP_BY_NAME: dict[str, Op] = {op.value: op for op in Op}

#: ops whose output never depends on the derivative information of their operands
NON_DIFFERENTIABLE = frozenset(op for op, info in OP_INFO.items() if info.is_comparison) | {
    Op.STOP_GRADIENT
}
