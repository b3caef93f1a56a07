"""The CSO paper's data sets as benchmarks: NYUD-v2, PASCAL-Context, Cityscapes and CelebA.

Each is a :class:`~taskprio.data.Benchmark` whose splits stay on disk: :meth:`load` gives a
:class:`~taskprio.data.DiskSplit`, :meth:`batches` reads one batch at a time (optionally in
worker processes) with the permutation semantics of
:func:`~taskprio.data.iterate_masked_batches`, and :meth:`evaluate` accumulates the
:mod:`taskprio.metrics` of every task over the whole split, unknown pixels left out.

Dense tasks are :class:`DenseTaskSpec` (kind ``"dense"``) with a *role* that fixes the loss
(:mod:`taskprio.data._dense_losses`), the metrics (the first is the one the paper's Δm
counts) and how unknown pixels are marked (:data:`DENSE_ROLES`):

- ``segmentation``: cross-entropy with ignore index 255; mIoU, pixel_acc, mean_acc (%).
- ``depth``: L1 over known depths; rmse, abs_rel, abs_err, rel_err.
- ``normals``: L1 on the L2-normalised prediction; mean and median angle (°), within_11.25,
  within_22.5, within_30 (%).
- ``saliency``: BCE balanced per batch; mIoU, maxF (%).
- ``edge``: BCE with positive weight 0.95; F (%), a fixed-threshold proxy of the MATLAB odsF.

Defaults follow the sources the paper builds on: MTI-Net for NYUD-v2 and PASCAL-Context (Adam,
lr 1e-4, batch 8, 100 epochs; edge an auxiliary task), MTAN/CAGrad for Cityscapes (SegNet,
Adam, lr 1e-4, batch 8, 200 epochs) and FAMO's CelebA setup (64x64 images, a small conv net,
Adam, lr 3e-4, batch 256, 15 epochs). The trainer's configuration may override any of them;
its optimizer's weight decay and learning-rate schedule (MTI-Net: 1e-4, poly) are its own.
Models train from scratch: no pretrained weights are available offline.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from torch import Tensor, nn

from taskprio.data._benchmark import (
    BENCHMARKS,
    Benchmark,
    BenchmarkSplit,
    LossFunction,
    TaskSpec,
    _batch_sums,
    _metrics,
    _outputs,
    binary_task,
)
from taskprio.data._celeba import CelebA
from taskprio.data._cityscapes import NUM_CLASSES_CHOICES, Cityscapes
from taskprio.data._dense import DEFAULT_SCALES, check_image_options
from taskprio.data._dense_losses import (
    balanced_bce,
    dense_cross_entropy,
    depth_l1,
    edge_bce,
    normals_l1,
)
from taskprio.data._disk_split import Batch, DiskSplit, LabelKind
from taskprio.data._nyuv2 import NYUv2
from taskprio.data._pascal_context import PASCALContext
from taskprio.data._tensor_dataset import Split
from taskprio.models._heads import BACKBONES, DenseMultiTaskModel
from taskprio.nn import task_norms

if TYPE_CHECKING:  # torchmetrics (and the scipy and matplotlib it loads) only when evaluating.
    from taskprio.metrics import TaskMetric

DenseRole = Literal["segmentation", "depth", "normals", "saliency", "edge"]


@dataclass(frozen=True)
class DenseRoleInfo:
    """What a dense task's role fixes: its loss, its metrics, how its labels are marked.

    Attributes:
        loss: ``(prediction [B, C, H, W], target, mask [B]) -> scalar``.
        metrics: every metric the role's :mod:`taskprio.metrics` class reports, with its
            direction; the first is the one MTI-Net's Δm counts.
        labels: how a target marks unknown pixels (for the per-sample masks of a batch).
        probabilities: the metric takes sigmoid probabilities rather than raw outputs.
    """

    loss: LossFunction
    metrics: tuple[tuple[str, bool], ...]
    labels: LabelKind
    probabilities: bool = False


DENSE_ROLES: dict[DenseRole, DenseRoleInfo] = {
    "segmentation": DenseRoleInfo(
        dense_cross_entropy,
        (("mIoU", True), ("pixel_acc", True), ("mean_acc", True)),
        "label",
    ),
    "depth": DenseRoleInfo(
        depth_l1,
        (("rmse", False), ("abs_rel", False), ("abs_err", False), ("rel_err", False)),
        "depth",
    ),
    "normals": DenseRoleInfo(
        normals_l1,
        (
            ("mean", False),
            ("median", False),
            ("within_11.25", True),
            ("within_22.5", True),
            ("within_30", True),
        ),
        "normals",
    ),
    "saliency": DenseRoleInfo(balanced_bce, (("mIoU", True), ("maxF", True)), "binary", True),
    "edge": DenseRoleInfo(edge_bce, (("F", True),), "binary", True),
}
"""Role → loss, metrics and label convention of a dense task."""


@dataclass(frozen=True)
class DenseTaskSpec(TaskSpec):
    """A per-pixel task: a :class:`~taskprio.data.TaskSpec` of kind ``"dense"`` with a role.

    Build it with :func:`dense_task`. Its loss and metrics come from :data:`DENSE_ROLES`; its
    metrics are computed by the benchmark's :meth:`DenseBenchmark.evaluate`.

    Attributes:
        role: ``"segmentation"``, ``"depth"``, ``"normals"``, ``"saliency"`` or ``"edge"``.
    """

    role: DenseRole = "segmentation"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kind != "dense":
            raise ValueError(f"a DenseTaskSpec has kind 'dense'; got {self.kind!r}.")
        if self.role not in DENSE_ROLES:
            raise ValueError(f"`role` must be one of {list(DENSE_ROLES)}; got {self.role!r}.")
        known = dict(DENSE_ROLES[self.role].metrics)
        wrong = [(name, up) for name, up in self.metrics if known.get(name) is not up]
        if wrong:
            raise ValueError(
                f"`metrics` {wrong} of the {self.role} task {self.name!r} are unknown or have "
                f"the wrong direction; the role reports {list(known.items())}."
            )


def dense_task(
    name: str,
    role: DenseRole,
    num_outputs: int,
    *,
    metrics: Sequence[str] | None = None,
    is_auxiliary: bool = False,
) -> DenseTaskSpec:
    """A dense task with its role's loss and (a selection of) its role's metrics.

    Args:
        name: the task's key in the labels and the model's outputs.
        role: a key of :data:`DENSE_ROLES`.
        num_outputs: output channels (classes for segmentation, 1 for depth, 3 for normals).
        metrics: the metric names to report, in order (the first is the main one); all of the
            role's when None.
        is_auxiliary: trained but not counted in Δm (edge detection in the paper).

    >>> dense_task("depth", "depth", 1, metrics=["rmse", "abs_rel"])
    ... # doctest: +NORMALIZE_WHITESPACE
    DenseTaskSpec(name='depth', kind='dense', num_outputs=1,
                  metrics=(('rmse', False), ('abs_rel', False)), role='depth')
    """
    if role not in DENSE_ROLES:
        raise ValueError(f"`role` must be one of {list(DENSE_ROLES)}; got {role!r}.")
    info = DENSE_ROLES[role]
    directions = dict(info.metrics)
    names = [metric for metric, _ in info.metrics] if metrics is None else list(metrics)
    unknown = [metric for metric in names if metric not in directions]
    if unknown or not names:
        raise ValueError(
            f"`metrics` must name some of {list(directions)} for a {role} task; got {names}."
        )
    return DenseTaskSpec(
        name,
        "dense",
        num_outputs,
        info.loss,
        tuple((metric, directions[metric]) for metric in names),
        is_auxiliary,
        role,
    )


def _make_metric(spec: DenseTaskSpec, device: torch.device) -> TaskMetric:
    """A fresh :mod:`taskprio.metrics` accumulator for ``spec`` on ``device``.

    Imported here, on first use: torchmetrics loads scipy and matplotlib, which
    ``import taskprio`` must not.
    """
    from taskprio.metrics import (
        DepthMetrics,
        EdgeMetrics,
        NormalMetrics,
        SaliencyMetrics,
        SegmentationMetrics,
    )

    if spec.role == "segmentation":
        return SegmentationMetrics(num_classes=spec.num_outputs).to(device)
    factories: dict[str, type[DepthMetrics | NormalMetrics | SaliencyMetrics | EdgeMetrics]] = {
        "depth": DepthMetrics,
        "normals": NormalMetrics,
        "saliency": SaliencyMetrics,
        "edge": EdgeMetrics,
    }
    return factories[spec.role]().to(device)


# --- the benchmarks -----------------------------------------------------------------------


@dataclass(frozen=True)
class DiskBenchmark(Benchmark):
    """A benchmark whose splits are read from disk batch by batch (:class:`DiskSplit`).

    Subclasses implement :meth:`open` (the loader of one split) and :meth:`build_model`.

    Attributes:
        image_size: (height, width) every image is resized to; ``input_shape`` follows it.
        augment: augment the training split (random scale-crop and flip; CelebA: flip).
        num_workers: worker processes reading samples (0: read in the training process).
    """

    image_size: tuple[int, int] = (64, 64)
    augment: bool = False
    num_workers: int = 4
    # The split each requested split reads: MTI-Net, MTAN and the CSO paper report results on
    # the published val split, which therefore serves as the test split too.
    split_files: ClassVar[Mapping[str, str]] = {"train": "train", "val": "val", "test": "val"}

    def __post_init__(self) -> None:
        size, _ = check_image_options(self.image_size, (), (0, 0, 0), (1, 1, 1))
        assert size is not None
        object.__setattr__(self, "image_size", size)
        object.__setattr__(self, "input_shape", (3, *size))
        super().__post_init__()
        if self.num_workers < 0:
            raise ValueError(f"`num_workers` must be non-negative, but got {self.num_workers}.")

    def open(self, split: str, root: Path | None, *, augment: bool) -> DiskSplit:
        """The split ``split`` of the data set, read with its loader (see :meth:`load`)."""
        raise NotImplementedError

    def load(self, split: Split, root: Path | None = None) -> DiskSplit:
        """One split, read from ``<root>/<folder>`` sample by sample as its batches are drawn.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"`` (for NYUD-v2, PASCAL-Context and
                Cityscapes, ``"test"`` reads the published val split, as the papers report).
            root: the data root (default :func:`~taskprio.data.data_root`).

        Raises:
            FileNotFoundError: the data set is not there; the message gives the expected
                layout and where to get it.
        """
        if split not in self.split_files:
            raise ValueError(f"`split` must be one of {list(self.split_files)}; got {split!r}.")
        return self.open(self.split_files[split], root, augment=self.augment and split == "train")

    def batches(
        self,
        dataset: BenchmarkSplit,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None,
        skip: int = 0,
    ) -> Iterator[Batch]:
        """One epoch of CPU batches read from disk (:meth:`DiskSplit.batches`).

        The permutation is ``torch.randperm(len(dataset), generator=generator)``, as for the
        in-memory benchmarks; skipped batches are not read. Masks are per sample: False
        where the sample's target of that task has no labelled pixel.
        """
        return self._disk_split(dataset).batches(
            batch_size, shuffle=shuffle, generator=generator, skip=skip
        )

    def _disk_split(self, dataset: BenchmarkSplit) -> DiskSplit:
        if not isinstance(dataset, DiskSplit):
            raise TypeError(
                f"{self.name} reads its splits from disk; `dataset` must be the DiskSplit its "
                f"`load` returned, not a {type(dataset).__name__}."
            )
        return dataset

    def make_model(
        self, tasks: Sequence[str] | None = None, *, task_norms: bool = False
    ) -> nn.Module:
        """A fresh model for ``tasks`` (all by default), with task-specific trunk norms or not.

        Args:
            tasks: the task names to give a head, in output order; None: every task.
            task_norms: make the trunk's BatchNorms task-specific (the heads' norms are each
                used by one task already); ``forward`` then runs the trunk once per task.

        Returns:
            A :class:`~taskprio.models.DenseMultiTaskModel`: ``forward(x) -> {task: output}``
            and ``forward_task(x, task)``.
        """
        return self._build(self.select(tasks), task_norms=task_norms)

    def build_model(self, tasks: tuple[TaskSpec, ...]) -> nn.Module:
        """The benchmark's model with one head per task in ``tasks`` (shared norms)."""
        return self._build(tasks, task_norms=False)

    def _build(self, tasks: tuple[TaskSpec, ...], *, task_norms: bool) -> DenseMultiTaskModel:
        raise NotImplementedError

    def evaluate(
        self,
        model: nn.Module,
        dataset: BenchmarkSplit,
        batch_size: int | None = None,
        *,
        tasks: Sequence[str] | None = None,
    ) -> dict[str, dict[str, float]]:
        """Each task's metrics over the whole split, in eval mode, unknown pixels left out.

        Metrics accumulate over every batch of the split (one confusion matrix, pooled depth
        errors, one angle histogram …), then are computed once; batches are read as in
        :meth:`batches`, unshuffled, and moved to the model's device. A model with
        task-specific norms runs one forward per task. The model's mode is restored.

        Args:
            model: from :meth:`make_model`.
            dataset: a split from :meth:`load`.
            batch_size: samples per forward; the benchmark's ``batch_size`` when None.
            tasks: the tasks to evaluate (a subset, e.g. a single-task model's).

        Returns:
            task → {metric: value} with exactly the metrics of the task's spec; NaN where the
            split holds no label.
        """
        split = self._disk_split(dataset)
        specs = self.select(tasks)
        size = self.batch_size if batch_size is None else batch_size
        parameter = next(iter(model.parameters()), None)
        device = torch.device("cpu") if parameter is None else parameter.device
        was_training = model.training
        model.eval()
        has_task_norms = bool(task_norms(model))
        try:
            with torch.no_grad():
                return self._evaluate(model, split, size, specs, device, has_task_norms)
        finally:
            model.train(was_training)

    def _evaluate(
        self,
        model: nn.Module,
        split: DiskSplit,
        batch_size: int,
        specs: tuple[TaskSpec, ...],
        device: torch.device,
        has_task_norms: bool,
    ) -> dict[str, dict[str, float]]:
        dense = {spec.name: spec for spec in specs if isinstance(spec, DenseTaskSpec)}
        metrics = {name: _make_metric(spec, device) for name, spec in dense.items()}
        # Per-sample tasks (CelebA's attributes): the float64 sums of the in-memory evaluate.
        sums = {
            spec.name: torch.zeros(6, dtype=torch.float64)
            for spec in specs
            if spec.name not in dense
        }
        names = [spec.name for spec in specs]
        for x, labels, masks in split.batches(batch_size, shuffle=False, generator=None):
            outputs = _outputs(model, x.to(device), names, has_task_norms)
            for spec in specs:
                output = outputs[spec.name]
                target = labels[spec.name].to(device)
                mask = masks[spec.name].to(device)
                if spec.name in dense:
                    if DENSE_ROLES[dense[spec.name].role].probabilities:
                        output = torch.sigmoid(output)
                    metrics[spec.name].update(output, target, mask)
                else:
                    sums[spec.name] += _batch_sums(spec, output, target, mask).cpu()
        results = {}
        for spec in specs:
            if spec.name in dense:
                values = metrics[spec.name].compute()
                results[spec.name] = {name: values[name] for name, _ in spec.metrics}
            else:
                results[spec.name] = _metrics(spec, sums[spec.name], None)
        return results


