"""A search-log simulator whose ground truth is known.

A public Tmall-like search log does not exist, so the project ships this simulator: a catalogue
of items with readable titles from a 3-level taxonomy of real product words, users with
preferences, requests with query text from an intent, impressions from a legacy retrieval and
ranking, clicks from a click model and purchases after clicks. The latent truth (intent, graded
relevance, click probability) is stored in ``gt_`` columns, so recall can be graded honestly.

Example:
    >>> from eg_grpo.data.simulator import SimulatorConfig, simulate, summary_statistics
    >>> log = simulate(SimulatorConfig.preset("tiny"))
    >>> summary_statistics(log)["ctr"]
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from eg_grpo.data.ground_truth import GroundTruthCodes, encode, has_ground_truth
from eg_grpo.data.schema import SPLITS, SearchLog
from eg_grpo.data.sim_catalogue import Catalogue, Taxonomy, build_catalogue, build_taxonomy
from eg_grpo.data.sim_launches import Launches, draw_launches, prelog_without_launches
from eg_grpo.data.sim_logs import add_histories_and_splits, simulate_impressions
from eg_grpo.data.sim_users import Users, build_requests, build_users, user_profiles
from eg_grpo.io import atomic_dir, content_config, stage_record, write_json, write_stage


@dataclass
class SimulatorConfig:
    """Sizes and rates of a simulated search log. Defaults are the ``demo`` size.

    Presets: ``tiny`` (tests, ~1 s), ``demo`` (the README's data), ``large`` (1M items for scale
    benchmarks; its log is kept at 200k requests, because scale benchmarks need a big catalogue,
    not a long log), ``demo_live`` (``demo`` with 10 % of the items launching during the log, 30 % of
    those in the test period). See [`SimulatorConfig.preset`].
    """

    seed: int = field(default=0, metadata={"help": "Random seed; the same seed gives identical tables."})
    n_items: int = field(default=20_000, metadata={"help": "Number of items in the catalogue."})
    n_users: int = field(default=5_000, metadata={"help": "Number of users."})
    n_requests: int = field(default=50_000, metadata={"help": "Number of requests (searches) in the log."})
    n_days: int = field(default=30, metadata={"help": "Length of the log in days (timestamps in seconds)."})
    # catalogue
    leaf_size_concentration: float = field(
        default=2.0, metadata={"help": "Dirichlet concentration of the leaf sizes; lower = more uneven."}
    )
    popularity_exponent: float = field(default=0.9, metadata={"help": "Zipf exponent of item popularity."})
    price_sigma: float = field(default=0.45, metadata={"help": "Log-price spread inside a leaf."})
    # users
    user_categories: int = field(default=3, metadata={"help": "Preferred leaf categories per user."})
    user_activity_sigma: float = field(default=1.0, metadata={"help": "Lognormal spread of user activity."})
    prelog_history_mean: float = field(default=3.0, metadata={"help": "Mean purchases before the log."})
    max_history: int = field(default=20, metadata={"help": "Longest history kept per request."})
    # queries
    empty_query_share: float = field(default=0.1, metadata={"help": "Share of requests with no query."})
    p_intent_category: float = field(default=0.4, metadata={"help": "Relative weight of category intents."})
    p_intent_attribute: float = field(
        default=0.35, metadata={"help": "Relative weight of attribute intents."}
    )
    p_intent_brand: float = field(default=0.25, metadata={"help": "Relative weight of brand intents."})
    p_intent_from_preferences: float = field(
        default=0.75,
        metadata={"help": "Probability that the wanted leaf is one of the user's preferred leaves."},
    )
    synonym_prob: float = field(
        default=0.5, metadata={"help": "Probability that the noun is said as a synonym."}
    )
    typo_prob: float = field(default=0.08, metadata={"help": "Probability of a typo in a query."})
    word_drop_prob: float = field(
        default=0.1, metadata={"help": "Probability to drop a word of a 3+ word query."}
    )
    filler_prob: float = field(
        default=0.15, metadata={"help": "Probability of a filler word ('best', 'gift')."}
    )
    price_word_prob: float = field(default=0.15, metadata={"help": "Probability of a price word ('cheap')."})
    # legacy retrieval + ranking
    candidates_per_request: int = field(
        default=48, metadata={"help": "Legacy retrieval candidates per request."}
    )
    legacy_leaf_share: float = field(
        default=0.5, metadata={"help": "Share of candidates from the wanted leaf."}
    )
    legacy_mid_share: float = field(
        default=0.15, metadata={"help": "Share of candidates from its mid category."}
    )
    legacy_brand_share: float = field(default=0.15, metadata={"help": "Share of candidates from a brand."})
    legacy_relevance_weight: float = field(default=1.0, metadata={"help": "Legacy ranker: relevance weight."})
    legacy_noise: float = field(default=1.0, metadata={"help": "Legacy ranker: noise on relevance (std)."})
    legacy_popularity_weight: float = field(
        default=0.3, metadata={"help": "Legacy ranker: log-popularity weight."}
    )
    min_impressions: int = field(default=10, metadata={"help": "Fewest items shown per request."})
    max_impressions: int = field(default=20, metadata={"help": "Most items shown per request."})
    # click and purchase models
    position_bias_exponent: float = field(
        default=0.7, metadata={"help": "Examination = (position + 1) ** -x."}
    )
    click_bias: float = field(default=-4.2, metadata={"help": "Click model: intercept (logit)."})
    click_relevance_weight: float = field(default=0.9, metadata={"help": "Click model: per relevance grade."})
    click_affinity_weight: float = field(default=0.6, metadata={"help": "Click model: per affinity match."})
    click_price_weight: float = field(default=0.5, metadata={"help": "Click model: price fit weight."})
    click_quality_weight: float = field(default=0.4, metadata={"help": "Click model: quality weight."})
    purchase_bias: float = field(
        default=-3.3, metadata={"help": "Purchase model (given a click): intercept."}
    )
    purchase_relevance_weight: float = field(
        default=0.4, metadata={"help": "Purchase model: relevance weight."}
    )
    purchase_affinity_weight: float = field(
        default=0.4, metadata={"help": "Purchase model: affinity weight."}
    )
    purchase_price_weight: float = field(default=0.8, metadata={"help": "Purchase model: price fit weight."})
    purchase_quality_weight: float = field(default=0.6, metadata={"help": "Purchase model: quality weight."})
    user_profile: bool = field(
        default=False,
        metadata={
            "help": "Add the requests column `profile` with the user's purchasing-power tier "
            "('power=budget|mid|premium', the tier the click and purchase models use). Off: the tables "
            "are byte-identical to a simulator without profiles."
        },
    )
    # a live catalogue (eg_grpo/data/sim_launches.py)
    launch_share: float = field(
        default=0.0,
        metadata={
            "help": "Share of the items that launch during the log (items.launch_time). 0: every item exists "
            "before the log and the tables are identical to a simulator without launches."
        },
    )
    launch_test_share: float = field(
        default=0.3, metadata={"help": "Share of the launches that fall in the test period."}
    )
    launch_ramp_days: float = field(
        default=3.0, metadata={"help": "Days a launched item's cold-start popularity prior takes to reach 1."}
    )
    launch_prior_start: float = field(
        default=0.3, metadata={"help": "A launched item's popularity prior at its launch (then rising to 1)."}
    )
    # split
    valid_fraction: float = field(default=0.1, metadata={"help": "Share of requests (by time) in valid."})
    test_fraction: float = field(default=0.1, metadata={"help": "Share of requests (the latest) in test."})
    rl_fraction: float = field(
        default=0.0,
        metadata={"help": "Share of requests (by time, just before valid) kept as split rl for RL."},
    )

    PRESETS = ("tiny", "demo", "large", "demo_live")
    # Fields that leave the tables unchanged while launch_share is 0 (see `data_stage_record`).
    LAUNCH_FIELDS = ("launch_share", "launch_test_share", "launch_ramp_days", "launch_prior_start")

    @classmethod
    def preset(cls, name: str, **overrides) -> SimulatorConfig:
        """A named size: ``tiny``, ``demo``, ``large`` or ``demo_live``, with optional field overrides."""
        sizes = {
            "tiny": {"n_items": 500, "n_users": 100, "n_requests": 2_000, "n_days": 14},
            "demo": {},
            "large": {"n_items": 1_000_000, "n_users": 50_000, "n_requests": 200_000, "n_days": 60},
            "demo_live": {"launch_share": 0.1, "launch_test_share": 0.3},
        }
        if name not in sizes:
            raise ValueError(f"unknown simulator preset '{name}'; choose one of {cls.PRESETS}")
        return cls(**{**sizes[name], **overrides})

    def validate(self) -> None:
        """Raises ValueError naming the field when a size or rate is out of range."""
        for name in (
            "n_items",
            "n_users",
            "n_requests",
            "n_days",
            "user_categories",
            "candidates_per_request",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"SimulatorConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in (
            "empty_query_share", "p_intent_from_preferences", "synonym_prob", "typo_prob", "word_drop_prob",
            "filler_prob", "price_word_prob", "valid_fraction", "test_fraction", "launch_share",
            "launch_test_share", "launch_prior_start",
        ):  # fmt: skip
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SimulatorConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.launch_ramp_days < 0:
            raise ValueError(f"SimulatorConfig.launch_ramp_days must be >= 0, got {self.launch_ramp_days}")
        if self.p_intent_category + self.p_intent_attribute + self.p_intent_brand <= 0:
            raise ValueError("SimulatorConfig: the intent weights p_intent_* must not all be 0")
        if not 1 <= self.min_impressions <= self.max_impressions <= self.candidates_per_request:
            raise ValueError(
                "SimulatorConfig needs 1 <= min_impressions <= max_impressions <= candidates_per_request, got "
                f"{self.min_impressions}, {self.max_impressions}, {self.candidates_per_request}"
            )
        if self.legacy_leaf_share + self.legacy_mid_share + self.legacy_brand_share > 1.0:
            raise ValueError(
                "SimulatorConfig: legacy_*_share must sum to at most 1 (the rest is popular items)"
            )
        n_split = round(self.n_requests * self.valid_fraction), round(self.n_requests * self.test_fraction)
        n_rl = round(self.n_requests * self.rl_fraction)
        if min(n_split) < 1 or self.rl_fraction < 0 or self.n_requests - sum(n_split) - n_rl < 1:
            raise ValueError(
                f"SimulatorConfig: n_requests={self.n_requests} with valid_fraction={self.valid_fraction}, "
                f"test_fraction={self.test_fraction}, rl_fraction={self.rl_fraction} leaves a split empty "
                "(or rl_fraction < 0); train, valid and test need requests"
            )


def simulate(config: SimulatorConfig) -> SearchLog:
    """Simulates a search log.

    Args:
        config: sizes, rates and seed.

    Returns:
        A validated [`~eg_grpo.data.schema.SearchLog`] with ground-truth ``gt_`` columns
        (docs/contracts.md). The same config (seed included) gives identical tables.

    Raises:
        ValueError: a config field is out of range.
    """
    world = build_world(config)
    impressions = simulate_impressions(
        config,
        world.taxonomy,
        world.catalogue,
        world.users,
        world.requests,
        world.codes,
        world.rng_log,
        launches=world.launches,
    )
    requests = add_histories_and_splits(config, world.requests, impressions, world.users)
    if config.user_profile:  # drawn from nothing: every other column stays as without it
        requests["profile"] = user_profiles(world.users)[requests["user_id"].to_numpy()]
    return SearchLog(items=world.catalogue.items, requests=requests, impressions=impressions)


@dataclass
class SimulatedWorld:
    """The latent state behind a simulated log, before any impression is drawn.

    ``requests`` lacks ``history`` and ``split`` (they follow from the impressions); ``rng_log``
    is the untouched stream the impressions are drawn from. ``launches`` is None unless
    ``launch_share > 0``; then ``catalogue.items`` has ``launch_time`` and the users' pre-log
    purchases name only items that existed before the log.
    """

    taxonomy: Taxonomy
    catalogue: Catalogue
    users: Users
    requests: pd.DataFrame
    codes: GroundTruthCodes
    rng_log: np.random.Generator
    launches: Launches | None = None


def build_world(config: SimulatorConfig) -> SimulatedWorld:
    """Rebuilds the catalogue, users and requests of a config deterministically (what
    [`simulate`] draws before the impressions); the arena's oracle rebuilds its users this way.

    Raises:
        ValueError: a config field is out of range.
    """
    config.validate()
    # Independent streams per stage: the catalogue does not change when only the log size does.
    # The fifth (launches) is spawned after the first four, which stay the streams they always were.
    seeds = np.random.SeedSequence(config.seed).spawn(5)
    rng_items, rng_users, rng_requests, rng_log = (np.random.default_rng(s) for s in seeds[:4])
    tax = build_taxonomy()
    cat = build_catalogue(config, tax, rng_items)
    users = build_users(config, tax, cat, rng_users)
    # Requests (who searches, when, for what) are drawn as without launches: a query may ask for
    # what is not on sale yet, as real users' queries do; launches only change what can be shown.
    requests, _ = build_requests(config, tax, cat, users, rng_requests)
    codes = encode(cat.items, requests)
    launches = None
    if config.launch_share > 0:
        launches = draw_launches(config, requests, len(cat.leaf), np.random.default_rng(seeds[4]))
        cat.items["launch_time"] = launches.launch_time_column()
        users = prelog_without_launches(users, cat, launches)
    return SimulatedWorld(tax, cat, users, requests, codes, rng_log, launches)


def _describe(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=float)
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "mean": round(float(values.mean()), 3),
        "max": float(values.max()),
    }


def summary_statistics(log: SearchLog, max_positions: int = 20) -> dict:
    """Figures that say whether a log looks like search traffic.

    Args:
        log: any [`~eg_grpo.data.schema.SearchLog`]; figures from ``gt_`` columns are added when
            present.
        max_positions: CTR by position is reported for positions ``0..max_positions-1`` (a list
            indexed by position; 0.0 where a position was never shown).

    Returns:
        A JSON-able dict: sizes, CTR, CTR by position, purchase rate, purchases per click, share of
        requests with a click, items per leaf category, query length (words), empty-query share,
        split sizes; with ground truth also intent shares, and the share of impressions and the CTR
        per relevance grade (lists indexed by grade 0-3); with ``items.launch_time`` the launches (items
        launched during the log, of them in the test period, their share of the impressions).
    """
    items, requests, imps = log.items, log.requests, log.impressions
    clicked, purchased = imps["clicked"].to_numpy(bool), imps["purchased"].to_numpy(bool)
    by_pos = imps.assign(c=clicked).groupby("position")["c"].mean()
    paths = [tuple(p) for p in items["category_path"]]
    per_leaf = pd.Series(paths).value_counts().to_numpy()
    queries = requests["query"].astype(str)
    nonempty = queries[queries.str.len() > 0]
    qlen = nonempty.str.split().str.len().to_numpy() if len(nonempty) else np.zeros(1)
    clicks_per_request = pd.Series(clicked).groupby(imps["request_id"].to_numpy()).sum()
    stats = {
        "items": len(items),
        "users": int(requests["user_id"].nunique()),
        "requests": len(requests),
        "impressions": len(imps),
        "impressions_per_request": round(len(imps) / len(requests), 2),
        "ctr": round(float(clicked.mean()), 4),
        "ctr_by_position": [round(float(v), 4) for v in by_pos.reindex(range(max_positions), fill_value=0.0)],
        "purchase_rate": round(float(purchased.mean()), 4),
        "purchases_per_click": round(float(purchased.sum() / max(clicked.sum(), 1)), 4),
        "requests_with_click": round(
            float((clicks_per_request.reindex(requests["request_id"]).fillna(0) > 0).mean()), 4
        ),
        "leaf_categories": len(per_leaf),
        "top_categories": len({p[0] for p in paths if p}),
        "items_per_leaf": _describe(per_leaf),
        "query_words": _describe(qlen),
        "empty_query_share": round(float((queries.str.len() == 0).mean()), 4),
        "split_sizes": {s: int((requests["split"] == s).sum()) for s in SPLITS},
        "mean_history_length": round(float(requests["history"].map(len).mean()), 2),
    }
    if "launch_time" in items.columns:
        launch = items["launch_time"]
        test_start = requests.loc[requests["split"] == "test", "timestamp"].min()
        launched = imps["item_id"].isin(items.loc[launch.notna(), "item_id"])
        stats["launches"] = {"items": int(launch.notna().sum()), "in_test": int((launch >= test_start).sum()),
                             "impression_share": round(float(launched.mean()), 4)}  # fmt: skip
    if has_ground_truth(log):
        stats["intent_share"] = {
            k: round(float(v), 4)
            for k, v in requests["gt_intent"].value_counts(normalize=True).sort_index().items()
        }
    if "gt_relevance" in imps.columns:
        grp = imps.assign(c=clicked).groupby("gt_relevance")["c"]
        share = grp.size().reindex(range(4), fill_value=0) / len(imps)
        stats["impressions_by_relevance"] = [round(float(v), 4) for v in share]
        stats["ctr_by_relevance"] = [round(float(v), 4) for v in grp.mean().reindex(range(4), fill_value=0.0)]
    return stats


def simulator_config_of(args) -> SimulatorConfig:
    """The [`SimulatorConfig`] part of an object that has its fields (e.g. a recipe's arguments)."""
    return SimulatorConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SimulatorConfig)})


