"""Fixtures of the arena tests (the simulated data folder and its oracle are the shared ``sim_data_dir``
and ``oracle``; ``live`` and ``sid_versions`` are the tiny log with launches and its SID versions)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eg_grpo.arena.channels import RequestBatch
from eg_grpo.arena.oracle import Oracle
from eg_grpo.data.simulator import SimulatorConfig, write_simulated_data
from eg_grpo.sid.codebook import SIDCodebook
from eg_grpo.stages.cutoff import NEW_ITEMS_FILE, CutoffArguments
from eg_grpo.stages.cutoff import run as cut

# a fifth of the tiny catalogue (100 items) launches during the log, half of those in the test period
LIVE = SimulatorConfig.preset("tiny", launch_share=0.2, launch_test_share=0.5)


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


def _helpers():
    """tests/sid/live_catalogue.py (the one-hot frozen SID model), imported by path."""
    path = Path(__file__).resolve().parents[1] / "sid" / "live_catalogue.py"
    spec = importlib.util.spec_from_file_location("live_catalogue_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def live(tmp_path_factory):
    """The tiny log with launches (``data``), its cut-off at the first test request (``cut``) and its oracle."""
    root = tmp_path_factory.mktemp("arena_live")
    write_simulated_data(LIVE, root / "data")
    cut(CutoffArguments(data_dir=str(root / "data"), output_dir=str(root / "cut")))
    oracle = Oracle.from_data_dir(root / "data")
    return {"root": root, "data": root / "data", "cut": root / "cut", "oracle": oracle}


@pytest.fixture(scope="session")
def sid_versions(live, tiny_codebook):
    """v0: the taxonomy SIDs of the items on sale at the cut-off (with the one-hot frozen model), built from
    the cut-off folder; v1: v0 plus the items launched since, each at its taxonomy SID (add_items). The new
    items' vectors, row-aligned with the cut-off's ``new_items.parquet``, are ``live["root"] / "new.npy"``."""
    from eg_grpo.stages.add_items import AddItemsArguments
    from eg_grpo.stages.add_items import run as add_items

    helpers, root = _helpers(), live["root"]
    items = live["oracle"].log.items
    new = pd.read_parquet(live["cut"] / NEW_ITEMS_FILE)
    old = ~np.isin(tiny_codebook.item_ids, new["item_id"])
    book = SIDCodebook(tiny_codebook.codebook_sizes, tiny_codebook.item_ids[old], tiny_codebook.codes[old],
                       method="reference")  # fmt: skip
    v0 = helpers.write_sid_version(helpers.with_quantizer(book, items), root / "v0", live["cut"])
    codes = tiny_codebook.codes[pd.Index(tiny_codebook.item_ids).get_indexer(new["item_id"])]
    np.save(root / "new.npy", helpers.one_hot_vectors(codes, tiny_codebook.codebook_sizes))
    add_items(AddItemsArguments(sid_dir=str(v0), new_items=str(live["cut"] / NEW_ITEMS_FILE),
                                new_item_vectors=str(root / "new.npy"), output_dir=str(root / "v1")))  # fmt: skip
    return v0, root / "v1"
