"""The SID beam search against transformers' beam search (same SIDs, same order, same scores) and against
brute-force enumeration of every valid SID under the constrained policy.

Scores must agree within ``ATOL = 1e-4`` (float32 sums of four log-probabilities computed along
different kernels); SIDs may trade places only where their scores tie within that tolerance.
"""

from __future__ import annotations

import pytest
import torch
from decoding_helpers import random_catalogue, random_prompts, vocab_size

from eg_grpo.decoding import SIDTrie, generate_sids
from eg_grpo.decoding.sid_beam import sid_beam_search, supports_shared_prefix

ATOL = 1e-4


def trie_for(model, vocab, sids) -> SIDTrie:
    return SIDTrie.from_sid_token_ids([vocab.encode(s) for s in sids], vocab_size=vocab_size(model))


def assert_same_ranking(got, want, atol=ATOL):
    """Same SIDs in the same order and scores within ``atol``; tied scores may swap their SIDs."""
    assert len(got) == len(want)
    got_scores = torch.tensor([c.score for c in got], dtype=torch.float64)
    want_scores = torch.tensor([c.score for c in want], dtype=torch.float64)
    torch.testing.assert_close(got_scores, want_scores, atol=atol, rtol=0)
    for i, (g, w) in enumerate(zip(got, want)):
        if g.token_ids != w.token_ids:  # allowed only inside a group of tied scores
            tied = (want_scores - want_scores[i]).abs() <= 2 * atol
            assert g.token_ids in {want[j].token_ids for j in torch.nonzero(tied).flatten().tolist()}, (
                i,
                g,
                w,
            )


@pytest.fixture(scope="module")
def catalogue():
    return random_catalogue(90, seed=21)  # 90 of the 120 possible SIDs: every prefix has several children


@pytest.mark.parametrize("beams", [1, 2, 5, 20, 100])
@pytest.mark.parametrize("shared_prefix", [True, False])
def test_same_sids_order_and_scores_as_transformers_beam_search(tiny_lm, catalogue, beams, shared_prefix):
    model, tokenizer, vocab = tiny_lm
    trie = trie_for(model, vocab, catalogue)
    # 24 prompts of 2-6 words, in batches of 7: every batch is left-padded, the last one is short.
    prompts = random_prompts(24, seed=beams)
    num = min(beams, 10)
    want = generate_sids(model, tokenizer, prompts, trie, num=num, num_beams=beams, batch_size=7, engine="hf")
    got = sid_beam_search(
        model, tokenizer, prompts, trie, num=num, num_beams=beams, batch_size=7, shared_prefix=shared_prefix
    )
    assert len(got) == len(want) == len(prompts)
    for g, w in zip(got, want):
        assert len(g) == num
        assert_same_ranking(g, w)


@pytest.mark.parametrize(
    "sids", [[(0, 0, 0), (1, 2, 3), (5, 4, 3)], [(2, 2, 2)], [(0, 1, c) for c in range(4)]]
)
def test_fewer_reachable_sids_than_beams_returns_only_real_ones(tiny_lm, sids):
    model, tokenizer, vocab = tiny_lm
    trie = trie_for(model, vocab, sids)
    prompts = ["red bag", "blue cotton slim running shirt hat", "lamp"]
    want = generate_sids(model, tokenizer, prompts, trie, num=8, engine="hf")
    got = sid_beam_search(model, tokenizer, prompts, trie, num=8)
    for g, w in zip(got, want):
        assert sorted(vocab.decode(c.token_ids) for c in g) == sorted(sids)  # each once, no placeholders
        assert_same_ranking(g, w)


def test_token_id_prompts_and_text_prompts_agree(tiny_lm, catalogue):
    model, tokenizer, vocab = tiny_lm
    trie = trie_for(model, vocab, catalogue)
    prompts = random_prompts(6, seed=3)
    as_ids = [tokenizer(p)["input_ids"] for p in prompts]
    assert sid_beam_search(model, tokenizer, prompts, trie, num=5) == sid_beam_search(
        model, tokenizer, as_ids, trie, num=5
    )


