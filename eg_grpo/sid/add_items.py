"""A live catalogue: items launched after the SIDs were built join them without a rebuild or a retrain.

:func:`extend_codebook` gives each new item a SID with the parent codebook's frozen model
(:meth:`SIDCodebook.assign`, level 1 inside the item's category), so it joins a cluster the trained
generator already writes and is recalled through it. Every existing item keeps its SID: that is
what lets a model trained on the parent version serve the child (see :func:`check_keeps_sids` and
:func:`eg_grpo.io.check_lineage`). A cluster pushed past ``max_cluster_size`` keeps its old items
and the new items nearest its codeword sum; the overflow opens fresh SIDs at free last-level codes
beside it (:class:`eg_grpo.sid.split._SpareSIDs`), so a popular cluster never grows without bound.

The stage around it is :mod:`eg_grpo.stages.add_items`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from eg_grpo.sid.codebook import SIDCodebook
from eg_grpo.sid.split import _SpareSIDs, sid_keys

# What each new item did; ``joined``: its SID already held items, ``opened``: the frozen model put it
# at an unused SID, ``overflow``: its SID was full, so it went to a free code beside it.
OUTCOMES = ("joined", "opened", "overflow")
UNKNOWN_CATEGORY_CHOICES = ("error", "all_codes")
# Item columns whose values define an item: an id given again with other values is another item.
CONTENT_COLUMNS = ("title", "brand", "category_path", "price")


@dataclass
class Placement:
    """Where the new items went: their SIDs, each one's outcome, and the touched clusters' sizes.

    Args:
        item_ids: ``(M,)`` new item ids, in the order given.
        codes: ``(M, L)`` their final SIDs.
        assigned: ``(M, L)`` the SIDs the frozen model gave (differs from ``codes`` on overflow).
        outcomes: ``(M,)`` one of :data:`OUTCOMES` per item.
        sizes_before: SID tuple -> items before (0 for a SID opened here), for every touched SID.
        sizes_after: SID tuple -> items after, for the same SIDs.
    """

    item_ids: np.ndarray
    codes: np.ndarray
    assigned: np.ndarray
    outcomes: np.ndarray
    sizes_before: dict = field(default_factory=dict)
    sizes_after: dict = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """One row per new item: ``item_id``, ``code_0..``, ``outcome``, ``assigned_sid``."""
        out = pd.DataFrame({"item_id": self.item_ids})
        for level in range(self.codes.shape[1]):
            out[f"code_{level}"] = self.codes[:, level]
        out["outcome"] = self.outcomes
        out["assigned_sid"] = ["-".join(map(str, row)) for row in self.assigned.tolist()]
        return out

    def summary(self) -> dict:
        """Counts per outcome and the touched clusters (``sid``, ``before``, ``after``), largest first."""
        counts = {o: int((self.outcomes == o).sum()) for o in OUTCOMES}
        clusters = sorted(
            (
                {"sid": list(s), "before": self.sizes_before[s], "after": self.sizes_after[s]}
                for s in self.sizes_after
            ),
            key=lambda c: (-c["after"], c["sid"]),
        )
        return {"new_items": len(self.item_ids), **counts, "touched_sids": len(clusters),
                "new_sids": sum(c["before"] == 0 for c in clusters), "clusters": clusters}  # fmt: skip


def _content(items: pd.DataFrame) -> pd.DataFrame:
    out = items.set_index("item_id")[list(CONTENT_COLUMNS)].copy()
    out["category_path"] = out["category_path"].map(lambda p: tuple(str(c) for c in p))
    out["price"] = out["price"].astype(float).round(6)
    return out


def split_new_and_known(
    new_items: pd.DataFrame, book: SIDCodebook, known_items: pd.DataFrame | None
) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows of ``new_items`` that are really new, and the ids already in ``book`` with equal content.

    An id the codebook already holds is accepted (and skipped) only when ``known_items`` has it with
    the same title, brand, category path and price: a table may repeat the catalogue it extends.

    Raises:
        ValueError: an id already in the codebook with other content, or whose content cannot be
            compared (``known_items`` lacks it).
    """
    ids = new_items["item_id"].to_numpy()
    existing = np.isin(ids, book.item_ids)
    if not existing.any():
        return new_items, ids[:0]
    if known_items is None or not np.isin(ids[existing], known_items["item_id"].to_numpy()).all():
        first = int(ids[existing][0])
        raise ValueError(
            f"{int(existing.sum())} new item id(s) already have a SID in the parent version (e.g. {first}) and "
            "their catalogue content is unknown here, so they cannot be told apart from other items with the "
            "same id; give new items unused ids, or pass --data_dir (the data the SIDs were built from)"
        )
    given = _content(new_items[existing])
    known = _content(known_items[known_items["item_id"].isin(ids[existing])]).loc[given.index]
    differs = ~(given == known).all(axis=1)
    if differs.any():
        first = differs.index[differs.to_numpy()][0]
        raise ValueError(
            f"{int(differs.sum())} new item id(s) already exist with other content, e.g. item {first}: "
            f"{dict(known.loc[first])} in the catalogue, {dict(given.loc[first])} given. An item's id is its "
            "identity: give the changed item a new id"
        )
    return new_items[~existing], ids[existing]


