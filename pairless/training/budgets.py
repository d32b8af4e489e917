"""Token budgets per sample: Dirichlet proportions from seeded Gamma draws, turned into integer counts.

``sample_gamma`` draws Gamma variates from a given ``torch.Generator`` (torch's own Gamma and Dirichlet take
none, so they cannot be seeded per call); normalised per row they are the Dirichlet proportions of a
sample's view. ``allocate`` turns proportions into integer counts that fill a budget exactly where the
capacities allow. Used by :class:`pairless.training.masking.Masker` (the per-sample random stream,
:mod:`pairless.training.sample_random`, has its own Gamma sampler with the same method).
"""

from __future__ import annotations

import torch


def sample_gamma(concentration: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gamma(concentration, 1) samples drawn from ``generator`` (Marsaglia-Tsang, vectorised).

    torch's own Gamma/Dirichlet sampling takes no generator, so it cannot be
    seeded per call; this is the standard rejection method with the alpha < 1
    boost ``Gamma(a) = Gamma(a + 1) * U ** (1 / a)``.
    """
    shape = concentration.shape
    alpha = concentration.reshape(-1).to(torch.float64)
    boosted = torch.where(alpha < 1, alpha + 1, alpha)
    d = boosted - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    result = torch.zeros_like(alpha)
    pending = torch.ones_like(alpha, dtype=torch.bool)
    while bool(pending.any()):
        index = pending.nonzero().squeeze(1)
        normal = torch.randn(index.numel(), generator=generator, dtype=torch.float64)
        uniform = torch.rand(index.numel(), generator=generator, dtype=torch.float64)
        v = (1 + c[index] * normal) ** 3
        accept = (v > 0) & (torch.log(uniform) < 0.5 * normal**2 + d[index] - d[index] * v
                            + d[index] * torch.log(v.clamp_min(1e-300)))
        result[index[accept]] = (d[index] * v)[accept]
        pending[index[accept]] = False
    small = alpha < 1
    boost = torch.rand(alpha.shape, generator=generator, dtype=torch.float64)
    result = torch.where(small, result * boost ** (1.0 / alpha), result)
    return result.reshape(shape)


def allocate(weights: torch.Tensor, capacity: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
    """Integer counts ``(B, M)`` with row sums ``min(budget, capacity.sum)``, ``counts <= capacity``.

    Proportional to ``weights`` (largest-remainder rounding); what a capped
    modality cannot take is handed, in further rounds, to the modalities
    with room (in proportion to their weights, uniformly if all are zero).
    """
    counts = torch.zeros_like(capacity)
    weights = weights.to(torch.float64)
    for _ in range(capacity.shape[1] + 2):
        room = capacity - counts
        remaining = budget - counts.sum(1)
        if not bool(((remaining > 0) & (room.sum(1) > 0)).any()):
            break
        has_room = room > 0
        share_weights = torch.where(has_room, weights, 0.0)
        # A row whose weighted modalities are all full spreads the rest evenly over those with room.
        share_weights = torch.where(share_weights.sum(1, keepdim=True) > 0, share_weights, has_room.double())
        total = share_weights.sum(1, keepdim=True).clamp_min(1e-300)
        share = share_weights / total * remaining.clamp_min(0).unsqueeze(1).double()
        floor = share.floor()
        leftover = (remaining.clamp_min(0) - floor.sum(1).long()).clamp_min(0)
        fraction = torch.where(share_weights > 0, share - floor, -1.0)
        rank = fraction.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
        extra = (rank < leftover.unsqueeze(1)) & (share_weights > 0)
        counts = counts + torch.minimum(floor.long() + extra.long(), room)
    return counts