@dataclass(frozen=True)
class DenseBenchmark(DiskBenchmark):
    """A dense-prediction benchmark: a registered trunk and one :class:`DenseHead` per task.

    Attributes:
        backbone: a key of :data:`taskprio.models.BACKBONES`.
        width: the trunk's first-stage width (64 in the papers).
        head_hidden: the heads' hidden channels; ``min(trunk channels, 256)`` when None.
        scales: zoom factors of the training scale-crop.
        manual_weights: the hand-tuned loss weights of MTI-Net's configs, which the CSO
            paper's Tables 1-2 use ("manually tuned"); give ``dict(manual_weights)`` to the
            ``manual`` loss weighting to reproduce them. Empty: none published.
    """

    backbone: str = "resnet18_dilated"
    width: int = 64
    head_hidden: int | None = None
    scales: tuple[float, ...] = DEFAULT_SCALES
    manual_weights: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"`backbone` must be one of {sorted(BACKBONES)}; got {self.backbone!r}."
            )
        if self.width < 1 or (self.head_hidden is not None and self.head_hidden < 1):
            raise ValueError(
                f"`width` and `head_hidden` must be positive; got {self.width} and "
                f"{self.head_hidden}."
            )
        _, scales = check_image_options(None, self.scales, (0, 0, 0), (1, 1, 1))
        object.__setattr__(self, "scales", scales)
        for spec in self.tasks:
            if not isinstance(spec, DenseTaskSpec):
                raise ValueError(
                    f"every task of {self.name} must be a DenseTaskSpec (see `dense_task`); "
                    f"{spec.name!r} is a {type(spec).__name__}."
                )

    def _build(self, tasks: tuple[TaskSpec, ...], *, task_norms: bool) -> DenseMultiTaskModel:
        return DenseMultiTaskModel.build(
            self.backbone,
            {spec.name: spec.num_outputs for spec in tasks},
            width=self.width,
            hidden_channels=self.head_hidden,
            task_norms=task_norms,
        )

    def _kinds(self) -> dict[str, LabelKind]:
        return {
            spec.name: DENSE_ROLES[spec.role].labels
            for spec in self.tasks
            if isinstance(spec, DenseTaskSpec)
        }


