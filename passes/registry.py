"""Named passes: the registry behind ``run_pipeline`` and ``circuitsketch opt``.

A pass is a frozen :class:`Pass`: a ``name``, a one-paragraph ``doc``, the ``options`` it takes
(name -> description) and ``apply(target, **options)``, which transforms a circuit or a program
without mutating it and returns a result that verifies (``apply`` checks this itself, so a
broken pass fails where it runs, not later in a backend). :data:`PASSES` holds every registered
pass; ``run_pipeline(target, "fold,cse,taylor", order=3, seeds="x")`` applies them in order,
handing each pass the options it takes, and refuses an option no pass of the pipeline takes.

The command line form prints the result as IR text, so each pass can be tested on text
(``tests/filecheck/``)::

    circuitsketch opt step.ir -p fold,cse,taylor --order 3 --seed x
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..ir.circuit import Circuit, Program
from ..ir.text import ParseError, parse_circuit, parse_program, print_circuit, print_program
from ..ir.verify import verify, verify_program
from .grad import grad
from .simplify import FOLD_LIMIT, cse, dce, fold_constants, simplify
from .taylor import taylor

Target = Circuit | Program


class PassError(ValueError):
    """An unknown pass name, an option no pass takes, or a pass refusing its target."""


@dataclass(frozen=True)
class Pass:
    """A named transformation of circuits and programs (see the module docstring)."""

    name: str
    doc: str
    run: Callable[..., Target] = field(repr=False)
    #: (option name, description) pairs: what ``apply`` accepts besides the target
    options: tuple[tuple[str, str], ...] = ()
    programs: bool = True  # whether the pass also takes a Program

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.options)

    def apply(self, target: Target, **options: Any) -> Target:
        """``target`` transformed by this pass with ``options``; input and result verify."""
        return self._apply(_verified(target, "input"), options)

    def _apply(self, target: Target, options: Mapping[str, Any]) -> Target:
        unknown = sorted(set(options) - set(self.option_names))
        if unknown:
            raise PassError(f"pass {self.name!r} takes no option(s) {unknown}; it takes "
                            f"{list(self.option_names) or 'none'}")
        if isinstance(target, Program) and not self.programs:
            raise PassError(f"pass {self.name!r} takes a circuit, not a program")
        return _verified(self.run(target, **options), f"result of pass {self.name!r}")


def _verified(target: Target, what: str) -> Target:
    """``target`` after verify/verify_program (a pass never runs on, or returns, broken IR)."""
    if isinstance(target, Program):
        return verify_program(target)
    if isinstance(target, Circuit):
        return verify(target)
    raise PassError(f"the {what} must be a Circuit or a Program, not {type(target).__name__}")


def _on_step(fn: Callable[[Circuit], Circuit]) -> Callable[[Target], Target]:
    """A circuit pass applied to a program's step circuit (inputs and outputs are kept)."""
    def run(target: Target) -> Target:
        if isinstance(target, Program):
            return Program(fn(target.step), target.n_steps, target.carry, target.per_step,
                           target.weight)
        return fn(target)
    return run


def _names(value: Any, option: str) -> list[str] | None:
    """Input/seed names given as one string (comma-separated) or as a list of strings."""
    if value is None:
        return None
    names = value.split(",") if isinstance(value, str) else list(value)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise PassError(f"option {option!r} must name inputs, got {value!r}")
    return names


def _grad(target: Circuit, output: str | None = None, wrt: Any = None) -> Circuit:
    if output is None:
        raise PassError("pass 'grad' needs option 'output' (a scalar output's name)")
    try:
        return grad(target, output, _names(wrt, "wrt"))
    except KeyError as exc:  # an unknown output name: the circuit's message lists the outputs
        raise PassError(exc.args[0]) from None


def _taylor(target: Target, order: Any = None, seeds: Any = None) -> Target:
    if order is None:
        raise PassError("pass 'taylor' needs option 'order' (the truncation order k >= 0)")
    return taylor(target, order, _names(seeds, "seeds"))


def _register(*passes: Pass) -> dict[str, Pass]:
    table: dict[str, Pass] = {}
    for p in passes:
        if p.name in table:
            raise ValueError(f"pass {p.name!r} registered twice")
        table[p.name] = p
    return table


#: every registered pass, by name
PASSES: dict[str, Pass] = _register(
    Pass("fold", f"Constant folding: evaluate all-constant nodes (results up to {FOLD_LIMIT} "
                 "elements) and apply x*1 = x, x+0 = x, x*0 = 0, ...", _on_step(fold_constants)),
    Pass("cse", "Common-subexpression elimination: share identical nodes (commutative "
                "operands sorted).", _on_step(cse)),
    Pass("dce", "Dead-code elimination: drop nodes no output depends on (inputs are kept).",
         _on_step(dce)),
    Pass("simplify", "fold, cse and dce repeated until the node count stops shrinking.", simplify),
    Pass("grad", "Reverse-mode derivative: adds outputs d<output>/d<name> for each input in wrt.",
         _grad, (("output", "the scalar output to differentiate"),
                 ("wrt", "inputs to differentiate with respect to (default: all)")), programs=False),
    Pass("taylor", "Lower to order-k truncated-Taylor arithmetic along the seed inputs.", _taylor,
         (("order", "the truncation order k"),
          ("seeds", "the inputs that move along z (a program defaults to its weight input)"))),
)


def get_pass(name: str) -> Pass:
    """The registered pass ``name``; an unknown name is a PassError listing the known ones."""
    try:
        return PASSES[name]
    except KeyError:
        raise PassError(f"unknown pass {name!r}; registered passes: {', '.join(PASSES)}") from None


