"""How stable is a SID build? The same config under tiny perturbations of its input and thread count.

Another machine's encoder differs from this one's in the last bits of its float32 vectors (other CPU
kernels, another library build). This builds one SID config several times:

- ``base``: as configured;
- ``noiseS`` / ``noiseSeE``: Gaussian noise of std ``10**-E`` (default 1e-6) added to every encoder
  vector (items and queries; draw ``S``), a stand-in for another machine's encoder;
- ``threadsN``: the RQ-VAE and k-means on ``N`` torch threads;

and prints one JSON object: per condition the SID count, cluster-size percentiles, level usage
and the query-item agreement, then the spread of the SID count. With ``--save_dir DIR`` each condition's
codebook is also written as a SID folder ``DIR/<condition>`` (its ``stage.json`` names the perturbation,
so it never passes for the configured build), ready for ``python -m eg_grpo.stages sft --sid_dir ...``:
how far the downstream figures move with the build.

    python benchmarks/sid_stability.py --config recipes/configs/demo/sids.yaml --data_dir outputs/demo/data
    python benchmarks/sid_stability.py --config recipes/configs/demo/sids.yaml --data_dir outputs/demo/data \\
        --conditions noise0 noise1 noise2 --save_dir outputs/sid_stability
    python benchmarks/sid_stability.py --config recipes/configs/tiny/sids_rqvae.yaml \\
        --data_dir outputs/tiny/data --conditions base noise0 noise0e5 noise1e5
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from trl import TrlParser

from eg_grpo.data.schema import SearchLog
from eg_grpo.io import atomic_dir, content_config, require_dir, stage_record, write_json, write_stage
from eg_grpo.sid.build import SIDConfig, build_codebook
from eg_grpo.sid.encoders import TextEncoder
from eg_grpo.stages.sids import BuildSidsArguments


class NoisyEncoder:
    """The default text encoder plus seeded Gaussian noise of std ``scale`` on every vector."""

    name = "default"

    def __init__(self, inner, seed: int, scale: float):
        self.inner, self.seed, self.scale = inner, seed, scale

    def encode(self, texts, show_progress: bool = False) -> np.ndarray:
        vectors = self.inner.encode(texts, show_progress=False)
        if self.scale:
            rng = np.random.default_rng([self.seed, len(texts)])
            vectors = vectors + self.scale * rng.standard_normal(vectors.shape)
        return np.asarray(vectors, dtype=np.float32)


def parse_condition(name: str) -> tuple[int, float, int | None]:
    """``base`` -> (0, 0, None); ``noise2`` -> (2, 1e-6, None); ``noise1e5`` -> (1, 1e-5, None); ``threads2``."""
    if name == "base":
        return 0, 0.0, None
    if name.startswith("threads"):
        return 0, 0.0, int(name[len("threads") :])
    if name.startswith("noise"):
        seed, _, exponent = name[len("noise") :].partition("e")
        return int(seed), 10.0 ** -int(exponent or 6), None
    raise ValueError(f"unknown condition {name!r}: use base, noiseS, noiseSeE or threadsN")


def save_sid_folder(folder: Path, book, stats: dict, config, data_dir: str, condition: str) -> None:
    """A SID folder as the SID stage writes it, its record naming ``condition`` (another fingerprint)."""
    data = require_dir(data_dir, "data_dir", "the folder written by recipes/make_data.py")
    record = stage_record("sids", {"sids": content_config(config), "perturbation": condition}, {"data": data})
    with atomic_dir(folder) as tmp:
        book.save(tmp / "codebook")
        write_json(tmp / "stats.json", {**stats, "perturbation": condition})
        write_stage(tmp, record, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="a SID config (recipes/configs/*/sids*.yaml)")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--cache_dir", default=None, help="embedding cache (default: the config's)")
    parser.add_argument("--conditions", nargs="+", default=["base", "noise0", "noise1", "noise2", "threads2"])
    parser.add_argument("--save_dir", default=None, help="also write each condition's SID folder here")
    args, overrides = parser.parse_known_args()
    extra = ["--cache_dir", args.cache_dir] if args.cache_dir else []
    _, config = TrlParser((BuildSidsArguments, SIDConfig)).parse_args_and_config(
        ["--config", args.config, *extra, *overrides]
    )
    log = SearchLog.load(args.data_dir)
    inner = TextEncoder(config.encoder, cache_dir=config.cache_dir)
    rows = []
    for name in args.conditions:
        seed, scale, threads = parse_condition(name)
        run_config = config if threads is None else replace(config, num_threads=threads)
        start = time.perf_counter()
        book, stats = build_codebook(
            log, run_config, encoder=NoisyEncoder(inner, seed, scale), show_progress=False
        )
        if args.save_dir:
            save_sid_folder(Path(args.save_dir) / name, book, stats, config, args.data_dir, name)
        sizes = np.unique(book.codes, axis=0, return_counts=True)[1]
        rows.append({
            "condition": name, "num_sids": stats["num_sids"],
            "cluster_size_p50_p90_p99_max": [float(np.percentile(sizes, q)) for q in (50, 90, 99)] + [int(sizes.max())],
            "singleton_sids": int((sizes == 1).sum()), "split_sids": stats["num_split_sids"],
            "level_utilization": stats["level_utilization"], "level_perplexity": stats["level_perplexity"],
            "query_item_agreement": stats["query_item_agreement"],
            "item_vectors_sha256": stats["item_vectors_sha256"], "seconds": round(time.perf_counter() - start, 1),
        })  # fmt: skip
    counts = [r["num_sids"] for r in rows]
    print(json.dumps({
        "config": args.config, "overrides": overrides, "data_dir": args.data_dir, "conditions": rows,
        "num_sids": {"min": min(counts), "max": max(counts), "spread_pct": round(100 * (max(counts) - min(counts)) / min(counts), 1)},
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
