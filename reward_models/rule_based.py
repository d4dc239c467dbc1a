"""Rule-based rewards: SID match against the request's logged SIDs, category consistency, validity.

Each reads the generated SID from ``completion_ids`` (:meth:`SIDReward.decode`) and the request's
logged SIDs from the RL-row columns ``clicked_sids``, ``purchased_sids``, ``exposed_sids`` (lists
of SID code lists) and ``query_category`` (see docs/contracts.md, "RL rows").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import sparse

from reward_models.base import RewardContext, SIDReward, column

SID_SOURCES = ("clicked", "purchased", "exposed")


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading levels on which two SIDs agree: ``(1, 2, 3), (1, 2, 9) -> 2``."""
    n = 0
    for x, y in zip(a, b):
        if int(x) != int(y):
            break
        n += 1
    return n


class SIDMatchReward(SIDReward):
    """Credit for generating a SID the user clicked, bought or was shown, with partial prefix credit.

    For each configured source (``clicked``, ``purchased``, ``exposed``) with credit ``c``, a
    generated SID that equals a logged SID of that source earns ``c``; one that matches it only on
    its first ``d < L`` levels earns ``c * prefix_credit[d - 1]``. The reward is the best credit
    over all sources and logged SIDs, 0.0 when nothing matches, and ``None`` (does not apply) for
    a request with no logged SID in any configured source. An invalid SID earns ``invalid_penalty``.

    Args:
        context: needs ``vocab``; with a ``codebook``, a well-formed SID absent from it is invalid.
        sources: credit per source, e.g. ``{"purchased": 1.0, "clicked": 0.8, "exposed": 0.2}``.
        prefix_credit: ``L - 1`` fractions of a source's credit for a match on the first
            1, ..., L-1 levels; ``None`` gives ``0.5 * d / L`` (``[1/6, 1/3]`` for 3 levels);
            ``[]`` or zeros switch partial credit off.
        invalid_penalty: reward of a completion that is not a valid SID.
        name: the logged name (default ``sid_match``).

    Raises:
        ValueError: for an unknown source, a negative credit, or ``prefix_credit`` of the wrong length.
    """

    default_name = "sid_match"

    def __init__(
        self,
        context: RewardContext,
        sources: Mapping[str, float] | None = None,
        prefix_credit: Sequence[float] | None = None,
        invalid_penalty: float = -1.0,
        name: str | None = None,
    ):
        super().__init__(context, invalid_penalty=invalid_penalty, name=name)
        sources = dict(sources if sources is not None else {"purchased": 1.0, "clicked": 0.8, "exposed": 0.2})
        unknown = set(sources) - set(SID_SOURCES)
        if unknown or not sources:
            raise ValueError(
                f"{self.__name__}: sources must be a non-empty subset of {SID_SOURCES}, got {sorted(sources)}"
            )
        if any(float(c) < 0 for c in sources.values()):
            raise ValueError(f"{self.__name__}: source credits must be >= 0, got {sources}")
        self.sources = {k: float(v) for k, v in sources.items()}
        levels = self.vocab.num_levels
        if prefix_credit is None:
            prefix_credit = [0.5 * d / levels for d in range(1, levels)]
        prefix_credit = [float(x) for x in prefix_credit] or [0.0] * (levels - 1)
        if len(prefix_credit) != levels - 1:
            raise ValueError(
                f"{self.__name__}: prefix_credit needs {levels - 1} values (credit for matching the first "
                f"1..{levels - 1} of {levels} levels), got {prefix_credit}"
            )
        # credit_by_depth[d] = fraction of a source's credit for a match on d leading levels.
        self.credit_by_depth = np.array([0.0, *prefix_credit, 1.0])
        self._codebook = context.codebook

    def __call__(self, prompts, completions, completion_ids, **columns: Any) -> list[float | None]:
        n = len(completion_ids)
        logged = {src: column(columns, f"{src}_sids", self.__name__, n) for src in self.sources}
        sids = self.decode(completion_ids)
        if self._codebook is not None:
            known = self.context.clusters(self.__name__).cluster_ids(sids) >= 0
            sids = [s if ok else None for s, ok in zip(sids, known)]
        rewards: list[float | None] = []
        for i, sid in enumerate(sids):
            if sid is None:
                rewards.append(self.invalid_penalty)
                continue
            best, any_target = 0.0, False
            for src, credit in self.sources.items():
                for target in logged[src][i] if logged[src][i] is not None else ():
                    any_target = True
                    best = max(best, credit * self.credit_by_depth[common_prefix_length(sid, target)])
            rewards.append(float(best) if any_target else None)
        return rewards


