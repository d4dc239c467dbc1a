"""Group-level statistics that TRL's own metrics get wrong for EG-GRPO's groups.

TRL's ``frac_reward_zero_std`` is computed from the std its advantages divide by, so it is the share of
zero-spread *groups* only for ``scale_rewards="group"`` (and ``"none"``); with ``"batch"`` or
``multi_objective_aggregation="normalize_then_sum"`` that std is the batch's, and the figure is 0 or 1.
Its ``reward`` and ``rewards/*`` means include the spliced expert rows, whose reward is the ground
truth's. These functions work on the gathered ``(rows, functions)`` reward matrix instead.
"""

from __future__ import annotations

import torch


def group_rewards(
    rewards_per_func: torch.Tensor, weights: torch.Tensor, G: int, aggregation: str
) -> torch.Tensor:
    """The per-row scalar whose spread within a group is the group's learning signal, ``(rows,)``.

    ``sum_then_normalize``: the weighted sum of the functions (what TRL centres per group).
    ``normalize_then_sum``: the weighted sum of each function z-scored within its group (TRL's GDPO step
    before the batch normalisation). A row every function left unscored (all NaN) is NaN.

    Args:
        rewards_per_func: ``(rows, F)`` rewards, rows in groups of ``G`` consecutive rows.
        weights: ``(F,)`` the reward weights.
        G: the group size.
        aggregation: TRL's ``multi_objective_aggregation``.
    """
    weights = weights.to(rewards_per_func)
    unscorable = torch.isnan(rewards_per_func).all(dim=1)
    if aggregation == "sum_then_normalize":
        rewards = (rewards_per_func * weights).nansum(dim=1)
    elif aggregation == "normalize_then_sum":
        grouped = rewards_per_func.view(-1, G, rewards_per_func.shape[1])
        mean = torch.nanmean(grouped, dim=1, keepdim=True)
        std = _nanstd(grouped, dim=1, keepdim=True)
        rewards = (((grouped - mean) / (std + 1e-4)).view_as(rewards_per_func) * weights).nansum(dim=1)
    else:
        raise ValueError(
            f"multi_objective_aggregation='{aggregation}' must be sum_then_normalize or normalize_then_sum"
        )
    return rewards.masked_fill(unscorable, float("nan"))


def zero_spread_group_frac(rewards: torch.Tensor, G: int) -> float:
    """Share of the groups of ``G`` consecutive rows whose ``rewards`` (from :func:`group_rewards`) are all equal.

    Such a group gives every member the same advantage: no signal within it, whatever ``scale_rewards``.
    """
    std = _nanstd(rewards.view(-1, G), dim=1)
    flat = torch.isclose(std, torch.zeros_like(std)) | torch.isnan(std)  # NaN: fewer than two scored rows
    return flat.float().mean().item()


def _nanstd(x: torch.Tensor, dim: int, keepdim: bool = False) -> torch.Tensor:
    # Bessel-corrected, ignoring NaN, as TRL's nanstd.
    count = (~torch.isnan(x)).sum(dim=dim, keepdim=True)
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    var = torch.nansum((x - mean) ** 2, dim=dim, keepdim=True) / (count - 1)
    std = var.sqrt()
    return std if keepdim else std.squeeze(dim)
