"""`SIDCodebook`: item <-> SID maps, the valid SIDs, save/load, and assigning new items.

On disk (``save(dir)``) a codebook is a folder:

- ``codebook.json``: format version, method, ``codebook_sizes``, encoder name, level-1 category
  slices (or null), encoder MLP sizes, build config;
- ``assignments.parquet``: ``item_id``, ``code_0`` ... ``code_{L-1}``;
- ``quantizer.pt``: the frozen encoder MLP weights and codebooks (absent for reference SIDs);
- ``splits.npz``: the oversized-cluster splits (original SID -> part centroids and SIDs).

``assign`` places new items with the frozen model, so a daily catalogue change needs no retrain:
vectors -> latent -> residual quantisation (level 1 inside the item's category slice) -> the
split table. It never changes the SIDs of existing items.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from eg_grpo.sid.constraints import UNCATEGORISED
from eg_grpo.sid.encoders import MAX_DESCRIPTION_CHARS, build_encoder, item_texts
from eg_grpo.sid.rqvae import FrozenQuantizer
from eg_grpo.sid.split import apply_splits, sid_keys

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


class SIDCodebook:
    """The SIDs of a catalogue.

    Args:
        codebook_sizes: codes per level, e.g. ``(256, 256, 256)``.
        item_ids: ``(N,)`` item ids (unique).
        codes: ``(N, L)`` the SID of each item.
        method: how the SIDs were built (``cq_sid``, ``rqvae``, ``rqkmeans``, ``reference``).
        quantizer: the frozen model for :meth:`assign` (None: this codebook cannot assign).
        encoder: the text encoder name the quantizer expects vectors from.
        encoder_dims: the encoder MLP layer sizes (to rebuild it on load).
        splits: oversized-cluster splits from :func:`eg_grpo.sid.split.split_oversized`.
        config: the build config, kept for provenance.
    """

    def __init__(
        self,
        codebook_sizes,
        item_ids,
        codes,
        method: str = "cq_sid",
        quantizer: FrozenQuantizer | None = None,
        encoder: str | None = None,
        encoder_dims: list[int] | None = None,
        splits: dict | None = None,
        config: dict | None = None,
    ):
        self.codebook_sizes = tuple(int(k) for k in codebook_sizes)
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        self.codes = np.asarray(codes, dtype=np.int64)
        if self.codes.shape != (len(self.item_ids), len(self.codebook_sizes)):
            raise ValueError(
                f"codes shape {self.codes.shape} != (items {len(self.item_ids)}, levels {len(self.codebook_sizes)})"
            )
        if len(np.unique(self.item_ids)) != len(self.item_ids):
            raise ValueError("duplicate item ids in the codebook")
        if (self.codes < 0).any() or (self.codes >= np.asarray(self.codebook_sizes)).any():
            raise ValueError("a code is outside its level's codebook size")
        self.method, self.quantizer, self.encoder = method, quantizer, encoder
        self.encoder_dims, self.splits, self.config = encoder_dims, splits or {}, config or {}
        self._radix = max(self.codebook_sizes)
        self._row_of = pd.Index(self.item_ids)
        keys = sid_keys(self.codes, self._radix)
        self._order = np.argsort(keys, kind="stable")
        self._sorted_keys = keys[self._order]
        self._encoder_obj = None

    @property
    def num_levels(self) -> int:
        return len(self.codebook_sizes)

    @property
    def category_slices(self) -> dict | None:
        return None if self.quantizer is None else self.quantizer.slices

    def _key(self, sid) -> int:
        sid = tuple(int(c) for c in sid)
        if len(sid) != self.num_levels:
            raise ValueError(f"a SID has {self.num_levels} codes, got {sid}")
        return int(sid_keys(np.asarray([sid]), self._radix)[0])

    def sid_of(self, item_id: int) -> tuple[int, ...]:
        """The SID of one item; KeyError when the item is not in the codebook."""
        pos = self._row_of.get_indexer([item_id])[0]
        if pos < 0:
            raise KeyError(f"item {item_id} is not in the codebook; use assign() for new items")
        return tuple(int(c) for c in self.codes[pos])

    def sids_of(self, item_ids) -> np.ndarray:
        """``(n, L)`` SIDs of many items (vectorised); KeyError naming the first unknown item."""
        pos = self._row_of.get_indexer(np.asarray(item_ids))
        if (pos < 0).any():
            raise KeyError(f"item {np.asarray(item_ids)[pos < 0][0]} is not in the codebook")
        return self.codes[pos]

    def items_of(self, sid) -> np.ndarray:
        """Item ids holding ``sid`` (empty array for an unused SID)."""
        key = self._key(sid)
        lo, hi = np.searchsorted(self._sorted_keys, [key, key + 1])
        return self.item_ids[self._order[lo:hi]]

    def valid_sids(self) -> np.ndarray:
        """``(S, L)`` all SIDs that hold at least one item, sorted."""
        return np.unique(self.codes, axis=0)

    def contains(self, sid) -> bool:
        key = self._key(sid)
        i = np.searchsorted(self._sorted_keys, key)
        return bool(i < len(self._sorted_keys) and self._sorted_keys[i] == key)

    def sid_token_ids(self, vocab) -> list[list[int]]:
        """Every valid SID as token ids ending with eos (for the decoding trie)."""
        if tuple(vocab.codebook_sizes) != self.codebook_sizes:
            raise ValueError(f"vocab codebook sizes {vocab.codebook_sizes} != codebook {self.codebook_sizes}")
        return [vocab.encode(sid) for sid in self.valid_sids().tolist()]

    # ---- new items ----------------------------------------------------------------------------

    def assign_vectors(
        self, vectors: np.ndarray, top_categories=None, unknown_category: str = "error"
    ) -> np.ndarray:
        """SIDs ``(M, L)`` of new items from their text vectors ``(M, D)``.

        Args:
            vectors: text vectors of the new items, from the codebook's encoder.
            top_categories: ``(M,)`` top-level category per item (needed when level 1 is
                category-guided; ``""`` = uncategorised).
            unknown_category: ``"error"`` (default) rejects a category the codebook has no
                level-1 codes for; ``"all_codes"`` quantises such items against every level-1 code.

        Raises:
            RuntimeError: when the codebook has no frozen model (reference SIDs).
            ValueError / KeyError: missing or unknown categories under ``"error"``.
        """
        if self.quantizer is None:
            raise RuntimeError(
                f"this '{self.method}' codebook has no model to assign new items with; rebuild with "
                "method cq_sid, rqvae or rqkmeans"
            )
        slices = self.quantizer.slices
        vectors = np.asarray(vectors, dtype=np.float32)
        if slices is None:
            codes, z = self.quantizer.codes(vectors, None)
            return apply_splits(codes, z.numpy(), self._radix, self.splits)
        if top_categories is None:
            raise ValueError(
                "this codebook's level 1 is category-guided: pass each new item's top-level category"
            )
        groups = np.asarray(top_categories, dtype=object)
        known = pd.Index(list(slices)).get_indexer(groups) >= 0
        if not known.all() and unknown_category != "all_codes":
            raise KeyError(
                f"{int((~known).sum())} new item(s) have top-level categories without level-1 codes, e.g. "
                f"{groups[~known][0]!r}; rebuild the SIDs, or pass unknown_category='all_codes'"
            )
        codes = np.empty((len(vectors), self.num_levels), dtype=np.int64)
        z = None
        for mask, rows_groups in ((known, groups[known]), (~known, None)):  # unknown: all level-1 codes
            if mask.any():
                codes[mask], z_part = self.quantizer.codes(vectors[mask], rows_groups)
                z = np.empty((len(vectors), z_part.shape[1]), dtype=np.float32) if z is None else z
                z[mask] = z_part.numpy()
        return apply_splits(codes, z, self._radix, self.splits)

    def assign(self, items_df: pd.DataFrame, vectors: np.ndarray | None = None, **kwargs) -> np.ndarray:
        """SIDs ``(M, L)`` of new items (an items table) with the frozen model; see :meth:`assign_vectors`.

        Args:
            items_df: new items (``item_id``, ``title``, ``brand``, ``category_path``, optional
                ``description``); their ids must be unique.
            vectors: their text vectors; None encodes them with the codebook's encoder.
        """
        if items_df["item_id"].duplicated().any():
            raise ValueError(
                f"duplicate item ids among the new items, e.g. {items_df['item_id'][items_df['item_id'].duplicated()].iloc[0]}"
            )
        if vectors is None:
            if self.encoder in (None, "none"):
                raise ValueError(
                    "this codebook was built from precomputed item vectors: pass `vectors=` (same model) for new items"
                )
            if self._encoder_obj is None:
                self._encoder_obj = build_encoder(self.encoder, cache_dir=self.config.get("cache_dir"))
            # the same text recipe as at build time, or new items land in another region
            chars = self.config.get("description_chars", MAX_DESCRIPTION_CHARS)
            vectors = self._encoder_obj.encode(item_texts(items_df, chars), show_progress=False)
        elif len(vectors) != len(items_df):
            raise ValueError(f"{len(vectors)} vectors for {len(items_df)} new items")
        tops = None
        if self.category_slices is not None:
            tops = [str(p[0]) if len(p) else UNCATEGORISED for p in items_df["category_path"]]
        return self.assign_vectors(np.asarray(vectors, dtype=np.float32), tops, **kwargs)

    # ---- persistence --------------------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        """Writes the codebook folder (see the module docstring)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "codebook_sizes": list(self.codebook_sizes),
            "encoder": self.encoder,
            "encoder_dims": self.encoder_dims,
            "category_slices": None
            if self.category_slices is None
            else {k: list(v) for k, v in self.category_slices.items()},
            "num_items": len(self.item_ids),
            "config": self.config,
        }
        (directory / "codebook.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        table = pd.DataFrame({"item_id": self.item_ids})
        for level in range(self.num_levels):
            table[f"code_{level}"] = self.codes[:, level]
        table.to_parquet(directory / "assignments.parquet", index=False)
        if self.quantizer is not None:
            torch.save(self.quantizer.state(), directory / "quantizer.pt")
        keys = np.fromiter(self.splits.keys(), dtype=np.int64, count=len(self.splits))
        np.savez(
            directory / "splits.npz",
            keys=keys,
            sizes=np.asarray([len(self.splits[k][1]) for k in keys.tolist()], dtype=np.int64),
            centroids=np.concatenate([self.splits[k][0] for k in keys.tolist()])
            if len(keys)
            else np.zeros((0, 1)),
            sids=np.concatenate([self.splits[k][1] for k in keys.tolist()])
            if len(keys)
            else np.zeros((0, self.num_levels)),
        )

    @classmethod
    def load(cls, directory: str | Path) -> SIDCodebook:
        """Reads a folder written by :meth:`save`."""
        directory = Path(directory)
        meta_path = directory / "codebook.json"
        if not meta_path.exists():
            raise FileNotFoundError(
                f"{meta_path} not found; build SIDs with `python recipes/build_sids.py ...`"
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{directory}: codebook format {meta.get('format_version')} != {FORMAT_VERSION}; rebuild it"
            )
        table = pd.read_parquet(directory / "assignments.parquet")
        levels = len(meta["codebook_sizes"])
        codes = table[[f"code_{level}" for level in range(levels)]].to_numpy()
        slices = meta["category_slices"]
        slices = None if slices is None else {k: tuple(v) for k, v in slices.items()}
        quantizer = None
        if (directory / "quantizer.pt").exists():
            state = torch.load(directory / "quantizer.pt", weights_only=True)
            quantizer = FrozenQuantizer.from_state(state, meta["encoder_dims"], slices)
        splits = {}
        data = np.load(directory / "splits.npz")
        offset = 0
        for key, size in zip(data["keys"].tolist(), data["sizes"].tolist()):
            splits[int(key)] = (
                data["centroids"][offset : offset + size],
                data["sids"][offset : offset + size],
            )
            offset += size
        return cls(
            meta["codebook_sizes"],
            table["item_id"].to_numpy(),
            codes,
            meta["method"],
            quantizer,
            meta["encoder"],
            meta["encoder_dims"],
            splits,
            meta["config"],
        )
