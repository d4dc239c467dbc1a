"""SID methods behind one interface: the built-ins build the same codebooks as before the registry,
and a user's quantiser plugs in by dotted path."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from trl import TrlParser

from eg_grpo.sid.build import SIDConfig, build_codebook
from eg_grpo.sid.encoders import TextEncoder
from eg_grpo.sid.methods import SID_METHODS, SIDMethod, get_sid_method
from eg_grpo.stages.sids import BuildSidsArguments

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "configs"


def _fingerprint(book) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(book.item_ids, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(book.codes, dtype=np.int64).tobytes())
    digest.update(json.dumps(list(book.codebook_sizes)).encode())
    return digest.hexdigest()[:16]


# The tiny simulator log built with each shipped tiny SID config (real MiniLM encoder, 1 thread):
# (config, overrides) -> (#SIDs, codebook fingerprint). Computed with the build as it was before
# SID methods moved behind a registry; the refactor must not move a single code.
SHIPPED = {
    ("sids", ()): (233, "d40b43e2fab2844e"),
    ("sids_rqvae", ()): (296, "5559e6283c04a511"),
    ("sids_rqkmeans", ()): (264, "7028fbaf1111bf41"),
    ("sids", ("--category_guided", "false")): (207, "8c8a7caa0cd04cf1"),
    ("sids", ("--query_contrastive", "false")): (189, "745023c2975e29ed"),
}
TINY_VECTORS_SHA256 = "6a05b67e89e7dd30"  # MiniLM vectors of the tiny items (description_chars 0)


@pytest.mark.parametrize(
    "name, overrides", list(SHIPPED), ids=lambda v: " ".join(v) if isinstance(v, tuple) else v
)
def test_shipped_tiny_configs_build_the_same_codebook(name, overrides, tiny_log, sid_cache):
    _, config = TrlParser((BuildSidsArguments, SIDConfig)).parse_args_and_config(
        ["--config", str(CONFIGS / "tiny" / f"{name}.yaml"), "--cache_dir", str(sid_cache), *overrides]
    )
    encoder = TextEncoder("default", cache_dir=sid_cache)
    book, stats = build_codebook(tiny_log, config, encoder=encoder, show_progress=False)
    assert (stats["num_sids"], _fingerprint(book)) == SHIPPED[(name, overrides)]
    assert (
        stats["item_vectors_sha256"] == TINY_VECTORS_SHA256
    )  # else the encoder's output moved, not the code


def test_every_builtin_is_a_method():
    assert set(SID_METHODS) == {"cq_sid", "rqvae", "rqkmeans", "reference"}
    assert all(issubclass(cls, SIDMethod) for cls in SID_METHODS.values())


def test_a_user_quantiser_by_dotted_path(syn_log):
    config = SIDConfig(method="user_quantiser:LeafRankQuantiser", codebook_size=16, max_cluster_size=0)
    assert type(get_sid_method(config)).__name__ == "LeafRankQuantiser"
    book, stats = build_codebook(syn_log, config, show_progress=False)
    paths = syn_log.items["category_path"].map(tuple)
    leaves = {p: i for i, p in enumerate(sorted(set(paths)))}
    row = 37
    assert book.sid_of(syn_log.items["item_id"].iloc[row])[1:] == (leaves[paths.iloc[row]] % 16, row % 16)
    assert book.method == "user_quantiser:LeafRankQuantiser" and book.quantizer is None
    assert stats["category_guided"] and stats["l1_category_purity"] == 1.0
    assert stats["query_item_agreement"] is None  # no quantiser to code the queries with
    # no latents and no vectors: nothing to split along, the codes stay as the method gave them
    capped, _ = build_codebook(
        syn_log, SIDConfig(method=config.method, codebook_size=16), show_progress=False
    )
    assert np.array_equal(capped.codes, book.codes)


def test_bad_methods_are_clear_errors(syn_log):
    with pytest.raises(ValueError, match="unknown method 'tiger'.*package.module:ClassName"):
        SIDConfig(method="tiger")
    with pytest.raises(ImportError, match="cannot import module 'no_such_module'"):
        build_codebook(syn_log, SIDConfig(method="no_such_module:Q"))
    with pytest.raises(ValueError, match="must be a subclass of eg_grpo.sid.methods.SIDMethod"):
        build_codebook(syn_log, SIDConfig(method="user_quantiser:NotAMethod"))
    with pytest.raises(
        ValueError, match=r"'user_quantiser:WrongShape'.*codes must be \(num_items=480, levels=3\)"
    ):
        build_codebook(syn_log, SIDConfig(method="user_quantiser:WrongShape"))
