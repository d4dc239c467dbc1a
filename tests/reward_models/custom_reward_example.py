"""A custom reward, as in the README: plug your own scorer into EG-GRPO without touching the trainer.

Name it in the RL config by its dotted path (any importable ``package.module:Name``)::

    rewards:
      - {name: sid_match, weight: 1.0}
      - {name: my_pkg.rewards:BrandAffinityReward, weight: 0.5, min_history: 2}

It receives the ``RewardContext`` because its constructor has a ``context`` argument.
"""

from __future__ import annotations

import numpy as np

from reward_models import RewardContext, SIDReward


class BrandAffinityReward(SIDReward):
    """Share of the generated SID's items whose brand the user already bought or clicked.

    ``None`` (does not apply) for a user with fewer than ``min_history`` past items.
    """

    default_name = "brand_affinity"  # logged by TRL as rewards/brand_affinity/mean

    def __init__(
        self, context: RewardContext, min_history: int = 1, invalid_penalty: float = -1.0, name=None
    ):
        super().__init__(context, invalid_penalty=invalid_penalty, name=name)
        log = context.require("log", self.__name__)  # the search log (items, requests, impressions)
        self.codebook = context.require("codebook", self.__name__)
        self.brand_of = dict(zip(log.items["item_id"].tolist(), log.items["brand"].tolist()))
        self.history_of = dict(zip(log.requests["request_id"].tolist(), log.requests["history"]))
        self.min_history = min_history

    def __call__(self, prompts, completions, completion_ids, request_id, **columns):
        rewards = []
        for sid, rid in zip(self.decode(completion_ids), request_id):  # SIDs from token ids, not text
            if sid is None or not self.codebook.contains(sid):
                rewards.append(self.invalid_penalty)
                continue
            history = self.history_of[rid]
            if len(history) < self.min_history:
                rewards.append(None)
                continue
            liked = {self.brand_of[i] for i in history}
            rewards.append(float(np.mean([self.brand_of[i] in liked for i in self.codebook.items_of(sid)])))
        return rewards


def click_times_relevance(heads: dict) -> np.ndarray:
    """An item score for the built-in ``custom_objective``: P(click) x P(relevant), per item."""
    return heads["click"] * heads["relevance"]
