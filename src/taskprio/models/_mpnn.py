"""A small message-passing network for molecules, dense over padded atoms (SchNet-style filters).

The interaction blocks follow the idea of SchNet (Schütt et al., "SchNet: A continuous-filter
convolutional neural network for modeling quantum interactions", NeurIPS 2017,
arXiv:1706.08566): an atom receives the features of the other atoms, each multiplied channel by
channel by a filter that is a continuous function of their distance, expanded in Gaussian radial
basis functions and cut off smoothly. Written here from that description, in pure torch: at most
29 atoms per molecule, so every pair is formed densely ([B, P, P]) and padding is masked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from taskprio.nn._task_norm import check_tasks


def radial_expansion(
    positions: Tensor, atom_mask: Tensor, centers: Tensor, *, cutoff: float
) -> Tensor:
    """Gaussian radial basis functions of every interatomic distance, cut off smoothly.

    ``e[b, i, r, j] = exp(-(d_ij - mu_r)² / (2 s²)) * c(d_ij)`` for two distinct real atoms,
    0 for ``i = j`` and for pairs with a padding atom, where ``s`` is the spacing of the centers
    and ``c(d) = (cos(pi d / cutoff) + 1) / 2`` below the cutoff, 0 above (its value and slope
    vanish at the cutoff).

    Args:
        positions: [B, P, 3] atom positions (any values at padding slots).
        atom_mask: [B, P] bool, True at real atoms.
        centers: [R] the Gaussians' centers mu_r, evenly spaced (R >= 2).
        cutoff: the distance from which pairs interact no more; in the unit of ``positions``.

    Returns:
        [B, P, R, P], in ``positions``' dtype: the layout that one batched matmul over ``j``
        needs (see :class:`MPNN`).

    >>> e = radial_expansion(torch.tensor([[[0.0, 0, 0], [0, 0, 1], [0, 0, 9]]]),
    ...                      torch.tensor([[True, True, False]]), torch.tensor([0.0, 1, 2]),
    ...                      cutoff=2.0)
    >>> e[0, 0, :, 1]  # d = 1: Gaussians exp(-1/2), 1, exp(-1/2), times c(1) = 1/2
    tensor([0.3033, 0.5000, 0.3033])
    >>> float(e[0, :, :, 2].abs().sum() + e[0, 2].abs().sum() + e[0, 0, :, 0].abs().sum())
    0.0
    """
    num_slots = positions.shape[1]
    difference = positions.unsqueeze(2) - positions.unsqueeze(1)  # [B, P, P, 3]
    is_pair = atom_mask.unsqueeze(2) & atom_mask.unsqueeze(1)  # [B, P, P]
    is_pair = is_pair & ~torch.eye(num_slots, dtype=torch.bool, device=positions.device)
    squared = difference.square().sum(-1)  # [B, P, P]
    # 1 at non-pairs keeps sqrt's gradient finite there; those entries are zeroed below.
    distance = torch.where(is_pair, squared, torch.ones_like(squared)).sqrt()  # [B, P, P]
    envelope = 0.5 * (torch.cos(distance * (math.pi / cutoff)) + 1.0)
    envelope = torch.where(is_pair & (distance < cutoff), envelope, torch.zeros_like(envelope))
    spacing = centers[1] - centers[0]
    offset = distance.unsqueeze(2) - centers.view(1, 1, -1, 1)  # [B, P, R, P]
    gaussians = torch.exp(-0.5 * (offset / spacing).square())
    return gaussians * envelope.unsqueeze(2)  # [B, P, R, P]


class _Interaction(nn.Module):
    """One interaction block: continuous-filter convolution, then an atom-wise update.

    ``h <- h + LN(W3 act(LN(W2 m)))`` with the messages ``m_i = sum_j f(d_ij) * LN(W1 h)_j`` and
    the filter ``f(d)_c = sum_r e_r(d) F_rc``: linear in the radial basis functions, so the sum
    over ``j`` is one batched matmul of the expansion [B, P*R, P] with the atom features
    [B, P, C] and never forms a [B, P, P, C] tensor. Every Linear feeds a LayerNorm directly,
    per atom (a BatchNorm would mix padding atoms into its statistics).
    """

    def __init__(self, width: int, num_rbf: int) -> None:
        super().__init__()
        self.atom_in = nn.Linear(width, width, bias=False)
        self.atom_in_norm = nn.LayerNorm(width)
        # Filter weights F [R, C]: Gaussians of width one spacing overlap, so 1/sqrt(R) keeps the
        # filter values of order one.
        self.filter_weight = nn.Parameter(torch.randn(num_rbf, width) / math.sqrt(num_rbf))
        self.update_in = nn.Linear(width, width, bias=False)
        self.update_in_norm = nn.LayerNorm(width)
        self.update_out = nn.Linear(width, width, bias=False)
        self.update_out_norm = nn.LayerNorm(width)
        self.activation = nn.SiLU()

    def forward(self, features: Tensor, expansion: Tensor, atom_weight: Tensor) -> Tensor:
        """[B, P, C] atom features -> [B, P, C], zero at padding slots."""
        batch, num_slots, width = features.shape
        sources = self.atom_in_norm(self.atom_in(features)) * atom_weight  # [B, P, C]
        gathered = torch.bmm(expansion.flatten(1, 2), sources)  # [B, P*R, C]
        gathered = gathered.view(batch, num_slots, -1, width)  # [B, P, R, C]
        # A product and a sum, not einsum: einsum's permuted batched matmul is 10x slower here.
        messages = (gathered * self.filter_weight).sum(2)  # [B, P, C]
        update = self.activation(self.update_in_norm(self.update_in(messages)))
        update = self.update_out_norm(self.update_out(update))  # [B, P, C]
        updated: Tensor = (features + update) * atom_weight
        return updated


class MPNN(nn.Module):
    """Message passing over all atom pairs of padded molecules, pooled, one MLP head per task.

    Input: ``x`` [B, P, 4], per atom slot the atomic number (0 for padding, anywhere in the
    slots) then the x, y, z position. An atom embedding goes through ``num_blocks`` interaction
    blocks with SchNet-style continuous filters of the interatomic distances (radial basis
    functions, smooth cutoff; see :func:`radial_expansion`), then an atom-wise layer and a sum
    over the molecule's atoms (a sum, not a mean, keeps extensive targets such as energies
    proportional to size), then one shared molecule-level layer, then each task's head.

    Every shared Linear feeds a norm directly, as CSO's connection discovery needs: a LayerNorm
    per atom inside the blocks and after the atom-wise layer, a BatchNorm1d over molecules after
    the molecule-level one. :func:`taskprio.nn.make_task_specific` turns them all into task
    norms. The embedding and the filter weights are shared parameters without a norm.

    Departure from SchNet: its filters come from a two-layer network of the radial basis; here
    they are linear in it (see ``_Interaction``), which makes the sum over neighbours one
    batched matmul; a finer basis (``num_rbf``) buys the flexibility back.

    The output is invariant to rotations and translations (only distances enter) and to
    permutations of the atom slots (sums over atoms); padding slots change nothing, whatever
    their positions. Slots after the batch's last real atom are dropped before the pairs are
    formed (QM9's are at the end, which saves about a quarter of the pair work).

    Args:
        outputs: task -> number of outputs (1 for a regression task), in output order.
        width: C, the feature width of atoms and of the molecule representation.
        num_blocks: interaction blocks.
        num_rbf: R, Gaussian radial basis functions, centered evenly on [0, cutoff].
        cutoff: the distance (in the positions' unit, Å for QM9) beyond which atoms do not
            interact.
        head_hidden: the width of each head's hidden layer.
        max_atomic_number: the largest atomic number accepted (9, fluorine, for QM9).

    >>> model = MPNN({"U0": 1, "homo": 1}, width=16, num_blocks=2).eval()
    >>> water = torch.tensor([[[8.0, 0.0, 0.0, 0.12], [1.0, 0.0, 0.76, -0.47],
    ...                        [1.0, 0.0, -0.76, -0.47], [0.0, 0.0, 0.0, 0.0]]])
    >>> {task: tuple(y.shape) for task, y in model(water).items()}
    {'U0': (1, 1), 'homo': (1, 1)}
    >>> shifted = water + torch.tensor([0.0, 1.0, 2.0, 3.0])
    >>> torch.allclose(model(water)["U0"], model(shifted)["U0"], atol=1e-5)
    True
    """

    def __init__(
        self,
        outputs: Mapping[str, int],
        *,
        width: int = 64,
        num_blocks: int = 3,
        num_rbf: int = 16,
        cutoff: float = 5.0,
        head_hidden: int = 32,
        max_atomic_number: int = 9,
    ) -> None:
        super().__init__()
        self.tasks = check_tasks(list(outputs))
        for task, size in outputs.items():
            if size < 1:
                raise ValueError(f"`outputs['{task}']` must be positive, but got {size}.")
        if width < 1 or num_blocks < 1 or head_hidden < 1:
            raise ValueError(
                f"`width`, `num_blocks` and `head_hidden` must be positive; got {width}, "
                f"{num_blocks} and {head_hidden}."
            )
        if num_rbf < 2:
            raise ValueError(f"`num_rbf` must be at least 2, but got {num_rbf}.")
        if not cutoff > 0:
            raise ValueError(f"`cutoff` must be positive, but got {cutoff}.")
        if max_atomic_number < 1:
            raise ValueError(f"`max_atomic_number` must be positive, but got {max_atomic_number}.")
        self.outputs = dict(outputs)
        self.width = width
        self.num_blocks = num_blocks
        self.num_rbf = num_rbf
        self.cutoff = float(cutoff)
        self.head_hidden = head_hidden
        self.max_atomic_number = max_atomic_number
        self.embedding = nn.Embedding(max_atomic_number + 1, width, padding_idx=0)
        self.rbf_centers: Tensor
        self.register_buffer("rbf_centers", torch.linspace(0.0, self.cutoff, num_rbf))
        self.blocks = nn.ModuleList(_Interaction(width, num_rbf) for _ in range(num_blocks))
        self.atom_out = nn.Sequential(
            nn.Linear(width, width, bias=False), nn.LayerNorm(width), nn.SiLU()
        )
        # Bias-free: the BatchNorm's mean subtraction would cancel it.
        self.molecule = nn.Sequential(
            nn.Linear(width, width, bias=False), nn.BatchNorm1d(width), nn.SiLU()
        )
        self.heads = nn.ModuleDict(
            {
                task: nn.Sequential(
                    nn.Linear(width, head_hidden), nn.SiLU(), nn.Linear(head_hidden, size)
                )
                for task, size in self.outputs.items()
            }
        )

    def representation(self, x: Tensor) -> Tensor:
        """The shared molecule representation that every head reads.

        Args:
            x: [B, P, 4] atomic number (0: padding) and position per atom slot.

        Returns:
            [B, C].

        Raises:
            ValueError: ``x`` is not [B, P, 4], or holds an atomic number that is not an
                integer in 0..max_atomic_number.
        """
        if x.ndim != 3 or x.shape[-1] != 4:
            raise ValueError(
                f"`x` must be [B, P, 4] (atomic number, x, y, z per atom slot); got shape "
                f"{tuple(x.shape)}."
            )
        numbers = x[..., 0]
        atomic_numbers = numbers.round().long()  # [B, P]
        is_bad = (atomic_numbers < 0) | (atomic_numbers > self.max_atomic_number)
        if bool((is_bad | (numbers != atomic_numbers.to(numbers.dtype))).any()):
            raise ValueError(
                f"`x[..., 0]` must hold integer atomic numbers in 0..{self.max_atomic_number} "
                "(0 for padding). Build the inputs with taskprio.data's qm9_graph benchmark."
            )
        atom_mask = atomic_numbers > 0  # [B, P]
        # Drop the slots after the batch's last real atom: exact, and fewer pairs to form.
        num_slots = int(atom_mask.any(0).nonzero().max()) + 1 if bool(atom_mask.any()) else 1
        atomic_numbers, atom_mask = atomic_numbers[:, :num_slots], atom_mask[:, :num_slots]
        positions = x[:, :num_slots, 1:]  # [B, P', 3]
        atom_weight = atom_mask.unsqueeze(-1).to(x.dtype)  # [B, P', 1]
        centers = self.rbf_centers.to(x.dtype)
        expansion = radial_expansion(positions, atom_mask, centers, cutoff=self.cutoff)
        features = self.embedding(atomic_numbers).to(x.dtype) * atom_weight  # [B, P', C]
        for block in self.blocks:
            features = block(features, expansion, atom_weight)  # [B, P', C]
        pooled = (self.atom_out(features) * atom_weight).sum(1)  # [B, C]
        representation: Tensor = self.molecule(pooled)  # [B, C]
        return representation

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Every task's output from one pass through the shared layers.

        Args:
            x: [B, P, 4] atomic number (0: padding) and position per atom slot.

        Returns:
            Per task, [B, outputs[task]].
        """
        shared = self.representation(x)  # [B, C]
        return {task: self.heads[task](shared) for task in self.tasks}

    def forward_task(self, x: Tensor, task: str) -> Tensor:
        """The shared layers and only ``task``'s head: one forward per task, for closures.

        Args:
            x: [B, P, 4].
            task: one of :attr:`tasks`.

        Returns:
            [B, outputs[task]].
        """
        if task not in self.heads:
            raise ValueError(f"`task` must be one of {list(self.tasks)}, but got {task!r}.")
        head: nn.Module = self.heads[task]
        output: Tensor = head(self.representation(x))
        return output

    def extra_repr(self) -> str:
        return (
            f"outputs={self.outputs}, width={self.width}, num_blocks={self.num_blocks}, "
            f"num_rbf={self.num_rbf}, cutoff={self.cutoff}, head_hidden={self.head_hidden}"
        )
