"""Recall channels behind one interface: ``recall(batch, quota) -> per request a ranked array of item ids``.

- ``logged``: the simulator's own legacy retrieval (the system that produced the training logs);
- ``bm25``: lexical BM25 over item text (title, brand, category words) with ``bm25s``;
- ``dense``: inner-product search with ``faiss`` over the item vectors of the SID stage's encoder;
  queries through the same encoder, an empty query through the centroid of the user's history;
- ``item_cf``: item-to-item cosine recall (``implicit``) from train-split co-clicks of users,
  seeded by the request's history;
- ``generative``: a trained SID model through :class:`eg_grpo.eval.recall.RecallChannel`;
- ``oracle``: the truly best items of the request (the ceiling).

Every channel returns unique item ids, best first, at most ``quota``; a channel with nothing to
say about a request (no query for ``bm25``, no history for ``item_cf``) returns an empty array.
Indexes are built once and cached under ``index_dir`` with a ``stage.json`` fingerprint.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from eg_grpo.arena.oracle import Oracle
from eg_grpo.data.sim_logs import retrieve_candidates
from eg_grpo.io import atomic_dir, check_stage_folder, folder_fingerprint, stage_record, write_stage

logger = logging.getLogger(__name__)


@dataclass
class RequestBatch:
    """Requests as a search service sees them; lists aligned, ``rows`` index ``log.requests``."""

    request_ids: np.ndarray  # (B,)
    rows: np.ndarray  # (B,)
    queries: list[str]
    histories: list[list[int]]  # item ids, oldest first
    profiles: list[str] | None = None  # the requests' coarse profiles, when the data has them

    @classmethod
    def from_log(cls, log, request_rows: np.ndarray) -> RequestBatch:
        req = log.requests.iloc[request_rows]
        return cls(
            request_ids=req["request_id"].to_numpy(),
            rows=np.asarray(request_rows),
            queries=req["query"].fillna("").astype(str).tolist(),
            histories=[[int(i) for i in h] for h in req["history"]],
            profiles=req["profile"].fillna("").astype(str).tolist() if "profile" in req else None,
        )

    def __len__(self) -> int:
        return len(self.request_ids)

    def slice(self, start: int, stop: int) -> RequestBatch:
        return RequestBatch(
            self.request_ids[start:stop],
            self.rows[start:stop],
            self.queries[start:stop],
            self.histories[start:stop],
            None if self.profiles is None else self.profiles[start:stop],
        )


class Channel:
    """A recall channel. Subclasses implement :meth:`recall`."""

    name = "channel"

    def recall(self, batch: RequestBatch, quota: int) -> list[np.ndarray]:
        """Per request, up to ``quota`` unique item ids (int64), best first."""
        raise NotImplementedError


def unique_prefix(items: np.ndarray, quota: int) -> np.ndarray:
    """The first ``quota`` distinct values of ``items`` in their order."""
    _, first = np.unique(items, return_index=True)
    return items[np.sort(first)][:quota].astype(np.int64)


def _cached(index_dir: Path | None, name: str, key: dict, build, load):
    """Loads the index ``name`` from ``index_dir`` when its fingerprint matches ``key``, else builds
    it (``build(folder)`` writes it) atomically; ``load(folder)`` reads it back."""
    if index_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix=f"arena_{name}_"))
        build(tmp)
        return load(tmp)
    folder = Path(index_dir) / name
    record = stage_record(f"arena_index_{name}", key)
    # The index folder is this channel's own cache: a stale one is rebuilt, never reused.
    if check_stage_folder(folder, record, overwrite=True) != "current":
        logger.info("building the %s index in %s", name, folder)
        with atomic_dir(folder) as tmp:
            build(tmp)
            write_stage(tmp, record)
    return load(folder)


def data_fingerprint(data_dir: str | Path) -> str:
    """The data folder's content fingerprint (its ``stage.json``, else a hash of its files)."""
    return folder_fingerprint(data_dir)


