"""A beam search made for SIDs: one prefill per prompt, then ``L + 1`` steps over the trie's continuations only.

``model.generate`` pays for generality that SIDs do not need: every step reorders and re-concatenates a
KV cache that holds each prompt once per beam, scores the whole vocabulary of every beam, and builds a
padding mask. A SID is only ``L + 1`` tokens long, so those costs, not the model, dominate. Here:

- each prompt runs through the model once (left-padded batch ``B``); its first tokens are chosen from
  that one row, and only then does the request fan out into beams (nothing is replicated before the
  first step);
- at every step the candidates are the trie's allowed ids of each beam (``SIDTrie.allowed_token_ids``,
  a tensor gather, no loop over rows), and the top beams of a request are chosen over the flattened
  ``beams × allowed`` candidates, never over ``beams × V``;
- the prompt's keys and values stay at one copy per request: the beams' attention reads them
  broadcast over the beams, and only the ``≤ L`` generated tokens live in a per-beam cache that is
  reordered in place (see :func:`_shared_prefix_attention`). Models outside the supported families
  fall back to repeating the prompt cache once per beam, as ``generate`` does.

``score="model"`` ranks by ``log p(sid, eos | prompt)`` under the full model (``generate``'s beam search
with the trie processor: ``log_softmax`` over the vocabulary, then the mask). ``score="constrained"``
ranks by the constrained policy RL trains, ``log π_c = Σ_t z_{y_t} - logsumexp_{a ∈ A(y_<t)} z_a``
(:mod:`eg_grpo.constrained`); its eos step is certain (``log π_c = 0``), so it is not even run.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers import AttentionInterface, DynamicCache

from eg_grpo.decoding.generate import SIDCandidate
from eg_grpo.decoding.trie import SIDTrie

# Model families whose attention calls the registered attention interface once per layer with the
# rotated (rows, heads, q, d) query and the cache's keys/values (full attention, no soft-capping).
SHARED_PREFIX_MODEL_TYPES = frozenset({"qwen2", "qwen3", "llama", "mistral"})
_ATTN_NAME = "eg_grpo_sid_shared_prefix"
# The prompt's keys/values per layer and its padding mask, set only around the beam steps' forwards.
_PREFIX: contextvars.ContextVar = contextvars.ContextVar("eg_grpo_sid_prefix", default=None)


def _shared_prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention of one new token per beam over its request's prompt (shared) and its own suffix.

    ``query`` is ``(B * k, H, 1, d)``; ``key``/``value`` are the suffix cache's ``(B * k, H_kv, t, d)``; the
    prompt's ``(B, H_kv, P, d)`` keys/values and ``(B, P)`` padding mask come from the active
    :data:`_PREFIX`. The prompt part is one batched matmul per request over all its beams, so the
    prompt is neither copied per beam nor reordered.

    Returns:
        ``((B * k, 1, H, d), None)``, the layout of transformers' attention functions.
    """
    prompt_keys, prompt_values, prompt_mask = _PREFIX.get()
    prompt_k, prompt_v = prompt_keys[module.layer_idx], prompt_values[module.layer_idx]  # (B, H_kv, P, d)
    rows, heads, q_len, dim = query.shape
    if q_len != 1:
        raise ValueError(f"shared-prefix attention decodes one token per beam, got {q_len}")
    B, kv_heads, P, _ = prompt_k.shape
    k, g, t = rows // B, heads // kv_heads, key.shape[2]
    scaling = dim**-0.5 if scaling is None else scaling
    # Queries of a request, grouped by kv head: (B, H_kv, k * g, d); rows are request-major.
    q = query.view(B, k, kv_heads, g, dim).permute(0, 2, 1, 3, 4).reshape(B, kv_heads, k * g, dim).float()
    prompt_scores = (q @ prompt_k.float().transpose(-1, -2)) * scaling  # (B, H_kv, k * g, P)
    prompt_scores.masked_fill_(~prompt_mask[:, None, None, :], float("-inf"))
    q_rows = query.view(rows, kv_heads, g, dim).float()  # (B * k, H_kv, g, d)
    own_scores = (q_rows @ key.float().transpose(-1, -2)) * scaling  # (B * k, H_kv, g, t)
    own_scores = own_scores.view(B, k, kv_heads, g, t).permute(0, 2, 1, 3, 4).reshape(B, kv_heads, k * g, t)
    probs = torch.softmax(torch.cat([prompt_scores, own_scores], dim=-1), dim=-1)  # (B, H_kv, k * g, P + t)
    out = probs[..., :P] @ prompt_v.float()  # (B, H_kv, k * g, d)
    own_probs = (
        probs[..., P:].reshape(B, kv_heads, k, g, t).permute(0, 2, 1, 3, 4).reshape(rows, kv_heads, g, t)
    )
    own = own_probs @ value.float()  # (B * k, H_kv, g, d)
    out = out.view(B, kv_heads, k, g, dim).permute(0, 2, 1, 3, 4).reshape(rows, kv_heads, g, dim) + own
    return out.reshape(rows, 1, heads, dim).to(query.dtype), None


AttentionInterface.register(_ATTN_NAME, _shared_prefix_attention)


def supports_shared_prefix(model) -> bool:
    """Whether :func:`_shared_prefix_attention` can stand in for ``model``'s attention (exactly)."""
    config = model.config
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    return (
        getattr(config, "model_type", None) in SHARED_PREFIX_MODEL_TYPES
        and getattr(config, "_attn_implementation", None) in ("sdpa", "eager")
        and all(kind == "full_attention" for kind in layer_types)
    )


