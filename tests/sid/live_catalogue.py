"""A SID version of the tiny log with a frozen model whose placements are known exactly, in milliseconds.

The taxonomy codebook of ``tests/conftest.py`` gets a :class:`FrozenQuantizer` without an encoder
(latent = vector) whose level-``l`` codewords are the unit vectors of block ``l``. An item's vector
is the concatenation of one-hot codes, so residual quantisation gives back exactly those codes: a
test says where a new item must land by choosing its vector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from eg_grpo.io import stage_record, write_stage
from eg_grpo.sid.codebook import SIDCodebook
from eg_grpo.sid.rqvae import FrozenQuantizer


def one_hot_vectors(codes: np.ndarray, sizes) -> np.ndarray:
    """``(n, L)`` codes -> ``(n, sum(sizes))`` vectors that quantise back to exactly those codes."""
    codes = np.atleast_2d(np.asarray(codes, dtype=np.int64))
    out = np.zeros((len(codes), int(sum(sizes))), dtype=np.float32)
    offset = 0
    for level, size in enumerate(sizes):
        out[np.arange(len(codes)), offset + codes[:, level]] = 1.0
        offset += size
    return out


def with_quantizer(
    book: SIDCodebook, items: pd.DataFrame, sizes=None, max_cluster_size: int = 0
) -> SIDCodebook:
    """``book``'s SIDs (sizes widened to ``sizes``) with the one-hot frozen model, level 1 by category."""
    sizes = tuple(sizes or book.codebook_sizes)
    dim, offset, codebooks = int(sum(sizes)), 0, []
    for size in sizes:
        codebooks.append(torch.eye(dim)[offset : offset + size])
        offset += size
    tops = items.set_index("item_id").loc[book.item_ids, "category_path"].map(lambda p: p[0]).to_numpy()
    slices = {}
    for top in sorted(set(tops)):
        code = int(book.codes[tops == top, 0][0])
        slices[str(top)] = (code, code + 1)
    quantizer = FrozenQuantizer(None, codebooks, slices)
    config = {"max_cluster_size": max_cluster_size, "description_chars": 0}
    return SIDCodebook(
        sizes, book.item_ids.copy(), book.codes.copy(), "rqkmeans", quantizer, "none", None, {}, config
    )


def write_sid_version(book: SIDCodebook, folder: Path, data_dir: Path, **config) -> Path:
    """A ``sids`` stage folder (``codebook/`` + ``stage.json`` naming ``data_dir``) holding ``book``."""
    book.save(folder / "codebook")
    write_stage(folder, stage_record("sids", {"test": config or "live"}, {"data": data_dir}))
    return folder


def new_items_like(items: pd.DataFrame, source_ids, first_new_id: int, tag: str = "new") -> pd.DataFrame:
    """New catalogue rows copied from ``source_ids`` with fresh ids and titles (same categories)."""
    rows = items.set_index("item_id").loc[list(source_ids)].reset_index()
    rows["item_id"] = np.arange(first_new_id, first_new_id + len(rows), dtype=np.int64)
    rows["title"] = [f"{tag} {t}" for t in rows["title"]]
    return rows[["item_id", "title", "category_path", "brand", "price"]]