class LoggedChannel(Channel):
    """The simulator's legacy retrieval, its source shares held by every prefix of the list; with
    launches, items not launched at the request's time are redrawn (then dropped), as in the log.

    The retrieval fills its slots from the leaf, mid category, brand and popularity sources in
    fixed shares; the slots are interleaved across sources, so a smaller quota (``fixed_budget``)
    keeps the shares. Draws are seeded by ``seed`` and the batch's first request.
    """

    name = "logged"

    def __init__(self, oracle: Oracle, seed: int = 0):
        self.oracle, self.seed = oracle, seed

    def recall(self, batch, quota):
        o, cfg = self.oracle, self.oracle.config
        rng = np.random.default_rng([self.seed, int(batch.request_ids[0]), len(batch)])
        config = dataclasses.replace(cfg, candidates_per_request=quota)
        requests = o.log.requests.iloc[batch.rows]
        cand = retrieve_candidates(config, o.taxonomy, o.catalogue, o.users, requests, rng)  # (B, quota) rows
        if o.launches is not None:  # as the log's retrieval: draws by popularity x cold-start prior
            launches = dataclasses.replace(o.launches, rng=rng)  # the channel's stream, not the oracle's
            cand = launches.redraw_unlaunched(config, o.taxonomy, o.catalogue, o.users, requests, cand)
        cuts = np.cumsum([cfg.legacy_leaf_share, cfg.legacy_mid_share, cfg.legacy_brand_share])
        source = np.searchsorted(cuts * quota, np.arange(quota) + 0.5)
        rank_in_source = np.array([(source[:i] == s).sum() for i, s in enumerate(source)])
        spread = (rank_in_source + 0.5) / np.bincount(source)[source]
        cand = cand[:, np.argsort(spread, kind="stable")]
        ids = o.log.items["item_id"].to_numpy()
        # a slot whose leaf launches later in full still holds an unlaunched item: never offered
        on_sale = o.on_sale(np.asarray(batch.rows)[:, None], cand)
        return [ids[unique_prefix(row[ok], quota)] for row, ok in zip(cand, on_sale)]


def bm25_item_texts(items: pd.DataFrame) -> list[str]:
    """Title, brand and category words of each item (what a lexical index of a shop holds)."""
    paths = items["category_path"].map(lambda p: " ".join(p))
    return (items["title"].fillna("") + " " + items["brand"].fillna("") + " " + paths).tolist()


class BM25Channel(Channel):
    """Lexical recall: ``bm25s`` over :func:`bm25_item_texts`. Empty queries get nothing."""

    name = "bm25"

    def __init__(self, items: pd.DataFrame, index_dir: Path | None = None, data_key: str = ""):
        import bm25s

        self._bm25s = bm25s
        texts = bm25_item_texts(items)

        def build(folder):
            retriever = bm25s.BM25()
            retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
            retriever.save(str(folder / "bm25"))

        self.retriever = _cached(
            index_dir, "bm25", {"data": data_key, "n": len(texts), "kind": "bm25s-v1"}, build,
            lambda folder: bm25s.BM25.load(str(folder / "bm25")),
        )  # fmt: skip
        self.item_ids = items["item_id"].to_numpy()

    def recall(self, batch, quota):
        out = [np.empty(0, dtype=np.int64) for _ in range(len(batch))]
        asked = [i for i, q in enumerate(batch.queries) if q.strip()]
        if not asked:
            return out
        tokens = self._bm25s.tokenize(
            [batch.queries[i] for i in asked], stopwords="en", return_ids=False, show_progress=False
        )
        k = min(quota, len(self.item_ids))
        docs, scores = self.retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        for j, i in enumerate(asked):
            out[i] = self.item_ids[docs[j][scores[j] > 0]].astype(np.int64)
        return out


def import_faiss():
    """``faiss``, imported with its loader's INFO notes silenced.

    On a CPU without AVX2 (or a wheel without that build) ``faiss.loader`` logs at INFO that it could
    not load the AVX2 library and falls back; the fallback is complete, so the note is noise in the
    arena's log. Warnings and errors still pass; the logger's level is restored afterwards.
    """
    loader = logging.getLogger("faiss.loader")
    level = loader.level
    loader.setLevel(logging.WARNING)
    try:
        import faiss
    finally:
        loader.setLevel(level)
    return faiss


