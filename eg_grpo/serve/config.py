"""The service's settings, shared by the command line, the deployment and the tests (no Ray import)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

from eg_grpo.decoding.generate import check_beam_score
from eg_grpo.eval.recall import DEFAULT_MAX_BEAM, DEFAULT_MAX_QUERY_TOKENS


@dataclass
class ServeConfig:
    """Settings of ``python -m eg_grpo.serve``.

    Args:
        model_dir: the trained model folder (as for :class:`~eg_grpo.eval.recall.RecallChannel`).
        sid_dir: the SID folder it serves.
        host: the HTTP proxy's address (loopback by default: put a gateway in front to expose it).
        port: the HTTP proxy's port.
        max_batch_size: most requests in one ``@serve.batch`` call (1 turns batching off).
        batch_wait_timeout_s: how long a batch waits to fill after its first request.
        max_ongoing_requests: requests a replica holds at once (running or waiting for a batch);
            None: ``2 * max_batch_size``, so a full batch can form while the previous one runs.
        max_queued_requests: requests waiting for a replica beyond those; one more is answered 503
            at once (``-1``: unbounded, which under overload turns into waits that end in timeouts).
        request_timeout_s: a request not answered in this time gets 408 from the proxy.
        max_beam: the largest ``beam`` a request may ask for.
        max_query_tokens: queries are cut to this many tokens.
        max_body_bytes: a larger request body is refused (413) before it is parsed.
        num_replicas: model replicas (each holds a copy of the model).
        replica_cpus: CPUs Ray reserves per replica; also its torch thread count.
        num_cpus: CPUs of the local Ray instance this command starts (None: all).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        refresh_token: the ``x-admin-token`` a ``POST /refresh`` must carry; None turns refresh off.
        beam_score: what ranks the beams, ``"model"`` or ``"constrained"`` (``RecallChannel``'s ``beam_score``).
    """

    model_dir: str
    sid_dir: str
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = 8
    batch_wait_timeout_s: float = 0.005
    max_ongoing_requests: int | None = None
    max_queued_requests: int = 64
    request_timeout_s: float = 10.0
    max_beam: int = DEFAULT_MAX_BEAM
    max_query_tokens: int = DEFAULT_MAX_QUERY_TOKENS
    max_body_bytes: int = 65536
    num_replicas: int = 1
    replica_cpus: float = 1.0
    num_cpus: int | None = None
    device: str = "auto"
    refresh_token: str | None = None
    beam_score: str = "model"

    def __post_init__(self):
        check_beam_score(self.beam_score)  # at the command line, before Ray starts
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_ongoing_requests is None:
            self.max_ongoing_requests = 2 * self.max_batch_size
        if self.max_ongoing_requests < 1:
            raise ValueError(f"max_ongoing_requests must be >= 1, got {self.max_ongoing_requests}")
        if self.request_timeout_s <= 0 or self.batch_wait_timeout_s < 0:
            raise ValueError("request_timeout_s must be > 0 and batch_wait_timeout_s >= 0")

    @classmethod
    def from_args(cls, argv: list[str] | None = None) -> ServeConfig:
        """Parses ``--name value`` options, one per field (``--model_dir`` and ``--sid_dir`` required)."""
        parser = argparse.ArgumentParser(
            prog="python -m eg_grpo.serve",
            description="The SID recall channel as an HTTP service (Ray Serve).",
        )
        for f in fields(cls):
            kind = {"int": int, "float": float, "int | None": int}.get(str(f.type), str)
            required = f.name in ("model_dir", "sid_dir")
            parser.add_argument(
                f"--{f.name}", type=kind, required=required, default=None if required else f.default
            )
        return cls(**vars(parser.parse_args(argv)))
