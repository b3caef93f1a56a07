"""Property checks and float64 references shared by the method tests."""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Sequence

import torch
from _inputs import edge_cases, non_conflicting, normal
from torch import Tensor, nn
from torch.testing import assert_close
from torchjd.linalg import DualConeProjector

import taskprio
from taskprio.methods import Method
from taskprio.methods._upgrad import project_weights

MethodFactory = Callable[[], Method]


def assert_structure(method: Method, matrix: Tensor, label: str = "") -> Tensor:
    """An [n] finite vector of the input's dtype and device; returns it."""
    result = method(matrix)
    where = f"{method}{label}"
    assert result.shape == (matrix.shape[1],), f"{where}: shape {tuple(result.shape)}"
    assert result.dtype == matrix.dtype, f"{where}: dtype {result.dtype}"
    assert result.device == matrix.device, f"{where}: device {result.device}"
    assert bool(result.isfinite().all()), f"{where}: not finite: {result}"
    return result


def assert_finite_on_edge_cases(make: MethodFactory) -> None:
    """Finite, well-shaped output on zero, parallel, anti-parallel, scaled and one-row inputs,
    in float64 and float32, and on a plain matrix in float16 and bfloat16."""
    for name, matrix in edge_cases().items():
        for dtype in (torch.float64, torch.float32):
            assert_structure(make(), matrix.to(dtype), label=f" on {name!r} in {dtype}")
    # Half precision (no torch.linalg kernels there), on a matrix within its range.
    for dtype in (torch.float16, torch.bfloat16):
        assert_structure(make(), normal(4, 6, 7).to(dtype), label=f" in {dtype}")


def assert_zero_on_zero(make: MethodFactory) -> None:
    """The zero matrix gives the zero vector."""
    assert_close(
        make()(torch.zeros(3, 5, dtype=torch.float64)), torch.zeros(5, dtype=torch.float64)
    )


def assert_single_task(make: MethodFactory, factor: float = 1.0) -> None:
    """One task: the row itself, times the method's convention ``factor``."""
    row = normal(1, 7, 21)
    assert_close(make()(row), factor * row[0], rtol=1e-12, atol=1e-14)


def assert_permutation_invariant(make: MethodFactory, *, rtol: float = 1e-12) -> None:
    """Reordering the tasks leaves the result unchanged (deterministic methods)."""
    for num_tasks, seed in ((2, 31), (3, 32), (5, 33), (8, 34)):
        matrix = normal(num_tasks, 11, seed)
        permutation = torch.randperm(num_tasks, generator=torch.Generator().manual_seed(seed))
        expected = make()(matrix)
        assert_close(
            make()(matrix[permutation]), expected, rtol=rtol, atol=rtol * expected.abs().max()
        )


def assert_sum_without_conflict(make: MethodFactory, factor: float = 1.0) -> None:
    """Rows with no negative inner product give ``factor`` times their sum."""
    for num_tasks, seed in ((2, 41), (4, 42), (7, 43)):
        matrix = non_conflicting(num_tasks, 9, seed)
        assert_close(make()(matrix), factor * matrix.sum(dim=0), rtol=1e-12, atol=1e-12)


def assert_scale_equivariant(make: MethodFactory, scales: Sequence[float] = (1e-15, 1e15)) -> None:
    """method(s·J) = s·method(J): the result does not depend on the units of the gradients."""
    matrix = normal(4, 9, 51)
    expected = make()(matrix)
    for scale in scales:
        assert_close(make()(matrix * scale) / scale, expected, rtol=1e-9, atol=1e-9)


def assert_state_round_trip(make: MethodFactory, matrices: Sequence[Tensor]) -> None:
    """After a few calls, ``state_dict()`` (saved and loaded with ``weights_only=True``) lets a
    fresh method give the same next results as the original."""
    original = make()
    for matrix in matrices[:-1]:
        original(matrix)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    restored = make()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    last = matrices[-1]
    expected = [original(last) for _ in range(3)]
    # The check means something: without the state, a fresh method answers differently.
    assert not torch.equal(make()(last), expected[0])
    for value in expected:
        assert torch.equal(restored(last), value)


def assert_runs_in_step(make: MethodFactory) -> None:
    """Two :class:`taskprio.MultiTaskStep` steps on a small float64 model (a shared trunk, three
    heads) leave finite gradients everywhere and record the method (and its weights)."""
    torch.manual_seed(0)
    tasks = ("a", "b", "c")
    model = nn.ModuleDict({"trunk": nn.Linear(4, 5), **{t: nn.Linear(5, 1) for t in tasks}})
    model = model.double()
    method = make()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    step = taskprio.MultiTaskStep(model, optimizer, tasks, method=method)
    x = normal(6, 4, 61)
    targets = normal(3, 6, 62)
    for _ in range(2):
        features = torch.tanh(model["trunk"](x))
        losses = {
            t: ((model[t](features)[:, 0] - targets[k]) ** 2).mean() for k, t in enumerate(tasks)
        }
        # The upper-bound variants take the shared representation as well.
        record = step(losses, features=features) if method.uses_representation else step(losses)
        assert record.method == method.name
        for name, param in model.named_parameters():
            assert param.grad is not None and bool(param.grad.isfinite().all()), name
    if isinstance(method, taskprio.methods.WeightedMethod):
        assert len(record.diagnostics["task_weights"]) == len(tasks)


# -- Dual-cone projections (UPGrad, DualProj) --------------------------------------------


class OurProjector(DualConeProjector):
    """Lets torchjd's UPGrad/DualProj run with our solver in place of quadprog."""

    def __call__(self, U: Tensor, G: Tensor) -> Tensor:
        return project_weights(U, G)


def normalized(gramian: Tensor, reg_eps: float = 1e-4) -> Tensor:
    return gramian / gramian.trace() + reg_eps * torch.eye(gramian.shape[0], dtype=gramian.dtype)


def reference_projection(lower: Tensor, gramian: Tensor) -> Tensor:
    """min vᵀGv s.t. v ≥ u by enumerating the active sets: the one whose solution meets KKT."""
    num_tasks = lower.shape[0]
    for size in range(num_tasks + 1):
        for active in itertools.combinations(range(num_tasks), size):
            free = [i for i in range(num_tasks) if i not in active]
            v = lower.clone()
            if free:
                fixed = list(active)
                rhs = (
                    -(gramian[free][:, fixed] @ lower[fixed])
                    if fixed
                    else torch.zeros(len(free), dtype=torch.float64)
                )
                v[free] = torch.linalg.solve(gramian[free][:, free], rhs)
            multipliers = gramian @ v
            if bool((v >= lower - 1e-12).all()) and bool((multipliers >= -1e-12).all()):
                return v
    raise AssertionError("no active set satisfies KKT")


def assert_kkt(weights: Tensor, lower: Tensor, gramian: Tensor) -> None:
    """v ≥ u, Gv ≥ 0 and (Gv)ᵢ(vᵢ − uᵢ) = 0: v solves the projection problem."""
    multipliers = gramian @ weights
    assert float((weights - lower).min()) >= -1e-15
    assert float(multipliers.min()) >= -1e-12
    assert float((multipliers * (weights - lower)).abs().max()) <= 1e-12
