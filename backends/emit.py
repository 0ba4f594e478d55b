"""Kernel source generation from the op-to-code table, and ``circuitsketch emit`` for reading it.

Two kinds of kernel are assembled from the same snippets (``kernel_source.VARIANTS``):

* the **tape interpreter**: one function looping over a tape's instructions and dispatching on
  the opcode; its size (and Numba's compile time) does not depend on the circuit, so it runs
  any circuit, however large, and is compiled once per machine (``cache=True``);
* a **straight-line kernel** for a small circuit: one block per instruction with its slots as
  literals, headed by the IR line it computes, e.g. ::

      # %2 = add %0 %1 : s @ model.py:4
      n, o, p0, p1 = 0, 1, 0, 2
      a, b = 0, 0
      copy(S, o, S, a, K1, nd)
      for d in range(nd):
          S[o, 0, d] = S[a, 0, d] + R[b, d]

A :class:`Target` holds what differs between the CPU and CUDA: imports, decorators, whether
``@`` lines loop over a block of directions (CPU) or run for the thread's direction (CUDA), and
the launch wrapper. Generated source is written to a real file under the kernel cache directory
before it is imported, so tracebacks and Numba's on-disk cache point at real lines; the kernel
functions keep their source as ``__source__``.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
import re
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from types import ModuleType

from ..ir.text import print_eqn
from . import kernel_source as ks
from .tape import Tape

#: circuits with at most this many instructions get a straight-line kernel in ``emit``
STRAIGHT_LINE_MAX = 300

KERNEL_PARAMS = ("start, t, check_kinks, check_finite, op, out, ptr, arg, attr, "
                 "R, S, T, DR, DS, XR, XS, ids")


@dataclass(frozen=True)
class Target:
    """What differs between backends: imports, decorators, direction loop and launch wrapper."""

    name: str
    imports: str
    helper_decorator: str
    block_decorator: str
    #: True: ``@`` lines loop over the block's directions; False: ``d`` is the thread's direction
    loop_directions: bool
    #: source of an entry function launching ``run_block`` (CUDA), formatted with ``params``
    wrapper: str
    #: software prefetch (CPU): the tape interpreter asks for the next instruction's series
    #: operands, and a ``dot`` for its next pair's, while it computes (``imports`` must bring
    #: ``prefetch_slot``)
    prefetch: bool = False
    #: series helpers the target imports (hand-written code) instead of compiling the snippet
    native_helpers: tuple[str, ...] = ()


_HELPER_CALL = re.compile(r"\b(" + "|".join(name for name, _, _ in ks.SERIES_HELPERS) + r")\(")


def render(snippet: str, block: bool) -> str:
    """A snippet as code for a block of directions (``block``: each run of ``@`` lines becomes an
    innermost ``for d in range(nd)`` loop, each check a loop over the block, helpers take ``nd``)
    or for the one direction ``d`` (``@`` dropped, checks return at once, helpers ``*_d`` take
    ``d``)."""
    lines, out, i = snippet.splitlines(), [], 0
    while i < len(lines):
        stripped = lines[i].lstrip()
        ind = lines[i][: len(lines[i]) - len(stripped)]
        if stripped.startswith("@ "):
            group = []
            while i < len(lines) and lines[i].startswith(ind + "@ "):
                group.append(lines[i][len(ind) + 2:])
                i += 1
            out += ([f"{ind}for d in range(nd):"] + [f"{ind}    {g}" for g in group] if block
                    else [ind + g for g in group])
            continue
        if stripped.startswith("! "):
            code, cond = stripped[2:].split(" ", 1)
            fail = f"return n * 64 + {code}"
            out += ([f"{ind}bad = False", f"{ind}for d in range(nd):", f"{ind}    if {cond}:",
                     f"{ind}        bad = True", f"{ind}if bad:", f"{ind}    {fail}"] if block
                    else [f"{ind}if {cond}:", f"{ind}    {fail}"])
        else:
            out.append(lines[i])
        i += 1
    code = re.sub(r"\bDIR\b", "nd" if block else "d", "\n".join(out))
    return code if block else _HELPER_CALL.sub(r"\1_d(", code)


def _kind_bits(kinds: str) -> int:
    return sum(1 << (len(kinds) - 1 - i) for i, k in enumerate(kinds) if k == "s")


def _variadic_loop(variant: ks.Variant, block: bool, prefetch: bool = False) -> str:
    """sum/dot: the init snippet, then the terms dispatched on the operands' kinds (with
    ``prefetch``, a dot first asks for its next pair's series operands)."""
    if len(variant.terms[0][0]) == 2:  # pairs (dot): a = args[q], b = args[q + half]
        head = ["half = (p1 - p0) >> 1", "for q in range(p0, p0 + half):",
                "    a = arg[q] >> 1", "    b = arg[q + half] >> 1",
                "    kk = ((arg[q] & 1) << 1) | (arg[q + half] & 1)"]
        if prefetch:
            head += ["    if q + 1 < p0 + half:",
                     "        if arg[q + 1] & 1:", "            prefetch_slot(S, arg[q + 1] >> 1)",
                     "        if arg[q + 1 + half] & 1:", "            prefetch_slot(S, arg[q + 1 + half] >> 1)"]
    else:
        head = ["for q in range(p0, p1):", "    a = arg[q] >> 1", "    kk = arg[q] & 1"]
    body = []
    for i, (kinds, term) in enumerate(variant.terms):
        if len(variant.terms) == 1:
            body.append(render(term, block))
            continue
        last = i == len(variant.terms) - 1
        body.append("else:" if last else f"{'if' if i == 0 else 'elif'} kk == {_kind_bits(kinds)}:")
        body.append(textwrap.indent(render(term, block), "    "))
    return "\n".join([render(variant.body, block)] + head + [textwrap.indent("\n".join(body), "    "),
                                                             render(variant.final, block)])