def _codeword_sums(book: SIDCodebook, codes: np.ndarray) -> np.ndarray:
    books = book.quantizer.codebooks
    return sum(cb[torch.as_tensor(codes[:, level])] for level, cb in enumerate(books)).numpy()


def extend_codebook(
    book: SIDCodebook,
    new_items: pd.DataFrame,
    vectors: np.ndarray | None = None,
    unknown_category: str = "error",
    max_cluster_size: int | None = None,
) -> tuple[SIDCodebook, Placement]:
    """The parent codebook plus ``new_items``, each with a SID from the frozen model.

    Args:
        book: the parent codebook; it must hold a frozen model (not ``reference`` SIDs).
        new_items: the new items (items.parquet columns, unique ids not in ``book``; see
            :func:`split_new_and_known` for ids given again).
        vectors: ``(M, D)`` their text vectors, needed when ``book`` was built from given vectors.
        unknown_category: ``"error"`` or ``"all_codes"``, see :meth:`SIDCodebook.assign_vectors`.
        max_cluster_size: cluster limit (``None``: the parent's build setting; ``0``: no limit).

    Returns:
        ``(child codebook, placement)``. The child holds the parent's items first, in the parent's
        order and with their SIDs, then the new items.

    Raises:
        RuntimeError: ``book`` has no frozen model. ValueError / KeyError: unknown categories
            (under ``"error"``), vectors of the wrong size, no free code left beside a full cluster.
    """
    if unknown_category not in UNKNOWN_CATEGORY_CHOICES:
        raise ValueError(
            f"unknown_category must be one of {UNKNOWN_CATEGORY_CHOICES}, got {unknown_category!r}"
        )
    if book.quantizer is None:
        raise RuntimeError(
            f"the parent SIDs ('{book.method}') have no frozen model to place new items with; add items to SIDs "
            "built with method cq_sid, rqvae or rqkmeans"
        )
    ids = new_items["item_id"].to_numpy(dtype=np.int64)
    if np.isin(ids, book.item_ids).any():
        raise ValueError(
            f"item {int(ids[np.isin(ids, book.item_ids)][0])} already has a SID in the parent version"
        )
    # encoded once here: the assignment and the cluster cap both need the vectors
    vectors = _encode(book, new_items) if vectors is None else np.asarray(vectors, dtype=np.float32)
    assigned = book.assign(new_items.reset_index(drop=True), vectors, unknown_category=unknown_category)
    limit = book.config.get("max_cluster_size", 0) if max_cluster_size is None else max_cluster_size
    codes = assigned.copy()
    radix = max(book.codebook_sizes)
    old_keys, new_keys = sid_keys(book.codes, radix), sid_keys(assigned, radix)
    old_sizes = dict(zip(*np.unique(old_keys, return_counts=True)))
    overflow = np.zeros(len(ids), dtype=bool)
    if limit and limit > 0:
        overflow = _cap_clusters(book, vectors, new_items, codes, new_keys, old_sizes, limit)
    outcomes = np.where(overflow, "overflow", np.where(np.isin(new_keys, old_keys), "joined", "opened"))
    child = SIDCodebook(
        book.codebook_sizes, np.concatenate([book.item_ids, ids]), np.concatenate([book.codes, codes]),
        book.method, book.quantizer, book.encoder, book.encoder_dims, book.splits,
        {**book.config, "root_num_items": int(book.config.get("root_num_items", len(book.item_ids)))},
    )  # fmt: skip
    touched = np.unique(np.concatenate([assigned, codes]), axis=0)
    after = dict(zip(*np.unique(sid_keys(child.codes, radix), return_counts=True)))
    touched_keys = sid_keys(touched, radix)
    placement = Placement(
        ids, codes, assigned, outcomes,
        {tuple(s): int(old_sizes.get(k, 0)) for s, k in zip(touched.tolist(), touched_keys.tolist())},
        {tuple(s): int(after.get(k, 0)) for s, k in zip(touched.tolist(), touched_keys.tolist())},
    )  # fmt: skip
    return child, placement


