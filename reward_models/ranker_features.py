"""Features of the ranking simulator for (request, item) pairs, built in matrix operations.

Item-side arrays are computed once from the catalogue and the train-split impressions;
request-side matrices (query TF-IDF, the query's category distribution, the user's history
profile) once per search log. A pair's features are then gathers and row-wise sparse products,
so thousands of pairs cost one pass, with no Python loop over pairs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

# Column order of the feature matrix built by `RankerFeatures.build`.
FEATURE_NAMES = (
    "log_position",  # log1p(slot); training: the logged slot; scoring: a fixed slot (position de-biasing)
    "text_cosine",  # TF-IDF cosine of query and item text (title, category path, brand, description)
    "query_coverage",  # share of the query's (in-vocabulary) words found in the item text
    "query_empty",  # 1 for a query-less (recommendation) request
    "query_words",  # number of in-vocabulary query words
    "query_top_category_prob",  # P(item's top-level category | query words), from the catalogue
    "query_leaf_category_prob",  # P(item's leaf category | query words)
    "history_length",  # log1p(number of items in the user's history)
    "history_top_category_share",  # share of the history in the item's top-level category
    "history_leaf_category_share",
    "history_brand_share",  # user-brand affinity
    "history_text_cosine",  # TF-IDF cosine of the item and the user's history centroid (style, brand, leaf)
    "in_history",  # the user already has this item
    "log_price",
    "price_z_in_leaf",  # log price relative to the item's leaf category (how premium it is)
    "history_price_z",  # mean price_z_in_leaf of the history: the user's price tier (NaN without history)
    "history_price_gap_sq",  # (price_z_in_leaf - history_price_z)^2: user-price affinity
    "log_impressions",  # popularity, train split only
    "smoothed_ctr",
    "smoothed_purchase_rate",
    "brand_smoothed_ctr",  # brand-level rate: informative for items with few impressions
)
QUERY_ITEM_FEATURES = (1, 2, 4, 5, 6)  # the relevance head sees only how the query matches the item
_DENSE_LIMIT = 4_000_000  # (distinct requests x vocabulary) up to which request rows are densified
_CHUNK_ROWS = 65_536  # pairs per feature-building chunk (bounds memory when building training rows)


def _text_dots(r, req_rows: np.ndarray, item_tfidf: sparse.csr_matrix) -> tuple[np.ndarray, ...]:
    """Query·item TF-IDF cosine, query words found in the item, history-centroid·item cosine; each ``(M,)``.

    ``item_tfidf`` holds the M pairs' item rows. Each stored entry (pair m, word v) of it looks up
    the request's query and history weight of word v: from dense rows of the batch's distinct
    requests when they are small (a batch touches few requests), by sparse lookup otherwise.
    """
    m = len(req_rows)
    entry_row = np.repeat(np.arange(m), np.diff(item_tfidf.indptr))  # (nnz,) pair of each entry
    unique, inverse = np.unique(req_rows, return_inverse=True)
    entry_req, words = inverse.reshape(-1)[entry_row], item_tfidf.indices
    query, history = r.query_tfidf[unique], r.history_tfidf[unique]
    if len(unique) * query.shape[1] <= _DENSE_LIMIT:
        q, h = query.toarray()[entry_req, words], history.toarray()[entry_req, words]
    else:
        q = np.asarray(query[entry_req, words]).reshape(-1)
        h = np.asarray(history[entry_req, words]).reshape(-1)
    data = item_tfidf.data
    return (
        np.bincount(entry_row, weights=data * q, minlength=m),
        np.bincount(entry_row, weights=(q > 0).astype(np.float64), minlength=m),
        np.bincount(entry_row, weights=data * h, minlength=m),
    )


def _category_ids(paths: pd.Series, depth: int | None) -> tuple[np.ndarray, list[str]]:
    """Integer ids of each item's top-level (``depth=1``) or leaf (``None``) category; -1 if none."""
    names = [" > ".join(p[:depth] if depth else p) if len(p) else "" for p in paths]
    vocab = sorted(set(names) - {""})
    index = {c: i for i, c in enumerate(vocab)}
    return np.array([index.get(c, -1) for c in names], dtype=np.int64), vocab


