"""Gradient aggregation methods, one file each, looked up by name.

>>> import taskprio
>>> "pcgrad" in taskprio.methods.available()
True
"""

from taskprio.methods._aligned_mtl import AlignedMTL, AlignedMTLUB
from taskprio.methods._base import METHODS, Method, WeightedMethod, available, create
from taskprio.methods._cagrad import CAGrad
from taskprio.methods._config import ConFIG
from taskprio.methods._cso import CSO, project_on_owners
from taskprio.methods._dualproj import DualProj
from taskprio.methods._graddrop import GradDrop
from taskprio.methods._gradvac import GradVac
from taskprio.methods._gramian import gramian
from taskprio.methods._imtl_g import IMTLG
from taskprio.methods._mean import Mean
from taskprio.methods._mgda import MGDA, MGDAUB
from taskprio.methods._nash_mtl import NashMTL
from taskprio.methods._pcgrad import PCGrad
from taskprio.methods._sum import Sum
from taskprio.methods._upgrad import UPGrad
from taskprio.methods._wpcgrad import WeightedPCGrad

__all__ = [
    "CSO",
    "IMTLG",
    "METHODS",
    "MGDA",
    "MGDAUB",
    "AlignedMTL",
    "AlignedMTLUB",
    "CAGrad",
    "ConFIG",
    "DualProj",
    "GradDrop",
    "GradVac",
    "Mean",
    "Method",
    "NashMTL",
    "PCGrad",
    "Sum",
    "UPGrad",
    "WeightedMethod",
    "WeightedPCGrad",
    "available",
    "create",
    "gramian",
    "project_on_owners",
]