class CategoryConsistencyReward(SIDReward):
    """The share of the SID's cluster items that lie in the query's top-level category.

    Reads the column ``query_category`` (a top-level category name; ``""`` when the query has
    no known category, which returns ``None``). Items' categories come from the search log's
    ``items.category_path[0]``.

    Args:
        context: needs ``vocab``, ``codebook`` and the search log (``log`` or ``data_dir``).
        invalid_penalty: reward of a completion that is not a SID of the codebook.
        name: the logged name (default ``category_consistency``).
    """

    default_name = "category_consistency"

    def __init__(self, context: RewardContext, invalid_penalty: float = -1.0, name: str | None = None):
        super().__init__(context, invalid_penalty=invalid_penalty, name=name)
        clusters = context.clusters(self.__name__)
        items = context.require("log", self.__name__).items
        top = np.array([str(p[0]) if len(p) else "" for p in items["category_path"]], dtype=object)
        self.categories = sorted(set(top.tolist()) - {""})
        cat_id = {c: i for i, c in enumerate(self.categories)}
        item_ids = items["item_id"].to_numpy(np.int64)
        order = np.argsort(item_ids)
        pos = np.searchsorted(item_ids[order], clusters.item_ids_by_cluster)
        pos = np.minimum(pos, len(order) - 1)
        missing = item_ids[order][pos] != clusters.item_ids_by_cluster
        if missing.any():
            raise ValueError(
                f"{self.__name__}: {int(missing.sum())} codebook item(s) are not in the search log's items "
                f"(e.g. {int(clusters.item_ids_by_cluster[missing][0])}); the codebook belongs to another dataset"
            )
        item_cat = np.array([cat_id.get(c, -1) for c in top[order][pos]], dtype=np.int64)
        cluster_of = np.repeat(np.arange(clusters.num_clusters), np.diff(clusters.offsets))
        sizes = np.diff(clusters.offsets).astype(np.float64)
        keep = item_cat >= 0
        # share[c, k] = fraction of cluster c's items in top-level category k; (S, C) sparse.
        counts = sparse.csr_matrix(
            (np.ones(int(keep.sum())), (cluster_of[keep], item_cat[keep])),
            shape=(clusters.num_clusters, max(len(self.categories), 1)),
        )
        self.share = sparse.diags(1.0 / sizes) @ counts
        self._cat_id = cat_id

    def __call__(self, prompts, completions, completion_ids, **columns: Any) -> list[float | None]:
        n = len(completion_ids)
        query_category = column(columns, "query_category", self.__name__, n)
        _, clusters = self.clusters_of(completion_ids)
        rewards: list[float | None] = []
        for cluster, category in zip(clusters, query_category):
            if cluster < 0:
                rewards.append(self.invalid_penalty)
                continue
            category = (category or "").split(" > ")[0]
            if not category:
                rewards.append(None)
                continue
            k = self._cat_id.get(category)
            rewards.append(0.0 if k is None else float(self.share[cluster, k]))
        return rewards


class ValidSIDReward(SIDReward):
    """1.0 for a completion that is a SID of the codebook, ``invalid_penalty`` otherwise.

    Useful with unconstrained decoding, where the policy can spell SIDs that exist in no item.
    """

    default_name = "valid_sid"

    def __init__(self, context: RewardContext, invalid_penalty: float = -1.0, name: str | None = None):
        super().__init__(context, invalid_penalty=invalid_penalty, name=name)

    def __call__(self, prompts, completions, completion_ids, **columns: Any) -> list[float | None]:
        _, clusters = self.clusters_of(completion_ids)
        return [1.0 if c >= 0 else self.invalid_penalty for c in clusters]
