"""A beam search made for SIDs: one prefill per prompt, then ``L + 1`` steps over the trie's continuations.

``model.generate`` pays for generality that SIDs do not need: every step reorders and re-concatenates a
KV cache that holds each prompt once per beam, scores the whole vocabulary of every beam, and builds a
padding mask. A SID is only ``L + 1`` tokens long, so those costs, not the model, dominate. Here:

- each prompt runs through the model once (left-padded batch ``B``); its first tokens are chosen from
  that one row, and only then does the request fan out into beams (nothing is replicated before the
  first step);
- at every step the candidates are the trie's allowed ids of each beam (``SIDTrie.allowed_token_ids``,
  a tensor gather, no loop over rows), and the top beams of a request are chosen over the flattened
  ``beams × allowed`` candidates, never over ``beams × V``;
- for the supported families the model's modules run directly, the prompt's keys and values stay at
  one copy per request, and only the ``≤ L`` generated tokens live in a per-beam cache
  (:class:`~eg_grpo.decoding.shared_prefix.SharedPrefixDecoder`). Other models fall back to their
  own forward with the prompt cache repeated once per beam, as ``generate`` does.

``score="model"`` ranks by ``log p(sid, eos | prompt)`` under the full model (``generate``'s beam search
with the trie processor: ``log_softmax`` over the vocabulary, then the mask). ``score="constrained"``
ranks by the constrained policy RL trains, ``log π_c = Σ_t z_{y_t} - logsumexp_{a ∈ A(y_<t)} z_a``
(:mod:`eg_grpo.rl.constrained`): only the allowed ids' logits are computed, and its eos step is certain
(``log π_c = 0``), so the forward that would score it is not run.

Every search keeps its state in its own objects and changes nothing on the model (bar ``eval()`` for a
model in training mode), so threads may search one model at once.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from eg_grpo.decoding.generate import SIDCandidate, check_beam_score
from eg_grpo.decoding.shared_prefix import SharedPrefixDecoder, supports_shared_prefix
from eg_grpo.decoding.trie import SIDTrie

__all__ = ["beam_search_batch", "sid_beam_search", "supports_shared_prefix"]


def _cache_kwarg(model) -> str:
    """The name of the cache argument of the model's forward (``past_key_values`` before transformers 5.x)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