@torch.no_grad()
def brute_force_constrained(model, tokenizer, trie, prompt: str, seqs: list[list[int]]) -> torch.Tensor:
    """``log π_c(seq | prompt)`` of every SID: per step, the model's logits renormalised over the trie's
    allowed tokens, under teacher forcing without padding. ``(S,)``."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    x = torch.tensor([prompt_ids + list(s) for s in seqs])  # (S, P + L + 1)
    logits = model(x).logits.float()[:, len(prompt_ids) - 1 : -1]  # (S, L + 1, V)
    completions = x[:, len(prompt_ids) :]
    total = torch.zeros(len(seqs))
    for t in range(completions.shape[1]):
        allowed = trie.allowed_tokens(completions[:, :t])  # (S, V)
        logp = logits[:, t].masked_fill(~allowed, float("-inf")).log_softmax(-1)
        total += logp.gather(1, completions[:, t : t + 1]).squeeze(1)
    return total


@pytest.mark.parametrize("num", [1, 6, 30])
def test_constrained_score_is_the_brute_force_constrained_ranking(tiny_lm, num):
    model, tokenizer, vocab = tiny_lm
    sids = random_catalogue(30, seed=8)
    trie = trie_for(model, vocab, sids)
    seqs = [vocab.encode(s) for s in sids]
    prompts = ["red", "blue cotton slim running shirt hat", "lamp desk", "black leather bag phone case"]
    # 30 beams hold every prefix at every depth: the search is exhaustive, so it must be exact.
    results = sid_beam_search(model, tokenizer, prompts, trie, num=num, num_beams=30, score="constrained")
    routed = generate_sids(model, tokenizer, prompts, trie, num=num, num_beams=30, score="constrained")
    assert results == routed
    for prompt, candidates in zip(prompts, results):
        scores = brute_force_constrained(model, tokenizer, trie, prompt, seqs)  # (30,)
        assert abs(float(scores.exp().sum()) - 1) < 1e-4  # a distribution over the catalogue
        order = torch.argsort(scores, descending=True)[:num]
        want = [type(candidates[0])(tuple(seqs[i]), float(scores[i])) for i in order]
        assert_same_ranking(candidates, want)


def test_constrained_and_model_scores_rank_differently_but_cover_the_same_catalogue(tiny_lm, catalogue):
    model, tokenizer, vocab = tiny_lm
    trie = trie_for(model, vocab, catalogue)
    prompts = random_prompts(8, seed=5)
    model_scored = sid_beam_search(model, tokenizer, prompts, trie, num=5, num_beams=20)
    constrained = sid_beam_search(model, tokenizer, prompts, trie, num=5, num_beams=20, score="constrained")
    for m, c in zip(model_scored, constrained):
        # log π_c = log π - log Z per step, and Z <= 1: constrained scores are never below the model's.
        assert max(x.score for x in c) >= max(x.score for x in m) - ATOL
        assert all(vocab.decode(x.token_ids) in set(catalogue) for x in c)


def test_generate_sids_routes_beam_search_to_the_sid_engine(tiny_lm, catalogue):
    model, tokenizer, vocab = tiny_lm
    trie = trie_for(model, vocab, catalogue)
    prompts = random_prompts(5, seed=9)
    assert supports_shared_prefix(model)
    assert generate_sids(model, tokenizer, prompts, trie, num=4) == sid_beam_search(
        model, tokenizer, prompts, trie, num=4, batch_size=16
    )
    assert model.config._attn_implementation == "sdpa"  # restored after the search
    with pytest.raises(ValueError, match="engine"):
        generate_sids(model, tokenizer, prompts, trie, engine="vllm")
    with pytest.raises(ValueError, match="score"):
        generate_sids(model, tokenizer, prompts, trie, mode="sample", score="constrained")
    with pytest.raises(ValueError, match="num_beams"):
        sid_beam_search(model, tokenizer, prompts, trie, num=4, num_beams=2)


@pytest.mark.parametrize("score", ["model", "constrained"])
@pytest.mark.parametrize("shared_prefix", [True, False])
def test_concurrent_searches_on_one_model_match_the_single_threaded_results(tiny_lm, catalogue, score,
                                                                            shared_prefix):  # fmt: skip
    import threading

    model, tokenizer, vocab = tiny_lm
    trie = trie_for(model, vocab, catalogue)
    n_threads, rounds = 4, 5
    # Each thread has its own prompts (different lengths, so different prompt caches) and batch size 1
    # or 3, so the searches' steps interleave with different shapes.
    work = [(random_prompts(3, seed=40 + i), 1 + 2 * (i % 2)) for i in range(n_threads)]

    def search(prompts, batch_size):
        return sid_beam_search(model, tokenizer, prompts, trie, num=4, num_beams=6, batch_size=batch_size,
                               score=score, shared_prefix=shared_prefix)  # fmt: skip

    want = [search(*w) for w in work]
    got, errors = [[] for _ in work], []
    start = threading.Barrier(n_threads)

    def client(i):
        try:
            start.wait()
            for _ in range(rounds):
                got[i].append(search(*work[i]))
        except Exception as err:  # noqa: BLE001 (reported below)
            errors.append(err)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(n_threads):
        assert got[i] == [want[i]] * rounds  # exactly: the same computation as alone
    assert model.config._attn_implementation == "sdpa" and not model.training  # the model is unchanged


def test_a_single_prompt_batch_matches_the_batched_search(tiny_lm, catalogue):
    model, tokenizer, vocab = tiny_lm
    trie = trie_for(model, vocab, catalogue)
    prompts = random_prompts(5, seed=11)
    for score in ("model", "constrained"):
        batched = sid_beam_search(model, tokenizer, prompts, trie, num=5, num_beams=12, score=score)
        for prompt, want in zip(prompts, batched):
            (alone,) = sid_beam_search(model, tokenizer, [prompt], trie, num=5, num_beams=12, score=score)
            assert_same_ranking(alone, want)
