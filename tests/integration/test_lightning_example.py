"""examples/lightning_cso.py: trains under Lightning, and with CSO equals a plain PyTorch loop."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch.nn import functional

import taskprio
from taskprio.data import iterate_batches

pytest.importorskip("lightning", reason="the example needs `pip install taskprio[lightning]`")

pytestmark = [
    # Lightning 2.6 builds a torch.utils._pytree.LeafSpec for the training data of every fit
    # (CombinedLoader), which torch 2.13 deprecates; nothing the example can change.
    pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated"),
    # The example trains on the CPU (bitwise comparison with a CPU loop); on a machine with a
    # GPU, Lightning says it is not used.
    pytest.mark.filterwarnings("ignore:GPU available but not used"),
]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lightning_cso.py"
TASKS = ("left", "right")
# 40 samples in batches of 16: 3 batches per epoch, the last one smaller.
NUM_SAMPLES, BATCH_SIZE, EPOCHS, SEED = 40, 16, 2, 3
BATCHES_PER_EPOCH = math.ceil(NUM_SAMPLES / BATCH_SIZE)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Batches of 16 gain nothing from more threads; on a busy shared CPU, OpenMP threads waiting
    # for each other made one run 30x slower. Both runs compared below use the same setting.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lightning_cso_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(example: ModuleType, method: str, epochs: int) -> object:
    return example.main(
        [
            "--synthetic", "--method", method, "--epochs", str(epochs), "--seed", str(SEED),
            "--num-samples", str(NUM_SAMPLES), "--batch-size", str(BATCH_SIZE),
        ]
    )  # fmt: skip


def _plain_cso_loop(example: ModuleType) -> tuple[torch.nn.Module, taskprio.methods.CSO, list]:
    """The same training without Lightning: the loop of examples/cso_multimnist.py."""
    data = example.synthetic_multi_mnist(NUM_SAMPLES + NUM_SAMPLES // 4, seed=SEED)
    train = taskprio.data.MultiMNIST(
        data.inputs[:NUM_SAMPLES], {t: y[:NUM_SAMPLES] for t, y in data.labels.items()}
    )
    model = example.build_model(TASKS, seed=SEED)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    method = taskprio.methods.CSO(epochs=EPOCHS, seed=SEED)
    step = taskprio.MultiTaskStep(model, optimizer, TASKS, method=method)
    generator = torch.Generator().manual_seed(SEED)
    records = []
    model.train()
    for epoch in range(EPOCHS):
        for x, labels in iterate_batches(train, BATCH_SIZE, shuffle=True, generator=generator):

            def task_loss(task, x=x, labels=labels):
                with taskprio.nn.active_task(model, task):
                    return functional.cross_entropy(model.forward_task(x, task), labels[task])

            records.append(step(task_loss, epoch=epoch))
    return model, method, records


def test_cso_under_lightning_equals_a_plain_loop_bit_for_bit(example):
    module = _run(example, "cso", EPOCHS)
    model, method, records = _plain_cso_loop(example)

    phases = [record.phase for record in module.records]
    assert phases == [record.phase for record in records]
    # Epoch 0 is all Phase 1 (probability 1 - 0/E); with this seed epoch 1 draws both phases.
    assert phases[:BATCHES_PER_EPOCH] == ["phase1"] * BATCHES_PER_EPOCH
    assert set(phases[BATCHES_PER_EPOCH:]) == {"phase1", "phase2"}
    assert [r.losses for r in module.records] == [r.losses for r in records]
    lightning_state, plain_state = module.model.state_dict(), model.state_dict()
    assert lightning_state.keys() == plain_state.keys()
    for name, value in plain_state.items():
        assert torch.equal(lightning_state[name], value), name
    # CSO's generator advanced alike: the next phase draw is the same.
    assert torch.equal(module.method.generator.get_state(), method.generator.get_state())

    initial = example.build_model(TASKS, seed=SEED).state_dict()
    assert not torch.equal(initial["trunk.0.weight"], lightning_state["trunk.0.weight"])
    # One Lightning step per batch, whatever the phase (Phase 1 steps Adam twice per batch).
    assert module.trainer.global_step == EPOCHS * BATCHES_PER_EPOCH
    # Per-epoch phase counts of the last epoch, logged with reduce_fx="sum".
    last_epoch = phases[BATCHES_PER_EPOCH:]
    metrics = module.trainer.callback_metrics
    for phase in ("phase1", "phase2"):
        assert metrics[f"steps/{phase}"].item() == last_epoch.count(phase)


@pytest.mark.parametrize("method", ["pcgrad", "mgda_ub"])
def test_aggregators_train_log_and_count_steps(example, method):
    module = _run(example, method, 1)

    assert len(module.records) == BATCHES_PER_EPOCH
    assert module.trainer.global_step == BATCHES_PER_EPOCH
    assert all(r.method == method and r.phase is None for r in module.records)
    assert all(math.isfinite(v) for r in module.records for v in r.losses.values())
    initial = example.build_model(TASKS, seed=SEED, task_norms=module.task_norms).state_dict()
    final = module.model.state_dict()
    assert initial.keys() == final.keys()
    changed = [name for name in initial if not torch.equal(initial[name], final[name])]
    assert "trunk.0.weight" in changed and "heads.left.2.bias" in changed
    metrics = module.trainer.callback_metrics
    for task in TASKS:
        assert metrics[f"loss/{task}"].item() == pytest.approx(module.records[-1].losses[task])
        assert math.isfinite(metrics[f"weight/{task}"].item())


def test_mismatched_epoch_budget_is_refused(example):
    import lightning

    module = example.MultiTaskLightningModule(TASKS, method="cso", epochs=3)
    trainer = lightning.Trainer(
        max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    batches = [(torch.zeros(2, 1, 28, 28), {t: torch.zeros(2, dtype=torch.int64) for t in TASKS})]
    with pytest.raises(ValueError, match=r"epochs=3 but Trainer\(max_epochs=2\)"):
        trainer.fit(module, train_dataloaders=batches)
