"""``circuitsketch emit`` and :func:`emit`: the lowered IR and the kernel source, for inspection.

This is the command line's layer (it traces user functions and reads the backends' targets), so
it lives apart from ``backends/emit.py``, which renders the kernels the backends run.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os

from ..cli import HelpFormatter
from ..frontends.tracer import trace
from ..ir.circuit import Circuit, Program
from ..ir.text import print_circuit, print_program
from ..passes.taylor import taylor
from . import array_engine, numba_cpu, numba_cuda
from .emit import STRAIGHT_LINE_MAX, kernel_module_source
from .tape import compile_tape

def emit(target: Circuit | Program, order: int = 0, seeds=None, backend: str = "numba-cpu") -> str:
    """The lowered IR text of ``target`` at ``order`` along ``seeds`` (a program's default: its
    weight input) plus the kernel source for ``backend``. A scalar circuit shows the tape:
    straight-line code for at most ``STRAIGHT_LINE_MAX`` instructions (the most readable form),
    else the tape interpreter; an array circuit shows the array engine's plan, each kernel call
    under the IR line it computes, then every kernel's source once."""
    targets = {"numba-cpu": numba_cpu.CPU_TARGET, "numba-cuda": numba_cuda.CUDA_TARGET}
    if backend not in targets:
        raise ValueError(f"emit: backend must be one of {sorted(targets)}, got {backend!r}")
    lowered = taylor(target, order, seeds) if order else target
    program = lowered if isinstance(lowered, Program) else None
    step = program.step if program else lowered
    text = print_program(program) if program else print_circuit(step)
    if array_engine.is_array_circuit(step):
        if backend != "numba-cpu":
            raise ValueError(f"emit: for an array circuit emit shows numba-cpu's plan and kernels "
                             f"(--backend numba-cpu); {backend}'s array kernels are rewritten from "
                             "the same table (backends/array_cuda.py: cuda_source)")
        return (f"# lowered IR (order {step.order})\n{text}\n# numba-cpu array engine\n"
                f"{array_engine.emit_text(lowered)}")
    tape = compile_tape(step, program)
    straight = len(tape) <= STRAIGHT_LINE_MAX
    block = numba_cpu.SERIES_BLOCKS[-1][1] if backend == "numba-cpu" else None
    source = kernel_module_source(targets[backend], tape if straight else None, step.order > 0, block)
    stats = ", ".join(f"{k}={v}" for k, v in tape.stats.items())
    return f"# lowered IR (order {step.order})\n{text}\n# tape: {stats}\n# {backend} kernel\n{source}"


_EXAMPLES = {
    "logistic": ("weighted logistic loss of a 3-feature example",
                 lambda w, x, y: (1.0 + (-(y * (w[0] * x[0] + w[1] * x[1] + w[2] * x[2]))).exp()).log(),
                 {"w": (3,), "x": (3,), "y": ()}),
    "gelu": ("a GELU unit", lambda a, b: (a * b).gelu(), {"a": (), "b": ()}),
}


def _parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, _, dims = text.partition("=")
    if not name or not _:
        raise argparse.ArgumentTypeError(f"expected NAME=D0,D1,... (or NAME= for a scalar), got {text!r}")
    parts = [d.strip() for d in dims.split(",") if d.strip()]
    if not all(d.isdigit() for d in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: dimensions must be integers >= 0")
    return name, tuple(int(d) for d in parts)


def register_cli(subparsers) -> argparse.ArgumentParser:
    """Add ``circuitsketch emit``: print the lowered IR and kernel of a traced function."""
    parser = subparsers.add_parser(
        "emit", help="print the lowered IR and generated kernel of a traced function",
        description="Trace FILE.py:FUNCTION with the given input shapes (or a built-in example), "
                    "lower it to Taylor order K along the seed inputs, and print the IR and the "
                    "kernel the backend runs.", formatter_class=HelpFormatter)
    parser.add_argument("function", help="FILE.py:FUNCTION, or a built-in example: "
                        + ", ".join(f"{k} ({v[0]})" for k, v in _EXAMPLES.items()))
    parser.add_argument("--shape", action="append", type=_parse_shape, default=[],
                        metavar="NAME=D0,D1", help="input shape (repeat per input; NAME= for a scalar)")
    parser.add_argument("--order", type=_order, default=0,
                        help="Taylor order K of the lowering (0: the real circuit, not lowered)")
    parser.add_argument("--seed", action="append", metavar="NAME",
                        help="an input that moves along z when lowering (repeat per input; "
                             "needed for --order > 0 unless the target is a program)")
    parser.add_argument("--inputs", default="values", choices=["values", "tensors"],
                        help="how FUNCTION receives its inputs: arrays of scalar Values (one node "
                             "per gate, the tape) or numpy-like Tensors (one node per array "
                             "operation, the array engine)")
    parser.add_argument("--backend", default="numba-cpu", choices=["numba-cpu", "numba-cuda"],
                        help="backend whose kernel source is printed")
    parser.set_defaults(run=_emit_command)
    return parser


def _order(text: str) -> int:
    """argparse type of ``--order``: an integer >= 0."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 0")
    return int(text)


def _emit_command(args: argparse.Namespace) -> int:
    if args.function in _EXAMPLES:
        _, fn, shapes = _EXAMPLES[args.function]
    else:
        path, _, func = args.function.rpartition(":")
        if not path or not func:
            raise ValueError(f"expected FILE.py:FUNCTION or one of {sorted(_EXAMPLES)}, got "
                             f"{args.function!r}")
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such file: {path}")
        spec = importlib.util.spec_from_file_location("_circuitsketch_emit_user", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        fn, shapes = getattr(module, func, None), dict(args.shape)
        if not callable(fn):
            raise ValueError(f"{path} defines no function {func!r}")
        missing = [name for name in inspect.signature(fn).parameters if name not in shapes]
        if missing:
            raise ValueError(f"{func} takes inputs {missing} with no --shape: give "
                             "--shape NAME=D0,D1 for each (NAME= for a scalar)")
    circuit = trace(fn, inputs=args.inputs, **shapes)
    print(emit(circuit, order=args.order, seeds=args.seed, backend=args.backend))
    return 0