def _one_hot(ids: np.ndarray, n: int) -> sparse.csr_matrix:
    """``(len(ids), n)`` one-hot rows; an id of -1 gives an empty row."""
    keep = ids >= 0
    rows = np.nonzero(keep)[0]
    return sparse.csr_matrix((np.ones(len(rows)), (rows, ids[keep])), shape=(len(ids), max(n, 1)))


class RankerFeatures:
    """Builds the :data:`FEATURE_NAMES` matrix for (request, item) pairs of one search log.

    Args:
        items: the ``items`` table.
        train_impressions: impressions of the train split (popularity and CTR statistics come
            from them only, so the valid split stays unseen).
        ctr_prior_strength: pseudo-impressions of the Bayesian smoothing of per-item rates.
    """

    def __init__(
        self, items: pd.DataFrame, train_impressions: pd.DataFrame, ctr_prior_strength: float = 20.0
    ):
        items = items.sort_values("item_id")
        self.item_ids = items["item_id"].to_numpy(np.int64)
        text = (
            items["title"].astype(str)
            + " "
            + items["category_path"].map(lambda p: " ".join(map(str, p)))
            + " "
            + items["brand"].astype(str)
        )
        if "description" in items.columns:  # descriptions carry synonyms ("also known as ...")
            text = text + " " + items["description"].fillna("").astype(str)
        self.vectorizer = TfidfVectorizer(sublinear_tf=True, dtype=np.float32)
        self.item_tfidf = self.vectorizer.fit_transform(text).tocsr()  # (N, V), rows L2-normalised
        self.item_words = self.item_tfidf.copy()
        self.item_words.data[:] = 1.0  # (N, V) binary
        self.top_cat, self.top_names = _category_ids(items["category_path"], 1)
        self.leaf_cat, self.leaf_names = _category_ids(items["category_path"], None)
        brands = items["brand"].astype(str).to_numpy()
        self.brand_names, self.brand = np.unique(brands, return_inverse=True)
        self.price = items["price"].to_numpy(np.float64)
        self.log_price = np.log1p(np.maximum(self.price, 0.0))
        leaf_df = pd.DataFrame({"c": self.leaf_cat, "p": self.log_price})
        stats = leaf_df.groupby("c")["p"].agg(["median", "std"]).fillna(0.0)
        mid = stats["median"].reindex(self.leaf_cat).fillna(0.0).to_numpy()
        std = stats["std"].reindex(self.leaf_cat).fillna(1.0).to_numpy()
        self.price_z = (self.log_price - mid) / np.where(std > 0, std, 1.0)  # (N,) price tier within the leaf
        # Word -> category distributions from the catalogue itself: no click leaks into them.
        self.word_top = normalize(self.item_words.T @ _one_hot(self.top_cat, len(self.top_names)), norm="l1")
        self.word_leaf = normalize(
            self.item_words.T @ _one_hot(self.leaf_cat, len(self.leaf_names)), norm="l1"
        )
        self.ctr_prior_strength = float(ctr_prior_strength)
        rows = self.item_rows(train_impressions["item_id"].to_numpy(np.int64))
        n = len(self.item_ids)
        self.impressions = np.bincount(rows, minlength=n).astype(np.float64)
        self.clicks = np.bincount(rows, weights=train_impressions["clicked"].to_numpy(float), minlength=n)
        self.purchases = np.bincount(
            rows, weights=train_impressions["purchased"].to_numpy(float), minlength=n
        )
        total = max(self.impressions.sum(), 1.0)
        self.global_ctr = self.clicks.sum() / total
        self.global_purchase_rate = self.purchases.sum() / total
        n_brands = len(self.brand_names)
        brand_imps = np.bincount(self.brand, weights=self.impressions, minlength=n_brands)
        brand_clicks = np.bincount(self.brand, weights=self.clicks, minlength=n_brands)
        a = self.ctr_prior_strength
        self.brand_ctr = ((brand_clicks + a * self.global_ctr) / (brand_imps + a))[self.brand]  # (N,)
        self.requests: _RequestTables | None = None

    def item_rows(self, item_ids: np.ndarray) -> np.ndarray:
        """Row of each item id in the item arrays; KeyError naming an unknown id."""
        rows = np.searchsorted(self.item_ids, item_ids)
        rows = np.minimum(rows, len(self.item_ids) - 1)
        bad = self.item_ids[rows] != item_ids
        if bad.any():
            raise KeyError(
                f"item id {int(np.asarray(item_ids)[bad][0])} is not in the ranker's catalogue "
                f"({int(bad.sum())} unknown); retrain the ranker on this data (recipes/train_ranker.py)"
            )
        return rows

    def attach_requests(self, requests: pd.DataFrame) -> None:
        """Builds the request-side matrices for every request of the log (vectorised)."""
        self.requests = _RequestTables(self, requests)

    def request_rows(self, request_ids) -> np.ndarray:
        if self.requests is None:
            raise RuntimeError("call attach_requests(log.requests) before scoring")
        return self.requests.rows(np.asarray(request_ids, dtype=np.int64))

    def build(self, req_rows: np.ndarray, item_rows: np.ndarray, positions, leave_one_out=None) -> np.ndarray:
        """The ``(M, F)`` float32 feature matrix of M (request, item) pairs.

        Args:
            req_rows: ``(M,)`` rows from :meth:`request_rows`.
            item_rows: ``(M,)`` rows from :meth:`item_rows`.
            positions: ``(M,)`` logged positions, or one int (the fixed scoring position).
            leave_one_out: ``(clicked (M,), purchased (M,))`` of the pairs themselves when they are
                train impressions, removed from the item's rates so a row never sees its own label.
        """
        m = len(req_rows)
        positions = np.broadcast_to(np.asarray(positions), (m,))
        if m > _CHUNK_ROWS:
            parts = [
                self.build(
                    req_rows[i : i + _CHUNK_ROWS],
                    item_rows[i : i + _CHUNK_ROWS],
                    positions[i : i + _CHUNK_ROWS],
                    None
                    if leave_one_out is None
                    else tuple(np.asarray(v)[i : i + _CHUNK_ROWS] for v in leave_one_out),
                )
                for i in range(0, m, _CHUNK_ROWS)
            ]
            return np.concatenate(parts)
        r = self.requests
        feats = np.empty((m, len(FEATURE_NAMES)), dtype=np.float32)
        feats[:, 0] = np.log1p(positions)
        feats[:, 1], overlap, history_cosine = _text_dots(r, req_rows, self.item_tfidf[item_rows])
        q_words = r.query_words_count[req_rows]
        feats[:, 2] = overlap / np.maximum(q_words, 1.0)
        feats[:, 3] = r.query_empty[req_rows]
        feats[:, 4] = q_words
        top, leaf = self.top_cat[item_rows], self.leaf_cat[item_rows]
        feats[:, 5] = _gather(r.query_top, req_rows, top)
        feats[:, 6] = _gather(r.query_leaf, req_rows, leaf)
        feats[:, 7] = np.log1p(r.history_length[req_rows])
        feats[:, 8] = _gather(r.history_top, req_rows, top)
        feats[:, 9] = _gather(r.history_leaf, req_rows, leaf)
        feats[:, 10] = _gather(r.history_brand, req_rows, self.brand[item_rows])
        feats[:, 11] = history_cosine
        feats[:, 12] = _gather(r.history_items, req_rows, item_rows)
        feats[:, 13] = self.log_price[item_rows]
        feats[:, 14] = self.price_z[item_rows]
        feats[:, 15] = r.history_price_z[req_rows]  # NaN without history
        feats[:, 16] = (feats[:, 14] - feats[:, 15]) ** 2
        imps, clicks, buys = self.impressions[item_rows], self.clicks[item_rows], self.purchases[item_rows]
        if leave_one_out is not None:
            imps = imps - 1.0
            clicks = clicks - np.asarray(leave_one_out[0], dtype=float)
            buys = buys - np.asarray(leave_one_out[1], dtype=float)
        a = self.ctr_prior_strength
        feats[:, 17] = np.log1p(imps)
        feats[:, 18] = (clicks + a * self.global_ctr) / (imps + a)
        feats[:, 19] = (buys + a * self.global_purchase_rate) / (imps + a)
        feats[:, 20] = self.brand_ctr[item_rows]
        return feats