def write_simulated_data(config: SimulatorConfig, output_dir: str | Path) -> dict:
    """Simulates a log and writes it as a data artifact, atomically.

    ``output_dir`` receives ``items.parquet``, ``requests.parquet``, ``impressions.parquet``,
    ``stats.json`` ([`summary_statistics`]) and ``stage.json`` (see :mod:`eg_grpo.io`; its
    fingerprint is that of :func:`data_stage_record`). A killed run leaves no half-written folder.

    Args:
        config: the simulator config.
        output_dir: the data folder to (re)write.

    Returns:
        The summary statistics, plus ``build_seconds`` (simulation time, not counting the writing).
    """
    start = time.perf_counter()
    log = simulate(config)
    seconds = round(time.perf_counter() - start, 2)
    stats = summary_statistics(log)
    with atomic_dir(output_dir) as tmp:
        log.save(tmp)
        write_json(tmp / "stats.json", stats)
        write_stage(tmp, data_stage_record(config), seconds)
    return {**stats, "build_seconds": seconds}


def data_stage_record(config: SimulatorConfig) -> dict:
    """The ``stage.json`` record of simulated data: the simulator config (a seeded, pure function of it)."""
    # Off, the profile and the launches leave the tables identical, so they leave the record as it was too.
    drop = () if config.user_profile else ("user_profile",)
    drop += () if config.launch_share > 0 else SimulatorConfig.LAUNCH_FIELDS
    return stage_record("data", {"simulator": content_config(config, drop=drop)})
