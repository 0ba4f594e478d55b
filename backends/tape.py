"""A circuit compiled into a compact tape of instructions, with a memory plan.

A :class:`Tape` is what the Numba kernels execute: instruction ``n`` runs variant ``op[n]``
(an op specialised to its operand kinds, see ``kernel_source.VARIANTS``) writing slot
``out[n]`` from the operand list ``arg[ptr[n]:ptr[n+1]]`` (CSR), each entry ``slot * 2 + kind``
(kind 1 = series), with the float attribute ``attr[n]`` (pow exponent, op code). Real values
live in real slots (float64, one per direction), series in series slots (complex128,
``order + 1`` coefficients per direction); the two slot spaces are planned separately.

Memory plan (a linear scan in program order, like a register allocator): a node's slot is
taken from the free list of its kind before the slots of operands it uses last are released,
so an instruction never writes a slot it reads. Input and constant slots are pinned (the host
fills them once); output slots are never released. Carried state is updated in place where
that is safe (``_in_place_updates``): the new value is written into the old value's slot, so
the state is stored once and needs no copy between steps.

A program step's tape is laid out as::

    copies (carried outputs not updated in place -> their input slots; skipped at step 0)
    loads  (this step's per-step data and down-weights)
    nodes  (every non-input, non-constant node of the step, in order; a node whose variant
            reads a real operand as a series takes a ``lift`` instruction first)
    checks (one per kind: every output is finite; a non-finite one means an overflow)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ir.circuit import Circuit, Program
from ..ir.ops import Op
from ..semantics.errors import EvaluationError, KinkError
from . import kernel_source as ks


@dataclass(frozen=True)
class SlotMap:
    """Where the elements of one named input or output live: slot and kind per flat index."""

    slots: np.ndarray  # int64 [n]; -1 where the circuit never reads the element
    kinds: np.ndarray  # bool [n]; True = series slot

    @property
    def series(self) -> bool:
        return bool(self.kinds.any())


@dataclass(frozen=True)
class Tape:
    circuit: Circuit
    op: np.ndarray      # int64 [n_instr] variant ids
    out: np.ndarray     # int64 [n_instr]
    ptr: np.ndarray     # int64 [n_instr + 1]
    arg: np.ndarray     # int64 [n_args + 3] slot * 2 + kind (padded: operands b, c always readable)
    attr: np.ndarray    # float64 [n_instr]
    node: np.ndarray    # int64 [n_instr] circuit node of each instruction, -1 for plumbing
    n_copy: int         # leading copy instructions, skipped at a program's first step
    n_real: int
    n_series: int
    consts: tuple[np.ndarray, np.ndarray]  # real const slots and their values
    inputs: dict[str, SlotMap]
    outputs: dict[str, SlotMap]
    #: slot * 2 + kind holding each node's value (while it is live)
    node_slots: np.ndarray
    data_columns: dict[str, tuple[bool, np.ndarray]] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def order(self) -> int:
        return self.circuit.order

    def __len__(self) -> int:
        return len(self.op)

    def variant(self, n: int) -> ks.Variant:
        return ks.VARIANTS[self.op[n]]

    def error(self, code: int) -> EvaluationError:
        """The reference interpreter's error for kernel error ``n * 64 + code``."""
        n, code = divmod(int(code), 64)
        node = int(self.node[n])
        if node < 0:
            return EvaluationError(f"{ks.ERRORS[code][0]} (outputs: {list(self.outputs)})")
        eqn = self.circuit.eqns[node]
        p = eqn.attr("p") if eqn.op is Op.POW else 0.5
        message, kink = ks.ERRORS[code]
        error = KinkError if kink else EvaluationError
        return error(f"{self.circuit.describe(node)}: {message.format(p=p, op=eqn.op.value)}")


class _Planner:
    """Linear-scan slot allocation for one kind of value (real or series)."""

    def __init__(self) -> None:
        self.count = 0
        self.free: list[int] = []

    def fresh(self) -> int:
        self.count += 1
        return self.count - 1

    def take(self) -> int:
        return self.free.pop() if self.free else self.fresh()


