r"""The array engine of ``backend="numba-cuda"``: the CPU array engine's plan, run by CUDA kernels.

The plan (:func:`array_engine.plan`, :func:`array_engine.plan_program`) is the CPU engine's:
same arenas ``R``/``S``/``I``, same entries, same argument lists. Only each kernel's prologue
and launch differ: a CUDA kernel's threads span (direction, element) -- ``g = cuda.grid(1)``
split into ``d`` and the element index -- where the CPU kernel loops over both.

**Generated** (:func:`cuda_source`): every elementwise kernel of ``array_codegen.KERNELS``
(real, per-element series recurrences, coefficient-wise series ops) and every fused group is
transformed mechanically from its CPU source: the ``for d in range(nb)`` / ``for i in
range(n)`` loops become the thread index, scratch arrays become ``cuda.local.array`` of the
module's constant ``K1C``, and ``return code`` becomes ``cuda.atomic.min`` on a device error
word. The series helpers (``SERIES_HELPERS``) become device functions.
**Hand-written** (:data:`HAND_SOURCE`): the kernels whose CPU loops are not over (direction,
element) -- ``ew_mul_ss`` (the CPU one accumulates in place over the coefficients), gathers,
places, copies, reductions, ``dot_general`` (one thread per output element, a plain loop over
the contraction; no shared-memory tiling yet), take, scatter_add (one thread per output
element summing its matching indices in order: no atomics, the CPU's summation order) and the
per-step loads.

**Run**. The arenas live on the device for the whole call; per-step data, down-weights and
example ids are uploaded once per run. Each step launches the plan's entries in order (on one
stream, so no host round trip between them); a failing thread writes
``(t * entries + entry) * STEP + code`` into the error word with ``cuda.atomic.min``, so the
first failure in (step, entry) order wins. The word is read every :data:`CHECK_EVERY` steps
and at the end, and mapped back to the node as on the CPU (``Plan.describe``):
``EvaluationError`` / ``KinkError`` naming ``circuit.describe(node)``. Under the simulator a
Python arithmetic exception (math overflow) inside a kernel is named by replaying the circuit
on the reference interpreter.

All directions run in one block (one launch per entry spans them all) unless their arenas
exceed ``DEVICE_FRACTION`` of the device's free memory or ``HOST_BUDGET`` (the host copy:
:func:`block_width`); then blocks of directions run one after another, each through every
step.
"""

from __future__ import annotations

import math
import re
import threading
from typing import Callable, Mapping

import numpy as np

from ..ir.circuit import Circuit, Program
from ..semantics.errors import EvaluationError
from . import array_codegen as cg
from . import array_engine as ae
from . import checks, reference
from .checks import BackendUnavailableError
from .emit import load_kernel_module

#: threads per CUDA block (fewer under the simulator, where each thread is a Python thread)
THREADS = 128
SIM_THREADS = 16
#: steps between reads of the error word (a failing run stops within this many steps)
CHECK_EVERY = 64
_NO_ERROR = np.iinfo(np.int64).max


# ---------------------------------------------------------------- source transformation

_SCRATCH = re.compile(r"^(\s*)(\w+) = np\.zeros\(\(?(\d+, )?K1\)?, np\.complex128\)$")
_RETURN = re.compile(r"^(\s*)return (.+)$")
_LOOP_LINES = ("for d in range(nb):", "for i in range(n):")


def _device_helpers() -> str:
    """``SERIES_HELPERS`` as CUDA device functions (slice copies written as loops)."""
    text = cg.SERIES_HELPERS.replace(
        '@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")',
        "@cuda.jit(device=True)")
    text = text.replace("W[0, :] = W[2, :]", "for j_ in range(K1):\n                    W[0, j_] = W[2, j_]")
    text = text.replace("W[1, :] = W[2, :]", "for j_ in range(K1):\n                    W[1, j_] = W[2, j_]")
    text = text.replace("Y[:] = W[0, :]", "for j_ in range(K1):\n            Y[j_] = W[0, j_]")
    return text.strip()


