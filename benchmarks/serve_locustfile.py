"""Locust users for benchmarks/serve_load.py (run by it; settings come from the environment).

SERVE_PATH: ``/recall`` (a recall request with SERVE_BEAM) or ``/healthz`` (the proxy and replica
without the model); SERVE_RATE: requests per second per user (``constant_throughput``), so the
offered load is users × rate whatever the latency.
"""

import json
import os
import random

from locust import FastHttpUser, constant_throughput, task

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
    wait_time = constant_throughput(float(os.environ.get("SERVE_RATE", "1")))

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
