"""The ``circuitsketch`` command line: one subcommand per job, each with its own ``--help``.

Subcommands are contributed by the modules that implement them (each has ``register_cli``), so
the option parsing of a job lives next to its code. The argument types below (``positive_int``,
``fraction``, ``output_dir``, ...) and :class:`HelpFormatter` are shared by all of them, so a
bad value is refused by the parser, before any work, with the option's name.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import sys
from pathlib import Path

from .backends.checks import BackendUnavailableError
from .cluster.connect import MissingExtraError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" to an option's help unless the help already says its default, or
    there is none to say (None, False, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text.lower() or default is None or default is False
                or default is argparse.SUPPRESS or default == []):
            return text
        return super()._get_help_string(action)


def _bounded_int(least: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} is less than {least}")
        return value
    parse.__name__ = f"integer >= {least}"
    return parse


#: argparse types: an integer >= 1, >= 0, >= 2
positive_int, non_negative_int, int_at_least_2 = _bounded_int(1), _bounded_int(0), _bounded_int(2)


def finite_float(text: str) -> float:
    """argparse type: a finite number (no nan, inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return value


def fraction(text: str) -> float:
    """argparse type: a number in (0, 1]."""
    value = finite_float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not in (0, 1]")
    return value


def output_dir(text: str) -> Path:
    """argparse type: a directory results can be written into (checked before any work):
    an existing writable directory, or a path whose nearest existing parent is one."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a directory")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: {parent} is not a writable directory")
    return path


def plot_dir(text: str) -> Path:
    """argparse type: :func:`output_dir` for results that include PNG plots, so matplotlib must
    import (checked before any work, not after it)."""
    if importlib.util.find_spec("matplotlib") is None:
        raise argparse.ArgumentTypeError("the results include PNG plots, which need matplotlib: "
                                         "pip install 'circuitsketch[plot]'")
    return output_dir(text)

#: modules contributing subcommands, in the order ``--help`` lists them
COMMAND_MODULES = (
    "circuitsketch.demo",
    "circuitsketch.sketch.cli",
    "circuitsketch.backends.emit_cli",
    "circuitsketch.passes.registry",
    "circuitsketch.active.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="circuitsketch",
        description="Sketch a training run in truncated-Taylor arithmetic and predict the "
                    "effect of deleting training examples without retraining.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (ValueError, OSError, KeyError, MissingExtraError, BackendUnavailableError) as exc:
        # user errors: a message, no traceback
        print(f"circuitsketch {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        resume = (" (finished batches are kept: rerun the same command to resume)"
                  if args.command == "precompute" else "")
        print(f"circuitsketch {args.command}: interrupted{resume}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
