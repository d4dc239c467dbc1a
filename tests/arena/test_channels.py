import json

import numpy as np
import pytest

from eg_grpo.arena.channels import (
    BM25Channel,
    DenseChannel,
    GenerativeChannel,
    ItemCFChannel,
    LoggedChannel,
    OracleChannel,
)


def _check_lists(found, batch, quota, item_ids):
    assert len(found) == len(batch)
    for items in found:
        assert items.dtype == np.int64 and len(items) <= quota
        assert len(np.unique(items)) == len(items)  # unique
        assert np.isin(items, item_ids).all()  # valid ids


@pytest.fixture(scope="module")
def classical(oracle, lookup_encoder, tmp_path_factory):
    index_dir = tmp_path_factory.mktemp("index")
    log = oracle.log
    return index_dir, {
        "logged": LoggedChannel(oracle, seed=0),
        "bm25": BM25Channel(log.items, index_dir, "k"),
        "dense": DenseChannel(log.items, lookup_encoder, 0, None, index_dir, "k"),
        "item_cf": ItemCFChannel(log, index_dir=index_dir, data_key="k"),
        "oracle": OracleChannel(oracle),
    }


@pytest.mark.parametrize("name", ["logged", "bm25", "dense", "item_cf", "oracle"])
@pytest.mark.parametrize("quota", [1, 7, 40])
def test_each_channel_returns_valid_unique_ids_within_its_quota(classical, test_batch, oracle, name, quota):
    channel = classical[1][name]
    found = channel.recall(test_batch, quota)
    _check_lists(found, test_batch, quota, oracle.log.items["item_id"].to_numpy())
    assert sum(len(f) for f in found) > 0


def test_channels_say_nothing_without_their_signal(classical, test_batch):
    channels = classical[1]
    empty = [i for i, q in enumerate(test_batch.queries) if not q.strip()]
    no_history = [i for i, h in enumerate(test_batch.histories) if not h]
    assert empty
    bm25 = channels["bm25"].recall(test_batch, 10)
    assert all(len(bm25[i]) == 0 for i in empty)
    # dense answers an empty query from the history's centroid
    dense = channels["dense"].recall(test_batch, 10)
    assert all(len(dense[i]) == 10 for i in empty if test_batch.histories[i])
    item_cf = channels["item_cf"].recall(test_batch, 10)
    assert all(len(item_cf[i]) == 0 for i in no_history)


def test_bm25_finds_the_words_of_the_query(classical, test_batch, oracle):
    found = classical[1]["bm25"].recall(test_batch, 5)
    titles = oracle.log.items.set_index("item_id")["title"].str.lower()
    hits = [
        any(word in titles[item] for word in q.lower().split())
        for q, items in zip(test_batch.queries, found)
        for item in items[:1]
    ]
    assert np.mean(hits) > 0.8


def test_dense_search_is_exact_inner_product(classical, test_batch):
    dense = classical[1]["dense"]
    vectors, where = dense._query_vectors(test_batch.slice(0, 20))
    found = dense.recall(test_batch.slice(0, 20), 5)
    for v, i in zip(vectors, where):
        brute = np.argsort(-(dense.vectors @ v), kind="stable")[:5]
        assert set(found[i]) == set(dense.item_ids[brute])


def test_item_cf_recalls_co_clicked_items(classical, oracle):
    item_cf = classical[1]["item_cf"]
    log = oracle.log
    train = log.requests.loc[log.requests["split"] == "train", ["request_id", "user_id"]]
    clicks = log.impressions[log.impressions["clicked"]].merge(train, on="request_id")
    by_user = clicks.groupby("user_id")["item_id"].apply(set)
    seed = int(clicks["item_id"].value_counts().index[0])
    from eg_grpo.arena.channels import RequestBatch

    batch = RequestBatch(np.array([0]), np.array([0]), [""], [[seed]])
    found = set(item_cf.recall(batch, 50)[0].tolist())
    co_clicked = set().union(*[s for s in by_user if seed in s]) - {seed}
    assert found and found <= co_clicked | {seed}


def test_indexes_are_built_once_and_cached(classical, oracle, lookup_encoder):
    index_dir, _ = classical
    for name in ("bm25", "dense", "item_cf"):
        assert json.loads((index_dir / name / "stage.json").read_text())["stage"] == f"arena_index_{name}"
    before = (index_dir / "bm25" / "stage.json").stat().st_mtime_ns
    BM25Channel(oracle.log.items, index_dir, "k")
    assert (index_dir / "bm25" / "stage.json").stat().st_mtime_ns == before  # loaded, not rebuilt
    BM25Channel(oracle.log.items, index_dir, "other data")
    assert (index_dir / "bm25" / "stage.json").stat().st_mtime_ns != before  # another data folder: rebuilt


