"""A rank-aware reward for beam rollouts: MiniOneRec's ranking reward on SIDs.

Source: MiniOneRec (github.com/AkaliKong/MiniOneRec, ``rl.py``: ``ndcg_rule_reward``, and
``reward_type="ranking"`` = ``rule_reward`` + ``ndcg_rule_reward``). The form, restated here:
in a group of ``G`` beams in beam order (rank ``r = 0`` is the highest-scored beam), with
``w_r = 1 / log2(r + 2)`` and ``W = sum_{j < G} w_j``,

* a group with at least one hit: a hit earns ``hit_reward`` (MiniOneRec's rule reward, 1) and a miss
  at rank ``r`` earns ``-w_r / W``, so a miss ranked above others costs more and the penalties of
  the whole group sum to at most 1 in magnitude;
* a group without a hit: 0 for every row (MiniOneRec gives no signal there, nor does this).

A hit is a generated SID equal to a logged SID of the request in ``sources``; an invalid SID is a
miss. ``hit_reward=0`` gives ``ndcg_rule_reward`` alone (MiniOneRec's ``ranking_only``), to combine
with ``sid_match`` or a ranker objective without counting a hit twice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from reward_models.base import RewardContext, RewardFunction, column
from reward_models.rule_based import SID_SOURCES


def rank_penalties(group_size: int) -> list[float]:
    """``-w_r / W`` for ranks ``r = 0 .. G-1``: the reward of a miss at each beam rank (sums to -1)."""
    weights = [1.0 / math.log2(r + 2) for r in range(group_size)]
    total = sum(weights)
    return [-w / total for w in weights]


class RankAwareReward(RewardFunction):
    """MiniOneRec's ranking reward for beam-rollout groups (see the module docstring for the form).

    The beam order of a group is its row order: TRL repeats each prompt ``num_generations`` times
    consecutively, the trie's beam search returns a group's beams best first, and expert rows replace
    the last (lowest-ranked) rows. An expert row is a hit, so with experts every group holds a hit and
    every policy miss is penalised by its rank; vanilla GRPO groups are penalised only when the policy
    hit. Under sampled rollouts the rows of a group carry no rank: the RL stage refuses this reward
    unless ``rollout_mode: beam`` (``needs_beam_order``) and gives it ``num_generations``.

    Args:
        context: needs ``vocab`` (to read the SIDs from ``completion_ids``).
        sources: which logged SIDs are hits (default ``purchased`` and ``clicked``, the expert sources).
        hit_reward: the reward of a hit (1.0: MiniOneRec's ``ranking``; 0.0: its ``ranking_only``).
        group_size: the rows per group (``num_generations``); the RL stage sets it.
        name: the logged name (default ``rank_aware``).

    Raises:
        ValueError: an unknown source, a negative ``hit_reward`` or a ``group_size`` below 2.
    """

    default_name = "rank_aware"
    needs_beam_order: ClassVar[bool] = True

    def __init__(
        self,
        context: RewardContext,
        sources: Sequence[str] = ("purchased", "clicked"),
        hit_reward: float = 1.0,
        group_size: int | None = None,
        name: str | None = None,
    ):
        super().__init__(name)
        self.context = context
        context.require("vocab", self.__name__)
        unknown = set(sources) - set(SID_SOURCES)
        if unknown or not sources:
            raise ValueError(
                f"{self.__name__}: sources must be a non-empty subset of {SID_SOURCES}, got {sources}"
            )
        if hit_reward < 0:
            raise ValueError(f"{self.__name__}: hit_reward must be >= 0, got {hit_reward}")
        self.sources, self.hit_reward = tuple(sources), float(hit_reward)
        self.group_size = None
        if group_size is not None:
            self.set_group_size(group_size)

    def set_group_size(self, group_size: int) -> None:
        """Sets ``G`` (the RL stage passes ``num_generations``); a different ``G`` given before is an error."""
        if group_size < 2:
            raise ValueError(f"{self.__name__}: a beam group needs at least 2 rows to rank, got {group_size}")
        if self.group_size not in (None, group_size):
            raise ValueError(
                f"{self.__name__}: group_size={self.group_size} was given but the rollouts have "
                f"num_generations={group_size}; drop group_size from the reward spec"
            )
        self.group_size = int(group_size)
        self._penalties = rank_penalties(self.group_size)

    def __call__(self, prompts, completions, completion_ids, **columns: Any) -> list[float]:
        G, n = self.group_size, len(completion_ids)
        if G is None:
            raise ValueError(f"{self.__name__}: group_size is unset; pass group_size=num_generations")
        if n % G:
            raise ValueError(f"{self.__name__}: {n} rows are not whole groups of {G}")
        logged = {s: column(columns, f"{s}_sids", self.__name__, n) for s in self.sources}
        requests = columns.get("request_id")
        sids = self.context.decode(completion_ids, self.__name__)
        rewards: list[float] = []
        for start in range(0, n, G):
            rows = range(start, start + G)
            if requests is not None and len({requests[i] for i in rows}) != 1:
                raise ValueError(f"{self.__name__}: rows {start}..{start + G - 1} are not one prompt's group")
            targets = {tuple(int(c) for c in sid) for s in self.sources for sid in logged[s][start]}
            hits = [sids[i] is not None and tuple(sids[i]) in targets for i in rows]
            if not any(hits):
                rewards.extend([0.0] * G)
                continue
            rewards.extend(self.hit_reward if hit else self._penalties[r] for r, hit in enumerate(hits))
        return rewards
