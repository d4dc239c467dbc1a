"""generate_sids on a tiny random Qwen2: validity, exactness against brute force, and isolation from
a model's own generation_config.json."""

from __future__ import annotations

import collections

import pytest
import torch
from decoding_helpers import brute_force_scores, random_catalogue, random_prompts, vocab_size
from transformers import AutoModelForCausalLM, GenerationConfig, LogitsProcessorList

from eg_grpo.decoding import (
    SIDTrie,
    SIDTrieLogitsProcessor,
    generate_sids,
    isolated_generation_config,
    logits_width,
)


def trie_for(model, vocab, sids) -> SIDTrie:
    return SIDTrie.from_sid_token_ids([vocab.encode(s) for s in sids], vocab_size=vocab_size(model))


@pytest.mark.parametrize("mode", ["beam", "sample"])
def test_every_generated_sequence_is_a_valid_sid(tiny_lm, mode):
    model, tokenizer, vocab = tiny_lm
    sids = random_catalogue(30, seed=1)
    trie = trie_for(model, vocab, sids)
    prompts = random_prompts(64, seed=2)
    results = generate_sids(
        model, tokenizer, prompts, trie, mode=mode, num=8, batch_size=16, temperature=3.0, seed=0
    )
    assert len(results) == len(prompts)
    for candidates in results:
        assert len(candidates) == 8  # 30 SIDs: beam search always finds 8, sampling returns all 8
        for ids, score in candidates:
            assert ids[-1] == tokenizer.eos_token_id
            assert vocab.decode(ids) in sids
            assert score < 0


def test_beam_search_returns_the_brute_force_top_b_in_order(tiny_lm):
    model, tokenizer, vocab = tiny_lm
    sids = random_catalogue(18, seed=4)
    trie = trie_for(model, vocab, sids)
    seqs = [vocab.encode(s) for s in sids]
    prompts = ["red", "blue cotton slim running shirt hat", "lamp desk", "black leather bag phone case"]
    # 18 beams cover every prefix at every depth, so the search is exhaustive and must be exact.
    results = generate_sids(model, tokenizer, prompts, trie, mode="beam", num=7, num_beams=18, batch_size=4)
    for prompt, candidates in zip(prompts, results):
        scores = brute_force_scores(model, tokenizer, prompt, seqs)  # (18,)
        order = torch.argsort(scores, descending=True)[:7]
        assert [c.token_ids for c in candidates] == [tuple(seqs[i]) for i in order]
        torch.testing.assert_close(
            torch.tensor([c.score for c in candidates]), scores[order], atol=1e-4, rtol=0
        )


def test_width_one_beam_is_greedy_and_scored(tiny_lm):
    model, tokenizer, vocab = tiny_lm
    sids = random_catalogue(20, seed=6)
    trie = trie_for(model, vocab, sids)
    prompts = random_prompts(4, seed=8)
    greedy = generate_sids(model, tokenizer, prompts, trie, mode="beam", num=1)
    for prompt, [candidate] in zip(prompts, greedy):
        # Greedy: the best allowed token at every step, checked step by step under teacher forcing.
        prompt_ids = tokenizer(prompt)["input_ids"]
        ids = list(candidate.token_ids)
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([prompt_ids + ids])).logits[0].float(), dim=-1)
        for step in range(len(ids)):
            allowed = trie.allowed_tokens(torch.tensor([ids[:step]]))[0]
            row = logprobs[len(prompt_ids) - 1 + step].masked_fill(~allowed, float("-inf"))
            assert int(row.argmax()) == ids[step]
        expected = brute_force_scores(model, tokenizer, prompt, [ids])[0]
        assert abs(candidate.score - float(expected)) < 1e-4


def test_beam_search_with_width_b_keeps_the_best_when_prefixes_fit(tiny_lm):
    # With beam width B >= the number of prefixes at each depth < L, only the last (eos) step is pruned
    # before scoring: the B beams are the B best SIDs by their first L tokens.
    model, tokenizer, vocab = tiny_lm
    sids = [(a, b, c) for a in (0, 3) for b in (1, 4) for c in range(4)]  # 4 two-token prefixes, 16 SIDs
    trie = trie_for(model, vocab, sids)
    seqs = [vocab.encode(s) for s in sids]
    prompt = "white wool hat"
    [candidates] = generate_sids(model, tokenizer, [prompt], trie, mode="beam", num=4)
    without_eos = brute_force_scores(model, tokenizer, prompt, [s[:-1] for s in seqs])
    best = {tuple(seqs[i]) for i in torch.argsort(without_eos, descending=True)[:4]}
    assert {c.token_ids for c in candidates} == best
    assert [c.score for c in candidates] == sorted((c.score for c in candidates), reverse=True)


