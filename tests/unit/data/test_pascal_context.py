"""PASCAL-Context on a tiny fixture in MTI-Net's PASCAL_MT layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _dense_asserts import assert_is_augmented
from _dense_files import write_jpeg, write_label_map, write_part_annotation, write_png

from taskprio.data import IGNORE_INDEX, PASCALContext
from taskprio.data._image_io import decode_jpeg
from taskprio.data._pascal_context import NORMALS_VALID_CLASSES, label_edges

TRAIN_IDS, VAL_IDS = ["2008_000002", "2008_000008"], ["2008_000026"]
SIZES = {"2008_000002": (12, 16), "2008_000008": (14, 16), "2008_000026": (12, 18)}
RAW = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "image_size": None}
TABLE, AEROPLANE, PERSON_CONTEXT = 397, 2, 284  # PASCAL-Context label ids
VOC_PALETTE = np.random.default_rng(0).integers(0, 256, size=(256, 3))


def _write(root):
    """PASCAL_MT: image sets, JPEGs, label PNGs, PASCAL-Part and LabelMap .mat files."""
    truth = {}
    for i, sample_id in enumerate(TRAIN_IDS + VAL_IDS):
        rng = np.random.default_rng(i)
        height, width = SIZES[sample_id]
        pixels = rng.integers(0, 256, size=(height, width, 3)).astype(np.uint8)
        write_jpeg(root / "JPEGImages" / f"{sample_id}.jpg", pixels, subsample=True)
        semseg = rng.integers(0, 21, size=(height, width)).astype(np.uint8)
        semseg[0, :] = 255  # VOC's "void" border
        write_png(root / "semseg" / "pascal-context" / f"{sample_id}.png", semseg,
                  palette=VOC_PALETTE)  # fmt: skip
        label_map = np.full((height, width), TABLE, dtype=np.uint16)
        label_map[:, width // 2 :] = AEROPLANE  # not an NYUv2 class: no normals there
        label_map[: height // 3, : width // 4] = PERSON_CONTEXT
        write_label_map(root / "pascal-context" / "trainval" / f"{sample_id}.mat", label_map)
        saliency = rng.integers(0, 256, size=(height, width)).astype(np.uint8)
        write_png(root / "sal_distill" / f"{sample_id}.png", saliency)
        normals = rng.integers(0, 256, size=(height, width, 3)).astype(np.uint8)
        normals[..., 2] = 255  # far from the mid-grey "unknown"
        write_png(root / "normals_distill" / f"{sample_id}.png", normals)
        person = np.zeros((height, width), np.uint8)
        person[2:10, 3:9] = 1
        head, hand, leg = np.zeros_like(person), np.zeros_like(person), np.zeros_like(person)
        head[2:4, 4:7], hand[5, 3], leg[8:10, 5:7] = 1, 1, 1
        dog_leg = np.zeros_like(person)
        dog_leg[10:12, 10:12] = 1
        objects = [("dog", 12, dog_leg, {"lfleg": dog_leg})]
        if i == 0:  # only the first image has a person with parts
            objects.append(("person", 15, person, {"head": head, "lhand": hand, "ruleg": leg}))
        write_part_annotation(root / "human_parts" / f"{sample_id}.mat", sample_id, objects)
        truth[sample_id] = (pixels, semseg, label_map, saliency, normals, head, hand, leg)
    # The VOC12 copy of the first image's labels is read first.
    voc = np.full(SIZES[TRAIN_IDS[0]], 7, dtype=np.uint8)
    write_png(root / "semseg" / "VOC12" / f"{TRAIN_IDS[0]}.png", voc, palette=VOC_PALETTE)
    sets = root / "ImageSets" / "Context"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("\n".join(TRAIN_IDS) + "\n")
    (sets / "val.txt").write_text("\n".join(VAL_IDS) + "\n")
    return truth


@pytest.fixture(scope="module")
def pascal(tmp_path_factory):
    root = tmp_path_factory.mktemp("pascal_context")
    return root, _write(root / "PASCAL_MT")


def test_targets_follow_mti_net(pascal):
    root, truth = pascal
    data = PASCALContext(root, **RAW)
    assert data.ids == TRAIN_IDS and data.tasks == (
        "semseg",
        "human_parts",
        "sal",
        "normals",
        "edge",
    )
    assert data.task_outputs == {"semseg": 21, "human_parts": 7, "sal": 1, "normals": 3, "edge": 1}
    image, targets = data[0]
    _, _, label_map, saliency, normals, head, hand, leg = truth[TRAIN_IDS[0]]
    assert image.shape == (3, 12, 16)
    decoded = decode_jpeg((root / "PASCAL_MT" / "JPEGImages" / f"{TRAIN_IDS[0]}.jpg").read_bytes())
    # Pillow, when installed, decodes with libjpeg's integer IDCT: within 3 levels.
    torch.testing.assert_close(
        image, torch.from_numpy(decoded).permute(2, 0, 1) / 255, atol=3 / 255, rtol=0
    )
    assert torch.equal(targets["semseg"], torch.full((12, 16), 7))  # VOC12 first
    parts = targets["human_parts"]
    assert parts.dtype == torch.int64 and parts.shape == (12, 16)
    assert (parts[torch.from_numpy(head).bool()] == 1).all()
    assert (parts[torch.from_numpy(hand).bool()] == 4).all()
    assert (parts[torch.from_numpy(leg).bool()] == 5).all()
    assert int((parts > 0).sum()) == head.sum() + hand.sum() + leg.sum()  # the dog is ignored
    sal = targets["sal"]
    assert sal.shape == (1, 12, 16) and sal.dtype == torch.float32
    assert torch.equal(sal[0], torch.from_numpy(saliency > 127.5).float())
    got = targets["normals"]
    is_valid = torch.from_numpy(np.isin(label_map, NORMALS_VALID_CLASSES))
    assert not is_valid[:, 8:].any() and is_valid[:, :8].all()  # aeroplane out, table/person in
    assert (got[:, ~is_valid] == 0).all()
    want = 2 * torch.from_numpy(normals).permute(2, 0, 1).float() / 255 - 1
    torch.testing.assert_close(got[:, is_valid], (want / want.norm(dim=0))[:, is_valid])
    edge = targets["edge"]
    assert edge.shape == (1, 12, 16)
    assert torch.equal(edge[0], torch.from_numpy(label_edges(label_map)).float())
    assert edge[0, :, 7:9].any() and not edge[0, 6:, :6].any()  # on the boundaries only


def test_image_without_person_parts_is_ignored_and_void_kept(pascal):
    root, _ = pascal
    _, targets = PASCALContext(root, **RAW)[1]
    assert (targets["human_parts"] == IGNORE_INDEX).all()
    assert (targets["semseg"][0] == IGNORE_INDEX).all()
    assert targets["semseg"][1:].max() <= 20


def test_split_and_task_choice(pascal):
    root, _ = pascal
    val = PASCALContext(root, split="val", tasks=("sal", "semseg"), **RAW)
    assert val.ids == VAL_IDS and list(val[0][1]) == ["sal", "semseg"]
    with pytest.raises(ValueError, match=r"`split` must be one of \['train', 'val'\]"):
        PASCALContext(root, split="trainval")
    with pytest.raises(ValueError, match="`tasks`"):
        PASCALContext(root, tasks=("depth",))


def test_default_size_is_512_and_batches_stack(pascal):
    root, _ = pascal
    data = PASCALContext(root, tasks=("semseg", "normals"))
    images, targets = next(iter(torch.utils.data.DataLoader(data, batch_size=2)))
    assert images.shape == (2, 3, 512, 512)
    assert targets["semseg"].shape == (2, 512, 512) and targets["normals"].shape == (2, 3, 512, 512)
    norms = targets["normals"].norm(dim=1)
    assert torch.all((norms == 0) | ((norms - 1).abs() < 1e-5))


def test_augmentation_is_one_crop_and_flip_of_every_target(pascal):
    root, _ = pascal
    plain = PASCALContext(root, image_size=(12, 16), mean=(0, 0, 0), std=(1, 1, 1))
    flips = set()
    for seed in range(6):
        data = PASCALContext(
            root, image_size=(12, 16), mean=(0, 0, 0), std=(1, 1, 1), augment=True,
            scales=(1.0, 1.5), generator=torch.Generator().manual_seed(seed),
        )  # fmt: skip
        flips.add(assert_is_augmented(data[0], plain[0], data.kinds, scales=(1.0, 1.5))[3])
    assert flips == {False, True}


def test_missing_data_names_the_place_and_the_layout(pascal, tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        PASCALContext(tmp_path / "absent")
    message = str(error.value)
    assert message.startswith(
        f"PASCAL-Context not found at {tmp_path / 'absent'}. Put it there or set data.root; "
        "`taskprio data pascal_context` shows how."
    )
    for expected in ("ImageSets/Context/train.txt", "human_parts/<id>.mat", "PASCAL_MT.tgz"):
        assert expected in message
    root, _ = pascal
    moved = root / "PASCAL_MT" / "sal_distill" / f"{VAL_IDS[0]}.png"
    moved.rename(moved.with_suffix(".bak"))
    try:
        with pytest.raises(FileNotFoundError, match=rf"sal_distill/{VAL_IDS[0]}\.png is missing"):
            PASCALContext(root, split="val")
    finally:
        moved.with_suffix(".bak").rename(moved)
