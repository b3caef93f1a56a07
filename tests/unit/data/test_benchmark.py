"""Benchmarks: registry, task specs and masked losses, partial supervision, evaluate, models."""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional

import taskprio
from taskprio.data import (
    BENCHMARKS,
    Benchmark,
    MultiMNIST,
    TaskSpec,
    TensorMultiTaskDataset,
    available_benchmarks,
    binary_task,
    classification_task,
    data_root,
    evaluate,
    get_benchmark,
    hide_labels,
    iterate_batches,
    iterate_masked_batches,
    masked_binary_cross_entropy,
    masked_cross_entropy,
    masked_mse,
    regression_task,
)
from taskprio.models import MultiTaskMLP
from taskprio.nn import active_task, task_norms

REPO_ROOT = Path(__file__).resolve().parents[3]
NAMES = ["fashion_mnist", "multifashion", "multimnist", "qm9", "yeast"]
GENERATOR = torch.Generator().manual_seed(0)


def _data_dir() -> Path:
    return data_root() if os.environ.get("TASKPRIO_DATA") else REPO_ROOT / "data"


# --- registry -----------------------------------------------------------------------------


def test_registry_lists_every_benchmark():
    # The dense benchmarks read from disk are tested in test_dense_benchmarks.py.
    assert set(NAMES) <= set(available_benchmarks())
    assert BENCHMARKS.names() == available_benchmarks()
    for name in NAMES:
        benchmark = get_benchmark(name)
        assert isinstance(benchmark, Benchmark)
        assert benchmark.name == name
        assert benchmark.description
        assert len({spec.name for spec in benchmark.tasks}) == len(benchmark.tasks)
        for spec in benchmark.tasks:
            assert spec.metrics
            assert not spec.is_auxiliary


def test_task_lists():
    assert get_benchmark("multimnist").task_names == ("left", "right")
    assert get_benchmark("fashion_mnist").task_names == ("left", "right")
    qm9 = get_benchmark("qm9")
    assert qm9.task_names == (
        "mu", "alpha", "homo", "lumo", "r2", "zpve", "U0", "U", "H", "G", "Cv",
    )  # fmt: skip
    assert {spec.kind for spec in qm9.tasks} == {"regression"}
    assert {spec.metrics for spec in qm9.tasks} == {(("mae", False),)}
    yeast = get_benchmark("yeast")
    assert yeast.task_names == tuple(f"class{k}" for k in range(1, 15))
    assert {spec.kind for spec in yeast.tasks} == {"binary"}
    assert get_benchmark("multifashion").task("left").metrics == (("acc", True),)


def test_options_override_defaults_and_are_checked():
    benchmark = get_benchmark("qm9", epochs=2, batch_size=32, lr=0.1, hidden_sizes=(8,))
    assert (benchmark.epochs, benchmark.batch_size, benchmark.lr) == (2, 32, 0.1)
    assert benchmark.make_model().hidden_sizes == (8,)
    with pytest.raises(ValueError, match="`epochs` must be positive"):
        get_benchmark("yeast", epochs=0)
    with pytest.raises(KeyError, match="Did you mean 'qm9'"):
        get_benchmark("qm8")
    with pytest.raises(TypeError):
        get_benchmark("yeast", unknown_option=1)


def test_select_and_unknown_task():
    benchmark = get_benchmark("qm9")
    assert [spec.name for spec in benchmark.select(["U0", "mu"])] == ["U0", "mu"]
    with pytest.raises(ValueError, match="`name` must be one of"):
        benchmark.task("u0")
    with pytest.raises(ValueError, match="string"):
        benchmark.select("mu")


def test_task_spec_validation():
    with pytest.raises(ValueError, match="at least 2"):
        classification_task("a", 1)
    with pytest.raises(ValueError, match="must be 1"):
        TaskSpec("a", "binary", 2, masked_binary_cross_entropy, (("acc", True),))
    with pytest.raises(ValueError, match="`kind`"):
        TaskSpec("a", "ranking", 1, masked_mse, (("mae", False),))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"without '\.'"):
        regression_task("a.b")


# --- masked losses ------------------------------------------------------------------------


