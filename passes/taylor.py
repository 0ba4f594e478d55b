r"""The Taylor pass: rewrite a circuit into truncated-Taylor arithmetic in C[z]/(z^{k+1}).

Seeded inputs move along z (for data deletion, the down-weights x = z * psi); every value that
depends on them becomes a *series* a(z) = a_0 + a_1 z + ... + a_k z^k, stored as the plain
coefficients a_j = f^{(j)}(0) / j! (never j!-scaled: those overflow). Values that do not depend
on a seed stay real. The lowered circuit is the same graph with each node typed real or series
(``: s`` in the text form) and ``order = k``; what a series node computes is
``semantics.series.SERIES_RULES``, the one place each op's rule lives (summarised here):

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

Array ops follow the same table: linear ops (reductions, reshape, take, ...) act on each
coefficient, ``dot_general`` of two series is a Cauchy product of contractions (a real operand
makes it O(k)), and reduce_max picks the series of its largest constant term. Loops stay loops
and the directions axis stays leading. Constant terms are the unperturbed real run, so they are
real; a series input whose a_0 has an imaginary part is rejected.
"""

from __future__ import annotations

from ..ir.circuit import Circuit, Eqn, Program
from ..ir.ops import INDEX_OPERANDS, NON_DIFFERENTIABLE, Op
from ..ir.verify import verify, verify_program
from ..semantics.errors import KinkError
from ..semantics.series import SERIES_RULES


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
                                      f"{eqn.op.value!r} (add one to semantics/series.py SERIES_RULES)")
        if any(flags[eqn.args[i]] for i in INDEX_OPERANDS.get(eqn.op, ())):
            raise ValueError(f"{circuit.describe(node)}: its indices depend on the seed inputs; "
                             "indices must be real data (they select elements, they have no series)")
    eqns = tuple(Eqn(e.op, e.args, e.attrs, e.loc, flag, e.shape)
                 for e, flag in zip(circuit.eqns, flags))
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


__all__ = ["KinkError", "SERIES_RULES", "taylor"]
