"""How a semantic ID is spelled: one normal token per level, ``<a_12><b_7><c_201>``.

The tokens are added to the tokenizer as *normal* tokens (special tokens are stripped from decoded
completions, which would blank every SID). Code that reads a SID from a model's output uses
:class:`SIDVocab` on token ids, never re-parses text.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

import numpy as np
import torch

LEVEL_LETTERS = string.ascii_lowercase
_SID_TOKEN = re.compile(r"<([a-z])_(\d+)>")


def sid_token(level: int, code: int) -> str:
    """``sid_token(0, 12) == "<a_12>"``."""
    return f"<{LEVEL_LETTERS[level]}_{code}>"


def all_sid_tokens(codebook_sizes: Sequence[int]) -> list[str]:
    """Every SID token, level by level (level 0 first)."""
    return [sid_token(level, code) for level, size in enumerate(codebook_sizes) for code in range(size)]


def sid_to_text(sid: Sequence[int]) -> str:
    return "".join(sid_token(level, int(code)) for level, code in enumerate(sid))


def parse_sid_text(text: str) -> tuple[int, ...]:
    """Inverse of :func:`sid_to_text`; raises on anything that is not a well-formed SID."""
    matches = _SID_TOKEN.findall(text)
    if not matches or "".join(f"<{a}_{c}>" for a, c in matches) != text.strip():
        raise ValueError(f"not a SID: {text!r} (expected tokens like <a_12><b_7><c_201>)")
    letters = [a for a, _ in matches]
    if letters != list(LEVEL_LETTERS[: len(letters)]):
        raise ValueError(f"SID levels out of order in {text!r}")
    return tuple(int(c) for _, c in matches)


class SIDVocab:
    """Maps between SID codes and the token ids of one tokenizer.

    Args:
        tokenizer: a tokenizer to which :func:`eg_grpo.modeling.add_sid_tokens` added the SID tokens.
        codebook_sizes: codes per level, e.g. ``(256, 256, 256)``.

    Raises:
        ValueError: when a SID token is missing or does not encode to exactly one id.
    """

    def __init__(self, tokenizer, codebook_sizes: Sequence[int]):
        self.codebook_sizes = tuple(int(k) for k in codebook_sizes)
        self.num_levels = len(self.codebook_sizes)
        vocab = tokenizer.get_vocab()
        missing = [t for t in all_sid_tokens(self.codebook_sizes) if t not in vocab]
        if missing:
            raise ValueError(
                f"the tokenizer lacks {len(missing)} SID token(s) (e.g. {missing[0]}); build the model "
                "with eg_grpo.modeling.add_sid_tokens or point to a model saved by recipes/sft.py"
            )
        # level_token_ids[level][code] -> token id
        self.level_token_ids = [
            np.array([vocab[sid_token(level, c)] for c in range(size)], dtype=np.int64)
            for level, size in enumerate(self.codebook_sizes)
        ]
        self.eos_token_id = tokenizer.eos_token_id
        if self.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token; SIDs end with it")
        vocab_size = max(len(tokenizer), max(vocab.values()) + 1)
        # token id -> (level, code), -1 where the token is not a SID token
        self.id_to_level = np.full(vocab_size, -1, dtype=np.int64)
        self.id_to_code = np.full(vocab_size, -1, dtype=np.int64)
        for level, ids in enumerate(self.level_token_ids):
            self.id_to_level[ids] = level
            self.id_to_code[ids] = np.arange(len(ids))

    def encode(self, sid: Sequence[int], add_eos: bool = True) -> list[int]:
        ids = [int(self.level_token_ids[level][code]) for level, code in enumerate(sid)]
        return ids + [self.eos_token_id] if add_eos else ids

    def decode(self, token_ids: Sequence[int] | torch.Tensor) -> tuple[int, ...] | None:
        """The SID spelled by ``token_ids`` (trailing eos/pad allowed), or None if it is not one."""
        ids = token_ids.tolist() if isinstance(token_ids, torch.Tensor) else list(token_ids)
        if len(ids) < self.num_levels:
            return None
        head, tail = ids[: self.num_levels], ids[self.num_levels :]
        if any(t >= len(self.id_to_level) or t < 0 for t in head):
            return None
        levels = self.id_to_level[head]
        if not np.array_equal(levels, np.arange(self.num_levels)):
            return None
        if tail and tail[0] != self.eos_token_id:
            return None
        return tuple(int(c) for c in self.id_to_code[head])

    def decode_batch(self, rows: Sequence[Sequence[int]]) -> list[tuple[int, ...] | None]:
        return [self.decode(r) for r in rows]
