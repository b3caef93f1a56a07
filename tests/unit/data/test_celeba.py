"""CelebA on a tiny fixture in the official layout (img_align_celeba/ and the two lists)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _dense_files import write_jpeg

from taskprio.data import CelebA

# The 40 names of list_attr_celeba.txt, in order.
ATTRIBUTES = [
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup",
    "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns",
    "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
]  # fmt: skip
FILES = ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg", "000005.jpg"]
PARTITION = [0, 0, 1, 2, 0]
HEIGHT, WIDTH = 10, 8  # 218x178 in the real data
RAW = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def _write(root, *, official_folders=False):
    """img_align_celeba/*.jpg, list_attr_celeba.txt, list_eval_partition.txt.

    With `official_folders`, the release's Img/, Anno/ and Eval/ folders.
    """
    values = np.where(np.random.default_rng(0).uniform(size=(len(FILES), 40)) < 0.3, 1, -1)
    image_dir = root / "Img" if official_folders else root
    for i, name in enumerate(FILES):
        pixels = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
        pixels[:, : WIDTH // 2] = 40 * i  # the left half encodes the index; the right is black
        write_jpeg(image_dir / "img_align_celeba" / name, pixels, quality=100)
    # Like the real file: the count, the names, then right-aligned values ("-1  1  1 ...").
    lines = [str(len(FILES)), " ".join(ATTRIBUTES) + " "]
    for name, row in zip(FILES, values, strict=True):
        lines.append(f"{name} " + " ".join(f"{v:2d}" for v in row))
    anno = root / "Anno" if official_folders else root
    anno.mkdir(parents=True, exist_ok=True)
    (anno / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    evaluation = root / "Eval" if official_folders else root
    evaluation.mkdir(parents=True, exist_ok=True)
    (evaluation / "list_eval_partition.txt").write_text(
        "".join(f"{name} {p}\n" for name, p in zip(FILES, PARTITION, strict=True))
    )
    return values


def test_attributes_are_40_binary_tasks(tmp_path):
    values = _write(tmp_path)
    data = CelebA(tmp_path, **RAW)
    assert data.attribute_names == tuple(ATTRIBUTES) and data.tasks == tuple(ATTRIBUTES)
    assert data.ids == ["000001.jpg", "000002.jpg", "000005.jpg"]
    image, targets = data[2]
    assert image.shape == (3, HEIGHT, WIDTH) and image.dtype == torch.float32
    assert (image[:, :, : WIDTH // 2] * 255 - 160).abs().max() <= 2  # 000005.jpg
    assert list(targets) == ATTRIBUTES
    for k, name in enumerate(ATTRIBUTES):
        assert targets[name].dtype == torch.int64 and targets[name].shape == ()
        assert int(targets[name]) == int(values[4, k] == 1)
    loader = torch.utils.data.DataLoader(data, batch_size=3)
    images, batch = next(iter(loader))
    assert images.shape == (3, 3, HEIGHT, WIDTH) and batch["Smiling"].shape == (3,)


@pytest.mark.parametrize(("split", "ids"), [("val", ["000003.jpg"]), ("test", ["000004.jpg"])])
def test_official_partition(tmp_path, split, ids):
    _write(tmp_path)
    assert CelebA(tmp_path, split=split).ids == ids
    assert len(CelebA(tmp_path, split="all")) == 5


def test_attribute_subset_and_official_folders(tmp_path):
    values = _write(tmp_path / "celeba", official_folders=True)  # torchvision's nesting too
    data = CelebA(tmp_path, split="test", attributes=("Young", "Male"))
    _, targets = data[0]
    assert list(targets) == ["Young", "Male"]
    assert int(targets["Young"]) == int(values[3, 39] == 1)
    assert int(targets["Male"]) == int(values[3, 20] == 1)
    with pytest.raises(ValueError, match="`tasks`"):
        CelebA(tmp_path, attributes=("Happy",))
    with pytest.raises(ValueError, match="`split`"):
        CelebA(tmp_path, split="valid")


def test_flip_and_resize(tmp_path):
    _write(tmp_path)
    plain, _ = CelebA(tmp_path, **RAW)[1]
    outcomes = set()
    data = CelebA(tmp_path, augment=True, generator=torch.Generator().manual_seed(0), **RAW)
    for _ in range(8):
        image, _ = data[1]
        assert torch.equal(image, plain) or torch.equal(image, plain.flip(-1))
        outcomes.add(torch.equal(image, plain))
    assert outcomes == {False, True}
    image, _ = CelebA(tmp_path, image_size=(6, 4))[0]
    assert image.shape == (3, 6, 4)


def test_damaged_annotations_are_reported(tmp_path):
    _write(tmp_path)
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text(path.read_text().replace("000003.jpg", "000003.jpg 1", 1))
    with pytest.raises(ValueError, match="one value per attribute"):
        CelebA(tmp_path)


def test_missing_data_names_the_place_and_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        CelebA(tmp_path / "celeba")
    message = str(error.value)
    assert message.startswith(
        f"CelebA not found at {tmp_path / 'celeba'}. Put it there or set data.root; "
        "`taskprio data celeba` shows how."
    )
    for expected in ("img_align_celeba/", "list_attr_celeba.txt", "list_eval_partition.txt"):
        assert expected in message
    _write(tmp_path)
    (tmp_path / "img_align_celeba" / "000002.jpg").unlink()
    data = CelebA(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"000002\.jpg is missing"):
        data[1]
