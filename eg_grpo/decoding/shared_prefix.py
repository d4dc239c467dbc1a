"""The decoder passes of the SID beam search: each prompt's keys and values held once, shared by its beams.

:class:`SharedPrefixDecoder` runs a supported model's own modules (embedding, norms, projections, rotary
embedding, MLP, head) layer by layer, without ``model.forward``. For a 1-row, 4-layer model that forward's
machinery (mask building, cache classes, output dataclasses, decorators) costs about as much as the
matrix products, and it would have to be told about the shared prompt through global state. Here:

- the prompt runs once per request (:meth:`~SharedPrefixDecoder.prefill`); its keys/values stay at one
  copy per request and the beams read them broadcast (:func:`_shared_prefix_attention`); only the
  ``≤ L`` generated tokens live in a per-beam cache, gathered by parent at each step;
- the last layer's attention output, MLP and the head run at the prompt's last position only;
- :meth:`~SharedPrefixDecoder.allowed_logits` multiplies the hidden states by the head's rows of the
  allowed ids only (the trie-renormalised score needs no other logit).

All state lives in the decoder object, one per search, so concurrent searches on one model (several
threads of a recall service) never see each other's prompts. Nothing on the model is changed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Families whose decoder layers are ``input_layernorm → self_attn(q/k/v/o_proj[, q_norm/k_norm], RoPE)
# → residual → post_attention_layernorm → mlp → residual``, full attention, unscaled embeddings.
SHARED_PREFIX_MODEL_TYPES = frozenset({"qwen2", "qwen3", "llama", "mistral"})
# Their norm classes: ``weight * (x * rsqrt(mean(x²) + variance_epsilon))`` in float32.
_RMS_NORMS = frozenset({"Qwen2RMSNorm", "Qwen3RMSNorm", "LlamaRMSNorm", "MistralRMSNorm"})


def supports_shared_prefix(model) -> bool:
    """Whether :class:`SharedPrefixDecoder` computes exactly what ``model``'s own forward computes."""
    config = model.config
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    sliding = getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True)
    return (
        getattr(config, "model_type", None) in SHARED_PREFIX_MODEL_TYPES
        and getattr(config, "_attn_implementation", None) in ("sdpa", "eager")
        and all(kind == "full_attention" for kind in layer_types)
        and not sliding
    )


def _rope_tables(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, signed_sin)`` with ``signed_sin = cat(-sin_1, sin_2)`` (the halves), so that transformers'
    ``x * cos + rotate_half(x) * sin`` is ``x * cos + swap_halves(x) * signed_sin`` (:func:`_rotate`)."""
    half = sin.shape[-1] // 2
    return cos, torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)


def _rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """RoPE of ``x`` (``…, d``), tables from :func:`_rope_tables` broadcasting to it: 3 kernels, not 6."""
    swapped = x.unflatten(-1, (2, -1)).flip(-2).flatten(-2)  # (x_2, x_1)
    return torch.addcmul(x * cos, swapped, signed_sin)


def _unhooked(module) -> bool:
    """No hooks and no per-instance ``forward`` (offloading and adapters wrap modules that way): the
    module's arithmetic may then be run without calling the module."""
    return not (module._forward_hooks or module._forward_pre_hooks or "forward" in module.__dict__)


