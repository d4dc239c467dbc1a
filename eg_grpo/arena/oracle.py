"""The simulator's user model as an oracle over any (request, item, position) of a simulated data folder.

The latent users are rebuilt deterministically from the simulator config the data folder's
``stage.json`` records, and scored with the very functions the log simulation used
(:func:`eg_grpo.data.sim_logs.funnel_probabilities`, :func:`~eg_grpo.data.sim_logs.legacy_ranking_score`),
so the oracle's click probability of a logged impression equals its ``gt_click_prob`` to the bit.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from eg_grpo.data.ground_truth import GT_REQUEST_COLUMNS, encode, graded_relevance, has_ground_truth
from eg_grpo.data.schema import SearchLog
from eg_grpo.data.sim_logs import FunnelProbabilities, funnel_probabilities, legacy_ranking_score
from eg_grpo.data.simulator import SimulatorConfig, build_world
from eg_grpo.io import STAGE_FILE

# Logged impressions the click model is checked on when a folder is loaded (evenly spaced, so the
# check is deterministic and costs milliseconds), and the tolerance: the simulation and the oracle
# share the functions, so they agree to the bit on one machine; the slack covers another machine's
# libm, and is far below what an edited click model moves (a changed weight moves probabilities by %).
CLICK_CHECK_SAMPLE = 2048
CLICK_CHECK_RTOL = 1e-9

_NO_TRUTH = (
    "the arena scores candidates with the simulator's user model, so it needs a simulated data folder "
    "(python recipes/make_data.py --config recipes/configs/demo/data.yaml); a real log (Amazon, your own "
    "impressions) has no ground truth to play an A/B against"
)


def load_simulator_config(data_dir: str | Path) -> SimulatorConfig:
    """The simulator config recorded in ``data_dir/stage.json``.

    Raises:
        FileNotFoundError: the folder or its ``stage.json`` is missing.
        ValueError: ``stage.json`` records no simulator config (the data is not simulated).
    """
    marker = Path(data_dir) / STAGE_FILE
    if not marker.exists():
        raise FileNotFoundError(f"{marker} not found: {_NO_TRUTH}")
    record = json.loads(marker.read_text())
    # The data stage records its config as {"simulator": {...}}; folders of earlier versions as simulator_config.
    recorded = (record.get("config") or {}).get("simulator") or record.get("simulator_config")
    if not isinstance(recorded, dict):
        raise ValueError(f"{marker} records no simulator_config: {_NO_TRUTH}")
    known = {f.name for f in dataclasses.fields(SimulatorConfig)}
    if unknown := sorted(set(recorded) - known):
        raise ValueError(
            f"{marker}: simulator field(s) {unknown} unknown to this version; re-simulate the data"
        )
    return SimulatorConfig(**recorded)


class Oracle:
    """The ground truth of a simulated log: relevance, P(examine), P(click), P(purchase | click), price.

    Rows are positions in ``log.requests`` / ``log.items``; use :meth:`request_rows` /
    :meth:`item_rows` to map ids.

    Args:
        log: the simulated log (with its ``gt_`` columns).
        config: the simulator config that produced it.

    Raises:
        ValueError: the log has no ground truth, or the rebuilt catalogue differs from the log's.
    """

    def __init__(self, log: SearchLog, config: SimulatorConfig):
        if not has_ground_truth(log):
            missing = [c for c in GT_REQUEST_COLUMNS if c not in log.requests.columns]
            raise ValueError(f"the log has no ground-truth columns (e.g. {missing[:2]}): {_NO_TRUTH}")
        world = build_world(config)
        cat = world.catalogue
        if len(cat.items) != len(log.items) or not (
            np.array_equal(cat.items["item_id"].to_numpy(), log.items["item_id"].to_numpy())
            and np.array_equal(cat.items["price"].to_numpy(), log.items["price"].to_numpy())
        ):
            raise ValueError(
                "the catalogue rebuilt from stage.json's simulator_config differs from items.parquet: the data "
                "folder was edited or written by another simulator version; re-simulate it (recipes/make_data.py)"
            )
        if len(world.requests) != len(log.requests) or not np.array_equal(
            world.requests["user_id"].to_numpy(), log.requests["user_id"].to_numpy()
        ):
            raise ValueError(
                "the requests rebuilt from stage.json differ from requests.parquet; re-simulate the data"
            )
        self.log, self.config = log, config
        self.taxonomy, self.catalogue, self.users = world.taxonomy, cat, world.users
        # A live catalogue (launch_share > 0): no item is on offer before its launch, and the legacy ranker
        # scales a new item's popularity by its cold-start prior, as the simulated log did.
        self.launches = world.launches
        self.timestamp = log.requests["timestamp"].to_numpy()
        self.codes = encode(log.items, log.requests)
        self.user_of_request = log.requests["user_id"].to_numpy()
        self.price = log.items["price"].to_numpy(dtype=float)
        self._leaf_items = _rows_by_code(self.codes.item_leaf)
        self._brand_items = _rows_by_code(self.codes.item_brand)
        self._check_click_model()

    def _check_click_model(self) -> None:
        """Refuses a simulator config whose click model does not reproduce the logged ``gt_click_prob``.

        The catalogue and request checks above do not see the click and purchase weights (they do not
        shape the catalogue or the requests), so an edited ``stage.json`` would silently play the arena
        under another user model than the one that wrote the log.
        """
        imps = self.log.impressions
        if "gt_click_prob" not in imps.columns or len(imps) == 0:
            return  # nothing logged to compare with; the request columns already proved ground truth
        sample = np.unique(np.linspace(0, len(imps) - 1, min(len(imps), CLICK_CHECK_SAMPLE)).astype(int))
        part = imps.iloc[sample]
        logged = part["gt_click_prob"].to_numpy(dtype=float)
        rebuilt = self.probabilities(
            self.request_rows(part["request_id"]),
            self.item_rows(part["item_id"]),
            part["position"].to_numpy(),
        ).click
        differ = ~np.isclose(rebuilt, logged, rtol=CLICK_CHECK_RTOL, atol=0.0)
        if differ.any():
            worst = float(np.max(np.abs(rebuilt - logged)[differ]))
            raise ValueError(
                f"the click model rebuilt from stage.json's simulator config does not reproduce the logged "
                f"gt_click_prob ({int(differ.sum())} of {len(sample)} sampled impressions differ, by up to "
                f"{worst:.3g}): stage.json was edited or the log was written by another simulator version; "
                "re-simulate the data (recipes/make_data.py)"
            )

    @classmethod
    def from_data_dir(cls, data_dir: str | Path, log: SearchLog | None = None) -> Oracle:
        """Loads (or takes) the log of ``data_dir`` and rebuilds its users from ``stage.json``."""
        config = load_simulator_config(data_dir)
        return cls(log if log is not None else SearchLog.load(data_dir), config)

    def request_rows(self, request_ids) -> np.ndarray:
        return _rows(self.codes.request_index, request_ids, "request")

    def item_rows(self, item_ids) -> np.ndarray:
        return _rows(self.codes.item_index, item_ids, "item")

    def relevance(self, req_rows, item_rows) -> np.ndarray:
        """Graded relevance 0-3 (int8) of aligned request and item rows."""
        return graded_relevance(self.codes, req_rows, item_rows)

    def probabilities(self, req_rows, item_rows, positions) -> FunnelProbabilities:
        """The click and purchase model of aligned ``(M,)`` request rows, item rows and positions."""
        req_rows, item_rows = np.asarray(req_rows), np.asarray(item_rows)
        rel = self.relevance(req_rows, item_rows)
        return funnel_probabilities(
            self.config, self.taxonomy, self.catalogue, self.users, self.user_of_request[req_rows], item_rows, rel,
            np.asarray(positions),
        )  # fmt: skip

    def legacy_score(self, req_rows, item_rows, noise) -> np.ndarray:
        """The simulator's legacy ranking score (``noise``: standard normal draws, same shape); with launches
        plus the popularity weight times the log of the item's cold-start prior at the request's time
        (``-inf`` before its launch), the term the simulated ranker adds."""
        score = legacy_ranking_score(
            self.config, self.catalogue, item_rows, self.relevance(req_rows, item_rows), noise
        )
        if self.launches is not None:
            log_prior = self.launches.log_prior(np.asarray(item_rows), self.timestamp[np.asarray(req_rows)])
            score = score + self.config.legacy_popularity_weight * log_prior
        return score

    def on_sale(self, req_rows, item_rows) -> np.ndarray:
        """Whether each item (aligned rows, any shape) had launched at its request's time (all True without
        launches)."""
        item_rows = np.asarray(item_rows)
        if self.launches is None:
            return np.ones(item_rows.shape, dtype=bool)
        # the simulator's own test (prior > 0), so the arena offers exactly what the log could have shown
        return self.launches.prior(item_rows, self.timestamp[np.asarray(req_rows)]) > 0

    def best_items(self, req_row: int, k: int) -> np.ndarray:
        """The ``k`` truly best item rows of a request on sale at its time: highest relevance, then highest
        P(click) at the top position. Graded items (>= 1) share the request's leaf, or its brand when the
        request names only a brand, so only those are scored."""
        leaf, brand = self.codes.req_leaf[req_row], self.codes.req_brand[req_row]
        empty = np.empty(0, dtype=np.int64)
        pool = self._leaf_items.get(leaf, empty) if leaf >= 0 else self._brand_items.get(brand, empty)
        pool = pool[self.on_sale(np.full(len(pool), req_row), pool)]  # the best items on sale at the time
        if len(pool) == 0:
            return empty
        rows = np.full(len(pool), req_row)
        rel = self.relevance(rows, pool)
        attract = self.probabilities(rows, pool, np.zeros(len(pool))).attract
        order = np.lexsort((-attract, -rel))  # relevance first, then attraction
        order = order[rel[order] > 0]
        return pool[order[:k]]


def _rows_by_code(codes: np.ndarray) -> dict[int, np.ndarray]:
    """Code -> the item rows carrying it (codes >= 0)."""
    order = np.argsort(codes, kind="stable")
    values, starts = np.unique(codes[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    return {int(v): order[a:b] for v, a, b in zip(values, starts, ends) if v >= 0}


def _rows(index, ids, what: str) -> np.ndarray:
    ids = np.asarray(ids)
    rows = index.get_indexer(ids.ravel())
    if (rows < 0).any():
        raise KeyError(f"{what} id {ids.ravel()[rows < 0][0]} is not in the log")
    return rows.reshape(ids.shape)
