"""NYUv2 on tiny fixtures in the MTI-Net (NYUD_MT), ATRC and MTAN on-disk layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _dense_asserts import assert_consistent_blocks, assert_is_augmented, block_image, raw_image
from _dense_files import write_jpeg, write_png

from taskprio.data import IGNORE_INDEX, NYUv2

HEIGHT, WIDTH = 16, 24
RAW = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
TRAIN_IDS, VAL_IDS = ["0003", "0001", "0007"], ["0002", "0005"]


def _normals(height, width, seed):
    vectors = np.random.default_rng(seed).normal(size=(height, width, 3)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
    vectors[:2] = 0  # unknown
    return vectors


def _write_mti_net(root, *, atrc=False):
    """NYUD_MT: gt_sets, images/*.jpg, segmentation/*.png, depth/normals/edge *.npy.

    With `atrc`, ATRC's variant: images, normals and edges as PNG.
    """
    truth = {}
    for i, sample_id in enumerate(TRAIN_IDS + VAL_IDS):
        rng = np.random.default_rng(i)
        pixels = (block_image(HEIGHT, WIDTH)[0] * 255).astype(np.uint8)
        segmentation = rng.integers(0, 41, size=(HEIGHT, WIDTH)).astype(np.uint8)  # 0: unlabelled
        depth = rng.uniform(0.5, 10, size=(HEIGHT, WIDTH)).astype(np.float32)
        depth[:, :3] = 0  # unknown
        normals = _normals(HEIGHT, WIDTH, i)
        edge = (rng.uniform(size=(HEIGHT, WIDTH)) < 0.2).astype(np.float32)
        if atrc:
            write_png(root / "images" / f"{sample_id}.png", pixels)
            normals_png = np.clip(np.rint((normals + 1) * 127.5), 0, 255).astype(np.uint8)
            write_png(root / "normals" / f"{sample_id}.png", normals_png)
            write_png(root / "edge" / f"{sample_id}.png", (edge * 255).astype(np.uint8))
            normals = 2 * normals_png.astype(np.float32) / 255 - 1
        else:
            write_jpeg(root / "images" / f"{sample_id}.jpg", pixels, quality=95)
            (root / "normals").mkdir(parents=True, exist_ok=True)
            np.save(root / "normals" / f"{sample_id}.npy", normals)
            (root / "edge").mkdir(parents=True, exist_ok=True)
            np.save(root / "edge" / f"{sample_id}.npy", edge)
        write_png(root / "segmentation" / f"{sample_id}.png", segmentation)
        (root / "depth").mkdir(parents=True, exist_ok=True)
        np.save(root / "depth" / f"{sample_id}.npy", depth)
        truth[sample_id] = (pixels, segmentation, depth, normals, edge)
    (root / "gt_sets").mkdir(parents=True, exist_ok=True)
    (root / "gt_sets" / "train.txt").write_text("\n".join(TRAIN_IDS) + "\n")
    (root / "gt_sets" / "val.txt").write_text("\n".join(VAL_IDS) + "\n\n")
    return truth


def _expected_mtan(task, col, row):
    block = row * 6 + col
    if task == "semseg":
        return torch.where(block % 5 == 0, IGNORE_INDEX, block % 13)
    if task == "depth":
        return torch.where(col == 0, 0.0, 1.0 + block.float())[None]
    vectors = torch.stack([(col.float() - 2.5) / 3, torch.ones_like(col.float()), row.float()])
    return torch.where(col == 5, 0.0, vectors / vectors.norm(dim=0))


def _write_mtan(root, counts=(3, 2)):
    """MTAN's nyuv2: <split>/{image,label,depth,normal}/<i>.npy of block images."""
    image, cols, rows = block_image(HEIGHT, WIDTH)
    col, row = torch.from_numpy(cols), torch.from_numpy(rows)
    semseg = _expected_mtan("semseg", col, row).numpy().astype(np.float32)
    semseg[semseg == IGNORE_INDEX] = -1
    arrays = {
        "image": image,
        "label": semseg,
        "depth": _expected_mtan("depth", col, row)[0].numpy()[:, :, None],
        "normal": _expected_mtan("normals", col, row).permute(1, 2, 0).numpy(),
    }
    for split, count in zip(("train", "val"), counts, strict=True):
        for folder, array in arrays.items():
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                np.save(root / split / folder / f"{i}.npy", array.astype(np.float32))


def test_mti_net_layout_values(tmp_path):
    root = tmp_path / "nyuv2"
    truth = _write_mti_net(root / "NYUD_MT")  # found one level down
    data = NYUv2(root, **RAW)
    assert data.layout == "mti-net" and data.num_classes == 40
    assert data.ids == TRAIN_IDS and len(data) == 3
    assert data.tasks == ("semseg", "depth", "normals", "edge")
    assert data.task_outputs == {"semseg": 40, "depth": 1, "normals": 3, "edge": 1}
    image, targets = data[1]
    pixels, segmentation, depth, normals, edge = truth["0001"]
    assert image.shape == (3, HEIGHT, WIDTH) and image.dtype == torch.float32
    assert (image * 255 - torch.from_numpy(pixels).permute(2, 0, 1)).abs().mean() < 3  # JPEG
    semseg = targets["semseg"]
    assert semseg.shape == (HEIGHT, WIDTH) and semseg.dtype == torch.int64
    want = torch.from_numpy(segmentation.astype(np.int64)) - 1
    assert torch.equal(semseg, want.masked_fill(want < 0, IGNORE_INDEX))
    assert (semseg == IGNORE_INDEX).any() and semseg[semseg != IGNORE_INDEX].max() <= 39
    assert targets["depth"].shape == (1, HEIGHT, WIDTH) and targets["depth"].dtype == torch.float32
    torch.testing.assert_close(targets["depth"][0], torch.from_numpy(depth))
    assert (targets["depth"][0, :, :3] == 0).all()
    got_normals = targets["normals"]
    assert got_normals.shape == (3, HEIGHT, WIDTH)
    torch.testing.assert_close(got_normals.permute(1, 2, 0), torch.from_numpy(normals))
    norms = got_normals.norm(dim=0)
    assert (norms[:2] == 0).all()
    torch.testing.assert_close(norms[2:], torch.ones_like(norms[2:]))
    assert targets["edge"].shape == (1, HEIGHT, WIDTH)
    assert torch.equal(targets["edge"][0], torch.from_numpy(edge))


def test_split_files_and_task_choice(tmp_path):
    _write_mti_net(tmp_path)
    val = NYUv2(tmp_path, split="val", tasks=("depth", "semseg"))
    assert val.ids == VAL_IDS and len(val) == 2
    assert list(val[0][1]) == ["depth", "semseg"]
    with pytest.raises(ValueError, match=r"`split` must be one of \['train', 'val'\]"):
        NYUv2(tmp_path, split="test")
    with pytest.raises(ValueError, match="`tasks`"):
        NYUv2(tmp_path, tasks=("semseg", "sal"))
    with pytest.raises(ValueError, match="'mti-net' layout"):
        NYUv2(tmp_path, layout="mtan")


def test_atrc_variant_reads_png_images_normals_and_edges(tmp_path):
    truth = _write_mti_net(tmp_path, atrc=True)
    image, targets = NYUv2(tmp_path, split="val", **RAW)[0]
    pixels, _, _, normals, edge = truth["0002"]
    torch.testing.assert_close(image, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
    want = torch.from_numpy(normals).permute(2, 0, 1)
    valid = want.norm(dim=0) >= 0.5
    assert (targets["normals"][:, ~valid] == 0).all() and not valid[:2].any()
    torch.testing.assert_close(targets["normals"][:, valid], (want / want.norm(dim=0))[:, valid])
    assert torch.equal(targets["edge"][0], torch.from_numpy(edge))


def test_mtan_layout_values(tmp_path):
    _write_mtan(tmp_path)
    data = NYUv2(tmp_path, split="val", **RAW)
    assert data.layout == "mtan" and data.num_classes == 13 and data.ids == ["0", "1"]
    assert data.tasks == ("semseg", "depth", "normals")
    image, targets = data[0]
    col, row, is_exact = _decode(image)
    assert is_exact.all()
    for task, target in targets.items():
        torch.testing.assert_close(target, _expected_mtan(task, col, row).to(target.dtype))
    assert (targets["semseg"] == IGNORE_INDEX).any()  # MTAN's -1
    with pytest.raises(ValueError, match="`tasks`"):
        NYUv2(tmp_path, tasks=("edge",))


def _decode(image):
    from _dense_asserts import decode_blocks

    return decode_blocks(image)


def test_augmentation_moves_image_and_targets_together(tmp_path):
    _write_mtan(tmp_path, counts=(1, 1))
    generator = torch.Generator().manual_seed(0)
    data = NYUv2(tmp_path, augment=True, generator=generator, **RAW)
    seen = set()
    for _ in range(12):
        image, targets = data[0]
        assert image.shape == (3, HEIGHT, WIDTH)
        seen.add(assert_consistent_blocks(image, targets, _expected_mtan, scales=data.scales))
    assert {flip for _, flip in seen} == {False, True}
    assert {scale for scale, _ in seen} == {1.0, 1.2, 1.5}


def test_augmentation_of_mti_net_samples_is_one_crop_and_flip(tmp_path):
    _write_mti_net(tmp_path)
    plain = NYUv2(tmp_path, **RAW)
    flips = set()
    for seed in range(6):
        generator = torch.Generator().manual_seed(seed)
        data = NYUv2(tmp_path, augment=True, scales=(1.0, 1.5), generator=generator, **RAW)
        match = assert_is_augmented(data[0], plain[0], data.kinds, scales=(1.0, 1.5))
        flips.add(match[3])
    assert flips == {False, True}


def test_image_size_resizes_image_and_targets(tmp_path):
    _write_mti_net(tmp_path)
    image, targets = NYUv2(tmp_path, image_size=(8, 12))[0]
    assert image.shape == (3, 8, 12)
    assert {t: tuple(y.shape[-2:]) for t, y in targets.items()} == dict.fromkeys(targets, (8, 12))
    assert targets["semseg"].dtype == torch.int64
    norms = targets["normals"].norm(dim=0)
    assert torch.all((norms == 0) | ((norms - 1).abs() < 1e-5))


def test_default_normalization_and_batching(tmp_path):
    _write_mtan(tmp_path)
    data = NYUv2(tmp_path)
    image, _ = data[0]
    raw, _ = NYUv2(tmp_path, **RAW)[0]
    torch.testing.assert_close(raw_image(image, data.mean, data.std), raw)
    images, targets = next(iter(torch.utils.data.DataLoader(data, batch_size=2)))
    assert images.shape == (2, 3, HEIGHT, WIDTH) and targets["semseg"].shape == (2, HEIGHT, WIDTH)


def test_missing_data_names_the_place_and_the_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKPRIO_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        NYUv2()
    message = str(error.value)
    assert message.startswith(
        f"NYUv2 not found at {tmp_path / 'nyuv2'}. Put it there or set data.root; "
        "`taskprio data nyuv2` shows how."
    )
    for expected in ("gt_sets/train.txt", "segmentation/<id>.png", "train/label/<i>.npy", "MTAN"):
        assert expected in message
    (tmp_path / "nyuv2").mkdir()
    with pytest.raises(FileNotFoundError, match="holds neither gt_sets/"):
        NYUv2()


def test_a_missing_file_of_the_split_is_named(tmp_path):
    _write_mti_net(tmp_path)
    (tmp_path / "depth" / "0007.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"depth/0007\.npy is missing"):
        NYUv2(tmp_path)
    assert len(NYUv2(tmp_path, tasks=("semseg",))) == 3