def compile_tape(circuit: Circuit, program: Program | None = None) -> Tape:
    """Plan memory and emit instructions for ``circuit`` (the step of ``program``, if given)."""
    eqns = circuit.eqns
    series = np.array([e.series for e in eqns], dtype=bool)
    last_use = np.full(len(eqns), -1, dtype=np.int64)
    for node, eqn in enumerate(eqns):
        last_use[list(eqn.args)] = node
    is_output = np.zeros(len(eqns), dtype=bool)
    for out in circuit.outputs:
        is_output[list(out.nodes)] = True
    pinned = np.array([e.op in (Op.INPUT, Op.CONST) for e in eqns], dtype=bool)
    planners = (_Planner(), _Planner())
    slot = np.full(len(eqns), -1, dtype=np.int64)
    for node in np.flatnonzero(pinned):  # inputs and constants: filled by the host
        slot[node] = planners[int(series[node])].fresh()
    in_place = _in_place_updates(circuit, program, series, last_use, is_output) if program else {}

    instr: list[tuple[int, int, list[int], float, int]] = []  # (variant, out, args, attr, node)
    for node, eqn in enumerate(eqns):
        if pinned[node]:
            continue
        key, operands, lifted, attr = _variant(eqn, [bool(series[a]) for a in eqn.args])
        slot[node] = slot[in_place[node]] if node in in_place else planners[int(series[node])].take()
        temps = {p: planners[1].take() for p in lifted}  # real operands read as series
        instr += [(ks.VARIANT_ID[("lift", "s", "r")], temp, [int(slot[eqn.args[p]]) * 2], 0.0, node)
                  for p, temp in temps.items()]
        args = [temps[p] * 2 + 1 if p in temps else int(slot[eqn.args[p]]) * 2 + int(series[eqn.args[p]])
                for p in operands]
        instr.append((ks.VARIANT_ID[key], int(slot[node]), args, attr, node))
        planners[1].free.extend(temps.values())
        for a in set(eqn.args):
            if last_use[a] == node and not is_output[a] and not pinned[a]:
                planners[int(series[a])].free.append(int(slot[a]))
        if last_use[node] == -1 and not is_output[node]:
            planners[int(series[node])].free.append(int(slot[node]))

    inputs = _slot_maps(circuit, slot, series)
    outputs = {o.name: SlotMap(slot[list(o.nodes)], series[list(o.nodes)]) for o in circuit.outputs}
    copies = _copies(circuit, program.carry, inputs, slot, series, planners) if program else []
    loads, data_columns = _loads(program, inputs) if program else ([], {})
    checked = [n for n in np.flatnonzero(is_output) if not pinned[n]]
    checks = [(ks.VARIANT_ID[("check", kind, "")], 0, [int(slot[n]) * 2 + int(series[n]) for n in checked
                                                      if series[n] == (kind == "s")], 0.0, -1)
              for kind in "rs"]
    everything = copies + loads + instr + [c for c in checks if c[2]]
    const_nodes = np.flatnonzero([e.op is Op.CONST for e in eqns])
    stats = {"instructions": len(everything), "real_slots_before": int(np.sum(~series)),
             "series_slots_before": int(np.sum(series)), "real_slots": planners[0].count,
             "series_slots": planners[1].count, "in_place_updates": len(in_place)}
    return Tape(circuit, *_pack(everything), len(copies), planners[0].count, planners[1].count,
                (slot[const_nodes], np.array([eqns[n].attr("value") for n in const_nodes], dtype=np.float64)),
                inputs, outputs, slot * 2 + series, data_columns, stats)


def _in_place_updates(circuit: Circuit, program: Program, series, last_use, is_output) -> dict[int, int]:
    """Carried outputs written straight into their input's slot, {output node: input node}: no
    copy between steps and half the state's memory. Safe when nothing reads the old value after
    the new one is computed (or only the instruction computing it does, elementwise) and the
    old value is not itself some carried output."""
    chosen: dict[int, int] = {}
    inputs = circuit.input_nodes()
    for name in program.carry:
        for index, new in enumerate(circuit.output(name).nodes):
            old = inputs.get((name, index))
            eqn = circuit.eqns[new]
            if (old is None or new in chosen or is_output[old] or eqn.op in (Op.INPUT, Op.CONST)
                    or series[new] != series[old] or last_use[old] > new):
                continue
            key = _variant(eqn, [bool(series[a]) for a in eqn.args])[0]
            if last_use[old] < new or ks.VARIANTS[ks.VARIANT_ID[key]].elementwise:
                chosen[new] = old
    return chosen


_UNARY_OPS = {Op.EXP, Op.TANH, Op.ERF, Op.GELU, Op.RELU, Op.NEG, Op.STOP_GRADIENT}
_COMPARISONS = {Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ}