def _root(root: Path | None, dirname: str) -> Path | None:
    return None if root is None else Path(root) / dirname


def _nyuv2_tasks() -> tuple[TaskSpec, ...]:
    return (
        dense_task("semseg", "segmentation", 40),
        dense_task("depth", "depth", 1, metrics=["rmse", "abs_rel"]),
        dense_task("normals", "normals", 3),
        dense_task("edge", "edge", 1, is_auxiliary=True),
    )


@BENCHMARKS.register("nyuv2")
@dataclass(frozen=True)
class NYUv2Benchmark(DenseBenchmark):
    """NYUD-v2 as in the CSO paper's Table 1: semseg (40), depth, normals; edge auxiliary.

    Reads MTI-Net's ``NYUD_MT`` layout (or ATRC's variant) under ``<root>/nyuv2`` with
    :class:`~taskprio.data.NYUv2`; 795 train / 654 val images of 480x640. Metrics as the
    paper reports them: depth rmse and abs_rel, semseg mIoU, pixel and mean accuracy, normals
    mean and median angle and the shares within 11.25°, 22.5°, 30°; edge F (not in Δm).
    MTAN's 13-class copy has no edge maps and other classes: it is refused with a message.
    """

    name: str = "nyuv2"
    description: str = "NYUD-v2 indoor scenes: 40-class semseg, depth, normals (+ edge)."
    tasks: tuple[TaskSpec, ...] = _nyuv2_tasks()
    input_shape: tuple[int, ...] = (3, 480, 640)
    image_size: tuple[int, int] = (480, 640)
    epochs: int = 100
    batch_size: int = 8
    lr: float = 1e-4
    augment: bool = True
    manual_weights: tuple[tuple[str, float], ...] = (
        ("semseg", 1.0),
        ("depth", 1.0),
        ("normals", 10.0),
        ("edge", 50.0),
    )

    def open(self, split: str, root: Path | None, *, augment: bool) -> DiskSplit:
        """A split of :class:`~taskprio.data.NYUv2` (MTI-Net layout), resized to ``image_size``."""
        source = NYUv2(
            _root(root, NYUv2.DIRNAME),
            split=split,
            tasks=self.task_names,
            layout="mti-net",
            augment=augment,
            scales=self.scales,
            image_size=self.image_size,
        )
        return DiskSplit(source, self._kinds(), augment=augment, num_workers=self.num_workers)


