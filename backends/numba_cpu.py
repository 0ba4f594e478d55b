"""The Numba CPU backend: circuits and programs compiled to tapes, run by a compiled kernel.

Same API and semantics as :mod:`circuitsketch.backends.reference` (``evaluate`` and
``run_program``; real values float64, series complex128; errors name the node and its source
line). A circuit is compiled once into a :class:`~circuitsketch.backends.tape.Tape`; the kernel
is either the generic tape interpreter (compiled once per machine, whatever the circuit) or,
for circuits of at most ``STRAIGHT_LINE_MAX`` instructions, straight-line code for that tape.

Directions (or retrainings) are cut into blocks of a compile-time size (``REAL_BLOCKS``,
``SERIES_BLOCKS``); the blocks run in parallel on threads (the kernel releases the GIL), each
running the whole tape with the block's directions as the innermost loop of every frequent op,
so the interpretation of an instruction is paid once per block. When all values of a batch
would exceed ``MEMORY_BUDGET`` bytes, the batch runs in chunks, one after another (``progress``
then counts the steps of each chunk).

:class:`Engine` is the host-side driver shared with the CUDA backend: it validates and places
inputs in slots, runs a program's steps (per-step data and weights are loaded by the tape
itself, carried state is copied by it), turns kernel error codes into the reference's errors,
and gathers the outputs. Subclasses say how arrays move and how the kernel is launched.
"""

from __future__ import annotations

import math
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Mapping

import numpy as np

from ..ir.circuit import Circuit, Program
from . import array_engine, checks, reference
from .emit import Target, kernel_compiled, kernel_module_source, load_kernel_module
from .reference import EvaluationError
from .tape import SlotMap, Tape, compile_tape
from . import cpu_native, kernel_source as ks

#: directions per block, a compile-time constant of each kernel: (batch width up to which it is
#: used, block size). Larger blocks amortise the interpretation of each instruction over more
#: directions; 16 measured fastest for the order-3 microgpt step (docs/backends.md). Every
#: block size is one more kernel to compile.
REAL_BLOCKS = ((1, 1), (None, 8))
SERIES_BLOCKS = ((1, 1), (8, 4), (None, 16))
#: bytes of slot memory one chunk of directions may use
MEMORY_BUDGET = 4 << 30
#: circuits with at most this many instructions get a straight-line kernel
STRAIGHT_LINE_MAX = 0

CPU_TARGET = Target(
    name="numba-cpu",
    # the hash of cpu_native's source is part of the kernel source, so Numba's on-disk cache of
    # a kernel (keyed by its own file) never outlives a change to the intrinsics it inlines
    imports=("import numba\nfrom circuitsketch.backends.cpu_native import cauchy_add2, "
             f"cauchy_add4, cauchy_add7, prefetch_slot  # cpu_native {cpu_native.SOURCE_HASH}"),
    helper_decorator="@numba.njit(cache=True, error_model=\"numpy\")",
    block_decorator="@numba.njit(cache=True, nogil=True, error_model=\"numpy\")",
    loop_directions=True,
    wrapper="",
    prefetch=True,
    native_helpers=("cauchy_add2", "cauchy_add4", "cauchy_add7"))

_SCRATCH = 3  # series temporaries T[0..2] used by the snippets
#: error code of a kernel that raised an arithmetic exception (the CUDA simulator runs Python's
#: math, which raises on overflow where a GPU returns inf)
OVERFLOWED = -1


