"""Gradient aggregation methods, one file each, looked up by name.

>>> import taskprio
>>> taskprio.methods.available()
['cso', 'sum']
"""

from taskprio.methods._base import METHODS, Method, WeightedMethod, available, create
from taskprio.methods._cso import CSO, project_on_owners
from taskprio.methods._sum import Sum

__all__ = [
    "CSO",
    "METHODS",
    "Method",
    "Sum",
    "WeightedMethod",
    "available",
    "create",
    "project_on_owners",
]