def test_logged_channel_keeps_its_source_shares_in_every_prefix(oracle, test_batch, monkeypatch):
    # The simulator fills slots source by source (leaf 0.5, mid 0.15, brand 0.15, popular 0.2 of 20: slots
    # 0-9 leaf, 10-12 mid, 13-15 brand, 16-19 popular); the channel interleaves them by (rank + 0.5) / count,
    # ties in slot order, so a smaller quota (fixed_budget) still draws from every source. A retrieval whose
    # slot i holds item row i shows the order the channel puts the slots in.
    import eg_grpo.arena.channels as channels

    cfg = oracle.config
    assert (cfg.legacy_leaf_share, cfg.legacy_mid_share, cfg.legacy_brand_share) == (0.5, 0.15, 0.15)
    monkeypatch.setattr(channels, "retrieve_candidates",
                        lambda config, *args: np.tile(np.arange(config.candidates_per_request), (len(args[3]), 1)))  # fmt: skip
    found = LoggedChannel(oracle, seed=0).recall(test_batch.slice(0, 3), 20)
    row_of = {item: row for row, item in enumerate(oracle.log.items["item_id"].tolist())}
    # (rank + 0.5) / count: leaf .05 .15 .25 ..., mid and brand 1/6 1/2 5/6, popular .125 .375 .625 .875
    expected = [0, 16, 1, 10, 13, 2, 3, 17, 4, 11, 14, 5, 18, 6, 7, 12, 15, 8, 19, 9]
    for items in found:
        assert [row_of[i] for i in items.tolist()] == expected
    leaf = np.cumsum(np.array(expected) < 10)
    assert (np.abs(leaf - 0.5 * np.arange(1, 21)) <= 1).all()  # every prefix holds half leaf slots, +- 1


def test_generative_channel_returns_the_model_s_items(tiny_sft_dir, tiny_sid_dir, oracle, test_batch):
    channel = GenerativeChannel("sft", tiny_sft_dir, tiny_sid_dir, oracle.log, beam=4, device="cpu")
    batch = test_batch.slice(0, 8)
    found = channel.recall(batch, 12)
    _check_lists(found, batch, 12, oracle.log.items["item_id"].to_numpy())
    assert all(len(f) > 0 for f in found)


def test_a_model_without_sid_tokens_gives_a_clear_error(tmp_path, tiny_sid_dir, oracle):
    from eg_grpo.modeling import build_tiny_qwen2, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(["pen paper"] * 10, vocab_size=300)
    model = build_tiny_qwen2(tokenizer)
    model.save_pretrained(tmp_path / "plain")
    tokenizer.save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="cannot spell the SIDs"):
        GenerativeChannel("plain", tmp_path / "plain", tiny_sid_dir, oracle.log, device="cpu")
    with pytest.raises(FileNotFoundError, match="holds no model"):
        GenerativeChannel("none", tmp_path / "nothing", tiny_sid_dir, oracle.log, device="cpu")


def test_request_batch_carries_profiles_when_the_data_has_them(oracle):
    """A profile column reaches the generative channel's batch (and its slices); without one, None."""
    import copy

    from eg_grpo.arena.channels import RequestBatch

    rows = np.arange(4)
    assert RequestBatch.from_log(oracle.log, rows).profiles is None
    log = copy.copy(oracle.log)
    log.requests = oracle.log.requests.assign(profile=["power=mid"] * len(oracle.log.requests))
    batch = RequestBatch.from_log(log, rows)
    assert batch.profiles == ["power=mid"] * 4
    assert batch.slice(1, 3).profiles == ["power=mid"] * 2


def test_faiss_import_notes_are_silenced_but_warnings_pass(tmp_path, monkeypatch, caplog):
    import logging
    import sys

    from eg_grpo.arena.channels import import_faiss

    # A stand-in faiss whose loader speaks as the real one does on a CPU without AVX2.
    package = tmp_path / "fake" / "faiss"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from .loader import *  # noqa\n")
    (package / "loader.py").write_text(
        "import logging\nlogger = logging.getLogger(__name__)\n"
        "logger.info('Could not load library with AVX2 support')\nlogger.warning('a real problem')\n"
    )
    for name in ("faiss", "faiss.loader"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(package.parent))
    loader = logging.getLogger("faiss.loader")
    before = loader.level
    with caplog.at_level(logging.INFO):
        module = import_faiss()
    assert module.__file__.startswith(str(package))
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "faiss.loader"]
    assert said == [(logging.WARNING, "a real problem")]
    assert loader.level == before