def parse_pipeline(pipeline: str | list[str]) -> list[Pass]:
    """``"fold,cse,taylor"`` (or a list of names) as the passes it names, in order."""
    names = pipeline.split(",") if isinstance(pipeline, str) else list(pipeline)
    names = [n.strip() if isinstance(n, str) else n for n in names]
    if not names or any(not isinstance(n, str) or not n for n in names):
        raise PassError(f"a pipeline is a comma-separated list of pass names, got {pipeline!r}")
    return [get_pass(n) for n in names]


def run_pipeline(target: Target, pipeline: str | list[str], **options: Any) -> Target:
    """Apply the passes of ``pipeline`` in order; each takes the ``options`` it knows."""
    passes = parse_pipeline(pipeline)
    taken = {o for p in passes for o in p.option_names}
    unused = sorted(set(options) - taken)
    if unused:
        raise PassError(f"option(s) {unused} are taken by no pass in {pipeline!r}"
                        + (f" (these take {sorted(taken)})" if taken else ""))
    target = _verified(target, "input")  # once: each pass's result is verified as it is made
    for p in passes:
        target = p._apply(target, {k: v for k, v in options.items() if k in p.option_names})
    return target


# ---------------------------------------------------------------- circuitsketch opt

def read_ir(text: str) -> Target:
    """Parse IR text holding a circuit (``circuit order=K``) or a program (``program ...``)."""
    if not isinstance(text, str):
        raise ParseError(f"IR text must be a str, got {type(text).__name__}")
    first = next((line.strip() for line in text.splitlines()
                  if line.strip() and not line.lstrip().startswith("#")), "")
    return parse_program(text) if first.startswith("program") else parse_circuit(text)


#: the command-line flag of each pass option
_FLAGS = {"order": "--order", "seeds": "--seed", "output": "--output", "wrt": "--wrt"}


def _pass_list() -> str:
    lines = ["passes:"]
    for p in PASSES.values():
        lines += textwrap.wrap(p.doc, 76, initial_indent=f"  {p.name:<9} ", subsequent_indent=" " * 12)
        for option, desc in p.options:
            lines += textwrap.wrap(desc, 76, initial_indent=f"{'':12}{_FLAGS[option]}: ",
                                   subsequent_indent=" " * 14)
    return "\n".join(lines)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``circuitsketch opt`` to the top-level command line."""
    parser = subparsers.add_parser(
        "opt", help="run named passes on IR text and print the result",
        description="Read a circuit or program in IR text (as print_circuit and print_program\n"
                    "write it), run the passes of a pipeline in order, verify the result and\n"
                    "print it as IR text. Errors (unreadable file, malformed IR, unknown pass,\n"
                    "bad option) print one line and exit with status 2.",
        epilog=_pass_list() + "\n\nexample:\n  circuitsketch opt step.ir -p fold,cse,taylor "
                              "--order 3 --seed x\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", metavar="FILE", help="IR text file ('-' reads standard input)")
    parser.add_argument("-p", "--passes", required=True, metavar="P1,P2,...",
                        help="comma-separated pass names, applied in order")
    parser.add_argument("--order", metavar="K", help="taylor: the truncation order")
    parser.add_argument("--seed", action="append", metavar="NAME",
                        help="taylor: an input that moves along z (repeatable or comma-separated)")
    parser.add_argument("--output", metavar="NAME", help="grad: the scalar output to differentiate")
    parser.add_argument("--wrt", action="append", metavar="NAME",
                        help="grad: an input to differentiate with respect to (repeatable; "
                             "default: every input)")
    parser.add_argument("-o", "--out", metavar="PATH", help="write the result here instead of "
                                                             "standard output")
    parser.set_defaults(run=_run_opt)


def _cli_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if args.order is not None:
        try:
            options["order"] = int(args.order)
        except ValueError:
            raise PassError(f"--order must be an integer, got {args.order!r}") from None
    if args.seed:
        options["seeds"] = [n for value in args.seed for n in value.split(",")]
    if args.output is not None:
        options["output"] = args.output
    if args.wrt:
        options["wrt"] = [n for value in args.wrt for n in value.split(",")]
    return options


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise PassError(f"cannot read {path!r}: {getattr(exc, 'strerror', None) or exc}") from None


def _check_out(path: str | None) -> None:
    """Refuse an unwritable ``--out`` before any work is done."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise PassError(f"cannot write --out {path!r}: not a writable file path")


def _run_opt(args: argparse.Namespace) -> int:
    try:
        _check_out(args.out)
        passes = parse_pipeline(args.passes)  # a bad pass name fails before the file is read
        options = _cli_options(args)
        taken = {o for p in passes for o in p.option_names}
        unused = [_FLAGS[o] for o in options if o not in taken]
        if unused:
            raise PassError(f"{', '.join(unused)}: not an option of any pass in {args.passes!r}")
        result = run_pipeline(read_ir(_read(args.file)), args.passes, **options)
        text = print_program(result) if isinstance(result, Program) else print_circuit(result)
        if args.out:
            with open(args.out, "w", encoding="utf-8") as handle:
                handle.write(text)
        else:
            sys.stdout.write(text)
    except (ValueError, OSError) as exc:  # ParseError, VerifyError, PassError, a pass refusing
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"circuitsketch opt: error: {message}", file=sys.stderr)
        return 2
    return 0


__all__ = ["PASSES", "Pass", "PassError", "get_pass", "parse_pipeline", "read_ir",
           "register_cli", "run_pipeline"]
