"""The SID trie as a vLLM logits processor: masking logic, request tracking, config and trainer wiring.

CPU tests check the processor's logic against `SIDTrieLogitsProcessor` (the transformers path: both must
allow exactly the same tokens after the same prefix), its vLLM batch bookkeeping, the config's
importance-sampling rule, and the trainer's colocate wiring through TRL's real `VLLMGeneration` with a
stand-in engine (`fake_vllm.py`). The `gpu` tests run the real vLLM engine
(`pytest -m gpu tests/decoding/test_vllm_processor.py`, with the vLLM extra installed).
"""

from __future__ import annotations

import importlib
import math
import os

import numpy as np
import pytest
import torch
from decoding_helpers import CODEBOOK_SIZES, product_texts, random_catalogue, random_prompts
from fake_vllm import BatchUpdate, FakeLLM, FakeSamplingParams, MoveDirectionality, fake_vllm_config
from trl import ModelConfig

from eg_grpo.decoding import SIDTrie, SIDTrieLogitsProcessor
from eg_grpo.decoding.vllm_processor import (
    PROCESSOR_FQCN,
    REQUEST_ARG,
    LoadedTrie,
    SIDTrieVLLMLogitsProcessor,
    allowed_ids_for_outputs,
    allowed_token_mask,
    mask_to_allowed_,
)
from eg_grpo.modeling import TinyModelConfig, build_tiny_model_and_tokenizer, build_tiny_qwen2
from eg_grpo.rl.config import EGGRPOConfig
from eg_grpo.rl.inputs import EGGRPOScriptArguments
from eg_grpo.rl.stage import build_trainer
from eg_grpo.rl.vllm_rollouts import (
    check_colocate_calls,
    check_server_processor,
    colocate_llm_with_trie,
    trie_generation_kwargs,
)
from eg_grpo.sid.codebook import SIDCodebook
from eg_grpo.sid.tokens import SIDVocab

EOS, PAD, V = 1, 2, 60
LEVELS = [range(10, 15), range(15, 22), range(22, 25)]  # per-level token ids of the raw-id catalogue


def raw_catalogue(n=40, seed=0) -> list[tuple[int, ...]]:
    rng = np.random.default_rng(seed)
    codes = sorted({tuple(int(rng.choice(level)) for level in LEVELS) for _ in range(4 * n)})[:n]
    return [c + (EOS,) for c in codes]


def raw_trie(seqs=None) -> SIDTrie:
    return SIDTrie.from_sid_token_ids([list(s) for s in seqs or raw_catalogue()], vocab_size=V)


def prefixes(seqs, rng, rows=120) -> list[list[int]]:
    """Outputs of every length 0..L+2: valid prefixes, corrupted ones, finished SIDs (eos, then pad)."""
    out = []
    for _ in range(rows):
        t = int(rng.integers(0, len(seqs[0]) + 2))
        row = (list(seqs[rng.integers(len(seqs))]) + [PAD] * 3)[:t]
        if t and rng.random() < 0.3:
            row[rng.integers(t)] = int(rng.integers(3, V))
        out.append(row)
    return out


def fake_processor(model_dir="unused", vocab=V) -> SIDTrieVLLMLogitsProcessor:
    return SIDTrieVLLMLogitsProcessor(fake_vllm_config(str(model_dir), vocab), torch.device("cpu"), False)


# --------------------------------------------------------------------------------------------------
# Masking logic
def test_mixed_length_batch_masks_exactly_as_the_transformers_processor():
    seqs = raw_catalogue()
    trie = raw_trie(seqs)
    outputs = prefixes(seqs, np.random.default_rng(0))
    logits = torch.randn(len(outputs), V + 3)  # wider than the trie: vLLM may pad the vocabulary
    ours = mask_to_allowed_(
        logits.clone(), torch.arange(len(outputs)), allowed_ids_for_outputs(trie, outputs, PAD)[0]
    )
    for t in sorted({len(o) for o in outputs}):  # the HF processor needs one length per call
        rows = [i for i, o in enumerate(outputs) if len(o) == t]
        prompt = torch.full((len(rows), 5), 7)  # a left-padded prompt of length 5
        input_ids = torch.cat(
            [prompt, torch.tensor([outputs[i] for i in rows], dtype=torch.long).view(len(rows), t)], 1
        )
        expected = SIDTrieLogitsProcessor(trie, prompt_length=5, pad_token_id=PAD)(input_ids, logits[rows])
        torch.testing.assert_close(ours[rows], expected, rtol=0, atol=0)


