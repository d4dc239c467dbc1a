"""SID methods: how item vectors become codes, behind one interface, chosen by name like a reward.

A method is a :class:`SIDMethod` subclass registered in :data:`SID_METHODS` under a short name, or
any class named by a dotted path ``package.module:Name`` (a user's own quantiser), e.g. in YAML::

    method: my_pkg.quantisers:HashQuantiser

The build (:func:`eg_grpo.sid.build.build_codebook`) encodes the items, calls the method's
:meth:`SIDMethod.quantise` once, then splits oversized clusters and measures the result; a
method only turns ``(N, D)`` item vectors into ``(N, L)`` codes. Built-ins:

- ``cq_sid``: RQ-VAE + category-guided level 1 (``category_guided``) + query-item InfoNCE
  (``query_contrastive``); switching both off gives exactly ``rqvae``, each alone is an ablation;
- ``rqvae``: plain RQ-VAE (the two switches are ignored);
- ``rqkmeans``: residual k-means on the text vectors (switches ignored);
- ``reference``: the dataset's own SIDs from ``DATA/reference_sids.json`` (item id -> SID as a
  string ``"<a_1><b_2><c_3>"`` or a list of its tokens). No model: ``assign`` is unavailable.
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from eg_grpo.plugins import import_module
from eg_grpo.sid.constraints import allocate_level1_codes, query_click_pairs
from eg_grpo.sid.rqkmeans import fit_residual_kmeans
from eg_grpo.sid.rqvae import FrozenQuantizer, TrainSettings, train_rqvae
from eg_grpo.sid.tokens import parse_sid_text

logger = logging.getLogger(__name__)


@dataclass
class SIDInputs:
    """What a method may use. Built by :func:`eg_grpo.sid.build.build_codebook`.

    Args:
        log: the :class:`eg_grpo.data.schema.SearchLog`.
        item_ids: ``(N,)`` item ids, in the row order of ``log.items``.
        tops: ``(N,)`` top-level category per item, or None when the catalogue has no taxonomy.
        vectors: ``(N, D)`` float32 item vectors, or None for a method with ``needs_vectors = False``.
        encoder: the text encoder (``encode(texts) -> (n, D)``), or None (encoder ``'none'``).
        data_dir: the data folder, or None.
        show_progress: show progress bars.
    """

    log: object
    item_ids: np.ndarray
    tops: np.ndarray | None
    vectors: np.ndarray | None
    encoder: object | None = None
    data_dir: str | Path | None = None
    show_progress: bool = True


@dataclass
class Quantised:
    """A method's result.

    Args:
        codes: ``(N, L)`` int codes, one row per item.
        codebook_sizes: codes per level (every code of level ``l`` is below ``codebook_sizes[l]``).
        quantizer: the frozen model that codes new vectors (``assign``) and the valid queries (the
            agreement statistic), or None (the codebook cannot assign new items).
        latents: ``(N, d)`` the representation the codes were cut from; oversized clusters are split
            along it (None: the item vectors when there are any, else no split).
        groups: the ``groups`` argument the quantizer codes the items with (top-level categories
            under category-guided level 1), or None.
        encoder_dims: the quantizer's encoder MLP sizes, to rebuild it when the codebook is loaded.
        info: method facts added to the build stats (e.g. ``category_guided``).
    """

    codes: np.ndarray
    codebook_sizes: tuple[int, ...]
    quantizer: FrozenQuantizer | None = None
    latents: np.ndarray | None = None
    groups: np.ndarray | None = None
    encoder_dims: list[int] | None = None
    info: dict = field(default_factory=dict)


class SIDMethod:
    """The interface of a SID method. Subclass it and implement :meth:`quantise`.

    Args:
        config: the :class:`eg_grpo.sid.build.SIDConfig` (``levels``, ``codebook_size``, ``seed``, ...).
    """

    needs_vectors: bool = True  # False: no item text encoding before `quantise` (e.g. reference SIDs)

    def __init__(self, config):
        self.config = config

    def quantise(self, inputs: SIDInputs) -> Quantised:
        """Codes every item of ``inputs``. Runs once per build, under ``config.num_threads`` torch threads."""
        raise NotImplementedError


class RQVAEMethod(SIDMethod):
    """Plain RQ-VAE (``rqvae``): an MLP encoder, residual quantisation, reconstruction loss."""

    category_guided = query_contrastive = False

    def quantise(self, inputs: SIDInputs) -> Quantised:
        config, k = self.config, self.config.codebook_size
        slices = None
        if self.category_guided:
            if inputs.tops is None:
                logger.warning("no item has a category_path: category-guided level 1 is switched off")
            else:
                slices = allocate_level1_codes(inputs.tops, k)
        groups = inputs.tops if slices is not None else None
        query_on, train_pairs, pair_args = self.query_contrastive, None, {}
        if query_on:
            train_pairs = query_click_pairs(inputs.log, "train", config.query_source)
            if inputs.encoder is None or len(train_pairs) == 0:
                logger.warning(
                    "query-item contrastive learning is switched off: %s",
                    "encoder 'none' cannot encode queries"
                    if inputs.encoder is None
                    else "no train click under a non-empty query",
                )
                query_on = False
        if query_on:
            row_of = {int(i): r for r, i in enumerate(inputs.item_ids.tolist())}
            pair_args = {
                "query_vectors": inputs.encoder.encode(
                    train_pairs["query"].tolist(), show_progress=inputs.show_progress
                ),
                "pair_items": np.asarray([row_of[int(i)] for i in train_pairs["item_id"]]),
                "pair_item_ids": train_pairs["item_id"].to_numpy(),
            }
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
        x = inputs.vectors
        model = train_rqvae(
            x, settings, list(config.hidden_dims), config.latent_dim, config.levels, k, groups, slices,
            show_progress=inputs.show_progress, **pair_args,
        )  # fmt: skip
        quantizer = FrozenQuantizer(model.encoder, list(model.codebooks), slices)
        codes, z = quantizer.codes(x, groups)
        return Quantised(
            codes,
            (k,) * config.levels,
            quantizer,
            latents=z.numpy(),
            groups=groups,
            encoder_dims=[x.shape[1], *config.hidden_dims, config.latent_dim],
            info={
                "category_guided": slices is not None,
                "query_contrastive": query_on,
                "num_train_pairs": 0 if train_pairs is None else len(train_pairs),
            },
        )


class CQSIDMethod(RQVAEMethod):
    """CQ-SID (``cq_sid``): RQ-VAE with the two switches ``category_guided`` and ``query_contrastive``."""

    def __init__(self, config):
        super().__init__(config)
        self.category_guided, self.query_contrastive = config.category_guided, config.query_contrastive


class RQKMeansMethod(SIDMethod):
    """Residual k-means on the item vectors (``rqkmeans``): no training, the latent is the vector."""

    def quantise(self, inputs: SIDInputs) -> Quantised:
        config = self.config
        torch.manual_seed(config.seed)
        codebooks = fit_residual_kmeans(
            torch.as_tensor(inputs.vectors),
            config.levels,
            config.codebook_size,
            config.kmeans_iters,
            config.seed,
        )
        quantizer = FrozenQuantizer(None, codebooks, None)
        codes, z = quantizer.codes(inputs.vectors, None)
        return Quantised(codes, (config.codebook_size,) * config.levels, quantizer, latents=z.numpy())


class ReferenceMethod(SIDMethod):
    """The dataset's own SIDs (``reference``): read from ``config.reference_sids`` or ``DATA/reference_sids.json``."""

    needs_vectors = False

    def quantise(self, inputs: SIDInputs) -> Quantised:
        config = self.config
        data_dir = inputs.data_dir
        path = config.reference_sids or (Path(data_dir) / "reference_sids.json" if data_dir else None)
        if path is None:
            raise ValueError("method 'reference' needs config.reference_sids or data_dir")
        codes, used = load_reference_sids(path, inputs.item_ids)
        if len(used) != config.levels:
            logger.warning(
                "the reference SIDs have %d levels, the config says %d; using %d",
                len(used),
                config.levels,
                len(used),
            )
        # the configured codebook size where it covers the codes (a SID token set the size of the
        # publisher's codebook, not of the codes this catalogue happens to use)
        return Quantised(codes, tuple(max(config.codebook_size, u) for u in used))


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


