"""Open-loop load on the recall service: Poisson arrivals at fixed rates, latency from each request's
scheduled time (so a slow answer cannot hold back the next request and hide the queue: no coordinated
omission). Loopback only, bounded in requests and time. Prints one JSON line per rate.

    python benchmarks/serve_open_loop.py --qps 10 20 40 60 --seconds 10

It builds the demo-size model and SID folder of benchmarks/serve_load.py, starts
``python -m eg_grpo.serve`` on it, sends ``qps x seconds`` requests per rate from a thread pool (beam
20, ``max_items`` 200, five random history items), and stops the service.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import build_demo_sized  # noqa: E402

from eg_grpo.serve import wait_healthy  # noqa: E402

_local = threading.local()


def _send(url: str, body: dict, due: float) -> tuple[float, int]:
    session = getattr(_local, "session", None) or requests.Session()
    _local.session = session
    delay = due - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
    status = session.post(url, json=body, timeout=60).status_code
    return (time.perf_counter() - due) * 1000, status


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--qps", type=float, nargs="+", default=[10, 20, 40])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--beam", type=int, default=20)
    parser.add_argument("--max_batch_size", type=int, default=8)
    parser.add_argument("--port", type=int, default=8134)
    args = parser.parse_args()
    model_dir, sid_dir = build_demo_sized(Path(tempfile.mkdtemp()), 20000, 2800)
    base = f"http://127.0.0.1:{args.port}"
    service = subprocess.Popen(
        [sys.executable, "-m", "eg_grpo.serve", "--model_dir", str(model_dir), "--sid_dir", str(sid_dir),
         "--port", str(args.port), "--max_batch_size", str(args.max_batch_size)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_healthy(base, timeout_s=180)
        rng = np.random.default_rng(0)
        for qps in args.qps:
            n = int(qps * args.seconds)
            dues = time.perf_counter() + 0.5 + np.cumsum(rng.exponential(1 / qps, n))
            bodies = [{"query": f"red pen {i}", "history": rng.choice(1000, 5, replace=False).tolist(),
                       "beam": args.beam, "max_items": 200} for i in range(n)]  # fmt: skip
            with ThreadPoolExecutor(64) as pool:
                results = list(pool.map(_send, [f"{base}/recall"] * n, bodies, dues))
            ms = np.array([r[0] for r in results])
            p50, p95, p99 = np.percentile(ms, [50, 95, 99])
            print(json.dumps({
                "qps": qps, "requests": n, "beam": args.beam, "max_batch_size": args.max_batch_size,
                "p50_ms": round(p50, 1), "p95_ms": round(p95, 1), "p99_ms": round(p99, 1),
                "max_ms": round(float(ms.max()), 1), "non_200": sum(s != 200 for _, s in results),
            }), flush=True)  # fmt: skip
    finally:
        service.terminate()
        service.wait(timeout=60)


if __name__ == "__main__":
    main()