def test_empty_mid_complete_and_finished_prefixes():
    seqs = raw_catalogue()
    trie = raw_trie(seqs)
    s = seqs[0]
    mask = allowed_token_mask(trie, [[], [s[0]], list(s[:3]), list(s[:4]), list(s[:4]) + [PAD], [EOS]], PAD)
    allowed = [set(torch.nonzero(m).flatten().tolist()) for m in mask]
    assert allowed[0] == {q[0] for q in seqs}  # empty: every first-level token in use
    assert allowed[1] == {q[1] for q in seqs if q[0] == s[0]}  # mid-SID: the trie's children
    assert allowed[2] == {EOS}  # complete SID: the end token only
    assert allowed[3] == allowed[4] == {EOS, PAD}  # finished: stays finished
    assert allowed[5] == {EOS}  # an invalid prefix stops instead of running free


def test_processor_tracks_vllm_batch_changes_and_leaves_other_requests_alone(monkeypatch):
    seqs = raw_catalogue()
    processor = fake_processor()
    loaded = LoadedTrie(raw_trie(seqs), PAD)
    monkeypatch.setattr(processor, "trie_for", lambda sid_dir: loaded)  # no model folder needed here
    on, off = (
        FakeSamplingParams(extra_args={REQUEST_ARG: "sids"}),
        FakeSamplingParams(extra_args={"other": 1}),
    )
    outs = {name: [] for name in "abcd"}
    processor.update_state(BatchUpdate(3, [], [(0, on, [5], outs["a"]), (1, off, [5], outs["b"]),
                                                (2, on, [5], outs["c"])], []))  # fmt: skip
    outs["a"] += [seqs[0][0]]  # live lists: vLLM appends, the processor reads them in apply()
    outs["c"] += list(seqs[1][:2])
    _check_rows(processor, seqs, {0: outs["a"], 2: outs["c"]}, unconstrained=[1])
    # "a" finishes; "d" takes its row; "c" and "b" swap rows.
    processor.update_state(BatchUpdate(3, [], [(0, on, [5], outs["d"])], [(1, 2, MoveDirectionality.SWAP)]))
    _check_rows(processor, seqs, {0: outs["d"], 1: outs["c"]}, unconstrained=[2])
    # "d" finishes and the last row moves into its place (vLLM's condense).
    processor.update_state(BatchUpdate(2, [0], [], [(2, 0, MoveDirectionality.UNIDIRECTIONAL)]))
    _check_rows(processor, seqs, {1: outs["c"]}, unconstrained=[0])
    processor.update_state(None)  # no change
    assert set(processor.requests) == {1}
    processor.update_state(BatchUpdate(1, [1], [], []))  # "c" finishes: only "b" (unconstrained) is left
    _check_rows(processor, seqs, {}, unconstrained=[0])
    assert not processor.requests


def _check_rows(processor, seqs, constrained: dict[int, list[int]], unconstrained: list[int]):
    B = 1 + max([*constrained, *unconstrained])
    logits = torch.randn(B, V)
    out = processor.apply(logits.clone())
    for row in unconstrained:
        torch.testing.assert_close(out[row], logits[row], rtol=0, atol=0)
    for row, generated in constrained.items():
        allowed = allowed_token_mask(raw_trie(seqs), [generated], PAD)[0]
        assert torch.isinf(out[row][~allowed]).all() and torch.equal(out[row][allowed], logits[row][allowed])


def test_validate_params_and_the_class_path(tmp_path):
    (tmp_path / "sids" / "codebook").mkdir(parents=True)
    SIDTrieVLLMLogitsProcessor.validate_params(
        FakeSamplingParams(extra_args={REQUEST_ARG: str(tmp_path / "sids")})
    )
    SIDTrieVLLMLogitsProcessor.validate_params(FakeSamplingParams())  # not opted in: nothing to check
    with pytest.raises(ValueError, match="codebook"):
        SIDTrieVLLMLogitsProcessor.validate_params(
            FakeSamplingParams(extra_args={REQUEST_ARG: str(tmp_path)})
        )
    with pytest.raises(ValueError, match="path of a SID folder"):
        SIDTrieVLLMLogitsProcessor.validate_params(FakeSamplingParams(extra_args={REQUEST_ARG: 3}))
    module, name = PROCESSOR_FQCN.split(":")
    assert getattr(importlib.import_module(module), name) is SIDTrieVLLMLogitsProcessor
    assert SIDTrieVLLMLogitsProcessor.is_argmax_invariant(fake_processor()) is False


