"""Cityscapes on a tiny fixture in MTAN's 128x256 ``.npy`` layout (here 16x24)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _dense_asserts import BLOCK, assert_consistent_blocks, block_image, decode_blocks

from taskprio.data import IGNORE_INDEX, Cityscapes

HEIGHT, WIDTH = 16, 24
RAW = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def _expected(task, col, row, classes=7):
    block = row * 6 + col
    if task == "semseg":
        return torch.where(block % 4 == 0, IGNORE_INDEX, block % classes)
    return torch.where(row == 0, 0.0, 0.1 * (1 + block.float()))[None]  # row 0: unknown


def _write(root, counts=(3, 2)):
    """<split>/{image,label_7,label_19,depth}/<i>.npy, as in MTAN's cityscapes2.zip."""
    image, cols, rows = block_image(HEIGHT, WIDTH)
    col, row = torch.from_numpy(cols), torch.from_numpy(rows)
    arrays = {"image": image, "depth": _expected("depth", col, row)[0].numpy()[:, :, None]}
    for classes in (7, 19):
        labels = _expected("semseg", col, row, classes).numpy().astype(np.float32)
        labels[labels == IGNORE_INDEX] = -1
        arrays[f"label_{classes}"] = labels
    for split, count in zip(("train", "val"), counts, strict=True):
        for folder, array in arrays.items():
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                np.save(root / split / folder / f"{i}.npy", (array * (1 + i)).astype(np.float32)
                        if folder == "depth" else array.astype(np.float32))  # fmt: skip


def test_layout_values(tmp_path):
    _write(tmp_path / "cityscapes")
    data = Cityscapes(tmp_path / "cityscapes", split="val", **RAW)
    assert data.ids == ["0", "1"] and data.tasks == ("semseg", "depth")
    assert data.task_outputs == {"semseg": 7, "depth": 1}
    image, targets = data[1]
    assert image.shape == (3, HEIGHT, WIDTH) and image.dtype == torch.float32
    col, row, is_exact = decode_blocks(image)
    assert is_exact.all()
    semseg, depth = targets["semseg"], targets["depth"]
    assert semseg.dtype == torch.int64 and semseg.shape == (HEIGHT, WIDTH)
    assert torch.equal(semseg, _expected("semseg", col, row))
    assert (semseg == IGNORE_INDEX).any() and semseg[semseg != IGNORE_INDEX].max() <= 6
    assert depth.dtype == torch.float32 and depth.shape == (1, HEIGHT, WIDTH)
    torch.testing.assert_close(depth, 2 * _expected("depth", col, row))
    assert (depth[0, :BLOCK] == 0).all()


def test_num_classes_reads_the_matching_labels(tmp_path):
    _write(tmp_path)
    data = Cityscapes(tmp_path, num_classes=19, **RAW)
    image, targets = data[0]
    col, row, _ = decode_blocks(image)
    assert data.task_outputs["semseg"] == 19
    assert torch.equal(targets["semseg"], _expected("semseg", col, row, 19))
    with pytest.raises(FileNotFoundError, match=r"label_2/0\.npy is missing"):
        Cityscapes(tmp_path, num_classes=2)
    with pytest.raises(ValueError, match="`num_classes` must be one of"):
        Cityscapes(tmp_path, num_classes=8)


def test_split_and_task_choice(tmp_path):
    _write(tmp_path)
    assert len(Cityscapes(tmp_path)) == 3 and len(Cityscapes(tmp_path, split="val")) == 2
    assert list(Cityscapes(tmp_path, tasks=("depth",))[0][1]) == ["depth"]
    with pytest.raises(ValueError, match=r"`split` must be one of \['train', 'val'\]"):
        Cityscapes(tmp_path, split="test")


def test_augmentation_moves_image_and_targets_together(tmp_path):
    _write(tmp_path, counts=(1, 1))
    data = Cityscapes(tmp_path, augment=True, generator=torch.Generator().manual_seed(1), **RAW)
    seen = {assert_consistent_blocks(*data[0], _expected, scales=data.scales) for _ in range(12)}
    assert {flip for _, flip in seen} == {False, True}
    assert {scale for scale, _ in seen} == {1.0, 1.2, 1.5}


def test_no_augmentation_by_default_and_image_size(tmp_path):
    _write(tmp_path)
    first, second = Cityscapes(tmp_path)[0], Cityscapes(tmp_path)[0]
    assert torch.equal(first[0], second[0])
    image, targets = Cityscapes(tmp_path, image_size=(8, 12))[0]
    assert image.shape == (3, 8, 12) and targets["semseg"].shape == (8, 12)
    assert targets["depth"].shape == (1, 8, 12)


def test_missing_data_names_the_place_and_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        Cityscapes(tmp_path / "cityscapes")
    message = str(error.value)
    assert message.startswith(
        f"Cityscapes not found at {tmp_path / 'cityscapes'}. Put it there or set data.root; "
        "`taskprio data cityscapes` shows how."
    )
    for expected in ("train/label_7/<i>.npy", "train/depth/<i>.npy", "cityscapes2.zip"):
        assert expected in message
