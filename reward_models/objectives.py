"""Multi-objective rewards from the ranking simulator: relevance, ctr, cvr, gmv, and custom ones.

Each objective is its own reward function (TRL logs it as ``rewards/<name>/mean`` and weighs it
with ``reward_weights``). A generated SID is scored through the items of its cluster: every item
is scored for the request at the ranker's fixed position, and the cluster's value is the best
item (``aggregate="max"``) or the mean of the top ``top_n`` items (``"mean_top_n"``).

All objectives built from one :class:`~reward_models.base.RewardContext` with the same
aggregation share one :class:`RankerScorer`: the first objective called on a batch scores every
(request, cluster) pair for all objectives in one matrix pass, and the others read its cache.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from eg_grpo.plugins import import_object
from reward_models.base import ClusterIndex, RewardContext, SIDReward, column

BUILTIN_OBJECTIVES = ("relevance", "ctr", "cvr", "gmv")
AGGREGATES = ("max", "mean_top_n")


class RankerScorer:
    """Scores (request, cluster) pairs for every registered objective, vectorised and cached.

    Args:
        simulator: a :class:`~reward_models.ranker.RankingSimulator` with the log's requests attached.
        clusters: the :class:`~reward_models.base.ClusterIndex` of the codebook.
        aggregate: ``"max"`` or ``"mean_top_n"``.
        top_n: items averaged by ``"mean_top_n"`` (fewer when the cluster is smaller).
        cache_size: (request, cluster) pairs kept; the cache is cleared when it is full.

    Raises:
        KeyError: when a codebook item is unknown to the ranker (codebook and ranker from different data).
    """

    def __init__(
        self,
        simulator,
        clusters: ClusterIndex,
        aggregate: str = "max",
        top_n: int = 3,
        cache_size: int = 200_000,
    ):
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        if top_n < 1:
            raise ValueError(f"top_n must be >= 1, got {top_n}")
        self.simulator, self.clusters = simulator, clusters
        self.aggregate, self.top_n, self.cache_size = aggregate, int(top_n), int(cache_size)
        # Ranker item row of every codebook item, in cluster order: (N,)
        self.item_rows_by_cluster = simulator.features.item_rows(clusters.item_ids_by_cluster)
        self.objectives: list[str] = list(BUILTIN_OBJECTIVES)
        self.custom_fns: dict[str, Any] = {}
        self._cache: dict[int, np.ndarray] = {}

    def register(self, name: str, item_score_fn) -> int:
        """Adds a custom objective computed per item by ``item_score_fn(heads) -> (M,)``; returns its column."""
        if name in BUILTIN_OBJECTIVES:
            raise ValueError(
                f"a custom objective cannot be named '{name}' like a built-in one; pick another name"
            )
        if name in self.objectives:
            if self.custom_fns[name] is not item_score_fn:
                raise ValueError(f"two custom objectives are named '{name}'; give them distinct names")
            return self.objectives.index(name)
        self.objectives.append(name)
        self.custom_fns[name] = item_score_fn
        self._cache.clear()  # cached rows lack the new column
        return len(self.objectives) - 1

    def _item_values(self, req_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        """``(M, K)`` per-item objective values for M (request, item) pairs."""
        sim = self.simulator
        heads = sim.predict(sim.features.build(req_rows, item_rows, sim.score_position))
        heads["price"] = sim.features.price[item_rows]
        values = np.empty((len(item_rows), len(self.objectives)), dtype=np.float64)
        values[:, 0] = heads["relevance"]
        values[:, 1] = heads["click"]
        values[:, 2] = heads["purchase"]
        values[:, 3] = heads["price"] * heads["purchase"]
        for k, name in enumerate(self.objectives[len(BUILTIN_OBJECTIVES) :], start=len(BUILTIN_OBJECTIVES)):
            out = np.asarray(self.custom_fns[name](heads), dtype=np.float64).reshape(-1)
            if out.shape != (len(item_rows),):
                raise ValueError(
                    f"custom objective '{name}' returned shape {out.shape} for {len(item_rows)} items"
                )
            values[:, k] = out
        return values

    def _aggregate(self, values: np.ndarray, pair_index: np.ndarray, num_pairs: int) -> np.ndarray:
        """Per-pair aggregate ``(P, K)`` of per-item values ``(M, K)``; each pair's items are contiguous."""
        sizes = np.bincount(pair_index, minlength=num_pairs)
        starts = np.cumsum(sizes) - sizes
        if self.aggregate == "max" or self.top_n == 1:
            return np.maximum.reduceat(values, starts, axis=0)
        out = np.empty((num_pairs, values.shape[1]))
        count = np.minimum(sizes, self.top_n).astype(np.float64)
        for k in range(values.shape[1]):
            order = np.lexsort((-values[:, k], pair_index))  # by pair, best item first
            rank = np.arange(len(order)) - starts[pair_index[order]]
            keep = order[rank < self.top_n]
            out[:, k] = np.bincount(pair_index[keep], weights=values[keep, k], minlength=num_pairs) / count
        return out

    def score(self, request_ids, cluster_ids: np.ndarray) -> np.ndarray:
        """Objective values ``(B, K)`` (columns as in ``self.objectives``) of B (request, cluster) pairs.

        Rows with ``cluster_ids == -1`` are NaN; the relevance column is NaN for a query-less request.
        """
        cluster_ids = np.asarray(cluster_ids, dtype=np.int64)
        out = np.full((len(cluster_ids), len(self.objectives)), np.nan)
        valid = np.nonzero(cluster_ids >= 0)[0]
        if len(valid) == 0:
            return out
        req_rows = self.simulator.features.request_rows(np.asarray(request_ids, dtype=np.int64)[valid])
        keys = req_rows * self.clusters.num_clusters + cluster_ids[valid]
        unique_keys, inverse = np.unique(keys, return_inverse=True)
        cached = [self._cache.get(int(k)) for k in unique_keys]
        missing = np.array([i for i, row in enumerate(cached) if row is None], dtype=np.int64)
        if len(missing):
            miss_req = unique_keys[missing] // self.clusters.num_clusters
            miss_cluster = unique_keys[missing] % self.clusters.num_clusters
            pair_index, positions = self.clusters.expand(miss_cluster)
            item_rows = self.item_rows_by_cluster[positions]
            values = self._aggregate(
                self._item_values(miss_req[pair_index], item_rows), pair_index, len(missing)
            )
            values[self.simulator.features.requests.query_empty[miss_req] == 1, 0] = np.nan
            if len(self._cache) + len(missing) > self.cache_size:
                self._cache.clear()
            for i, row in zip(missing.tolist(), values):
                cached[i] = row
                self._cache[int(unique_keys[i])] = row
        out[valid] = np.stack(cached)[inverse.reshape(-1)]
        return out

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = {}  # a cache is not worth shipping to another process
        return state