# short name -> method class
SID_METHODS: dict[str, type[SIDMethod]] = {
    "cq_sid": CQSIDMethod,
    "rqvae": RQVAEMethod,
    "rqkmeans": RQKMeansMethod,
    "reference": ReferenceMethod,
}


def check_method_name(name: str) -> None:
    """Raises a ValueError unless ``name`` is a built-in method or looks like a dotted path."""
    if name not in SID_METHODS and (":" not in name or not all(name.partition(":")[::2])):
        raise ValueError(
            f"unknown method '{name}'; use one of {tuple(SID_METHODS)} or your own SIDMethod subclass "
            "by a dotted path 'package.module:ClassName'"
        )


def get_sid_method(config) -> SIDMethod:
    """The method ``config.method`` names, instantiated with ``config``.

    Raises:
        ValueError: an unknown short name, or a dotted path that names no :class:`SIDMethod` subclass.
        ImportError: the dotted path's module cannot be imported.
    """
    name = config.method
    check_method_name(name)
    if name in SID_METHODS:
        return SID_METHODS[name](config)
    module_name, _, attr = name.partition(":")
    module = import_module(module_name, f"SID method {name!r}")
    cls = getattr(module, attr, None)
    if not (inspect.isclass(cls) and issubclass(cls, SIDMethod)):
        raise ValueError(
            f"SID method {name!r}: '{attr}' in {module_name} must be a subclass of eg_grpo.sid.methods.SIDMethod"
        )
    return cls(config)


def check_quantised(result: Quantised, num_items: int, method: str) -> Quantised:
    """Validates a method's result, so a user's quantiser fails with its name, not deep in the build."""
    if not isinstance(result, Quantised):
        raise TypeError(
            f"SID method {method!r}: quantise() must return a Quantised, got {type(result).__name__}"
        )
    codes = np.asarray(result.codes)
    sizes = tuple(int(k) for k in result.codebook_sizes)
    if codes.ndim != 2 or codes.shape[0] != num_items or codes.shape[1] != len(sizes):
        raise ValueError(
            f"SID method {method!r}: codes must be (num_items={num_items}, levels={len(sizes)}), got {codes.shape}"
        )
    if not np.issubdtype(codes.dtype, np.integer) or (codes < 0).any() or (codes >= np.asarray(sizes)).any():
        raise ValueError(f"SID method {method!r}: codes must be integers in [0, codebook_sizes[level])")
    if result.quantizer is not None and not isinstance(result.quantizer, FrozenQuantizer):
        raise TypeError(
            f"SID method {method!r}: quantizer must be an eg_grpo.sid.rqvae.FrozenQuantizer or None"
        )
    result.codes, result.codebook_sizes = codes.astype(np.int64), sizes
    return result
