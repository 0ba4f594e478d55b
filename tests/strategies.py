"""Hypothesis strategies for random circuits shared by the IR, grad, Taylor and backend tests.

Random circuits keep every op inside its domain by construction: log, sqrt and non-integer
powers read ``a*a + 0.5``, divisors are ``b*b + 1``, and exp reads ``tanh(a)`` so values stay
bounded. Kinks (relu, max, comparisons) are hit only with probability zero on random inputs.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from circuitsketch.ir import Builder, Circuit, Op, make_attrs, verify

SMOOTH_OPS = (Op.ADD, Op.SUB, Op.NEG, Op.MUL, Op.DIV, Op.POW, Op.EXP, Op.LOG, Op.SQRT, Op.TANH,
              Op.ERF, Op.GELU, Op.SUM, Op.DOT)
KINK_OPS = (Op.RELU, Op.MAX, Op.SELECT)


def _positive(b: Builder, a: int) -> int:
    return b.add(Op.ADD, (b.add(Op.MUL, (a, a)), b.const(0.5)))


def _emit(b: Builder, op: Op, pick) -> int:
    if op in (Op.ADD, Op.SUB, Op.MUL, Op.MAX):
        return b.add(op, (pick(), pick()))
    if op in (Op.NEG, Op.TANH, Op.ERF, Op.GELU, Op.RELU):
        return b.add(op, (pick(),))
    if op is Op.DIV:
        return b.add(op, (pick(), b.add(Op.ADD, (b.add(Op.MUL, (pick(),) * 2), b.const(1.0)))))
    if op is Op.POW:
        p = pick.exponent()
        base = pick() if float(p).is_integer() and p >= 0 else _positive(b, pick())
        return b.add(op, (base,), make_attrs(p=float(p)))
    if op is Op.EXP:
        return b.add(op, (b.add(Op.TANH, (pick(),)),))
    if op in (Op.LOG, Op.SQRT):
        return b.add(op, (_positive(b, pick()),))
    if op is Op.SUM:
        return b.add(op, tuple(pick() for _ in range(3)))
    if op is Op.DOT:
        return b.add(op, tuple(pick() for _ in range(4)))
    if op is Op.SELECT:
        a, c = pick(), pick()
        return b.add(op, (b.add(Op.GT, (a, c)), pick(), pick()))
    raise ValueError(op)


@st.composite
def random_circuits(draw, ops=SMOOTH_OPS, max_nodes: int = 12, n_inputs: int = 3) -> Circuit:
    """A verified circuit with one input vector ``x`` of ``n_inputs`` and output ``y`` (scalar)
    plus ``z`` (the last few nodes), built from ``ops``."""
    b = Builder()
    nodes = b.input("x", (n_inputs,))

    class Pick:
        def __call__(self) -> int:
            return nodes[draw(st.integers(0, len(nodes) - 1))]

        def exponent(self) -> float:
            return draw(st.sampled_from([2.0, 3.0, -1.0, 0.5, -0.5, 1.5]))

    pick = Pick()
    for _ in range(draw(st.integers(1, max_nodes))):
        nodes.append(_emit(b, draw(st.sampled_from(ops)), pick))
    b.output("y", [nodes[-1]], ())
    b.output("z", nodes[-3:], (len(nodes[-3:]),))
    return verify(b.build())


def random_point(seed: int, n: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.5, 1.5, size=n)
