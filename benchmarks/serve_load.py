"""Load test of the HTTP recall service (Ray Serve) with locust, headless, loopback only. Prints JSON.

    python benchmarks/serve_load.py                                  # the grid of docs/serving.md
    python benchmarks/serve_load.py --batch_sizes 8 --beams 20 --offered_qps 10 --seconds 10

It builds a model of the demo's size (a random-weight 4-layer, 256-wide Qwen2, ``TINY_PRESETS["demo"]``)
and a random SID folder (20,000 items on ~2,800 SIDs, 3 levels x 64 codes, as the demo's CQ-SID gives),
starts the service once, and per max batch size redeploys it; per beam and offered load it runs
locust for ``--seconds`` (users x a Poisson rate each, see serve_locustfile.py: the offered load
holds while latency is short next to a user's mean wait) and reports latency percentiles (ms), the achieved QPS and the non-200 share. A last row
loads ``/healthz`` (proxy + replica, no model): the serving stack's own cost beside the model's.
Random weights decode as fast as trained ones: beam search costs the same whatever the weights.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

LOCUSTFILE = Path(__file__).with_name("serve_locustfile.py")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_demo_sized(root: Path, n_items: int, n_sids: int, seed: int = 0) -> tuple[Path, Path]:
    """A saved demo-sized model with 3 x 64 SID tokens and a SID folder of ``n_items`` on ``n_sids`` SIDs."""
    from eg_grpo.modeling import build_tiny_model_and_tokenizer
    from eg_grpo.sid.codebook import SIDCodebook

    rng = np.random.default_rng(seed)
    words = ["red", "blue", "cotton", "leather", "running", "shoes", "shirt", "bag", "phone", "case", "lamp"]
    texts = [" ".join(rng.choice(words, size=rng.integers(2, 8))) for _ in range(2000)]
    sizes = (64, 64, 64)
    model, tokenizer, _ = build_tiny_model_and_tokenizer(texts, sizes, "demo")
    model_dir, sid_dir = root / "model", root / "sids"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    keys = rng.choice(64**3, n_sids, replace=False)
    sids = np.stack([keys // 64**2, keys // 64 % 64, keys % 64], axis=1)
    codes = np.concatenate([sids, sids[rng.integers(0, n_sids, n_items - n_sids)]])  # every SID used
    SIDCodebook(sizes, np.arange(n_items), codes, method="reference").save(sid_dir / "codebook")
    return model_dir, sid_dir


def run_locust(
    url: str, path: str, beam: int, qps: float, users: int, seconds: int, out: Path, tag: str = ""
) -> dict:
    prefix = out / f"{path.strip('/')}{tag}_{beam}_{qps}"  # the locust CSVs stay for a look at failures
    env = {**os.environ, "SERVE_PATH": path, "SERVE_BEAM": str(beam), "SERVE_RATE": str(qps / users)}
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
           "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--csv", str(prefix), "--only-summary",
           "--stop-timeout", "5", "--exit-code-on-error", "0"]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, timeout=seconds + 60, capture_output=True)
    with open(f"{prefix}_stats.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    n = int(row["Request Count"])
    return {
        "offered_qps": qps,
        "achieved_qps": round(float(row["Requests/s"]) * (1 - int(row["Failure Count"]) / max(n, 1)), 1),
        "requests": n,
        "errors": int(row["Failure Count"]),
        "p50_ms": float(row["50%"]),
        "p95_ms": float(row["95%"]),
        "p99_ms": float(row["99%"]),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--beams", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--offered_qps", type=float, nargs="+", default=[5, 40])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--n_items", type=int, default=20000)
    parser.add_argument("--n_sids", type=int, default=2800)
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--replica_cpus", type=float, default=1.0)
    parser.add_argument("--max_queued_requests", type=int, default=256,
                        help="the proxy's queue; 256 (not the service's default of max_batch_size) is what "
                        "docs/serving.md's closed-loop grid was measured with, so shedding does not cut it short")  # fmt: skip
    args = parser.parse_args(argv)

    from eg_grpo.serve import ServeConfig, start, stop, wait_healthy

    root = Path(tempfile.mkdtemp(prefix="serve_load_"))
    model_dir, sid_dir = build_demo_sized(root, args.n_items, args.n_sids)
    results, url = [], None
    for batch in args.batch_sizes:
        config = ServeConfig(model_dir=str(model_dir), sid_dir=str(sid_dir), port=args.port, max_batch_size=batch,
                             max_queued_requests=args.max_queued_requests, request_timeout_s=30, num_cpus=2, device="cpu",
                             replica_cpus=args.replica_cpus)  # fmt: skip
        url = start(config)  # redeploys the app in place for a new batch size
        wait_healthy(url)  # bounded wait for the replica to load the model
        for beam in args.beams:
            for qps in args.offered_qps:
                row = {"max_batch_size": batch, "beam": beam,
                       **run_locust(url, "/recall", beam, qps, args.users, args.seconds, root, f"_b{batch}")}  # fmt: skip
                log(json.dumps(row))
                results.append(row)
    for qps in args.offered_qps:
        row = {"path": "/healthz", **run_locust(url, "/healthz", 0, qps, args.users, args.seconds, root)}
        log(json.dumps(row))
        results.append(row)
    stop()
    report = {"model": "Qwen2 4 layers x 256 (demo size), random weights", "n_items": args.n_items,
              "n_sids": args.n_sids, "seconds_per_point": args.seconds, "users": args.users,
              "cpus": os.cpu_count(), "results": results}  # fmt: skip
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
