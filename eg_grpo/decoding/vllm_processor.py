"""`SIDTrieVLLMLogitsProcessor`: the SID trie as a vLLM (v1 engine) logits processor.

vLLM's v1 engine keeps one processor object per engine, fed with batch *changes* (requests added,
removed, moved between rows of its persistent batch) in `update_state`, and called once per decoding
step with the whole batch's logits in `apply`. Which requests are constrained is decided per request:
a request whose `SamplingParams.extra_args` (colocate: `LLM.generate`) or `vllm_xargs` (server: the
body of `/v1/completions`) holds ``{"sid_trie": "<sid_dir>"}`` is masked to the continuations of valid
SIDs of that folder's codebook; every other request is left untouched.

The rules are those of the transformers path (`SIDTrieLogitsProcessor`), computed by the same
`SIDTrie.allowed_token_ids` from the tokens the request has generated so far, so both paths allow
exactly the same tokens after the same prefix (tested). vLLM stops a request at the tokenizer's eos,
which is the end token of every SID (`SIDVocab.eos_token_id`), so a constrained completion is
``L`` SID tokens and eos.

The module imports without vLLM: the class then derives from `object`, and the masking logic
(:func:`allowed_ids_for_outputs`, :func:`mask_to_allowed_`, :func:`apply_batch_update`) runs on the CPU
in the tests. The vLLM interface it implements (vLLM 0.22–0.31, `vllm.v1.sample.logits_processor`) is
marked unstable upstream; 0.32 moves to another one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from eg_grpo.decoding.trie import SIDTrie

try:  # vLLM is an optional extra; without it the class below is still importable and testable.
    from vllm.v1.sample.logits_processor import LogitsProcessor as _VLLMLogitsProcessor
except ImportError:  # pragma: no cover - depends on the environment
    _VLLMLogitsProcessor = object

# The per-request argument naming the SID folder (a `recipes/build_sids.py` output with `codebook/`).
REQUEST_ARG = "sid_trie"
# What `LLM(logits_processors=[...])` and `vllm serve --logits-processors ...` take.
PROCESSOR_FQCN = "eg_grpo.decoding.vllm_processor:SIDTrieVLLMLogitsProcessor"


@dataclass(frozen=True)
class LoadedTrie:
    """One codebook's trie on one device, with the pad token allowed after eos."""

    trie: SIDTrie
    pad_token_id: int | None


