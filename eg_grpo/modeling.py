"""Building and loading the policy model: a tiny offline Qwen2, or any hub/local causal LM, with SID tokens.

Both paths end in :func:`add_sid_tokens`, so the tiny demo model and a real Qwen get their SID tokens
the same way: as *normal* tokens (special tokens are stripped from decoded completions), with the
embedding matrix resized and the new rows initialised.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AddedToken,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from eg_grpo.sid.tokens import SIDVocab, all_sid_tokens, sid_to_text

logger = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


@dataclass(frozen=True)
class TinyModelConfig:
    """Sizes of the tiny offline Qwen2, shared by the demo, the tests and the benchmarks.

    Args:
        vocab_size: size of the BPE vocabulary trained on the dataset text (before the SID tokens).
        hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads, intermediate_size:
            the Qwen2 sizes.
        max_position_embeddings: the longest prompt + completion the model accepts.
        tie_word_embeddings: tie the input and output embeddings, as Qwen2.5-0.5B does (see
            :func:`build_tiny_qwen2`).
        seed: seed of the random initialisation.
    """

    vocab_size: int = 1024
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 128
    max_position_embeddings: int = 512
    tie_word_embeddings: bool = True
    seed: int = 0

    def model_sizes(self) -> dict:
        """The keyword arguments of :func:`build_tiny_qwen2` (everything but the tokenizer's size)."""
        sizes = asdict(self)
        sizes.pop("vocab_size")
        return sizes


# "test": seconds on 2 CPU cores; "demo": big enough to learn the demo data's query -> SID mapping.
TINY_PRESETS = {
    "test": TinyModelConfig(),
    "demo": TinyModelConfig(vocab_size=4096, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                            num_key_value_heads=4, intermediate_size=768, max_position_embeddings=1024),
}  # fmt: skip


def build_tiny_tokenizer(
    texts: Iterable[str], vocab_size: int = 1024, model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """Train a small byte-level BPE tokenizer on ``texts`` (no download, a few seconds).

    Byte-level, so any text encodes without an unknown token. ``eos`` (``<|endoftext|>``, as in Qwen)
    and a distinct ``pad`` (``<|pad|>``) are special tokens; a distinct pad keeps the end token of
    a completion from being masked as padding. No chat template: prompts are plain text.

    Args:
        texts: the training text (titles, queries, ...).
        vocab_size: the BPE vocabulary size, special tokens included (fewer if the text is small).
        model_max_length: recorded on the tokenizer.

    Returns:
        A `PreTrainedTokenizerFast` with ``eos_token`` and ``pad_token`` set.
    """
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    backend.train_from_iterator((t for t in texts if t), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )


def clean_generation_config(tokenizer) -> GenerationConfig:
    """A generation config with the token ids only: no sampling, penalty or length defaults.

    Hub models ship defaults (Qwen2.5-Instruct: ``do_sample``, ``top_k=20``, ``top_p=0.8``, a
    repetition penalty) that silently change beam search (a known failure of SID generators built on hub models). Generation helpers
    still set every parameter explicitly; this keeps a saved model from carrying such defaults on.
    """
    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_qwen2(
    tokenizer,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 512,
    tie_word_embeddings: bool = True,
    seed: int = 0,
) -> Qwen2ForCausalLM:
    """A randomly initialised `Qwen2ForCausalLM` sized for ``tokenizer`` (float32).

    Embeddings are tied by default because Qwen2.5-0.5B, the real base model of this project, ties
    them: the tiny model then exercises the same resize path (one matrix serves input and output)
    and has half the embedding parameters.

    Args:
        tokenizer: the tokenizer; the embedding matrix gets ``len(tokenizer)`` rows.
        hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads, intermediate_size,
        max_position_embeddings, tie_word_embeddings: the `Qwen2Config` sizes.
        seed: seed of the random initialisation (the global torch RNG state is restored afterwards).

    Returns:
        The model in eval mode, its generation config cleared of sampling defaults.
    """
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config = clean_generation_config(tokenizer)
    return model.eval()


def qwen2_5_0_5b_config(vocab_size: int = 151936) -> Qwen2Config:
    """`Qwen2Config` with Qwen2.5-0.5B's sizes, for random-init speed benchmarks (no download).

    Args:
        vocab_size: embedding rows; Qwen2.5 pads its 151,665 tokens to 151,936.
    """
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=151643,
        eos_token_id=151643,
    )


def add_sid_tokens(
    model: PreTrainedModel | None, tokenizer, codebook_sizes: Sequence[int], init: str = "mean"
) -> SIDVocab:
    """Add the SID tokens (``<a_0>`` … one per level and code) as normal tokens and resize the embeddings.

    Idempotent: tokens already present are not added again. The same code serves the tiny model and
    a hub model. A hub model's embedding matrix may already have spare rows beyond ``len(tokenizer)``
    (Qwen2.5: 151,936 rows for 151,665 tokens); new tokens take those ids first, so their rows are
    initialised explicitly, not left as whatever the padding rows held.

    Args:
        model: the causal LM, or None to change the tokenizer only.
        tokenizer: the tokenizer (changed in place).
        codebook_sizes: codes per level, e.g. ``(256, 256, 256)``.
        init: how rows of new tokens start: ``"mean"`` (the mean of the existing token rows, which
            leaves the model's distribution over old tokens almost unchanged; right for a trained
            model) or ``"random"`` (the model's own initialiser; right for a randomly initialised
            model, where identical SID rows would make every SID equally likely).

    Returns:
        The :class:`~eg_grpo.sid.tokens.SIDVocab` of the tokenizer.

    Raises:
        ValueError: on an unknown ``init``, or when a SID token does not encode to exactly one id.
    """
    if init not in ("mean", "random"):
        raise ValueError(f"init={init!r}: use 'mean' or 'random'")
    old_len = len(tokenizer)
    vocab = tokenizer.get_vocab()
    missing = [t for t in all_sid_tokens(codebook_sizes) if t not in vocab]
    if missing:
        # normalized=False: a lowercasing/NFKC normaliser must not rewrite "<a_1>" before matching.
        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in missing])
    sid_vocab = SIDVocab(tokenizer, codebook_sizes)
    # The first and the last code of every level, as text: each token must come back as one id.
    sid = [0] * len(codebook_sizes) + [k - 1 for k in codebook_sizes]
    text = sid_to_text(sid[: len(codebook_sizes)]) + sid_to_text(sid[len(codebook_sizes) :])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if ids != sid_vocab.encode(sid[: len(codebook_sizes)], False) + sid_vocab.encode(
        sid[len(codebook_sizes) :], False
    ):
        raise ValueError(f"SID text {text!r} encodes to {ids}; each SID token must be exactly one id")
    if model is None or not missing:
        if model is not None:
            _check_embedding_rows(model, tokenizer)
        return sid_vocab

    new_ids = torch.tensor(tokenizer.convert_tokens_to_ids(missing), dtype=torch.long)
    embeddings = model.get_input_embeddings()
    if len(tokenizer) > embeddings.weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    _init_rows(
        model, new_ids, n_reference=min(old_len, model.get_input_embeddings().weight.shape[0]), init=init
    )
    model.config.vocab_size = model.get_input_embeddings().weight.shape[0]
    return sid_vocab


