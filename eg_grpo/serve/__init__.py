"""The recall channel as an HTTP service on Ray Serve.

    python -m eg_grpo.serve --model_dir outputs/demo/sft --sid_dir outputs/demo/sids --port 8000
    curl -s 127.0.0.1:8000/recall -d '{"query": "red pen", "history": [12, 873], "beam": 20}'

One :class:`~eg_grpo.eval.recall.RecallChannel` per replica answers ``POST /recall``; requests are
batched by Ray Serve's ``@serve.batch`` into one ``recall_scored_batch`` call. See ``docs/serving.md``
for the API, the status codes and the measured latency. Ray is an optional dependency (the ``serve``
extra): this module imports without it, :func:`start` needs it.

May import: eg_grpo.decoding, eg_grpo.eval
"""

import time
import urllib.error
import urllib.request

from eg_grpo.serve.config import ServeConfig

__all__ = ["ServeConfig", "start", "stop", "wait_healthy"]


def start(config: ServeConfig) -> str:
    """Starts Ray (if needed), Serve's HTTP proxy and the recall app; returns the base URL.

    Raises:
        ImportError: Ray Serve is not installed (``pip install -e ".[serve]"``).
    """
    from eg_grpo.serve.app import start as _start

    return _start(config)


def stop() -> None:
    """Shuts the Serve app and proxy down (Ray itself stays up when the caller started it)."""
    from eg_grpo.serve.app import stop as _stop

    _stop()


def wait_healthy(url: str, timeout_s: float = 120.0) -> None:
    """Waits until ``GET url/healthz`` answers 200 (the replica has loaded its model), polling twice a second.

    Raises:
        TimeoutError: no healthy answer within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not listening yet, or the replica is still loading
        time.sleep(0.5)
    raise TimeoutError(f"{url}/healthz did not answer 200 within {timeout_s:.0f} s")