def _pascal_tasks() -> tuple[TaskSpec, ...]:
    return (
        dense_task("semseg", "segmentation", 21, metrics=["mIoU", "pixel_acc"]),
        dense_task("human_parts", "segmentation", 7, metrics=["mIoU"]),
        dense_task("sal", "saliency", 1),
        dense_task("normals", "normals", 3),
        dense_task("edge", "edge", 1, is_auxiliary=True),
    )


@BENCHMARKS.register("pascal_context")
@dataclass(frozen=True)
class PASCALContextBenchmark(DenseBenchmark):
    """PASCAL-Context as in the CSO paper's Table 2: semseg, human parts, saliency, normals.

    Reads MTI-Net's ``PASCAL_MT`` layout under ``<root>/pascal_context`` with
    :class:`~taskprio.data.PASCALContext` (4,998 train / 5,105 val images, resized to 512x512);
    edge is an auxiliary task. An image without a person has no human-parts label: its mask
    is False and a batch without any person leaves the task out of the step. MTI-Net's PASCAL
    augmentation (scale 0.75-1.25, rotation ±20°) is not available; the MTAN-style zoom-in and
    flip is used instead.
    """

    name: str = "pascal_context"
    description: str = "PASCAL-Context: semseg, human parts, saliency, normals (+ edge)."
    tasks: tuple[TaskSpec, ...] = _pascal_tasks()
    input_shape: tuple[int, ...] = (3, 512, 512)
    image_size: tuple[int, int] = (512, 512)
    epochs: int = 100
    batch_size: int = 8
    lr: float = 1e-4
    augment: bool = True
    manual_weights: tuple[tuple[str, float], ...] = (
        ("semseg", 1.0),
        ("human_parts", 2.0),
        ("sal", 5.0),
        ("normals", 10.0),
        ("edge", 50.0),
    )

    def open(self, split: str, root: Path | None, *, augment: bool) -> DiskSplit:
        """A split of :class:`~taskprio.data.PASCALContext`, resized to ``image_size``."""
        source = PASCALContext(
            _root(root, PASCALContext.DIRNAME),
            split=split,
            tasks=self.task_names,
            augment=augment,
            scales=self.scales,
            image_size=self.image_size,
        )
        return DiskSplit(source, self._kinds(), augment=augment, num_workers=self.num_workers)


