"""Checkpoints: atomic, verified; a torn or corrupted file falls back to the previous one."""

from __future__ import annotations

import pytest
import torch

from taskprio.train import CheckpointError, latest_checkpoint, load_checkpoint
from taskprio.train._checkpoint import list_checkpoints, save_checkpoint


def test_round_trip_keeps_the_newest_and_leaves_no_temporary_files(tmp_path):
    for step in range(1, 5):
        save_checkpoint(tmp_path, {"step": step, "w": torch.full((3,), float(step))}, step=step)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step-00000003.ckpt",
        "step-00000004.ckpt",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-00000003.ckpt",
        "step-00000004.ckpt",
    ]
    path, state = latest_checkpoint(tmp_path)
    assert path.name == "step-00000004.ckpt"
    assert state["step"] == 4 and torch.equal(state["w"], torch.full((3,), 4.0))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[: len(data) // 2], "is truncated"),
        (lambda data: data[:-5] + bytes(5 * [data[-1] ^ 0xFF]), "is corrupted"),
        (lambda data: b"hello\n" + data, "not a taskprio checkpoint"),
    ],
)
def test_damaged_newest_file_is_detected_and_the_previous_used(tmp_path, damage, message):
    save_checkpoint(tmp_path, {"step": 1}, step=1)
    newest = save_checkpoint(tmp_path, {"step": 2}, step=2)
    newest.write_bytes(damage(newest.read_bytes()))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(newest)
    with pytest.warns(UserWarning, match="Using the previous checkpoint"):
        path, state = latest_checkpoint(tmp_path)
    assert state["step"] == 1 and path.name == "step-00000001.ckpt"


def test_no_good_checkpoint_gives_none(tmp_path):
    assert latest_checkpoint(tmp_path / "absent") is None
    (tmp_path / "step-00000001.ckpt").write_bytes(b"")
    with pytest.warns(UserWarning):
        assert latest_checkpoint(tmp_path) is None


class NotAllowed:
    pass


def test_arbitrary_objects_are_refused_at_load(tmp_path):
    path = save_checkpoint(tmp_path, {"object": NotAllowed()}, step=1)
    with pytest.raises(Exception, match="Weights only load failed"):
        load_checkpoint(path)
