"""Building a SID codebook from a search log: encode, quantise, split, measure.

:func:`build_codebook` runs four steps, each a function here:

1. :func:`encode_items`: the item vectors (given, a ``.npy`` file, or the text encoder);
2. quantise: the method ``SIDConfig.method`` names (:mod:`eg_grpo.sid.methods`: ``cq_sid``,
   ``rqvae``, ``rqkmeans``, ``reference``, or a user's ``package.module:Class``) codes the items;
3. :func:`split_clusters`: oversized clusters are cut (:mod:`eg_grpo.sid.split`);
4. :func:`measure`: the statistics of :mod:`eg_grpo.sid.stats`, with the query-item agreement on
   the valid split's clicks.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from eg_grpo.sid.codebook import SIDCodebook
from eg_grpo.sid.constraints import QUERY_SOURCES, query_click_pairs, top_level_categories
from eg_grpo.sid.encoders import build_encoder, item_texts, load_item_vectors, torch_threads
from eg_grpo.sid.methods import (
    SID_METHODS,
    Quantised,
    SIDInputs,
    check_method_name,
    check_quantised,
    get_sid_method,
    load_reference_sids,
)
from eg_grpo.sid.rqvae import FrozenQuantizer
from eg_grpo.sid.split import apply_splits, split_oversized
from eg_grpo.sid.stats import sid_stats

logger = logging.getLogger(__name__)

METHODS = tuple(SID_METHODS)  # the built-ins; a dotted path names a user's own
__all__ = ["METHODS", "SIDConfig", "build_codebook", "load_reference_sids"]


@dataclass
class SIDConfig:
    r"""
    Configuration of a SID build ([`build_codebook`], `recipes/build_sids.py`); every field is a YAML key
    of `recipes/configs/*/sids*.yaml`.

    Parameters:
        method (`str`, *optional*, defaults to `"cq_sid"`):
            `"cq_sid"`, `"rqvae"`, `"rqkmeans"`, `"reference"` (see [`eg_grpo.sid.methods`]), or a user's
            [`~eg_grpo.sid.methods.SIDMethod`] subclass as `"package.module:ClassName"`.
        category_guided (`bool`, *optional*, defaults to `True`):
            `cq_sid`: partition the level-1 codes among the top-level categories.
        query_contrastive (`bool`, *optional*, defaults to `True`):
            `cq_sid`: query-item InfoNCE on the train split's clicks.
        query_source (`str`, *optional*, defaults to `"query"`):
            `cq_sid`: `"query"` (search logs) or `"last_item"` (recommendation data: the title of the
            last history item stands in for the query).
        levels (`int`, *optional*, defaults to `3`):
            SID length `L`.
        codebook_size (`int`, *optional*, defaults to `256`):
            Codes per level `K`.
        max_cluster_size (`int`, *optional*, defaults to `50`):
            SIDs with more items are split (`0`: no limit).
        encoder (`str`, *optional*, defaults to `"default"`):
            `"default"` (MiniLM), a sentence-transformers id or folder, a `.npz` vectors table, or `"none"`
            (then `item_vectors` is required).
        item_vectors (`str`, *optional*):
            A `.npy` of item vectors aligned with `items.parquet` (replaces encoding the items).
        encoder_batch_size (`int`, *optional*, defaults to `256`):
            Texts per encoder forward pass.
        description_chars (`int`, *optional*, defaults to `300`):
            Description characters in the item text (`0`: title, brand and category only).
        cache_dir (`str`, *optional*):
            Embedding cache (`None`: `$EG_GRPO_CACHE` or `~/.cache/eg_grpo`; `""` disables it).
        hidden_dims (`list[int]`, *optional*, defaults to `[256, 128]`), latent_dim (`int`, *optional*, defaults to `32`):
            RQ-VAE encoder MLP sizes.
        epochs, batch_size, lr (*optional*, default to `30`, `1024`, `1e-3`):
            RQ-VAE training.
        beta (`float`, *optional*, defaults to `0.25`):
            Commitment loss weight.
        kmeans_iters (`int`, *optional*, defaults to `20`):
            k-means iterations (codebook initialisation, `rqkmeans`).
        contrastive_weight, temperature (`float`, *optional*, default to `0.25`, `0.1`):
            `cq_sid`: weight and temperature of the query-item InfoNCE.
        code_alignment_weight (`float`, *optional*, defaults to `1.0`):
            `cq_sid`: weight of the code-level query term (`0`: in-batch InfoNCE only).
        seed (`int`, *optional*, defaults to `42`):
            Seed of the training and k-means.
        device (`str`, *optional*, defaults to `"cpu"`):
            Torch device for training.
        num_threads (`int`, *optional*, defaults to `1`):
            Torch CPU threads for the RQ-VAE and k-means (`0`: torch's default).
        encoder_threads (`int`, *optional*, defaults to `0`):
            Torch CPU threads for text encoding (`0`: torch's default).
        reference_sids (`str`, *optional*):
            `reference`: the SID table (default `DATA/reference_sids.json`).
    """

    method: str = field(
        default="cq_sid",
        metadata={"help": f"one of {METHODS}, or your own SIDMethod subclass as 'package.module:ClassName'"},
    )
    category_guided: bool = field(
        default=True, metadata={"help": "cq_sid: level-1 codes partitioned by top-level category"}
    )
    query_contrastive: bool = field(
        default=True, metadata={"help": "cq_sid: query-item InfoNCE on train clicks"}
    )
    query_source: str = field(
        default="query",
        metadata={
            "help": "cq_sid: 'query' (search logs) or 'last_item' (recommendation: the last history item's title)"
        },
    )
    levels: int = field(default=3, metadata={"help": "SID length L"})
    codebook_size: int = field(default=256, metadata={"help": "codes per level K"})
    max_cluster_size: int = field(default=50, metadata={"help": "split SIDs with more items (0: no limit)"})
    encoder: str = field(
        default="default",
        metadata={"help": "'default' (MiniLM), a sentence-transformers id/path, a .npz table, or 'none'"},
    )
    item_vectors: str | None = field(
        default=None, metadata={"help": ".npy item vectors aligned with items.parquet"}
    )
    encoder_batch_size: int = 256
    description_chars: int = field(
        default=300,
        metadata={"help": "description characters in the item text (0: title, brand, category only)"},
    )
    cache_dir: str | None = field(default=None, metadata={"help": "embedding cache ('' disables)"})
    hidden_dims: list[int] = field(
        default_factory=lambda: [256, 128], metadata={"help": "RQ-VAE MLP hidden sizes"}
    )
    latent_dim: int = 32
    epochs: int = 30
    batch_size: int = 1024
    lr: float = 1e-3
    beta: float = field(default=0.25, metadata={"help": "commitment loss weight"})
    kmeans_iters: int = 20
    contrastive_weight: float = 0.25
    temperature: float = 0.1
    code_alignment_weight: float = field(
        default=1.0,
        metadata={"help": "cq_sid: weight of the code-level query term (0: in-batch InfoNCE only)"},
    )
    seed: int = 42
    device: str = field(default="cpu", metadata={"help": "torch device for training ('cuda' when available)"})
    num_threads: int = field(
        default=1, metadata={"help": "torch CPU threads for the RQ-VAE/k-means (0: torch's default)"}
    )
    encoder_threads: int = field(
        default=0, metadata={"help": "torch CPU threads for text encoding (0: torch's default)"}
    )
    reference_sids: str | None = field(
        default=None, metadata={"help": "reference: path (default DATA/reference_sids.json)"}
    )

    def __post_init__(self):
        check_method_name(self.method)
        if self.query_source not in QUERY_SOURCES:
            raise ValueError(f"unknown query_source '{self.query_source}'; use one of {QUERY_SOURCES}")
        if self.levels < 1 or self.codebook_size < 2:
            raise ValueError(
                f"need levels >= 1 and codebook_size >= 2, got {self.levels} x {self.codebook_size}"
            )


def _codeword_sums(quantizer: FrozenQuantizer, codes: np.ndarray) -> np.ndarray:
    return sum(cb[torch.as_tensor(codes[:, level])] for level, cb in enumerate(quantizer.codebooks)).numpy()


class _ThreadedEncoder:
    """Runs another encoder's ``encode`` with its own torch thread count."""

    def __init__(self, encoder, num_threads: int):
        self.inner, self.num_threads, self.name = encoder, num_threads, getattr(encoder, "name", "custom")

    def encode(self, texts, show_progress: bool = True):
        with torch_threads(self.num_threads):
            return self.inner.encode(texts, show_progress=show_progress)


def build_codebook(
    log, config: SIDConfig, item_vectors=None, encoder=None, data_dir=None, show_progress: bool = True
):
    """Builds the SIDs of ``log.items``.

    Text encoding runs with ``config.encoder_threads`` torch threads (large batched matmuls that
    scale with cores), the RQ-VAE and k-means with ``config.num_threads`` (default 1: their ops
    are so small that thread synchronisation costs more than it saves, see
    :func:`eg_grpo.sid.encoders.torch_threads`).

    Args:
        log: a :class:`eg_grpo.data.schema.SearchLog`.
        config: a :class:`SIDConfig`.
        item_vectors: ``(N, D)`` item vectors aligned with ``log.items`` (overrides ``config.item_vectors``).
        encoder: an object with ``encode(texts) -> (n, D)`` and ``name`` (overrides ``config.encoder``).
        data_dir: the data folder (``reference`` reads ``reference_sids.json`` there by default).

    Returns:
        ``(SIDCodebook, stats dict)``; see :mod:`eg_grpo.sid.stats` for the stats.

    Raises:
        ValueError: items without text, a vectors file of the wrong size, too many categories, ...
    """
    with torch_threads(config.num_threads):
        return _build(log, config, item_vectors, encoder, data_dir, show_progress)


def _build(log, config, item_vectors, encoder, data_dir, show_progress):
    """The body of :func:`build_codebook`: encode, quantise, split, measure."""
    start = time.perf_counter()
    items = log.items
    if items["item_id"].duplicated().any():
        raise ValueError(
            f"duplicate item id {items['item_id'][items['item_id'].duplicated()].iloc[0]} in the items table"
        )
    texts = item_texts(items, config.description_chars)  # also rejects items without any text
    method = get_sid_method(config)
    vectors = item_encoder = None
    if method.needs_vectors:
        if encoder is None and config.encoder != "none":
            encoder = build_encoder(
                config.encoder, batch_size=config.encoder_batch_size, cache_dir=config.cache_dir
            )
        if encoder is not None:
            encoder = _ThreadedEncoder(encoder, config.encoder_threads)
        vectors, item_encoder = encode_items(texts, config, item_vectors, encoder, show_progress)
    inputs = SIDInputs(
        log,
        items["item_id"].to_numpy(),
        top_level_categories(items),
        vectors,
        encoder,
        data_dir,
        show_progress,
    )
    result = check_quantised(method.quantise(inputs), len(items), config.method)
    codes, splits = split_clusters(result, vectors, config.max_cluster_size)
    book = SIDCodebook(
        result.codebook_sizes,
        inputs.item_ids,
        codes,
        config.method,
        result.quantizer,
        item_encoder,
        result.encoder_dims,
        splits,
        asdict(config),
    )
    stats = measure(book, result, inputs, config.query_source)
    info = {"category_guided": False, "query_contrastive": False, "num_train_pairs": 0, **result.info}
    stats.update(
        method=config.method, **info, num_split_sids=len(splits), build_seconds=time.perf_counter() - start
    )
    # Which vectors the codes came from: two builds with equal configs and data but other SIDs differ
    # here when the encoder's output moved (another library version, device or model file).
    stats["item_vectors_sha256"] = (
        None if vectors is None else hashlib.sha256(vectors.tobytes()).hexdigest()[:16]
    )
    return book, stats


def encode_items(texts, config: SIDConfig, item_vectors, encoder, show_progress: bool = True):
    """The item vectors: ``item_vectors``, else ``config.item_vectors``, else the encoded ``texts``.

    Returns:
        ``(vectors (N, D) float32, encoder name)``; the name is what new items need for ``assign``:
        ``None`` when the vectors were given (their model is unknown here, so new items must come
        with vectors of the same model).

    Raises:
        ValueError: no vectors and encoder ``'none'``, or vectors not aligned with the items.
    """
    name = None
    if item_vectors is None and config.item_vectors:
        item_vectors = load_item_vectors(config.item_vectors, len(texts))
    if item_vectors is None:
        if encoder is None:
            raise ValueError("encoder 'none' needs item_vectors (a .npy aligned with items.parquet)")
        item_vectors = encoder.encode(texts, show_progress=show_progress)
        name = getattr(encoder, "name", config.encoder)
    x = np.asarray(item_vectors, dtype=np.float32)
    if x.shape[0] != len(texts):
        raise ValueError(f"{x.shape[0]} item vectors for {len(texts)} items; they must be aligned row by row")
    return x, name or "none"


def split_clusters(result: Quantised, vectors, max_cluster_size: int):
    """Cuts SIDs holding more than ``max_cluster_size`` items (0: no limit) along ``result.latents``.

    A method without latents is split along the item vectors; one without either (reference SIDs)
    is not split.

    Returns:
        ``(codes (N, L), splits)``, see :func:`eg_grpo.sid.split.split_oversized`.
    """
    latents = result.latents if result.latents is not None else vectors
    if max_cluster_size <= 0 or latents is None:
        return result.codes, {}
    sizes = set(result.codebook_sizes)
    if len(sizes) != 1:
        raise ValueError(
            f"splitting oversized clusters needs one codebook size for every level, got {result.codebook_sizes}; "
            "set max_cluster_size: 0"
        )
    quantizer = result.quantizer
    reference = None if quantizer is None else _codeword_sums(quantizer, result.codes)
    return split_oversized(result.codes, np.asarray(latents), sizes.pop(), max_cluster_size, reference)


def measure(book: SIDCodebook, result: Quantised, inputs: SIDInputs, query_source: str = "query") -> dict:
    """The codebook's statistics (:func:`eg_grpo.sid.stats.sid_stats`).

    The query-item agreement codes each valid-split query with the frozen quantiser, so it needs
    a quantiser and a text encoder; it is None otherwise.
    """
    log, encoder, quantizer = inputs.log, inputs.encoder, result.quantizer
    sizes = book.codebook_sizes
    query_codes = pair_codes = None
    if quantizer is not None and encoder is not None and "valid" in set(log.requests["split"]):
        valid_pairs = query_click_pairs(log, "valid", query_source)
        if len(valid_pairs):
            qv = encoder.encode(valid_pairs["query"].tolist(), show_progress=inputs.show_progress)
            q_codes, qz = quantizer.codes(qv, None)  # a query has no category: all level-1 codes
            query_codes = apply_splits(q_codes, qz.numpy(), max(sizes), book.splits)
            pair_codes = book.sids_of(valid_pairs["item_id"].to_numpy())
    stats = sid_stats(book.codes, sizes, inputs.tops, query_codes, pair_codes)
    if sizes[0] > 2 and stats["level_perplexity"][0] < 2.0:
        # Seen with the code-alignment term and no category-guided level 1: one code takes nearly every item.
        logger.warning(
            "level 1 has collapsed (perplexity %.2f of %d codes): the first SID token carries almost no "
            "information; lower code_alignment_weight or guide level 1 by category",
            stats["level_perplexity"][0], sizes[0],
        )  # fmt: skip
    return stats