def tiny_model_and_sids(tmp_path, tiny_lm):
    """The decoding tests' tiny model and tokenizer saved to disk, with a codebook over its SID tokens."""
    model, tokenizer, _ = tiny_lm
    model_dir, sid_dir = tmp_path / "model", tmp_path / "sids"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    codes = np.array(random_catalogue(30))
    SIDCodebook(CODEBOOK_SIZES, np.arange(len(codes)), codes, method="reference").save(sid_dir / "codebook")
    return model_dir, sid_dir


def test_processor_builds_the_trainers_trie_from_the_served_model(tmp_path, tiny_lm):
    model, tokenizer, _ = tiny_lm
    model_dir, sid_dir = tiny_model_and_sids(tmp_path, tiny_lm)
    vocab = model.get_output_embeddings().weight.shape[0]
    loaded = fake_processor(model_dir, vocab).trie_for(str(sid_dir))  # tokenizer read back from model_dir
    codebook = SIDCodebook.load(sid_dir / "codebook")  # as EGGRPOTrainer.__init__ builds its trie:
    expected = SIDTrie.from_sid_token_ids(
        codebook.sid_token_ids(SIDVocab(tokenizer, codebook.codebook_sizes)), vocab
    )
    for name in ("edge_keys", "edge_tokens", "indptr"):
        assert torch.equal(getattr(loaded.trie, name), getattr(expected, name))
    assert (
        loaded.pad_token_id == tokenizer.pad_token_id and loaded.trie.eos_token_id == tokenizer.eos_token_id
    )


# --------------------------------------------------------------------------------------------------
# Config and wiring
def vllm_args(tmp_path, **overrides) -> EGGRPOConfig:
    settings = dict(output_dir=str(tmp_path / "run"), sid_dir=str(tmp_path / "sids"), num_generations=4,
                    per_device_train_batch_size=8, use_cpu=True, report_to="none", use_vllm=True)  # fmt: skip
    return EGGRPOConfig(**{**settings, **overrides})


def test_trie_on_vllm_keeps_trls_sampling_corrections(tmp_path):
    # Both sides of the importance ratio are constrained log-probs now, so TRL's defaults stay on.
    assert vllm_args(tmp_path).vllm_importance_sampling_correction
    assert vllm_args(tmp_path, off_policy_mask_threshold=0.5).off_policy_mask_threshold == 0.5
    with pytest.raises(ValueError, match="rollout_mode='beam'"):
        vllm_args(tmp_path, rollout_mode="beam")


def test_generation_kwargs_opt_every_request_in(tmp_path):
    sid_dir = str(tmp_path / "sids")
    colocate = trie_generation_kwargs({"extra_args": {"x": 1}, "seed": 3}, "colocate", sid_dir)
    assert colocate == {"extra_args": {"x": 1, REQUEST_ARG: sid_dir}, "seed": 3}
    assert trie_generation_kwargs(colocate, "colocate", sid_dir) == colocate  # idempotent
    server = trie_generation_kwargs(colocate, "server", "relative/sids")
    assert server["vllm_xargs"] == {
        REQUEST_ARG: os.path.abspath("relative/sids")
    }  # the server's cwd may differ
    assert server["extra_args"] == {"x": 1}  # the other mode's field loses only our key
    assert trie_generation_kwargs(None, "server", sid_dir) == {"vllm_xargs": {REQUEST_ARG: sid_dir}}
    assert trie_generation_kwargs({"vllm_xargs": {REQUEST_ARG: "a"}}, "colocate", sid_dir) == {
        "extra_args": {REQUEST_ARG: sid_dir}
    }
    with pytest.raises(ValueError, match="vllm_mode"):
        trie_generation_kwargs(None, "remote", sid_dir)


