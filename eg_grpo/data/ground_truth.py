"""Graded ground-truth relevance of (request, item) pairs of a simulated log.

The simulator knows what each request was after (``requests.gt_*``) and what each item is
(``items.gt_*`` plus ``category_path`` and ``brand``). Relevance is graded 0-3:

- a request with a leaf category (``gt_category``): an item of that leaf scores
  ``3 - (number of unmet constraints)``, at least 1, where the constraints are the ones the
  request names: the product noun (``gt_noun``), the attribute (``gt_attribute``, matched against
  the item's colour, material and style) and the brand (``gt_brand``). An item of the same
  mid-level category but another leaf scores 1; anything else 0.
- a brand-only request (no ``gt_category``): items of the brand score 3, others 0.
- an empty query (``gt_intent == "empty"``, recommendation): ``gt_category`` is the latent need
  the user arrived with; items are graded against it as above (3 in the leaf, 1 in its mid).

Everything is computed from the tables, vectorised, so evaluation can grade any recalled item.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

INTENTS = ("category", "attribute", "brand", "empty")
GT_REQUEST_COLUMNS = ("gt_intent", "gt_category", "gt_brand", "gt_attribute", "gt_noun")
GT_ITEM_COLUMNS = ("gt_noun", "gt_colour", "gt_material", "gt_style", "gt_quality", "gt_popularity")
SEP = " > "


@dataclass
class GroundTruthCodes:
    """Integer codes of the ground-truth fields (one shared string vocabulary; ``-1`` = none).

    Item arrays are ``(num_items,)`` aligned with ``items`` rows; request arrays ``(num_requests,)``
    aligned with ``requests`` rows. ``item_row`` / ``request_row`` map ids to row positions.
    """

    item_leaf: np.ndarray
    item_mid: np.ndarray
    item_noun: np.ndarray
    item_brand: np.ndarray
    item_attrs: np.ndarray  # (num_items, 3): colour, material, style
    req_leaf: np.ndarray
    req_mid: np.ndarray
    req_noun: np.ndarray
    req_brand: np.ndarray
    req_attr: np.ndarray
    item_index: pd.Index  # item_id -> row
    request_index: pd.Index  # request_id -> row


def has_ground_truth(log) -> bool:
    """True when the log carries the simulator's ``gt_`` columns (a real dataset does not)."""
    return set(GT_REQUEST_COLUMNS) <= set(log.requests.columns) and set(GT_ITEM_COLUMNS) <= set(
        log.items.columns
    )


def _strings(values) -> np.ndarray:
    return np.asarray(pd.Series(values, dtype=object).fillna("").to_numpy(dtype=object))


def encode(items: pd.DataFrame, requests: pd.DataFrame) -> GroundTruthCodes:
    """Encodes the ground-truth fields of two tables into integer codes.

    Args:
        items: the items table with ``category_path``, ``brand`` and the ``gt_`` item columns.
        requests: the requests table with the ``gt_`` request columns.

    Returns:
        [`GroundTruthCodes`].

    Raises:
        KeyError: a ground-truth column is missing (the log is not simulated).
    """
    missing = [c for c in GT_ITEM_COLUMNS if c not in items.columns] + [
        c for c in GT_REQUEST_COLUMNS if c not in requests.columns
    ]
    if missing:
        raise KeyError(
            f"ground-truth column(s) {missing} missing: relevance needs a simulated log "
            "(recipes/make_data.py); a real dataset has no graded relevance"
        )
    paths = items["category_path"].tolist()
    fields = {
        "item_leaf": np.array([SEP.join(p) for p in paths], dtype=object),
        "item_mid": np.array([SEP.join(list(p)[:-1]) if len(p) > 1 else "" for p in paths], dtype=object),
        "item_noun": _strings(items["gt_noun"]),
        "item_brand": _strings(items["brand"]),
        "item_colour": _strings(items["gt_colour"]),
        "item_material": _strings(items["gt_material"]),
        "item_style": _strings(items["gt_style"]),
        "req_leaf": _strings(requests["gt_category"]),
        "req_noun": _strings(requests["gt_noun"]),
        "req_brand": _strings(requests["gt_brand"]),
        "req_attr": _strings(requests["gt_attribute"]),
    }
    fields["req_mid"] = np.array(
        [c.rsplit(SEP, 1)[0] if SEP in c else "" for c in fields["req_leaf"]], dtype=object
    )
    # One vocabulary for every field, so an attribute word compares equal wherever it appears.
    vocab = pd.Index(pd.unique(np.concatenate(list(fields.values()))))
    codes = {}
    for name, values in fields.items():
        c = vocab.get_indexer(values).astype(np.int64)
        c[values == ""] = -1
        codes[name] = c
    return GroundTruthCodes(
        item_leaf=codes["item_leaf"],
        item_mid=codes["item_mid"],
        item_noun=codes["item_noun"],
        item_brand=codes["item_brand"],
        item_attrs=np.stack([codes["item_colour"], codes["item_material"], codes["item_style"]], axis=1),
        req_leaf=codes["req_leaf"],
        req_mid=codes["req_mid"],
        req_noun=codes["req_noun"],
        req_brand=codes["req_brand"],
        req_attr=codes["req_attr"],
        item_index=pd.Index(items["item_id"].to_numpy()),
        request_index=pd.Index(requests["request_id"].to_numpy()),
    )


