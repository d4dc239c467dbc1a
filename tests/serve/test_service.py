"""The recall service end to end on the tiny model: Ray Serve on loopback, real HTTP requests."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("ray.serve", reason="Ray Serve is not installed: pip install -e '.[serve]'")
requests = pytest.importorskip("requests", reason="the service tests talk HTTP through requests")

from eg_grpo.eval.recall import RecallChannel  # noqa: E402
from eg_grpo.serve import ServeConfig, start, stop, wait_healthy  # noqa: E402

TOKEN = "test-admin-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service(tiny_sft_dir, tiny_sid_dir):
    import ray

    config = ServeConfig(
        model_dir=str(tiny_sft_dir), sid_dir=str(tiny_sid_dir), port=_free_port(), max_batch_size=4,
        max_ongoing_requests=2, max_queued_requests=3, request_timeout_s=60, max_beam=64, num_cpus=2,
        device="cpu", refresh_token=TOKEN,
    )  # fmt: skip
    url = start(config)
    try:
        wait_healthy(url, timeout_s=60)  # bounded: the replica loads the model, then /healthz answers
        yield url
    finally:
        stop()
        ray.shutdown()


@pytest.fixture(scope="module")
def channel(tiny_sft_dir, tiny_sid_dir):
    return RecallChannel(tiny_sft_dir, tiny_sid_dir, device="cpu", max_beam=64)


def _post(url, body, **kw):
    return requests.post(f"{url}/recall", json=body, timeout=30, **kw)


def _model_requests(url) -> int:
    return requests.get(f"{url}/healthz", timeout=10).json()["model_requests"]


def test_answers_are_the_in_process_channels(service, channel, tiny_log):
    rows = tiny_log.split("test").head(3)
    for query, history in zip(rows["query"], rows["history"]):
        body = {"query": query, "history": [int(i) for i in history], "beam": 5, "max_items": 12}
        response = _post(service, body)
        assert response.status_code == 200, response.text
        got = response.json()
        expected = channel.recall_scored_batch([query], [history], beam=5, max_items=12)[0]
        assert got["items"] == [item for item, _, _ in expected]
        assert got["items"] == channel.recall(query, history, beam=5, max_items=12)
        assert [tuple(s) for s in got["sids"]] == [sid for _, sid, _ in expected]
        assert got["scores"] == pytest.approx([score for _, _, score in expected], abs=1e-4)
    profiled = _post(service, {"query": "pen", "history": [], "profile": "power=premium", "beam": 3})
    assert profiled.json()["items"] == channel.recall("pen", [], beam=3, profile="power=premium")


def test_concurrent_requests_share_batches_and_keep_their_own_answers(service, channel, tiny_log):
    rows = tiny_log.split("valid").head(6)
    bodies = [{"query": q, "history": [int(i) for i in h], "beam": 3 + i % 2, "max_items": 4 + i}
              for i, (q, h) in enumerate(zip(rows["query"], rows["history"]))]  # fmt: skip
    with ThreadPoolExecutor(3) as pool:  # within max_ongoing + max_queued: none is refused
        answers = list(pool.map(lambda b: _post(service, b), bodies))
    for body, response in zip(bodies, answers):
        assert response.status_code == 200, response.text
        expected = channel.recall(
            body["query"], body["history"], beam=body["beam"], max_items=body["max_items"]
        )
        assert response.json()["items"] == expected


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"query": "pen", "beam": 10_000}, 422, r"beam must be in [1, 64], got 10000"),
        ({"query": "pen", "beam": 2.5}, 422, "beam: Input should be a valid integer"),
        ({"query": "pen", "beam": "3"}, 422, "beam: Input should be a valid integer"),
        ({"query": "pen", "beam": 0}, 422, "beam must be in [1, 64], got 0"),
        ({"query": "pen", "max_items": True}, 422, "max_items: Input should be a valid integer"),
        ({"query": 42}, 422, "query: Input should be a valid string"),
        ({"query": None}, 422, "query: Input should be a valid string"),
        ({"history": [1]}, 422, "query: Field required"),
        ({"query": "pen", "history": "12"}, 422, "history: Input should be a valid array"),
        ({"query": "pen", "history": [1, "2"]}, 422, "history.1: Input should be a valid integer"),
        ({"query": "pen", "history": [10**12]}, 422, "unknown item id(s), e.g. [1000000000000]"),
        ({"query": "pen", "history": list(range(5000))}, 422, "history: List should have at most 1000 items"),
        ({"query": "<a_1><b_2><c_3>"}, 422, "query holds the token text '<a_1>'"),
        ({"query": "pen<|endoftext|>"}, 422, "a query is plain text"),
        ({"query": "pen", "profile": "power premium"}, 422, "key=value"),
        ({"query": "pen", "extra": 1}, 422, "extra: Extra inputs are not permitted"),
        ({"query": "x" * 100_000}, 413, "request body over 65536 bytes"),
    ],
)
def test_bad_requests_are_4xx_with_the_reason_and_never_reach_the_model(service, body, status, reason):
    before = _model_requests(service)
    response = _post(service, body)
    assert response.status_code == status, response.text
    assert reason in response.json()["error"]
    assert _model_requests(service) == before


def test_a_body_that_is_not_json_is_422(service):
    response = requests.post(f"{service}/recall", data=b"{not json", timeout=10)
    assert response.status_code == 422 and "invalid request" in response.json()["error"]


def test_a_long_query_is_cut_as_in_process(service, channel):
    query = "red pen " * 1000  # 8,000 characters: under the body limit, over max_query_tokens
    response = _post(service, {"query": query, "beam": 3, "max_items": 5})
    assert response.status_code == 200
    assert response.json()["items"] == channel.recall(query, [], beam=3, max_items=5)


def test_a_request_past_its_deadline_gets_408(service):
    # Ray Serve's per-request deadline header; the service-wide one is --request_timeout_s.
    response = _post(service, {"query": "pen", "beam": 64}, headers={"x-request-timeout-seconds": "0.001"})
    assert response.status_code == 408, response.text
    assert "timed out" in response.text


MODEL_DELAY_S = 0.5  # the slowed replica's model call: long beside a 503 and the proxy's own cost


@pytest.fixture(scope="module")
def slow_service(service, tiny_sft_dir, tiny_sid_dir):
    """A second app on the same proxy (route ``/slow``): one request at a time, one queued, and a model
    call held for MODEL_DELAY_S, so a burst overloads it for certain whatever the machine's speed."""
    from ray import serve

    from eg_grpo.serve.app import build_app

    config = ServeConfig(
        model_dir=str(tiny_sft_dir), sid_dir=str(tiny_sid_dir), max_batch_size=1, max_ongoing_requests=1,
        max_queued_requests=1, request_timeout_s=60, replica_cpus=0.5, device="cpu",
    )  # fmt: skip
    serve.run(build_app(config, model_delay_s=MODEL_DELAY_S), name="recall_slow", route_prefix="/slow",
              blocking=False)  # fmt: skip
    url = f"{service}/slow"
    try:
        wait_healthy(url, timeout_s=60)
        yield url
    finally:
        serve.delete("recall_slow")