def test_beams_are_distinct_and_a_small_catalogue_returns_each_sid_once(tiny_lm, caplog):
    model, tokenizer, vocab = tiny_lm
    many = trie_for(model, vocab, random_catalogue(60, seed=5))
    for candidates in generate_sids(model, tokenizer, random_prompts(6, seed=7), many, mode="beam", num=12):
        assert len({c.token_ids for c in candidates}) == 12
    few = [(0, 0, 0), (1, 2, 3), (5, 4, 3)]
    [candidates] = generate_sids(
        model, tokenizer, ["red bag"], trie_for(model, vocab, few), mode="beam", num=8
    )
    assert sorted(vocab.decode(c.token_ids) for c in candidates) == few  # no placeholder beams, no repeats
    [candidates] = generate_sids(model, tokenizer, ["hat"], trie_for(model, vocab, [(2, 2, 2)]), num=5)
    assert [vocab.decode(c.token_ids) for c in candidates] == [(2, 2, 2)]
    assert "not valid SIDs" not in caplog.text


def test_codes_shared_across_levels_never_produce_an_sid_outside_the_catalogue(tiny_lm):
    # Per-level token sets would allow all 27 combinations of these codes; only 3 exist.
    model, tokenizer, vocab = tiny_lm
    sids = [(1, 2, 3), (2, 3, 1), (3, 1, 2)]
    trie = trie_for(model, vocab, sids)
    prompts = random_prompts(16, seed=9)
    sampled = generate_sids(model, tokenizer, prompts, trie, mode="sample", num=16, temperature=5.0, seed=1)
    beams = generate_sids(model, tokenizer, prompts, trie, mode="beam", num=3)
    produced = [vocab.decode(c.token_ids) for group in sampled + beams for c in group]
    assert len(produced) == 16 * 16 + 16 * 3
    assert set(produced) == set(sids)


def test_sampling_follows_the_constrained_distribution(tiny_lm):
    # At temperature 1 each step samples from the model's distribution renormalised over the allowed
    # tokens; compare the empirical SID frequencies with that product of renormalised conditionals.
    model, tokenizer, vocab = tiny_lm
    sids = [(0, 0, 0), (0, 0, 1), (0, 1, 0), (2, 3, 3), (4, 4, 2)]
    trie = trie_for(model, vocab, sids)
    prompt = "blue hat"
    [samples] = generate_sids(model, tokenizer, [prompt], trie, mode="sample", num=3000, seed=0)
    counts = collections.Counter(vocab.decode(c.token_ids) for c in samples)
    prompt_ids = tokenizer(prompt)["input_ids"]
    with torch.no_grad():
        expected = {}
        for sid in sids:
            ids = vocab.encode(sid)
            logits = model(torch.tensor([prompt_ids + ids])).logits[0, len(prompt_ids) - 1 : -1]  # (L+1, V)
            p = 1.0
            for step in range(len(ids)):
                allowed = trie.allowed_tokens(torch.tensor([ids[:step]]))[0]
                probs = torch.softmax(logits[step].masked_fill(~allowed, float("-inf")), dim=-1)
                p *= float(probs[ids[step]])
            expected[sid] = p
    assert abs(sum(expected.values()) - 1) < 1e-5
    for sid in sids:
        assert abs(counts[sid] / 3000 - expected[sid]) < 0.03, (sid, counts[sid] / 3000, expected[sid])


