"""Generating SIDs with the trie: beam search (distinct top-scored SIDs) or sampling, every parameter explicit."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import NamedTuple

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, LogitsProcessorList

from eg_grpo.decoding.processor import SIDTrieLogitsProcessor
from eg_grpo.decoding.trie import SIDTrie

logger = logging.getLogger(__name__)

# Beam search starts every beam but the first at -1e9 so the first step does not pick one token B
# times; such placeholder beams survive to the end only when fewer than `num` SIDs are reachable.
_PLACEHOLDER_SCORE = -1e8
# How beam search ranks SIDs: the full model's log p after masking, or the trie-renormalised policy's
# log π_c (what RL trains); see eg_grpo.decoding.sid_beam.
BEAM_SCORES = ("model", "constrained")


def check_beam_score(score: str) -> str:
    """``score`` if it is one of :data:`BEAM_SCORES`, else a ``ValueError`` naming the choices."""
    if score not in BEAM_SCORES:
        raise ValueError(f"beam score {score!r} is unknown: use one of {BEAM_SCORES}")
    return score


class SIDCandidate(NamedTuple):
    """One generated SID: its token ids ``[tok_1, …, tok_L, eos]`` and its score (see :func:`generate_sids`)."""

    token_ids: tuple[int, ...]
    score: float


def logits_width(model) -> int:
    """Width of the model's logits (the trie's ``vocab_size``): the output head's row count.

    Under DeepSpeed ZeRO-3 a partitioned weight reads as shape ``(0,)``; its real shape is ``ds_shape``.
    """
    head = model.get_output_embeddings().weight
    return int(getattr(head, "ds_shape", head.shape)[0])


def sid_generation_config(
    mode: str,
    num: int,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    bos_token_id: int | None = None,
    temperature: float = 1.0,
    num_beams: int | None = None,
) -> GenerationConfig:
    """A `GenerationConfig` with every parameter that changes which SIDs come out set explicitly.

    Neutral values are used wherever a hub model's defaults could otherwise leak in (a known failure of SID generators built on hub models):
    ``top_k=0`` (transformers' own default is 50), ``top_p=1.0``, no penalties, no banned or forced
    tokens, ``length_penalty=0`` (beam scores are plain sums of log-probabilities; all SIDs have one
    length anyway).

    Args:
        mode: ``"beam"`` (the best ``num`` of ``num_beams`` beams) or ``"sample"`` (``num`` samples per prompt).
        num: sequences returned per prompt.
        max_new_tokens: ``L + 1`` for SIDs of ``L`` levels.
        eos_token_id, pad_token_id, bos_token_id: the tokenizer's ids.
        temperature: sampling temperature (ignored by beam search).
        num_beams: beam width (default ``num``; at least ``num``).
    """
    num_beams = num if num_beams is None else int(num_beams)
    if mode == "beam" and num_beams < num:
        raise ValueError(f"num_beams={num_beams} cannot return num={num} sequences")
    if mode not in ("beam", "sample"):
        raise ValueError(f"mode={mode!r}: use 'beam' or 'sample'")
    beam = mode == "beam"
    # Beam scores come with output_scores; a width-1 "beam" runs transformers' greedy search, which
    # returns none, so it and sampling score sequences from the raw logits instead.
    real_beam = beam and num_beams > 1
    # Parameters of the other mode stay None: transformers ignores them, and warns when they are set.
    beam_only = {"early_stopping": True, "length_penalty": 0.0} if beam else {}
    sample_only = {} if beam else {"temperature": float(temperature), "top_k": 0, "top_p": 1.0, "typical_p": 1.0,
                                   "epsilon_cutoff": 0.0, "eta_cutoff": 0.0}  # fmt: skip
    return GenerationConfig(
        # min_new_tokens=0 also overrides min_length (transformers derives one from the other).
        max_new_tokens=max_new_tokens, min_new_tokens=0,
        do_sample=not beam, num_beams=num_beams if beam else 1, num_return_sequences=num,
        repetition_penalty=1.0, encoder_repetition_penalty=1.0, no_repeat_ngram_size=0,
        encoder_no_repeat_ngram_size=0, renormalize_logits=False, remove_invalid_values=False, guidance_scale=1.0,
        use_cache=True, bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
        return_dict_in_generate=True, output_scores=real_beam, output_logits=not real_beam,
        **beam_only, **sample_only,
    )  # fmt: skip


@contextlib.contextmanager
def isolated_generation_config(model):
    """Within the block, ``model.generation_config`` holds token ids only.

    ``generate`` fills every parameter left ``None`` in the config it is given from the model's own
    generation config (``bad_words_ids``, ``suppress_tokens``, ``min_p``, …); swapping that config for a
    bare one closes the route entirely. The model's config is restored on exit.
    """
    saved = model.generation_config
    model.generation_config = GenerationConfig(
        bos_token_id=saved.bos_token_id, eos_token_id=saved.eos_token_id, pad_token_id=saved.pad_token_id
    )
    try:
        yield
    finally:
        model.generation_config = saved


def _left_padded(tokenizer, prompts, device) -> tuple[torch.Tensor, torch.Tensor]:
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has no pad_token; set one (e.g. its eos) before generating")
    if prompts and isinstance(prompts[0], str):
        encoded = [tokenizer(p)["input_ids"] for p in prompts]
    else:
        encoded = [list(map(int, p)) for p in prompts]
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, ids in enumerate(encoded):  # left padding: the generated part starts at `width` in every row
        if ids:
            input_ids[i, width - len(ids) :] = torch.tensor(ids)
            attention_mask[i, width - len(ids) :] = 1
    return input_ids.to(device), attention_mask.to(device)


def _shared_prompt_cache(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, copies: int) -> dict:
    """The KV cache of each prompt but its last token, computed once and repeated ``copies`` times.

    ``generate`` repeats every prompt once per beam (or per returned sample) *before* its prefill, so
    a width-50 beam search runs each prompt through the model 50 times; with short SIDs that prefill
    is nearly all the work. Here the prompt runs once and its cache is repeated instead; ``generate``
    then feeds only the last prompt token. Positions follow ``generate``'s own rule for left padding
    (``cumsum(mask) - 1``, pads at 0), so the result equals the unshared run up to float rounding.

    Returns:
        ``{name: cache}`` to pass to ``generate``, under the name this transformers version uses.
    """
    prefix_mask = attention_mask[:, :-1]  # (B, P - 1)
    position_ids = (prefix_mask.long().cumsum(-1) - 1).masked_fill(prefix_mask == 0, 0)
    out = model(input_ids=input_ids[:, :-1], attention_mask=prefix_mask, position_ids=position_ids,
                use_cache=True, logits_to_keep=1)  # fmt: skip
    name = "cache" if "cache" in out else "past_key_values"  # renamed in transformers 5.x
    cache = out[name]
    cache.batch_repeat_interleave(copies)  # (B * copies, heads, P - 1, d) per layer
    return {name: cache}


def _sequence_logprobs(completions: torch.Tensor, logits: Sequence[torch.Tensor], eos: int) -> torch.Tensor:
    """Sum of the model's log-probabilities of ``completions`` ``(rows, T)`` up to and including eos."""
    T = min(len(logits), completions.shape[1])
    token_logprobs = torch.stack(
        [
            torch.log_softmax(logits[j].float(), dim=-1).gather(1, completions[:, j : j + 1]).squeeze(1)
            for j in range(T)
        ],
        dim=1,
    )  # (rows, T)
    is_eos = completions[:, :T] == eos
    before_or_at_eos = (torch.cumsum(is_eos.long(), dim=1) - is_eos.long()) == 0  # (rows, T)
    return (token_logprobs * before_or_at_eos).sum(dim=1)


@torch.inference_mode()
def generate_sids(
    model,
    tokenizer,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    trie: SIDTrie,
    mode: str = "beam",
    num: int = 10,
    batch_size: int = 16,
    temperature: float = 1.0,
    max_new_tokens: int | None = None,
    seed: int | None = None,
    show_progress: bool = False,
    num_beams: int | None = None,
    share_prompt_cache: bool = True,
    engine: str = "sid",
    score: str = "model",
) -> list[list[SIDCandidate]]:
    """Generate SIDs for each prompt with the trie constraint.

    Args:
        model: a causal LM whose vocabulary holds the SID tokens.
        tokenizer: its tokenizer (``eos`` ends every SID; ``pad`` pads prompts on the left).
        prompts: texts, or token-id lists (already tokenised prompts).
        trie: the valid SIDs (moved to the model's device here).
        mode: ``"beam"``: beam search with ``num_beams`` beams, returning up to ``num`` distinct SIDs per
            prompt, best first, scored by their summed log-probability ``log p(sid, eos | prompt)``; fewer
            when fewer than ``num`` SIDs exist. Like any beam search it is exact (the top ``num`` of a
            brute-force ranking of every valid SID) when ``num_beams`` is at least the number of valid
            prefixes at every depth, and approximate otherwise: the eos step is scored after the last
            pruning. ``"sample"``: ``num`` samples per prompt (duplicates possible) at ``temperature``,
            each scored by its log-probability under the untempered model.
        num: SIDs returned per prompt (beam) or samples per prompt.
        batch_size: prompts per ``generate`` call (beam search runs ``batch_size × num`` rows).
        temperature: sampling temperature.
        max_new_tokens: default ``L + 1``; must be at least that.
        seed: if set, seeds torch's global RNG before sampling (for reproducible samples).
        show_progress: show a progress bar over batches.
        num_beams: beam width, default ``num`` (beam search only).
        share_prompt_cache: run each prompt through the model once and share its KV cache among its
            beams or samples (same result, many times faster for wide beams; see
            :func:`_shared_prompt_cache`). Off for models whose cache cannot be repeated. ``engine="hf"`` only.
        engine: beam search only: ``"sid"`` (default) runs :func:`~eg_grpo.decoding.sid_beam.sid_beam_search`,
            made for SIDs (one prefill per prompt, candidates from the trie only, the prompt cache shared
            by the beams); ``"hf"`` runs ``model.generate`` with the trie processor. Both return the same
            SIDs in the same order with the same scores up to float rounding. Sampling always uses
            ``generate``.
        score: beam search with ``engine="sid"`` only: ``"model"`` ranks by ``log p(sid, eos | prompt)`` (as
            above); ``"constrained"`` by the trie-renormalised policy's ``log π_c`` (what RL trains).

    Returns:
        Per prompt, a list of :class:`SIDCandidate` ``(token_ids, score)``; ``token_ids`` end with eos.

    Raises:
        ValueError: on a bad ``mode``, ``num`` or ``max_new_tokens``, or a tokenizer without pad/eos.
    """
    check_beam_score(score)
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    max_new_tokens = trie.num_levels + 1 if max_new_tokens is None else int(max_new_tokens)
    if max_new_tokens < trie.num_levels + 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} cannot hold {trie.num_levels} SID tokens plus eos")
    eos = trie.eos_token_id
    if tokenizer.eos_token_id != eos:
        raise ValueError(
            f"the trie's SIDs end with token {eos} but the tokenizer's eos is {tokenizer.eos_token_id}"
        )
    config = sid_generation_config(mode, num, max_new_tokens, eos, tokenizer.pad_token_id,
                                   tokenizer.bos_token_id, temperature, num_beams)  # fmt: skip
    if engine not in ("sid", "hf"):
        raise ValueError(f"engine={engine!r}: use 'sid' or 'hf'")
    if score != "model" and (mode != "beam" or engine != "sid"):
        raise ValueError(f"score={score!r} needs mode='beam' and engine='sid'")
    if mode == "beam" and engine == "sid":
        from eg_grpo.decoding.sid_beam import sid_beam_search  # imports this module

        return sid_beam_search(model, tokenizer, prompts, trie, num=num, num_beams=config.num_beams,
                               batch_size=batch_size, score=score, show_progress=show_progress)  # fmt: skip
    device = next(model.parameters()).device
    cpu_trie, trie = trie.to("cpu"), trie.to(device)
    if seed is not None:
        torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    results: list[list[SIDCandidate]] = []
    starts = range(0, len(prompts), batch_size)
    try:
        for start in tqdm(starts, desc=f"generate SIDs ({mode})", disable=not show_progress):
            chunk = prompts[start : start + batch_size]
            input_ids, attention_mask = _left_padded(tokenizer, chunk, device)  # (B, P)
            processor = SIDTrieLogitsProcessor(trie, prompt_length=input_ids.shape[1],
                                               pad_token_id=tokenizer.pad_token_id)  # fmt: skip
            copies = config.num_beams if config.num_beams > 1 else config.num_return_sequences
            cache = {}
            if share_prompt_cache and copies > 1 and input_ids.shape[1] > 1:
                cache = _shared_prompt_cache(model, input_ids, attention_mask, copies)
            with isolated_generation_config(model):
                out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                                     logits_processor=LogitsProcessorList([processor]), **cache)  # fmt: skip
            completions = out.sequences[:, input_ids.shape[1] :]  # (B * num, T)
            if getattr(out, "sequences_scores", None) is not None:
                scores = out.sequences_scores.float()  # (B * num,), sum of log-probs (length_penalty=0)
            else:  # sampling, or greedy (beam width 1)
                scores = _sequence_logprobs(completions, out.logits, eos)
            results.extend(_collect(completions.cpu(), scores.cpu(), cpu_trie, len(chunk), num, mode))
    finally:
        model.train(was_training)
    return results


