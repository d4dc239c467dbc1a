"""A small synthetic search log for the SID tests (categories, titles, queries, clicks).

Items: ``n_top`` top-level categories, each with its own product nouns, brands and colours;
queries name a colour and/or noun of an item of the category, and the clicked item matches.
Deterministic for a seed. Used until/besides the project simulator fixture.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from eg_grpo.data.schema import SearchLog

TAXONOMY = {
    "Electronics": (
        ["headphones", "laptop", "charger", "keyboard", "monitor", "speaker"],
        ["Sonix", "Voltra"],
    ),
    "Clothing": (["jacket", "sneakers", "dress", "jeans", "scarf", "hoodie"], ["Urbane", "Threadly"]),
    "Kitchen": (
        ["frying pan", "kettle", "blender", "knife set", "teapot", "toaster"],
        ["Cookwell", "Hearth"],
    ),
    "Garden": (["hose", "shovel", "planter", "lawn mower", "seed pack", "rake"], ["GreenRoot", "Yardly"]),
}
COLOURS = ["red", "blue", "black", "white", "green", "grey"]


def make_log(n_items=480, n_requests=1600, seed=0, taxonomy=True, n_top=4) -> SearchLog:
    rng = np.random.default_rng(seed)
    tops = list(TAXONOMY)[:n_top]
    rows = []
    for i in range(n_items):
        top = tops[i % len(tops)]
        nouns, brands = TAXONOMY[top]
        noun, brand, colour = rng.choice(nouns), rng.choice(brands), rng.choice(COLOURS)
        rows.append(
            {
                "item_id": 1000 + i,
                "title": f"{brand} {colour} {noun} model {rng.integers(1, 99)}",
                "category_path": [top, noun] if taxonomy else [],
                "brand": str(brand),
                "price": float(rng.uniform(5, 200)),
                "noun": noun,
                "colour": colour,
            }
        )
    items = pd.DataFrame(rows)
    requests, impressions = [], []
    for r in range(n_requests):
        target = items.iloc[int(rng.integers(n_items))]
        kind = rng.integers(3)
        query = target["noun"] if kind == 0 else f"{target['colour']} {target['noun']}" if kind == 1 else ""
        split = "train" if r < 0.7 * n_requests else "valid" if r < 0.85 * n_requests else "test"
        requests.append(
            {
                "request_id": r,
                "user_id": int(rng.integers(50)),
                "query": query,
                "timestamp": r,
                "history": [],
                "split": split,
            }
        )
        others = rng.choice(n_items, 5, replace=False)
        shown = [int(target["item_id"])] + [
            int(items.iloc[o]["item_id"]) for o in others if items.iloc[o]["item_id"] != target["item_id"]
        ]
        for pos, item in enumerate(shown[:5]):
            impressions.append(
                {"request_id": r, "item_id": item, "position": pos, "clicked": pos == 0, "purchased": False}
            )
    return SearchLog(
        items.drop(columns=["noun", "colour"]), pd.DataFrame(requests), pd.DataFrame(impressions)
    )
