"""SID build and assignment speed at catalogue scale; prints one JSON object.

    python benchmarks/sid_build.py                      # 100k items, CQ-SID 3 x 256
    python benchmarks/sid_build.py --num_items 20000 --epochs 5   # quick

Items get clustered random vectors (``--num_clusters`` centres in 384-d plus noise, one of 20
top-level categories per centre) and queries are noisy copies of a clicked item's vector, so the
build (CQ-SID: category-guided level 1 + query InfoNCE, oversized-cluster split) runs on vectors
given ("encoding excluded"). "Encoding included" adds the MiniLM time for the catalogue's texts,
extrapolated from the encode throughput measured on ``--encode_sample`` real-looking titles
(encoding 100k texts on 2 shared cores takes many minutes; the JSON says it is an estimate).
Assignment throughput: new items' vectors through the frozen model (``assign_vectors``).
Peak memory is the process's peak resident set size (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import pandas as pd

from eg_grpo.data.schema import SearchLog
from eg_grpo.sid.build import SIDConfig, build_codebook
from eg_grpo.sid.encoders import TextEncoder, torch_threads


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class VectorTable:
    """Encoder stand-in: text -> precomputed vector (the queries of the synthetic log)."""

    name = "benchmark-vectors"

    def __init__(self, texts, vectors):
        self.row = {t: i for i, t in enumerate(texts)}
        self.vectors = vectors

    def encode(self, texts, show_progress=True):
        return self.vectors[[self.row[t] for t in texts]]


def synthetic_catalogue(n: int, clusters: int, dim: int, n_requests: int, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    which = rng.integers(clusters, size=n)
    vectors = centres[which] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    tops = np.array([f"cat{c % 20}" for c in which], dtype=object)
    items = pd.DataFrame(
        {"item_id": np.arange(n), "title": [f"item {i}" for i in range(n)],
         "category_path": [[t, f"{t}/leaf{w % 7}"] for t, w in zip(tops, which)],
         "brand": "b", "price": 1.0}
    )  # fmt: skip
    clicked = rng.integers(n, size=n_requests)
    queries = [f"query {j}" for j in range(n_requests)]
    qvec = vectors[clicked] + 0.5 * rng.normal(size=(n_requests, dim)).astype(np.float32) / np.sqrt(dim)
    split = np.where(np.arange(n_requests) < 0.9 * n_requests, "train", "valid")
    requests = pd.DataFrame(
        {"request_id": np.arange(n_requests), "user_id": 0, "query": queries, "timestamp": np.arange(n_requests),
         "history": [[] for _ in range(n_requests)], "split": split}
    )  # fmt: skip
    impressions = pd.DataFrame(
        {
            "request_id": np.arange(n_requests),
            "item_id": clicked,
            "position": 0,
            "clicked": True,
            "purchased": False,
        }
    )
    return SearchLog(items, requests, impressions), vectors, VectorTable(queries, qvec), centres


def main(args):
    out = {"num_items": args.num_items, "config": {}}
    log, vectors, query_table, centres = synthetic_catalogue(
        args.num_items, args.num_clusters, 384, args.num_requests, args.seed
    )
    config = SIDConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_cluster_size=args.max_cluster_size,
        num_threads=args.num_threads,
        device=args.device,
    )
    out["config"] = {"method": config.method, "levels": config.levels, "codebook_size": config.codebook_size,
                     "epochs": config.epochs, "batch_size": config.batch_size, "num_threads": config.num_threads, "device": config.device,
                     "num_requests": args.num_requests}  # fmt: skip
    rss_before = _rss_mb()
    start = time.perf_counter()
    book, stats = build_codebook(log, config, item_vectors=vectors, encoder=query_table, show_progress=False)
    build_s = time.perf_counter() - start
    out["build_seconds_vectors_given"] = round(build_s, 2)
    out["rss_mb_before_build"] = round(rss_before, 1)
    out["peak_rss_mb_build"] = round(_rss_mb(), 1)
    out["stats"] = {k: stats[k] for k in ("num_sids", "cluster_size", "level_utilization", "l1_category_purity",
                                          "query_item_agreement")}  # fmt: skip

    rng = np.random.default_rng(args.seed + 1)
    which = rng.integers(len(centres), size=args.num_items)
    new = centres[which] + 0.6 * rng.normal(size=(args.num_items, 384)).astype(np.float32)
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    new_tops = np.array([f"cat{c % 20}" for c in which], dtype=object)
    for threads in (1, 2):
        with torch_threads(threads):
            book.assign_vectors(new[:1000], new_tops[:1000])  # warm-up
            start = time.perf_counter()
            sids = book.assign_vectors(new, new_tops)
            out[f"assign_items_per_s_{threads}_threads"] = round(len(new) / (time.perf_counter() - start))
    assert sids.shape == (args.num_items, config.levels)

    if args.encode_sample > 0:
        titles = [f"{c} stainless steel {n} for home office, model {i}" for i, (c, n) in
                  enumerate(zip(np.resize(["red", "blue", "black"], args.encode_sample),
                                np.resize(["kettle", "desk lamp", "notebook", "headphones"], args.encode_sample)))]  # fmt: skip
        encoder = TextEncoder("default", cache_dir="")
        with torch_threads(0):  # as the build encodes (SIDConfig.encoder_threads = 0)
            encoder.encode(titles[:32], show_progress=False)  # load + warm-up
            start = time.perf_counter()
            encoder.encode(titles, show_progress=False)
            per_s = len(titles) / (time.perf_counter() - start)
        out["encode_texts_per_s"] = round(per_s, 1)
        out["build_seconds_encoding_included_estimate"] = round(build_s + args.num_items / per_s, 1)
        out["encoding_included_is_estimate"] = True
    out["peak_rss_mb"] = round(_rss_mb(), 1)
    print(json.dumps(out))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num_items", type=int, default=100_000)
    parser.add_argument("--num_clusters", type=int, default=2000)
    parser.add_argument("--num_requests", type=int, default=100_000)
    # 100k items x 10 epochs = 1M item samples per run, more than the demo config's 20k x 30
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=2048)
    parser.add_argument("--max_cluster_size", type=int, default=50)
    parser.add_argument("--num_threads", type=int, default=1)
    parser.add_argument("--encode_sample", type=int, default=2000, help="texts to time MiniLM on (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="RQ-VAE training device (assignment is always CPU)")
    main(parser.parse_args())
