"""Speed of the search-funnel arena (all non-generative arms); prints one JSON object.

Usage:
    python benchmarks/arena.py --data_dir outputs/demo/data --ranker_dir outputs/demo/ranker
    python benchmarks/arena.py --data_dir outputs/demo/data --num_requests 5000 --threads 1

Runs control vs + bm25, + dense, + item_cf and + oracle over ``--num_requests`` requests of the
test split, both budget modes, the legacy ranking stage (and the learned one with
``--ranker_dir``), on ``--threads`` CPU threads. Reported (seconds, wall and this process's CPU):

- ``oracle_seconds``: loading the data folder and rebuilding its users;
- ``index_seconds_cold`` / ``index_seconds_warm``: building the channel indexes (bm25s, faiss,
  implicit; dense also encodes the item texts unless the encoder's cache has them) and loading
  them back from the index cache;
- ``play_seconds``: recall for every request and channel + every arm's funnel (what a rerun with
  warm indexes costs), with ``recall_ms_per_request`` per channel;
- ``total_seconds``: all of it, cold.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--ranker_dir", default=None)
    parser.add_argument("--num_requests", type=int, default=5000)
    parser.add_argument("--quota", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    cli = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(cli.threads)
    import faiss
    import torch

    torch.set_num_threads(cli.threads)
    faiss.omp_set_num_threads(cli.threads)

    from eg_grpo.arena import ArenaArguments
    from eg_grpo.arena.oracle import Oracle
    from eg_grpo.arena.run import build_channels, play_arena
    from eg_grpo.data.schema import SearchLog

    q = cli.quota
    with tempfile.TemporaryDirectory() as tmp:
        args = ArenaArguments(
            data_dir=cli.data_dir, output_dir=f"{tmp}/arena", ranker_dir=cli.ranker_dir,
            max_requests=cli.num_requests, channels=[f"bm25:{q}", f"dense:{q}", f"item_cf:{q}", f"oracle:{q}"],
            ranking_stages=["legacy", "learned"] if cli.ranker_dir else ["legacy"],
        )  # fmt: skip
        args.validate()
        wall, cpu = time.perf_counter(), _cpu()
        log = SearchLog.load(cli.data_dir)
        oracle = Oracle.from_data_dir(cli.data_dir, log)
        ranker = None
        if cli.ranker_dir:
            from reward_models.ranker import RankingSimulator

            ranker = RankingSimulator.load(cli.ranker_dir, log)
        t_oracle = time.perf_counter()
        build_channels(args, oracle)
        t_cold = time.perf_counter()
        channels = build_channels(args, oracle)
        t_warm = time.perf_counter()
        results = play_arena(args, oracle, channels, ranker)
        t_play = time.perf_counter()
    out = {
        "simulated": True,
        "data_dir": cli.data_dir,
        "num_requests": results["num_requests"],
        "arms_per_stage_and_mode": len(args.added_quotas()) + 1,
        "ranking_stages": args.ranking_stages,
        "budget_modes": args.budget_modes,
        "threads": cli.threads,
        "oracle_seconds": round(t_oracle - wall, 2),
        "index_seconds_cold": round(t_cold - t_oracle, 2),
        "index_seconds_warm": round(t_warm - t_cold, 2),
        "play_seconds": round(t_play - t_warm, 2),
        "total_seconds": round(t_play - wall, 2),
        "cpu_seconds": round(_cpu() - cpu, 2),
        "recall_ms_per_request": {
            n: round(c["latency_ms"]["p50"], 3) for n, c in results["channels"].items()
        },
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
