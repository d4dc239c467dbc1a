"""Fixtures of the arena tests (the simulated data folder and its oracle are the shared ``sim_data_dir``
and ``oracle``)."""

from __future__ import annotations

import numpy as np
import pytest

from eg_grpo.arena.channels import RequestBatch


@pytest.fixture(scope="session")
def test_batch(oracle) -> RequestBatch:
    rows = np.flatnonzero((oracle.log.requests["split"] == "test").to_numpy())
    return RequestBatch.from_log(oracle.log, rows)


@pytest.fixture(scope="session")
def lookup_encoder(oracle, tmp_path_factory):
    """A ``.npz`` vectors table for every item text and query of the tiny log (random unit vectors,
    items of a leaf near their leaf's direction): the dense channel's mechanics without MiniLM."""
    from eg_grpo.sid.encoders import item_texts

    log = oracle.log
    rng = np.random.default_rng(0)
    leaf = log.items["category_path"].map(tuple)
    leaf_dir = {p: rng.standard_normal(16) for p in sorted(set(leaf))}
    item_vecs = np.stack([leaf_dir[p] for p in leaf]) + 0.3 * rng.standard_normal((len(leaf), 16))
    queries = sorted({q for q in log.requests["query"].fillna("") if q.strip()})
    texts = item_texts(log.items, 0) + queries
    vectors = np.vstack([item_vecs, rng.standard_normal((len(queries), 16))])
    path = tmp_path_factory.mktemp("enc") / "vectors.npz"
    np.savez(path, texts=np.array(texts), vectors=vectors.astype(np.float32))
    return str(path)