@contextlib.contextmanager
def _attention(model, prefix):
    """Within the block, the model's attention is :func:`_shared_prefix_attention` over ``prefix``."""
    config, saved = model.config, model.config._attn_implementation
    token = _PREFIX.set(prefix)
    config._attn_implementation = _ATTN_NAME
    try:
        yield
    finally:
        config._attn_implementation = saved
        _PREFIX.reset(token)


def _cache_kwarg(model) -> str:
    """The name of the cache argument of the model's forward (``past_key_values`` before transformers 5.x)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _step_logprobs(logits: torch.Tensor, ids: torch.Tensor, real: torch.Tensor, score: str) -> torch.Tensor:
    """``(rows, W)`` log-probs of the allowed ids ``ids`` (``-inf`` where ``real`` is False).

    ``"model"``: the full-vocabulary ``log_softmax`` gathered at ``ids`` (transformers' beam search).
    ``"constrained"``: renormalised over the allowed ids (``log π_c``).
    """
    logits = logits.float()  # (rows, V)
    if score == "model":
        picked = torch.log_softmax(logits, dim=-1).gather(1, ids)
        return picked.masked_fill(~real, float("-inf"))
    return logits.gather(1, ids).masked_fill(~real, float("-inf")).log_softmax(dim=-1)


def _allowed(trie: SIDTrie, generated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, real)``, each ``(rows, W)``: the trie's allowed ids after ``generated`` and which slots are real.

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
        shared_prefix: keep one copy of each prompt's cache (default: when :func:`supports_shared_prefix`).

    Returns:
        ``(sequences, scores)``: ``(B, n, L + 1)`` token ids ending with eos and ``(B, n)`` float scores, best
        first, ``n = min(num, …)``; slots that no reachable SID fills score ``-inf``.
    """
    num_beams = num if num_beams is None else int(num_beams)
    if num_beams < num:
        raise ValueError(f"num_beams={num_beams} cannot return num={num} sequences")
    if score not in ("model", "constrained"):
        raise ValueError(f"score={score!r}: use 'model' or 'constrained'")
    shared_prefix = supports_shared_prefix(model) if shared_prefix is None else shared_prefix
    L, device = trie.num_levels, input_ids.device
    B = input_ids.shape[0]
    cache_name = _cache_kwarg(model)

    # Prefill, one row per prompt. Positions follow generate's rule for left padding (pads at 0).
    mask = attention_mask.long()
    position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # (B, P)
    prompt_cache = DynamicCache(config=model.config)  # filled in place by the forward
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=True,
                logits_to_keep=1, **{cache_name: prompt_cache})  # fmt: skip
    next_position = mask.sum(-1)  # (B,) position of the first generated token
    logits = out.logits[:, -1]  # (B, V)
    del out

    tokens = torch.empty(B, 1, 0, dtype=torch.long, device=device)  # (B, k, t) generated so far
    scores = torch.zeros(B, 1, device=device)  # (B, k) running scores
    cache = prefix = None
    for t in range(L + 1):
        k = tokens.shape[1]
        if t < L:
            ids, real = _allowed(trie, tokens.view(B * k, t))  # (B * k, W)
        else:  # after the last level only eos may follow
            ids = torch.full((B * k, 1), trie.eos_token_id, dtype=torch.long, device=device)
            real = torch.ones_like(ids, dtype=torch.bool)
            if score == "constrained":  # log π_c(eos) = 0: no forward needed
                tokens = torch.cat([tokens, ids.view(B, k, 1)], dim=2)
                break
        W = ids.shape[1]
        cand = scores[:, :, None] + _step_logprobs(logits, ids, real, score).view(B, k, W)  # (B, k, W)
        width = min(num_beams, k * W) if t < L else k
        scores, flat = torch.topk(cand.view(B, k * W), width, dim=1)  # (B, width), best first
        parent = torch.div(flat, W, rounding_mode="floor")  # (B, width) beam each candidate extends
        chosen = ids.view(B, k * W).gather(1, flat)  # (B, width)
        tokens = torch.cat(
            [tokens.gather(1, parent[:, :, None].expand(-1, -1, t)), chosen[:, :, None]], dim=2
        )
        if t == L:
            break
        # Beam b of request r is row r * width + b; parents index rows of the previous step.
        rows = (parent + torch.arange(B, device=device)[:, None] * k).view(-1)  # (B * width,)
        if t == 0:
            if shared_prefix:
                prefix = ([layer.keys for layer in prompt_cache.layers],
                          [layer.values for layer in prompt_cache.layers], mask.bool())  # fmt: skip
                cache = DynamicCache(config=model.config)  # the generated tokens' keys/values only
            else:
                cache = prompt_cache
                cache.batch_select_indices(rows)  # each prompt's cache, once per beam: (B * width, ...)
        elif cache.get_seq_length() > 0:
            cache.reorder_cache(rows)
        step_mask = None
        if not shared_prefix:
            step_mask = torch.cat([mask, mask.new_ones(B, t + 1)], dim=1).repeat_interleave(width, dim=0)
        positions = (next_position + t).repeat_interleave(width)[:, None]  # (B * width, 1)
        with _attention(model, prefix) if shared_prefix else contextlib.nullcontext():
            out = model(input_ids=chosen.view(-1, 1), attention_mask=step_mask, position_ids=positions,
                        use_cache=True, **{cache_name: cache})  # fmt: skip
        logits = out.logits[:, -1]  # (B * width, V)
        del out
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
            f"the trie's SIDs end with token {trie.eos_token_id} but the tokenizer's eos is {tokenizer.eos_token_id}"
        )
    device = next(model.parameters()).device
    trie = trie.to(device)
    encoded = _encode(tokenizer, prompts)
    # Batches of prompts of similar length: less padding to prefill. Each prompt's result does not depend
    # on its batch (up to float rounding), and results go back in the callers' order.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    was_training = model.training
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
        model.train(was_training)
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