class DenseChannel(Channel):
    """Embedding recall: ``faiss`` inner product over unit item vectors (cosine).

    The item vectors come from the SID stage's encoder and item text (cached by the encoder, so
    the vectors the SID stage computed are reused); queries go through the same encoder; an empty
    query searches with the normalised centroid of the history's item vectors.
    """

    name = "dense"

    def __init__(self, items, encoder: str = "default", description_chars: int = 0, cache_dir=None,
                 index_dir: Path | None = None, data_key: str = ""):  # fmt: skip
        faiss = import_faiss()

        from eg_grpo.sid.encoders import build_encoder, item_texts

        self.encoder = build_encoder(encoder, cache_dir=cache_dir)
        self.vectors = self.encoder.encode(
            item_texts(items, description_chars), show_progress=False
        )  # (N, D)
        self.encoder.cache_dir = None  # queries come in small batches: not worth a cache file each
        if not self.encoder.is_lookup:
            self.encoder.encode(["warm up"], show_progress=False)  # load the model outside the timed calls

        def build(folder):
            index = faiss.IndexFlatIP(self.vectors.shape[1])
            index.add(np.ascontiguousarray(self.vectors, dtype=np.float32))
            faiss.write_index(index, str(folder / "dense.faiss"))

        key = {
            "data": data_key,
            "encoder": encoder,
            "description_chars": description_chars,
            "kind": "flat-ip",
        }
        self.index = _cached(
            index_dir, "dense", key, build, lambda f: faiss.read_index(str(f / "dense.faiss"))
        )
        self.row_of = pd.Index(items["item_id"].to_numpy())
        self.item_ids = items["item_id"].to_numpy()

    def _query_vectors(self, batch) -> tuple[np.ndarray, np.ndarray]:
        """``(Q, D)`` vectors and the batch positions they belong to."""
        vectors = np.zeros((len(batch), self.vectors.shape[1]), dtype=np.float32)
        has = np.zeros(len(batch), dtype=bool)
        asked = [i for i, q in enumerate(batch.queries) if q.strip()]
        if asked:
            vectors[asked] = self.encoder.encode([batch.queries[i] for i in asked], show_progress=False)
            has[asked] = True
        for i, history in enumerate(batch.histories):
            if not has[i] and history:
                rows = self.row_of.get_indexer(history)
                centroid = self.vectors[rows[rows >= 0]].mean(0)
                if (norm := np.linalg.norm(centroid)) > 0:
                    vectors[i], has[i] = centroid / norm, True
        return vectors[has], np.flatnonzero(has)

    def recall(self, batch, quota):
        out = [np.empty(0, dtype=np.int64) for _ in range(len(batch))]
        vectors, where = self._query_vectors(batch)
        if len(where):
            _, found = self.index.search(vectors, min(quota, len(self.item_ids)))
            for j, i in enumerate(where):
                out[i] = self.item_ids[found[j][found[j] >= 0]].astype(np.int64)
        return out


class ItemCFChannel(Channel):
    """Item-to-item collaborative recall: ``implicit``'s cosine item-item model over the
    (user x item) clicks of the train split, scored against the request's history."""

    name = "item_cf"

    def __init__(self, log, neighbours: int = 100, index_dir: Path | None = None, data_key: str = ""):
        from implicit.nearest_neighbours import CosineRecommender

        self.row_of = pd.Index(log.items["item_id"].to_numpy())
        self.item_ids = log.items["item_id"].to_numpy()
        n_items = len(self.item_ids)

        def build(folder):
            train = log.requests.loc[log.requests["split"] == "train", ["request_id", "user_id"]]
            clicks = log.impressions[log.impressions["clicked"].to_numpy(bool)].merge(train, on="request_id")
            users = clicks["user_id"].to_numpy()
            matrix = sparse.csr_matrix(
                (np.ones(len(clicks), dtype=np.float32), (users, self.row_of.get_indexer(clicks["item_id"]))),
                shape=(int(log.requests["user_id"].max()) + 1, n_items),
            )
            matrix.data[:] = 1.0  # a user clicking an item twice is one co-click
            model = CosineRecommender(K=neighbours, num_threads=1)
            with warnings.catch_warnings():  # implicit converts its own transposed copy to CSR and warns
                warnings.filterwarnings("ignore", message="Method expects CSR input")
                model.fit(matrix, show_progress=False)
            model.save(str(folder / "item_cf.npz"))

        key = {"data": data_key, "neighbours": neighbours, "kind": "implicit-cosine"}
        self.model = _cached(
            index_dir, "item_cf", key, build, lambda f: CosineRecommender.load(str(f / "item_cf.npz"))
        )
        self.n_items = n_items

    def recall(self, batch, quota):
        out = [np.empty(0, dtype=np.int64) for _ in range(len(batch))]
        seeded = [i for i, h in enumerate(batch.histories) if h]
        if not seeded:
            return out
        rows, cols = [], []
        for j, i in enumerate(seeded):
            items = self.row_of.get_indexer(batch.histories[i])
            items = np.unique(items[items >= 0])
            rows.append(np.full(len(items), j))
            cols.append(items)
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        seeds = sparse.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(seeded), self.n_items)
        )
        found, scores = self.model.recommend(
            np.arange(len(seeded)), seeds, N=min(quota, self.n_items), filter_already_liked_items=False
        )
        for j, i in enumerate(seeded):
            keep = (scores[j] > 0) & (found[j] >= 0)
            out[i] = self.item_ids[found[j][keep]].astype(np.int64)
        return out


