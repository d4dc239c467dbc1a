"""Fixtures for the decoding tests: a tiny random Qwen2 with SID tokens."""

from __future__ import annotations

import pytest
from decoding_helpers import CODEBOOK_SIZES, product_texts

from eg_grpo.modeling import TinyModelConfig, build_tiny_model_and_tokenizer


@pytest.fixture(scope="session")
def tiny_lm():
    """``(model, tokenizer, sid_vocab)``: a random 2-layer Qwen2 whose vocabulary holds 6 + 5 + 4 SID tokens.

    Read-only: tests must not train or modify it.
    """
    config = TinyModelConfig(vocab_size=400, hidden_size=32, intermediate_size=64, seed=3)
    return build_tiny_model_and_tokenizer(product_texts(), CODEBOOK_SIZES, config)
