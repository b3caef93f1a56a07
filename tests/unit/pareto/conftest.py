"""Fixtures shared by the Pareto-front tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Run each module's tests on one torch thread, then restore the count.

    The models here are tiny: on a loaded 2-core machine two intra-op threads made these tests
    several times slower than one (oversubscription); no result depends on the thread count.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
