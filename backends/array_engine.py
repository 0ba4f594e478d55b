"""The array engine of ``backend="numba-cpu"``: plan an array circuit, then run the plan.

**Plan** (:func:`plan`). Each node becomes one or a few calls of the kernels of
:mod:`.array_codegen` (``KERNELS``): elementwise ops with their operand kinds, gathers for the
structural ops (transpose, broadcast, slice; reshape and a real stop_gradient are aliases, no
code), reductions and dot_general over operands brought to a canonical order, take and
scatter_add. Every value is a region of an arena (``R`` real, ``S`` series, ``I`` int64 gather
tables), sized for a block of ``nb`` directions; a value that does not depend on the
directions (constants, per-step data and what is computed from them only) is stored once
(batch stride 0). Sizes and offsets are linear in ``nb`` (:class:`Lin`), so one plan serves
any block width. Chains of same-shape elementwise ops (real, or series with real operands
mixed in) are fused into one generated kernel (:mod:`.array_fusion`).

**Memory plan**: a buffer is freed after the last node reading it (reshape aliases share
their operand's buffer) and reused by the next value of the same size; inputs, constants and
the outputs of a step stay (constants never take a reused region: they are written before the
run). A program's carried state lives in the buffers of its step inputs:
at the end of each step the new state is copied into them (in place: no arrays are allocated
per step), after every node has read the old state.

**Run**. ``evaluate`` calls the kernels from Python, one call per plan entry (no compilation
per circuit). ``run_program`` runs a generated step interpreter (:func:`step_source`: one
branch per kernel the plan uses, the entries as int/float tables; compiled by Numba once per
set of kernels and cached on disk), one call per step and block of directions; blocks run in
parallel on threads (the kernels release the GIL), in waves when together they would exceed
``MEMORY_BUDGET``.
A kernel error code is mapped to the node it came from: ``EvaluationError`` (``KinkError`` for
a kink) naming the node and its traced source line, as the reference interpreter does.

Layouts and API: as :mod:`circuitsketch.backends.reference` (inputs unbatched or batched,
series ``[.., k+1, *shape]`` at the API, ``[k+1, B, *shape]`` inside).
"""

from __future__ import annotations

import math
import textwrap
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from math import prod
from typing import Callable, Mapping

import numpy as np

from ..ir.circuit import Circuit, Eqn, Program
from ..ir.ops import ELEMENTWISE_OPS, Op
from ..ir.shapes import broadcast_shapes
from ..ir.text import print_eqn
from ..semantics.errors import EvaluationError, KinkError
from . import array_codegen as cg
from . import array_fusion as fu
from . import checks, reference
from .emit import load_kernel_module

#: arena bytes a block aims at (about the last-level cache of this machine's cores)
CACHE_TARGET = 4 << 20
#: a step's error code is ``entry * STEP + the kernel's code``
STEP = 1 << 16
#: bytes of arena one wave of blocks may use: a block is cut to fit, and blocks beyond it run
#: in later waves (each wave runs every step; ``progress`` then counts each wave's steps)
MEMORY_BUDGET = 2 << 30


@dataclass(frozen=True)
class Lin:
    """The integer ``a * nb + b`` for a block of ``nb`` directions."""

    a: int = 0
    b: int = 0

    def __add__(self, other: "Lin") -> "Lin":
        return Lin(self.a + other.a, self.b + other.b)

    def at(self, nb: int) -> int:
        return self.a * nb + self.b

    def render(self) -> str:
        if not self.a:
            return str(self.b)
        return f"{self.a} * nb" + (f" + {self.b}" if self.b else "")


def _lin(x) -> Lin:
    return x if isinstance(x, Lin) else Lin(0, int(x))


NB = Lin(1, 0)


@dataclass(frozen=True)
class Buf:
    """A value's region: arena ``R``/``S``, offset, elements ``n``, batched (bw = nb) or not."""

    arena: str
    off: Lin
    n: int
    batched: bool

    @property
    def series(self) -> bool:
        return self.arena == "S"

    @property
    def bw(self) -> Lin:
        return NB if self.batched else Lin(0, 1)

    def desc(self, broadcast: bool = False) -> tuple:
        """(off, cj, cd, ce): coefficient, direction and element strides (module doc)."""
        cj = Lin(self.n, 0) if self.batched else Lin(0, self.n)
        return (self.off, cj, self.n if self.batched else 0, 0 if broadcast else 1)


class _Allocator:
    """Offsets in one arena: a freed region is reused by the next request of the same size."""

    def __init__(self) -> None:
        self.top = Lin()
        self.free: dict[Lin, list[Lin]] = {}

    def take(self, size: Lin, fresh: bool = False) -> Lin:
        """An offset for ``size``; ``fresh``: never a reused region (constants are written
        before the run starts, so no earlier value may share their region)."""
        pool = None if fresh else self.free.get(size)
        if pool:
            return pool.pop()
        off, self.top = self.top, self.top + size
        return off

    def give(self, off: Lin, size: Lin) -> None:
        self.free.setdefault(size, []).append(off)


@dataclass
class Entry:
    """One kernel call: kernel name, its arguments after (R, S, I), the node it computes (and,
    for a fused group, every node it computes, in order)."""

    kernel: str
    args: tuple
    node: int
    members: tuple = ()


