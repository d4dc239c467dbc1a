"""SFT building blocks (eg_grpo.sft.model) and the LoRA path of recipes/sft.py."""

import pytest
import torch
from trl import ModelConfig, SFTConfig, TrlParser

from eg_grpo.modeling import load_model_and_tokenizer
from eg_grpo.sft.model import build_sft_model, tiny_config


def test_tiny_config_overrides():
    cfg = tiny_config("test", hidden_size=32, num_hidden_layers=None)
    assert cfg.hidden_size == 32 and cfg.num_hidden_layers == tiny_config("test").num_hidden_layers
    with pytest.raises(ValueError, match="unknown tiny preset"):
        tiny_config("huge")


def test_lora_trains_adapters_and_sid_rows_then_merges(
    tiny_log, tiny_data_dir, tiny_sid_dir, tiny_codebook, tmp_path
):
    from recipes.sft import SFTScriptArguments, main

    out = tmp_path / "sft_lora"
    args = TrlParser((SFTScriptArguments, SFTConfig, ModelConfig)).parse_args_and_config(
        args=["--config", "recipes/configs/tiny/sft.yaml", "--data_dir", str(tiny_data_dir),
              "--sid_dir", str(tiny_sid_dir), "--output_dir", str(out), "--use_peft", "true",
              "--lora_r", "4", "--lora_target_modules", "q_proj", "v_proj", "--num_train_epochs", "1",
              "--max_train_rows", "128", "--disable_tqdm", "true"]
    )  # fmt: skip
    main(*args)
    trained, _ = load_model_and_tokenizer(str(out))  # a plain causal LM: the adapter was merged
    base, _, vocab = build_sft_model("tiny", tiny_log, tiny_codebook, tiny_config("test", seed=0))
    before, after = dict(base.named_parameters()), dict(trained.named_parameters())
    assert before.keys() == after.keys()
    sid_rows = torch.as_tensor(vocab.level_token_ids[0])
    emb = "model.embed_tokens.weight"
    assert not torch.allclose(before[emb][sid_rows], after[emb][sid_rows])  # modules_to_save trained
    assert not torch.allclose(
        before["model.layers.0.self_attn.q_proj.weight"], after["model.layers.0.self_attn.q_proj.weight"]
    )
    # modules outside the adapter are untouched
    assert torch.equal(
        before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"]
    )
    assert torch.equal(
        before["model.layers.1.self_attn.k_proj.weight"], after["model.layers.1.self_attn.k_proj.weight"]
    )