def _gather(matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``matrix[rows[m], cols[m]]`` for each m; 0 where ``cols[m] == -1`` (unknown category)."""
    out = np.zeros(len(rows), dtype=np.float64)
    ok = cols >= 0
    if ok.any():
        out[ok] = np.asarray(matrix[rows[ok], cols[ok]]).reshape(-1)
    return out


class _RequestTables:
    """Request-side matrices, one row per request of the log (sorted by request id)."""

    def __init__(self, feats: RankerFeatures, requests: pd.DataFrame):
        requests = requests.sort_values("request_id")
        self.request_ids = requests["request_id"].to_numpy(np.int64)
        self.query_tfidf = feats.vectorizer.transform(requests["query"].astype(str)).tocsr()  # (R, V)
        self.query_words = self.query_tfidf.copy()
        self.query_words.data[:] = 1.0
        self.query_words_count = np.diff(self.query_words.indptr).astype(np.float64)
        self.query_empty = (requests["query"].astype(str).str.strip() == "").to_numpy(np.float32)
        denominators = sparse.diags(1.0 / np.maximum(self.query_words_count, 1.0))
        self.query_top = (denominators @ (self.query_words @ feats.word_top)).tocsr()  # (R, C_top)
        self.query_leaf = (denominators @ (self.query_words @ feats.word_leaf)).tocsr()  # (R, C_leaf)
        # History as a (R, N) matrix over item rows; ids missing from the catalogue are dropped.
        lengths = np.array([len(h) for h in requests["history"]], dtype=np.int64)
        flat = np.concatenate(
            [np.asarray(h, dtype=np.int64) for h in requests["history"]] + [np.zeros(0, np.int64)]
        )
        pos = np.minimum(np.searchsorted(feats.item_ids, flat), len(feats.item_ids) - 1)
        known = feats.item_ids[pos] == flat
        owner = np.repeat(np.arange(len(requests)), lengths)[known]
        n_items = len(feats.item_ids)
        hist = sparse.csr_matrix((np.ones(len(owner)), (owner, pos[known])), shape=(len(requests), n_items))
        self.history_length = np.asarray(hist.sum(axis=1)).reshape(-1)
        self.history_items = hist.copy()
        self.history_items.data[:] = 1.0
        share = sparse.diags(1.0 / np.maximum(self.history_length, 1.0)) @ hist  # rows sum to 1
        self.history_top = (share @ _one_hot(feats.top_cat, len(feats.top_names))).tocsr()
        self.history_leaf = (share @ _one_hot(feats.leaf_cat, len(feats.leaf_names))).tocsr()
        self.history_brand = (share @ _one_hot(feats.brand, len(feats.brand_names))).tocsr()
        self.history_tfidf = normalize(
            share @ feats.item_tfidf
        ).tocsr()  # (R, V) history centroid, L2-normalised
        # Mean price_z of the history: the user's price tier; NaN for a user without history.
        self.history_price_z = np.where(self.history_length > 0, share @ feats.price_z, np.nan)

    def rows(self, request_ids: np.ndarray) -> np.ndarray:
        rows = np.minimum(np.searchsorted(self.request_ids, request_ids), len(self.request_ids) - 1)
        bad = self.request_ids[rows] != request_ids
        if bad.any():
            raise KeyError(
                f"request_id {int(request_ids[bad][0])} is not in the search log given to the ranker "
                f"({int(bad.sum())} unknown); pass the data_dir the RL rows were built from"
            )
        return rows
