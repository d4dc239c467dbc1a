"""Log-probabilities of the trie-constrained policy that samples the rollouts.

Rollouts are drawn from ``π_c(y_t | y_<t) = π(y_t | y_<t) · 1[y_t ∈ A(y_<t)] / Z(y_<t)``, where
``A(y_<t)`` are the trie's continuations of the prefix and ``Z = Σ_{a ∈ A} π(a | y_<t)`` is the mass the
full model puts on them. The policy gradient of the sampled rows is that of ``log π_c``; training on
the full-vocabulary ``log π`` instead adds ``-∇ log Z`` to every token, which does not cancel within a
group below the first level and pushes the mass of negative-advantage rows off the catalogue rather
than onto other valid SIDs.

``log π_c(y_t) = z_{y_t} - logsumexp_{a ∈ A} z_a`` needs the logits of the allowed tokens only. All of
them lie in the SID sub-vocabulary ``U`` (every token on a trie edge, and the end token), so the head
is applied to ``W[U]`` once — ``(rows, T, |U|)`` logits instead of ``(rows, T, V)`` — and the allowed set
of each position is a ``(rows, T, |U|)`` mask over ``U``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eg_grpo.decoding.trie import SIDTrie


@dataclass
class ConstrainedLogProbs:
    """Per-token quantities of the constrained policy, each ``(rows, T)``; 0 where the label is padding.

    Attributes:
        logps: ``log π_c(y_t | y_<t)``. The full model's ``log π(y_t)`` minus it is ``log Z``, the log of
            the full model's mass on the allowed tokens.
        entropy: entropy of ``π_c(· | y_<t)`` (over the allowed tokens only).
    """

    logps: torch.Tensor
    entropy: torch.Tensor


class SIDSubVocabulary:
    """The SID sub-vocabulary ``U`` of a trie and, per completion position, which of it is allowed.

    Args:
        trie: the valid SIDs.
    """

    def __init__(self, trie: SIDTrie):
        self.trie = trie
        tokens = torch.cat([trie.edge_tokens, torch.tensor([trie.eos_token_id], device=trie.device)])
        self.token_ids = torch.unique(tokens)  # (U,) sorted
        self.index = torch.full((trie.vocab_size,), -1, dtype=torch.long, device=trie.device)  # V -> U or -1
        self.index[self.token_ids] = torch.arange(len(self.token_ids), device=trie.device)

    def to(self, device) -> SIDSubVocabulary:
        if torch.device(device) == self.token_ids.device:
            return self
        return SIDSubVocabulary(self.trie.to(device))

    def allowed(self, completion_ids: torch.Tensor) -> torch.Tensor:
        """``(rows, T, U)`` bool: the tokens of ``U`` the trie allows at each completion position.

        Position ``t`` follows the prefix ``completion_ids[:, :t]``: the trie's children for ``t < L``, the
        end token at ``t = L``; positions past the end token are padding and allow the end token (a
        non-empty set, so nothing downstream sees an empty ``logsumexp``).
        """
        rows, T = completion_ids.shape
        L = self.trie.num_levels
        mask = torch.zeros(rows, T, len(self.token_ids), dtype=torch.bool, device=completion_ids.device)
        eos = self.index[self.trie.eos_token_id]
        for t in range(T):  # T = L + 1 for a SID: a loop over depth, never over rows
            if t >= L:
                mask[:, t, eos] = True
                continue
            ids, _ = self.trie.allowed_token_ids(completion_ids[:, :t])  # (rows, W), duplicates are harmless
            mask[:, t].scatter_(1, self.index[ids], True)
        return mask


def constrained_log_probs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    label_mask: torch.Tensor,
    vocab: SIDSubVocabulary,
    temperature: float = 1.0,
    logit_scale: float = 1.0,
    softcap: float | None = None,
    fp32_head: bool = False,
) -> ConstrainedLogProbs:
    """Constrained log-probs and entropies from the hidden states that predict ``labels``.

    Args:
        hidden: ``(rows, T, H)`` the backbone's states at the positions that predict ``labels``.
        weight, bias: the LM head (``(V, H)``, ``(V,)`` or None).
        labels: ``(rows, T)`` the completion tokens.
        label_mask: ``(rows, T)`` 1 on real completion tokens, 0 on padding.
        vocab: the trie's sub-vocabulary.
        temperature, logit_scale, softcap: applied as in TRL's fused head (scale, then softcap, then
            temperature).
        fp32_head: compute the head's product in fp32 (TRL's `cast_lm_head_to_fp32`): a bf16 product rounds the
            logits to ~3 significant digits before the softmax, which is what that setting exists to avoid.

    Raises:
        RuntimeError: when a real completion token is not allowed by the trie at its prefix (the row was not
            sampled under the trie: its constrained log-prob would be ``-inf``).
    """
    vocab = vocab.to(hidden.device)
    allowed = vocab.allowed(labels)  # (rows, T, U)
    w = weight.index_select(0, vocab.token_ids)  # (U, H)
    dtype = torch.float32 if fp32_head else hidden.dtype
    logits = hidden.to(dtype) @ w.to(dtype).T  # (rows, T, U)
    if bias is not None:
        logits = logits + bias.index_select(0, vocab.token_ids).to(logits.dtype)
    logits = logits.float() * logit_scale
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    logits = logits / temperature
    label_u = vocab.index[labels]  # (rows, T), -1 outside U
    real = label_mask.bool()
    on_trie = (label_u >= 0) & allowed.gather(2, label_u.clamp(min=0)[..., None]).squeeze(-1)
    if (real & ~on_trie).any():
        row = int((real & ~on_trie).any(1).nonzero()[0])
        raise RuntimeError(
            f"completion {labels[row].tolist()} leaves the SID trie, so its constrained log-prob is -inf; every "
            "rollout and expert must be a valid SID of the codebook the trainer was built with"
        )
    masked = logits.masked_fill(~allowed, float("-inf"))
    log_z = torch.logsumexp(masked, dim=-1)  # (rows, T)
    label_logits = logits.gather(2, label_u.clamp(min=0)[..., None]).squeeze(-1)
    log_pc = masked.log_softmax(-1)
    probs = log_pc.exp()
    entropy = -(probs * log_pc.masked_fill(~allowed, 0.0)).sum(-1)
    keep = real & on_trie
    zero = torch.zeros_like(log_z)
    return ConstrainedLogProbs(
        logps=torch.where(keep, label_logits - log_z, zero),
        entropy=torch.where(keep, entropy, zero),
    )


def head_scaling(text_config) -> tuple[float, float | None]:
    """``(logit_scale, softcap)`` of a model config, as TRL's fused head reads them.

    Raises:
        ValueError: for the rarer output multipliers (``output_multiplier``, ``lm_head_multiplier``,
            ``logits_scaling``), which the constrained head does not reproduce.
    """
    for name in ("output_multiplier", "lm_head_multiplier", "logits_scaling"):
        if getattr(text_config, name, None) is not None:
            raise ValueError(f"the model config sets `{name}`; constrained log-probs support `logit_scale` and "
                             "`final_logit_softcapping` only — set constrained_decoding=false for this model")  # fmt: skip
    scale = getattr(text_config, "logit_scale", None)
    return (1.0 if scale is None else float(scale)), getattr(text_config, "final_logit_softcapping", None)


class CapturedConstrainedLogProbs:
    """While active, each forward of a causal LM's backbone also yields the constrained log-probs.

    TRL scores completions through a fused LM head that never exposes the hidden states; a forward hook on
    the backbone reads them (per chunk TRL forwards) and applies :func:`constrained_log_probs` inside the
    model's forward, where ZeRO-3 expects the head to be read (the head is gathered as TRL gathers it).

    Args:
        causal_lm: the unwrapped model whose forward TRL calls (the PEFT base model, if any).
        vocab: the trie's sub-vocabulary.
        logits_to_keep: the completion length ``T`` of the call.
        temperature: TRL's temperature.
        fp32_head: TRL's `cast_lm_head_to_fp32`: the constrained head's product in fp32.
    """

    def __init__(
        self,
        causal_lm,
        vocab: SIDSubVocabulary,
        logits_to_keep: int,
        temperature: float,
        fp32_head: bool = False,
    ):
        from trl.trainer.utils import maybe_gather_lm_head_ctx

        self._gather = maybe_gather_lm_head_ctx
        self.backbone = causal_lm.base_model
        self.head = causal_lm.get_output_embeddings()
        self.scale, self.softcap = head_scaling(causal_lm.config.get_text_config())
        self.vocab, self.T, self.temperature, self.fp32_head = vocab, logits_to_keep, temperature, fp32_head
        self.chunks: list[ConstrainedLogProbs] = []
        self._handle = None

    def _hook(self, module, args, kwargs, output):
        input_ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        attention_mask = kwargs["attention_mask"]
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        T = self.T
        weight, bias = self.head.weight, self.head.bias
        with self._gather(weight, bias):
            self.chunks.append(constrained_log_probs(
                hidden[:, -T - 1 : -1], weight, bias, input_ids[:, -T:], attention_mask[:, -T:], self.vocab,
                self.temperature, self.scale, self.softcap, self.fp32_head,
            ))  # fmt: skip

    def __enter__(self) -> CapturedConstrainedLogProbs:
        self._handle = self.backbone.register_forward_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def result(self) -> ConstrainedLogProbs:
        if not self.chunks:
            raise RuntimeError("the backbone never ran during scoring: TRL no longer calls `model.base_model` in its "
                               "fused head; eg-grpo is pinned to trl 1.16.x")  # fmt: skip
        return ConstrainedLogProbs(
            logps=torch.cat([c.logps for c in self.chunks]),
            entropy=torch.cat([c.entropy for c in self.chunks]),
        )
