"""Helpers for the decoding tests: catalogues, prompts, and brute-force scoring of every valid SID."""

from __future__ import annotations

import itertools

import numpy as np
import torch

# Levels of different sizes on purpose: the trie must not assume one codebook size.
CODEBOOK_SIZES = (6, 5, 4)
WORDS = [
    "red",
    "blue",
    "black",
    "white",
    "cotton",
    "wool",
    "leather",
    "slim",
    "running",
    "shoes",
    "shirt",
    "bag",
    "hat",
    "phone",
    "case",
    "lamp",
    "desk",
]


def product_texts(n: int = 400, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(2, 7))) for _ in range(n)]


def vocab_size(model) -> int:
    return model.get_output_embeddings().weight.shape[0]


def random_catalogue(n: int, sizes=CODEBOOK_SIZES, seed: int = 0) -> list[tuple[int, ...]]:
    """``n`` distinct random SIDs (code tuples)."""
    everything = list(itertools.product(*[range(k) for k in sizes]))
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(everything), size=n, replace=False)
    return [everything[i] for i in sorted(picked)]


def random_prompts(n: int, seed: int = 0) -> list[str]:
    """Prompts of different lengths (so the batch is left-padded)."""
    return product_texts(n, seed=seed + 100)


@torch.no_grad()
def brute_force_scores(model, tokenizer, prompt: str, seqs: list[list[int]]) -> torch.Tensor:
    """``log p(seq | prompt)`` of every full sequence under teacher forcing, without padding: ``(S,)``."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    x = torch.tensor([prompt_ids + list(s) for s in seqs])  # (S, P + L + 1)
    logprobs = torch.log_softmax(model(x).logits.float(), dim=-1)  # (S, P + L + 1, V)
    P = len(prompt_ids)
    return logprobs[:, P - 1 : -1].gather(2, x[:, P:, None]).squeeze(2).sum(dim=1)