@torch.no_grad()
def _init_rows(model: PreTrainedModel, ids: torch.Tensor, n_reference: int, init: str) -> None:
    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(output.weight)  # untied (e.g. Qwen2.5-7B): both matrices need the rows
    std = getattr(model.config, "initializer_range", 0.02)
    for weight in matrices:
        ids_here = ids.to(weight.device)
        if init == "mean":
            # The mean over real token rows only; spare padding rows would drag it towards their init.
            row = weight[:n_reference].float().mean(dim=0)
            weight[ids_here] = row.to(weight.dtype).expand(len(ids_here), -1)
        else:
            weight[ids_here] = (torch.randn(len(ids_here), weight.shape[1], device=weight.device) * std).to(
                weight.dtype
            )


def _check_embedding_rows(model: PreTrainedModel, tokenizer) -> None:
    rows = model.get_input_embeddings().weight.shape[0]
    if rows < len(tokenizer):
        raise ValueError(
            f"the model has {rows} embedding rows but the tokenizer {len(tokenizer)} tokens; the model and "
            "tokenizer were not saved together (save both from the same run)"
        )


def load_model_and_tokenizer(
    name_or_path: str,
    codebook_sizes: Sequence[int] | None = None,
    dtype: str | torch.dtype = "auto",
    init: str = "mean",
    **model_kwargs,
):
    """Load a causal LM and its tokenizer from a hub id or a local folder, adding SID tokens if missing.

    A folder saved after SFT already has the SID tokens; adding them again is a no-op. A tokenizer
    without a pad token gets its eos as pad. The model's generation config is replaced by one with
    token ids only (see :func:`clean_generation_config`).

    Args:
        name_or_path: e.g. ``"Qwen/Qwen2.5-0.5B"`` or a folder written by ``save_pretrained``.
        codebook_sizes: codes per level; None leaves the vocabulary as loaded.
        dtype: passed to ``from_pretrained`` (``"auto"``: as saved).
        init: row initialisation of new SID tokens, see :func:`add_sid_tokens`.
        **model_kwargs: passed to `AutoModelForCausalLM.from_pretrained` (e.g. ``device_map``,
            ``attn_implementation``).

    Returns:
        ``(model, tokenizer)``, the model in eval mode.
    """
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if tokenizer.eos_token is None:
        raise ValueError(f"the tokenizer of {name_or_path} has no eos_token; SIDs end with it")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, **model_kwargs)
    if codebook_sizes is not None:
        add_sid_tokens(model, tokenizer, codebook_sizes, init=init)
    model.generation_config = clean_generation_config(tokenizer)
    return model.eval(), tokenizer


