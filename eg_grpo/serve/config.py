"""The service's settings, shared by the command line, the deployment and the tests (no Ray import)."""

from __future__ import annotations

import argparse
import re
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
        max_queued_requests: requests Serve's HTTP proxy holds for the replicas once each holds
            ``max_ongoing_requests``; one more is answered 503 at once, before it reaches a replica.
            Size it to the latency budget: a request accepted last waits for about
            ``(num_replicas * max_ongoing_requests + max_queued_requests) / sustained QPS``, so
            ``max_queued_requests ~ budget_s * sustained_qps - num_replicas * max_ongoing_requests``,
            floored at ``max_batch_size``. None (the default): ``max_batch_size``, one batch more
            than the replica holds (the floor: one replica already holds two batches, one running
            and one forming, and at beam 20 on the demo model a batch of 8 takes ~0.1 s, so a
            budget of a few tenths of a second leaves no room above it). ``-1``: unbounded, which
            under overload turns into waits of seconds that end in 408s.
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
    max_queued_requests: int | None = None
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
        if self.max_queued_requests is None:
            self.max_queued_requests = self.max_batch_size
        if self.max_queued_requests < 1 and self.max_queued_requests != -1:
            raise ValueError(
                f"max_queued_requests must be >= 1 (or -1 for an unbounded queue), got {self.max_queued_requests}"
            )
        if self.request_timeout_s <= 0 or self.batch_wait_timeout_s < 0:
            raise ValueError("request_timeout_s must be > 0 and batch_wait_timeout_s >= 0")

    @classmethod
    def from_args(cls, argv: list[str] | None = None) -> ServeConfig:
        """Parses ``--name value`` options, one per field (``--model_dir`` and ``--sid_dir`` required);
        ``--help`` shows each field's entry of the docstring above."""
        parser = argparse.ArgumentParser(
            prog="python -m eg_grpo.serve",
            description="The SID recall channel as an HTTP service (Ray Serve).",
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        helps = _field_help(cls.__doc__ or "")
        for f in fields(cls):
            kind = {"int": int, "float": float, "int | None": int}.get(str(f.type), str)
            required = f.name in ("model_dir", "sid_dir")
            parser.add_argument(
                f"--{f.name}", type=kind, required=required, default=argparse.SUPPRESS if required else f.default,
                help=helps.get(f.name, "").replace("%", "%%"),
            )  # fmt: skip
        return cls(**vars(parser.parse_args(argv)))


def _field_help(doc: str) -> dict[str, str]:
    """``{name: text}`` from a Google-style ``Args:`` block (entry lines at one indent, continuations deeper)."""
    helps: dict[str, str] = {}
    lines = doc.split("Args:", 1)[-1].splitlines()
    indent = next((len(x) - len(x.lstrip()) for x in lines if x.strip()), 0)
    name = None
    for line in lines:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if depth < indent:
            break
        if depth == indent:
            name, _, text = line.strip().partition(":")
            helps[name] = text.strip()
        elif name is not None:
            helps[name] += " " + line.strip()
    # reST roles and literals read as plain text at the terminal: :class:`~a.b.C` -> C, ``x`` -> x
    plain = {k: re.sub(r":\w+:`~?(?:[\w.]+\.)?(\w+)`", r"\1", v) for k, v in helps.items()}
    return {k: v.replace("``", "") for k, v in plain.items()}