def _cityscapes_tasks(num_classes: int) -> tuple[TaskSpec, ...]:
    return (
        dense_task("semseg", "segmentation", num_classes, metrics=["mIoU", "pixel_acc"]),
        dense_task("depth", "depth", 1, metrics=["abs_err", "rel_err"]),
    )


@BENCHMARKS.register("cityscapes")
@dataclass(frozen=True)
class CityscapesBenchmark(DenseBenchmark):
    """Cityscapes as in the CSO paper's Table 3: 7-class semseg and depth at 128x256, SegNet.

    Reads MTAN's ``cityscapes2`` ``.npy`` layout under ``<root>/cityscapes`` with
    :class:`~taskprio.data.Cityscapes` (2,975 train / 500 val). The paper counts all four
    metrics in Δm: mIoU, pixel accuracy, absolute and relative depth error.

    Attributes:
        num_classes: 7 (default), 19 or 2: which of MTAN's label sets to read; the semseg
            task's outputs follow it.
    """

    name: str = "cityscapes"
    description: str = "Cityscapes at 128x256: 7-class semseg and (inverse) depth, SegNet."
    tasks: tuple[TaskSpec, ...] = _cityscapes_tasks(7)
    input_shape: tuple[int, ...] = (3, 128, 256)
    image_size: tuple[int, int] = (128, 256)
    epochs: int = 200
    batch_size: int = 8
    lr: float = 1e-4
    augment: bool = True
    backbone: str = "segnet"
    num_classes: int = 7

    def __post_init__(self) -> None:
        if self.num_classes not in NUM_CLASSES_CHOICES:
            raise ValueError(
                f"`num_classes` must be one of {NUM_CLASSES_CHOICES} (MTAN's label sets); got "
                f"{self.num_classes!r}."
            )
        semseg = next((spec for spec in self.tasks if spec.name == "semseg"), None)
        if semseg is not None and semseg.num_outputs != self.num_classes:
            new = _cityscapes_tasks(self.num_classes)[0]
            tasks = tuple(new if spec.name == "semseg" else spec for spec in self.tasks)
            object.__setattr__(self, "tasks", tasks)
        super().__post_init__()

    def open(self, split: str, root: Path | None, *, augment: bool) -> DiskSplit:
        """A split of :class:`~taskprio.data.Cityscapes` with ``num_classes`` classes."""
        source = Cityscapes(
            _root(root, Cityscapes.DIRNAME),
            split=split,
            tasks=self.task_names,
            num_classes=self.num_classes,
            augment=augment,
            scales=self.scales,
            image_size=self.image_size,
        )
        return DiskSplit(source, self._kinds(), augment=augment, num_workers=self.num_workers)


