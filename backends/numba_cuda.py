"""The Numba CUDA backend: the CPU backend's tapes and snippets, one GPU thread per direction.

The kernel is generated from the same op-to-code table (``kernel_source``) as the CPU kernel;
only the prologue and the launch differ: every snippet runs for the thread's own direction
``d = cuda.grid(1)``, the tape is read by all threads alike (no divergence), and the first
failing instruction is reported through ``cuda.atomic.min`` on an error word. Values live on
the device for a whole program (real ``[slots, B]``, series ``[slots, K1, B]``; consecutive
threads read consecutive directions, so loads coalesce); per-step data and down-weights are
uploaded once and read by the tape's load instructions.

Without a GPU, set ``NUMBA_ENABLE_CUDASIM=1`` before Numba is imported to run the same kernels
in Numba's CUDA simulator (slow: small circuits only).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from ..ir.circuit import Circuit, Program
from . import array_cuda, array_engine
from .checks import BackendUnavailableError
from .emit import Target
from .numba_cpu import OVERFLOWED, Engine
from .tape import Tape

#: threads per CUDA block
THREADS = 128
_NO_ERROR = np.iinfo(np.int64).max

CUDA_TARGET = Target(
    name="numba-cuda",
    imports="from numba import cuda",
    helper_decorator="@cuda.jit(device=True)",
    block_decorator="@cuda.jit(device=True)",
    loop_directions=False,
    wrapper='''@cuda.jit
def run_tape({params}, err):
    d = cuda.grid(1)
    if d < R.shape[1]:
        e = run_block(d, start, t, check_kinks, check_finite, op, out, ptr, arg, attr, R, S, T,
                      DR, DS, XR, XS, ids)
        if e != 0:
            cuda.atomic.min(err, 0, e)''')


class CudaEngine(Engine):
    target = CUDA_TARGET
    prefix = "cs_cuda"

    def block_size(self, tape: Tape, width: int) -> None:
        return None  # one thread per direction

    def blocks(self, tape: Tape, width: int) -> tuple[int, int]:
        return 1, width  # one block holding every direction: the device layout without its axis

    def require_available(self) -> None:
        """A GPU (or the simulator) must be there before any work starts."""
        try:
            from numba import cuda
        except ImportError as exc:
            raise BackendUnavailableError(f"numba-cuda: Numba's CUDA support does not import "
                                          f"({exc}); install numba-cuda") from None
        if not cuda.is_available():
            raise BackendUnavailableError(
                "numba-cuda: no CUDA GPU is available (set NUMBA_ENABLE_CUDASIM=1 before "
                "importing numba to run on the CUDA simulator)")

    def prepare(self, module, tape: Tape, host: dict):
        from numba import cuda

        self.require_available()
        device = {name: cuda.to_device(np.ascontiguousarray(host[name][0] if name in _BLOCKED else host[name]))
                  for name in ("R", "S", "T", "DR", "DS", "XR", "XS", "ids")}
        code = tuple(cuda.to_device(a) for a in (tape.op, tape.out, tape.ptr, tape.arg, tape.attr))
        width = host["width"]
        return {"module": module, "device": device, "code": code, "err": cuda.to_device(np.zeros(1, np.int64)),
                "grid": (max(1, math.ceil(width / THREADS)), min(THREADS, max(width, 1)))}

    def launch(self, run, start: int, t: int, check_kinks: bool, check_finite: bool) -> int:
        run["err"].copy_to_device(np.array([_NO_ERROR], dtype=np.int64))
        dev = run["device"]
        blocks, threads = run["grid"]
        try:
            run["module"].run_tape[blocks, threads](
                start, t, check_kinks, check_finite, *run["code"], dev["R"], dev["S"], dev["T"],
                dev["DR"], dev["DS"], dev["XR"], dev["XS"], dev["ids"], run["err"])
        except (ArithmeticError, ValueError):  # only the simulator raises (Python's math)
            return OVERFLOWED
        code = int(run["err"].copy_to_host()[0])
        return 0 if code == _NO_ERROR else code

    def fetch(self, run, names=("R", "S")) -> dict:
        return {name: run["device"][name].copy_to_host()[None] for name in names}


_BLOCKED = {"R", "S", "T", "XR", "XS"}  # host arrays with a leading block axis
_CUDA = CudaEngine()


# the backend API (``evaluate``, ``run_program``): scalar circuits run on the tape engine, array
# circuits on the CUDA array engine (``array_cuda``), as numba-cpu dispatches
def evaluate(circuit: Circuit, inputs: Mapping[str, np.ndarray], **options) -> dict[str, np.ndarray]:
    """Run ``circuit`` (see :func:`circuitsketch.backends.reference.evaluate`)."""
    if isinstance(circuit, Circuit) and array_engine.is_array_circuit(circuit):
        return array_cuda.evaluate(circuit, inputs, **options)
    return _CUDA.evaluate(circuit, inputs, **options)


def run_program(program: Program, init: Mapping[str, np.ndarray], **options) -> dict[str, np.ndarray]:
    """Run a training loop (see :func:`circuitsketch.backends.reference.run_program`)."""
    if isinstance(program, Program) and array_engine.is_array_circuit(program.step):
        return array_cuda.run_program(program, init, **options)
    return _CUDA.run_program(program, init, **options)
