"""The Ray Serve deployment: HTTP in front of :class:`~eg_grpo.eval.recall.RecallChannel`.

A request is checked in full (JSON shape and types here, then ``RecallChannel.check_request``) before
it joins a batch, so a bad one is a 4xx that never reaches the model and never fails the batch it
would have joined. The batch itself is Ray Serve's ``@serve.batch``; the model runs in a worker thread
so the replica's event loop keeps answering ``/healthz`` and checking requests while it computes.
Back-pressure is Ray Serve's too. A replica takes at most ``max_ongoing_requests``; beyond those, the
HTTP proxy's router holds at most ``max_queued_requests`` waiting for a replica, and raises
``BackPressureError`` for the next one, which the proxy answers 503 at once, without a replica seeing
it (``ray/serve/_private/router.py``, ``wrap_request_assignment``; ``http_util.get_http_response_status``).
A request not answered within ``request_timeout_s`` (or its ``x-request-timeout-seconds`` header) is
answered 408 and cancelled (``proxy_response_generator.py``); a model call it joined still runs.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures' annotations
# (`request: Request`) as objects when Serve wraps the class.
import asyncio
import hmac
import logging
import os
import threading
import time
from collections import defaultdict
from dataclasses import asdict

import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve

from eg_grpo.serve.config import ServeConfig

logger = logging.getLogger(__name__)

APP_NAME = "recall"
# A JSON history longer than this is refused while parsing: the channel reads only the newest
# 4 * max_history ids, and a million-id list would cost its parse before that cut.
MAX_HISTORY_IDS = 1000

api = FastAPI(title="eg_grpo recall", docs_url=None, redoc_url=None, openapi_url=None)


class RecallRequest(BaseModel):
    """The body of ``POST /recall``; strict, so ``"3"`` or ``2.5`` is never taken for a beam of 3 or 2."""

    model_config = ConfigDict(strict=True, extra="forbid")

    query: str
    history: list[int] = Field(default_factory=list, max_length=MAX_HISTORY_IDS)
    profile: str | dict[str, str | int | float] | None = None
    beam: int = 20
    max_items: int = 200


class RefreshRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    sid_dir: str


def _error(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _validation_error(err: ValidationError) -> JSONResponse:
    # Pydantic's own report, cut to what a caller needs: where and why (the input may be huge).
    details = [{"field": ".".join(map(str, e["loc"])), "reason": e["msg"]} for e in err.errors()[:10]]
    reason = "; ".join(f"{d['field'] or 'body'}: {d['reason']}" for d in details)
    return _error(422, f"invalid request: {reason}", details=details)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it passes ``limit`` bytes (read in chunks: a declared length can lie)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


@serve.deployment(name="RecallService")
@serve.ingress(api)
class RecallService:
    """One replica: a RecallChannel, a batcher and the HTTP routes."""

    def __init__(self, config: dict, model_delay_s: float = 0.0):
        """``model_delay_s``: seconds added to every model call, for tests that overload a tiny model
        (0 when served: ``build_app`` and the command line never set it)."""
        import torch

        from eg_grpo.eval.recall import RecallChannel

        self.config = ServeConfig(**config)
        # Ray pins OMP threads to the replica's CPUs; torch is told the same so replicas do not fight.
        torch.set_num_threads(max(1, int(self.config.replica_cpus)))
        self.channel = RecallChannel(
            self.config.model_dir,
            self.config.sid_dir,
            device=self.config.device,
            batch_size=self.config.max_batch_size,
            max_query_tokens=self.config.max_query_tokens,
            max_beam=self.config.max_beam,
            beam_score=self.config.beam_score,
        )
        self._recall.set_max_batch_size(self.config.max_batch_size)
        self._recall.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)
        self.model_delay_s = model_delay_s
        self.stats = {"requests": 0, "refused": 0, "batches": 0, "model_requests": 0, "refreshes": 0}
        self._stats_lock = threading.Lock()

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    @api.get("/healthz")
    async def healthz(self) -> dict:
        sid_dir = self.channel._catalogue.sid_dir
        return {
            "status": "ok",
            "sid_dir": None if sid_dir is None else str(sid_dir),
            "items": len(self.channel.codebook.item_ids),
            "max_beam": self.channel.max_beam,
            "beam_score": self.channel.beam_score,
            **self.stats,
        }

    @api.post("/recall")
    async def recall(self, request: Request):
        self._count("requests")
        body = await _read_body(request, self.config.max_body_bytes)
        if body is None:
            self._count("refused")
            return _error(413, f"request body over {self.config.max_body_bytes} bytes")
        try:
            req = RecallRequest.model_validate_json(body)
        except ValidationError as err:
            self._count("refused")
            return _validation_error(err)
        try:  # what the channel would refuse, refused before the request can join a batch
            self.channel.check_request(req.query, req.history, req.beam, req.max_items, req.profile,
                                       known_history=True)  # fmt: skip
        except (TypeError, ValueError) as err:
            self._count("refused")
            return _error(422, f"invalid request: {err}")
        items = await self._recall(req)
        return {
            "items": [item for item, _, _ in items],
            "sids": [list(sid) for _, sid, _ in items],
            "scores": [score for _, _, score in items],
        }

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def _recall(self, requests: list[RecallRequest]) -> list[list]:
        # Set per replica in __init__ (set_max_batch_size); the decorator's values are placeholders.
        self._count("batches")
        self._count("model_requests", len(requests))
        return await asyncio.to_thread(self._answer, requests)

    def _answer(self, requests: list[RecallRequest]) -> list[list]:
        """One ``recall_scored_batch`` call per distinct beam in the batch (beam search runs one width
        per call); each group asks for its largest ``max_items`` and every answer is cut to its own,
        which gives the same items as asking for that ``max_items`` alone (expansion is a prefix)."""
        if self.model_delay_s > 0:
            time.sleep(self.model_delay_s)  # a slow model, in the worker thread like a real one
        groups = defaultdict(list)
        for i, req in enumerate(requests):
            groups[req.beam].append(i)
        out: list[list] = [[] for _ in requests]
        for beam, rows in groups.items():
            answers = self.channel.recall_scored_batch(
                [requests[i].query for i in rows],
                [requests[i].history for i in rows],
                beam=beam,
                max_items=max(requests[i].max_items for i in rows),
                profiles=[requests[i].profile for i in rows],
            )
            for i, answer in zip(rows, answers):
                out[i] = answer[: requests[i].max_items]
        return out

    @api.post("/refresh")
    async def refresh(self, request: Request):
        token = self.config.refresh_token
        if token is None:
            return _error(403, "refresh is off: start the service with --refresh_token to allow it")
        if not hmac.compare_digest(request.headers.get("x-admin-token", ""), token):
            return _error(403, "refresh needs the x-admin-token header the service was started with")
        body = await _read_body(request, self.config.max_body_bytes)
        if body is None:
            return _error(413, f"request body over {self.config.max_body_bytes} bytes")
        try:
            req = RefreshRequest.model_validate_json(body)
        except ValidationError as err:
            return _validation_error(err)
        try:  # in a thread: loading a catalogue must not stall the requests this replica answers meanwhile
            await asyncio.to_thread(self.channel.refresh, req.sid_dir)
        except (OSError, ValueError) as err:
            return _error(409, f"refresh refused, still serving the previous SIDs: {err}")
        self._count("refreshes")
        return await self.healthz()


def build_app(config: ServeConfig, model_delay_s: float = 0.0):
    """The bound Serve application for ``config`` (deployment options come from it); ``model_delay_s``
    slows every model call, for tests only (see ``RecallService``)."""
    return RecallService.options(
        num_replicas=config.num_replicas,
        max_ongoing_requests=config.max_ongoing_requests,
        max_queued_requests=config.max_queued_requests,
        ray_actor_options={"num_cpus": config.replica_cpus},
    ).bind(asdict(config), model_delay_s)


def start(config: ServeConfig) -> str:
    """Ray (local, when none is running), the HTTP proxy with the request deadline, and the app."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from a loopback service
    if not ray.is_initialized():
        ray.init(num_cpus=config.num_cpus, include_dashboard=False, log_to_driver=False)
    serve.start(
        http_options={"host": config.host, "port": config.port, "request_timeout_s": config.request_timeout_s}
    )
    serve.run(build_app(config), name=APP_NAME, route_prefix="/", blocking=False)
    return f"http://{config.host}:{config.port}"


def stop() -> None:
    serve.shutdown()