def cuda_source(source: str) -> str:
    """A CPU elementwise kernel's source as a CUDA kernel over (direction, element) threads
    (module doc). Raises ValueError for a source not of that form."""
    lines = source.splitlines()
    head = next(n for n, line in enumerate(lines) if line.startswith("def "))
    if not lines[head].rstrip().endswith("):") or "nb, n, o" not in lines[head]:
        raise ValueError("not an elementwise kernel")
    out = ["@cuda.jit(cache=True)", lines[head][:-2] + ", err, base):", "    g = cuda.grid(1)",
           "    if g >= nb * n:", "        return", "    d = g // n", "    i = g - d * n"]
    loops: list[int] = []  # indents of the removed loop lines still open
    removed = 0
    for line in lines[head + 1:]:
        indent = len(line) - len(line.lstrip())
        while loops and line.strip() and indent <= loops[-1]:
            loops.pop()
        if line.strip() in _LOOP_LINES:
            loops.append(indent)
            removed += 1
            continue
        if not line.strip():
            continue
        line = line[4 * len(loops):]
        scratch = _SCRATCH.match(line)
        if scratch:
            pad, name, rows = scratch.group(1), scratch.group(2), scratch.group(3)
            shape = f"({rows}K1C)" if rows else "K1C"
            out.append(f"{pad}{name} = cuda.local.array({shape}, numba.complex128)")
            if rows:
                out += [f"{pad}for r_ in range({rows[:-2]}):", f"{pad}    for j_ in range(K1C):",
                        f"{pad}        {name}[r_, j_] = 0j"]
            else:
                out += [f"{pad}for j_ in range(K1C):", f"{pad}    {name}[j_] = 0j"]
            continue
        ret = _RETURN.match(line)
        if ret:
            pad, value = ret.groups()
            if value != "0":
                out.append(f"{pad}cuda.atomic.min(err, 0, base + ({value}))")
            out.append(f"{pad}return")
            continue
        out.append(line)
    if removed != 2:
        raise ValueError("no (direction, element) loops")
    return "\n".join(out)


