"""Backends that execute circuits and programs: one argument picks one.

``backend="reference"`` (numpy; defines the semantics), ``"numba-cpu"`` and ``"numba-cuda"``.
All take the same arguments as :func:`circuitsketch.backends.reference.evaluate` and
:func:`~circuitsketch.backends.reference.run_program` and agree with the reference.
"""

from __future__ import annotations

import importlib
from typing import Any

BACKENDS = {
    "reference": "circuitsketch.backends.reference",
    "numba-cpu": "circuitsketch.backends.numba_cpu",
    "numba-cuda": "circuitsketch.backends.numba_cuda",
}


def get_backend(name: str) -> Any:
    """The backend module called ``name``; it provides ``evaluate`` and ``run_program``."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    return importlib.import_module(BACKENDS[name])


def evaluate(circuit, inputs, *, backend: str = "reference", **options):
    """Run a circuit on named inputs with the chosen backend (see ``reference.evaluate``)."""
    return get_backend(backend).evaluate(circuit, inputs, **options)


def run_program(program, init, *, backend: str = "reference", **options):
    """Run a training program with the chosen backend (see ``reference.run_program``)."""
    return get_backend(backend).run_program(program, init, **options)
