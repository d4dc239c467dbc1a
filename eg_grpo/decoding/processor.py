"""`SIDTrieLogitsProcessor`: restricts every decoding step to the continuations of valid SIDs."""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from eg_grpo.decoding.trie import SIDTrie


class SIDTrieLogitsProcessor(LogitsProcessor):
    """A transformers `LogitsProcessor` that sets the score of every token outside the SID trie to ``-inf``.

    The state is derived from the tokens on every call (``input_ids[:, prompt_length:]``), never
    stored, so it is exact under beam search, where beams are reordered between steps, and under
    sampling. Prompts must be left-padded to one length (what ``generate`` needs for decoder-only
    models anyway), so the generated part of every row starts at ``prompt_length``.

    Per row: the trie's children of the prefix; after the last level, eos only; after eos, eos and
    pad (finished rows stay finished). A prefix outside the trie, which only tokens that bypassed this
    processor can produce, gets eos only and is counted in :attr:`invalid_rows`: it never falls back
    to unconstrained text (a known failure of prefix-function tries). No row is ever left without an allowed token.

    Args:
        trie: the valid SIDs; moved (once) to the device of the scores if it lives elsewhere.
        prompt_length: the padded prompt length, ``input_ids.shape[1]`` of the ``generate`` call.
        pad_token_id: the pad token allowed after eos (default: eos).

    Attributes:
        invalid_rows: a 0-d tensor counting rows seen with an invalid prefix (kept on the device; no
            host synchronisation per step). It stays 0 when every token came through the processor,
            except that beam search, which keeps ``2 × num_beams`` candidates, may carry a disallowed
            (``-inf``-scored) continuation when fewer are allowed; such beams rank last.
    """

    def __init__(self, trie: SIDTrie, prompt_length: int, pad_token_id: int | None = None):
        if prompt_length < 0:
            raise ValueError(f"prompt_length must be >= 0, got {prompt_length}")
        self.trie = trie
        self.prompt_length = int(prompt_length)
        self.pad_token_id = pad_token_id
        self.invalid_rows = torch.zeros((), dtype=torch.long)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Mask ``scores`` ``(rows, V')`` for the rows of ``input_ids`` ``(rows, prompt_length + t)``."""
        if input_ids.shape[1] < self.prompt_length:
            raise ValueError(
                f"input_ids has {input_ids.shape[1]} columns but prompt_length={self.prompt_length}; build the "
                "processor with the padded prompt length of this generate() call"
            )
        if scores.shape[-1] < self.trie.vocab_size:
            raise ValueError(
                f"scores have {scores.shape[-1]} columns but the trie was built for vocab_size="
                f"{self.trie.vocab_size}; build it with the model's output embedding size"
            )
        if self.trie.device != scores.device:
            self.trie = self.trie.to(scores.device)
        if self.invalid_rows.device != scores.device:
            self.invalid_rows = self.invalid_rows.to(scores.device)
        generated = input_ids[:, self.prompt_length :].to(scores.device)  # (rows, t)
        ids, invalid = self.trie.allowed_token_ids(generated, self.pad_token_id)  # (rows, W), (rows,)
        self.invalid_rows += invalid.sum()
        # Out of place: sampling keeps a reference to the raw logits it passed in (output_logits).
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, ids, scores.gather(1, ids))
