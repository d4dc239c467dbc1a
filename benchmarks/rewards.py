"""Speed of the ranking-simulator rewards on (request, SID) pairs; prints one JSON object.

Usage:
    python benchmarks/rewards.py                                   # demo-size log simulated in memory
    python benchmarks/rewards.py --data_dir DATA --ranker_dir RANKER --sid_dir SIDS

Without ``--ranker_dir`` a ranker is trained first (logistic, ~20 s); without ``--sid_dir`` the
SIDs are category-aligned clusters of at most ``--cluster_size`` items (level 1 = top category,
level 2 = leaf, level 3 = chunk). Batches look like GRPO's: ``--requests_per_batch`` requests ×
``--group`` distinct sampled SIDs each. The caches (decoded SIDs, scored pairs) are cleared before
every batch, so each pair is decoded and scored from scratch. Reported:

- ``scores_per_second``: (request, SID) pairs per second through one objective (``ctr``);
- ``scores_per_second_all_objectives``: pairs per second for relevance + ctr + cvr + gmv on the
  same batch (the first call scores all four, the others read the cache);
- ``scores_per_cpu_second``: as ``scores_per_second``, per second of this process's CPU time
  (steadier on a shared machine);
- ``item_scores_per_second``: (request, item) rows per second inside the clusters.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from eg_grpo.data.schema import SearchLog
from eg_grpo.modeling import add_sid_tokens, build_tiny_tokenizer
from reward_models import RewardContext, build_reward_funcs
from reward_models.ranker import RankerConfig, RankingSimulator


def category_codes(items, cluster_size: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    """``(N, 3)`` SIDs: top category, leaf within the top, chunk of ``cluster_size`` items within the leaf."""
    paths = items["category_path"].map(lambda p: tuple(p))
    top = paths.map(lambda p: p[0] if p else "")
    top_id = top.astype("category").cat.codes.to_numpy()
    leaf_id = np.zeros(len(items), dtype=np.int64)
    chunk = np.zeros(len(items), dtype=np.int64)
    for t in np.unique(top_id):
        rows = np.nonzero(top_id == t)[0]
        leaves = paths.iloc[rows].astype("category").cat.codes.to_numpy()
        leaf_id[rows] = leaves
        for leaf in np.unique(leaves):
            members = rows[leaves == leaf]
            chunk[members] = np.arange(len(members)) // cluster_size
    codes = np.stack([top_id, leaf_id, chunk], axis=1).astype(np.int64)
    return codes, tuple(int(c.max()) + 1 for c in codes.T)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data_dir", default=None, help="search log folder; default: simulate the demo preset"
    )
    parser.add_argument("--ranker_dir", default=None, help="folder written by recipes/train_ranker.py")
    parser.add_argument("--sid_dir", default=None, help="folder written by recipes/build_sids.py")
    parser.add_argument("--cluster_size", type=int, default=8)
    parser.add_argument("--requests_per_batch", type=int, default=64)
    parser.add_argument("--group", type=int, default=16)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.data_dir:
        log = SearchLog.load(args.data_dir)
    else:
        from eg_grpo.data.simulator import SimulatorConfig, simulate

        log = simulate(SimulatorConfig.preset("demo"))
    if args.sid_dir:
        from eg_grpo.sid.codebook import SIDCodebook

        codebook = SIDCodebook.load(os.path.join(args.sid_dir, "codebook"))
    else:
        from eg_grpo.sid.codebook import SIDCodebook

        codes, sizes = category_codes(log.items, args.cluster_size)
        codebook = SIDCodebook(sizes, log.items["item_id"].to_numpy(), codes, method="reference")
    tokenizer = build_tiny_tokenizer(log.items["title"].head(2000).tolist(), vocab_size=512)
    vocab = add_sid_tokens(None, tokenizer, codebook.codebook_sizes)
    ranker_dir = args.ranker_dir
    train_seconds = None
    if ranker_dir is None:
        import tempfile

        ranker_dir = tempfile.mkdtemp(prefix="bench_ranker_")
        start = time.perf_counter()
        RankingSimulator.fit(log, RankerConfig()).save(ranker_dir)
        train_seconds = round(time.perf_counter() - start, 1)
    context = RewardContext(codebook=codebook, vocab=vocab, log=log, ranker_dir=ranker_dir)
    funcs, _ = build_reward_funcs([{"name": n} for n in ("relevance", "ctr", "cvr", "gmv")], context)
    scorer = context._scorers[("max", 3)]

    rng = np.random.default_rng(args.seed)
    request_ids = log.split("train")["request_id"].to_numpy()
    sids = codebook.valid_sids()
    batches = []
    for _ in range(args.batches):
        reqs = rng.choice(request_ids, args.requests_per_batch, replace=False)
        picks = np.concatenate([rng.choice(len(sids), args.group, replace=False) for _ in reqs])
        batches.append(
            {
                "request_id": np.repeat(reqs, args.group).tolist(),
                "completion_ids": [vocab.encode(tuple(int(c) for c in sids[k])) for k in picks],
            }
        )
    sizes = np.diff(scorer.clusters.offsets)

    def run(objectives) -> tuple[float, float]:
        start, cpu = time.perf_counter(), time.process_time()
        for batch in batches:
            scorer._cache.clear()
            context._decoded.clear()
            n = len(batch["completion_ids"])
            for fn in objectives:
                fn(prompts=[""] * n, completions=[""] * n, **batch)
        return time.perf_counter() - start, time.process_time() - cpu

    run(funcs[1:2])  # warm-up (first predict folds the linear heads, allocations)
    pairs = args.batches * args.requests_per_batch * args.group
    (one, one_cpu), (every, _) = run(funcs[1:2]), run(funcs)
    batch_items = [
        int(sizes[scorer.clusters.cluster_ids(vocab.decode_batch(b["completion_ids"]))].sum())
        for b in batches
    ]
    result = {
        "scores_per_second": round(pairs / one),
        "scores_per_second_all_objectives": round(pairs / every),
        "scores_per_cpu_second": round(pairs / one_cpu),  # less sensitive to other jobs on the machine
        "item_scores_per_second": round(sum(batch_items) / one),
        "pairs": pairs,
        "batch_pairs": args.requests_per_batch * args.group,
        "mean_cluster_size": round(float(sizes.mean()), 2),
        "num_sids": int(len(sids)),
        "num_items": int(len(log.items)),
        "model_type": context.ranker().config.model_type,
        "ranker_train_seconds": train_seconds,
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