class Engine:
    """Host-side driver: compile (cached per circuit), place inputs, launch, read outputs."""

    target: Target
    prefix: str

    def __init__(self) -> None:
        self._tapes: dict[tuple, tuple] = {}
        self._modules: dict[tuple, object] = {}

    # ---- what a subclass provides

    def blocks(self, tape: Tape, width: int) -> tuple[int, int]:
        """(number of blocks, directions per block) for ``width`` directions."""
        raise NotImplementedError

    def block_size(self, tape: Tape, width: int) -> int | None:
        """The kernel's compile-time direction block size, or None (one direction per thread)."""
        raise NotImplementedError

    def prepare(self, module, tape: Tape, host: dict[str, np.ndarray]):
        """Move the host arrays where the kernel runs; returns an opaque run state."""
        raise NotImplementedError

    def launch(self, run, start: int, t: int, check_kinks: bool, check_finite: bool) -> int:
        """Run the tape from instruction ``start`` at step ``t``; the smallest error code or 0."""
        raise NotImplementedError

    def fetch(self, run, names=("R", "S")) -> dict[str, np.ndarray]:
        """The named arrays back on the host, in the host layout."""
        raise NotImplementedError

    def require_available(self) -> None:
        """Raise ``checks.BackendUnavailableError`` if the kernels cannot run on this machine."""

    # ---- compilation

    def compiled(self, circuit: Circuit, program: Program | None = None) -> Tape:
        """The tape of a circuit (or of a program's step), compiled once per circuit object and
        loop structure (the number of steps does not change the tape)."""
        roles = (program.carry, program.per_step, program.weight) if program is not None else None
        key = (id(circuit), roles)
        hit = self._tapes.get(key)
        if hit is not None and hit[0]() is circuit:
            return hit[1]
        tape = compile_tape(circuit, program)
        self._tapes[key] = (weakref.ref(circuit, lambda _, key=key: self._tapes.pop(key, None)), tape)
        return tape

    def kernel(self, tape: Tape, width: int):
        """The kernel module running ``tape`` on ``width`` directions: straight-line code for a
        tape of at most ``STRAIGHT_LINE_MAX`` instructions, else the tape interpreter (for real
        circuits only, or for all)."""
        series, block = tape.order > 0, self.block_size(tape, width)
        if len(tape) <= STRAIGHT_LINE_MAX:  # loaded once per source text
            return load_kernel_module(kernel_module_source(self.target, tape, series, block), self.prefix)
        if (series, block) not in self._modules:
            source = kernel_module_source(self.target, None, series, block)
            self._modules[series, block] = load_kernel_module(source, self.prefix)
        return self._modules[series, block]

    def _require_scalar(self, circuit: Circuit) -> None:
        """The tape runs scalar circuits; an array circuit needs the array engine (numba-cpu's
        module functions dispatch to it; numba-cuda has none yet)."""
        if array_engine.is_array_circuit(circuit):
            raise NotImplementedError(f"{self.target.name} runs scalar-traced circuits only; "
                                      "array circuits run on numba-cpu (its array engine) and "
                                      "the reference interpreter")

    # ---- evaluate

    def evaluate(self, circuit: Circuit, inputs: Mapping[str, np.ndarray], *, batch: int | None = None,
                 ignore_kinks: bool = False) -> dict[str, np.ndarray]:
        """Run ``circuit`` on named inputs (see :func:`circuitsketch.backends.reference.evaluate`)."""
        checks.require_verified(circuit)
        checks.check_batch(batch)
        self._require_scalar(circuit)
        self.require_available()
        reference.check_circuit_inputs(circuit, inputs)
        shapes = circuit.input_shapes
        tape = self.compiled(circuit)
        width = batch or 1
        k1 = circuit.order + 1
        values = {name: _batched(name, inputs[name], shapes[name], tape.inputs[name].series, batch, k1)
                  for name in shapes}
        self._check_budget(tape, width, 1, 0)
        check_finite = True  # inputs are finite (checked), so a non-finite output is an overflow
        parts = []
        for lo, hi in self._chunks(tape, width, 0):
            host = self._host_arrays(tape, hi - lo, 1)
            for name, value in values.items():
                self._put(host, tape.inputs[name], _rows(value, lo, hi), hi - lo)
            run = self.prepare(self.kernel(tape, hi - lo), tape, host)
            code = self.launch(run, 0, 0, not ignore_kinks, check_finite)
            if code:
                self._fail(tape, code, lambda: reference.evaluate(circuit, inputs, batch=batch,
                                                                  ignore_kinks=ignore_kinks))
            parts.append(self._read(tape, self.fetch(run), tape.outputs, hi - lo))
        return _join(parts, {o.name: o.shape for o in circuit.outputs}, batch)

    # ---- run_program

    def run_program(self, program: Program, init: Mapping[str, np.ndarray], *,
                    data: Mapping[str, np.ndarray] | None = None,
                    static: Mapping[str, np.ndarray] | None = None,
                    x: np.ndarray | None = None, example_ids: np.ndarray | None = None,
                    n_examples: int | None = None, batch: int | None = None,
                    ignore_kinks: bool = False,
                    progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
        """Run a training loop (see :func:`circuitsketch.backends.reference.run_program`;
        ``n_examples``: the number of down-weights in ``x``, see ``checks.check_down_weights``)."""
        data, static = checks.check_program_arguments(program, init, data, static, x, batch)
        self._require_scalar(program.step)
        self.require_available()
        step = program.step
        shapes = step.input_shapes
        tape = self.compiled(step, program)
        width, k1, n_steps = batch or 1, step.order + 1, program.n_steps
        state = {name: _batched(name, init[name], shapes[name], False, batch, k1) for name in program.carry}
        fixed = {name: _batched(name, static[name], shapes[name], tape.inputs[name].series, batch, k1)
                 for name in program.static_inputs}
        per_step = {name: _per_step(name, data[name], shapes[name], tape.inputs[name].series, n_steps, k1)
                    for name in program.per_step}
        weights = (_weights(program, tape, x, example_ids, n_examples, batch, k1)
                   if program.weight is not None else None)
        check_finite = True  # inputs are finite (checked), so a non-finite output is an overflow
        n_examples = weights[0].shape[-1] if weights else 0
        self._check_budget(tape, width, n_steps, n_examples)

        def start(lo: int, hi: int):
            host = self._host_arrays(tape, hi - lo, n_steps, n_examples)
            for name, value in [*state.items(), *fixed.items()]:
                self._put(host, tape.inputs[name], _rows(value, lo, hi), hi - lo)
            for name, value in per_step.items():
                series, columns = tape.data_columns[name]
                host["DS" if series else "DR"][:n_steps, columns] = value
            if weights is not None:
                self._put_weights(host, _rows(weights[0], lo, hi), hi - lo)
                host["ids"] = weights[1]
            return self.prepare(self.kernel(tape, hi - lo), tape, host)

        parts = []
        for lo, hi in self._chunks(tape, width, n_examples):
            run = start(lo, hi)
            for t in range(n_steps):
                code = self.launch(run, tape.n_copy if t == 0 else 0, t, not ignore_kinks, check_finite)
                if code:
                    self._fail(tape, code, lambda: self._replay(program, tape, start(lo, hi), t, fixed,
                                                                per_step, weights, lo, hi, ignore_kinks))
                if progress is not None:
                    progress(t + 1)
            final = {name: tape.outputs[name] for name in program.carry}
            parts.append(self._read(tape, self.fetch(run), final, hi - lo) if n_steps else
                         {name: _initial(state[name], lo, hi) for name in state})
        return _join(parts, {name: shapes[name] for name in program.carry}, batch)

    # ---- host layout: R [blocks, real slots, B], S [blocks, series slots, K1, B]

    @staticmethod
    def _bytes_per_direction(tape: Tape, n_examples: int) -> int:
        k1 = tape.order + 1
        return 8 * tape.n_real + 16 * k1 * (tape.n_series + _SCRATCH + n_examples) + 8 * n_examples

    def _chunks(self, tape: Tape, width: int, n_examples: int) -> list[tuple[int, int]]:
        per_direction = self._bytes_per_direction(tape, n_examples)
        size = max(1, min(width, MEMORY_BUDGET // max(per_direction, 1)))
        return [(lo, min(lo + size, width)) for lo in range(0, width, size)]

    def _check_budget(self, tape: Tape, width: int, n_steps: int, n_examples: int) -> None:
        """Refuse, before allocating, what cannot fit (``checks.check_budget``): one chunk of
        directions, padded to whole blocks, is what is allocated at a time."""
        per_direction = self._bytes_per_direction(tape, n_examples)
        chunk = self._chunks(tape, width, n_examples)[0]
        nblk, bb = self.blocks(tape, chunk[1] - chunk[0])
        checks.check_budget(tape.circuit, width=width, n_steps=n_steps, backend=self.target.name,
                            memory_bytes=per_direction * nblk * bb)

    def _host_arrays(self, tape: Tape, width: int, n_steps: int, n_examples: int = 0) -> dict:
        nblk, bb = self.blocks(tape, width)
        k1 = tape.order + 1
        n_dr = sum(len(c) for s, c in tape.data_columns.values() if not s)
        n_ds = sum(len(c) for s, c in tape.data_columns.values() if s)
        host = {
            "R": np.zeros((nblk, max(tape.n_real, 1), bb)),
            "S": np.zeros((nblk, max(tape.n_series, 1), k1, bb), dtype=np.complex128),
            "T": np.zeros((nblk, _SCRATCH, k1, bb), dtype=np.complex128),
            "DR": np.zeros((max(n_steps, 1), n_dr)),
            "DS": np.zeros((max(n_steps, 1), n_ds, k1), dtype=np.complex128),
            "XR": np.zeros((nblk, n_examples, bb)),
            "XS": np.zeros((nblk, n_examples, k1, bb), dtype=np.complex128),
            "ids": np.zeros((max(n_steps, 1), 1), dtype=np.int64),
            "width": width,
            "tape": tape,
        }
        slots, values = tape.consts
        host["R"][:, slots, :] = values[None, :, None]
        return host

    def _spread(self, tape: Tape, value: np.ndarray, width: int) -> np.ndarray:
        """[W or 1, (K1,), n] -> [blocks, n, (K1,), block]; padding repeats the last direction."""
        nblk, bb = self.blocks(tape, width)
        value = np.broadcast_to(value, (width,) + value.shape[1:])
        value = value[np.minimum(np.arange(nblk * bb), width - 1)]
        value = value.reshape((nblk, bb) + value.shape[1:])
        return value.transpose(0, 3, 2, 1) if value.ndim == 4 else value.transpose(0, 2, 1)

    def _put(self, host: dict, where: SlotMap, value: np.ndarray, width: int) -> None:
        """Write [W or 1, n] real or [W or 1, K1, n] series values into their slots (lifting reals
        into series slots)."""
        present = where.slots >= 0
        slots = where.slots[present]
        if where.series:
            if value.ndim == 2:  # real values (a carried state's init) lifted into series slots
                lifted = np.zeros((value.shape[0], host["S"].shape[2], value.shape[1]), dtype=np.complex128)
                lifted[:, 0] = value
                value = lifted
            host["S"][:, slots] = self._spread(host["tape"], value[..., present], width)
        else:
            host["R"][:, slots] = self._spread(host["tape"], value[..., present], width)

    def _put_weights(self, host: dict, value: np.ndarray, width: int) -> None:
        spread = self._spread(host["tape"], value, width)
        host["XS" if value.ndim == 3 else "XR"] = np.ascontiguousarray(spread)

    def _read(self, tape: Tape, arrays: dict, maps: dict[str, SlotMap], width: int) -> dict:
        """Named [W, n] (real) or [W, K1, n] (series) arrays from the slots; real elements of a
        series output are lifted."""
        result = {}
        for name, where in maps.items():
            real = arrays["R"][:, np.where(where.kinds, 0, where.slots)]  # [blocks, n, block]
            real = real.transpose(0, 2, 1).reshape(-1, len(where.slots))[:width]
            if not where.series:
                result[name] = real
                continue
            ser = arrays["S"][:, np.where(where.kinds, where.slots, 0)]  # [blocks, n, K1, block]
            ser = ser.transpose(0, 3, 2, 1).reshape(-1, ser.shape[2], len(where.slots))[:width]
            lifted = np.zeros_like(ser)
            lifted[:, 0] = real
            result[name] = np.where(where.kinds, ser, lifted)
        return result

    def _fail(self, tape: Tape, code: int, replay: Callable[[], object]) -> None:
        """Raise the reference's error for a kernel error code. A non-finite output (or, code
        ``OVERFLOWED``, an arithmetic exception in the kernel) means an overflow somewhere: the
        reference interpreter, replaying the evaluation, names the node where it happened."""
        if code != OVERFLOWED and code % 64 != ks.NONFINITE:
            raise tape.error(code)
        replay()
        if code == OVERFLOWED:
            raise EvaluationError("the kernel overflowed where the reference interpreter did not")
        raise tape.error(code)

    def _replay(self, program: Program, tape: Tape, run, t: int, fixed, per_step, weights,
                lo: int, hi: int, ignore_kinks: bool) -> None:
        """Evaluate step ``t`` with the reference interpreter: the fresh ``run`` is brought to
        the state before step ``t`` by the kernel (in-place updates overwrote it in the failed
        run), then the reference evaluates the step from there."""
        for s in range(t):
            self.launch(run, tape.n_copy if s == 0 else 0, s, False, False)
        step = program.step
        width = hi - lo
        arrays = self.fetch(run)
        carried = self._read(tape, arrays, {n: tape.inputs[n] for n in program.carry}, width)
        inputs = {name: _unflatten(v, step.input_shapes[name], width) for name, v in carried.items()}
        inputs.update({name: _unflatten(np.broadcast_to(_rows(v, lo, hi), (width,) + v.shape[1:]),
                                        step.input_shapes[name], width) for name, v in fixed.items()})
        inputs.update({name: np.broadcast_to(v[t].reshape(step.input_shapes[name] if v.ndim == 2 else
                                                          (v.shape[1],) + step.input_shapes[name]),
                                             (width,) + ((v.shape[1],) if v.ndim == 3 else ()) + step.input_shapes[name])
                       for name, v in per_step.items()})
        if weights is not None:
            w = np.broadcast_to(_rows(weights[0], lo, hi), (width,) + weights[0].shape[1:])
            inputs[program.weight] = w[..., weights[1][t]]
        reference.evaluate(step, inputs, batch=width, ignore_kinks=ignore_kinks)


class CpuEngine(Engine):
    target = CPU_TARGET
    prefix = "cs_cpu"

    def block_size(self, tape: Tape, width: int) -> int:
        for up_to, block in REAL_BLOCKS if tape.order == 0 else SERIES_BLOCKS:
            if up_to is None or width <= up_to:
                return block
        raise AssertionError("the last block size applies to any width")

    def blocks(self, tape: Tape, width: int) -> tuple[int, int]:
        bb = self.block_size(tape, width)
        return math.ceil(width / bb), bb

    def prepare(self, module, tape: Tape, host: dict):
        if host["R"].shape[2] != module.BLOCK:  # the kernel indexes directions up to BLOCK
            raise AssertionError(f"host arrays hold blocks of {host['R'].shape[2]} directions, the "
                                 f"kernel {module.BLOCK}")
        code = (tape.op, tape.out, tape.ptr, tape.arg, tape.attr)
        blocks = [code + (host["R"][i], host["S"][i], host["T"][i], host["DR"], host["DS"], host["XR"][i],
                          host["XS"][i], host["ids"]) for i in range(host["R"].shape[0])]
        return {"kernel": module.run_block, "host": host, "blocks": blocks}

    def launch(self, run, start: int, t: int, check_kinks: bool, check_finite: bool) -> int:
        """Blocks run in parallel on threads (the kernel releases the GIL); each runs the tape."""
        kernel, blocks = run["kernel"], run["blocks"]
        if len(blocks) == 1:
            return int(kernel(start, t, check_kinks, check_finite, *blocks[0]))
        workers = min(_threads(), len(blocks))

        def work(first: int) -> list[int]:
            return [int(kernel(start, t, check_kinks, check_finite, *args)) for args in blocks[first::workers]]

        codes = [c for part in _pool(workers).map(work, range(workers)) for c in part if c]
        return min(codes) if codes else 0

    def fetch(self, run, names=("R", "S")) -> dict:
        return run["host"]


def _threads() -> int:
    import numba

    return numba.get_num_threads()


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="circuitsketch")
    return _POOLS[workers]


# ---------------------------------------------------------------- input/output conversion


def _batched(name: str, array, shape, series: bool, batch: int | None, k1: int) -> np.ndarray:
    """An API input as [1 or batch, n] (real) or [1 or batch, K1, n] (series), checked like the
    reference interpreter checks it."""
    array = checks.input_array(f"input {name!r}", array, series=series)
    core = ((k1,) if series else ()) + tuple(shape)
    if array.shape == core:
        array = array[None]
    elif batch is None or array.shape != (batch,) + core:
        expect = f"{core}" + (f" or {(batch,) + core}" if batch is not None else "")
        raise ValueError(f"input {name!r}: expected shape {expect}, got {array.shape}")
    if series:
        checks.check_real_constant_terms(f"input {name!r}", array, 1)
    return array.reshape(array.shape[0], *((k1,) if series else ()), -1)


def _per_step(name: str, array, shape, series: bool, n_steps: int, k1: int) -> np.ndarray:
    """Per-step data [n_steps, n] (real) or [n_steps, n, K1] (series)."""
    array = checks.input_array(f"per-step data {name!r}", array, series=series,
                               rows=n_steps)[:n_steps]
    core = ((k1,) if series else ()) + tuple(shape)
    if array.shape[1:] != core:
        raise ValueError(f"input {name!r}: expected shape {core}, got {array.shape[1:]}")
    flat = array.reshape(n_steps, *((k1,) if series else ()), int(np.prod(shape)))
    return flat.transpose(0, 2, 1) if series else flat


def _weights(program: Program, tape: Tape, x, example_ids, n_examples, batch, k1: int):
    """Down-weights as [1 or batch, (K1,), n_examples] plus the checked example ids."""
    series = tape.inputs[program.weight].series
    x, ids = checks.check_down_weights(program, x, example_ids, n_examples, series=series)
    n, m = x.shape[-1], ids.shape[1]
    core = ((k1,) if series else ()) + (n,)
    if x.shape != core and (batch is None or x.shape != (batch,) + core):
        raise checks.InputError(f"x (the down-weights): expected shape {core}"
                                + (f" or {(batch,) + core}" if batch is not None else "")
                                + f" (here {m} weight(s) per step), got {x.shape}")
    return (x[None] if x.shape == core else x), np.ascontiguousarray(ids)


def _initial(value: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """The final state of a program with no steps: the (real) initial state, as the reference
    returns it even for state carried as a series."""
    return np.broadcast_to(_rows(value, lo, hi), (hi - lo,) + value.shape[1:])


def _rows(value: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return value if value.shape[0] == 1 else value[lo:hi]


def _unflatten(value: np.ndarray, shape, width: int) -> np.ndarray:
    return value.reshape((width,) + value.shape[1:-1] + tuple(shape))


def _join(parts: list[dict], shapes: dict, batch: int | None) -> dict[str, np.ndarray]:
    """Concatenate chunks and reshape to the API form ([B, (K1,), *shape], unbatched if batch is None)."""
    result = {}
    for name, shape in shapes.items():
        value = np.concatenate([p[name] for p in parts])
        value = value.reshape(value.shape[:-1] + tuple(shape))
        result[name] = value if batch is not None else value[0]
    return result


_CPU = CpuEngine()


# the backend API (``evaluate``, ``run_program``): scalar circuits run on the tape engine, array
# circuits on the array engine (``array_engine``; docs/backends.md "Array engine" says why both)
def evaluate(circuit: Circuit, inputs: Mapping[str, np.ndarray], **options) -> dict[str, np.ndarray]:
    """Run ``circuit`` (see :func:`circuitsketch.backends.reference.evaluate`)."""
    if isinstance(circuit, Circuit) and array_engine.is_array_circuit(circuit):
        return array_engine.evaluate(circuit, inputs, **options)
    return _CPU.evaluate(circuit, inputs, **options)


def run_program(program: Program, init: Mapping[str, np.ndarray], **options) -> dict[str, np.ndarray]:
    """Run a training loop (see :func:`circuitsketch.backends.reference.run_program`)."""
    if isinstance(program, Program) and array_engine.is_array_circuit(program.step):
        return array_engine.run_program(program, init, **options)
    return _CPU.run_program(program, init, **options)


def kernels_cached(*, series: bool | None = None, width: int | None = None) -> bool:
    """Whether the tape kernels a run needs are compiled on this machine; False before the first
    run that needs them, which compiles them (tens of seconds). ``series``: a Taylor (True) or
    real (False) run, None both; ``width``: its batch (None: a wide one). (The array engine
    compiles each kernel on first use and caches it; it is not asked here.)"""
    needed = []
    for is_series, table in ((False, REAL_BLOCKS), (True, SERIES_BLOCKS)):
        if series is None or series == is_series:  # the block choice of CpuEngine.block_size
            needed.append((is_series, next(block for up_to, block in table if up_to is None
                                           or (width is not None and width <= up_to))))
    return all(kernel_compiled(kernel_module_source(CPU_TARGET, None, is_series, block),
                               CpuEngine.prefix) for is_series, block in needed)