def shared_scorer(context: RewardContext, aggregate: str, top_n: int, reward_name: str) -> RankerScorer:
    """The context's scorer for one aggregation, created on first use."""
    key = (aggregate, int(top_n))
    if key not in context._scorers:
        context._scorers[key] = RankerScorer(
            context.ranker(reward_name), context.clusters(reward_name), aggregate=aggregate, top_n=top_n
        )
    return context._scorers[key]


class RankerObjective(SIDReward):
    """One objective of the ranking simulator as a reward function.

    Objectives: ``relevance`` (P(relevant | query, item); ``None`` for a query-less request),
    ``ctr`` (P(click)), ``cvr`` (P(purchase) per impression), ``gmv`` (price × P(purchase), divided
    by ``gmv_scale``), or ``custom`` (``item_score_fn``, a dotted path to a function
    ``fn(heads) -> (M,)`` of the per-item arrays ``heads["click"]``, ``["purchase"]``,
    ``["relevance"]``, ``["price"]``).

    Args:
        context: needs ``vocab``, ``codebook``, ``ranker_dir`` and the search log.
        objective: one of ``relevance``, ``ctr``, ``cvr``, ``gmv``, ``custom``.
        aggregate: ``"max"`` (the cluster's best item) or ``"mean_top_n"``.
        top_n: items averaged by ``"mean_top_n"``.
        invalid_penalty: reward of a completion that is not a SID of the codebook.
        gmv_scale: divisor of ``gmv``; ``None`` = the catalogue's median price, so GMV is on the
            scale of a purchase probability.
        item_score_fn: for ``custom``: ``"package.module:function"``.
        name: the logged name (default: the objective's name; for ``custom``, the function's name).
    """

    def __init__(
        self,
        context: RewardContext,
        objective: str = "ctr",
        aggregate: str = "max",
        top_n: int = 3,
        invalid_penalty: float = -1.0,
        gmv_scale: float | None = None,
        item_score_fn: str | None = None,
        name: str | None = None,
    ):
        if objective not in (*BUILTIN_OBJECTIVES, "custom"):
            raise ValueError(f"objective must be one of {(*BUILTIN_OBJECTIVES, 'custom')}, got {objective!r}")
        if (objective == "custom") != (item_score_fn is not None):
            raise ValueError("item_score_fn is required for objective 'custom' and only for it")
        default = item_score_fn.rpartition(":")[2] if objective == "custom" else objective
        super().__init__(context, invalid_penalty=invalid_penalty, name=name or default)
        self.objective = objective
        self.scorer = shared_scorer(context, aggregate, top_n, self.__name__)
        if objective == "custom":
            self.column = self.scorer.register(self.__name__, import_object(item_score_fn))
        else:
            self.column = BUILTIN_OBJECTIVES.index(objective)
        scale = gmv_scale if gmv_scale is not None else float(np.median(self.scorer.simulator.features.price))
        if objective == "gmv" and not scale > 0:
            raise ValueError(f"gmv_scale must be > 0, got {scale}")
        self.scale = scale if objective == "gmv" else 1.0

    def __call__(self, prompts, completions, completion_ids, **columns: Any) -> list[float | None]:
        request_ids = column(columns, "request_id", self.__name__, len(completion_ids))
        _, clusters = self.clusters_of(completion_ids)
        values = self.scorer.score(request_ids, clusters)[:, self.column] / self.scale  # (B,)
        out = values.tolist()
        invalid, missing = clusters < 0, np.isnan(values)
        for i in np.nonzero(invalid | missing)[0].tolist():
            out[i] = self.invalid_penalty if invalid[i] else None  # None: e.g. relevance without a query
        return out