def _reference_mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_masked_cross_entropy_is_the_mean_over_labelled_samples():
    logits = torch.randn(6, 4, generator=GENERATOR, dtype=torch.float64)
    target = torch.tensor([0, 3, 1, 2, 2, 1])
    mask = torch.tensor([True, False, True, True, False, True])
    expected = _reference_mean(
        [
            -math.log(math.exp(logits[i, target[i]]) / sum(math.exp(v) for v in logits[i]))
            for i in range(6)
            if mask[i]
        ]
    )
    loss = masked_cross_entropy(logits, target, mask)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64))
    # Masked samples may hold any placeholder and any prediction.
    garbage_target = target.masked_fill(~mask, -100)
    garbage_logits = logits.masked_fill(~mask.unsqueeze(1), 1e30)
    torch.testing.assert_close(masked_cross_entropy(garbage_logits, garbage_target, mask), loss)
    # No mask: the plain mean.
    torch.testing.assert_close(
        masked_cross_entropy(logits, target), functional.cross_entropy(logits, target)
    )


def test_masked_binary_cross_entropy_and_mse_match_references():
    prediction = torch.randn(5, 1, generator=GENERATOR, dtype=torch.float64)
    target = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    mask = torch.tensor([True, True, False, True, False])
    kept = mask.nonzero().squeeze(1)
    torch.testing.assert_close(
        masked_binary_cross_entropy(prediction, target, mask),
        functional.binary_cross_entropy_with_logits(prediction[kept, 0], target[kept]),
    )
    noisy_target = target.masked_fill(~mask, float("nan"))
    torch.testing.assert_close(
        masked_mse(prediction, noisy_target, mask),
        ((prediction[kept, 0] - target[kept]) ** 2).mean(),
    )


@pytest.mark.parametrize(
    ("loss", "prediction", "target"),
    [
        (masked_cross_entropy, torch.randn(4, 3), torch.tensor([-1, 5, 0, 2])),
        (masked_binary_cross_entropy, torch.randn(4, 1), torch.tensor([0.0, 1.0, 1.0, 0.0])),
        (masked_mse, torch.randn(4), torch.full((4,), float("nan"))),
    ],
)
def test_a_batch_without_labels_gives_a_finite_zero_loss_and_zero_gradient(
    loss, prediction, target
):
    prediction = prediction.clone().requires_grad_()
    value = loss(prediction, target, torch.zeros(4, dtype=torch.bool))
    assert value.item() == 0.0
    value.backward()
    assert prediction.grad is not None
    assert torch.equal(prediction.grad, torch.zeros_like(prediction))


def test_masked_samples_get_no_gradient():
    prediction = torch.randn(4, 3, generator=GENERATOR).requires_grad_()
    mask = torch.tensor([True, False, True, False])
    masked_cross_entropy(prediction, torch.tensor([0, 1, 2, 0]), mask).backward()
    assert prediction.grad is not None
    assert (prediction.grad[~mask] == 0).all()
    assert (prediction.grad[mask] != 0).any()


def test_benchmark_losses_skip_tasks_without_labels():
    benchmark = get_benchmark("multimnist")
    outputs = {"left": torch.zeros(2, 10), "right": torch.zeros(2, 10)}
    labels = {"left": torch.tensor([1, 2]), "right": torch.tensor([3, -1])}
    masks = {"left": torch.tensor([False, False]), "right": torch.tensor([True, False])}
    losses = benchmark.losses(outputs, labels, masks)
    assert list(losses) == ["right"]
    torch.testing.assert_close(losses["right"], torch.tensor(math.log(10)))
    kept = benchmark.losses(outputs, labels, masks, skip_unlabeled=False)
    assert kept["left"].item() == 0.0
    valid = {"left": torch.tensor([1, 2]), "right": torch.tensor([3, 4])}
    assert list(benchmark.losses(outputs, valid)) == ["left", "right"]


def test_prediction_shape_is_checked():
    with pytest.raises(ValueError, match="shape of `target`"):
        masked_mse(torch.zeros(4, 2), torch.zeros(4))


# --- the dataset, masks and batches -------------------------------------------------------


def _indexed(num: int) -> TensorMultiTaskDataset:
    """Sample i has input i and every label i, so batches can be checked."""
    index = torch.arange(num)
    return TensorMultiTaskDataset(
        index.to(torch.float32).unsqueeze(1),
        {"a": index.clone(), "b": index.to(torch.float32), "c": index.clone()},
    )


