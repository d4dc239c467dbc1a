"""The paper's tiered log reward: purchased or clicked SID > exposed SID > any valid SID > anything else.

CQ-SID + EG-GRPO (arXiv 2605.14434) rewards each generated SID from the request's own logs:
1.0 when its cluster holds a purchased or clicked item, 0.5 when it holds an exposed item (one the
production ranker chose to show), 0.1 for any other SID of the codebook, else 0. A SID is a cluster,
so "holds the item" is "equals the item's SID"; unlike ``sid_match`` there is no prefix credit.
"""

from __future__ import annotations

from typing import Any

from reward_models.base import RewardContext, SIDReward, column


class TieredLogMatchReward(SIDReward):
    """The highest tier the generated SID reaches among the request's logged SIDs.

    Reads the RL-row columns ``purchased_sids``, ``clicked_sids`` and ``exposed_sids`` (lists of
    SID code lists; see docs/contracts.md, "RL rows"). Every completion gets a value, never
    ``None``: a request with no logged SID still tells a valid SID (``valid``) from an invalid one
    (``invalid``), as in the paper.

    Args:
        context: needs ``vocab``; with a ``codebook``, a well-formed SID absent from it is invalid.
        purchased: reward of a SID holding a purchased item.
        clicked: reward of a SID holding a clicked item.
        exposed: reward of a SID holding an exposed item.
        valid: reward of any other SID of the codebook.
        invalid: reward of a completion that is not a SID of the codebook.
        name: the logged name (default ``tiered_log_match``).

    Raises:
        ValueError: tiers that are not ordered ``min(purchased, clicked) >= exposed >= valid >= invalid``
            (a higher tier that pays less would reward the policy for avoiding the user's items).

    Example:
        >>> reward = TieredLogMatchReward(context)  # the paper's 1.0 / 1.0 / 0.5 / 0.1 / 0.0
    """

    default_name = "tiered_log_match"

    def __init__(
        self,
        context: RewardContext,
        purchased: float = 1.0,
        clicked: float = 1.0,
        exposed: float = 0.5,
        valid: float = 0.1,
        invalid: float = 0.0,
        name: str | None = None,
    ):
        super().__init__(context, invalid_penalty=invalid, name=name)
        tiers = {k: float(v) for k, v in dict(purchased=purchased, clicked=clicked, exposed=exposed,
                                               valid=valid, invalid=invalid).items()}  # fmt: skip
        if (
            not min(tiers["purchased"], tiers["clicked"])
            >= tiers["exposed"]
            >= tiers["valid"]
            >= tiers["invalid"]
        ):
            raise ValueError(
                f"{self.__name__}: tiers must satisfy min(purchased, clicked) >= exposed >= valid >= invalid, "
                f"got {tiers}"
            )
        # Checked best first: a purchase that was also clicked and shown earns the purchase tier.
        self.tiers = sorted(
            [("purchased", tiers["purchased"]), ("clicked", tiers["clicked"]), ("exposed", tiers["exposed"])],
            key=lambda kv: -kv[1],
        )
        self.valid, self.invalid = tiers["valid"], tiers["invalid"]
        self._codebook = context.codebook

    def __call__(self, prompts, completions, completion_ids, **columns: Any) -> list[float]:
        n = len(completion_ids)
        logged = {
            src: [{tuple(int(c) for c in s) for s in (v if v is not None else ())} for v in values]
            for src, _ in self.tiers
            for values in [column(columns, f"{src}_sids", self.__name__, n)]
        }
        sids = self.decode(completion_ids)
        if self._codebook is not None:
            known = self.context.clusters(self.__name__).cluster_ids(sids) >= 0
            sids = [s if ok else None for s, ok in zip(sids, known)]
        rewards = []
        for i, sid in enumerate(sids):
            if sid is None:
                rewards.append(self.invalid)
                continue
            rewards.append(next((credit for src, credit in self.tiers if sid in logged[src][i]), self.valid))
        return rewards
