"""Locust users for benchmarks/serve_load.py (run by it; settings come from the environment).

SERVE_PATH: ``/recall`` (a recall request with SERVE_BEAM) or ``/healthz`` (the proxy and replica
without the model); SERVE_RATE: requests per second per user. Each user waits an exponential time of
mean 1 / rate after each answer, so requests arrive as a Poisson stream, as independent searchers
send them; a fixed period (``constant_throughput``) keeps users spawned together in phase, and their
synchronised bursts queue behind each other's batches (seen: p50 150-190 ms where one request alone
takes 32 ms). The offered load is about users x rate while latency is short next to 1 / rate; the
achieved QPS is what counts.
"""

import json
import os
import random

from locust import FastHttpUser, task

PATH = os.environ.get("SERVE_PATH", "/recall")
BEAM = int(os.environ.get("SERVE_BEAM", "20"))
ITEMS = int(os.environ.get("SERVE_ITEMS", "1000"))
WORDS = [
    "red",
    "blue",
    "cotton",
    "leather",
    "running",
    "shoes",
    "shirt",
    "bag",
    "phone",
    "case",
    "lamp",
    "desk",
]


class RecallUser(FastHttpUser):
    rate = float(os.environ.get("SERVE_RATE", "1"))

    def wait_time(self) -> float:
        return random.expovariate(self.rate)

    @task
    def call(self):
        if PATH == "/healthz":
            self.client.get("/healthz")
            return
        body = {
            "query": " ".join(random.choices(WORDS, k=random.randint(1, 4))),
            "history": random.sample(range(ITEMS), 5),
            "beam": BEAM,
            "max_items": 200,
        }
        self.client.post("/recall", data=json.dumps(body), headers={"content-type": "application/json"})