def _cap_clusters(book, vectors, new_items, codes, new_keys, old_sizes, limit) -> np.ndarray:
    """Moves the new items that do not fit their cluster to fresh SIDs beside it (in place); returns the mask."""
    if len(set(book.codebook_sizes)) != 1:
        raise ValueError(
            f"capping clusters needs one codebook size for every level, got {book.codebook_sizes}; pass "
            "max_cluster_size 0"
        )
    overflow = np.zeros(len(codes), dtype=bool)
    uniq, counts = np.unique(new_keys, return_counts=True)
    full = [(k, c) for k, c in zip(uniq.tolist(), counts.tolist()) if old_sizes.get(k, 0) + c > limit]
    if not full:
        return overflow
    latents = book.quantizer.latent(vectors).numpy()
    spare = _SpareSIDs(np.concatenate([book.codes, codes]), book.codebook_sizes[0])
    for key, _count in full:
        rows = np.flatnonzero(new_keys == key)
        room = max(0, limit - int(old_sizes.get(key, 0)))
        # the new items nearest the cluster's centre stay; old items never move
        centre = _codeword_sums(book, codes[rows[:1]])[0]
        rows = rows[np.argsort(((latents[rows] - centre) ** 2).sum(1), kind="stable")]
        moved = rows[room:]
        sid = tuple(int(c) for c in codes[rows[0]])
        for part in range(math.ceil(len(moved) / limit)):
            chunk = moved[part * limit : (part + 1) * limit]
            codes[chunk] = spare.take(sid)
        overflow[moved] = True
    return overflow


def _encode(book: SIDCodebook, items: pd.DataFrame) -> np.ndarray:
    """The items' vectors from the codebook's own encoder, with the build's text recipe."""
    from eg_grpo.sid.encoders import MAX_DESCRIPTION_CHARS, build_encoder, item_texts

    if book.encoder in (None, "none"):
        raise ValueError(
            "the parent SIDs were built from given item vectors: pass the new items' vectors (same model) "
            "with --new_item_vectors"
        )
    encoder = build_encoder(book.encoder, cache_dir=book.config.get("cache_dir"))
    texts = item_texts(items, book.config.get("description_chars", MAX_DESCRIPTION_CHARS))
    return np.asarray(encoder.encode(texts, show_progress=False), dtype=np.float32)


def read_assignments(sid_dir: str | Path) -> pd.DataFrame:
    """``assignments.parquet`` of a SID folder (``SID_DIR/codebook/`` or a codebook folder itself)."""
    sid_dir = Path(sid_dir)
    path = sid_dir / "codebook" / "assignments.parquet"
    return pd.read_parquet(path if path.exists() else sid_dir / "assignments.parquet")


def check_keeps_sids(old: SIDCodebook | pd.DataFrame, new: SIDCodebook | pd.DataFrame) -> None:
    """Raises ValueError unless every item of ``old`` is in ``new`` with the same SID (codebooks or tables)."""

    def table(book):
        if isinstance(book, pd.DataFrame):
            return book
        out = pd.DataFrame({"item_id": book.item_ids})
        for level in range(book.codes.shape[1]):
            out[f"code_{level}"] = book.codes[:, level]
        return out

    old, new = table(old), table(new)
    code_columns = [c for c in old.columns if c.startswith("code_")]
    if code_columns != [c for c in new.columns if c.startswith("code_")]:
        raise ValueError(f"the SID versions have other lengths ({len(code_columns)} codes before)")
    merged = old.merge(new, on="item_id", how="left", suffixes=("", "_new"), indicator=True)
    lost = merged["_merge"] != "both"
    if lost.any():
        raise ValueError(
            f"{int(lost.sum())} item(s) of the earlier SID version are missing from the later one "
            f"(e.g. item {int(merged['item_id'][lost].iloc[0])})"
        )
    moved = np.zeros(len(merged), dtype=bool)
    for column in code_columns:
        moved |= merged[column].to_numpy() != merged[f"{column}_new"].to_numpy()
    if moved.any():
        raise ValueError(
            f"{int(moved.sum())} item(s) have another SID in the later version (e.g. item "
            f"{int(merged['item_id'][moved].iloc[0])}): a model trained on the earlier one would recall the wrong items"
        )
