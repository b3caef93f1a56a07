"""Loss weightings, one file each, looked up by name; any composes with any method.

>>> import taskprio
>>> {"equal", "uncertainty", "famo"} <= set(taskprio.weighting.available())
True
"""

from taskprio.weighting._base import WEIGHTINGS, Weighting, available, create
from taskprio.weighting._dwa import DWA, dwa_weights
from taskprio.weighting._equal import Equal
from taskprio.weighting._famo import FAMO, famo_weights
from taskprio.weighting._gls import GLS, gls_weights
from taskprio.weighting._gradnorm import GradNorm, gradnorm_objective
from taskprio.weighting._imtl_l import IMTLL
from taskprio.weighting._manual import Manual
from taskprio.weighting._rlw import RLW
from taskprio.weighting._uncertainty import Uncertainty

__all__ = [
    "DWA",
    "FAMO",
    "GLS",
    "IMTLL",
    "RLW",
    "WEIGHTINGS",
    "Equal",
    "GradNorm",
    "Manual",
    "Uncertainty",
    "Weighting",
    "available",
    "create",
    "dwa_weights",
    "famo_weights",
    "gls_weights",
    "gradnorm_objective",
]