def variant_code(variant: ks.Variant, target: Target) -> str:
    """A variant's code for ``target``. On the CPU a hot variant runs each step over the whole
    direction block (vectorised), a cold one runs its whole snippet per direction inside one
    loop over the block: less code for Numba and LLVM to compile, no speed lost where it is rare."""
    if target.loop_directions and variant.hot:
        return (_variadic_loop(variant, True, target.prefetch) if variant.variadic
                else render(variant.body, True))
    code = _variadic_loop(variant, False) if variant.variadic else render(variant.body, False)
    return "for d in range(nd):\n" + textwrap.indent(code, "    ") if target.loop_directions else code


def helper_functions(target: Target, code: str | None = None) -> str:
    """The scalar and series helpers decorated for ``target``: ``name(..., K1, nd)`` over a
    direction block (CPU only) and ``name_d(..., K1, d)`` for one direction. With ``code``, only
    those it calls (directly or through another helper)."""
    scalar = [f"def {chunk.strip()}" for chunk in ks.SCALAR_HELPERS.split("\ndef ") if chunk.strip()]
    functions = {re.match(r"def (\w+)", f).group(1): f for f in scalar}
    for block in ((True, False) if target.loop_directions else (False,)):
        for name, params, body in ks.SERIES_HELPERS:
            suffix, direction = ("", "nd") if block else ("_d", "d")
            if name + suffix in target.native_helpers:
                continue
            functions[name + suffix] = (f"def {name}{suffix}({params}, K1, {direction}):\n"
                                        + textwrap.indent(render(textwrap.dedent(body).strip("\n"), block), "    "))
    if code is not None:
        used, text = set(), code
        while True:
            found = {name for name in functions if re.search(rf"\b{name}\(", text)} - used
            if not found:
                break
            used |= found
            text = "\n".join(functions[name] for name in found)
        functions = {name: f for name, f in functions.items() if name in used}
    return "\n\n\n".join(f"{target.helper_decorator}\n{f}" for f in functions.values())


def interpreter_body(target: Target, series: bool = True) -> str:
    """The tape interpreter: decode instruction n, run its variant's code. ``series=False``
    leaves out the variants that touch series (the kernel of real circuits compiles faster)."""
    decode = ["v = op[n]", "o = out[n]", "p0 = ptr[n]", "p1 = ptr[n + 1]", "a = arg[p0] >> 1",
              "b = arg[p0 + 1] >> 1", "c = arg[p0 + 2] >> 1", "x = attr[n]"]
    if series and target.prefetch:  # the next instruction's first two operands, if series
        decode += ["if n + 1 < op.shape[0]:", "    nq = ptr[n + 1]",
                   "    if arg[nq] & 1:", "        prefetch_slot(S, arg[nq] >> 1)",
                   "    if ptr[n + 2] > nq + 1 and arg[nq + 1] & 1:",
                   "        prefetch_slot(S, arg[nq + 1] >> 1)"]
    used = [(vid, v) for vid, v in enumerate(ks.VARIANTS) if series or not v.reads_series]
    branches = [f"{'if' if i == 0 else 'elif'} v == {vid}:  # {variant.name}\n"
                + textwrap.indent(variant_code(variant, target), "    ")
                for i, (vid, variant) in enumerate(used)]
    return "for n in range(start, op.shape[0]):\n" + textwrap.indent("\n".join(decode + branches), "    ")