def _linear(module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``; a bare ``nn.Linear`` as ``F.linear`` (a module call costs microseconds per kernel)."""
    if type(module) is torch.nn.Linear and _unhooked(module):
        return F.linear(x, module.weight, module.bias)
    return module(x)


def _norm(module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``; the families' float32 RMSNorm as one fused kernel (same arithmetic, fewer kernels)."""
    if x.dtype == torch.float32 and type(module).__name__ in _RMS_NORMS and _unhooked(module):
        return F.rms_norm(x, (x.shape[-1],), module.weight, module.variance_epsilon)
    return module(x)


def _mlp(mlp, x: torch.Tensor) -> torch.Tensor:
    """``mlp(x)``: ``down(act(gate(x)) * up(x))``, run piecewise when act is SiLU (fewer module calls)."""
    if isinstance(getattr(mlp, "act_fn", None), torch.nn.SiLU) and _unhooked(mlp):
        return _linear(mlp.down_proj, F.silu(_linear(mlp.gate_proj, x)) * _linear(mlp.up_proj, x))
    return mlp(x)


def _shared_prefix_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    prompt_key: torch.Tensor,
    prompt_value: torch.Tensor,
    prompt_bias: torch.Tensor | None,
) -> torch.Tensor:
    """Attention of one new token per beam over its request's prompt (shared) and its own suffix.

    Args:
        query: ``(B * k, H, d)`` rotated queries, already multiplied by the score scale; rows request-major
            (beam ``b`` of request ``r`` is row ``r * k + b``).
        key, value: ``(B * k, H_kv, t, d)``: each beam's generated tokens, the current one included.
        prompt_key, prompt_value: ``(B, H_kv, P, d)`` float32: each request's prompt, once.
        prompt_bias: ``(B, 1, 1, P)`` float32, ``-inf`` at padding and 0 elsewhere (None: no padding).

    Returns:
        ``(B * k, H * d)`` attention outputs in ``query``'s dtype, ready for ``o_proj``. Scores, softmax and
        sums run in float32 whatever the model's dtype, as SDPA's kernels accumulate them.
    """
    dtype, query, key, value = query.dtype, query.float(), key.float(), value.float()  # no copy in float32
    rows, heads, dim = query.shape
    B, kv_heads, P, _ = prompt_key.shape
    k, g, t = rows // B, heads // kv_heads, key.shape[2]
    # Queries of a request grouped by kv head: (B, H_kv, k * g, d), so each prompt is read in one matmul.
    q = query.view(B, k, kv_heads, g, dim).transpose(1, 2).reshape(B, kv_heads, k * g, dim)
    prompt_scores = q @ prompt_key.transpose(-1, -2)  # (B, H_kv, k * g, P)
    if prompt_bias is not None:  # an in-place add: 5x faster than masked_fill_ with a broadcast mask
        prompt_scores.add_(prompt_bias)
    own_scores = query.view(rows, kv_heads, g, dim) @ key.transpose(-1, -2)  # (B * k, H_kv, g, t)
    own_scores = own_scores.view(B, k, kv_heads, g, t).transpose(1, 2).reshape(B, kv_heads, k * g, t)
    probs = torch.softmax(torch.cat([prompt_scores, own_scores], dim=-1), dim=-1)  # (B, H_kv, k * g, P + t)
    out = probs[..., :P] @ prompt_value  # (B, H_kv, k * g, d)
    own_probs = probs[..., P:].reshape(B, kv_heads, k, g, t).transpose(1, 2).reshape(rows, kv_heads, g, t)
    # t <= L keys per beam: a broadcast product and sum beats B * k * H_kv tiny matmuls (3x on a CPU).
    own = (own_probs[..., None] * value[:, :, None]).sum(-2)  # (B * k, H_kv, g, d)
    out = out.view(B, kv_heads, k, g, dim).transpose(1, 2).reshape(rows, kv_heads, g, dim) + own
    return out.reshape(rows, heads * dim).to(dtype)