HAND_SOURCE = '''
@cuda.jit(cache=True)
def ew_mul_ss(R, S, I, K1, kinks, p, nb, n, o, x0, xj, xd, xe, y0, yj, yd, ye, err, base):
    g = cuda.grid(1)
    if g >= nb * n:
        return
    d = g // n
    i = g - d * n
    for r in range(K1):
        acc = 0j
        for q in range(r + 1):
            acc += S[x0 + q * xj + d * xd + i * xe] * S[y0 + (r - q) * yj + d * yd + i * ye]
        S[o + (r * nb + d) * n + i] = acc
        if acc - acc != 0:
            cuda.atomic.min(err, 0, base + NONFINITE)


@cuda.jit(cache=True)
def gather_r(R, S, I, K1, nb, n, o, x0, xj, xd, xe, ix, err, base):
    g = cuda.grid(1)
    if g < nb * n:
        d = g // n
        i = g - d * n
        R[o + d * n + i] = R[x0 + d * xd + I[ix + i]]


@cuda.jit(cache=True)
def gather_s(R, S, I, K1, nb, n, o, x0, xj, xd, xe, ix, err, base):
    g = cuda.grid(1)
    if g < nb * n:
        d = g // n
        i = g - d * n
        for j in range(K1):
            S[o + (j * nb + d) * n + i] = S[x0 + j * xj + d * xd + I[ix + i]]


@cuda.jit(cache=True)
def place_r(R, S, I, K1, nb, n_out, o, n, x0, xj, xd, xe, ix, err, base):
    g = cuda.grid(1)
    if g < nb * n:
        d = g // n
        i = g - d * n
        R[o + d * n_out + I[ix + i]] = R[x0 + d * xd + i]


@cuda.jit(cache=True)
def place_s(R, S, I, K1, nb, n_out, o, n, x0, xj, xd, xe, ix, err, base):
    g = cuda.grid(1)
    if g < nb * n:
        d = g // n
        i = g - d * n
        for j in range(K1):
            S[o + (j * nb + d) * n_out + I[ix + i]] = S[x0 + j * xj + d * xd + i]


@cuda.jit(cache=True)
def place_rs(R, S, I, K1, nb, n_out, o, n, x0, xj, xd, xe, ix, err, base):
    g = cuda.grid(1)
    if g < nb * n:
        d = g // n
        i = g - d * n
        S[o + d * n_out + I[ix + i]] = R[x0 + d * xd + i]
        for j in range(1, K1):
            S[o + (j * nb + d) * n_out + I[ix + i]] = 0j


@cuda.jit(cache=True)
def copy_r(R, S, I, K1, n, o, x0, err, base):
    i = cuda.grid(1)
    if i < n:
        R[o + i] = R[x0 + i]


@cuda.jit(cache=True)
def copy_s(R, S, I, K1, n, o, x0, err, base):
    i = cuda.grid(1)
    if i < n:
        S[o + i] = S[x0 + i]


@cuda.jit(cache=True)
def copy_rs(R, S, I, K1, n, o, x0, err, base):
    i = cuda.grid(1)
    if i < n:
        S[o + i] = R[x0 + i]
        for j in range(1, K1):
            S[o + j * n + i] = 0j


@cuda.jit(cache=True)
def reduce_sum_r(R, S, I, K1, nb, m, nr, o, x0, xj, xd, xe, ix, err, base):
    g = cuda.grid(1)
    if g < nb * m:
        d = g // m
        q = g - d * m
        acc = 0.0
        for r in range(nr):
            acc += R[x0 + d * xd + I[ix + q * nr + r]]
        R[o + d * m + q] = acc
        if acc - acc != 0.0:
            cuda.atomic.min(err, 0, base + NONFINITE)


@cuda.jit(cache=True)
def reduce_sum_s(R, S, I, K1, nb, m, nr, o, x0, xj, xd, xe, ix, err, base):
    g = cuda.grid(1)
    if g < nb * m:
        d = g // m
        q = g - d * m
        for j in range(K1):
            acc = 0j
            for r in range(nr):
                acc += S[x0 + j * xj + d * xd + I[ix + q * nr + r]]
            S[o + (j * nb + d) * m + q] = acc
            if acc - acc != 0:
                cuda.atomic.min(err, 0, base + NONFINITE)


@cuda.jit(cache=True)
def reduce_max_r(R, S, I, K1, nb, m, nr, o, x0, xj, xd, xe, ix, err, base):
    g = cuda.grid(1)
    if g < nb * m:
        d = g // m
        q = g - d * m
        best = R[x0 + d * xd + I[ix + q * nr]]
        for r in range(1, nr):
            v = R[x0 + d * xd + I[ix + q * nr + r]]
            if v > best:
                best = v
        R[o + d * m + q] = best


@cuda.jit(cache=True)
def reduce_max_s(R, S, I, K1, kinks, nb, m, nr, o, x0, xj, xd, xe, ix, err, base):
    g = cuda.grid(1)
    if g >= nb * m:
        return
    d = g // m
    q = g - d * m
    at0 = x0 + d * xd
    win = at0 + I[ix + q * nr]
    for r in range(nr):
        if S[at0 + I[ix + q * nr + r]].imag != 0:
            cuda.atomic.min(err, 0, base + IMAGINARY)
            return
    for r in range(1, nr):
        at = at0 + I[ix + q * nr + r]
        if S[at].real > S[win].real:
            win = at
    if kinks:
        for r in range(nr):
            at = at0 + I[ix + q * nr + r]
            if at != win and S[at].real == S[win].real:
                for j in range(1, K1):
                    if S[at + j * xj] != S[win + j * xj]:
                        cuda.atomic.min(err, 0, base + KINK)
                        return
    for j in range(K1):
        S[o + (j * nb + d) * m + q] = S[win + j * xj]


@cuda.jit(cache=True)
def dg_rr(R, S, I, K1, nb, G, M, N, C, o, x0, xj, xd, xg, xm, xc, y0, yj, yd, yg, yc, yn, err, base):
    g = cuda.grid(1)
    size = G * M * N
    if g >= nb * size:
        return
    d = g // size
    e = g - d * size
    gg = e // (M * N)
    mm = (e // N) % M
    nn = e % N
    acc = 0.0
    for c in range(C):
        acc += R[x0 + d * xd + gg * xg + mm * xm + c * xc] * R[y0 + d * yd + gg * yg + c * yc + nn * yn]
    R[o + d * size + e] = acc
    if acc - acc != 0.0:
        cuda.atomic.min(err, 0, base + NONFINITE)


@cuda.jit(cache=True)
def dg_ss(R, S, I, K1, nb, G, M, N, C, o, x0, xj, xd, xg, xm, xc, y0, yj, yd, yg, yc, yn, err, base):
    g = cuda.grid(1)
    size = G * M * N
    if g >= nb * size:
        return
    d = g // size
    e = g - d * size
    gg = e // (M * N)
    mm = (e // N) % M
    nn = e % N
    for r in range(K1):
        acc = 0j
        for c in range(C):
            a = x0 + d * xd + gg * xg + mm * xm + c * xc
            b = y0 + d * yd + gg * yg + c * yc + nn * yn
            for i in range(r + 1):
                acc += S[a + i * xj] * S[b + (r - i) * yj]
        S[o + (r * nb + d) * size + e] = acc
        if acc - acc != 0:
            cuda.atomic.min(err, 0, base + NONFINITE)


@cuda.jit(cache=True)
def dg_sr(R, S, I, K1, nb, G, M, N, C, o, x0, xj, xd, xg, xm, xc, y0, yj, yd, yg, yc, yn, err, base):
    g = cuda.grid(1)
    size = G * M * N
    if g >= nb * size:
        return
    d = g // size
    e = g - d * size
    gg = e // (M * N)
    mm = (e // N) % M
    nn = e % N
    for r in range(K1):
        acc = 0j
        for c in range(C):
            acc += S[x0 + r * xj + d * xd + gg * xg + mm * xm + c * xc] * R[y0 + d * yd + gg * yg + c * yc + nn * yn]
        S[o + (r * nb + d) * size + e] = acc
        if acc - acc != 0:
            cuda.atomic.min(err, 0, base + NONFINITE)


@cuda.jit(cache=True)
def dg_rs(R, S, I, K1, nb, G, M, N, C, o, x0, xj, xd, xg, xm, xc, y0, yj, yd, yg, yc, yn, err, base):
    g = cuda.grid(1)
    size = G * M * N
    if g >= nb * size:
        return
    d = g // size
    e = g - d * size
    gg = e // (M * N)
    mm = (e // N) % M
    nn = e % N
    for r in range(K1):
        acc = 0j
        for c in range(C):
            acc += R[x0 + d * xd + gg * xg + mm * xm + c * xc] * S[y0 + r * yj + d * yd + gg * yg + c * yc + nn * yn]
        S[o + (r * nb + d) * size + e] = acc
        if acc - acc != 0:
            cuda.atomic.min(err, 0, base + NONFINITE)


@cuda.jit(cache=True)
def take_r(R, S, I, K1, nb, pre, size, post, m, o, x0, xj, xd, xe, i0, id, err, base):
    g = cuda.grid(1)
    n = pre * m * post
    if g >= nb * n:
        return
    d = g // n
    e = g - d * n
    p = e // (m * post)
    q = (e // post) % m
    r = e % post
    k = index_at(R, i0 + d * id + q, size)
    if k < 0:
        cuda.atomic.min(err, 0, base - k)
        return
    R[o + d * n + e] = R[x0 + d * xd + (p * size + k) * post + r]


@cuda.jit(cache=True)
def take_s(R, S, I, K1, nb, pre, size, post, m, o, x0, xj, xd, xe, i0, id, err, base):
    g = cuda.grid(1)
    n = pre * m * post
    if g >= nb * n:
        return
    d = g // n
    e = g - d * n
    p = e // (m * post)
    q = (e // post) % m
    r = e % post
    k = index_at(R, i0 + d * id + q, size)
    if k < 0:
        cuda.atomic.min(err, 0, base - k)
        return
    for j in range(K1):
        S[o + (j * nb + d) * n + e] = S[x0 + j * xj + d * xd + (p * size + k) * post + r]


@cuda.jit(cache=True)
def scatter_add_r(R, S, I, K1, nb, pre, size, post, m, o, x0, xj, xd, xe, i0, id, err, base):
    g = cuda.grid(1)
    n = pre * size * post
    if g >= nb * n:
        return
    d = g // n
    e = g - d * n
    p = e // (size * post)
    k = (e // post) % size
    r = e % post
    acc = 0.0
    for q in range(m):
        kq = index_at(R, i0 + d * id + q, size)
        if kq < 0:
            cuda.atomic.min(err, 0, base - kq)
            return
        if kq == k:
            acc += R[x0 + d * xd + (p * m + q) * post + r]
    R[o + d * n + e] = acc


@cuda.jit(cache=True)
def scatter_add_s(R, S, I, K1, nb, pre, size, post, m, o, x0, xj, xd, xe, i0, id, err, base):
    g = cuda.grid(1)
    n = pre * size * post
    if g >= nb * n:
        return
    d = g // n
    e = g - d * n
    p = e // (size * post)
    k = (e // post) % size
    r = e % post
    for j in range(K1):
        acc = 0j
        for q in range(m):
            kq = index_at(R, i0 + d * id + q, size)
            if kq < 0:
                cuda.atomic.min(err, 0, base - kq)
                return
            if kq == k:
                acc += S[x0 + j * xj + d * xd + (p * m + q) * post + r]
        S[o + (j * nb + d) * n + e] = acc


@cuda.jit(cache=True)
def load_rows_r(R, S, I, K1, D, t, n, o, col, err, base):
    i = cuda.grid(1)
    if i < n:
        R[o + i] = D[t, col + i]


@cuda.jit(cache=True)
def load_weights_r(R, S, I, K1, X, ids, t, nb, m, o, err, base):
    g = cuda.grid(1)
    if g < nb * m:
        d = g // m
        q = g - d * m
        R[o + d * m + q] = X[d, ids[t, q]]


@cuda.jit(cache=True)
def load_weights_s(R, S, I, K1, X, ids, t, nb, m, o, err, base):
    g = cuda.grid(1)
    if g < nb * m:
        d = g // m
        q = g - d * m
        for j in range(K1):
            S[o + (j * nb + d) * m + q] = X[d, j, ids[t, q]]
'''


