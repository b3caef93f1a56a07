"""Gradient aggregation methods, one file each, looked up by name.

>>> import taskprio
>>> taskprio.methods.available()
['sum']
"""

from taskprio.methods._base import METHODS, Method, available, create
from taskprio.methods._sum import Sum

__all__ = ["METHODS", "Method", "Sum", "available", "create"]