def _variant(eqn, kinds: list[bool]) -> tuple[tuple[str, str, str], list[int], list[int], float]:
    """The variant running ``eqn`` whose operands are series where ``kinds`` says so: its key,
    the operand positions in the order it reads them, the positions to lift into series
    temporaries, and its attribute (pow exponent or unary/binary op code)."""
    op, n = eqn.op, len(kinds)
    everything = list(range(n))
    if op in (Op.SUM, Op.DOT):
        return (op.value, "s" if eqn.series else "r", ""), everything, [], 0.0
    reals = [p for p in everything if not kinds[p]]
    if not eqn.series:
        if op is Op.STOP_GRADIENT and kinds[0]:
            return ("const_term", "r", "s"), everything, [], 0.0
        if op in _UNARY_OPS:
            return ("unary", "r", ""), everything, [], ks.UNARY_CODES[op.value]
        if op in _COMPARISONS and any(kinds):
            return ("compare", "r", "ss"), everything, reals, ks.BINARY_CODES[op.value]
        if op in _COMPARISONS or op is Op.MAX:
            return ("binary", "r", ""), everything, [], ks.BINARY_CODES[op.value]
        return (op.value, "r", ""), everything, [], float(eqn.attr("p")) if op is Op.POW else 0.0
    if op in (Op.ADD, Op.MUL) and kinds == [False, True]:  # commutative: series operand first
        return (op.value, "s", "sr"), [1, 0], [], 0.0
    if op in (Op.ADD, Op.SUB, Op.MUL, Op.DIV) and kinds != [False, True]:
        return (op.value, "s", "ss" if all(kinds) else "sr"), everything, [], 0.0
    if op in (Op.SUB, Op.DIV, Op.MAX):
        return (op.value, "s", "ss"), everything, reals, 0.0
    if op is Op.SELECT:
        return ("select", "s", ("s" if kinds[0] else "r") + "ss"), everything, [p for p in reals if p != 0], 0.0
    if op is Op.POW and float(eqn.attr("p")).is_integer() and eqn.attr("p") >= 0:
        return ("ipow", "s", "s"), everything, [], float(eqn.attr("p"))
    if op in (Op.POW, Op.SQRT):
        return ("pow", "s", "s"), everything, [], float(eqn.attr("p")) if op is Op.POW else 0.5
    return (op.value, "s", "s"), everything, [], 0.0


def _slot_maps(circuit: Circuit, slot: np.ndarray, series: np.ndarray) -> dict[str, SlotMap]:
    shapes = circuit.input_shapes
    maps = {name: np.full(int(np.prod(shape)), -1, dtype=np.int64) for name, shape in shapes.items()}
    kinds = {name: False for name in shapes}
    for (name, index), node in circuit.input_nodes().items():
        maps[name][index] = slot[node]
        kinds[name] = kinds[name] or bool(series[node])
    return {name: SlotMap(maps[name], np.full(len(maps[name]), kinds[name])) for name in shapes}


def _copies(circuit: Circuit, carry, inputs: dict[str, SlotMap], slot, series, planners) -> list:
    """Carried outputs -> carried input slots (none for in-place updates). A source that is
    itself a carried input (state passed through, or swapped) is staged first, so no copy reads
    a slot already overwritten."""
    destinations = {(inputs[name].series, int(s)) for name in carry for s in inputs[name].slots if s >= 0}
    staged, direct, unstage = [], [], []
    for name in carry:
        dst_series = inputs[name].series
        for dst, src_node in zip(inputs[name].slots, circuit.output(name).nodes):
            src_series = bool(series[src_node])
            src = int(slot[src_node])
            if dst < 0 or (src_series == dst_series and src == dst):
                continue
            kind = ("s" if dst_series else "r", "s" if src_series else "r")
            if (src_series, src) in destinations:
                tmp = planners[src_series].fresh()
                staged.append((ks.VARIANT_ID[("copy", kind[1], kind[1])], tmp, [src * 2 + src_series], 0.0, -1))
                unstage.append((ks.VARIANT_ID[("copy",) + kind], int(dst), [tmp * 2 + src_series], 0.0, -1))
            else:
                direct.append((ks.VARIANT_ID[("copy",) + kind], int(dst), [src * 2 + src_series], 0.0, -1))
    return staged + direct + unstage


def _loads(program: Program, inputs: dict[str, SlotMap]) -> tuple[list, dict]:
    """Per-step data read column ``q`` of DR/DS at step t; down-weight element e reads x[ids[t, e]]."""
    loads, columns, next_column = [], {}, {False: 0, True: 0}
    for name in program.per_step:
        m = inputs[name]
        q0 = next_column[m.series]
        next_column[m.series] += len(m.slots)
        columns[name] = (m.series, np.arange(q0, q0 + len(m.slots)))
        variant = ks.VARIANT_ID[("load_data", "s" if m.series else "r", "")]
        loads += [(variant, int(s), [(q0 + q) * 2], 0.0, -1) for q, s in enumerate(m.slots) if s >= 0]
    if program.weight is not None:
        m = inputs[program.weight]
        variant = ks.VARIANT_ID[("load_weight", "s" if m.series else "r", "")]
        loads += [(variant, int(s), [e * 2], 0.0, -1) for e, s in enumerate(m.slots) if s >= 0]
    return loads, columns


def _pack(instr: list) -> tuple[np.ndarray, ...]:
    op = np.array([i[0] for i in instr], dtype=np.int64)
    out = np.array([i[1] for i in instr], dtype=np.int64)
    lengths = np.array([len(i[2]) for i in instr], dtype=np.int64)
    ptr = np.zeros(len(instr) + 1, dtype=np.int64)
    np.cumsum(lengths, out=ptr[1:])
    arg = np.zeros(int(ptr[-1]) + 3, dtype=np.int64)
    if len(instr):
        arg[: ptr[-1]] = np.concatenate([np.asarray(i[2], dtype=np.int64) for i in instr])
    attr = np.array([i[3] for i in instr], dtype=np.float64)
    node = np.array([i[4] for i in instr], dtype=np.int64)
    return op, out, ptr, arg, attr, node