def _hand_names() -> list[str]:
    return [chunk.split("def ", 1)[1].split("(", 1)[0]
            for chunk in HAND_SOURCE.strip().split("\n\n\n") if "@cuda.jit(cache=True)\n" in chunk]


HAND = frozenset(_hand_names())


def _threads(name: str, args: list) -> int:
    """Threads a launch of kernel ``name`` with resolved arguments ``args`` needs."""
    if name.startswith(("ew_", "fused_", "gather_", "place_")):
        at = {"ew": (3, 4), "fu": (3, 4), "ga": (1, 2), "pl": (1, 4)}[name[:2]]
        return args[at[0]] * args[at[1]]
    if name.startswith("copy_"):
        return args[1]
    if name.startswith("reduce_"):
        shift = 1 if name == "reduce_max_s" else 0
        return args[1 + shift] * args[2 + shift]
    if name.startswith("dg_"):
        return args[1] * args[2] * args[3] * args[4]
    if name.startswith(("take_", "scatter_add_")):
        nb, pre, size, post, m = args[1:6]
        return nb * pre * (m if name.startswith("take") else size) * post
    if name == "load_rows_r":
        return args[3]
    if name.startswith("load_weights_"):
        return args[4] * args[5]
    raise NotImplementedError(f"numba-cuda array engine: no launch size for kernel {name!r}")


