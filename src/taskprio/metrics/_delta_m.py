"""Δm, the average relative change of a multi-task model against single-task baselines."""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Iterable, Mapping
from typing import NamedTuple


def delta_m(
    method: Mapping[str, float],
    baseline: Mapping[str, float],
    lower_is_better: Mapping[str, bool] | Collection[str],
) -> float:
    """Δm in percent: the mean relative change of each counted metric, signed so that + is better.

    Δm = (1/T) Σ_t (−1)^{l_t} (M_t − B_t) / B_t × 100 over the T counted metrics, with
    l_t = 1 when lower is better (Maninis et al., CVPR 2019; the CSO paper's tables). B is the
    single-task baseline with the same backbone.

    Which metrics count:

    - ``lower_is_better`` a mapping: exactly its keys, each with its direction (True: lower
      is better). Other entries of ``method`` and ``baseline`` are ignored.
    - ``lower_is_better`` a collection of names: every metric of ``baseline``; the named
      ones are lower-is-better, the others higher-is-better.

    Args:
        method: metric name → the multi-task model's value.
        baseline: metric name → the baseline's value, positive.
        lower_is_better: see above.

    Returns:
        Δm in percent; positive when the method beats the baseline on average.

    >>> baseline = {"depth/rmse": 0.667, "semseg/mIoU": 33.18, "normals/mean": 20.75}
    >>> method = {"depth/rmse": 0.565, "semseg/mIoU": 41.10, "normals/mean": 19.54}
    >>> round(delta_m(method, baseline, {"depth/rmse", "normals/mean"}), 2)  # Table 1, CSO
    15.0
    """
    if isinstance(lower_is_better, str):
        raise TypeError(
            f"`lower_is_better` must be a mapping or a collection of metric names, not the "
            f"string {lower_is_better!r}; write {{{lower_is_better!r}}} for one name."
        )
    if isinstance(lower_is_better, Mapping):
        directions = {name: bool(is_lower) for name, is_lower in lower_is_better.items()}
    else:
        unknown = sorted(set(lower_is_better) - set(baseline))
        if unknown:
            raise ValueError(
                f"`lower_is_better` names {unknown}, which `baseline` lacks (it has "
                f"{sorted(baseline)}). Fix the names, or give the baseline those metrics."
            )
        names = set(lower_is_better)
        directions = {name: name in names for name in baseline}
    if not directions:
        raise ValueError(
            "No metric to count: `lower_is_better` (a mapping) or `baseline` is empty."
        )
    total = 0.0
    for name, is_lower in directions.items():
        for role, values in (("method", method), ("baseline", baseline)):
            if name not in values:
                raise ValueError(
                    f"`{role}` has no metric {name!r} (it has {sorted(values)}). Give it a "
                    f"value, or leave {name!r} out of `lower_is_better`."
                )
            if not math.isfinite(values[name]):
                raise ValueError(f"`{role}`[{name!r}] must be finite; got {values[name]}.")
        reference = baseline[name]
        if reference <= 0:
            raise ValueError(
                f"`baseline`[{name!r}] is {reference}; Δm divides by the baseline and needs it "
                f"positive. Leave {name!r} out of the counted metrics, or check the baseline run."
            )
        relative_change = (method[name] - reference) / reference
        total += -relative_change if is_lower else relative_change
    return total / len(directions) * 100.0


class MeanStd(NamedTuple):
    """A mean over runs with its standard deviation and the number of runs."""

    mean: float
    std: float
    num_runs: int

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f}"


def mean_std(values: Iterable[float], *, ddof: int = 1) -> MeanStd:
    """The mean and standard deviation of one number over seeds (or any runs).

    Args:
        values: one value per run.
        ddof: the delta degrees of freedom: 1 (default) for the sample standard deviation,
            with n − 1 in the denominator; 0 for the population one (``numpy.std``'s default).

    Returns:
        (mean, std, num_runs); std is NaN when there are no more runs than ``ddof``.

    >>> result = mean_std([15.1, 14.8, 15.1])
    >>> print(result)
    15.00 ± 0.17
    >>> result.num_runs
    3
    """
    runs = [float(value) for value in values]
    if not runs:
        raise ValueError("`values` is empty; give one value per run.")
    if ddof < 0:
        raise ValueError(f"`ddof` must be ≥ 0; got {ddof}.")
    mean = statistics.fmean(runs)
    if len(runs) <= ddof:
        return MeanStd(mean, math.nan, len(runs))
    variance = sum((run - mean) ** 2 for run in runs) / (len(runs) - ddof)
    return MeanStd(mean, math.sqrt(variance), len(runs))