# --- CelebA -------------------------------------------------------------------------------

# The 40 attributes of list_attr_celeba.txt, in file order.
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup",
    "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns",
    "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    # No bias: the BatchNorm that follows cancels it, and a bias-free conv is a connection
    # whose strength CSO can read.
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


def small_conv_trunk(width: int) -> nn.Sequential:
    """Seven conv-BN-ReLU layers: [B, 3, H, W] → [B, 8·width, H/8, W/8] features.

    Widths (w, 2w, 2w, 4w, 4w, 8w, 8w) with a 2x2 max pool after the first, third and fifth
    layer: the convolutional part of the 9-layer network of FAMO's CelebA experiment (w = 64).

    >>> tuple(small_conv_trunk(2)(torch.zeros(1, 3, 64, 64)).shape)
    (1, 16, 8, 8)
    """
    if width < 1:
        raise ValueError(f"`width` must be positive; got {width}.")
    widths = (3, width, 2 * width, 2 * width, 4 * width, 4 * width, 8 * width, 8 * width)
    layers: list[nn.Module] = []
    for index in range(7):
        layers += _conv_bn_relu(widths[index], widths[index + 1])
        if index in (0, 2, 4):
            layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class PooledLinearHead(nn.Module):
    """Global average pooling then a linear layer: [B, C, h, w] → [B, out_features].

    Called like a :class:`~taskprio.models.DenseHead` (``head(features, size=...)``; the size
    is ignored), so it plugs into :class:`~taskprio.models.DenseMultiTaskModel`.

    >>> tuple(PooledLinearHead(8, 1)(torch.zeros(2, 8, 4, 4)).shape)
    (2, 1)
    """

    def __init__(self, in_channels: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels, out_features)

    def forward(self, features: Tensor, size: Sequence[int] | None = None) -> Tensor:
        """[B, C, h, w] features → [B, out_features] (``size`` is not used)."""
        out: Tensor = self.linear(features.mean(dim=(2, 3)))
        return out