def test_hostile_generation_config_json_does_not_change_results(tiny_lm, tmp_path):
    model, tokenizer, vocab = tiny_lm
    sids = random_catalogue(40, seed=11)
    trie = trie_for(model, vocab, sids)
    prompts = random_prompts(5, seed=12)
    clean_beam = generate_sids(model, tokenizer, prompts, trie, mode="beam", num=10)
    clean_sample = generate_sids(model, tokenizer, prompts, trie, mode="sample", num=10, seed=3)

    model.save_pretrained(tmp_path)
    sid_token = int(vocab.level_token_ids[0][sids[0][0]])
    hostile = GenerationConfig(
        do_sample=True, top_k=2, top_p=0.3, temperature=0.2, min_p=0.5, repetition_penalty=3.0,
        no_repeat_ngram_size=1, length_penalty=-5.0, num_beams=2, num_return_sequences=1,
        bad_words_ids=[[sid_token]], suppress_tokens=[sid_token], min_new_tokens=6, max_new_tokens=2,
        renormalize_logits=True, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    hostile.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.generation_config.top_k == 2 and loaded.generation_config.bad_words_ids == [[sid_token]]

    assert generate_sids(loaded, tokenizer, prompts, trie, mode="beam", num=10) == clean_beam
    hostile_sample = generate_sids(loaded, tokenizer, prompts, trie, mode="sample", num=10, seed=3)
    assert [[c.token_ids for c in g] for g in hostile_sample] == [
        [c.token_ids for c in g] for g in clean_sample
    ]
    for got, want in zip(hostile_sample, clean_sample):
        torch.testing.assert_close([c.score for c in got], [c.score for c in want], atol=1e-5, rtol=0)
    assert loaded.generation_config.top_k == 2  # restored after generation


def test_isolated_generation_config_restores_the_models_config(tiny_lm):
    model, _, _ = tiny_lm
    original = model.generation_config
    with isolated_generation_config(model):
        assert model.generation_config is not original
        assert model.generation_config.top_k is None and model.generation_config.do_sample is None
    assert model.generation_config is original


def test_processor_sees_no_invalid_prefix_under_beam_reordering(tiny_lm):
    model, tokenizer, vocab = tiny_lm
    trie = trie_for(model, vocab, random_catalogue(50, seed=13))
    enc = tokenizer(
        ["red", "blue wool slim running shoes"], padding=True, padding_side="left", return_tensors="pt"
    )
    processor = SIDTrieLogitsProcessor(
        trie, prompt_length=enc["input_ids"].shape[1], pad_token_id=tokenizer.pad_token_id
    )
    config = GenerationConfig(max_new_tokens=4, num_beams=9, num_return_sequences=9, do_sample=False,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    with isolated_generation_config(model):
        out = model.generate(
            **enc, generation_config=config, logits_processor=LogitsProcessorList([processor])
        )
    assert int(processor.invalid_rows) == 0
    assert trie.contains(out[:, enc["input_ids"].shape[1] :]).all()


def test_bad_arguments_fail_clearly(tiny_lm):
    model, tokenizer, vocab = tiny_lm
    trie = trie_for(model, vocab, [(0, 0, 0)])
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_sids(model, tokenizer, ["x"], trie, max_new_tokens=3)
    with pytest.raises(ValueError, match="mode"):
        generate_sids(model, tokenizer, ["x"], trie, mode="greedy")
    with pytest.raises(ValueError, match="num_beams"):
        generate_sids(model, tokenizer, ["x"], trie, num=4, num_beams=2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_model_on_gpu_with_a_trie_built_on_cpu(tiny_lm):
    model, tokenizer, vocab = tiny_lm
    sids = random_catalogue(40, seed=14)
    trie = trie_for(model, vocab, sids)  # on the CPU
    prompts = random_prompts(8, seed=15)
    cpu = generate_sids(model, tokenizer, prompts, trie, mode="beam", num=5)
    gpu_model = type(model)(model.config).cuda().eval()
    gpu_model.load_state_dict(model.state_dict())
    gpu = generate_sids(gpu_model, tokenizer, prompts, trie, mode="beam", num=5)
    assert trie.device.type == "cpu"
    for a, b in zip(cpu, gpu):
        assert [c.token_ids for c in a] == [c.token_ids for c in b]
        torch.testing.assert_close([c.score for c in a], [c.score for c in b], atol=1e-3, rtol=0)
    sampled = generate_sids(
        gpu_model, tokenizer, prompts, trie, mode="sample", num=16, temperature=2.0, seed=0
    )
    assert all(vocab.decode(c.token_ids) in sids for g in sampled for c in g)


@pytest.mark.parametrize("mode", ["beam", "sample"])
def test_shared_prompt_cache_gives_the_unshared_result(tiny_lm, mode):
    # Prompts of different lengths, so left padding and its positions are exercised too.
    model, tokenizer, vocab = tiny_lm
    trie = trie_for(model, vocab, random_catalogue(40, seed=11))
    prompts = ["red", "blue cotton slim running shirt hat black leather", "lamp desk", "bag"]
    runs = [
        generate_sids(
            model,
            tokenizer,
            prompts,
            trie,
            mode=mode,
            num=6,
            batch_size=4,
            seed=5,
            temperature=2.0,
            share_prompt_cache=share,
        )  # fmt: skip
        for share in (False, True)
    ]
    for unshared, shared in zip(*runs):
        assert [c.token_ids for c in shared] == [c.token_ids for c in unshared]
        torch.testing.assert_close(
            torch.tensor([c.score for c in shared]),
            torch.tensor([c.score for c in unshared]),
            atol=1e-5,
            rtol=0,
        )


def test_logits_width_reads_a_partitioned_heads_real_shape(tiny_lm):
    model, _, _ = tiny_lm
    assert logits_width(model) == model.get_output_embeddings().weight.shape[0] == vocab_size(model)

    class PartitionedHead:  # what DeepSpeed ZeRO-3 leaves on a module: an empty tensor plus ds_shape
        weight = torch.nn.Parameter(torch.empty(0))

    PartitionedHead.weight.ds_shape = torch.Size([123, 32])

    class Model:
        def get_output_embeddings(self):
            return PartitionedHead()

    assert logits_width(Model()) == 123