def graded_relevance(codes: GroundTruthCodes, req_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
    """Relevance 0-3 of aligned (request row, item row) pairs; any broadcastable shapes.

    Args:
        codes: from [`encode`].
        req_rows: row positions into the requests table, e.g. ``(R, 1)``.
        item_rows: row positions into the items table, e.g. ``(R, C)``.

    Returns:
        ``np.ndarray[int8]`` of the broadcast shape.
    """
    leaf, mid = codes.req_leaf[req_rows], codes.req_mid[req_rows]
    noun, brand, attr = codes.req_noun[req_rows], codes.req_brand[req_rows], codes.req_attr[req_rows]
    i_brand = codes.item_brand[item_rows]
    leaf_match = (leaf >= 0) & (codes.item_leaf[item_rows] == leaf)
    mid_match = (mid >= 0) & (codes.item_mid[item_rows] == mid)
    attrs = codes.item_attrs[item_rows]  # (..., 3)
    attr_ok = (attr < 0) | (attrs == np.expand_dims(attr, -1)).any(-1)
    unmet = (
        ((noun >= 0) & (codes.item_noun[item_rows] != noun)).astype(np.int8)
        + (~attr_ok).astype(np.int8)
        + ((brand >= 0) & (i_brand != brand)).astype(np.int8)
    )
    in_leaf = np.clip(3 - unmet, 1, 3).astype(np.int8)
    rel = np.where(leaf_match, in_leaf, np.where(mid_match, 1, 0))
    brand_only = (leaf < 0) & (brand >= 0)
    rel = np.where(brand_only, np.where(i_brand == brand, 3, 0), rel)
    return rel.astype(np.int8)


def _codes_of(log) -> GroundTruthCodes:
    # Encoding a 1M-item catalogue takes about a second; cache it on the log object, keyed by the
    # table objects so a replaced table is re-encoded.
    key = (id(log.items), id(log.requests), len(log.items), len(log.requests))
    cached = getattr(log, "_gt_codes", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    codes = encode(log.items, log.requests)
    object.__setattr__(log, "_gt_codes", (key, codes))
    return codes


def relevance(log, request_ids, item_ids) -> np.ndarray:
    """Graded relevance 0-3 of aligned (request_id, item_id) pairs of a simulated log.

    Args:
        log: a [`~eg_grpo.data.schema.SearchLog`] with ground-truth columns ([`has_ground_truth`]).
        request_ids: ``(n,)`` request ids (or one id, broadcast).
        item_ids: ``(n,)`` item ids, aligned with ``request_ids``.

    Returns:
        ``np.ndarray[int8]`` of shape ``(n,)``.

    Raises:
        KeyError: the log has no ground truth, or an id is not in its tables.
    """
    codes = _codes_of(log)
    request_ids, item_ids = np.broadcast_arrays(np.asarray(request_ids), np.asarray(item_ids))
    req_rows = codes.request_index.get_indexer(request_ids.ravel())
    item_rows = codes.item_index.get_indexer(item_ids.ravel())
    if (req_rows < 0).any():
        raise KeyError(f"request id {request_ids.ravel()[req_rows < 0][0]} is not in the log's requests")
    if (item_rows < 0).any():
        raise KeyError(f"item id {item_ids.ravel()[item_rows < 0][0]} is not in the log's items")
    return graded_relevance(codes, req_rows, item_rows).reshape(request_ids.shape)