def test_overload_is_answered_with_fast_503s_and_every_accepted_request_with_200(slow_service):
    body = {"query": "red pen", "beam": 3, "max_items": 5}
    started = time.perf_counter()
    alone = _post(slow_service, body)  # one request on the idle replica: the model call it cannot skip
    normal_s = time.perf_counter() - started
    assert alone.status_code == 200 and normal_s >= MODEL_DELAY_S
    before = requests.get(f"{slow_service}/healthz", timeout=10).json()
    n = 12
    barrier = threading.Barrier(n, timeout=30)

    def call(_):
        barrier.wait()  # all at once against 1 ongoing + 1 queued
        t = time.perf_counter()
        response = _post(slow_service, body)
        return response, time.perf_counter() - t

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(call, range(n)))
    statuses = [r.status_code for r, _ in results]
    assert set(statuses) <= {200, 503}, statuses  # no 408 or 500: nothing accepted is lost
    refused = [(r, s) for r, s in results if r.status_code == 503]
    accepted = [(r, s) for r, s in results if r.status_code == 200]
    assert len(refused) >= n // 2 and accepted, statuses
    # Fast: each 503 well within one model call, where a queued request waits for whole ones.
    assert max(s for _, s in refused) < normal_s / 2, [round(s, 3) for _, s in refused]
    assert min(s for _, s in accepted) >= MODEL_DELAY_S
    assert all("dropped due to backpressure" in r.text for r, _ in refused), refused[0][0].text
    assert all(r.json()["items"] == alone.json()["items"] for r, _ in accepted)
    # Refused in the proxy: the replica never saw a 503'd request, and ran every accepted one.
    after = requests.get(f"{slow_service}/healthz", timeout=10).json()
    assert after["requests"] - before["requests"] == len(accepted)
    assert after["model_requests"] - before["model_requests"] == len(accepted)


def test_refresh_under_load_drops_no_request(service, tiny_sid_dir, tmp_path):
    newer = tmp_path / "sids_v2"
    shutil.copytree(tiny_sid_dir, newer)
    assert requests.post(f"{service}/refresh", json={"sid_dir": str(newer)}, timeout=30).status_code == 403
    body = {"query": "red pen", "beam": 4, "max_items": 8}

    def call(i):
        if i == 6:
            return requests.post(
                f"{service}/refresh",
                json={"sid_dir": str(newer)},
                headers={"x-admin-token": TOKEN},
                timeout=60,
            )
        return _post(service, body)

    with ThreadPoolExecutor(3) as pool:  # within max_ongoing + max_queued: a failure is the refresh's fault
        responses = list(pool.map(call, range(16)))
    assert [r.status_code for r in responses] == [200] * 16, [
        r.text for r in responses if r.status_code != 200
    ]
    assert requests.get(f"{service}/healthz", timeout=10).json()["sid_dir"] == str(newer)
    answers = {tuple(r.json()["items"]) for i, r in enumerate(responses) if i != 6}
    assert len(answers) == 1  # the same SIDs: every request got the same answer across the swap
    bad = requests.post(f"{service}/refresh", json={"sid_dir": str(tmp_path / "missing")},
                        headers={"x-admin-token": TOKEN}, timeout=30)  # fmt: skip
    assert bad.status_code == 409 and "still serving the previous SIDs" in bad.json()["error"]
    assert requests.get(f"{service}/healthz", timeout=10).json()["sid_dir"] == str(newer)