HEADER = "\n".join(["import math", "import numba", "from numba import cuda", "",
                    f"KINK, IMAGINARY, NONFINITE = {cg.KINK}, {cg.IMAGINARY}, {cg.NONFINITE}"])


def library_source(k1: int) -> str:
    """The CUDA kernel module for series of ``k1`` coefficients: every generated table kernel
    (:func:`cuda_source`) and the hand-written ones (compiled lazily, on first launch)."""
    generated = [cuda_source(kernel.source) for name, kernel in cg.KERNELS.items()
                 if name not in HAND]
    return "\n".join([f'"""Generated by circuitsketch: the CUDA array kernels for {k1} '
                      'coefficient(s). Do not edit."""', HEADER, f"K1C = {k1}", "", "",
                      _device_helpers(), "", "", HAND_SOURCE.strip(), "", "",
                      "\n\n\n".join(generated), ""])


_LIBRARY: dict[int, object] = {}
_FUSED: dict[tuple[str, int], object] = {}
_LOCK = threading.Lock()


def library(k1: int):
    """The imported CUDA kernel module for ``k1`` coefficients (a real file: tracebacks)."""
    with _LOCK:
        if k1 not in _LIBRARY:
            uncovered = set(cg.KERNELS) - HAND
            module = load_kernel_module(library_source(k1), "cs_array_cuda")
            missing = [name for name in uncovered if not hasattr(module, name)]
            assert not missing, missing
            _LIBRARY[k1] = module
    return _LIBRARY[k1]


