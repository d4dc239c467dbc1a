"""The reward contract, the context rewards are built with, and SID decoding shared by every reward.

TRL calls a reward as ``f(prompts=, completions=, completion_ids=, **columns)`` where ``columns``
holds every dataset column of the rows (``request_id``, ``clicked_sids``, ``query_category``, ...)
plus ``trainer_state``, ``log_extra`` and ``log_metric``. It returns one ``float | None`` per
completion (``None`` = "does not apply", skipped in the weighted sum) and is logged under its
``__name__``. Rewards are classes, not closures, so they pickle for multi-process launch.

SIDs are read from ``completion_ids`` with :meth:`eg_grpo.sid.tokens.SIDVocab.decode`, never from
the decoded text: SID tokens may be stripped or re-spaced by detokenisation, token ids may not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

_MISSING = object()


class RewardFunction:
    """Base class of every reward: a picklable callable with a ``__name__`` used for logging.

    Subclasses implement :meth:`__call__`. ``default_name`` is the name logged by TRL (as
    ``rewards/<name>/mean``) unless ``name`` is given.

    Args:
        name: overrides the logged name, e.g. to tell apart two ``sid_match`` rewards with
            different settings.
    """

    default_name: ClassVar[str] = "reward"

    def __init__(self, name: str | None = None):
        # An instance attribute: TRL's `get_callable_name` reads `__name__` from the callable.
        self.__name__ = name or self.default_name

    def __call__(
        self, prompts: list, completions: list, completion_ids: list[list[int]], **columns: Any
    ) -> list[float | None]:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.__name__!r})"


class ClusterIndex:
    """Vectorised SID ↔ cluster ↔ items maps built from a codebook's ``item_ids`` and ``codes``.

    Only the contract attributes ``item_ids (N,)``, ``codes (N, L)`` and ``codebook_sizes`` of
    :class:`eg_grpo.sid.codebook.SIDCodebook` are used.

    Attributes:
        sids: ``(S, L)`` int64, the distinct SIDs; cluster ``c`` is ``sids[c]``.
        offsets: ``(S + 1,)``; the items of cluster ``c`` are ``item_ids_by_cluster[offsets[c]:offsets[c+1]]``.
        item_ids_by_cluster: ``(N,)`` item ids grouped by cluster.
    """

    def __init__(self, item_ids: np.ndarray, codes: np.ndarray, codebook_sizes: Sequence[int]):
        item_ids = np.asarray(item_ids, dtype=np.int64)
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or len(codes) != len(item_ids) or len(item_ids) == 0:
            raise ValueError(
                f"a codebook needs item_ids (N,) and codes (N, L) with N > 0; got {item_ids.shape} and {codes.shape}"
            )
        self.codebook_sizes = tuple(int(k) for k in codebook_sizes)
        self.num_levels = codes.shape[1]
        self.sids, cluster_of_item = np.unique(codes, axis=0, return_inverse=True)  # (S, L), (N,)
        cluster_of_item = cluster_of_item.reshape(-1)
        order = np.argsort(cluster_of_item, kind="stable")
        self.item_ids_by_cluster = item_ids[order]
        counts = np.bincount(cluster_of_item, minlength=len(self.sids))
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._cluster_of_sid = {tuple(int(c) for c in sid): i for i, sid in enumerate(self.sids)}

    @classmethod
    def from_codebook(cls, codebook) -> ClusterIndex:
        return cls(codebook.item_ids, codebook.codes, codebook.codebook_sizes)

    @property
    def num_clusters(self) -> int:
        return len(self.sids)

    def cluster_id(self, sid: tuple[int, ...] | None) -> int:
        """The cluster of ``sid``, or -1 when it is None or not in the codebook."""
        return -1 if sid is None else self._cluster_of_sid.get(sid, -1)

    def cluster_ids(self, sids: Sequence[tuple[int, ...] | None]) -> np.ndarray:
        return np.fromiter((self.cluster_id(s) for s in sids), dtype=np.int64, count=len(sids))

    def items_of(self, cluster: int) -> np.ndarray:
        return self.item_ids_by_cluster[self.offsets[cluster] : self.offsets[cluster + 1]]

    def expand(self, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every item of every cluster in one pass, without a Python loop.

        Args:
            clusters: ``(P,)`` valid cluster ids.

        Returns:
            ``(pair_index (M,), positions (M,))``: ``item_ids_by_cluster[positions[m]]`` is an item
            of ``clusters[pair_index[m]]``; the items of one pair are contiguous, pairs in order.
        """
        starts = self.offsets[clusters]
        sizes = self.offsets[clusters + 1] - starts
        pair_index = np.repeat(np.arange(len(clusters)), sizes)
        first = np.cumsum(sizes) - sizes  # where each pair's first item lands in the output
        within = np.arange(int(sizes.sum())) - np.repeat(first, sizes)
        return pair_index, np.repeat(starts, sizes) + within


