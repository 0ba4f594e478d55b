"""The error types of evaluation, shared by the semantics tables, the passes and every backend."""

from __future__ import annotations


class EvaluationError(ValueError):
    """A value left the domain of its op (log of 0, division by 0, ...); names the node."""


class DomainError(ValueError):
    """Raised by an op implementation; the interpreter adds which node it was."""


class KinkError(DomainError, EvaluationError):
    """A non-analytic gate evaluated exactly at its kink: the series is not defined there.

    The interpreter re-raises it as a ``KinkError`` (an :class:`EvaluationError`) naming the node.
    """


__all__ = ["DomainError", "EvaluationError", "KinkError"]
