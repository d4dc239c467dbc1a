"""SFT rows and the input checks shared with evaluation (eg_grpo.data.sft_dataset)."""

import numpy as np
import pandas as pd
import pytest

from eg_grpo.data.prompts import build_prompt
from eg_grpo.data.schema import SchemaError, SearchLog
from eg_grpo.data.sft_dataset import (
    build_sft_dataset,
    check_codebook_matches,
    check_tokenizer_has_sids,
    clicked_items,
    target_items,
)
from eg_grpo.modeling import add_sid_tokens, build_tiny_tokenizer
from eg_grpo.sid.codebook import SIDCodebook


@pytest.fixture(scope="module")
def log():
    items = pd.DataFrame(
        {
            "item_id": [10, 11, 12, 13],
            "title": ["red pen", "blue pen", "stapler", "paper"],
            "category_path": [["office"]] * 4,
            "brand": ["b"] * 4,
            "price": [1.0] * 4,
        }
    )
    requests = pd.DataFrame(
        {
            "request_id": [0, 1, 2, 3],
            "user_id": [0, 0, 1, 1],
            "query": ["pen", "", "paper", "x"],
            "timestamp": [0, 1, 2, 3],
            "history": [[], [10, 11], [12], [13]],
            "split": ["train", "train", "train", "test"],
        }
    )
    # request 0: clicks at 1 and 2, purchase at 2 -> 12; request 1: clicks at 0 and 3 -> 10 (first);
    # request 2: nothing clicked -> no target; request 3: one click.
    impressions = pd.DataFrame(
        {
            "request_id": [0, 0, 0, 1, 1, 2, 3],
            "item_id": [10, 11, 12, 10, 13, 11, 13],
            "position": [0, 1, 2, 0, 3, 0, 0],
            "clicked": [False, True, True, True, True, False, True],
            "purchased": [False, False, True, False, False, False, False],
        }
    )
    return SearchLog(items, requests, impressions)


@pytest.fixture(scope="module")
def codebook():
    return SIDCodebook((2, 2, 2), [10, 11, 12, 13], [[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 1, 1]])


@pytest.fixture(scope="module")
def tokenizer(codebook):
    tok = build_tiny_tokenizer(["history query sid pen paper stapler"] * 10, vocab_size=300)
    add_sid_tokens(None, tok, codebook.codebook_sizes)
    return tok


def test_target_is_purchased_else_first_clicked(log):
    targets = target_items(log, [0, 1, 2, 3])
    assert targets.to_dict() == {0: 12, 1: 10, 3: 13}
    assert clicked_items(log, [0, 1, 2]).tolist() == [{11, 12}, {10, 13}, set()]


def test_sft_rows(log, codebook, tokenizer):
    ds = build_sft_dataset(log, codebook, tokenizer, "train")
    assert ds["request_id"] == [0, 1]  # request 2 has no click
    assert ds["target_item"] == [12, 10]
    assert (
        ds["prompt"][1]
        == build_prompt("", [(0, 0, 0), (0, 0, 1)])
        == "history: <a_0><b_0><c_0><a_0><b_0><c_1>\nsid:"
    )
    assert ds["completion"] == ["<a_1><b_0><c_0><|endoftext|>", "<a_0><b_0><c_0><|endoftext|>"]
    ds = build_sft_dataset(log, codebook, tokenizer, "train", use_titles=True, max_history=1)
    assert ds["prompt"][1] == "history: <a_0><b_0><c_1> blue pen;\nsid:"
    assert len(build_sft_dataset(log, codebook, tokenizer, "train", max_rows=1)) == 1
    # the later of the two rows (by timestamp) appears 3 times, the earlier once
    ds = build_sft_dataset(log, codebook, tokenizer, "train", recent_fraction=0.5, recent_repeats=3)
    latest = int(log.requests.set_index("request_id").loc[[0, 1], "timestamp"].idxmax())
    assert sorted(ds["request_id"]) == sorted([0, 1] + [latest] * 2)
    with pytest.raises(ValueError, match="recent_repeats"):
        build_sft_dataset(log, codebook, tokenizer, "train", recent_fraction=0.5, recent_repeats=0)


def test_bad_inputs(log, codebook, tokenizer):
    with pytest.raises(SchemaError, match="split 'valid' has no rows"):
        build_sft_dataset(log, codebook, tokenizer, "valid")
    other = SIDCodebook((2, 2, 2), [10, 11, 12], np.zeros((3, 3), dtype=int))
    with pytest.raises(ValueError, match="lacks 1 of the data's 4 items"):
        check_codebook_matches(log, other)
    bigger = SIDCodebook((2, 2, 2), [10, 11, 12, 13, 14], np.zeros((5, 3), dtype=int))
    with pytest.raises(ValueError, match="1 items that are not in the data"):
        check_codebook_matches(log, bigger)
    plain = build_tiny_tokenizer(["pen paper"] * 10, vocab_size=300)
    with pytest.raises(ValueError, match="cannot spell the SIDs"):
        check_tokenizer_has_sids(plain, codebook)
    small = build_tiny_tokenizer(["pen paper"] * 10, vocab_size=300)
    add_sid_tokens(None, small, (2, 2, 1))  # lacks <c_1>
    with pytest.raises(ValueError, match="c_1"):
        check_tokenizer_has_sids(small, codebook)