@dataclass
class Plan:
    """A circuit (or program step) as kernel calls over arenas (module doc)."""

    circuit: Circuit
    k1: int
    entries: list[Entry] = field(default_factory=list)
    index: list[np.ndarray] = field(default_factory=list)
    consts: list[tuple[Buf, np.ndarray]] = field(default_factory=list)
    inputs: dict[str, Buf] = field(default_factory=dict)
    values: dict[int, Buf] = field(default_factory=dict)
    sizes: dict[str, Lin] = field(default_factory=dict)
    n_index: int = 0
    fused: dict[str, fu.FusedKernel] = field(default_factory=dict)

    def index_table(self, table: np.ndarray) -> int:
        """Append an int64 gather table to ``I``; returns its offset."""
        off = self.n_index
        self.index.append(np.asarray(table, dtype=np.int64).ravel())
        self.n_index += self.index[-1].size
        return off

    def kernel(self, name: str) -> cg.Kernel:
        return self.fused.get(name) or cg.KERNELS[name]

    def describe(self, code: int) -> tuple[int, str, int]:
        """(node, message, base code) of a step's error code ``entry * STEP + kernel code``; in
        a fused group the kernel code says which member failed (``fu.MEMBER``)."""
        entry, code = divmod(code, STEP)
        entry = self.entries[entry]
        node = entry.members[code // fu.MEMBER] if entry.members else entry.node
        return node, self.kernel(entry.kernel).message(code), code % fu.MEMBER

    def function(self, name: str) -> Callable:
        """The compiled kernel called ``name`` (library or fused module)."""
        if name in self.fused:
            return getattr(fu.fused_module(self.fused[name]), name)
        return getattr(cg.library(self.k1), name)


# ---------------------------------------------------------------- planning

class _Planner:
    """Walks a circuit once, emitting kernel calls and assigning buffers (module doc)."""

    def __init__(self, circuit: Circuit, per_step=(), keep=(), fuse: bool = True,
                 carry=()) -> None:
        self.c = circuit
        self.fuse = fuse
        self.carry = tuple(carry)
        self.into: dict[int, Buf] = {}  # node -> the carried input buffer it writes in place
        self.plan = Plan(circuit, circuit.order + 1)
        self.alloc = {"R": _Allocator(), "S": _Allocator()}
        self.per_step = set(per_step)
        self.root: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.keep = set(keep)
        self.k1 = circuit.order + 1

    # -- buffers

    def size(self, arena: str, n: int, batched: bool) -> Lin:
        per = n * (self.k1 if arena == "S" else 1)
        return Lin(per, 0) if batched else Lin(0, per)

    def new(self, series: bool, n: int, batched: bool, fresh: bool = False) -> Buf:
        arena = "S" if series else "R"
        return Buf(arena, self.alloc[arena].take(self.size(arena, n, batched), fresh), n, batched)

    def free(self, buf: Buf) -> None:
        self.alloc[buf.arena].give(buf.off, self.size(buf.arena, buf.n, buf.batched))

    # -- the walk

    def run(self) -> Plan:
        eqns = self.c.eqns
        self.lazy = self._lazy_transposes()
        for node, eqn in enumerate(eqns):
            alias = self._aliases(eqn) or node in self.lazy
            self.root[node] = self.root[eqn.args[0]] if alias else node
        for out in self.c.outputs:
            for n in out.nodes:
                self.keep.add(self.root[n])
        self.group = self._groups() if self.fuse else {}
        dies_at: dict[int, int] = {}  # buffer root -> the node (group root) that reads it last
        for node, eqn in enumerate(eqns):
            for a in eqn.args:
                reader = self.group.get(node, node)
                dies_at[self.root[a]] = max(dies_at.get(self.root[a], reader), reader)
        dying: dict[int, list[int]] = {}
        for root, node in dies_at.items():
            if root not in self.keep and self._owned(root) and root not in self.group:
                dying.setdefault(node, []).append(root)
        self._inputs()
        self.into = self._in_place(dies_at)
        for node, eqn in enumerate(eqns):
            if node in self.group:
                continue  # computed inside its fused group's kernel
            self._node(node, eqn)
            for root in dying.get(node, ()):
                self.free(self.plan.values[root])
        self.plan.sizes = {arena: a.top for arena, a in self.alloc.items()}
        return self.plan

    def _in_place(self, dies_at: dict[int, int]) -> dict[int, Buf]:
        """Carried state updated in place (no copy at the end of the step): the node computing
        a carry's new value writes into the carry's input buffer when no node after it reads
        the old value and its kernel reads each element before writing it (elementwise ops and
        fused groups; not a product of two series: the generic CPU kernel above order 7 and
        the CUDA kernel write coefficient r before reading the operands' coefficient r)."""
        eqns, into = self.c.eqns, {}
        aliased = {self.root[n] for out in self.c.outputs for n in out.nodes
                   if eqns[self.root[n]].op is Op.INPUT}  # read again by the end-of-step copies
        for name in self.carry:
            out = self.c.output(name)
            if not out.is_array(eqns):
                continue
            node = self.root[out.nodes[0]]
            eqn = eqns[node]
            readers = [r for r, e in enumerate(eqns) if e.op is Op.INPUT
                       and e.attr("name") == name]
            if (eqn.op not in ELEMENTWISE_OPS or eqn.op in (Op.SUM, Op.DOT) or node in into
                    or any(r in aliased for r in readers)
                    or any(dies_at.get(r, -1) > node for r in readers)
                    or (eqn.op is Op.MUL and self.k1 > 1
                        and all(eqns[a].series for a in eqn.args))):
                continue
            into[node] = self.plan.inputs[name]
        return into

    def _fusable(self, node: int) -> bool:
        """A real op on real operands, or a series op with a series result (any operands)."""
        eqn = self.c.eqns[node]
        if eqn.series:
            return self._series(eqn) and eqn.op in fu.SERIES_FUSABLE
        return eqn.op in fu.FUSABLE and not any(self.c.eqns[a].series for a in eqn.args)

    def _groups(self) -> dict[int, int]:
        """Fused groups: a fusable elementwise node whose only reader is a fusable node of the
        same shape is computed inside that reader's loop. Returns member -> group root (the
        root itself is not a key)."""
        readers: dict[int, set[int]] = {}
        for node, eqn in enumerate(self.c.eqns):
            for a in eqn.args:
                readers.setdefault(a, set()).add(node)
        group: dict[int, int] = {}
        for node in range(len(self.c.eqns) - 1, -1, -1):
            users = readers.get(node, set())
            if len(users) != 1 or node in self.keep or not self._fusable(node):
                continue
            (user,) = users
            if self._fusable(user) and self.c.eqns[user].shape == self.c.eqns[node].shape:
                group[node] = group.get(user, user)
        return group

    def _owned(self, root: int) -> bool:
        eqn = self.c.eqns[root]
        return eqn.op is not Op.INPUT and eqn.op is not Op.CONST

    def _lazy_transposes(self) -> set[int]:
        """Transposes read only by dot_generals: never materialised, the contraction reads
        their operand through permuted strides (``_plan_dot_general``)."""
        readers: dict[int, list[int]] = {}
        for node, eqn in enumerate(self.c.eqns):
            for a in eqn.args:
                readers.setdefault(a, []).append(node)
        outputs = {n for out in self.c.outputs for n in out.nodes}
        return {node for node, eqn in enumerate(self.c.eqns)
                if eqn.op is Op.TRANSPOSE and node not in outputs and readers.get(node)
                and all(self.c.eqns[r].op is Op.DOT_GENERAL for r in readers[node])}

    def _aliases(self, eqn: Eqn) -> bool:
        if eqn.op is Op.RESHAPE:
            return True
        return eqn.op is Op.STOP_GRADIENT and not self.c.eqns[eqn.args[0]].series

    def _inputs(self) -> None:
        series = reference.series_inputs(self.c)
        for name, shape in self.c.inputs:
            buf = self.new(name in series, prod(shape), name not in self.per_step)
            self.plan.inputs[name] = buf

    def _series(self, eqn: Eqn) -> bool:
        return bool(eqn.series) and self.c.order > 0

    def _batched(self, eqn: Eqn) -> bool:
        return any(self.plan.values[a].batched for a in eqn.args)

    def _node(self, node: int, eqn: Eqn) -> None:
        values = self.plan.values
        if self._aliases(eqn) or node in self.lazy:
            values[node] = values[eqn.args[0]]
            return
        if eqn.op is Op.INPUT:
            whole = self.plan.inputs[eqn.attr("name")]
            if not any(key == "index" for key, _ in eqn.attrs):
                values[node] = whole
                return
            out = self.new(whole.series, 1, whole.batched)
            kernel = "gather_s" if whole.series else "gather_r"
            self.emit(kernel, (self.k1, whole.bw, 1, out.off, *whole.desc(),
                               self.plan.index_table([eqn.attr("index")])), node)
            values[node] = out
            return
        if eqn.op is Op.CONST:
            value = np.asarray(eqn.attr("value"), dtype=np.float64).ravel()
            buf = self.new(False, value.size, False, fresh=True)
            self.plan.consts.append((buf, value))
            values[node] = buf
            return
        members = [m for m, root in self.group.items() if root == node]
        if members:
            values[node] = self._fused(sorted(members) + [node])
            return
        values[node] = PLANNERS[eqn.op](self, node, eqn)

    def _fused(self, nodes: list[int]) -> Buf:
        """One kernel for a fused group (``nodes`` ascending, the group root last)."""
        index = {n: m for m, n in enumerate(nodes)}
        leaves: list[int] = []
        members = []
        for n in nodes:
            eqn = self.c.eqns[n]
            operands = []
            for a in eqn.args:
                if a in index:
                    operands.append(("member", index[a]))
                else:
                    if a not in leaves:
                        leaves.append(a)
                    operands.append(("leaf", leaves.index(a)))
            p = float(eqn.attr("p")) if eqn.op is Op.POW else 0.0
            members.append(fu.FusedMember(eqn.op, tuple(operands), p))
        series = self._series(self.c.eqns[nodes[-1]])
        operands = [(self.plan.values[a], self.shape(a)) for a in leaves]
        kinds = "".join("s" if buf.series else "r" for buf, _ in operands)
        kernel = (fu.fused_series_kernel(members, kinds, self.k1) if series
                  else fu.fused_kernel(members, len(leaves)))
        self.plan.fused[kernel.name] = kernel
        shape = self.c.eqns[nodes[-1]].shape
        return self.elementwise(None, operands, shape, series, nodes[-1], kernel=kernel.name,
                                members=tuple(nodes))

    def emit(self, kernel: str, args: tuple, node: int, members: tuple = ()) -> None:
        if kernel not in cg.KERNELS and kernel not in self.plan.fused:
            raise NotImplementedError(f"{self.c.describe(node)}: the array engine has no kernel "
                                      f"{kernel!r}")
        self.plan.entries.append(Entry(kernel, args, node, members))

    def shape(self, node: int) -> tuple[int, ...]:
        return self.c.eqns[node].shape

    # -- shared helpers

    def gather(self, buf: Buf, table: np.ndarray, node: int) -> Buf:
        """A new buffer holding ``buf`` read through the flat gather ``table``."""
        out = self.new(buf.series, int(table.size), buf.batched)
        self.emit("gather_s" if buf.series else "gather_r",
                  (self.k1, out.bw, out.n, out.off, *buf.desc(), self.plan.index_table(table)), node)
        return out

    def canonical(self, buf: Buf, shape, perm, node: int) -> tuple[Buf, bool]:
        """``buf`` with its axes in order ``perm`` (a gathered temporary unless already so)."""
        if tuple(perm) == tuple(range(len(shape))):
            return buf, False
        table = np.arange(prod(shape)).reshape(shape).transpose(perm)
        return self.gather(buf, table, node), True

    def elementwise(self, op: Op | None, operands: list[tuple[Buf, tuple]], shape, series: bool,
                    node: int, p: float = 0.0, kernel: str | None = None,
                    members: tuple = ()) -> Buf:
        """``op`` (or the fused ``kernel``) on (buffer, shape) operands broadcast to ``shape``;
        a new result buffer."""
        n = prod(shape)
        descs, temps = [], []
        for buf, s in operands:
            if s != tuple(shape) and prod(s) != 1:
                table = np.broadcast_to(np.arange(prod(s)).reshape((1,) * (len(shape) - len(s)) + s),
                                        shape)
                buf = self.gather(buf, table, node)
                temps.append(buf)
            descs.append(buf.desc(broadcast=prod(s) == 1 and n != 1))
        kinds = "".join("s" if b.series else "r" for b, _ in operands)
        out = self.into.get(node)
        if out is None or out.series != series or out.n != n:
            out = self.new(series, n, any(b.batched for b, _ in operands))
        args = (self.k1, "kinks", float(p), out.bw, n, out.off)
        self.emit(kernel or cg.ew_name(op, kinds), args + tuple(x for d in descs for x in d), node,
                  members)
        for t in temps:
            self.free(t)
        return out


def _plan_elementwise(pl: _Planner, node: int, eqn: Eqn) -> Buf:
    operands = [(pl.plan.values[a], pl.shape(a)) for a in eqn.args]
    series = pl._series(eqn)
    p = float(eqn.attr("p")) if eqn.op is Op.POW else 0.0
    if eqn.op is Op.STOP_GRADIENT:
        return pl.elementwise(eqn.op, operands, eqn.shape, False, node)
    if eqn.op is Op.SUM:
        return _fold(pl, operands, eqn, node)
    if eqn.op is Op.DOT:
        half = len(operands) // 2
        products = []
        for a, b in zip(operands[:half], operands[half:]):
            shape = broadcast_shapes(a[1], b[1])
            products.append((pl.elementwise(Op.MUL, [a, b], shape, a[0].series or b[0].series,
                                            node), shape))
        return _fold(pl, products, eqn, node, temporaries=True)
    return pl.elementwise(eqn.op, operands, eqn.shape, series, node, p)


def _fold(pl: _Planner, operands, eqn: Eqn, node: int, temporaries: bool = False) -> Buf:
    """Left fold of adds (the reference's ``sum`` order); ``temporaries``: operands are ours."""
    acc, shape = operands[0]
    if len(operands) == 1:
        return acc if temporaries else pl.elementwise(Op.ADD, [operands[0], (_zero(pl), ())],
                                                      shape, acc.series, node)
    for buf, s in operands[1:]:
        out_shape = broadcast_shapes(shape, s)
        new = pl.elementwise(Op.ADD, [(acc, shape), (buf, s)], out_shape,
                             acc.series or buf.series, node)
        if temporaries or acc is not operands[0][0]:
            pl.free(acc)
        if temporaries:
            pl.free(buf)
        acc, shape = new, out_shape
    return acc


def _zero(pl: _Planner) -> Buf:
    buf = pl.new(False, 1, False, fresh=True)
    pl.plan.consts.append((buf, np.zeros(1)))
    return buf


def _plan_gather(table_of: Callable) -> Callable:
    def rule(pl: _Planner, node: int, eqn: Eqn) -> Buf:
        (a,) = eqn.args
        table = table_of(eqn, np.arange(prod(pl.shape(a))).reshape(pl.shape(a)))
        return pl.gather(pl.plan.values[a], np.ascontiguousarray(table), node)
    return rule


def _slice_table(eqn: Eqn, idx: np.ndarray) -> np.ndarray:
    return idx[tuple(slice(s, e, st) for s, e, st in
                     zip(eqn.attr("start"), eqn.attr("stop"), eqn.attr("step")))]


def _broadcast_table(eqn: Eqn, idx: np.ndarray) -> np.ndarray:
    shape = tuple(eqn.attr("shape"))
    return np.broadcast_to(idx.reshape((1,) * (len(shape) - idx.ndim) + idx.shape), shape)


def _plan_reduce(pl: _Planner, node: int, eqn: Eqn) -> Buf:
    (a,) = eqn.args
    shape, axes = pl.shape(a), eqn.attr("axes")
    keep = [i for i in range(len(shape)) if i not in axes]
    table = np.arange(prod(shape)).reshape(shape).transpose(keep + list(axes))
    m, nr = prod(shape[i] for i in keep), prod(shape[i] for i in axes)
    src = pl.plan.values[a]
    out = pl.new(src.series, m, src.batched)
    kind = "s" if src.series else "r"
    head = (pl.k1, "kinks") if eqn.op is Op.REDUCE_MAX and src.series else (pl.k1,)
    pl.emit(f"{eqn.op.value}_{kind}", head + (out.bw, m, nr, out.off, *src.desc(),
                                              pl.plan.index_table(table)), node)
    return out


def _plan_dot_general(pl: _Planner, node: int, eqn: Eqn) -> Buf:
    """Operands read as [G, M, C] and [G, C, N] through one stride per group (a lazy
    transpose's operand read in place, permuted); a gathered copy only when a group's axes
    are not contiguous in memory order."""
    a, b = eqn.args
    sa, sb = pl.shape(a), pl.shape(b)
    (lc, rc), (lb, rb) = eqn.attr("contract"), eqn.attr("batch")
    lfree = [i for i in range(len(sa)) if i not in lc and i not in lb]
    rfree = [i for i in range(len(sb)) if i not in rc and i not in rb]
    A, xs, ta = _contraction_operand(pl, a, [list(lb), lfree, list(lc)], node)
    B, ys, tb = _contraction_operand(pl, b, [list(rb), list(rc), rfree], node)
    G = prod(sa[i] for i in lb)
    M, N, C = prod(sa[i] for i in lfree), prod(sb[i] for i in rfree), prod(sa[i] for i in lc)
    kinds = ("s" if A.series else "r") + ("s" if B.series else "r")
    out = pl.new("s" in kinds, G * M * N, A.batched or B.batched)
    pl.emit(f"dg_{kinds}", (pl.k1, out.bw, G, M, N, C, out.off, *A.desc()[:3], *xs,
                            *B.desc()[:3], *ys), node)
    for temp, made in ((A, ta), (B, tb)):
        if made:
            pl.free(temp)
    return out


def _contraction_operand(pl: _Planner, a: int, groups: list[list[int]], node: int):
    """(buffer, (stride per group), made a temporary) of dot_general operand ``a`` whose axes
    ``groups`` (batch, free or contracted, ...) the kernel reads as three flat indices."""
    buf, shape, perm = pl.plan.values[a], pl.shape(a), list(range(len(pl.shape(a))))
    if a in pl.lazy:  # axis i of the transpose is axis perm[i] of its operand
        source = pl.c.eqns[a].args[0]
        shape, perm = pl.shape(source), list(pl.c.eqns[a].attr("perm"))
    groups = [[perm[i] for i in group] for group in groups]
    strides = _group_strides(shape, groups)
    if strides is not None:
        return buf, strides, False
    order = [i for group in groups for i in group]
    table = np.arange(prod(shape)).reshape(shape).transpose(order)
    sizes = [prod(shape[i] for i in group) for group in groups]
    return pl.gather(buf, np.ascontiguousarray(table), node), _row_major(sizes), True


def _group_strides(shape, groups) -> tuple[int, ...] | None:
    """The element stride of each group of axes of a row-major array of ``shape`` read as one
    flat index per group (None when some group's axes are not consecutive in memory)."""
    strides = _row_major(shape)
    out = []
    for group in groups:
        if any(strides[p] != strides[q] * shape[q] for p, q in zip(group, group[1:])):
            return None
        out.append(strides[group[-1]] if group else 0)
    return tuple(out)


def _row_major(shape) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(list(shape)):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def _plan_take(pl: _Planner, node: int, eqn: Eqn) -> Buf:
    a, i = eqn.args
    shape, axis = pl.shape(a), eqn.attr("axis")
    src, idx = pl.plan.values[a], pl.plan.values[i]
    pre, size, post, m = prod(shape[:axis]), shape[axis], prod(shape[axis + 1:]), prod(pl.shape(i))
    if eqn.op is Op.TAKE:
        n = pre * m * post
    else:
        size = eqn.attr("size")
        m = prod(pl.shape(i))
        post = prod(shape[axis + len(pl.shape(i)):])
        n = pre * size * post
    out = pl.new(src.series, n, src.batched or idx.batched)
    kernel = f"{eqn.op.value}_{'s' if src.series else 'r'}"
    pl.emit(kernel, (pl.k1, out.bw, pre, size, post, m, out.off, *src.desc(), idx.off,
                     idx.n if idx.batched else 0), node)
    return out


def _plan_concatenate(pl: _Planner, node: int, eqn: Eqn) -> Buf:
    axis = eqn.attr("axis")
    series = pl._series(eqn)
    out = pl.new(series, prod(eqn.shape), pl._batched(eqn))
    positions = np.arange(prod(eqn.shape)).reshape(eqn.shape)
    start = 0
    for a in eqn.args:
        width = pl.shape(a)[axis]
        part = positions[(slice(None),) * axis + (slice(start, start + width),)]
        start += width
        src = pl.plan.values[a]
        kernel = "place_s" if src.series else ("place_rs" if series else "place_r")
        pl.emit(kernel, (pl.k1, out.bw, out.n, out.off, src.n, *src.desc(),
                         pl.plan.index_table(part)), node)
    return out


#: op -> planner of its kernel calls (elementwise ops share one)
PLANNERS: dict[Op, Callable] = {op: _plan_elementwise for op in ELEMENTWISE_OPS}
PLANNERS.update({
    Op.TRANSPOSE: _plan_gather(lambda e, idx: idx.transpose(e.attr("perm"))),
    Op.BROADCAST: _plan_gather(_broadcast_table),
    Op.SLICE: _plan_gather(_slice_table),
    Op.REDUCE_SUM: _plan_reduce, Op.REDUCE_MAX: _plan_reduce,
    Op.DOT_GENERAL: _plan_dot_general, Op.TAKE: _plan_take, Op.SCATTER_ADD: _plan_take,
    Op.CONCATENATE: _plan_concatenate,
})


def plan(circuit: Circuit, per_step=(), keep=()) -> Plan:
    """The kernel calls and buffers of ``circuit`` (``per_step``: inputs shared by all
    directions, loaded each step; ``keep``: nodes whose buffers must survive the step)."""
    return _Planner(circuit, per_step, keep).run()


# ---------------------------------------------------------------- programs: loads and copies

def plan_program(program: Program) -> Plan:
    """The plan of a program's step plus its loop entries: per-step data and down-weights
    loaded first, the new carried state copied into the step inputs last (module doc)."""
    step = program.step
    pl = _Planner(step, program.per_step, carry=program.carry)
    body = pl.run()
    head, tail = [], []
    columns = 0
    for name in program.per_step:
        buf = body.inputs[name]
        if buf.series:
            raise NotImplementedError(f"per-step data {name!r} is a series: the array engine "
                                      "loads per-step data as real values")
        head.append(Entry("load_rows_r", (pl.k1, "DR", "t", buf.n, buf.off, columns), -1))
        columns += buf.n
    if program.weight is not None:
        buf = body.inputs[program.weight]
        kernel, x = ("load_weights_s", "XS") if buf.series else ("load_weights_r", "XR")
        head.append(Entry(kernel, (pl.k1, x, "ids", "t", NB, buf.n, buf.off), -1))
    inputs = {(b.arena, b.off) for b in body.inputs.values()}
    sources = {}
    for name in program.carry:
        (node,) = step.output(name).nodes if step.output(name).is_array(step.eqns) else (None,)
        if node is None:
            raise NotImplementedError(f"carried state {name!r} is output element by element; the "
                                      "array engine runs programs whose outputs are whole arrays")
        src, dst = body.values[node], body.inputs[name]
        if src is dst:  # updated in place (_Planner._in_place)
            continue
        if not src.batched:  # widen a direction-independent value to the batched buffer
            wide = pl.new(src.series, src.n, True)
            tail.append(Entry("gather_s" if src.series else "gather_r",
                              (pl.k1, NB, src.n, wide.off, *src.desc(),
                               body.index_table(np.arange(src.n))), -1))
            src = wide
        elif (src.arena, src.off) in inputs:
            copy = pl.new(src.series, src.n, True)  # the old state is still read by later copies
            tail.append(Entry("copy_s" if src.series else "copy_r",
                              (pl.k1, pl.size(src.arena, src.n, True), copy.off, src.off), -1))
            src = copy
        sources[name] = (src, dst)
    for name, (src, dst) in sources.items():
        kernel = {("S", "S"): "copy_s", ("R", "R"): "copy_r", ("R", "S"): "copy_rs"}[
            src.arena, dst.arena]
        tail.append(Entry(kernel, (pl.k1, pl.size("R" if kernel == "copy_rs" else src.arena,
                                                  src.n, True), dst.off, src.off), -1))
    body.entries = head + body.entries + tail
    body.sizes = {arena: a.top for arena, a in pl.alloc.items()}
    return body


_ENV = ("kinks", "DR", "XR", "XS", "ids", "t")


def step_source(plan: Plan, library_name: str) -> tuple[str, list[str]]:
    """A Numba interpreter of the plan's entries: one branch per kernel the plan uses, which
    calls it with its arguments read from the entry's row of ``args`` (ints) and ``fargs``
    (floats). Its source depends only on the set of kernels, so programs built from the same
    ops share one compiled interpreter (cached on disk by Numba). Returns (source, kernels)."""
    kernels = sorted({e.kernel for e in plan.entries})
    templates = {}
    for entry in plan.entries:
        templates.setdefault(entry.kernel, entry.args)
    branches = []
    for k, name in enumerate(kernels):
        args, q = [], 0
        for a in templates[name]:
            if isinstance(a, str):
                args.append(a)
            elif isinstance(a, float):
                args.append("fargs[e]")
            else:
                args.append(f"args[q + {q}]")
                q += 1
        branches.append(f"{'if' if k == 0 else 'elif'} k == {k}:\n"
                        f"    c = {name}(R, S, I, {', '.join(args)})")
    body = "\n".join(["c = 0", "k = code[e]", "q = ptr[e]", *branches, "if c:",
                      f"    return e * {STEP} + c"])
    source = "\n".join([
        '"""Generated by circuitsketch: the step interpreter of array programs. Do not edit."""',
        "import numba", *_imports(plan, kernels, library_name), "", "",
        cg.DECORATOR,
        "def run_step(R, S, I, DR, XR, XS, ids, t, kinks, code, ptr, args, fargs):",
        "    for e in range(code.shape[0]):", textwrap.indent(body, " " * 8), "    return 0", ""])
    return source, kernels


def _imports(plan: Plan, kernels: list[str], library_name: str) -> list[str]:
    """Import lines of the interpreter: library kernels, then each fused kernel's module."""
    lines = [f"from {library_name} import {', '.join(k for k in kernels if k not in plan.fused)}"]
    for name in kernels:
        if name in plan.fused:
            lines.append(f"from {fu.fused_module(plan.fused[name]).__name__} import {name}")
    return lines


def encode(plan: Plan, kernels: list[str], nb: int) -> tuple[np.ndarray, ...]:
    """The entries as arrays for ``run_step``: kernel number, argument offsets, ints, floats."""
    number = {name: k for k, name in enumerate(kernels)}
    code, ptr, ints, floats = [], [], [], []
    for entry in plan.entries:
        code.append(number[entry.kernel])
        ptr.append(len(ints))
        floats.append(next((a for a in entry.args if isinstance(a, float)), 0.0))
        ints += [a.at(nb) if isinstance(a, Lin) else a for a in entry.args
                 if not isinstance(a, (str, float))]
    return (np.array(code, np.int64), np.array(ptr, np.int64), np.array(ints + [0], np.int64),
            np.array(floats, np.float64))


# ---------------------------------------------------------------- running a plan

@dataclass
class Block:
    """The arenas of one block of ``nb`` directions."""

    plan: Plan
    nb: int
    R: np.ndarray
    S: np.ndarray
    I: np.ndarray

    @classmethod
    def allocate(cls, plan: Plan, nb: int) -> "Block":
        R = np.zeros(max(plan.sizes["R"].at(nb), 1))
        S = np.zeros(max(plan.sizes["S"].at(nb), 1), dtype=np.complex128)
        index = np.concatenate(plan.index) if plan.index else np.zeros(1, dtype=np.int64)
        block = cls(plan, nb, R, S, index)
        for buf, value in plan.consts:
            R[buf.off.at(nb): buf.off.at(nb) + value.size] = value
        return block

    def view(self, buf: Buf) -> np.ndarray:
        """[nb or 1, n] (real) or [K1, nb or 1, n] (series) view of a buffer."""
        bw = self.nb if buf.batched else 1
        off = buf.off.at(self.nb)
        if buf.series:
            return self.S[off: off + self.plan.k1 * bw * buf.n].reshape(self.plan.k1, bw, buf.n)
        return self.R[off: off + bw * buf.n].reshape(bw, buf.n)

    def put(self, buf: Buf, value: np.ndarray) -> None:
        """Write an internal value ([B, *S] or [K1, B, *S], B = nb or 1) into ``buf``."""
        view = self.view(buf)
        if buf.series and value.dtype != np.complex128:
            view[...] = 0
            view[0] = value.reshape(value.shape[0], -1)
            return
        view[...] = value.reshape(value.shape[: view.ndim - 1] + (-1,))

    def run(self, kinks: bool) -> int:
        """Call every entry from Python (evaluate); the first error code, or 0."""
        env = {"kinks": kinks}
        for i, entry in enumerate(self.plan.entries):
            args = [env[a] if isinstance(a, str) else a.at(self.nb) if isinstance(a, Lin) else a
                    for a in entry.args]
            code = self.plan.function(entry.kernel)(self.R, self.S, self.I, *args)
            if code:
                return i * STEP + code
        return 0


def _fail(plan: Plan, code: int) -> None:
    node, message, base = plan.describe(code)
    kind = KinkError if base == cg.KINK else EvaluationError
    raise kind(f"{plan.circuit.describe(node)}: {message}")


def _rows(value: np.ndarray, lo: int, nb: int, width: int, lead: int) -> np.ndarray:
    """Directions lo .. lo+nb-1 of an internal value (batch axis ``lead``); padding repeats the
    last direction, a value shared by all directions stays one row."""
    if value.shape[lead] == 1:
        return value
    picks = np.minimum(np.arange(lo, lo + nb), width - 1)
    return np.take(value, picks, axis=lead)


def arena_bytes(plan: Plan, nb: int) -> int:
    """Bytes of the arenas of one block of ``nb`` directions."""
    return 8 * plan.sizes["R"].at(nb) + 16 * plan.sizes["S"].at(nb) + 8 * plan.n_index


def block_width(plan: Plan, width: int) -> int:
    """Directions per block: the batch split over the threads, cut so that a block's arena
    stays near ``CACHE_TARGET`` (every kernel streams its operands: a block that spills the
    cache runs at memory speed; more blocks cost one call per block and step)."""
    import numba

    per_direction = 8 * plan.sizes["R"].a + 16 * plan.sizes["S"].a
    cap = max(1, min(MEMORY_BUDGET, CACHE_TARGET) // max(per_direction, 1))
    return max(1, min(math.ceil(width / numba.get_num_threads()), cap))


def _run_steps(blocks: list, n_steps: int, step: Callable, progress) -> tuple[int, int] | None:
    """Every step on every block: each thread runs all steps of its share of the blocks,
    without waiting for the others between steps (on a shared machine a per-step barrier waits
    for the slowest thread at every step). ``progress(t)`` is called, from whichever thread
    completes it, when every block has run step t. Returns the first failure (step, code) in
    step order, or None."""
    import numba

    workers = max(1, min(numba.get_num_threads(), len(blocks)))
    done = [0] * workers
    failures: list[tuple[int, int]] = []
    lock = threading.Lock()
    reported = [0]

    def work(w: int) -> None:
        mine = blocks[w::workers]
        for t in range(n_steps):
            codes = [c for c in (step(b, t) for b in mine) if c]
            with lock:
                if codes:
                    failures.append((t, min(codes)))
                done[w] = t + 1
                if failures and min(failures)[0] <= t:
                    return
                if progress is not None and min(done) > reported[0]:
                    reported[0] = min(done)
                    progress(reported[0])
            if failures and min(failures)[0] < t:
                return

    _map(work, list(range(workers)))
    return min(failures) if failures else None


_POOL: list[ThreadPoolExecutor] = []


def _map(fn, items: list) -> list:
    """``fn`` over ``items`` on threads (the kernels release the GIL), in order."""
    if len(items) == 1:
        return [fn(items[0])]
    if not _POOL:
        import numba
        _POOL.append(ThreadPoolExecutor(numba.get_num_threads(), thread_name_prefix="cs-array"))
    return list(_POOL[0].map(fn, items))


# ---------------------------------------------------------------- the backend API

class ArrayEngine:
    """``evaluate`` and ``run_program`` of array circuits (plans and step functions cached)."""

    def __init__(self) -> None:
        self._plans: dict[tuple, tuple] = {}
        self._steps: dict[str, Callable] = {}

    def _cached(self, key_obj, roles, build: Callable) -> Plan:
        key = (id(key_obj), roles)
        hit = self._plans.get(key)
        if hit is not None and hit[0]() is key_obj:
            return hit[1]
        result = build()
        self._plans[key] = (weakref.ref(key_obj, lambda _, key=key: self._plans.pop(key, None)),
                            result)
        return result

    def evaluate(self, circuit: Circuit, inputs: Mapping[str, np.ndarray], *,
                 batch: int | None = None, ignore_kinks: bool = False) -> dict[str, np.ndarray]:
        """Run an array circuit (see :func:`circuitsketch.backends.reference.evaluate`)."""
        checks.require_verified(circuit)
        checks.check_batch(batch)
        reference.check_circuit_inputs(circuit, inputs)
        series = reference.series_inputs(circuit)
        internal = {name: _internal(circuit, name, inputs[name], shape, name in series, batch)
                    for name, shape in circuit.inputs}
        the_plan = self._cached(circuit, None, lambda: plan(circuit))
        width = batch or 1
        nb = block_width(the_plan, width)
        checks.check_budget(circuit, width=width, backend="numba-cpu",
                            memory_bytes=arena_bytes(the_plan, nb) * math.ceil(width / nb))

        def run(lo: int) -> Block:
            block = Block.allocate(the_plan, nb)
            for name, buf in the_plan.inputs.items():
                block.put(buf, _rows(internal[name], lo, nb, width, 1 if buf.series else 0))
            code = block.run(not ignore_kinks)
            if code:
                _fail(the_plan, code)
            return block

        blocks = _map(run, list(range(0, width, nb)))
        return {out.name: _gather_output(the_plan, blocks, out, width, batch)
                for out in circuit.outputs}

    def step_function(self, the_plan: Plan, nb: int) -> Callable:
        """``step(R, S, I, DR, XR, XS, ids, t, kinks)`` running one step of ``the_plan`` on a
        block of ``nb`` directions (the interpreter of :func:`step_source`, cached on disk)."""
        lib = cg.library(the_plan.k1)
        source, kernels = step_source(the_plan, lib.__name__)
        if source not in self._steps:
            self._steps[source] = load_kernel_module(source, "cs_array_step").run_step
        run, tables = self._steps[source], encode(the_plan, kernels, nb)
        return lambda *arrays: run(*arrays, *tables)

    def run_program(self, program: Program, init: Mapping[str, np.ndarray], *,
                    data: Mapping[str, np.ndarray] | None = None,
                    static: Mapping[str, np.ndarray] | None = None,
                    x: np.ndarray | None = None, example_ids: np.ndarray | None = None,
                    n_examples: int | None = None, batch: int | None = None,
                    ignore_kinks: bool = False,
                    progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
        """Run a training loop of array steps (see ``reference.run_program``)."""
        data, static = checks.check_program_arguments(program, init, data, static, x, batch)
        step = program.step
        shapes = step.input_shapes
        series = reference.series_inputs(step)
        # one plan per step circuit and loop structure: the number of steps does not change it
        roles = ("program", program.carry, program.per_step, program.weight)
        the_plan = self._cached(step, roles, lambda: plan_program(program))
        width, n_steps, k1 = batch or 1, program.n_steps, step.order + 1
        state = {name: _internal(step, name, init[name], shapes[name], False, batch)
                 for name in program.carry}
        fixed = {name: _internal(step, name, static[name], shapes[name], name in series, batch)
                 for name in program.static_inputs}
        rows = [_step_rows(name, data[name], shapes[name], n_steps) for name in program.per_step]
        DR = np.ascontiguousarray(np.concatenate(rows, axis=1) if rows else np.zeros((1, 1)))
        XR, XS, ids = np.zeros((1, 1)), np.zeros((1, 1, 1), np.complex128), np.zeros((1, 1), np.int64)
        if program.weight is not None:
            wseries = program.weight in series
            xs, ids = checks.check_down_weights(program, x, example_ids, n_examples, series=wseries)
            xs = xs[None] if xs.ndim == (2 if wseries else 1) else xs
            if wseries:
                XS = xs
            else:
                XR = xs
        if n_steps == 0:
            return {name: reference.to_external(state[name], shapes[name], False, batch, k1)
                    for name in program.carry}
        nb = block_width(the_plan, width)
        run_step = self.step_function(the_plan, nb)

        def start(lo: int):
            block = Block.allocate(the_plan, nb)
            for name, value in [*state.items(), *fixed.items()]:
                buf = the_plan.inputs[name]
                block.put(buf, _rows(value, lo, nb, width, 1 if value.dtype == np.complex128
                                     and value.ndim == len(shapes[name]) + 2 else 0))
            xr = _rows(XR, lo, nb, width, 0) if XR.shape[0] > 1 else np.broadcast_to(XR, (nb,) + XR.shape[1:])
            xsb = _rows(XS, lo, nb, width, 0) if XS.shape[0] > 1 else np.broadcast_to(XS, (nb,) + XS.shape[1:])
            return block, np.ascontiguousarray(xr), np.ascontiguousarray(xsb)

        starts = list(range(0, width, nb))
        per_block = arena_bytes(the_plan, nb)
        checks.check_budget(step, width=width, n_steps=n_steps, backend="numba-cpu",
                            memory_bytes=per_block * len(starts))
        wave = max(1, min(len(starts), MEMORY_BUDGET // max(per_block, 1)))
        finished: list[Block] = []
        for first in range(0, len(starts), wave):  # waves of blocks that fit the budget
            blocks = _map(start, starts[first: first + wave])
            step_all = lambda b, t: int(run_step(b[0].R, b[0].S, b[0].I, DR, b[1], b[2], ids, t,
                                                 not ignore_kinks))
            failed = _run_steps(blocks, n_steps, step_all, progress)
            if failed is not None:
                _fail(the_plan, failed[1])
            finished += [b[0] for b in blocks]
        return {name: _gather_whole(the_plan, finished, the_plan.inputs[name], shapes[name],
                                    width, batch) for name in program.carry}


def _step_rows(name: str, array: np.ndarray, shape, n_steps: int) -> np.ndarray:
    """Per-step data (checked) as ``[n_steps, n]``, its shape checked against the input's."""
    if array.shape[1:] != tuple(shape):
        raise ValueError(f"per-step data {name!r}: expected rows of shape {tuple(shape)}, got "
                         f"{array.shape[1:]}")
    return array[:n_steps].reshape(n_steps, -1)


def _internal(circuit: Circuit, name: str, array, shape, series: bool, batch) -> np.ndarray:
    """An API input checked (``checks.input_array``) and in the internal layout."""
    array = checks.input_array(f"input {name!r}", array, series=series)
    return reference.to_internal(circuit, name, array, shape, series, batch, False)


def _internal_value(blocks: list[Block], buf: Buf, width: int) -> np.ndarray:
    """A buffer of every block, joined: [width, n] (real) or [K1, width, n] (series)."""
    lead = 1 if buf.series else 0
    parts = []
    for block in blocks:
        view = block.view(buf)
        parts.append(np.broadcast_to(view, view.shape[:lead] + (block.nb,) + view.shape[lead + 1:]))
    value = np.concatenate(parts, axis=lead)
    return value[:, :width] if buf.series else value[:width]


def _gather_whole(the_plan: Plan, blocks: list[Block], buf: Buf, shape, width: int, batch):
    """An output buffer of every block as the API array ``[batch, (k+1,) *shape]``."""
    value = _internal_value(blocks, buf, width)
    value = value.reshape(value.shape[:-1] + tuple(shape))
    return reference.to_external(value, shape, buf.series, batch, the_plan.k1)


def _gather_output(the_plan: Plan, blocks: list[Block], out, width: int, batch):
    """An output (one array node, or its 0-d element nodes) as the API array."""
    if out.is_array(the_plan.circuit.eqns):
        return _gather_whole(the_plan, blocks, the_plan.values[out.nodes[0]], out.shape, width,
                             batch)
    elements = [_internal_value(blocks, the_plan.values[n], width)[..., 0] for n in out.nodes]
    series = any(the_plan.values[n].series for n in out.nodes)
    return reference.to_external(elements, out.shape, series, batch, the_plan.k1)


def emit_text(target: Circuit | Program) -> str:
    """What ``circuitsketch emit`` prints for an array circuit or program: each plan entry
    headed by the IR line of its node (a fused group lists its members), then the source of
    every kernel it calls, once."""
    program = target if isinstance(target, Program) else None
    step = program.step if program else target
    the_plan = plan_program(program) if program else plan(step)
    lines = [f"# array engine plan: {len(the_plan.entries)} kernel calls; arena per direction "
             f"{8 * the_plan.sizes['R'].a + 16 * the_plan.sizes['S'].a:,} bytes"]
    for entry in the_plan.entries:
        nodes = entry.members or ((entry.node,) if entry.node >= 0 else ())
        lines += [f"# {print_eqn(n, step.eqns[n])}" for n in nodes] or ["# (loop: load or copy)"]
        lines.append(f"{entry.kernel}({', '.join(_render(a) for a in entry.args)})")
    used = dict.fromkeys(e.kernel for e in the_plan.entries)
    sources = [the_plan.function(name).__source__ for name in used]
    return "\n".join(lines + ["", "# kernels"] + sources)


def _render(arg) -> str:
    return arg.render() if isinstance(arg, Lin) else repr(arg) if isinstance(arg, str) else str(arg)


def is_array_circuit(circuit: Circuit) -> bool:
    """Whether ``circuit`` runs here rather than on the scalar tape: some node is not 0-d, or
    an input is read whole (the tape reads inputs element by element)."""
    return not circuit.is_scalar or any(
        e.op is Op.INPUT and not any(key == "index" for key, _ in e.attrs) for e in circuit.eqns)


ENGINE = ArrayEngine()
evaluate = ENGINE.evaluate
run_program = ENGINE.run_program