def function(the_plan: ae.Plan, name: str):
    """The CUDA kernel ``name`` of ``the_plan`` (library, or a fused group's own module)."""
    if name not in the_plan.fused:
        return getattr(library(the_plan.k1), name)
    key = (name, the_plan.k1)
    with _LOCK:
        if key not in _FUSED:
            source = fused_source(the_plan.fused[name], the_plan.k1)
            _FUSED[key] = load_kernel_module(source, "cs_array_cuda_fused")
    return getattr(_FUSED[key], name)


def fused_source(kernel, k1: int) -> str:
    """The CUDA module of one fused group (``array_fusion``) for ``k1`` coefficients: a
    series group's brings the series helpers as device functions."""
    helpers = [_device_helpers(), "", ""] if kernel.k1 else []
    return "\n".join([HEADER, f"K1C = {k1}", "", "", *helpers, cuda_source(kernel.source), ""])


# ---------------------------------------------------------------- running a plan on the device

def require_available():
    """The ``numba.cuda`` module, when a GPU (or the simulator) is there; else a clear error."""
    try:
        from numba import cuda
    except ImportError as exc:
        raise BackendUnavailableError(f"numba-cuda: Numba's CUDA support does not import ({exc}); "
                                      "install numba-cuda") from None
    if not cuda.is_available():
        raise BackendUnavailableError(
            "numba-cuda: no CUDA GPU is available (set NUMBA_ENABLE_CUDASIM=1 before importing "
            "numba to run on the CUDA simulator)")
    return cuda


class _Device:
    """One block's arenas on the device and the plan's launches: (entry, kernel, grid,
    arguments, positions of the step number ``t`` among them)."""

    def __init__(self, cuda, the_plan: ae.Plan, block: ae.Block, env: dict) -> None:
        self.cuda, self.plan, self.nb = cuda, the_plan, block.nb
        self.R, self.S, self.I = (cuda.to_device(a) for a in (block.R, block.S, block.I))
        self.err = cuda.to_device(np.array([_NO_ERROR], dtype=np.int64))
        self.threads = SIM_THREADS if _is_sim(cuda) else THREADS
        self.launches = []
        for e, entry in enumerate(the_plan.entries):
            args = [env.get(a, a) if isinstance(a, str) else a.at(self.nb)
                    if isinstance(a, ae.Lin) else a for a in entry.args]
            sized = [0 if isinstance(a, str) and a == "t" else a for a in args]
            total = _threads(entry.kernel, [a if isinstance(a, (int, float, bool)) else 0
                                            for a in sized])
            t_at = [k for k, a in enumerate(entry.args) if a == "t"]
            if total > 0:  # (the simulator's kernel[grid] configures the kernel object itself,
                # so the configuration is made per launch, not kept)
                grid = (max(1, math.ceil(total / self.threads)), min(self.threads, total))
                self.launches.append((e, function(the_plan, entry.kernel), grid, args, t_at))
        self.entries = len(the_plan.entries)

    def step(self, t: int) -> None:
        """Launch every entry for step ``t`` (asynchronously, in order)."""
        head = (self.R, self.S, self.I)
        for e, fn, grid, args, t_at in self.launches:
            if t_at:
                args = list(args)
                for k in t_at:
                    args[k] = t
            fn[grid](*head, *args, self.err, (t * self.entries + e) * ae.STEP)

    def error(self) -> tuple[int, int] | None:
        """The first failure (step, code in ``Plan.describe`` form), or None."""
        word = int(self.err.copy_to_host()[0])
        if word == _NO_ERROR:
            return None
        return divmod(word, self.entries * ae.STEP)

    def fetch(self, block: ae.Block) -> ae.Block:
        block.R[:] = self.R.copy_to_host()
        block.S[:] = self.S.copy_to_host()
        return block


def _is_sim(cuda) -> bool:
    from numba import config
    return bool(config.ENABLE_CUDASIM)


_SIM_ERRORS = (ArithmeticError, ValueError)  # only the simulator raises these (Python's math)


def _name_by_replay(exc: Exception, replay: Callable[[], object]) -> None:
    """A Python math error inside a simulated kernel (e.g. ``math.exp`` overflow) carries no
    node: the reference interpreter, replaying the run, raises naming it."""
    replay()
    raise EvaluationError(f"numba-cuda (simulator): a kernel raised {exc!r} where the reference "
                          "interpreter runs cleanly") from exc


