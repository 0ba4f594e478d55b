"""The ``circuitsketch`` command line: one subcommand per job, each with its own ``--help``.

Subcommands are contributed by the modules that implement them (each has ``register_cli``), so
the option parsing of a job lives next to its code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .cluster.connect import MissingExtraError

#: modules contributing subcommands, in the order ``--help`` lists them
COMMAND_MODULES = (
    "circuitsketch.demo",
    "circuitsketch.sketch.cli",
    "circuitsketch.backends.emit",
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
    except (ValueError, FileNotFoundError, KeyError, MissingExtraError) as exc:
        # user errors: a message, no traceback
        print(f"circuitsketch {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
