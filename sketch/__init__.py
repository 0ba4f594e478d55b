"""The data-deletion scheme (DESIGN §1, §4, §8): sketch a training run once, then predict the
effect of deleting any set of training examples on any measurement, without retraining.

    from circuitsketch.sketch import precompute, predict, load_sketch
    sketch = precompute(task, directions=256, order=3, path="run.sketch")   # resumable
    estimate = predict(load_sketch("run.sketch", task=task), measurement, deleted=[3, 17, 40])
    print(estimate)            # f(0), each order's term +- s.e., f_hat(1_D), an interval

Modules: ``directions`` (psi_j from (seed, j)), ``precompute``, ``store`` (on-disk format),
``predict`` (the estimator), ``exact`` (exact series along known sets), ``order_check``
(three independent checks of high-order coefficients of a whole run), ``scores`` (exact
per-example first-order scores by reverse mode through the run), ``stability``
(Taylor-norm growth), ``evaluate`` (retraining, per-order/per-s errors, LDS), ``progress``,
``cli`` (the ``precompute | predict | exact | stability | evaluate | scores`` subcommands).
"""

from .directions import direction, directions
from .evaluate import (DeletionCurve, DeletionReport, LdsResult, deletion_curve,
                       evaluate_deletions, linear_datamodeling_score, retrained_values, spearman)
from .exact import ExactSeries, exact_series
from .order_check import OrderCheck, order_check
from .precompute import precompute
from .predict import Prediction, measurement_coefficients, predict
from .scores import Scores, influence_scores, scores
from .stability import StabilityProfile, plot_stability, stability_profile
from .store import Sketch, SketchFormatError, SketchMismatchError, load_sketch, save_sketch

__all__ = ["DeletionCurve", "DeletionReport", "ExactSeries", "LdsResult", "OrderCheck", "Prediction",
           "Sketch", "order_check",
           "SketchFormatError", "SketchMismatchError", "StabilityProfile", "deletion_curve",
           "direction", "directions", "evaluate_deletions", "exact_series",
           "linear_datamodeling_score", "load_sketch", "measurement_coefficients",
           "plot_stability", "precompute", "predict", "retrained_values", "save_sketch",
           "Scores", "influence_scores", "scores", "spearman", "stability_profile"]
