"""The paper's data sets as benchmarks (nyuv2, pascal_context, cityscapes, celeba), on fixtures.

Each fixture is a few tiny samples in the data set's real on-disk layout. The tests drive the
benchmarks only through the calls a trainer makes (load, batches, make_model, losses,
evaluate), and check losses and metrics against float64 references written here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _dense_files import write_jpeg, write_label_map, write_part_annotation, write_png
from torch.nn import functional

import taskprio
from taskprio.data import (
    IGNORE_INDEX,
    DenseTaskSpec,
    DiskSplit,
    TensorMultiTaskDataset,
    available_benchmarks,
    balanced_bce,
    dense_cross_entropy,
    dense_task,
    depth_l1,
    edge_bce,
    get_benchmark,
    normals_l1,
)
from taskprio.nn import active_task, task_norms

DENSE = ("celeba", "cityscapes", "nyuv2", "pascal_context")
# Tiny models and images: every test trains or evaluates in a fraction of a second.
SMALL = {
    "nyuv2": {"width": 2, "head_hidden": 4, "image_size": (16, 24), "num_workers": 0},
    "pascal_context": {"width": 2, "head_hidden": 4, "image_size": (16, 16), "num_workers": 0},
    "cityscapes": {"width": 2, "head_hidden": 4, "image_size": (32, 64), "num_workers": 0},
    "celeba": {"width": 2, "image_size": (16, 16), "num_workers": 0},
}
NYU_TRAIN, NYU_VAL = ["0003", "0001", "0007", "0004", "0009"], ["0002", "0005", "0006"]
PASCAL_TRAIN, PASCAL_VAL = ["2008_000002", "2008_000008", "2008_000010"], ["2008_000026"]
CELEBA_FILES = [f"{i:06d}.jpg" for i in range(1, 8)]
CELEBA_PARTITION = [0, 0, 0, 0, 1, 1, 2]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny convs run faster on one thread, and far faster when other processes share the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- fixtures in the real layouts ----------------------------------------------------------


def _unit_normals(rng, height, width):
    vectors = rng.normal(size=(height, width, 3)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=2, keepdims=True)


def _write_nyuv2(root):
    """MTI-Net's NYUD_MT: sample 0001 has no semseg label at all, every depth map a hole."""
    height, width = 16, 24
    for i, sample_id in enumerate(NYU_TRAIN + NYU_VAL):
        rng = np.random.default_rng(i)
        pixels = rng.integers(0, 256, size=(height, width, 3)).astype(np.uint8)
        write_jpeg(root / "images" / f"{sample_id}.jpg", pixels)
        segmentation = rng.integers(0, 41, size=(height, width)).astype(np.uint8)
        if sample_id == "0001":
            segmentation[:] = 0  # unlabelled everywhere
        write_png(root / "segmentation" / f"{sample_id}.png", segmentation)
        depth = rng.uniform(0.5, 10, size=(height, width)).astype(np.float32)
        depth[:, :3] = 0
        normals = _unit_normals(rng, height, width)
        normals[:2] = 0
        edge = (rng.uniform(size=(height, width)) < 0.2).astype(np.float32)
        for folder, array in (("depth", depth), ("normals", normals), ("edge", edge)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            np.save(root / folder / f"{sample_id}.npy", array)
    (root / "gt_sets").mkdir(parents=True)
    (root / "gt_sets" / "train.txt").write_text("\n".join(NYU_TRAIN) + "\n")
    (root / "gt_sets" / "val.txt").write_text("\n".join(NYU_VAL) + "\n")


def _write_pascal(root):
    """MTI-Net's PASCAL_MT; of the train images, only the first has a person with parts."""
    palette = np.random.default_rng(0).integers(0, 256, size=(256, 3))
    height, width = 12, 16
    for i, sample_id in enumerate(PASCAL_TRAIN + PASCAL_VAL):
        rng = np.random.default_rng(i)
        pixels = rng.integers(0, 256, size=(height, width, 3)).astype(np.uint8)
        write_jpeg(root / "JPEGImages" / f"{sample_id}.jpg", pixels)
        semseg = rng.integers(0, 21, size=(height, width)).astype(np.uint8)
        semseg[0] = 255
        write_png(root / "semseg" / "VOC12" / f"{sample_id}.png", semseg, palette=palette)
        label_map = np.full((height, width), 397, dtype=np.uint16)  # table: has normals
        label_map[:, width // 2 :] = 2  # aeroplane: no normals
        write_label_map(root / "pascal-context" / "trainval" / f"{sample_id}.mat", label_map)
        saliency = rng.integers(0, 256, size=(height, width)).astype(np.uint8)
        write_png(root / "sal_distill" / f"{sample_id}.png", saliency)
        normals = rng.integers(0, 256, size=(height, width, 3)).astype(np.uint8)
        normals[..., 2] = 255
        write_png(root / "normals_distill" / f"{sample_id}.png", normals)
        person, head = np.zeros((height, width), np.uint8), np.zeros((height, width), np.uint8)
        person[2:10, 3:9], head[2:4, 4:7] = 1, 1
        has_person = sample_id in (PASCAL_TRAIN[0], *PASCAL_VAL)
        objects = [("person", 15, person, {"head": head})] if has_person else []
        write_part_annotation(root / "human_parts" / f"{sample_id}.mat", sample_id, objects)
    sets = root / "ImageSets" / "Context"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("\n".join(PASCAL_TRAIN) + "\n")
    (sets / "val.txt").write_text("\n".join(PASCAL_VAL) + "\n")


def _write_cityscapes(root, counts=(5, 3)):
    """MTAN's cityscapes2: sample i's depth is i + 1 (0 on the first rows), labels 0..6 or -1."""
    height, width = 32, 64
    for split, count in zip(("train", "val"), counts, strict=True):
        for i in range(count):
            rng = np.random.default_rng(100 * len(split) + i)
            labels = rng.integers(-1, 7, size=(height, width)).astype(np.float32)
            depth = np.full((height, width, 1), i + 1.0, dtype=np.float32)
            depth[:4] = 0
            arrays = {
                "image": rng.uniform(size=(height, width, 3)).astype(np.float32),
                "label_7": labels,
                "depth": depth,
            }
            for folder, array in arrays.items():
                (root / split / folder).mkdir(parents=True, exist_ok=True)
                np.save(root / split / folder / f"{i}.npy", array)


def _write_celeba(root):
    """img_align_celeba/*.jpg, list_attr_celeba.txt, list_eval_partition.txt."""
    from test_celeba import ATTRIBUTES  # the 40 names, as the real file lists them

    values = np.where(np.random.default_rng(0).uniform(size=(len(CELEBA_FILES), 40)) < 0.4, 1, -1)
    for i, name in enumerate(CELEBA_FILES):
        pixels = np.full((10, 8, 3), 30 * i, dtype=np.uint8)
        write_jpeg(root / "img_align_celeba" / name, pixels)
    lines = [str(len(CELEBA_FILES)), " ".join(ATTRIBUTES)]
    lines += [f"{name} " + " ".join(f"{v:2d}" for v in row) for name, row in
              zip(CELEBA_FILES, values, strict=True)]  # fmt: skip
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text(
        "".join(f"{name} {p}\n" for name, p in zip(CELEBA_FILES, CELEBA_PARTITION, strict=True))
    )
    return values


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """One data root holding all four data sets in their folders (nyuv2 one level down)."""
    root = tmp_path_factory.mktemp("data")
    _write_nyuv2(root / "nyuv2" / "NYUD_MT")
    _write_pascal(root / "pascal_context" / "PASCAL_MT")
    _write_cityscapes(root / "cityscapes")
    _write_celeba(root / "celeba")
    return root


def _benchmark(name, **options):
    return get_benchmark(name, **{**SMALL[name], **options})


# --- registry and specs ----------------------------------------------------------------------


def test_registered_with_the_papers_tasks_and_defaults():
    from taskprio.metrics import (
        DepthMetrics,
        EdgeMetrics,
        NormalMetrics,
        SaliencyMetrics,
        SegmentationMetrics,
    )

    assert set(DENSE) <= set(available_benchmarks())
    nyuv2, pascal = get_benchmark("nyuv2"), get_benchmark("pascal_context")
    cityscapes, celeba = get_benchmark("cityscapes"), get_benchmark("celeba")
    assert nyuv2.task_names == ("semseg", "depth", "normals", "edge")
    assert [s.is_auxiliary for s in nyuv2.tasks] == [False, False, False, True]
    assert pascal.task_names == ("semseg", "human_parts", "sal", "normals", "edge")
    assert [s.is_auxiliary for s in pascal.tasks] == [False] * 4 + [True]
    assert cityscapes.task_names == ("semseg", "depth")
    assert len(celeba.tasks) == 40 and {s.kind for s in celeba.tasks} == {"binary"}
    # The metric Δm counts comes first (MTI-Net: rmse, mIoU, mean; Cityscapes: all four).
    assert [s.metrics[0][0] for s in nyuv2.tasks] == ["mIoU", "rmse", "mean", "F"]
    assert [s.metrics[0][0] for s in pascal.tasks] == ["mIoU", "mIoU", "mIoU", "mean", "F"]
    assert nyuv2.task("depth").metrics == (("rmse", False), ("abs_rel", False))
    assert cityscapes.task("depth").metrics == (("abs_err", False), ("rel_err", False))
    assert pascal.task("sal").metrics == (("mIoU", True), ("maxF", True))
    assert [s.num_outputs for s in nyuv2.tasks] == [40, 1, 3, 1]
    assert [s.num_outputs for s in pascal.tasks] == [21, 7, 1, 3, 1]
    # Every metric name and direction is the one the taskprio.metrics class reports.
    classes = {
        "segmentation": SegmentationMetrics,
        "depth": DepthMetrics,
        "normals": NormalMetrics,
        "saliency": SaliencyMetrics,
        "edge": EdgeMetrics,
    }
    for benchmark in (nyuv2, pascal, cityscapes):
        for spec in benchmark.tasks:
            assert isinstance(spec, DenseTaskSpec) and spec.kind == "dense"
            for metric, higher_is_better in spec.metrics:
                assert classes[spec.role].directions[metric] is higher_is_better
    for benchmark in (nyuv2, pascal, cityscapes):
        assert (benchmark.lr, benchmark.batch_size) == (1e-4, 8)  # MTI-Net / MTAN
    assert (nyuv2.epochs, pascal.epochs, cityscapes.epochs) == (100, 100, 200)
    assert (celeba.lr, celeba.batch_size, celeba.epochs) == (3e-4, 256, 15)  # FAMO
    assert nyuv2.input_shape == (3, 480, 640) and pascal.input_shape == (3, 512, 512)
    assert cityscapes.input_shape == (3, 128, 256) and cityscapes.backbone == "segnet"
    assert celeba.input_shape == (3, 64, 64)
    assert dict(nyuv2.manual_weights) == {"semseg": 1, "depth": 1, "normals": 10, "edge": 50}
    assert dict(pascal.manual_weights)["human_parts"] == 2


def test_options_are_checked_and_shape_the_specs():
    assert get_benchmark("nyuv2", image_size=[240, 320]).input_shape == (3, 240, 320)
    assert get_benchmark("cityscapes", num_classes=19).task("semseg").num_outputs == 19
    with pytest.raises(ValueError, match="`num_classes` must be one of"):
        get_benchmark("cityscapes", num_classes=8)
    with pytest.raises(ValueError, match="`backbone` must be one of"):
        get_benchmark("nyuv2", backbone="vgg")
    with pytest.raises(ValueError, match="`num_workers`"):
        get_benchmark("celeba", num_workers=-1)
    with pytest.raises(ValueError, match="`scales`"):
        get_benchmark("nyuv2", scales=(0.5,))
    with pytest.raises(ValueError, match="`metrics` must name some of"):
        dense_task("depth", "depth", 1, metrics=["mIoU"])
    with pytest.raises(ValueError, match="wrong direction"):
        DenseTaskSpec("d", "dense", 1, depth_l1, (("rmse", True),), role="depth")
    with pytest.raises(ValueError, match="DenseTaskSpec"):
        get_benchmark("nyuv2", tasks=(taskprio.data.regression_task("depth"),))


@pytest.mark.parametrize(
    ("name", "layout_words"),
    [
        ("nyuv2", "gt_sets"),
        ("pascal_context", "ImageSets/Context"),
        ("cityscapes", "label_7"),
        ("celeba", "list_attr_celeba.txt"),
    ],
)
def test_missing_data_gives_the_loaders_layout_error(tmp_path, name, layout_words):
    with pytest.raises(FileNotFoundError) as error:
        get_benchmark(name).load("train", tmp_path)
    message = str(error.value)
    assert str(tmp_path / name) in message and "does not exist" in message
    assert f"taskprio data {name}" in message and layout_words in message


# --- the trainer's calls ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "use_task_norms"),
    [
        ("nyuv2", False),
        ("nyuv2", True),
        ("pascal_context", False),
        ("cityscapes", True),
        ("celeba", False),
    ],
)
def test_trains_and_evaluates_through_the_trainers_calls(data_root, name, use_task_norms):
    torch.manual_seed(0)
    benchmark = _benchmark(name)
    train, val = benchmark.load("train", data_root), benchmark.load("val", data_root)
    assert isinstance(train, DiskSplit) and train.to("cpu") is train
    assert train.tasks == benchmark.task_names
    model = benchmark.make_model(benchmark.task_names, task_norms=use_task_norms)
    assert bool(task_norms(model)) == use_task_norms
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    step = taskprio.MultiTaskStep(model, optimizer, benchmark.task_names)
    before = [p.detach().clone() for p in model.parameters()]
    generator = torch.Generator().manual_seed(0)
    batches = benchmark.batches(train, 2, shuffle=True, generator=generator)
    for _, (x, labels, masks) in zip(range(2), batches, strict=False):
        assert x.shape == (len(x), *benchmark.input_shape)
        if use_task_norms:

            def task_loss(task, x=x, labels=labels, masks=masks):
                with active_task(model, task):
                    output = model.forward_task(x, task)
                return benchmark.losses({task: output}, labels, masks).get(task)

            record = step(task_loss)
        else:
            outputs = model(x)
            for spec in benchmark.tasks:
                assert outputs[spec.name].shape[:2] == (len(x), spec.num_outputs)
            record = step(benchmark.losses(outputs, labels, masks))
        assert record.losses and all(math.isfinite(v) for v in record.losses.values())
    after = list(model.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
    results = benchmark.evaluate(model, val, tasks=benchmark.task_names)
    assert list(results) == list(benchmark.task_names)
    for spec in benchmark.tasks:
        assert list(results[spec.name]) == [metric for metric, _ in spec.metrics]
        assert all(math.isfinite(v) for v in results[spec.name].values()), spec.name
    assert model.training


def test_single_task_model_is_evaluated_on_its_task_only(data_root):
    benchmark = _benchmark("cityscapes")
    model = benchmark.make_model(["depth"])
    results = benchmark.evaluate(model, benchmark.load("test", data_root), 2, tasks=["depth"])
    assert list(results) == ["depth"] and list(results["depth"]) == ["abs_err", "rel_err"]


def test_test_split_is_the_published_val_split(data_root):
    nyuv2 = _benchmark("nyuv2")
    assert nyuv2.load("test", data_root).source.ids == NYU_VAL
    assert not nyuv2.load("val", data_root).augment and nyuv2.load("train", data_root).augment
    celeba = _benchmark("celeba")
    assert celeba.load("test", data_root).source.ids == ["000007.jpg"]  # its own test split
    with pytest.raises(ValueError, match="`split` must be one of"):
        nyuv2.load("trainval", data_root)


def test_splits_belong_to_their_benchmark(data_root):
    in_memory = TensorMultiTaskDataset(torch.zeros(2, 3), {"y": torch.zeros(2)})
    with pytest.raises(TypeError, match="DiskSplit"):
        next(_benchmark("cityscapes").batches(in_memory, 2, shuffle=False, generator=None))
    disk = _benchmark("cityscapes").load("val", data_root)
    with pytest.raises(TypeError, match="TensorMultiTaskDataset"):
        next(get_benchmark("qm9").batches(disk, 2, shuffle=False, generator=None))


# --- batches ---------------------------------------------------------------------------------


def _ids_of(batches):
    """The sample index of each yielded depth map (cityscapes: sample i has depth i + 1)."""
    return [[int(depth.max()) - 1 for depth in labels["depth"]] for _, labels, _ in batches]


def test_batches_follow_randperm_and_skip_reads_only_the_tail(data_root, monkeypatch):
    benchmark = _benchmark("cityscapes", augment=False)
    train = benchmark.load("train", data_root)
    epoch = list(
        benchmark.batches(train, 2, shuffle=True, generator=torch.Generator().manual_seed(3))
    )
    assert [len(x) for x, _, _ in epoch] == [2, 2, 1]
    # The order iterate_masked_batches draws from the same generator state.
    order = torch.randperm(5, generator=torch.Generator().manual_seed(3)).tolist()
    assert _ids_of(epoch) == [order[0:2], order[2:4], order[4:5]]
    unshuffled = benchmark.batches(train, 2, shuffle=False, generator=None)
    assert _ids_of(unshuffled) == [[0, 1], [2, 3], [4]]
    reads = []
    original = train.source.load
    monkeypatch.setattr(train.source, "load", lambda i: reads.append(i) or original(i))
    tail = list(
        benchmark.batches(
            train, 2, shuffle=True, generator=torch.Generator().manual_seed(3), skip=1
        )
    )
    assert sorted(reads) == sorted(order[2:])  # skipped samples are never read
    assert len(tail) == 2
    for (x, labels, masks), (x_full, labels_full, masks_full) in zip(tail, epoch[1:], strict=True):
        assert torch.equal(x, x_full)
        assert all(torch.equal(labels[t], labels_full[t]) for t in labels)
        assert all(torch.equal(masks[t], masks_full[t]) for t in masks)
    assert list(benchmark.batches(train, 2, shuffle=False, generator=None, skip=3)) == []


def _assert_same_batches(first, second):
    assert len(first) == len(second)
    for (x, labels, masks), (x2, labels2, masks2) in zip(first, second, strict=True):
        torch.testing.assert_close(x, x2, rtol=0, atol=0)
        for task in labels:
            torch.testing.assert_close(labels[task], labels2[task], rtol=0, atol=0)
            assert torch.equal(masks[task], masks2[task])


def test_augmented_epochs_are_reproducible_under_skip_and_workers(data_root):
    benchmark = _benchmark("nyuv2")
    train = benchmark.load("train", data_root)
    assert train.augment

    def epoch(split, skip=0):
        generator = torch.Generator().manual_seed(7)
        return list(benchmark.batches(split, 2, shuffle=True, generator=generator, skip=skip))

    full = epoch(train)
    _assert_same_batches(epoch(train, skip=1), full[1:])
    in_worker = _benchmark("nyuv2", num_workers=1).load("train", data_root)
    _assert_same_batches(epoch(in_worker), full)
    # The augmentation changes from one epoch to the next, and differs from the plain images.
    generator = torch.Generator().manual_seed(7)
    first = next(benchmark.batches(train, 5, shuffle=False, generator=generator))[0]
    second = next(benchmark.batches(train, 5, shuffle=False, generator=generator))[0]
    plain_benchmark = _benchmark("nyuv2", augment=False)
    plain_split = plain_benchmark.load("train", data_root)
    plain = next(plain_benchmark.batches(plain_split, 5, shuffle=False, generator=None))[0]
    assert not torch.equal(first, second)
    assert not torch.equal(first, plain)


# --- partial labels --------------------------------------------------------------------------


def test_masks_mark_samples_without_labels(data_root):
    nyuv2 = _benchmark("nyuv2", augment=False)
    _, labels, masks = next(
        nyuv2.batches(nyuv2.load("train", data_root), 5, shuffle=False, generator=None)
    )
    assert masks["semseg"].tolist() == [True, False, True, True, True]  # 0001: no semseg
    assert (labels["semseg"][1] == IGNORE_INDEX).all()
    assert all(masks[task].all() for task in ("depth", "normals", "edge"))
    pascal = _benchmark("pascal_context")
    _, labels, masks = next(
        pascal.batches(pascal.load("train", data_root), 3, shuffle=False, generator=None)
    )
    assert masks["human_parts"].tolist() == [True, False, False]  # only one image has a person
    assert masks["semseg"].all() and masks["sal"].all()
    # A batch with no person leaves human_parts out of the step.
    _, labels, masks = next(
        pascal.batches(pascal.load("train", data_root), 2, shuffle=False, generator=None, skip=1)
    )
    outputs = pascal.make_model()(torch.zeros(1, 3, 16, 16).expand(len(labels["sal"]), -1, -1, -1))
    losses = pascal.losses(outputs, labels, masks)
    assert "human_parts" not in losses and set(losses) == set(pascal.task_names) - {"human_parts"}
    unlabelled = pascal.losses(outputs, labels, masks, skip_unlabeled=False)["human_parts"]
    assert unlabelled.item() == 0.0
    unlabelled.backward()


def _reference_cross_entropy(logits, target, mask):
    """float64 loops: mean over labelled pixels of labelled samples of -log softmax."""
    total, count = 0.0, 0
    batch, _, height, width = logits.shape
    for b in range(batch):
        if not mask[b]:
            continue
        for i in range(height):
            for j in range(width):
                label = int(target[b, i, j])
                if label == IGNORE_INDEX:
                    continue
                scores = logits[b, :, i, j].double()
                total += float(torch.logsumexp(scores, 0) - scores[label])
                count += 1
    return total / max(count, 1)


def test_losses_match_float64_references():
    generator = torch.Generator().manual_seed(0)
    shape = (3, 1, 4, 5)
    mask = torch.tensor([True, False, True])

    logits = torch.randn(3, 6, 4, 5, generator=generator)
    target = torch.randint(0, 6, (3, 4, 5), generator=generator)
    target[0, :2] = IGNORE_INDEX
    torch.testing.assert_close(
        dense_cross_entropy(logits, target, mask).double(),
        torch.tensor(_reference_cross_entropy(logits, target, mask), dtype=torch.float64),
    )

    prediction = torch.randn(shape, generator=generator)
    depth = torch.rand(shape, generator=generator) + 0.5
    depth[0, 0, 0] = 0.0  # unknown
    depth[1] = float("nan")  # masked sample: must not leak
    valid = (depth > 0) & mask.view(-1, 1, 1, 1)
    want = (prediction.double() - depth.double())[valid].abs().mean()
    torch.testing.assert_close(depth_l1(prediction, depth, mask).double(), want)

    raw = torch.randn(3, 3, 4, 5, generator=generator)
    normals = functional.normalize(torch.randn(3, 3, 4, 5, generator=generator), dim=1)
    normals[2, :, 1:3] = 0.0  # unknown
    known = (normals != 0).any(dim=1) & mask.view(-1, 1, 1)  # [B, H, W]
    unit = raw.double() / raw.double().norm(dim=1, keepdim=True)
    want = (unit - normals.double()).abs().movedim(1, -1)[known].mean()
    torch.testing.assert_close(normals_l1(raw, normals, mask).double(), want)

    logits = torch.randn(shape, generator=generator)
    edges = (torch.rand(shape, generator=generator) < 0.3).float()
    kept = mask.view(-1, 1, 1, 1).expand(shape)
    y, x = edges.double()[kept], logits.double()[kept]
    weight = 1 - y.mean()  # the share of negatives among the labelled pixels
    for got, w in (
        (balanced_bce(logits, edges, mask), weight),
        (edge_bce(logits, edges, mask), 0.95),
    ):
        p = torch.sigmoid(x)
        want = -(w * y * torch.log(p) + (1 - w) * (1 - y) * torch.log(1 - p)).mean()
        torch.testing.assert_close(got.double(), want)


@pytest.mark.parametrize("loss", [dense_cross_entropy, depth_l1, normals_l1, balanced_bce])
def test_losses_without_any_label_are_an_exact_zero_with_zero_gradient(loss):
    channels = {dense_cross_entropy: 4, normals_l1: 3}.get(loss, 1)
    prediction = torch.randn(2, channels, 3, 3, requires_grad=True)
    if loss is dense_cross_entropy:
        target = torch.full((2, 3, 3), IGNORE_INDEX)
    else:
        target = torch.ones(2, channels, 3, 3)
    value = loss(prediction, target, torch.tensor([False, False]))
    value.backward()
    assert value.item() == 0.0 and torch.equal(prediction.grad, torch.zeros_like(prediction))


# --- evaluation ------------------------------------------------------------------------------


def test_evaluate_pools_over_the_whole_split(data_root):
    benchmark = _benchmark("cityscapes", backbone="resnet18_dilated")
    torch.manual_seed(0)
    model = benchmark.make_model()
    val = benchmark.load("val", data_root)
    one_by_one = benchmark.evaluate(model, val, 1)
    all_at_once = benchmark.evaluate(model, val, 3)
    for task, metrics in one_by_one.items():
        for name, value in metrics.items():
            assert value == pytest.approx(all_at_once[task][name], rel=1e-5), (task, name)
    # float64 references over the split: one confusion matrix, pooled absolute errors.
    model.eval()
    x, labels, _ = next(benchmark.batches(val, 3, shuffle=False, generator=None))
    with torch.no_grad():
        outputs = model(x)
    predicted, target = outputs["semseg"].argmax(dim=1), labels["semseg"]
    kept = target != IGNORE_INDEX
    confusion = torch.zeros(7, 7, dtype=torch.float64)
    for t, p in zip(target[kept].tolist(), predicted[kept].tolist(), strict=True):
        confusion[t, p] += 1
    hits = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - hits
    present = union > 0
    assert one_by_one["semseg"]["mIoU"] == pytest.approx(
        float((hits[present] / union[present]).mean()) * 100, rel=1e-5
    )
    assert one_by_one["semseg"]["pixel_acc"] == pytest.approx(
        float(hits.sum() / confusion.sum()) * 100, rel=1e-5
    )
    depth, known = labels["depth"].double(), labels["depth"] > 0
    errors = (outputs["depth"].double() - depth)[known].abs()
    assert one_by_one["depth"]["abs_err"] == pytest.approx(float(errors.mean()), rel=1e-5)
    assert one_by_one["depth"]["rel_err"] == pytest.approx(
        float((errors / depth[known]).mean()), rel=1e-5
    )


def test_celeba_metrics_are_per_attribute_accuracy_and_f1(data_root):
    benchmark = _benchmark("celeba")
    torch.manual_seed(0)
    model = benchmark.make_model(task_norms=True)
    val = benchmark.load("val", data_root)
    results = benchmark.evaluate(model, val, 1)
    model.eval()
    x, labels, masks = next(benchmark.batches(val, 2, shuffle=False, generator=None))
    assert all(m.all() for m in masks.values()) and labels["Smiling"].shape == (2,)
    for task in ("Smiling", "Young"):
        with torch.no_grad(), active_task(model, task):
            predicted = (model.forward_task(x, task)[:, 0] > 0).long()
        assert results[task]["acc"] == pytest.approx(
            float((predicted == labels[task]).double().mean())
        )
        assert 0.0 <= results[task]["f1"] <= 1.0
