"""The circuit IR: op set, circuits and programs, builder, verifier, text form, graph views."""

from .circuit import Builder, Circuit, Eqn, Output, Program, make_attrs
from .graph import to_dot, to_networkx
from .ops import OP_INFO, Op
from .text import ParseError, parse_circuit, parse_program, print_circuit, print_program
from .verify import VerifyError, verify, verify_program

__all__ = ["Builder", "Circuit", "Eqn", "OP_INFO", "Op", "Output", "ParseError", "Program",
           "VerifyError", "make_attrs", "parse_circuit", "parse_program", "print_circuit",
           "print_program", "to_dot", "to_networkx", "verify", "verify_program"]