class CudaArrayEngine(ae.ArrayEngine):
    """``evaluate`` and ``run_program`` of array circuits on the GPU (module doc)."""

    def evaluate(self, circuit: Circuit, inputs: Mapping[str, np.ndarray], *,
                 batch: int | None = None, ignore_kinks: bool = False) -> dict[str, np.ndarray]:
        """Run an array circuit (see :func:`circuitsketch.backends.reference.evaluate`)."""
        cuda = require_available()
        checks.require_verified(circuit)
        checks.check_batch(batch)
        reference.check_circuit_inputs(circuit, inputs)
        series = reference.series_inputs(circuit)
        internal = {name: ae._internal(circuit, name, inputs[name], shape, name in series, batch)
                    for name, shape in circuit.inputs}
        the_plan = self._cached(circuit, "cuda", lambda: ae.plan(circuit))
        width = batch or 1
        checks.check_budget(circuit, width=width, backend="numba-cuda",
                            memory_bytes=ae.arena_bytes(the_plan, width))
        nb = block_width(the_plan, width, cuda)
        blocks = []
        for lo in range(0, width, nb):
            block = ae.Block.allocate(the_plan, nb)
            for name, buf in the_plan.inputs.items():
                block.put(buf, ae._rows(internal[name], lo, nb, width, 1 if buf.series else 0))
            device = _Device(cuda, the_plan, block, {"kinks": not ignore_kinks})
            try:
                device.step(0)
                failed = device.error()
            except _SIM_ERRORS as exc:
                _name_by_replay(exc, lambda: reference.evaluate(
                    circuit, inputs, batch=batch, ignore_kinks=ignore_kinks))
            if failed is not None:
                ae._fail(the_plan, failed[1])
            blocks.append(device.fetch(block))
        return {out.name: ae._gather_output(the_plan, blocks, out, width, batch)
                for out in circuit.outputs}

    def run_program(self, program: Program, init: Mapping[str, np.ndarray], *,
                    data: Mapping[str, np.ndarray] | None = None,
                    static: Mapping[str, np.ndarray] | None = None,
                    x: np.ndarray | None = None, example_ids: np.ndarray | None = None,
                    n_examples: int | None = None, batch: int | None = None,
                    ignore_kinks: bool = False,
                    progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
        """Run a training loop of array steps (see ``reference.run_program``); ``progress``
        counts the steps of each block of directions in turn (one block unless the batch
        exceeds the device's free memory)."""
        cuda = require_available()
        options = dict(data=data, static=static, x=x, example_ids=example_ids,
                       n_examples=n_examples, batch=batch, ignore_kinks=ignore_kinks)
        host = _program_host(program, init, **options)
        step, width = program.step, batch or 1
        shapes = step.input_shapes
        if program.n_steps == 0:
            return {name: reference.to_external(host["state"][name], shapes[name], False, batch,
                                                step.order + 1) for name in program.carry}
        roles = ("cuda", program.carry, program.per_step, program.weight)
        the_plan = self._cached(step, roles, lambda: ae.plan_program(program))
        checks.check_budget(step, width=width, n_steps=program.n_steps, backend="numba-cuda",
                            memory_bytes=ae.arena_bytes(the_plan, width))
        nb = block_width(the_plan, width, cuda)
        shared = {k: cuda.to_device(np.ascontiguousarray(host[k])) for k in ("DR", "ids")}
        blocks = []
        for lo in range(0, width, nb):
            block = ae.Block.allocate(the_plan, nb)
            for name, value in [*host["state"].items(), *host["fixed"].items()]:
                lead = 1 if value.dtype == np.complex128 and value.ndim == len(shapes[name]) + 2 else 0
                block.put(the_plan.inputs[name], ae._rows(value, lo, nb, width, lead))
            env = {"kinks": not ignore_kinks, **shared,
                   **{k: cuda.to_device(_weight_rows(host[k], lo, nb, width)) for k in ("XR", "XS")}}
            device = _Device(cuda, the_plan, block, env)
            try:
                _steps_on(device, program.n_steps, progress)
            except _SIM_ERRORS as exc:
                _name_by_replay(exc, lambda: reference.run_program(program, init, **options))
            blocks.append(device.fetch(block))
        return {name: ae._gather_whole(the_plan, blocks, the_plan.inputs[name], shapes[name],
                                       width, batch) for name in program.carry}


def _steps_on(device: _Device, n_steps: int, progress) -> None:
    """Every step on one device block, reading the error word every ``CHECK_EVERY`` steps.
    ``progress(t)`` is called once per step when its launches are queued (the device may
    still be running earlier steps)."""
    for t in range(n_steps):
        device.step(t)
        if (t + 1) % CHECK_EVERY == 0 or t + 1 == n_steps:
            failed = device.error()
            if failed is not None:
                ae._fail(device.plan, failed[1])
        if progress is not None:
            progress(t + 1)


#: fraction of the device's free memory one block of directions may take
DEVICE_FRACTION = 0.8
#: bytes of host arena one block may take (the host copy of the arenas holds its inputs and
#: results: a wider batch than this runs in several device blocks)
HOST_BUDGET = 8 << 30
#: an upper bound on the directions of one block (None: only memory bounds it; tests set it)
MAX_BLOCK: int | None = None


def block_width(the_plan: ae.Plan, width: int, cuda) -> int:
    """Directions per device block: all of them unless their arenas exceed
    ``DEVICE_FRACTION`` of the device's free memory or ``HOST_BUDGET`` (the simulator: no
    bound)."""
    nb = width if MAX_BLOCK is None else max(1, min(width, MAX_BLOCK))
    if _is_sim(cuda):
        return nb
    free, _ = cuda.current_context().get_memory_info()
    fixed = ae.arena_bytes(the_plan, 0)
    per = 8 * the_plan.sizes["R"].a + 16 * the_plan.sizes["S"].a
    cap = int((min(DEVICE_FRACTION * free, HOST_BUDGET) - fixed) // max(per, 1))
    if cap < 1:
        raise MemoryError(f"numba-cuda: one direction's arenas ({(fixed + per) / 2**20:.1f} MiB) "
                          f"do not fit the device's free memory ({free / 2**20:.1f} MiB) or "
                          f"HOST_BUDGET ({HOST_BUDGET / 2**20:.0f} MiB)")
    return min(nb, cap)


def _weight_rows(xs: np.ndarray, lo: int, nb: int, width: int) -> np.ndarray:
    """Down-weights of directions lo .. lo+nb-1, one row each (a shared row repeated)."""
    rows = ae._rows(xs, lo, nb, width, 0) if xs.shape[0] > 1 else xs
    return np.ascontiguousarray(np.broadcast_to(rows, (nb,) + xs.shape[1:]))


def _program_host(program: Program, init, *, data, static, x, example_ids, n_examples, batch,
                  ignore_kinks) -> dict:
    """A program's inputs checked as on the CPU engine and laid out for the device: carried
    state, static inputs, per-step data rows ``DR``, down-weights ``XR``/``XS`` and ids."""
    data, static = checks.check_program_arguments(program, init, data, static, x, batch)
    step = program.step
    shapes = step.input_shapes
    series = reference.series_inputs(step)
    n_steps = program.n_steps
    host = {
        "state": {name: ae._internal(step, name, init[name], shapes[name], False, batch)
                  for name in program.carry},
        "fixed": {name: ae._internal(step, name, static[name], shapes[name], name in series, batch)
                  for name in program.static_inputs}}
    rows = [ae._step_rows(name, data[name], shapes[name], n_steps) for name in program.per_step]
    host["DR"] = np.concatenate(rows, axis=1) if rows else np.zeros((1, 1))
    host["XR"], host["XS"] = np.zeros((1, 1)), np.zeros((1, 1, 1), np.complex128)
    host["ids"] = np.zeros((1, 1), np.int64)
    if program.weight is not None:
        wseries = program.weight in series
        xs, ids = checks.check_down_weights(program, x, example_ids, n_examples, series=wseries)
        host["ids"] = np.asarray(ids, np.int64)
        host["XS" if wseries else "XR"] = xs[None] if xs.ndim == (2 if wseries else 1) else xs
    return host


ENGINE = CudaArrayEngine()
evaluate = ENGINE.evaluate
run_program = ENGINE.run_program

__all__ = ["CudaArrayEngine", "HAND", "cuda_source", "evaluate", "fused_source", "library_source",
           "run_program"]