@BENCHMARKS.register("celeba")
@dataclass(frozen=True)
class CelebABenchmark(DiskBenchmark):
    """CelebA: 40 binary face attributes, one task each, and a small shared conv net.

    Reads the official release under ``<root>/celeba`` with :class:`~taskprio.data.CelebA`
    (162,770 train / 19,867 val / 19,962 test), resized to 64x64 as FAMO and Sener & Koltun.
    Each attribute is a binary task (one logit, BCE, accuracy and F1 at threshold 0 as
    fractions, as the other binary benchmarks); F1 is FAMO's per-attribute metric.

    Attributes:
        width: the first conv's width of :func:`small_conv_trunk` (64 in FAMO).
    """

    name: str = "celeba"
    description: str = "CelebA faces at 64x64: 40 binary attributes (small conv net)."
    tasks: tuple[TaskSpec, ...] = tuple(binary_task(name) for name in CELEBA_ATTRIBUTES)
    input_shape: tuple[int, ...] = (3, 64, 64)
    image_size: tuple[int, int] = (64, 64)
    epochs: int = 15
    batch_size: int = 256
    lr: float = 3e-4
    width: int = 64
    # CelebA has its own test split.
    split_files: ClassVar[Mapping[str, str]] = {"train": "train", "val": "val", "test": "test"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.width < 1:
            raise ValueError(f"`width` must be positive; got {self.width}.")

    def open(self, split: str, root: Path | None, *, augment: bool) -> DiskSplit:
        """A split of :class:`~taskprio.data.CelebA` (official partition), resized."""
        source = CelebA(
            _root(root, CelebA.DIRNAME),
            split=split,
            attributes=self.task_names,
            augment=augment,
            image_size=self.image_size,
        )
        kinds: dict[str, LabelKind] = dict.fromkeys(self.task_names, "attribute")
        return DiskSplit(source, kinds, augment=augment, num_workers=self.num_workers)

    def _build(self, tasks: tuple[TaskSpec, ...], *, task_norms: bool) -> DenseMultiTaskModel:
        trunk = small_conv_trunk(self.width)
        heads = {spec.name: PooledLinearHead(8 * self.width, spec.num_outputs) for spec in tasks}
        return DenseMultiTaskModel(trunk, heads, task_norms=task_norms)
