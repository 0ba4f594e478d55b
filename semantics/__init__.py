"""Op semantics: what every op means on real values and on truncated-Taylor series.

The layer below ``passes/`` and ``backends/`` (imports run ir -> semantics -> passes -> backends):
``errors`` (the evaluation error types), ``real`` (``REAL_IMPL``, the real meaning of every op),
``series`` (``SERIES_RULES``, the Taylor rule of every op). The reference interpreter is a loop
over these tables; compiled backends are tested against it.
"""

from .errors import DomainError, EvaluationError, KinkError
from .real import FLOAT_ERRORS, REAL_IMPL, apply_real
from .series import SERIES_RULES, apply_series

__all__ = ["DomainError", "EvaluationError", "FLOAT_ERRORS", "KinkError", "REAL_IMPL",
           "SERIES_RULES", "apply_real", "apply_series"]
