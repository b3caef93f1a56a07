"""Loss weightings, one file each, looked up by name; any composes with any method.

>>> import taskprio
>>> taskprio.weighting.available()
['equal', 'manual']
"""

from taskprio.weighting._base import WEIGHTINGS, Weighting, available, create
from taskprio.weighting._equal import Equal
from taskprio.weighting._manual import Manual

__all__ = ["WEIGHTINGS", "Equal", "Manual", "Weighting", "available", "create"]