def straight_line_body(tape: Tape, target: Target) -> str:
    """One block per instruction with literal slots, headed by the IR line it computes; the
    copies of carried state run only when ``start == 0`` (not at a program's first step)."""
    blocks, copies = [], []
    eqns = tape.circuit.eqns
    for n in range(len(tape)):
        variant = tape.variant(n)
        node = int(tape.node[n])
        first = node < 0 or n == 0 or tape.node[n - 1] != node  # a node may take 2 instructions
        title = f"# {print_eqn(node, eqns[node])}" if node >= 0 and first else f"# ({variant.name})"
        p0, p1 = int(tape.ptr[n]), int(tape.ptr[n + 1])
        slots = [int(v) >> 1 for v in tape.arg[p0: p0 + 3]]
        head = f"n, o, p0, p1 = {n}, {tape.out[n]}, {p0}, {p1}"
        values = [] if variant.variadic else list(zip("abc", slots[: p1 - p0]))
        if re.search(r"\bx\b", variant.body):
            values.append(("x", repr(float(tape.attr[n]))))
        if values:
            head += f"\n{', '.join(k for k, _ in values)} = {', '.join(str(v) for _, v in values)}"
        block = "\n".join([title, head, variant_code(variant, target)])
        (copies if n < tape.n_copy else blocks).append(block)
    head = ["if start == 0:\n" + textwrap.indent("\n".join(copies), "    ")] if copies else []
    return "\n".join(head + blocks) if head or blocks else "pass"


def kernel_module_source(target: Target, tape: Tape | None = None, series: bool = True,
                         block: int | None = None) -> str:
    """A complete module: constants, helpers, ``run_block`` (the tape interpreter for real or,
    with ``series``, any circuits; or straight-line code for ``tape``) and the target's entry
    function (CUDA's ``run_tape`` launch; none on the CPU, whose host code runs the blocks on
    threads). ``block``: the CPU's compile-time number of directions per block."""
    what = (f"straight-line kernel for a {len(tape.circuit)}-node circuit of order {tape.order}"
            if tape is not None else f"tape interpreter for {'all' if series else 'real'} circuits")
    body = straight_line_body(tape, target) if tape is not None else interpreter_body(target, series)
    params = KERNEL_PARAMS if target.loop_directions else "d, " + KERNEL_PARAMS
    prologue = ("nd = BLOCK\n" if target.loop_directions else "") + "K1 = S.shape[1]\n"
    return "\n".join([
        f'"""Generated by circuitsketch for {target.name}: {what}. Do not edit."""',
        "import math", target.imports, "",
        *[f"{name} = {value}" for name, value in ks.CONSTANTS.items()],
        f"BLOCK = {block}  # directions per block, or None: one direction per thread", "", "",
        helper_functions(target, body if tape is not None else None), "", "",
        target.block_decorator, f"def run_block({params}):",
        textwrap.indent(prologue + body + "\nreturn 0", "    "), "", "",
        target.wrapper.format(params=KERNEL_PARAMS), ""])


def cache_dir() -> str:
    """Where generated kernels are written: $CIRCUITSKETCH_CACHE, else ~/.cache/circuitsketch."""
    root = os.environ.get("CIRCUITSKETCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                 "circuitsketch")
    path = os.path.join(root, "kernels")
    try:
        os.makedirs(path, exist_ok=True)
        return path
    except OSError:
        return tempfile.mkdtemp(prefix="circuitsketch-kernels-")


def kernel_module_name(source: str, prefix: str) -> str:
    """The module (and file) name of a kernel module: ``prefix`` and the hash of its source."""
    return f"{prefix}_{hashlib.sha1(source.encode()).hexdigest()[:16]}"


def kernel_compiled(source: str, prefix: str) -> bool:
    """Whether Numba's on-disk cache already holds the compiled ``run_block`` of this kernel
    module (if not, its first call compiles it: tens of seconds)."""
    name = kernel_module_name(source, prefix)
    return bool(glob.glob(os.path.join(cache_dir(), "__pycache__", f"{name}.run_block-*.nbi")))


def load_kernel_module(source: str, prefix: str) -> ModuleType:
    """Write ``source`` to a file named by its hash (once) and import it; its kernel functions
    (``run_block``, and ``run_tape`` if there is one) keep the text as ``__source__``."""
    name = kernel_module_name(source, prefix)
    if name in sys.modules:
        return sys.modules[name]
    path = os.path.join(cache_dir(), name + ".py")
    if not os.path.exists(path):
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(source)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    for entry in ("run_block", "run_tape"):
        if hasattr(module, entry):
            getattr(module, entry).__source__ = source
    return module