def test_dataset_checks_its_tensors():
    with pytest.raises(ValueError, match="floating"):
        TensorMultiTaskDataset(torch.zeros(3, 2, dtype=torch.long), {"a": torch.zeros(3)})
    with pytest.raises(ValueError, match="at least one task"):
        TensorMultiTaskDataset(torch.zeros(3, 2), {})
    with pytest.raises(ValueError, match=r"labels\['a'\]"):
        TensorMultiTaskDataset(torch.zeros(3, 2), {"a": torch.zeros(4)})
    with pytest.raises(ValueError, match="exactly the keys"):
        TensorMultiTaskDataset(torch.zeros(3, 2), {"a": torch.zeros(3)}, {})
    with pytest.raises(ValueError, match=r"masks\['a'\]"):
        TensorMultiTaskDataset(torch.zeros(3, 2), {"a": torch.zeros(3)}, {"a": torch.ones(3)})
    with pytest.raises(ValueError, match="positive std"):
        TensorMultiTaskDataset(
            torch.zeros(3, 2), {"a": torch.zeros(3)}, target_normalization={"a": (0.0, 0.0)}
        )


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 1.0])
def test_hide_labels_hides_the_fraction_of_each_task_independently(fraction):
    data = _indexed(200)
    hidden = hide_labels(data, fraction, seed=3)
    assert hidden.masks is not None
    assert data.masks is None  # the original is unchanged
    for task in data.tasks:
        assert int((~hidden.masks[task]).sum()) == round(fraction * 200)
        assert hidden.label_fraction(task) == pytest.approx(1 - fraction)
    if 0 < fraction < 1:
        assert not torch.equal(hidden.masks["a"], hidden.masks["b"])
    assert torch.equal(hidden.inputs, data.inputs)
    assert hidden.labels["a"] is data.labels["a"]


def test_hide_labels_is_seeded_keeps_old_masks_and_the_class():
    data = _indexed(100)
    first, again = hide_labels(data, 0.3, seed=1), hide_labels(data, 0.3, seed=1)
    other = hide_labels(data, 0.3, seed=2)
    assert first.masks is not None and again.masks is not None and other.masks is not None
    assert all(torch.equal(first.masks[t], again.masks[t]) for t in data.tasks)
    assert not torch.equal(first.masks["a"], other.masks["a"])
    twice = hide_labels(first, 0.3, seed=2)
    assert twice.masks is not None
    for task in data.tasks:
        assert torch.equal(twice.masks[task], first.masks[task] & other.masks[task])
    only_b = hide_labels(data, 0.5, seed=0, tasks=("b",))
    assert only_b.masks is not None
    assert only_b.masks["a"].all()
    assert only_b.label_fraction("b") == 0.5
    mnist = MultiMNIST(
        torch.zeros(4, 1, 28, 28), {"left": torch.arange(4), "right": torch.arange(4)}
    )
    assert isinstance(hide_labels(mnist, 0.5, seed=0), MultiMNIST)
    with pytest.raises(ValueError, match="`fraction`"):
        hide_labels(data, 1.5, seed=0)
    with pytest.raises(ValueError, match="`tasks`"):
        hide_labels(data, 0.5, seed=0, tasks=("z",))


def test_masked_batches_carry_their_masks_and_match_plain_batches():
    data = _indexed(23)
    plain = list(iterate_batches(data, 5, shuffle=True, generator=torch.Generator().manual_seed(0)))
    masked = list(
        iterate_masked_batches(data, 5, shuffle=True, generator=torch.Generator().manual_seed(0))
    )
    assert len(plain) == len(masked) == 5
    for (x, labels), (x2, labels2, masks) in zip(plain, masked, strict=True):
        assert torch.equal(x, x2)
        assert all(torch.equal(labels[t], labels2[t]) for t in data.tasks)
        assert all(m.all() and m.dtype == torch.bool for m in masks.values())
    hidden = hide_labels(data, 0.4, seed=0)
    assert hidden.masks is not None
    for x, labels, masks in iterate_masked_batches(hidden, 4, shuffle=True, generator=None):
        rows = x[:, 0].long()
        for task in data.tasks:
            assert torch.equal(labels[task].long(), rows)
            assert torch.equal(masks[task], hidden.masks[task][rows])


def test_plain_batches_refuse_a_masked_dataset():
    hidden = hide_labels(_indexed(4), 0.5, seed=0)
    with pytest.raises(ValueError, match="iterate_masked_batches"):
        next(iterate_batches(hidden, 2, shuffle=False, generator=None))


def test_to_and_repr_keep_the_class():
    data = hide_labels(_indexed(3), 0.5, seed=0).to("cpu")
    assert repr(data) == "TensorMultiTaskDataset(num_samples=3, tasks=('a', 'b', 'c'), masked=True)"
    mnist = MultiMNIST(
        torch.zeros(2, 1, 28, 28), {"left": torch.arange(2), "right": torch.arange(2)}
    )
    assert repr(mnist.to("cpu")) == "MultiMNIST(num_images=2, tasks=('left', 'right'))"
    assert mnist.images is mnist.inputs