def test_colocate_patch_adds_the_processor_to_trls_llm_and_restores_it(monkeypatch):
    import trl.generation.vllm_generation as trl_vllm

    built = []
    monkeypatch.setattr(trl_vllm, "LLM", lambda **kwargs: built.append(kwargs) or "engine", raising=False)
    original = trl_vllm.LLM
    with colocate_llm_with_trie() as calls:
        assert trl_vllm.LLM(model="m", logits_processors=["a:B"]) == "engine"
    assert trl_vllm.LLM is original and built[0]["logits_processors"] == ["a:B", PROCESSOR_FQCN]
    check_colocate_calls(calls)
    with pytest.raises(RuntimeError, match="no vLLM engine"):
        check_colocate_calls([])
    monkeypatch.delattr(trl_vllm, "LLM")
    with pytest.raises(RuntimeError, match="vllm"), colocate_llm_with_trie():
        pass


def test_server_check_reads_the_servers_processors(caplog):
    check_server_processor({"model_config": {"logits_processors": [PROCESSOR_FQCN]}})
    for processors in ([], ["other.module:Processor"]):
        with pytest.raises(RuntimeError, match="recipes/vllm_serve.py"):
            check_server_processor({"model_config": {"logits_processors": processors}})
    check_server_processor({"model_config": {}})  # unreadable: a warning, not a failure
    assert "Could not read" in caplog.text


def test_serve_recipe_runs_trls_command_with_the_processor():
    from trl.scripts.vllm_serve import ScriptArguments

    from recipes.vllm_serve import serve_command

    command = serve_command(ScriptArguments(model="outputs/sft", port=8001), ["--seed", "3"])
    assert command[command.index("--logits-processors") + 1] == PROCESSOR_FQCN
    assert command[command.index("--logprobs-mode") + 1] == "processed_logprobs"
    assert "--weight-transfer-config" in command and command[command.index("serve") + 1] == "outputs/sft"


def test_vllm_recipe_config_parses(parse_recipe):
    _, args, model_args = parse_recipe(
        (EGGRPOScriptArguments, EGGRPOConfig, ModelConfig),
        ["--config", "recipes/configs/qwen2.5-0.5b/eg_grpo_vllm.yaml", "--bf16", "false"],
    )
    assert args.use_vllm and args.vllm_mode == "colocate" and args.constrained_decoding
    assert args.vllm_importance_sampling_correction and model_args.use_peft


# --------------------------------------------------------------------------------------------------
# The trainer through TRL's real colocate path, with the stand-in engine
def test_trainer_colocate_rollouts_are_valid_sids(
    tmp_path, monkeypatch, tiny_data_dir, tiny_sid_dir, tiny_sft_dir
):
    import trl.generation.vllm_generation as trl_vllm

    monkeypatch.setattr(trl_vllm, "is_vllm_available", lambda *a, **k: True)
    monkeypatch.setattr(trl_vllm, "LLM", FakeLLM, raising=False)
    monkeypatch.setattr(trl_vllm, "SamplingParams", FakeSamplingParams, raising=False)
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "localhost",
                        "MASTER_PORT": "29533"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)  # TRL's colocate init sets them; restored afterwards
    args = vllm_args(tmp_path, sid_dir=str(tiny_sid_dir), num_expert_samples=1, max_steps=2, learning_rate=1e-2,
                     logging_steps=1, save_strategy="no", disable_tqdm=True, seed=0)  # fmt: skip
    script = EGGRPOScriptArguments(data_dir=str(tiny_data_dir), rewards=[{"name": "sid_match"}], max_train_rows=32,
                                   chain=False)  # fmt: skip
    trainer = build_trainer(script, args, ModelConfig(model_name_or_path=str(tiny_sft_dir)))
    engine = trainer.vllm_generation.llm
    assert isinstance(engine, FakeLLM) and PROCESSOR_FQCN in engine.kwargs["logits_processors"]
    assert trl_vllm.LLM is FakeLLM  # the patch was scoped to the trainer's construction

    outputs = []
    original = trainer._generate_and_score_completions

    def record(rows):
        outputs.append(original(rows))
        return outputs[-1]

    monkeypatch.setattr(trainer, "_generate_and_score_completions", record)
    trainer.train()

    logs = [h for h in trainer.state.log_history if "eg/valid_sid_rate" in h]
    assert logs and all(h["eg/valid_sid_rate"] == 1.0 for h in logs)
    assert engine.steps_with_mixed_lengths > 0  # requests at different steps shared the batch
    assert int(engine.processors[0].invalid_rows) == 0
    for out in outputs:
        sampled = out["sampling_per_token_logps"]
        mask = out["completion_mask"].bool()
        experts = out["expert_mask"]
        assert experts.any() and torch.isnan(sampled[experts][mask[experts]]).all()  # expert rows stay NaN
        assert torch.isfinite(sampled[~experts][mask[~experts]]).all()
        # The engine's processed (trie-masked) log-probs and the trainer's constrained ones are of one
        # distribution: the IS ratio is 1 up to float error (full-vocabulary trainer log-probs gave Z < 1).
        ratio = out["importance_sampling_ratio"]  # (B, 1): TRL's default sequence_mask mode
        assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-3), ratio.flatten().tolist()
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)


