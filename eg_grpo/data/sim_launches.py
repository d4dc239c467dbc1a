"""Items that launch while the log runs: a live catalogue, as a store that adds products every day.

A share of the catalogue (``SimulatorConfig.launch_share``) gets a launch time inside the log's
window, some of it (``launch_test_share`` of the launches) inside the test period, so evaluation meets
items that no training request could show. Before its launch an item is in no request's candidates, no
impression and no history; from its launch on the legacy retrieval finds it with a cold-start prior.

Everything here draws from its own random stream and runs only when ``launch_share > 0``, so a log
without launches is the log of a simulator without this module, value for value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from eg_grpo.data.sim_catalogue import Catalogue
from eg_grpo.data.sim_users import Users, sample_in_groups


@dataclass
class Launches:
    """When each item launched, and the cold-start prior the legacy system gives it.

    The prior multiplies the item's popularity wherever the legacy system uses popularity (the draws of
    the retrieval and the log-popularity term of the ranker): ``0`` before the launch, then
    ``prior_start`` rising linearly to ``1`` over ``ramp_seconds``. A popularity prior is learnt from
    engagement, which a new item has not had yet, so real systems start it low (a default for unseen
    items) and let it grow with the item's first clicks; the simulator does not feed clicks back into
    popularity, so a fixed ramp stands in for that feedback. The defaults (30 % of the item's popularity
    at the launch, full after three days: a few daily refreshes of the priors) keep a new item behind
    established ones of its popularity, yet let items launched in a few-day test period collect some
    impressions and clicks; a week-long ramp from 10 % left the demo's test-period launches unclicked.

    Args:
        time: ``(N,)`` float launch time per item row, in the requests' timestamp unit (seconds);
            ``-inf`` for items launched before the log.
        ramp_seconds: how long the prior takes to reach the item's full popularity.
        prior_start: the prior at the launch, in ``[0, 1]``.
        rng: the stream every launch-related draw comes from.
    """

    time: np.ndarray
    ramp_seconds: float
    prior_start: float
    rng: np.random.Generator

    @property
    def launched_in_log(self) -> np.ndarray:
        """``(N,)`` bool: the items that launch during the log."""
        return np.isfinite(self.time)

    def launch_time_column(self) -> pd.array:
        """The ``items.launch_time`` column: the launch timestamp, null for items launched before the log."""
        values = np.where(self.launched_in_log, self.time, 0).astype(np.int64)
        return pd.array(np.where(self.launched_in_log, values, None), dtype="Int64")

    def prior(self, item_rows: np.ndarray, timestamp: np.ndarray) -> np.ndarray:
        """The cold-start prior in ``[0, 1]`` of items (any shape) at request times broadcast to it."""
        age = np.asarray(timestamp, dtype=float) - self.time[item_rows]
        if self.ramp_seconds <= 0:
            return (age >= 0).astype(float)
        ramp = self.prior_start + (1.0 - self.prior_start) * np.minimum(age / self.ramp_seconds, 1.0)
        return np.where(age >= 0, ramp, 0.0)

    def log_prior(self, item_rows: np.ndarray, timestamp: np.ndarray) -> np.ndarray:
        """``log(prior)``: ``-inf`` before the launch, ``0`` once the ramp is over."""
        prior = self.prior(item_rows, timestamp)
        with np.errstate(divide="ignore"):
            return np.log(prior)

    def redraw_unlaunched(self, config, tax, cat: Catalogue, users: Users, requests, cand, rounds: int = 6):
        """Candidates ``(R, C)`` drawn in proportion to popularity x prior, from candidates drawn by popularity.

        Each candidate is kept with probability ``prior`` (rejection sampling: inside each retrieval
        source the kept draws follow popularity x prior) and the rest are drawn again from the same
        slots, ``rounds`` times. A slot still holding an item not launched at the request's time (a leaf
        whose items all launch later) stays so; callers mask it with :meth:`prior` ``== 0``.
        """
        from eg_grpo.data.sim_logs import retrieve_candidates  # sim_logs imports this module

        cand = cand.copy()
        timestamp = requests["timestamp"].to_numpy()[:, None]
        for _ in range(rounds):
            rejected = self.rng.random(cand.shape) >= self.prior(cand, timestamp)
            rows = np.flatnonzero(rejected.any(1))
            if len(rows) == 0:
                break
            fresh = retrieve_candidates(config, tax, cat, users, requests.iloc[rows], self.rng)
            cand[rows] = np.where(rejected[rows], fresh, cand[rows])
        return cand


def draw_launches(config, requests: pd.DataFrame, n_items: int, rng: np.random.Generator) -> Launches:
    """Picks ``round(launch_share * N)`` items (uniformly: a launch may become a best seller) and their times.

    ``round(launch_test_share * launches)`` of them launch uniformly in the test period (from the first
    test request to the last request), the rest uniformly from the first request to the test period.

    Args:
        config: a [`~eg_grpo.data.simulator.SimulatorConfig`].
        requests: the requests in time order (their ``timestamp``), before the split is added.
        n_items: the catalogue size.
        rng: the launch stream.
    """
    timestamp = requests["timestamp"].to_numpy()
    n_launch = round(config.launch_share * n_items)
    n_test = round(config.launch_test_share * n_launch)
    # The test split is the latest round(R * test_fraction) requests (sim_logs.add_histories_and_splits).
    test_start = int(timestamp[len(timestamp) - round(len(timestamp) * config.test_fraction)])
    first, last = int(timestamp[0]), int(timestamp[-1])
    launched = rng.choice(n_items, n_launch, replace=False)
    time = np.full(n_items, -np.inf)
    time[launched[:n_test]] = rng.integers(test_start, max(last, test_start + 1), n_test)
    time[launched[n_test:]] = rng.integers(first, max(test_start, first + 1), n_launch - n_test)
    return Launches(
        time=time,
        ramp_seconds=config.launch_ramp_days * 86_400,
        prior_start=config.launch_prior_start,
        rng=rng,
    )


def prelog_without_launches(users: Users, cat: Catalogue, launches: Launches) -> Users:
    """``users`` whose purchases before the log name only items that existed then.

    A pre-log purchase of an item launched during the log is replaced by a popularity-weighted draw from
    the pre-log items of the same leaf (of the whole pre-log catalogue when the leaf has none), so users
    keep their tastes and history lengths.
    """
    fresh = ~launches.launched_in_log
    leaf = np.where(fresh, cat.leaf, -1)  # launched items leave the groups
    n_leaves = len(cat.leaf_start)
    order = np.argsort(leaf, kind="stable")
    start = np.searchsorted(leaf[order], np.arange(n_leaves), side="left")
    end = np.searchsorted(leaf[order], np.arange(n_leaves), side="right")
    cum = np.cumsum(np.where(fresh, cat.popularity, 0.0)[order])
    anywhere = np.flatnonzero(fresh)
    history = []
    for items in users.prelog_history:
        items = list(items)
        for j, item in enumerate(items):
            if not fresh[item]:
                lf = cat.leaf[item]
                if end[lf] > start[lf]:
                    items[j] = int(sample_in_groups(launches.rng, np.array([lf]), start, end, order, cum)[0])
                else:
                    p = cat.popularity[anywhere] / cat.popularity[anywhere].sum()
                    items[j] = int(launches.rng.choice(anywhere, p=p))
        history.append(items)
    return Users(users.activity, users.leaves, users.brands, users.price_tier, users.style_u, history)
