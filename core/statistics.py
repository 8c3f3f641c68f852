"""The statistics of published tables: confidence intervals over tasks, the paired t-test
(scipy), and ranks."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

Z95 = 1.96  # the 95% two-sided quantile of the normal distribution
ALPHA = 0.05  # a p-value at or above it marks an algorithm as tied with the best


def ci95(values: Iterable[float]) -> float:
    """Half-width of the 95% confidence interval of the mean, Z95·s.d./√n (normal
    approximation, sample s.d. with n − 1); 0 for fewer than two values."""
    values = np.asarray(list(values), dtype=float)
    if values.size < 2:
        return 0.0
    return float(Z95 * values.std(ddof=1) / math.sqrt(values.size))


def paired_t_test(a: Iterable[float], b: Iterable[float]) -> float:
    """Two-sided p-value of a paired t-test of mean(a − b) = 0 (``scipy.stats.ttest_rel``,
    n − 1 degrees of freedom).

    NaN for fewer than two pairs or non-finite values; 1 for identical and 0 for constant
    nonzero differences (where the t statistic is undefined).
    """
    a, b = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)
    diff = a - b
    if diff.size < 2 or not np.isfinite(diff).all():
        return math.nan
    if np.all(diff == diff[0]):
        return 1.0 if diff[0] == 0.0 else 0.0
    with warnings.catch_warnings():  # scipy warns of precision loss for nearly constant differences
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_rel(a, b).pvalue)


def ranks(means: Sequence[float], higher_is_better: bool) -> list[float]:
    """Rank 1 for the best mean; ties share the average of their ranks."""
    sign = -1.0 if higher_is_better else 1.0
    return [float(r) for r in pd.Series([sign * m for m in means]).rank(method="average")]
