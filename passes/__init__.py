"""Circuit -> Circuit transformations: grad, taylor, and the clean-up passes."""

from .grad import backprop, grad
from .registry import PASSES, Pass, PassError, run_pipeline
from .simplify import cse, dce, fold_constants, simplify
from .taylor import KinkError, SERIES_RULES, taylor

__all__ = ["KinkError", "PASSES", "Pass", "PassError", "SERIES_RULES", "backprop", "cse", "dce",
           "fold_constants", "grad", "run_pipeline", "simplify", "taylor"]
