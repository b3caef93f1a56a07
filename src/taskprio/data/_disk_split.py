"""A split read from disk batch by batch, so that no benchmark holds a whole image data set.

:class:`DiskSplit` wraps one of the dense loaders (:class:`~taskprio.data.NYUv2`,
:class:`~taskprio.data.PASCALContext`, :class:`~taskprio.data.Cityscapes`,
:class:`~taskprio.data.CelebA`) and cuts epochs into batches with the semantics of
:func:`~taskprio.data.iterate_masked_batches`: one ``torch.randperm`` drawn from the caller's
generator per shuffled epoch, the samples in that order, and ``skip`` leaving out the first
batches without reading (or decoding) them.

Augmentation is reproducible and independent of ``skip`` and of worker processes: when the
split augments, each epoch also draws one seed from the generator, right after the permutation,
and the sample at position p of the epoch is augmented with a generator seeded with
``seed + p``. The generator therefore advances by one draw more per epoch than for an
in-memory data set; the batch order of an epoch is the same.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Literal, Protocol

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from taskprio.data._dense import IGNORE_INDEX, DenseSample

LabelKind = Literal["label", "depth", "normals", "binary", "attribute"]
"""How to tell, per sample, whether a target holds any label.

``"label"``: some pixel is not 255; ``"depth"``: some depth is > 0; ``"normals"``: some normal
is non-zero; ``"binary"`` (edge, saliency maps) and ``"attribute"`` (one label per sample):
always labelled.
"""
Batch = tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]
# Per-epoch augmentation seeds are drawn below 2**62, so seed + position stays an int64.
_SEED_BOUND = 2**62


class SampleSource(Protocol):
    """A map-style data set of ``(image, {task: target})`` with an augmentation generator."""

    generator: torch.Generator | None

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> DenseSample: ...


def has_labels(target: Tensor, kind: LabelKind) -> Tensor:
    """[B] bool: which samples of a batched target hold at least one label.

    Args:
        target: [B, ...] one task's targets.
        kind: how unknown entries are marked (see :data:`LabelKind`).

    >>> has_labels(torch.tensor([[[255, 3]], [[255, 255]]]), "label")
    tensor([ True, False])
    """
    if kind in ("binary", "attribute") or target.ndim < 2:
        return torch.ones(target.shape[0], dtype=torch.bool, device=target.device)
    flat = target.flatten(1)
    if kind == "label":
        return (flat != IGNORE_INDEX).any(dim=1)
    if kind == "depth":
        return (torch.isfinite(flat) & (flat > 0)).any(dim=1)
    return (flat != 0).any(dim=1)


def collate_samples(samples: list[DenseSample], *, kinds: Mapping[str, LabelKind]) -> Batch:
    """Stack samples into ``(images [B, 3, H, W], {task: [B, ...]}, {task: masks [B]})``."""
    images = torch.stack([image for image, _ in samples])
    labels = {task: torch.stack([targets[task] for _, targets in samples]) for task in kinds}
    masks = {task: has_labels(labels[task], kind) for task, kind in kinds.items()}
    return images, labels, masks


class DiskSplit:
    """One split of a data set on disk, read sample by sample when its batches are drawn.

    What :meth:`Benchmark.load <taskprio.data.Benchmark.load>` returns for the dense benchmarks.
    Batches stay on the CPU; the caller moves them (:meth:`to` returns the split itself).

    Args:
        source: the loader (``source[i] -> (image, {task: target})``), its augmentation, if
            any, switched on at construction.
        kinds: task → how its targets mark unknown entries; the key order is the task order.
        augment: whether ``source`` augments (each epoch then draws an augmentation seed).
        num_workers: worker processes reading samples (0: read in this process).

    Attributes:
        source: the loader.
        kinds: task → :data:`LabelKind`.

    >>> import torch
    >>> class Squares:
    ...     generator = None
    ...     def __len__(self): return 5
    ...     def __getitem__(self, i): return torch.full((3, 1, 1), float(i)), {"y": torch.tensor(i)}
    >>> split = DiskSplit(Squares(), {"y": "attribute"}, augment=False)
    >>> [labels["y"].tolist() for _, labels, _ in split.batches(
    ...     2, shuffle=True, generator=torch.Generator().manual_seed(0), skip=1)]
    [[1, 3], [2]]
    """

    def __init__(
        self,
        source: SampleSource,
        kinds: Mapping[str, LabelKind],
        *,
        augment: bool,
        num_workers: int = 0,
    ) -> None:
        if not kinds:
            raise ValueError("`kinds` must name at least one task; got none.")
        if num_workers < 0:
            raise ValueError(f"`num_workers` must be non-negative; got {num_workers}.")
        self.source = source
        self.kinds: dict[str, LabelKind] = dict(kinds)
        self.augment = augment
        self.num_workers = num_workers

    @property
    def tasks(self) -> tuple[str, ...]:
        """The task names of the labels, in order."""
        return tuple(self.kinds)

    def __len__(self) -> int:
        return len(self.source)

    def __repr__(self) -> str:
        return f"DiskSplit({self.source!r}, augment={self.augment})"

    def to(self, device: torch.device | str) -> DiskSplit:
        """The split itself: it stores no tensor; each batch is moved by whoever draws it."""
        return self

    def read(self, index: int, seed: int | None = None) -> DenseSample:
        """Sample ``index``, augmented with a generator seeded by ``seed`` when augmenting."""
        if self.augment and seed is not None:
            self.source.generator = torch.Generator().manual_seed(seed)
        return self.source[index]

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None,
        skip: int = 0,
    ) -> Iterator[Batch]:
        """One epoch of batches, as :func:`~taskprio.data.iterate_masked_batches` orders them.

        Args:
            batch_size: B.
            shuffle: draw this epoch's permutation (``torch.randperm``) from ``generator``.
            generator: the CPU generator of the batch order (and of the augmentation seed);
                None: torch's global generator.
            skip: leave out the first ``skip`` batches without reading them; the permutation
                and seed are drawn as if none were skipped.

        Yields:
            ``(images [B, 3, H, W], {task: targets [B, ...]}, {task: masks [B] bool})``, on
            the CPU; a mask is False for a sample whose target holds no label.
        """
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be positive, but got {batch_size}.")
        if skip < 0:
            raise ValueError(f"`skip` must be non-negative, but got {skip}.")
        num_samples = len(self)
        order = (
            torch.randperm(num_samples, generator=generator)
            if shuffle
            else torch.arange(num_samples)
        )
        seed = int(torch.randint(_SEED_BOUND, (), generator=generator)) if self.augment else None
        chunks = [
            list(range(start, min(start + batch_size, num_samples)))
            for start in range(skip * batch_size, num_samples, batch_size)
        ]
        if not chunks:
            return
        loader: DataLoader[DenseSample] = DataLoader(
            _EpochSamples(self, order.tolist(), seed),
            batch_sampler=chunks,
            num_workers=self.num_workers,
            collate_fn=functools.partial(collate_samples, kinds=self.kinds),
            # A private generator: the loader draws a worker base seed per epoch, which must
            # not advance torch's global generator (augmentation is seeded per sample anyway).
            generator=torch.Generator(),
        )
        yield from loader


class _EpochSamples(Dataset[DenseSample]):
    """Position p of one epoch → the sample ``order[p]``, augmented with ``seed + p``."""

    def __init__(self, split: DiskSplit, order: list[int], seed: int | None) -> None:
        self.split = split
        self.order = order
        self.seed = seed

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, position: int) -> DenseSample:
        seed = None if self.seed is None else self.seed + position
        return self.split.read(self.order[position], seed)