# --------------------------------------------------------------------------------------------------
# The real vLLM engine (not run on this project's CPU machines)
def gpu_vllm():
    vllm = pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return vllm


# head_dim 64: the default tiny model's head_dim 16 is below what vLLM's GPU attention kernels take.
GPU_SIZES = dict(hidden_size=128, num_attention_heads=2, num_key_value_heads=1, intermediate_size=256)


@pytest.mark.gpu
def test_vllm_colocate_generation_is_always_a_valid_sid(tmp_path):
    vllm = gpu_vllm()
    model, tokenizer, _ = build_tiny_model_and_tokenizer(product_texts(), CODEBOOK_SIZES,
                                                         TinyModelConfig(vocab_size=400, **GPU_SIZES))  # fmt: skip
    model_dir, sid_dir = tiny_model_and_sids(tmp_path, (model.to(torch.bfloat16), tokenizer, None))
    codebook = SIDCodebook.load(sid_dir / "codebook")
    valid = {tuple(ids) for ids in codebook.sid_token_ids(SIDVocab(tokenizer, CODEBOOK_SIZES))}  # L ids + eos
    llm = vllm.LLM(model=str(model_dir), logits_processors=[PROCESSOR_FQCN], dtype="bfloat16", seed=0,
                   gpu_memory_utilization=0.2, max_model_len=256, enforce_eager=True,
                   logprobs_mode="processed_logprobs")  # fmt: skip
    prompts = [{"prompt_token_ids": tokenizer(p)["input_ids"]} for p in random_prompts(16)]
    for temperature in (1.5, 0.0):
        on = vllm.SamplingParams(n=4 if temperature else 1, temperature=temperature, max_tokens=8, logprobs=0,
                                 extra_args={REQUEST_ARG: str(sid_dir)})  # fmt: skip
        outputs = llm.generate(prompts, sampling_params=on, use_tqdm=False)
        completions = [
            tuple(o.token_ids) for out in outputs for o in out.outputs
        ]  # eos included, as TRL needs
        assert len(completions) == len(prompts) * on.n and all(c in valid for c in completions)
    off = vllm.SamplingParams(n=4, temperature=1.5, max_tokens=8, seed=0)  # not opted in: untouched
    free = [tuple(o.token_ids) for out in llm.generate(prompts, sampling_params=off, use_tqdm=False)
            for o in out.outputs]  # fmt: skip
    assert sum(c in valid for c in free) < len(free)  # a random model does not spell SIDs by itself


@pytest.mark.gpu
def test_tiny_eg_grpo_run_with_vllm_colocate(tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir):
    gpu_vllm()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_sft_dir)  # the SFT tokenizer, with the SID tokens
    model_dir = tmp_path / "policy"
    build_tiny_qwen2(tokenizer, **GPU_SIZES).to(torch.bfloat16).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    args = vllm_args(tmp_path, sid_dir=str(tiny_sid_dir), use_cpu=False, bf16=True, max_steps=2,
                     logging_steps=1, save_strategy="no", vllm_mode="colocate", vllm_gpu_memory_utilization=0.2,
                     vllm_max_model_length=512, disable_tqdm=True, seed=0)  # fmt: skip
    script = EGGRPOScriptArguments(data_dir=str(tiny_data_dir), rewards=[{"name": "sid_match"}], max_train_rows=32,
                                   chain=False)  # fmt: skip
    trainer = build_trainer(script, args, ModelConfig(model_name_or_path=str(model_dir)))
    trainer.train()
    logs = [h for h in trainer.state.log_history if "eg/valid_sid_rate" in h]
    assert logs and all(
        h["eg/valid_sid_rate"] == 1.0 for h in logs
    )  # a random policy: only the trie does that