class SharedPrefixDecoder:
    """One beam search's decoder state over a model that :func:`supports_shared_prefix`.

    Args:
        model: the causal LM (a PEFT wrapper is unwrapped; adapters still apply, its modules are called).

    Usage: :meth:`prefill` once, then :meth:`step` once per generated token; :meth:`logits` and
    :meth:`allowed_logits` turn the returned hidden states into scores.
    """

    def __init__(self, model):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        decoder = base.get_decoder()
        self.config = base.config
        self.embed, self.norm, self.rotary = decoder.embed_tokens, decoder.norm, decoder.rotary_emb
        self.layers = list(decoder.layers[: self.config.num_hidden_layers])
        self.head = base.get_output_embeddings()
        attn = self.layers[0].self_attn
        self.head_dim, self.scaling = attn.head_dim, attn.scaling
        # The head's weight can be gathered row by row only when it is a bare linear map (not an adapter).
        self.plain_head = type(self.head) is torch.nn.Linear and _unhooked(self.head)
        self.prompt_keys: list[torch.Tensor] = []  # per layer (B, H_kv, P, d), float32
        self.prompt_values: list[torch.Tensor] = []
        self.keys: list[torch.Tensor] = []  # per layer (rows, H_kv, t, d): the generated tokens
        self.values: list[torch.Tensor] = []
        self.prompt_bias = self.next_position = None

    def _qkv(self, layer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q ``(…, H, d)``, k and v ``(…, H_kv, d)`` of the normed ``x`` ``(…, D)``, before RoPE."""
        attn, d, h = layer.self_attn, self.head_dim, _norm(layer.input_layernorm, x)
        q = _linear(attn.q_proj, h).unflatten(-1, (-1, d))
        k = _linear(attn.k_proj, h).unflatten(-1, (-1, d))
        v = _linear(attn.v_proj, h).unflatten(-1, (-1, d))
        if getattr(attn, "q_norm", None) is not None:  # qwen3 normalises each head before RoPE
            q, k = _norm(attn.q_norm, q), _norm(attn.k_norm, k)
        return q, k, v

    @staticmethod
    def _finish(layer, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The layer's output from its input ``x`` and attention output ``attended`` (``…, H * d``)."""
        x = x + _linear(layer.self_attn.o_proj, attended)
        return x + _mlp(layer.mlp, _norm(layer.post_attention_layernorm, x))

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Runs the left-padded prompts ``(B, P)`` once and keeps their keys/values.

        Positions follow ``generate``'s rule for left padding (``cumsum(mask) - 1``, pads at 0).

        Returns:
            ``(B, D)`` final hidden states at each prompt's last position (the first token's scores).
        """
        mask = attention_mask.bool()  # (B, P)
        B, P = mask.shape
        positions = (mask.long().cumsum(-1) - 1).clamp_(min=0)  # (B, P); pads sit at 0 like generate's
        self.next_position = mask.sum(-1)  # (B,)
        # One host sync per search: a batch without padding (a lone request) needs no masks at all.
        padded = not bool(mask.all())
        self.prompt_bias = None
        allowed = None  # no padding: causal attention, and the last position sees every key
        if padded:
            pad_bias = torch.zeros(mask.shape, device=mask.device).masked_fill_(~mask, float("-inf"))
            self.prompt_bias = pad_bias[:, None, None, :]  # (B, 1, 1, P)
            causal = torch.ones(P, P, dtype=torch.bool, device=mask.device).tril_()
            # A pad query attends to itself too: no row is fully masked (NaN), and pads are never read later.
            allowed = (causal & mask[:, None, None, :]) | torch.eye(P, dtype=torch.bool, device=mask.device)
        x = self.embed(input_ids)  # (B, P, D)
        cos, sin = _rope_tables(*self.rotary(x, positions))  # (B, P, d)
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, P, d)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, x)  # (B, P, H | H_kv, d)
            k = _rotate(k.transpose(1, 2), cos, sin)  # (B, H_kv, P, d)
            v = v.transpose(1, 2)
            self.prompt_keys.append(k.float())  # float32 for the beams' attention (no copy if already)
            self.prompt_values.append(v.float())
            if i == last:  # only the last position feeds the head: the rest of this layer runs there only
                q, x, cos, sin = q[:, -1:], x[:, -1:], cos[:, :, -1:], sin[:, :, -1:]
                allowed = None if allowed is None else allowed[..., -1:, :]
            q = _rotate(q.transpose(1, 2), cos, sin)  # (B, H, P | 1, d)
            causal = not padded and i != last  # SDPA's causal mask is top-left aligned: not for 1 query
            out = F.scaled_dot_product_attention(q, k, v, allowed, is_causal=causal, scale=self.scaling,
                                                 enable_gqa=True)  # fmt: skip
            x = self._finish(layer, x, out.transpose(1, 2).flatten(2))
        return _norm(self.norm, x[:, -1])

    def step(self, tokens: torch.Tensor, parents: torch.Tensor | None, step: int) -> torch.Tensor:
        """One new token per beam.

        Args:
            tokens: ``(B * k,)`` the beams' new tokens, request-major.
            parents: ``(B * k,)`` the row of the previous step each beam extends (unused at the first step,
                whose beams all extend their request's prompt).
            step: tokens generated before these (0 at the first step).

        Returns:
            ``(B * k, D)`` final hidden states (the next token's scores).
        """
        rows, B = tokens.shape[0], self.next_position.shape[0]
        positions = (self.next_position + step).repeat_interleave(rows // B)[:, None]  # (B * k, 1)
        x = self.embed(tokens)  # (B * k, D)
        cos, sin = _rope_tables(*self.rotary(x, positions))  # (B * k, 1, d): broadcasts over heads
        q_cos, q_sin = cos * self.scaling, sin * self.scaling  # the score scale folded into the queries
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, x)  # (B * k, H | H_kv, d)
            q, k = _rotate(q, q_cos, q_sin), _rotate(k, cos, sin)
            if step == 0:
                self.keys.append(k[:, :, None])  # (B * k, H_kv, 1, d)
                self.values.append(v[:, :, None])
            else:  # each beam's generated tokens: its parent's, then its own
                self.keys[i] = torch.cat([self.keys[i][parents], k[:, :, None]], dim=2)
                self.values[i] = torch.cat([self.values[i][parents], v[:, :, None]], dim=2)
            out = _shared_prefix_attention(q, self.keys[i], self.values[i], self.prompt_keys[i],
                                           self.prompt_values[i], self.prompt_bias)  # fmt: skip
            x = self._finish(layer, x, out)
        return _norm(self.norm, x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(rows, V)`` logits of ``hidden`` ``(rows, D)``."""
        return self.head(hidden)

    def allowed_logits(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``(rows, W)`` logits of the ids ``ids`` ``(rows, W)`` only.

        The rows' allowed ids at one depth are a few distinct tokens (at most one level's codebook), so the
        head runs over those ``U`` rows of its weight: ``(rows, U)``, not ``(rows, V)``, and no per-row copy
        of the weight.
        """
        if not self.plain_head:  # an adapter or another module: its own forward, then the ids
            return self.head(hidden).gather(1, ids)
        union, inverse = torch.unique(ids, return_inverse=True)  # (U,), (rows, W)
        bias = None if self.head.bias is None else self.head.bias[union]
        return torch.nn.functional.linear(hidden, self.head.weight[union], bias).gather(1, inverse)
