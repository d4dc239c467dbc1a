"""SID-trie constrained decoding: the tensor trie, its logits processor, the SID beam search, and the SID
generation helpers.

May import: eg_grpo.sid
"""

from eg_grpo.decoding.generate import (
    BEAM_SCORES,
    SIDCandidate,
    check_beam_score,
    generate_sids,
    isolated_generation_config,
    logits_width,
    sid_generation_config,
)
from eg_grpo.decoding.processor import SIDTrieLogitsProcessor
from eg_grpo.decoding.sid_beam import sid_beam_search
from eg_grpo.decoding.trie import DEAD, SIDTrie, sid_token_ids_from_codes

__all__ = [
    "BEAM_SCORES",
    "DEAD",
    "SIDCandidate",
    "SIDTrie",
    "SIDTrieLogitsProcessor",
    "check_beam_score",
    "generate_sids",
    "isolated_generation_config",
    "logits_width",
    "sid_beam_search",
    "sid_generation_config",
    "sid_token_ids_from_codes",
]