def _collect(completions, scores, trie: SIDTrie, n_prompts: int, num: int, mode: str):
    L = trie.num_levels
    seqs = completions[:, : L + 1]  # (rows, L + 1)
    if seqs.shape[1] < L + 1:  # generation stopped before any SID was complete: nothing valid
        valid = torch.zeros(len(seqs), dtype=torch.bool)
    else:
        valid = trie.contains(seqs)
    # Beam search pads its output with placeholder beams (score <= -1e9, or -inf when it had to keep
    # disallowed continuations) only when fewer than `num` SIDs are reachable: drop those silently.
    real = scores > _PLACEHOLDER_SCORE if mode == "beam" else torch.ones(len(seqs), dtype=torch.bool)
    n_invalid = int((real & ~valid).sum())
    if n_invalid:
        logger.warning("dropped %d generated sequence(s) that are not valid SIDs", n_invalid)
    keep = real & valid
    out = []
    for p in range(n_prompts):
        found = [
            (tuple(seqs[r].tolist()), float(scores[r])) for r in range(p * num, (p + 1) * num) if keep[r]
        ]
        if mode == "beam":
            seen, kept = set(), []
            for ids, score in sorted(found, key=lambda c: -c[1]):
                if ids not in seen:
                    seen.add(ids)
                    kept.append(SIDCandidate(ids, score))
            out.append(kept)
        else:
            out.append([SIDCandidate(ids, score) for ids, score in found])
    return out