class _RepeatedPromptDecoder:
    """The fallback for models outside :data:`~eg_grpo.decoding.shared_prefix.SHARED_PREFIX_MODEL_TYPES`:
    ``model.forward`` over a cache holding each prompt once per beam (``generate``'s layout).

    Same interface as :class:`~eg_grpo.decoding.shared_prefix.SharedPrefixDecoder`; its "hidden states"
    are already logits.
    """

    def __init__(self, model):
        self.model, self.cache_name = model, _cache_kwarg(model)
        self.cache = DynamicCache(config=model.config)  # filled in place by the forwards

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self.mask = attention_mask.long()  # (B, P)
        position_ids = (self.mask.cumsum(-1) - 1).masked_fill(self.mask == 0, 0)  # generate's rule, pads at 0
        out = self.model(input_ids=input_ids, attention_mask=self.mask, position_ids=position_ids,
                         use_cache=True, logits_to_keep=1, **{self.cache_name: self.cache})  # fmt: skip
        self.next_position = self.mask.sum(-1)  # (B,)
        return out.logits[:, -1]  # (B, V)

    def step(self, tokens: torch.Tensor, parents: torch.Tensor, step: int) -> torch.Tensor:
        B = self.mask.shape[0]
        k = tokens.shape[0] // B
        if step == 0:
            self.cache.batch_repeat_interleave(k)  # each prompt's cache, once per beam: (B * k, ...)
        else:
            self.cache.reorder_cache(parents)
        step_mask = torch.cat([self.mask, self.mask.new_ones(B, step + 1)], dim=1).repeat_interleave(k, dim=0)
        positions = (self.next_position + step).repeat_interleave(k)[:, None]  # (B * k, 1)
        out = self.model(input_ids=tokens[:, None], attention_mask=step_mask, position_ids=positions,
                         use_cache=True, **{self.cache_name: self.cache})  # fmt: skip
        return out.logits[:, -1]  # (B * k, V)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden

    def allowed_logits(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return hidden.gather(1, ids)


def _step_logprobs(decoder, hidden: torch.Tensor, ids: torch.Tensor, real: torch.Tensor, score: str):
    """``(rows, W)`` log-probs of the allowed ids ``ids`` (``-inf`` where ``real`` is False).

    ``"model"``: the full-vocabulary log-softmax at ``ids`` (transformers' beam search; one fused kernel,
    twice as fast as ``logsumexp`` on a CPU). ``"constrained"``: the allowed ids' logits only,
    renormalised over them (``log π_c``).
    """
    if score == "model":
        logits = decoder.logits(hidden).float()  # (rows, V)
        picked = torch.log_softmax(logits, dim=-1).gather(1, ids)
        return picked.masked_fill(~real, float("-inf"))
    picked = decoder.allowed_logits(hidden, ids).float()  # (rows, W)
    return picked.masked_fill(~real, float("-inf")).log_softmax(dim=-1)


def _allowed(trie: SIDTrie, generated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, real)``, each ``(rows, W)``: the allowed ids after ``generated`` and which slots are real.

    ``allowed_token_ids`` pads a row's list by repeating its last (largest) child; the children are
    distinct and sorted, so a slot is a repeat exactly when it equals the slot before it.
    """
    ids, _ = trie.allowed_token_ids(generated)  # (rows, W)
    real = torch.ones_like(ids, dtype=torch.bool)
    real[:, 1:] = ids[:, 1:] != ids[:, :-1]
    return ids, real


@torch.inference_mode()
def beam_search_batch(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    trie: SIDTrie,
    num: int,
    num_beams: int | None = None,
    score: str = "model",
    shared_prefix: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search over the SIDs of ``trie`` for a left-padded batch of prompts.

    Args:
        model: a causal LM (in eval mode) whose logits cover the trie's ``vocab_size``.
        input_ids, attention_mask: ``(B, P)`` left-padded prompts (every row has at least one token).
        trie: the valid SIDs, on the model's device.
        num: SIDs returned per prompt.
        num_beams: beam width (default ``num``; at least ``num``).
        score: ``"model"`` (``log p`` of the full model, ``generate``'s ranking) or ``"constrained"``
            (``log π_c``, the trie-renormalised policy).
        shared_prefix: run the model's modules directly with one copy of each prompt's cache (default:
            when :func:`~eg_grpo.decoding.shared_prefix.supports_shared_prefix`); False: ``model.forward``
            with the prompt cache repeated per beam.

    Returns:
        ``(sequences, scores)``: ``(B, n, L + 1)`` token ids ending with eos and ``(B, n)`` float scores, best
        first, ``n = min(num, …)``; slots that no reachable SID fills score ``-inf``.
    """
    num_beams = num if num_beams is None else int(num_beams)
    if num_beams < num:
        raise ValueError(f"num_beams={num_beams} cannot return num={num} sequences")
    check_beam_score(score)
    shared_prefix = supports_shared_prefix(model) if shared_prefix is None else shared_prefix
    decoder = SharedPrefixDecoder(model) if shared_prefix else _RepeatedPromptDecoder(model)
    L, eos, device = trie.num_levels, trie.eos_token_id, input_ids.device
    B = input_ids.shape[0]
    request_row = torch.arange(B, device=device)[:, None]  # (B, 1)

    hidden = decoder.prefill(input_ids, attention_mask)  # (B, D): scores the first token
    tokens = torch.empty(B, 1, 0, dtype=torch.long, device=device)  # (B, k, t) generated so far
    scores = torch.zeros(B, 1, device=device)  # (B, k) running scores
    for t in range(L + 1):
        k = tokens.shape[1]
        if t < L:
            ids, real = _allowed(trie, tokens.view(B * k, t))  # (B * k, W)
        else:  # after the last level only eos may follow
            ids = torch.full((B * k, 1), eos, dtype=torch.long, device=device)
            real = torch.ones_like(ids, dtype=torch.bool)
        W = ids.shape[1]
        logprobs = _step_logprobs(decoder, hidden, ids, real, score).view(B, k, W)
        cand = scores[:, :, None] + logprobs  # (B, k, W)
        width = min(num_beams, k * W) if t < L else k
        scores, flat = torch.topk(cand.view(B, k * W), width, dim=1)  # (B, width), best first
        parent = torch.div(flat, W, rounding_mode="floor")  # (B, width) beam each candidate extends
        chosen = ids.view(B, k * W).gather(1, flat)  # (B, width)
        history = tokens.gather(1, parent[:, :, None].expand(-1, -1, t))  # (B, width, t) the parents' tokens
        tokens = torch.cat([history, chosen[:, :, None]], dim=2)
        if t == L or (t == L - 1 and score == "constrained"):
            break  # constrained: log π_c(eos) = 0 after a complete SID, so the eos step needs no forward
        # Beam b of request r is row r * width + b; parents index rows of the previous step.
        hidden = decoder.step(chosen.view(-1), (parent + request_row * k).view(-1), t)  # (B * width, ·)
    if tokens.shape[2] == L:  # constrained: every complete SID ends with eos
        tokens = torch.cat([tokens, tokens.new_full((B, tokens.shape[1], 1), eos)], dim=2)
    return tokens[:, :num], scores[:, :num]  # topk keeps them best first


def sid_beam_search(
    model,
    tokenizer,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    trie: SIDTrie,
    num: int = 10,
    num_beams: int | None = None,
    batch_size: int = 64,
    score: str = "model",
    shared_prefix: bool | None = None,
    show_progress: bool = False,
) -> list[list[SIDCandidate]]:
    """The ``num`` best SIDs of each prompt by beam search (:func:`beam_search_batch` over batches).

    With ``score="model"`` it returns what ``generate_sids(mode="beam", engine="hf")`` returns (same SIDs,
    same order, scores equal up to float rounding), many times faster.

    Args:
        model, tokenizer, prompts, trie, num, num_beams: as in :func:`~eg_grpo.decoding.generate_sids`.
        batch_size: prompts per prefill (each step then runs ``batch_size × num_beams`` rows).
        score: ``"model"`` or ``"constrained"`` (see :func:`beam_search_batch`).
        shared_prefix: see :func:`beam_search_batch`.
        show_progress: show a progress bar over batches.

    Returns:
        Per prompt, up to ``num`` distinct :class:`SIDCandidate` ``(token_ids, score)``, best first; fewer
        when fewer SIDs are reachable.
    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    if tokenizer.eos_token_id != trie.eos_token_id:
        raise ValueError(
            f"the trie's SIDs end with token {trie.eos_token_id} "
            f"but the tokenizer's eos is {tokenizer.eos_token_id}"
        )
    device = next(model.parameters()).device
    trie = trie.to(device)
    encoded = _encode(tokenizer, prompts)
    # Batches of prompts of similar length: less padding to prefill. Each prompt's result does not depend
    # on its batch (up to float rounding), and results go back in the callers' order.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    # Only a model in training mode is switched (and back): switching walks every module, and threads
    # sharing a served model in eval mode must not write to it.
    was_training = model.training
    if was_training:
        model.eval()
    results: list[list[SIDCandidate]] = [[] for _ in encoded]
    try:
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc="SID beam search", disable=not show_progress):
            batch = order[start : start + batch_size]
            input_ids, attention_mask = _pad_left([encoded[i] for i in batch], tokenizer.pad_token_id, device)
            seqs, scores = beam_search_batch(model, input_ids, attention_mask, trie, num, num_beams, score,
                                             shared_prefix)  # fmt: skip
            for i, row_seqs, row_scores in zip(batch, seqs.cpu().tolist(), scores.cpu().tolist()):
                results[i] = [
                    SIDCandidate(tuple(s), v) for s, v in zip(row_seqs, row_scores) if v != float("-inf")
                ]
    finally:
        if was_training:
            model.train()
    return results


def _encode(tokenizer, prompts) -> list[list[int]]:
    """Token ids of each prompt (texts are tokenised in one call; id lists are taken as they are)."""
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad_token; set one (e.g. its eos) before generating")
    if len(prompts) and isinstance(prompts[0], str):
        return [list(ids) for ids in tokenizer(list(prompts))["input_ids"]]
    return [list(map(int, p)) for p in prompts]


def _pad_left(encoded: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, P)`` left-padded ids and attention mask, as ``generate`` expects for decoder-only models."""
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        if ids:
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
    return input_ids.to(device), attention_mask.to(device)
