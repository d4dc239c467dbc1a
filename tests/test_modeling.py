"""The tiny Qwen2, SID tokens added as normal tokens, and save/load round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eg_grpo.modeling import (
    TINY_PRESETS,
    TinyModelConfig,
    add_sid_tokens,
    build_tiny_model_and_tokenizer,
    build_tiny_qwen2,
    build_tiny_tokenizer,
    load_model_and_tokenizer,
    qwen2_5_0_5b_config,
)
from eg_grpo.sid.tokens import SIDVocab, all_sid_tokens, sid_to_text

SIZES = (8, 6, 5)
TEXTS = [
    "red cotton t-shirt for men slim fit",
    "wireless bluetooth headphones black noise cancelling",
    "leather handbag brown women large",
    "running shoes blue size 42 breathable",
    "ceramic coffee mug white 350ml",
] * 40
SMALL = TinyModelConfig(vocab_size=500, hidden_size=32, intermediate_size=64)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer(TEXTS, vocab_size=500)


def test_tiny_tokenizer_round_trips_text_and_has_distinct_eos_and_pad(tokenizer):
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.pad_token == "<|pad|>"
    assert tokenizer.eos_token_id != tokenizer.pad_token_id
    for text in ["red cotton t-shirt", "unseen wörds ✓ 123"]:  # byte-level: no unknown token
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids) == text
    assert len(tokenizer("red cotton t-shirt for men")["input_ids"]) < len("red cotton t-shirt for men") / 2
    assert len(tokenizer) <= 500


def test_sid_tokens_are_normal_tokens_of_one_id_each(tokenizer):
    tok = build_tiny_tokenizer(TEXTS, vocab_size=500)
    model = build_tiny_qwen2(tok, **SMALL.model_sizes())
    vocab = add_sid_tokens(model, tok, SIZES)
    assert len(tok) == len(tokenizer) + sum(SIZES)
    assert not set(all_sid_tokens(SIZES)) & set(tok.all_special_tokens)
    sid = (7, 0, 4)
    ids = tok("query: red shirt " + sid_to_text(sid))["input_ids"]
    assert ids[-3:] == vocab.encode(sid, add_eos=False)
    # Normal tokens survive skip_special_tokens, which strips eos.
    assert tok.decode(vocab.encode(sid), skip_special_tokens=True) == sid_to_text(sid)
    assert vocab.decode(vocab.encode(sid)) == sid
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == model.config.vocab_size


def test_add_sid_tokens_is_idempotent(tokenizer):
    model, tok, vocab = build_tiny_model_and_tokenizer(TEXTS, SIZES, SMALL)
    before = model.get_input_embeddings().weight.clone()
    again = add_sid_tokens(model, tok, SIZES)
    assert len(tok) == len(tokenizer) + sum(SIZES)
    assert all(np.array_equal(a, b) for a, b in zip(again.level_token_ids, vocab.level_token_ids))
    assert torch.equal(model.get_input_embeddings().weight, before)


@pytest.mark.parametrize("tied", [True, False])
def test_mean_init_fills_spare_rows_and_both_matrices(tied):
    # Hub models (Qwen2.5) carry spare embedding rows beyond len(tokenizer): new tokens take those ids
    # first, and their rows must be initialised, not left as the spare rows' values.
    tok = build_tiny_tokenizer(TEXTS, vocab_size=500)
    model = build_tiny_qwen2(tok, **{**SMALL.model_sizes(), "tie_word_embeddings": tied})
    n_real = len(tok)
    model.resize_token_embeddings(n_real + 10, mean_resizing=False)
    with torch.no_grad():
        model.get_input_embeddings().weight[n_real:] = 7.0  # spare rows hold junk
        if not tied:
            model.get_output_embeddings().weight[n_real:] = -7.0
    expected_in = model.get_input_embeddings().weight[:n_real].mean(dim=0)
    expected_out = model.get_output_embeddings().weight[:n_real].mean(dim=0)
    vocab = add_sid_tokens(model, tok, SIZES, init="mean")
    new_ids = np.concatenate(vocab.level_token_ids)
    assert new_ids.min() == n_real and model.get_input_embeddings().weight.shape[0] == len(tok)
    emb_in = model.get_input_embeddings().weight[torch.from_numpy(new_ids)]
    emb_out = model.get_output_embeddings().weight[torch.from_numpy(new_ids)]
    torch.testing.assert_close(emb_in, expected_in.expand_as(emb_in))
    torch.testing.assert_close(emb_out, expected_out.expand_as(emb_out))
    tied_now = (
        model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    )
    assert tied_now == tied


def test_random_init_gives_distinct_sid_rows():
    model, _, vocab = build_tiny_model_and_tokenizer(TEXTS, SIZES, SMALL)
    rows = model.get_input_embeddings().weight[torch.from_numpy(np.concatenate(vocab.level_token_ids))]
    assert torch.cdist(rows, rows).add(torch.eye(len(rows))).min() > 0


def test_tiny_model_is_deterministic_for_a_seed(tokenizer):
    a = build_tiny_qwen2(tokenizer, **SMALL.model_sizes())
    b = build_tiny_qwen2(tokenizer, **SMALL.model_sizes())
    c = build_tiny_qwen2(tokenizer, **{**SMALL.model_sizes(), "seed": 1})
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.model.layers[0].mlp.up_proj.weight, c.model.layers[0].mlp.up_proj.weight)
    assert a.generation_config.do_sample is False or a.generation_config.do_sample is None
    assert (
        a.generation_config.top_k in (None, 50) and a.generation_config.eos_token_id == tokenizer.eos_token_id
    )


def test_save_load_round_trip_keeps_sid_tokens_and_weights(tmp_path):
    model, tok, vocab = build_tiny_model_and_tokenizer(TEXTS, SIZES, SMALL)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = load_model_and_tokenizer(str(tmp_path), codebook_sizes=SIZES, dtype=torch.float32)
    assert len(loaded_tok) == len(tok)
    loaded_vocab = SIDVocab(loaded_tok, SIZES)
    for level in range(len(SIZES)):
        assert np.array_equal(loaded_vocab.level_token_ids[level], vocab.level_token_ids[level])
    sid = (3, 5, 1)
    text = "red shirt " + sid_to_text(sid)
    ids = loaded_tok(text)["input_ids"]
    assert ids == tok(text)["input_ids"] and loaded_vocab.decode(ids[-3:] + [loaded_tok.eos_token_id]) == sid
    assert loaded_tok.decode(ids) == text
    x = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits)
    assert loaded.generation_config.top_k is None and not loaded.generation_config.do_sample


def test_loading_a_folder_without_sid_tokens_adds_them(tmp_path):
    tok = build_tiny_tokenizer(TEXTS, vocab_size=500)
    model = build_tiny_qwen2(tok, **SMALL.model_sizes())
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = load_model_and_tokenizer(str(tmp_path), codebook_sizes=SIZES)
    assert len(loaded_tok) == len(tok) + sum(SIZES)
    assert loaded.get_input_embeddings().weight.shape[0] == len(loaded_tok)
    assert loaded_tok(sid_to_text((0, 0, 0)), add_special_tokens=False)["input_ids"] == SIDVocab(
        loaded_tok, SIZES
    ).encode((0, 0, 0), add_eos=False)


def test_a_model_smaller_than_its_tokenizer_is_refused(tmp_path):
    model, tok, _ = build_tiny_model_and_tokenizer(TEXTS, SIZES, SMALL)
    small = build_tiny_qwen2(build_tiny_tokenizer(TEXTS, vocab_size=500), **SMALL.model_sizes())
    with pytest.raises(ValueError, match="embedding rows"):
        add_sid_tokens(small, tok, SIZES)


def test_qwen2_5_0_5b_config_has_the_published_sizes():
    config = qwen2_5_0_5b_config()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (896, 24, 14)
    assert (config.num_key_value_heads, config.intermediate_size, config.vocab_size) == (2, 4864, 151936)
    assert config.tie_word_embeddings
    with torch.device("meta"):
        from transformers import Qwen2ForCausalLM

        model = Qwen2ForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 494_032_768  # Qwen2.5-0.5B's published parameter count


def test_presets_and_unknown_preset():
    assert set(TINY_PRESETS) >= {"test", "demo"}
    with pytest.raises(ValueError, match="preset"):
        build_tiny_model_and_tokenizer(TEXTS, SIZES, "huge")
