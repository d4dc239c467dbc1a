"""Building a SID codebook from a search log: CQ-SID and its baselines behind one entry point.

``method``:

- ``cq_sid``: RQ-VAE + category-guided level 1 (``category_guided``) + query-item InfoNCE
  (``query_contrastive``); switching both off gives exactly ``rqvae``, each alone is an ablation;
- ``rqvae``: plain RQ-VAE (the two switches are ignored);
- ``rqkmeans``: residual k-means on the text vectors (switches ignored);
- ``reference``: the dataset's own SIDs from ``DATA/reference_sids.json`` (item id -> SID as a
  string ``"<a_1><b_2><c_3>"`` or a list of its tokens). No model: ``assign`` is unavailable.

Every method but ``reference`` then splits oversized clusters (:mod:`eg_grpo.sid.split`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from eg_grpo.sid.codebook import SIDCodebook
from eg_grpo.sid.constraints import (
    QUERY_SOURCES,
    allocate_level1_codes,
    query_click_pairs,
    top_level_categories,
)
from eg_grpo.sid.encoders import build_encoder, item_texts, load_item_vectors, torch_threads
from eg_grpo.sid.rqkmeans import fit_residual_kmeans
from eg_grpo.sid.rqvae import FrozenQuantizer, TrainSettings, train_rqvae
from eg_grpo.sid.split import apply_splits, split_oversized
from eg_grpo.sid.stats import sid_stats
from eg_grpo.sid.tokens import parse_sid_text

logger = logging.getLogger(__name__)

METHODS = ("cq_sid", "rqvae", "rqkmeans", "reference")


@dataclass
class SIDConfig:
    """How to build SIDs. Every field is a YAML key of ``recipes/configs/*/sids*.yaml``."""

    method: str = field(default="cq_sid", metadata={"help": f"one of {METHODS}"})
    category_guided: bool = field(
        default=True, metadata={"help": "cq_sid: level-1 codes partitioned by top-level category"}
    )
    query_contrastive: bool = field(
        default=True, metadata={"help": "cq_sid: query-item InfoNCE on train clicks"}
    )
    query_source: str = field(
        default="query",
        metadata={"help": "cq_sid: 'query' (search logs) or 'last_item' (recommendation: the last history item's title)"},
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
        if self.method not in METHODS:
            raise ValueError(f"unknown method '{self.method}'; use one of {METHODS}")
        if self.query_source not in QUERY_SOURCES:
            raise ValueError(f"unknown query_source '{self.query_source}'; use one of {QUERY_SOURCES}")
        if self.levels < 1 or self.codebook_size < 2:
            raise ValueError(
                f"need levels >= 1 and codebook_size >= 2, got {self.levels} x {self.codebook_size}"
            )


def load_reference_sids(path: str | Path, item_ids: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """Reads ``reference_sids.json`` (item id -> SID) for ``item_ids``; returns codes and codebook sizes."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: method 'reference' needs the dataset's reference_sids.json"
        )
    table = json.loads(path.read_text())
    missing = [i for i in item_ids.tolist() if str(i) not in table]
    if missing:
        raise KeyError(f"{len(missing)} item(s) have no reference SID in {path}, e.g. {missing[:5]}")
    codes = np.asarray(
        [
            parse_sid_text(v if isinstance(v, str) else "".join(v))
            for v in (table[str(i)] for i in item_ids.tolist())
        ]
    )
    extra = len(table) - len(item_ids)
    if extra > 0:
        logger.warning("%d reference SIDs belong to items not in the catalogue; ignored", extra)
    return codes, tuple(int(c) + 1 for c in codes.max(0))


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
    """The body of :func:`build_codebook`."""
    start = time.perf_counter()
    items = log.items
    if items["item_id"].duplicated().any():
        raise ValueError(
            f"duplicate item id {items['item_id'][items['item_id'].duplicated()].iloc[0]} in the items table"
        )
    item_ids = items["item_id"].to_numpy()
    texts = item_texts(items, config.description_chars)  # also rejects items without any text
    tops = top_level_categories(items)
    k = config.codebook_size
    sizes = (k,) * config.levels
    if config.method == "reference":
        ref_path = config.reference_sids or (Path(data_dir) / "reference_sids.json" if data_dir else None)
        if ref_path is None:
            raise ValueError("method 'reference' needs config.reference_sids or data_dir")
        codes, used = load_reference_sids(ref_path, item_ids)
        if len(used) != config.levels:
            logger.warning(
                "the reference SIDs have %d levels, the config says %d; using %d",
                len(used),
                config.levels,
                len(used),
            )
        # the configured codebook size where it covers the codes (a SID token set the size of the
        # publisher's codebook, not of the codes this catalogue happens to use)
        sizes = tuple(max(k, u) for u in used)
        book = SIDCodebook(sizes, item_ids, codes, method="reference", config=asdict(config))
        return book, {**sid_stats(codes, sizes, tops), "build_seconds": time.perf_counter() - start}

    if encoder is None and config.encoder != "none":
        encoder = build_encoder(
            config.encoder, batch_size=config.encoder_batch_size, cache_dir=config.cache_dir
        )
    if encoder is not None:
        encoder = _ThreadedEncoder(encoder, config.encoder_threads)
    # Which encoder new items need for `assign`: "none" when the item vectors were given (their
    # model is unknown here, so new items must come with vectors of the same model).
    item_encoder = "none"
    if item_vectors is None and config.item_vectors:
        item_vectors = load_item_vectors(config.item_vectors, len(items))
    if item_vectors is None:
        if encoder is None:
            raise ValueError("encoder 'none' needs item_vectors (a .npy aligned with items.parquet)")
        item_vectors = encoder.encode(texts, show_progress=show_progress)
        item_encoder = getattr(encoder, "name", config.encoder)
    x = np.asarray(item_vectors, dtype=np.float32)
    if x.shape[0] != len(items):
        raise ValueError(f"{x.shape[0]} item vectors for {len(items)} items; they must be aligned row by row")

    cq = config.method == "cq_sid"
    slices = None
    if cq and config.category_guided:
        if tops is None:
            logger.warning("no item has a category_path: category-guided level 1 is switched off")
        else:
            slices = allocate_level1_codes(tops, k)
    groups = tops if slices is not None else None
    query_on = cq and config.query_contrastive
    train_pairs = query_click_pairs(log, "train", config.query_source) if query_on else None
    if query_on and (encoder is None or len(train_pairs) == 0):
        logger.warning(
            "query-item contrastive learning is switched off: %s",
            "encoder 'none' cannot encode queries"
            if encoder is None
            else "no train click under a non-empty query",
        )
        query_on = False

    encoder_dims = None
    if config.method in ("cq_sid", "rqvae"):
        settings = TrainSettings(
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            beta=config.beta,
            kmeans_iters=config.kmeans_iters,
            contrastive_weight=config.contrastive_weight,
            temperature=config.temperature,
            code_alignment_weight=config.code_alignment_weight,
            seed=config.seed,
            device=config.device,
        )
        pair_args = {}
        if query_on:
            row_of = {int(i): r for r, i in enumerate(item_ids.tolist())}
            pair_args = {
                "query_vectors": encoder.encode(train_pairs["query"].tolist(), show_progress=show_progress),
                "pair_items": np.asarray([row_of[int(i)] for i in train_pairs["item_id"]]),
                "pair_item_ids": train_pairs["item_id"].to_numpy(),
            }
        model = train_rqvae(
            x,
            settings,
            list(config.hidden_dims),
            config.latent_dim,
            config.levels,
            k,
            groups,
            slices,
            show_progress=show_progress,
            **pair_args,
        )
        quantizer = FrozenQuantizer(model.encoder, list(model.codebooks), slices)
        encoder_dims = [x.shape[1], *config.hidden_dims, config.latent_dim]
    else:  # rqkmeans
        torch.manual_seed(config.seed)
        codebooks = fit_residual_kmeans(
            torch.as_tensor(x), config.levels, k, config.kmeans_iters, config.seed
        )
        quantizer = FrozenQuantizer(None, codebooks, None)

    codes, z = quantizer.codes(x, groups)
    z = z.numpy()
    splits = {}
    if config.max_cluster_size > 0:
        codes, splits = split_oversized(
            codes, z, k, config.max_cluster_size, _codeword_sums(quantizer, codes)
        )
    book = SIDCodebook(
        sizes,
        item_ids,
        codes,
        config.method,
        quantizer,
        item_encoder,
        encoder_dims,
        splits,
        asdict(config),
    )

    query_codes = pair_codes = None
    valid_pairs = query_click_pairs(log, "valid", config.query_source) if "valid" in set(log.requests["split"]) else None
    if encoder is not None and valid_pairs is not None and len(valid_pairs):
        qv = encoder.encode(valid_pairs["query"].tolist(), show_progress=show_progress)
        q_codes, qz = quantizer.codes(qv, None)  # a query has no category: all level-1 codes
        query_codes = apply_splits(q_codes, qz.numpy(), k, splits)
        pair_codes = book.sids_of(valid_pairs["item_id"].to_numpy())
    stats = sid_stats(codes, sizes, tops, query_codes, pair_codes)
    if sizes[0] > 2 and stats["level_perplexity"][0] < 2.0:
        # Seen with the code-alignment term and no category-guided level 1: one code takes nearly every item.
        logger.warning(
            "level 1 has collapsed (perplexity %.2f of %d codes): the first SID token carries almost no "
            "information; lower code_alignment_weight or guide level 1 by category",
            stats["level_perplexity"][0], sizes[0],
        )  # fmt: skip
    stats.update(
        method=config.method,
        category_guided=slices is not None,
        query_contrastive=query_on,
        num_train_pairs=0 if train_pairs is None else len(train_pairs),
        num_split_sids=len(splits),
        build_seconds=time.perf_counter() - start,
    )
    return book, stats