# ----------------------------------------------------------------------------------------------------
# Pure logic (no vLLM): state -> allowed tokens -> masked logits.
def allowed_ids_for_outputs(
    trie: SIDTrie, outputs: Sequence[Sequence[int]], pad_token_id: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens allowed next for ``R`` requests, each at its own decoding step.

    Continuous batching puts requests that have generated different numbers of tokens into one batch,
    so the rows are grouped by length and each group is one `SIDTrie.allowed_token_ids` call. Lengths are
    clamped at ``L + 1`` (after the end token the rules no longer depend on the length), so there are at
    most ``L + 2`` groups whatever the batch size; no Python loop runs over the vocabulary.

    Args:
        trie: the valid SIDs, on the device the result should live on.
        outputs: per request, the token ids generated so far (vLLM's live ``output_tok_ids`` lists).
            A vLLM async-scheduling placeholder (-1) left in a list would read as an invalid prefix (eos
            only); vLLM replaces them before the sampler runs when a custom processor is loaded.
        pad_token_id: the pad token allowed after eos (default: eos), as in `SIDTrieLogitsProcessor`.

    Returns:
        ``(ids, invalid)``: ``ids`` ``(R, W)`` int64 allowed token ids (unused slots repeat an allowed id,
        so scattering them is idempotent), ``invalid`` ``(R,)`` bool marking prefixes outside the trie.
    """
    device, L = trie.device, trie.num_levels
    groups: dict[int, list[int]] = {}
    for r, out in enumerate(outputs):
        groups.setdefault(min(len(out), L + 1), []).append(r)
    parts = []
    for t, rows in groups.items():
        generated = torch.tensor([list(outputs[r][:t]) for r in rows], dtype=torch.long).reshape(len(rows), t)
        ids, invalid = trie.allowed_token_ids(generated.to(device), pad_token_id)  # (n, w), (n,)
        parts.append((rows, ids, invalid))
    width = max((ids.shape[1] for _, ids, _ in parts), default=1)
    all_ids = torch.empty((len(outputs), width), dtype=torch.long, device=device)  # (R, W)
    all_invalid = torch.zeros(len(outputs), dtype=torch.bool, device=device)  # (R,)
    for rows, ids, invalid in parts:
        index = torch.tensor(rows, dtype=torch.long, device=device)
        if ids.shape[1] < width:  # pad with the row's last allowed id: the scatter stays idempotent
            ids = torch.cat([ids, ids[:, -1:].expand(-1, width - ids.shape[1])], dim=1)
        all_ids[index] = ids
        all_invalid[index] = invalid
    return all_ids, all_invalid


def allowed_token_mask(
    trie: SIDTrie, outputs: Sequence[Sequence[int]], pad_token_id: int | None = None
) -> torch.Tensor:
    """Boolean mask ``(R, V)`` of the tokens allowed after each request's ``outputs`` (for checks and tests)."""
    ids, _ = allowed_ids_for_outputs(trie, outputs, pad_token_id)
    mask = torch.zeros(len(ids), trie.vocab_size, dtype=torch.bool, device=trie.device)
    return mask.scatter_(1, ids, True)


def mask_to_allowed_(logits: torch.Tensor, rows: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """In place: every logit of the batch rows ``rows`` becomes ``-inf`` except those at ``ids``.

    Args:
        logits: ``(B, V')`` the batch's logits (vLLM lets a processor modify them in place).
        rows: ``(R,)`` int64 batch rows to constrain; the other rows are not touched.
        ids: ``(R, W)`` int64 allowed ids per constrained row (duplicates allowed).

    Returns:
        ``logits``.
    """
    kept = logits[rows[:, None], ids]  # (R, W): advanced indexing copies
    logits[rows] = float("-inf")
    logits[rows[:, None], ids] = kept  # duplicate ids write the same value
    return logits


def apply_batch_update(
    entries: dict[int, Any], batch_update, new_entry: Callable[[Any, Any, list[int]], Any | None]
) -> bool:
    """Apply one vLLM `BatchUpdate` to a ``{batch row: entry}`` dict, in vLLM's order: removed, added, moved.

    Args:
        entries: the tracked requests, keyed by their row in vLLM's persistent batch; edited in place.
        batch_update: a `vllm.v1.sample.logits_processor.BatchUpdate` (or any object with ``removed``,
            ``added`` and ``moved``), or None when the batch did not change.
        new_entry: ``(params, prompt_tok_ids, output_tok_ids) -> entry``, or None for a request that is not
            tracked (an added request then clears whatever its row held).

    Returns:
        Whether ``entries`` changed.
    """
    if batch_update is None:
        return False
    changed = False
    for index in batch_update.removed:
        changed |= entries.pop(index, None) is not None
    for index, params, prompt_tok_ids, output_tok_ids in batch_update.added:
        entry = new_entry(params, prompt_tok_ids, output_tok_ids)
        if entry is not None:
            entries[index] = entry
            changed = True
        else:
            changed |= entries.pop(index, None) is not None
    for a, b, direction in batch_update.moved:
        # vLLM's MoveDirectionality: UNIDIRECTIONAL moves a -> b (b's old request is gone), SWAP swaps.
        a_entry, b_entry = entries.pop(a, None), entries.pop(b, None)
        if a_entry is not None:
            entries[b] = a_entry
        if b_entry is not None and getattr(direction, "name", direction) == "SWAP":
            entries[a] = b_entry
        changed |= a_entry is not None or b_entry is not None
    return changed


def sid_dir_of(params) -> str | None:
    """The ``sid_trie`` argument of a request's `SamplingParams` (``extra_args``), or None."""
    extra = getattr(params, "extra_args", None) or {}
    value = extra.get(REQUEST_ARG)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"extra_args['{REQUEST_ARG}'] must be the path of a SID folder, got {value!r}")
    return value


def load_sid_trie(sid_dir: str | Path, tokenizer, vocab_size: int) -> SIDTrie:
    """The trie of the codebook at ``sid_dir/codebook`` spelled with ``tokenizer``'s SID tokens (on the CPU).

    The same construction as `EGGRPOTrainer.sid_trie`: `SIDCodebook.sid_token_ids` through `SIDVocab`.
    """
    from eg_grpo.sid.codebook import SIDCodebook  # lazy: vLLM imports this module in its engine
    from eg_grpo.sid.tokens import SIDVocab

    codebook = SIDCodebook.load(Path(sid_dir) / "codebook")
    vocab = SIDVocab(tokenizer, codebook.codebook_sizes)
    return SIDTrie.from_sid_token_ids(codebook.sid_token_ids(vocab), vocab_size=vocab_size)


@functools.lru_cache(maxsize=8)
def _load_cpu_trie(sid_dir: str, tokenizer_name: str, revision: str | None, trust_remote_code: bool,
                   vocab_size: int) -> LoadedTrie:  # fmt: skip
    # Built once per (folder, tokenizer) per process: a 1M-SID catalogue takes seconds, not per request.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        tokenizer_name, revision=revision, trust_remote_code=trust_remote_code
    )
    return LoadedTrie(load_sid_trie(sid_dir, tokenizer, vocab_size), tokenizer.pad_token_id)


# ----------------------------------------------------------------------------------------------------
# The vLLM processor.
class SIDTrieVLLMLogitsProcessor(_VLLMLogitsProcessor):
    """A vLLM v1 `LogitsProcessor` that restricts opted-in requests to valid SIDs.

    Load it with `LLM(..., logits_processors=[PROCESSOR_FQCN])` or
    `vllm serve ... --logits-processors eg_grpo.decoding.vllm_processor:SIDTrieVLLMLogitsProcessor`, and opt
    a request in with ``SamplingParams(extra_args={"sid_trie": sid_dir})`` (server:
    ``"vllm_xargs": {"sid_trie": sid_dir}`` in the request body). The tokenizer is the served model's
    (`model_config.tokenizer`), so the SID token ids are those the trainer's trie uses for the same
    model folder; the trie is built for `model_config.get_vocab_size()` logits.

    The mask is not argmax-invariant, so vLLM applies it before temperature, min-p, top-k and top-p, and
    the logprobs it returns in `processed_logprobs` mode are those of the *constrained* distribution
    (the trainer's log-probs are of the same constrained distribution, see `eg_grpo.rl.constrained`, so TRL's
    importance-sampling correction compares like with like).

    Args:
        vllm_config: vLLM's `VllmConfig` (only `model_config` is read).
        device: the device of the logits.
        is_pin_memory: unused (the per-step host data is a few row indices).

    Attributes:
        invalid_rows: a 0-d tensor counting constrained rows seen with a prefix outside the trie (kept on
            the device; stays 0 when every token came through the processor).
    """

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool = False):
        model_config = vllm_config.model_config
        self.tokenizer_name = str(model_config.tokenizer)
        self.tokenizer_revision = getattr(model_config, "tokenizer_revision", None)
        self.trust_remote_code = bool(getattr(model_config, "trust_remote_code", False))
        self.vocab_size = int(model_config.get_vocab_size())
        self.device = torch.device(device)
        self.requests: dict[int, tuple[LoadedTrie, list[int]]] = {}  # batch row -> (trie, live output ids)
        self._tries: dict[str, LoadedTrie] = {}
        self.invalid_rows = torch.zeros((), dtype=torch.long, device=self.device)

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        """Rejects a ``sid_trie`` argument that is not a SID folder (a server answers HTTP 400)."""
        sid_dir = sid_dir_of(sampling_params)
        if sid_dir is not None and not (Path(sid_dir) / "codebook").is_dir():
            raise ValueError(f"extra_args['{REQUEST_ARG}']={sid_dir!r} holds no codebook/ folder; point it to the "
                             "output of recipes/build_sids.py (a path the vLLM process can read)")  # fmt: skip

    def is_argmax_invariant(self) -> bool:
        """False: the mask changes which token greedy decoding picks."""
        return False

    def trie_for(self, sid_dir: str) -> LoadedTrie:
        """The trie of ``sid_dir`` on this processor's device, loaded on first use and cached."""
        key = str(Path(sid_dir).expanduser().resolve())
        if key not in self._tries:
            loaded = _load_cpu_trie(key, self.tokenizer_name, self.tokenizer_revision, self.trust_remote_code,
                                    self.vocab_size)  # fmt: skip
            self._tries[key] = LoadedTrie(loaded.trie.to(self.device), loaded.pad_token_id)
        return self._tries[key]

    def _new_entry(self, params, prompt_tok_ids, output_tok_ids: list[int]):
        sid_dir = sid_dir_of(params)
        # The list is vLLM's own, appended to as the request decodes: read it in apply(), never copy it.
        return None if sid_dir is None else (self.trie_for(sid_dir), output_tok_ids)

    def update_state(self, batch_update) -> None:
        """Track the constrained requests through vLLM's batch changes (None: the batch did not change)."""
        apply_batch_update(self.requests, batch_update, self._new_entry)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Mask ``logits`` ``(B, V')`` in place for the constrained rows; the other rows are untouched."""
        if not self.requests:
            return logits
        by_trie: dict[int, tuple[LoadedTrie, list[int], list[list[int]]]] = {}
        for row, (loaded, output_tok_ids) in self.requests.items():
            by_trie.setdefault(id(loaded), (loaded, [], []))
            by_trie[id(loaded)][1].append(row)
            by_trie[id(loaded)][2].append(output_tok_ids)
        for loaded, rows, outputs in by_trie.values():  # one group per codebook in use (usually one)
            if logits.shape[-1] < loaded.trie.vocab_size:
                raise ValueError(f"logits have {logits.shape[-1]} columns but the SID trie was built for "
                                 f"vocab_size={loaded.trie.vocab_size}")  # fmt: skip
            trie = loaded.trie if loaded.trie.device == logits.device else loaded.trie.to(logits.device)
            ids, invalid = allowed_ids_for_outputs(trie, outputs, loaded.pad_token_id)  # (R, W), (R,)
            self.invalid_rows = self.invalid_rows.to(logits.device) + invalid.sum()
            mask_to_allowed_(logits, torch.tensor(rows, dtype=torch.long, device=logits.device), ids)
        return logits