def build_tiny_model_and_tokenizer(
    texts: Iterable[str], codebook_sizes: Sequence[int], config: TinyModelConfig | str = "test"
):
    """Tokenizer + tiny Qwen2 + SID tokens in one call (the demo's base model, the tests' model).

    SID rows use ``init="random"``: the whole model is random, and mean rows would make every SID
    token score alike.

    Args:
        texts: text to train the tokenizer on.
        codebook_sizes: codes per level.
        config: a :class:`TinyModelConfig` or a key of ``TINY_PRESETS``.

    Returns:
        ``(model, tokenizer, sid_vocab)``.
    """
    if isinstance(config, str):
        if config not in TINY_PRESETS:
            raise ValueError(f"unknown tiny model preset {config!r}; choose from {sorted(TINY_PRESETS)}")
        config = TINY_PRESETS[config]
    tokenizer = build_tiny_tokenizer(
        texts, vocab_size=config.vocab_size, model_max_length=config.max_position_embeddings
    )
    model = build_tiny_qwen2(tokenizer, **config.model_sizes())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + 1)
        sid_vocab = add_sid_tokens(model, tokenizer, codebook_sizes, init="random")
    return model, tokenizer, sid_vocab


def merge_lora_adapter(adapter_dir: str | Path, output_dir: str | Path) -> Path:
    """Merges a PEFT LoRA adapter (with its `modules_to_save`) into its base model and saves both
    model and tokenizer to ``output_dir`` atomically.

    Raises:
        FileNotFoundError: ``adapter_dir`` holds no ``adapter_config.json``.
    """
    from peft import AutoPeftModelForCausalLM

    from eg_grpo.io import atomic_dir

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise FileNotFoundError(
            f"{adapter_dir} holds no adapter_config.json; is it a LoRA run's output folder?"
        )
    model = AutoPeftModelForCausalLM.from_pretrained(str(adapter_dir)).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    with atomic_dir(output_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(output_dir)
