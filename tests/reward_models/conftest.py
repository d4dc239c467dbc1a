"""Fixtures of the reward tests: the tiny log's SIDs, a tiny tokenizer with SID tokens, a ranker.

The SIDs are category-aligned clusters (level 1 = top category, level 2 = leaf, level 3 = a chunk
of at most 3 items), so expected reward values can be worked out by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # custom_reward_example is named by dotted path

from reward_helpers import category_codes  # noqa: E402

from eg_grpo.modeling import add_sid_tokens, build_tiny_tokenizer  # noqa: E402
from eg_grpo.sid.codebook import SIDCodebook  # noqa: E402
from reward_models import RewardContext  # noqa: E402
from reward_models.ranker import RankerConfig, RankingSimulator  # noqa: E402


@pytest.fixture(scope="session")
def rm_codebook(tiny_log) -> SIDCodebook:
    codes = category_codes(tiny_log.items)
    sizes = tuple(int(c) + 1 for c in codes.max(axis=0))
    return SIDCodebook(sizes, tiny_log.items["item_id"].to_numpy(), codes, method="reference")


@pytest.fixture(scope="session")
def rm_tokenizer(tiny_log, rm_codebook):
    """A tiny BPE tokenizer with the SID tokens added as normal tokens."""
    tokenizer = build_tiny_tokenizer(tiny_log.items["title"].tolist(), vocab_size=300)
    add_sid_tokens(None, tokenizer, rm_codebook.codebook_sizes)
    return tokenizer


@pytest.fixture(scope="session")
def rm_vocab(rm_tokenizer, rm_codebook):
    return add_sid_tokens(None, rm_tokenizer, rm_codebook.codebook_sizes)  # idempotent: the SIDVocab


@pytest.fixture(scope="session")
def rm_ranker_dir(tiny_log, tmp_path_factory):
    path = tmp_path_factory.mktemp("ranker")
    RankingSimulator.fit(tiny_log, RankerConfig(model_type="logistic")).save(path)
    return path


@pytest.fixture
def context(tiny_log, rm_codebook, rm_vocab, rm_ranker_dir) -> RewardContext:
    """A fresh context per test (its caches start empty)."""
    return RewardContext(codebook=rm_codebook, vocab=rm_vocab, log=tiny_log, ranker_dir=rm_ranker_dir)
