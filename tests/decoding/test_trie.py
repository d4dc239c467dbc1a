"""SIDTrie and SIDTrieLogitsProcessor against a plain-Python reference, on raw token ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eg_grpo.decoding import DEAD, SIDTrie, SIDTrieLogitsProcessor, sid_token_ids_from_codes

EOS, PAD, V = 1, 2, 60


def reference_allowed(seqs: list[tuple[int, ...]], prefix: tuple[int, ...]) -> set[int]:
    """The rules of SIDTrie.allowed_token_ids, written the slow obvious way."""
    L = len(seqs[0]) - 1
    if len(prefix) > L and prefix[: L + 1] in seqs:
        return {EOS, PAD}  # a finished SID
    if len(prefix) >= L:
        return {EOS}  # a complete SID, or an invalid over-long prefix
    children = {s[len(prefix)] for s in seqs if s[: len(prefix)] == prefix}
    return children or {EOS}


def catalogue(sizes=(5, 7, 3), n=60, seed=0) -> list[tuple[int, ...]]:
    """``n`` distinct SIDs over per-level token ranges (level l uses ids offset_l + code), ending with EOS."""
    rng = np.random.default_rng(seed)
    offsets = np.cumsum((10,) + sizes[:-1])
    codes = {tuple(int(rng.integers(k)) for k in sizes) for _ in range(n * 4)}
    codes = sorted(codes)[:n]
    return [tuple(int(o + c) for o, c in zip(offsets, code)) + (EOS,) for code in codes]


def random_prefixes(seqs, t: int, rows: int, rng) -> torch.Tensor:
    """Rows of ``t`` tokens: valid prefixes, corrupted ones, and finished SIDs followed by pads."""
    L = len(seqs[0]) - 1
    out = []
    for _ in range(rows):
        s = list(seqs[rng.integers(len(seqs))]) + [PAD] * max(0, t - L - 1)
        row = s[:t]
        if t and rng.random() < 0.3:  # corrupt one position with any token
            row[rng.integers(t)] = int(rng.integers(3, V))
        out.append(row)
    return torch.tensor(out, dtype=torch.long).reshape(rows, t)


@pytest.mark.parametrize("t", [0, 1, 2, 3, 4, 5])
def test_allowed_tokens_match_reference(t):
    seqs = catalogue()
    trie = SIDTrie.from_sid_token_ids([list(s) for s in seqs], vocab_size=V)
    rng = np.random.default_rng(t)
    generated = random_prefixes(seqs, t, rows=200, rng=rng)
    mask = trie.allowed_tokens(generated, pad_token_id=PAD)  # (rows, V)
    assert mask.shape == (200, V) and mask.dtype == torch.bool
    for row, allowed in zip(generated.tolist(), mask):
        expected = reference_allowed(seqs, tuple(row))
        assert set(torch.nonzero(allowed).flatten().tolist()) == expected, row
    assert mask.any(dim=1).all(), "a row was left with no allowed token"


def test_levels_sharing_token_ids_follow_the_prefix_not_the_level_sets():
    # The same ids at both levels: a per-level token set would allow (6, 5) and (5, 5); the trie must not.
    seqs = [[5, 6, EOS], [6, 7, EOS], [7, 5, EOS]]
    trie = SIDTrie.from_sid_token_ids(seqs, vocab_size=V)
    mask = trie.allowed_tokens(torch.tensor([[5], [6], [7]]))
    assert [torch.nonzero(m).flatten().tolist() for m in mask] == [[6], [7], [5]]
    assert trie.contains(seqs).all()
    assert not trie.contains([[6, 5, EOS], [5, 5, EOS], [5, 7, EOS], [7, 6, EOS]]).any()


def test_walk_marks_unknown_prefixes_dead_and_out_of_vocab_tokens_never_alias():
    trie = SIDTrie.from_sid_token_ids([[10, 20, EOS], [11, 21, EOS]], vocab_size=30)
    # 20 + 30 == 50 would alias (node 1, token 20) as (node 0, token 50) with key = node * V + token.
    node = trie.walk(torch.tensor([[10, 20], [11, 20], [40, 20], [10, 50], [10, -1]]))
    assert node[0] != DEAD and node[1:].eq(DEAD).all()


def test_duplicates_are_merged_and_sizes_reported():
    trie = SIDTrie.from_sid_token_ids(
        [[10, 20, EOS], [10, 20, EOS], [10, 21, EOS], [12, 20, EOS]], vocab_size=V
    )
    assert trie.num_sids == 3 and trie.num_levels == 2
    assert trie.max_fanout == (2, 2)
    assert trie.nbytes == (trie.edge_keys.numel() + trie.edge_tokens.numel() + trie.indptr.numel()) * 8
    assert trie.edge_tokens[-1] == EOS  # the sentinel invalid prefixes read
    assert trie.edge_keys.numel() == 2 + 3  # two depth-1 prefixes, three SIDs; eos is implicit


@pytest.mark.parametrize(
    ("seqs", "message"),
    [
        ([], "no SIDs"),
        ([[10, 20, EOS], [10, EOS]], "different lengths"),
        ([[10, 20, EOS], [10, 21, 3]], "not the eos"),
        ([[10, EOS, EOS]], "appears inside"),
        ([[10, 99, EOS]], "vocab_size"),
        ([[EOS]], "L >= 1"),
    ],
)
def test_bad_catalogues_are_rejected_with_a_reason(seqs, message):
    with pytest.raises(ValueError, match=message):
        SIDTrie.from_sid_token_ids(seqs, vocab_size=V)


def test_sid_token_ids_from_codes_maps_levels_and_appends_eos():
    level_ids = [np.array([10, 11]), np.array([20, 21, 22])]
    out = sid_token_ids_from_codes(np.array([[1, 2], [0, 0]]), level_ids, EOS)
    assert out.tolist() == [[11, 22, EOS], [10, 20, EOS]]


def test_processor_masks_exactly_and_leaves_its_input_untouched():
    seqs = catalogue(n=40, seed=1)
    trie = SIDTrie.from_sid_token_ids([list(s) for s in seqs], vocab_size=V)
    rng = np.random.default_rng(0)
    prompt = torch.randint(3, V, (64, 7))
    for t in range(5):
        generated = random_prefixes(seqs, t, rows=64, rng=rng)
        scores = torch.randn(64, V + 4)  # wider logits than the trie's vocab (padded embedding rows)
        before = scores.clone()
        processor = SIDTrieLogitsProcessor(trie, prompt_length=7, pad_token_id=PAD)
        out = processor(torch.cat([prompt, generated], dim=1), scores)
        assert torch.equal(scores, before)
        allowed = torch.zeros_like(out, dtype=torch.bool)
        allowed[:, :V] = trie.allowed_tokens(generated, pad_token_id=PAD)
        assert torch.equal(out[allowed], scores[allowed])
        assert torch.isneginf(out[~allowed]).all()
        assert torch.isfinite(out).any(dim=1).all()
        expected_invalid = sum(
            1 for row in generated.tolist()
            if not any(s[: min(t, 3)] == tuple(row[:3]) for s in seqs) or (t > 3 and row[3] != EOS)
        )  # fmt: skip
        assert int(processor.invalid_rows) == expected_invalid


def test_processor_rejects_a_wrong_prompt_length_or_narrow_logits():
    trie = SIDTrie.from_sid_token_ids([[10, 20, EOS]], vocab_size=V)
    with pytest.raises(ValueError, match="prompt_length"):
        SIDTrieLogitsProcessor(trie, prompt_length=9)(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, V))
    with pytest.raises(ValueError, match="vocab_size"):
        SIDTrieLogitsProcessor(trie, prompt_length=5)(
            torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, V - 1)
        )


def test_large_catalogue_builds_compactly():
    rng = np.random.default_rng(0)
    codes = np.unique(rng.integers(0, 256, size=(120_000, 3)), axis=0)[:100_000]
    level_ids = [np.arange(256) + 1000 + 256 * level for level in range(3)]
    seqs = sid_token_ids_from_codes(codes, level_ids, EOS)
    trie = SIDTrie.from_sid_token_ids(seqs, vocab_size=2000)
    assert trie.num_sids == 100_000
    assert trie.nbytes < 100_000 * 3 * 24  # int64 key + token + indptr per edge, at most
    sample = torch.from_numpy(seqs[rng.choice(len(seqs), 500)])
    assert trie.contains(sample).all()
    shuffled = sample.clone()
    shuffled[:, 2] = torch.from_numpy(rng.integers(1512, 1768, 500))
    valid = set(map(tuple, seqs.tolist()))
    expected = [tuple(r) in valid for r in shuffled.tolist()]
    assert trie.contains(shuffled).tolist() == expected