# --- evaluate -----------------------------------------------------------------------------


class _Fixed(nn.Module):
    """Outputs stored per sample: the input is the sample's row index."""

    def __init__(self, outputs: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.outputs = outputs
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = x[:, 0].long()
        return {task: out[rows] * self.scale for task, out in self.outputs.items()}

    def forward_task(self, x: torch.Tensor, task: str) -> torch.Tensor:
        return self.forward(x)[task]


def _flat(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"{task}/{name}": value for task, d in metrics.items() for name, value in d.items()}


def test_evaluate_matches_hand_counts_and_honours_masks():
    # Classes: predictions 1, 0, 2, 2 for labels 1, 1, 2, 0 → 2 of 4 right.
    # Binary: logits +, +, -, + for labels 1, 0, 0, 1 → acc 3/4, TP 2, FP 1, FN 0, F1 = 4/5.
    # Regression: predictions 1, 2, 3, 4 (normalized) for 0, 0, 0, 0 with std 10 → MAE 25.
    data = TensorMultiTaskDataset(
        torch.arange(4, dtype=torch.float32).unsqueeze(1),
        {
            "cls": torch.tensor([1, 1, 2, 0]),
            "bin": torch.tensor([1.0, 0.0, 0.0, 1.0]),
            "reg": torch.zeros(4),
        },
        target_normalization={"reg": (5.0, 10.0)},
    )
    model = _Fixed(
        {
            "cls": torch.eye(3)[torch.tensor([1, 0, 2, 2])],
            "bin": torch.tensor([[2.0], [0.5], [-1.0], [3.0]]),
            "reg": torch.tensor([[1.0], [2.0], [3.0], [4.0]]),
        }
    )
    tasks = [classification_task("cls", 3), binary_task("bin"), regression_task("reg")]
    expected = {"cls": {"acc": 0.5}, "bin": {"acc": 0.75, "f1": 0.8}, "reg": {"mae": 25.0}}
    for batch_size in (1, 3, 100):
        assert _flat(evaluate(model, data, batch_size, tasks=tasks)) == pytest.approx(
            _flat(expected)
        )
    # Hide samples 1 and 2 of every task: cls 1/2, bin acc 2/2 and F1 1, reg (1 + 4) / 2 * 10.
    keep = torch.tensor([True, False, False, True])
    masked = data.with_masks(dict.fromkeys(data.tasks, keep))
    assert _flat(evaluate(model, masked, 2, tasks=tasks)) == pytest.approx(
        _flat({"cls": {"acc": 0.5}, "bin": {"acc": 1.0, "f1": 1.0}, "reg": {"mae": 25.0}})
    )
    nothing = data.with_masks({task: torch.zeros(4, dtype=torch.bool) for task in data.tasks})
    assert math.isnan(evaluate(model, nothing, 2, tasks=tasks)["reg"]["mae"])


def test_evaluate_restores_the_mode_and_checks_its_tasks():
    model = MultiTaskMLP(1, {"a": 1})
    data = TensorMultiTaskDataset(torch.zeros(4, 1), {"a": torch.zeros(4)})
    model.train()
    evaluate(model, data, 2, tasks=[regression_task("a")])
    assert model.training
    with pytest.raises(ValueError, match="have no labels"):
        evaluate(model, data, 2, tasks=[regression_task("b")])
    spec = TaskSpec("a", "regression", 1, masked_mse, (("rmse", False),))
    with pytest.raises(ValueError, match="cannot compute"):
        evaluate(model, data, 2, tasks=[spec])


# --- every benchmark's model --------------------------------------------------------------


def _batch(benchmark: Benchmark, batch_size: int = 8) -> tuple[torch.Tensor, dict, dict]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch_size, *benchmark.input_shape, generator=generator)
    labels, masks = {}, {}
    for spec in benchmark.tasks:
        if spec.kind == "classification":
            labels[spec.name] = torch.randint(spec.num_outputs, (batch_size,), generator=generator)
        elif spec.kind == "binary":
            labels[spec.name] = torch.randint(2, (batch_size,), generator=generator).float()
        else:
            labels[spec.name] = torch.randn(batch_size, generator=generator)
        masks[spec.name] = torch.ones(batch_size, dtype=torch.bool)
    # The first task has no label in this batch, the second only half of them.
    masks[benchmark.tasks[0].name][:] = False
    masks[benchmark.tasks[1].name][::2] = False
    return x, labels, masks


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("use_task_norms", [False, True])
def test_model_forward_and_one_step(name, use_task_norms):
    torch.manual_seed(0)
    benchmark = get_benchmark(name)
    model = benchmark.make_model(task_norms=use_task_norms)
    assert bool(task_norms(model)) == use_task_norms
    x, labels, masks = _batch(benchmark)
    # With task norms, every forward runs under one task's norms.
    with active_task(model, benchmark.tasks[0].name) if use_task_norms else nullcontext():
        outputs = model(x)
    assert list(outputs) == list(benchmark.task_names)
    for spec in benchmark.tasks:
        assert outputs[spec.name].shape == (len(x), spec.num_outputs)
    model.eval()
    for spec in benchmark.tasks[:2]:
        with active_task(model, spec.name):
            single = model.forward_task(x, spec.name)
            torch.testing.assert_close(single, model(x)[spec.name])
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    step = taskprio.MultiTaskStep(
        model, torch.optim.Adam(model.parameters(), lr=1e-3), benchmark.task_names
    )
    if use_task_norms:

        def task_loss(task: str) -> torch.Tensor | None:
            if not masks[task].any():
                return None  # no label for this task in the batch: MultiTaskStep skips it
            with active_task(model, task):
                prediction = model.forward_task(x, task)
            return benchmark.task(task).loss(prediction, labels[task], masks[task])

        record = step(task_loss)
    else:
        record = step(benchmark.losses(model(x), labels, masks))
    first = benchmark.tasks[0].name
    assert set(record.losses) == set(benchmark.task_names) - {first}
    assert record.skipped_tasks == (first,)
    assert all(math.isfinite(value) for value in record.losses.values())
    after = list(model.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
    assert all(torch.isfinite(p).all() for p in after)


def test_mlp_puts_a_norm_after_each_shared_linear_and_checks_options():
    model = MultiTaskMLP(5, {"a": 1, "b": 3}, hidden_sizes=(8, 4), head_hidden=0)
    kinds = [type(layer).__name__ for layer in model.trunk]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU"]
    assert all(layer.bias is None for layer in model.trunk if isinstance(layer, nn.Linear))
    assert isinstance(model.heads["b"], nn.Linear)
    plain = MultiTaskMLP(5, {"a": 1}, batch_norm=False)
    assert not any(isinstance(layer, nn.BatchNorm1d) for layer in plain.trunk)
    with pytest.raises(ValueError, match="`hidden_sizes`"):
        MultiTaskMLP(5, {"a": 1}, hidden_sizes=())
    with pytest.raises(ValueError, match=r"`outputs\['a'\]`"):
        MultiTaskMLP(5, {"a": 0})
    with pytest.raises(ValueError, match="`task` must be one of"):
        model.forward_task(torch.zeros(2, 5), "c")


def test_single_task_model_and_evaluate():
    benchmark = get_benchmark("qm9", hidden_sizes=(16,), head_hidden=0)
    model = benchmark.make_model(["U0"])
    x, labels, _ = _batch(benchmark)
    assert list(model(x)) == ["U0"]
    data = TensorMultiTaskDataset(x, labels)
    result = benchmark.evaluate(model, data, tasks=["U0"])
    assert list(result) == ["U0"]
    assert result["U0"]["mae"] > 0


def test_task_norm_model_is_evaluated_per_task():
    benchmark = get_benchmark("yeast", hidden_sizes=(8,))
    model = benchmark.make_model(task_norms=True)
    x, labels, _ = _batch(benchmark, 16)
    result = benchmark.evaluate(model, TensorMultiTaskDataset(x, labels), 5)
    assert set(result) == set(benchmark.task_names)
    assert all(0 <= metrics["acc"] <= 1 for metrics in result.values())


@pytest.mark.parametrize("name", NAMES)
def test_built_cache_loads_with_the_spec(name):
    benchmark = get_benchmark(name)
    try:
        test = benchmark.load("test", _data_dir())
    except FileNotFoundError as error:
        pytest.skip(f"{name} cache not built: {error}")
    assert test.tasks == benchmark.task_names
    assert tuple(test.inputs.shape[1:]) == benchmark.input_shape
    for spec in benchmark.tasks:
        labels = test.labels[spec.name]
        if spec.kind == "classification":
            assert labels.dtype == torch.int64
            assert int(labels.max()) < spec.num_outputs
        else:
            assert labels.dtype == torch.float32
