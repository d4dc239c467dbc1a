"""Open-loop load on the recall service: Poisson arrivals at fixed rates, latency from each request's
scheduled time (so a slow answer cannot hold back the next request and hide the queue: no coordinated
omission). Loopback only, bounded in requests and time. Prints one JSON line per rate.

    python benchmarks/serve_open_loop.py --qps 10 20 40 60 100 --seconds 10
    python benchmarks/serve_open_loop.py --qps 60 100 --seconds 10 --max_queued_requests 64
    python benchmarks/serve_open_loop.py --qps 5 10 20 40 --seconds 30 --beam_score constrained
    python benchmarks/serve_open_loop.py --qps 2 --seconds 2 --url http://127.0.0.1:8000  # running service

Without ``--url`` it builds the demo-size model and SID folder of benchmarks/serve_load.py, starts
``python -m eg_grpo.serve`` on it (the options given here passed on, the service's defaults
otherwise), and stops it at the end. Per rate it sends ``qps x seconds`` requests from a thread pool
(beam 20, ``max_items`` 200, five random history items) and reports, separately, the latency of the
200s (answered) and of the 503s (refused by the full queue), the count of every other status (408:
the request timeout; 500) and of client-side failures (timeout, connection error), and
``accepted_not_200``: requests the service did not refuse that still got no 200 (0 is "nothing
accepted was lost"). ``send_lag_ms`` is how late the client sent its requests: tens of ms or more means
the client, not the service, was the bottleneck (raise ``--threads``), and the row is not a
measurement of the service.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import build_demo_sized  # noqa: E402

from eg_grpo.serve import ServeConfig, wait_healthy  # noqa: E402

_local = threading.local()
# Passed on to `python -m eg_grpo.serve` when given (None: the service's default).
SERVICE_OPTIONS = (
    "max_batch_size",
    "max_ongoing_requests",
    "max_queued_requests",
    "request_timeout_s",
    "beam_score",
)


def _send(url: str, body: dict, due: float, timeout_s: float) -> tuple[float, float, int | str]:
    """(latency ms from ``due``, send lag ms, status code or "client_timeout" / "connection_error")."""
    session = getattr(_local, "session", None) or requests.Session()
    _local.session = session
    delay = due - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
    lag_ms = (time.perf_counter() - due) * 1000
    try:
        outcome: int | str = session.post(url, json=body, timeout=timeout_s).status_code
    except requests.Timeout:
        outcome = "client_timeout"
    except requests.ConnectionError:
        outcome = "connection_error"
    return (time.perf_counter() - due) * 1000, lag_ms, outcome


def _percentiles(ms: list[float]) -> dict:
    if not ms:
        return {"n": 0}
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"n": len(ms), "p50_ms": round(p50, 1), "p95_ms": round(p95, 1), "p99_ms": round(p99, 1),
            "max_ms": round(max(ms), 1)}  # fmt: skip


def summarize(results: list[tuple[float, float, int | str]], qps: float, seconds: float) -> dict:
    """One rate's row: percentiles per outcome, the counts, and how far the client fell behind."""
    outcomes = Counter(str(o) for _, _, o in results)
    ok = [ms for ms, _, o in results if o == 200]
    lags = [lag for _, lag, _ in results]
    return {
        "qps": qps,
        "requests": len(results),
        "ok_qps": round(len(ok) / seconds, 1),
        "outcomes": dict(sorted(outcomes.items())),
        "accepted_not_200": sum(n for o, n in outcomes.items() if o not in ("200", "503")),
        "ok": _percentiles(ok),
        "refused_503": _percentiles([ms for ms, _, o in results if o == 503]),
        "all": _percentiles([ms for ms, _, _ in results]),
        "send_lag_ms": {"p99": round(float(np.percentile(lags, 99)), 1), "max": round(max(lags), 1)},
    }


def start_service(args) -> tuple[subprocess.Popen, str]:
    model_dir, sid_dir = build_demo_sized(Path(tempfile.mkdtemp(prefix="serve_open_loop_")), 20000, 2800)
    cmd = [sys.executable, "-m", "eg_grpo.serve", "--model_dir", str(model_dir), "--sid_dir", str(sid_dir),
           "--port", str(args.port)]  # fmt: skip
    for name in SERVICE_OPTIONS:
        if getattr(args, name) is not None:
            cmd += [f"--{name}", str(getattr(args, name))]
    service = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return service, f"http://127.0.0.1:{args.port}"


def stop_service(service: subprocess.Popen) -> None:
    service.send_signal(signal.SIGINT)  # Ctrl-C: the service shuts Serve and its Ray instance down
    try:
        service.wait(timeout=60)
    except subprocess.TimeoutExpired:
        service.kill()
        service.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--qps", type=float, nargs="+", default=[10, 20, 40])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--beam", type=int, default=20)
    parser.add_argument("--url", default=None, help="a running service's base URL: none is started")
    parser.add_argument("--port", type=int, default=8134, help="the started service's port")
    parser.add_argument("--max_batch_size", type=int, default=None)
    parser.add_argument("--max_ongoing_requests", type=int, default=None)
    parser.add_argument("--max_queued_requests", type=int, default=None)
    parser.add_argument("--request_timeout_s", type=float, default=None)
    parser.add_argument(
        "--beam_score", default=None, help="model | constrained (the service's default: model)"
    )
    parser.add_argument("--threads", type=int, default=256, help="client threads (requests in flight)")
    parser.add_argument("--client_timeout_s", type=float, default=60)
    args = parser.parse_args()
    service = None
    if args.url is None:
        service, base = start_service(args)
        given = {n: getattr(args, n) for n in SERVICE_OPTIONS if getattr(args, n) is not None}
        effective = ServeConfig(model_dir="-", sid_dir="-", **given)  # the defaults the service resolves
        setup = {n: getattr(effective, n) for n in SERVICE_OPTIONS}
    else:
        base = args.url.rstrip("/")
        setup = {"url": base}  # its settings are its own: not known here
    try:
        wait_healthy(base, timeout_s=180)
        rng = np.random.default_rng(0)
        for qps in args.qps:
            n = int(qps * args.seconds)
            dues = time.perf_counter() + 0.5 + np.cumsum(rng.exponential(1 / qps, n))
            bodies = [{"query": f"red pen {i}", "history": rng.choice(1000, 5, replace=False).tolist(),
                       "beam": args.beam, "max_items": 200} for i in range(n)]  # fmt: skip
            with ThreadPoolExecutor(args.threads) as pool:
                results = list(
                    pool.map(_send, [f"{base}/recall"] * n, bodies, dues, [args.client_timeout_s] * n)
                )
            row = {**summarize(results, qps, args.seconds), "beam": args.beam, **setup}
            print(json.dumps(row), flush=True)
            time.sleep(1.0)  # the queue drains before the next rate
    finally:
        if service is not None:
            stop_service(service)


if __name__ == "__main__":
    main()