class OracleChannel(Channel):
    """The ceiling: the request's truly best items (:meth:`Oracle.best_items`)."""

    name = "oracle"

    def __init__(self, oracle: Oracle):
        self.oracle = oracle
        self.item_ids = oracle.log.items["item_id"].to_numpy()

    def recall(self, batch, quota):
        return [self.item_ids[self.oracle.best_items(int(r), quota)].astype(np.int64) for r in batch.rows]


def cluster_item_scores(log) -> dict[int, float]:
    """Item id -> the order inside a SID's cluster for the generative channels: what the logs show,
    train-split clicks, then impressions (``1e-3`` each) as the tie-break."""
    train = log.requests.loc[log.requests["split"] == "train", "request_id"]
    imps = log.impressions[log.impressions["request_id"].isin(train)]
    seen = imps.groupby("item_id")["clicked"].agg(["sum", "size"])
    return (seen["sum"] + 1e-3 * seen["size"]).to_dict()


class GenerativeChannel(Channel):
    """A trained SID generator (:class:`~eg_grpo.eval.recall.RecallChannel`): ``beam`` SIDs by
    constrained beam search, each expanded into its items (most clicked in the train split first;
    ``item_order="prior"``: an unclicked item at its cluster's mean score) until the quota; the beams are
    ranked by ``beam_score`` (``"model"`` or ``"constrained"``, see :class:`~eg_grpo.eval.recall.RecallChannel`).

    Raises:
        FileNotFoundError: ``model_dir`` holds no model.
        ValueError: the model's tokenizer lacks the SID tokens of ``sid_dir``.
    """

    def __init__(self, name: str, model_dir, sid_dir, log, beam: int = 20, max_history: int = 10,
                 use_titles: bool = False, device: str = "auto", batch_size: int = 16,
                 item_order: str = "clicks", beam_score: str = "model"):  # fmt: skip
        from eg_grpo.eval.recall import RecallChannel

        if not (Path(model_dir) / "config.json").exists():
            raise FileNotFoundError(
                f"generative model {name!r}: {model_dir} holds no model (config.json); train one with recipes/sft.py"
            )
        items = log.items
        titles = dict(zip(items["item_id"].tolist(), items["title"].tolist())) if use_titles else None
        self.name, self.beam = name, beam
        self.inner = RecallChannel(
            model_dir, sid_dir, item_scores=cluster_item_scores(log), item_titles=titles, max_history=max_history,
            use_titles=use_titles, device=device, batch_size=batch_size, item_order=item_order,
            beam_score=beam_score,
        )  # fmt: skip

    @classmethod
    def from_recall_channel(cls, name: str, inner, beam: int = 20) -> GenerativeChannel:
        """The channel over a :class:`~eg_grpo.eval.recall.RecallChannel` already built, e.g. by
        ``RecallChannel.from_model`` over the policy while it trains (give it
        ``item_scores=cluster_item_scores(log)`` to expand clusters as the arena does)."""
        channel = cls.__new__(cls)
        channel.name, channel.beam, channel.inner = name, beam, inner
        return channel

    def recall(self, batch, quota):
        found = self.inner.recall_batch(
            batch.queries, batch.histories, beam=self.beam, max_items=quota, profiles=batch.profiles
        )
        return [np.asarray(f, dtype=np.int64) for f in found]
