"""Backends that execute circuits and programs: one argument picks one.

``backend="reference"`` (numpy; defines the semantics), ``"numba-cpu"`` and ``"numba-cuda"``.
All take the same arguments as :func:`circuitsketch.backends.reference.evaluate` and
:func:`~circuitsketch.backends.reference.run_program` and agree with the reference.

``backend=None`` means :func:`default_backend`, the fastest backend installed (``numba-cpu``
when Numba imports, else ``reference``): the deletion scheme (``circuitsketch.sketch``) and the
command line default to it. :func:`evaluate` and :func:`run_program` here keep ``reference`` as
their default, the interpreter that defines the semantics.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

BACKENDS = {
    "reference": "circuitsketch.backends.reference",
    "numba-cpu": "circuitsketch.backends.numba_cpu",
    "numba-cuda": "circuitsketch.backends.numba_cuda",
}


@functools.lru_cache(maxsize=None)
def default_backend() -> str:
    """The fastest backend installed: ``"numba-cpu"`` when Numba imports, else ``"reference"``."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return "reference"
    return "numba-cpu"


def resolve_backend(name: str | None) -> str:
    """``name`` checked against :data:`BACKENDS`; None gives :func:`default_backend`."""
    if name is None:
        return default_backend()
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    return name


def get_backend(name: str | None) -> Any:
    """The backend module called ``name`` (None: :func:`default_backend`); it provides
    ``evaluate`` and ``run_program``."""
    return importlib.import_module(BACKENDS[resolve_backend(name)])


def kernels_cached(name: str | None, *, series: bool | None = None,
                   width: int | None = None) -> bool:
    """Whether the kernels a run on backend ``name`` needs are already compiled on this machine
    (a backend without compiled kernels: always True); see ``numba_cpu.kernels_cached``.

    ``series``: a Taylor (True) or real (False) run, None both; ``width``: its batch (None: a
    wide one)."""
    check = getattr(get_backend(name), "kernels_cached", None)
    return True if check is None else check(series=series, width=width)


def evaluate(circuit, inputs, *, backend: str | None = "reference", **options):
    """Run a circuit on named inputs with the chosen backend (see ``reference.evaluate``)."""
    return get_backend(backend).evaluate(circuit, inputs, **options)


def run_program(program, init, *, backend: str | None = "reference", **options):
    """Run a training program with the chosen backend (see ``reference.run_program``)."""
    return get_backend(backend).run_program(program, init, **options)