@dataclass
class RewardContext:
    """What reward functions may need, built once by the recipe and handed to every reward.

    Heavy objects (the search log, the ranker) are loaded lazily on first use and shared by all
    rewards built from one context, so four ranker objectives load one ranker.

    Args:
        codebook: the :class:`~eg_grpo.sid.codebook.SIDCodebook` (SID ↔ items).
        vocab: the :class:`~eg_grpo.sid.tokens.SIDVocab` of the policy's tokenizer, to decode
            ``completion_ids``.
        data_dir: folder of the search log (``items/requests/impressions.parquet``).
        ranker_dir: folder written by ``recipes/train_ranker.py``.
        log: an already loaded :class:`~eg_grpo.data.schema.SearchLog` (else read from ``data_dir``).
    """

    codebook: Any = None
    vocab: Any = None
    data_dir: str | Path | None = None
    ranker_dir: str | Path | None = None
    log: Any = None
    _clusters: Any = field(default=None, init=False, repr=False, compare=False)
    _ranker: Any = field(default=None, init=False, repr=False, compare=False)
    _scorers: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _decoded: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def require(self, what: str, reward_name: str) -> Any:
        """Returns ``self.<what>`` or raises a ValueError saying which reward needs it."""
        value = getattr(self, what)
        if value is None and what == "log" and self.data_dir is not None:
            return self.search_log()
        if value is None:
            hints = {
                "codebook": "the SIDCodebook saved by recipes/build_sids.py (SIDCodebook.load(DIR/codebook))",
                "vocab": "the SIDVocab of the policy tokenizer (eg_grpo.sid.tokens.SIDVocab(tokenizer, sizes))",
                "log": "data_dir (the folder written by recipes/make_data.py) or an already loaded SearchLog",
                "ranker_dir": "the folder written by recipes/train_ranker.py",
            }
            raise ValueError(
                f"reward '{reward_name}' needs RewardContext.{what}: pass {hints.get(what, what)}"
            )
        return value

    def decode(self, completion_ids: Sequence[Sequence[int]], reward_name: str = "reward") -> list:
        """SIDs spelled by ``completion_ids`` (None where not a SID), via ``SIDVocab.decode``.

        Memoised per token sequence and shared by every reward of this context: a batch is
        decoded once however many objectives read it, and the policy's SIDs recur across steps.
        """
        vocab = self.require("vocab", reward_name)
        cache = self._decoded
        if len(cache) > 1_000_000:
            cache.clear()
        out = []
        for ids in completion_ids:
            key = tuple(ids.tolist() if hasattr(ids, "tolist") else ids)
            sid = cache.get(key, _MISSING)
            if sid is _MISSING:
                sid = cache[key] = vocab.decode(key)
            out.append(sid)
        return out

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_decoded"] = {}  # a cache, not worth shipping to another process
        return state

    def search_log(self):
        if self.log is None:
            if self.data_dir is None:
                raise ValueError("RewardContext has neither a SearchLog nor a data_dir to load one from")
            from eg_grpo.data.schema import SearchLog

            self.log = SearchLog.load(self.data_dir)
        return self.log

    def clusters(self, reward_name: str = "reward") -> ClusterIndex:
        if self._clusters is None:
            self._clusters = ClusterIndex.from_codebook(self.require("codebook", reward_name))
        return self._clusters

    def ranker(self, reward_name: str = "reward"):
        if self._ranker is None:
            from reward_models.ranker import RankingSimulator

            self._ranker = RankingSimulator.load(
                self.require("ranker_dir", reward_name), self.require("log", reward_name)
            )
        return self._ranker


class SIDReward(RewardFunction):
    """A reward of a generated SID: decodes ``completion_ids`` and maps each SID to its cluster.

    Args:
        context: the :class:`RewardContext`; needs ``vocab``, and ``codebook`` for ``clusters``.
        invalid_penalty: the reward of a completion that spells no SID, or a SID that is not in
            the codebook. A clear negative value by default, so unconstrained decoding learns to
            avoid non-existent SIDs.
        name: the logged name.
    """

    def __init__(self, context: RewardContext, invalid_penalty: float = -1.0, name: str | None = None):
        super().__init__(name)
        self.context = context
        self.invalid_penalty = float(invalid_penalty)
        self.vocab = context.require("vocab", self.__name__)

    def decode(self, completion_ids: Sequence[Sequence[int]]) -> list[tuple[int, ...] | None]:
        """SIDs of the completions (None where the ids spell no SID), via ``SIDVocab.decode``."""
        return self.context.decode(completion_ids, self.__name__)

    def clusters_of(self, completion_ids: Sequence[Sequence[int]]) -> tuple[list, np.ndarray]:
        """``(sids, cluster_ids (B,))``; cluster id -1 marks an invalid or unknown SID."""
        sids = self.decode(completion_ids)
        return sids, self.context.clusters(self.__name__).cluster_ids(sids)


def column(columns: dict, key: str, reward_name: str, batch_size: int) -> list:
    """A dataset column from TRL's keyword arguments, with a clear error when it is missing."""
    if key not in columns:
        available = sorted(k for k in columns if k not in ("trainer_state", "log_extra", "log_metric"))
        raise KeyError(
            f"reward '{reward_name}' needs the dataset column '{key}', which the rows lack "
            f"(columns: {available}); build the RL rows with eg_grpo.data.rl_dataset"
        )
    values = columns[key]
    if len(values) != batch_size:
        raise ValueError(f"column '{key}' has {len(values)} values for {batch_size} completions")
    return values
