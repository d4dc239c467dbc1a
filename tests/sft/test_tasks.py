"""The progressive-SFT tasks' row builders (eg_grpo.sft.tasks), hand-checked on the tiny log."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from eg_grpo.data.schema import SearchLog
from eg_grpo.data.sft_dataset import build_sft_dataset
from eg_grpo.modeling import add_sid_tokens, build_tiny_tokenizer
from eg_grpo.sft.tasks import SFT_TASKS, build_task_rows, item_to_sid_rows, query_to_sid_rows
from eg_grpo.sid.tokens import sid_to_text


@pytest.fixture(scope="module")
def tokenizer(tiny_log, tiny_codebook):
    tok = build_tiny_tokenizer(tiny_log.items["title"].tolist(), vocab_size=300)
    add_sid_tokens(None, tok, tiny_codebook.codebook_sizes)
    return tok


def _sid(codebook, item) -> str:
    return sid_to_text(codebook.sid_of(int(item)))


def test_item_to_sid_one_row_per_item(tiny_log, tiny_codebook, tokenizer):
    rows = item_to_sid_rows(tiny_log, tiny_codebook, tokenizer)
    assert len(rows) == len(tiny_log.items)
    item = tiny_log.items.iloc[7]
    row = rows[7]
    assert row["target_item"] == item["item_id"] and row["request_id"] == -1
    assert row["prompt"] == f"item: {' '.join(item['title'].split())}\nsid:"
    assert row["completion"] == _sid(tiny_codebook, item["item_id"]) + tokenizer.eos_token
    sub = item_to_sid_rows(tiny_log, tiny_codebook, tokenizer, max_rows=50, seed=1)
    assert len(sub) == 50 and len(set(sub["target_item"])) == 50
    assert set(sub["target_item"]) <= set(rows["target_item"])


def _tiny_query_log(tiny_log) -> SearchLog:
    """Four requests: "red pen" twice (items 0, 0, 1 clicked; 2 shown only), "stapler" once (item 3)."""
    requests = pd.DataFrame(
        {"request_id": [0, 1, 2, 3], "user_id": [0, 1, 2, 3], "query": ["red  pen", "red pen", "stapler", ""],
         "timestamp": [0, 1, 2, 3], "history": [[], [], [], []], "split": ["train"] * 4}
    )  # fmt: skip
    impressions = pd.DataFrame(
        {"request_id": [0, 0, 0, 1, 1, 2, 3], "item_id": [0, 1, 2, 0, 2, 3, 4], "position": [0, 1, 2, 0, 1, 0, 0],
         "clicked": [True, True, False, True, False, True, True],
         "purchased": [False, False, False, True, False, False, False]}
    )  # fmt: skip
    return SearchLog(tiny_log.items, requests, impressions)


def test_query_to_sid_samples_engaged_sids_per_query(tiny_log, tiny_codebook, tokenizer):
    log = _tiny_query_log(tiny_log)
    sid = {i: _sid(tiny_codebook, i) for i in range(5)}
    assert len({sid[0], sid[1], sid[3]}) == 3  # the tiny codebook puts these items in distinct clusters
    rows = query_to_sid_rows(log, tiny_codebook, tokenizer, sids_per_query=3)
    by_query = {}
    for r in rows:
        by_query.setdefault(r["prompt"], []).append(
            (r["completion"].removesuffix(tokenizer.eos_token), r["target_item"])
        )
    # the empty query is left out; "red  pen" and "red pen" are one query with 2 engaged SIDs (< N = 3)
    assert set(by_query) == {"query: red pen\nsid:", "query: stapler\nsid:"}
    assert sorted(by_query["query: red pen\nsid:"]) == sorted([(sid[0], 0), (sid[1], 1)])
    assert by_query["query: stapler\nsid:"] == [(sid[3], 3)]  # item 2 was shown, never clicked
    # N = 1: one SID per query, drawn in proportion to clicks (item 0: 2 clicks, item 1: 1)
    draws = [query_to_sid_rows(log, tiny_codebook, tokenizer, sids_per_query=1, seed=s) for s in range(200)]
    assert all(len(d) == 2 for d in draws)
    red = [d["target_item"][d["prompt"].index("query: red pen\nsid:")] for d in draws]
    assert np.mean(np.array(red) == 0) == pytest.approx(2 / 3, abs=0.1)  # 3 binomial std at n = 200


def test_query_to_sid_on_the_tiny_log_recounts(tiny_log, tiny_codebook, tokenizer):
    rows = query_to_sid_rows(tiny_log, tiny_codebook, tokenizer, sids_per_query=3, seed=0)
    train = tiny_log.split("train").assign(query=lambda d: d["query"].map(lambda q: " ".join(q.split())))
    clicks = tiny_log.impressions[tiny_log.impressions["clicked"]].merge(train[["request_id", "query"]])
    clicks = clicks[clicks["query"] != ""]
    pool = clicks.groupby("query")["item_id"].agg(lambda s: {_sid(tiny_codebook, i) for i in s})
    expected_rows = int(pool.map(lambda p: min(3, len(p))).sum())
    assert len(rows) == expected_rows
    seen = {}
    for r in rows:
        query = r["prompt"].removeprefix("query: ").removesuffix("\nsid:")
        drawn = r["completion"].removesuffix(tokenizer.eos_token)
        assert drawn in pool[query]  # a SID of an item clicked for this query
        assert _sid(tiny_codebook, r["target_item"]) == drawn
        seen.setdefault(query, []).append(drawn)
    assert all(len(v) == len(set(v)) for v in seen.values())  # distinct SIDs per query
    assert len(query_to_sid_rows(tiny_log, tiny_codebook, tokenizer, max_rows=25)) == 25


def test_personalized_is_the_request_rows(tiny_log, tiny_codebook, tokenizer):
    rows = build_task_rows("personalized", tiny_log, tiny_codebook, tokenizer, max_rows=30, seed=2)
    direct = build_sft_dataset(tiny_log, tiny_codebook, tokenizer, max_rows=30, seed=2)
    assert rows.to_dict() == direct.to_dict()


def test_task_by_name_or_dotted_path_and_clear_errors(tiny_log, tiny_codebook, tokenizer):
    assert set(SFT_TASKS) == {"item_to_sid", "query_to_sid", "personalized"}
    own = build_task_rows(
        "eg_grpo.sft.tasks:item_to_sid_rows", tiny_log, tiny_codebook, tokenizer, max_rows=3
    )
    assert len(own) == 3
    with pytest.raises(ValueError, match="unknown SFT task 'title2sid'"):
        build_task_rows("title2sid", tiny_log, tiny_codebook, tokenizer)
    with pytest.raises(ValueError, match="does not take \\['sids_per_query'\\]"):
        build_task_rows("item_to_sid", tiny_log, tiny_codebook, tokenizer, sids_per_query=2)
    with pytest.raises(ValueError, match="does not take \\['sids'\\]"):
        build_task_rows("personalized", tiny_log, tiny_codebook, tokenizer, sids=2)
    with pytest.raises(ValueError, match="sids_per_query must be >= 1"):
        build_task_rows("query_to_sid", tiny_log, tiny_codebook, tokenizer, sids_per_query=0)
