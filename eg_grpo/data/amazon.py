"""Loader for next-item datasets in the MiniOneRec/Amazon layout → the three-table schema.

A dataset folder holds ``valid.csv``, ``test.csv`` (columns ``user_id, history_item_id, item_id``,
list columns as Python/JSON literals; other columns are ignored), ``items.json`` (item_id →
``title``, ``description``, ``brand``, ``categories``) and optionally ``train.csv`` and
``reference_sids.json`` (item_id → the publisher's SID tokens, read by ``method: reference`` of the
SID builder, so it is copied beside the parquet tables).

When ``train.csv`` is absent (the case of the public Amazon Office files) the training rows are rebuilt
from what is there, with no evaluation target ever becoming a training target:

- ``window:valid_history``: sliding windows over each user's earliest known history, the
  history of the user's first valid row (every item there precedes every valid and test target):
  for each position ``i >= min_history`` the row (history ``h[i-max_history:i]``, target ``h[i]``);
- ``window:test_history`` (``window_test_histories``): the same over the history of the first test
  row of users who have no valid row. Those items precede the user's first test target, and since
  ``valid.csv`` holds every interaction of the valid period, none of them is a valid target either;
- ``valid_row`` (only when the test split is the target, ``train_on_valid_rows``): the valid rows
  themselves, except a held-back slice of users (``valid_holdout_fraction``) or the latest rows
  (``valid_holdout_tail``) kept as split ``valid``, and the latest rows before those
  (``rl_tail``) kept as split ``rl`` for the RL stage (SFT trains on split ``train`` only).

Each request records where it came from (``source``, ``source_row``: the row of the csv whose
history or target it used), so every reported number can say exactly which rows were trained on.
Requests have an empty query (pure recommendation) and one impression: the target, at position 0,
clicked. A review is not a purchase signal we can trust to be distinct from the click, so
``purchased`` is False unless ``target_purchased`` is set (reward models weighting purchases would
otherwise count the one positive twice). There are no timestamps in the source; ``timestamp`` is an
ordinal that orders training windows before valid rows before test rows and, within a user, by position.
"""

from __future__ import annotations

import hashlib
import html
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from eg_grpo.data.schema import SPLITS, SearchLog

REQUIRED_FILES = ("valid.csv", "test.csv", "items.json")
CSV_COLUMNS = ("user_id", "history_item_id", "item_id")
REFERENCE_SIDS_FILE = "reference_sids.json"


@dataclass
class AmazonConfig:
    """How the training rows are rebuilt (see the module docstring).

    Args:
        target_split: ``"test"`` (report: valid rows become training rows) or ``"valid"``
            (tuning: valid rows stay the evaluation split, nothing of them is trained on).
        window_test_histories: also window over the first test-row history of users absent from valid.
        train_on_valid_rows: with ``target_split="test"``, add the valid rows to the training split.
        valid_holdout_fraction: with ``target_split="test"``, the share of valid users whose valid
            rows are held back as split ``valid`` (for monitoring) instead of trained on.
        valid_holdout_tail: with ``target_split="test"``, the share of valid rows held back as split
            ``valid`` counted from the end of ``valid.csv``, whose rows are in target-time order: the
            latest period, after everything trained on, like the test split after the valid rows. Tuning
            on it sees the same period shift as the test report (``valid_holdout_fraction`` does not).
        rl_tail: with ``target_split="test"`` and ``train_on_valid_rows``, the share of valid rows,
            counted back from the start of the ``valid_holdout_tail`` rows (from the end of
            ``valid.csv`` when there are none), that become split ``rl``: the freshest logs, kept
            for the RL stage instead of SFT.
        max_history: history items kept per row (the publisher used 10).
        min_history: the shortest history a window may have (a window with no history has nothing to
            condition on).
        use_train_csv: when the folder has ``train.csv``, use its rows instead of rebuilding windows.
        target_purchased: mark the target impression as purchased too.
        seed: picks the held-back users.
    """

    target_split: str = "test"
    window_test_histories: bool = True
    train_on_valid_rows: bool = True
    valid_holdout_fraction: float = 0.0
    valid_holdout_tail: float = 0.0
    rl_tail: float = 0.0
    max_history: int = 10
    min_history: int = 1
    use_train_csv: bool = True
    target_purchased: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.target_split not in ("test", "valid"):
            raise ValueError(f"target_split must be 'test' or 'valid', got {self.target_split!r}")
        if not 0.0 <= self.valid_holdout_fraction < 1.0:
            raise ValueError(f"valid_holdout_fraction must be in [0, 1), got {self.valid_holdout_fraction}")
        if not 0.0 <= self.valid_holdout_tail < 1.0:
            raise ValueError(f"valid_holdout_tail must be in [0, 1), got {self.valid_holdout_tail}")
        if self.rl_tail < 0.0 or self.valid_holdout_tail + self.rl_tail >= 1.0:
            raise ValueError(
                f"rl_tail must be >= 0 and valid_holdout_tail + rl_tail < 1 (some valid rows must stay "
                f"for SFT), got rl_tail={self.rl_tail}, valid_holdout_tail={self.valid_holdout_tail}"
            )
        if self.rl_tail > 0 and (self.target_split != "test" or not self.train_on_valid_rows):
            raise ValueError(
                "rl_tail takes trained-on valid rows for the RL stage: it needs target_split='test' and "
                "train_on_valid_rows=True"
            )
        if self.max_history < 1 or self.min_history < 1 or self.min_history > self.max_history:
            raise ValueError(
                f"need 1 <= min_history <= max_history, got min_history={self.min_history}, "
                f"max_history={self.max_history}"
            )


def _parse_list(text) -> list[int]:
    if isinstance(text, list):
        return [int(x) for x in text]
    return [int(x) for x in json.loads(str(text).replace("'", '"'))]


def _read_rows(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    missing = [c for c in CSV_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected at least {list(CSV_COLUMNS)}")
    if len(df) == 0:
        raise ValueError(f"{path} has no rows; a dataset needs rows in valid.csv and test.csv")
    return pd.DataFrame(
        {
            "user_key": df["user_id"].astype(str),
            "history": [_parse_list(h) for h in df["history_item_id"]],
            "target": df["item_id"].astype(np.int64),
            "source_row": np.arange(len(df), dtype=np.int64),
        }
    )


def load_items(dataset_dir: str | Path) -> pd.DataFrame:
    """``items.json`` → the items table (no prices in this layout: ``price`` is 0.0)."""
    raw = json.loads((Path(dataset_dir) / "items.json").read_text())
    rows = []
    for key, meta in raw.items():
        categories = meta.get("categories") or []
        if isinstance(categories, str):
            categories = [c.strip() for c in categories.split(">") if c.strip()]
        rows.append(
            {
                "item_id": int(key),
                "title": html.unescape(str(meta.get("title") or "")).strip(),
                "category_path": [str(c) for c in categories],
                "brand": str(meta.get("brand") or ""),
                "price": float(meta.get("price") or 0.0),
                "description": html.unescape(str(meta.get("description") or ""))[:2000],
            }
        )
    return pd.DataFrame(rows).sort_values("item_id").reset_index(drop=True)


def _windows(history: list[int], cfg: AmazonConfig) -> list[tuple[list[int], int]]:
    """Every (history, target) window of one item sequence, targets from position ``min_history`` on."""
    return [
        (history[max(0, i - cfg.max_history) : i], history[i]) for i in range(cfg.min_history, len(history))
    ]


def _holdout_users(users: list[str], fraction: float, seed: int) -> set[str]:
    # A hash of (seed, user) rather than an RNG draw: the same user is held out whatever the row order.
    def score(u: str) -> float:
        return int(hashlib.sha256(f"{seed}:{u}".encode()).hexdigest()[:12], 16) / 16**12

    return {u for u in users if score(u) < fraction}


def build_requests(
    valid: pd.DataFrame, test: pd.DataFrame, cfg: AmazonConfig, train: pd.DataFrame | None = None
):
    """Rebuilds the request rows: ``(user_key, history, target, split, source, source_row)`` per row.

    Args:
        valid, test: rows as read from the csv files (``user_key, history, target, source_row``).
        cfg: the rebuild options.
        train: rows of ``train.csv`` when used.

    Returns:
        A DataFrame in the order train, valid, test (within each: by user, then position).
    """
    out = []  # (user_key, history, target, split, source, source_row)
    valid_users = list(dict.fromkeys(valid["user_key"]))
    if train is not None:
        for r in train.itertuples():
            out.append((r.user_key, list(r.history), int(r.target), "train", "train_row", r.source_row))
    else:
        first_valid = valid.groupby("user_key", sort=False).head(1)
        for r in first_valid.itertuples():
            for h, t in _windows(r.history, cfg):
                out.append((r.user_key, h, int(t), "train", "window:valid_history", r.source_row))
        if cfg.window_test_histories:
            seen = set(valid_users)
            first_test = test.groupby("user_key", sort=False).head(1)
            for r in first_test[~first_test["user_key"].isin(seen)].itertuples():
                for h, t in _windows(r.history, cfg):
                    out.append((r.user_key, h, int(t), "train", "window:test_history", r.source_row))
    if cfg.target_split == "test":
        held = _holdout_users(valid_users, cfg.valid_holdout_fraction, cfg.seed)
        first_tail_row = int(round(len(valid) * (1.0 - cfg.valid_holdout_tail)))
        first_rl_row = int(round(len(valid) * (1.0 - cfg.valid_holdout_tail - cfg.rl_tail)))
        for r in valid.itertuples():
            if r.user_key in held or r.source_row >= first_tail_row:
                split = "valid"
            elif cfg.train_on_valid_rows:
                split = "rl" if r.source_row >= first_rl_row else "train"
            else:
                continue
            out.append(
                (
                    r.user_key,
                    list(r.history)[-cfg.max_history :],
                    int(r.target),
                    split,
                    "valid_row",
                    r.source_row,
                )
            )
    else:
        for r in valid.itertuples():
            out.append(
                (
                    r.user_key,
                    list(r.history)[-cfg.max_history :],
                    int(r.target),
                    "valid",
                    "valid_row",
                    r.source_row,
                )
            )
    for r in test.itertuples():
        out.append(
            (r.user_key, list(r.history)[-cfg.max_history :], int(r.target), "test", "test_row", r.source_row)
        )
    df = pd.DataFrame(out, columns=["user_key", "history", "target", "split", "source", "source_row"])
    # A window can repeat a row exactly (same user, history and target): keep the first, so no
    # example is weighted twice; eval rows are never dropped.
    key = (
        df["user_key"]
        + "|"
        + df["history"].map(lambda h: ",".join(map(str, h)))
        + "|"
        + df["target"].astype(str)
    )
    dup = key.duplicated() & (df["split"] == "train")
    return df[~dup].reset_index(drop=True)


def load_amazon(dataset_dir: str | Path, cfg: AmazonConfig | None = None) -> tuple[SearchLog, dict]:
    """Reads a dataset folder in the Amazon/MiniOneRec layout.

    Args:
        dataset_dir: folder with ``valid.csv``, ``test.csv``, ``items.json`` (and optionally
            ``train.csv``, ``reference_sids.json``).
        cfg: how to rebuild the training rows (default :class:`AmazonConfig`).

    Returns:
        ``(log, provenance)``: the validated :class:`SearchLog` and a JSON-able dict saying which
        rows each split holds (counts per ``source``, the options used).

    Raises:
        FileNotFoundError: a required file is missing.
        ValueError: a csv lacks a column or rows, or rows name items absent from ``items.json``.
    """
    cfg = cfg or AmazonConfig()
    dataset_dir = Path(dataset_dir)
    missing = [f for f in REQUIRED_FILES if not (dataset_dir / f).exists()]
    if missing:
        raise FileNotFoundError(
            f"{dataset_dir} lacks {missing}; an Amazon-layout folder holds {list(REQUIRED_FILES)} "
            "(docs/amazon.md says where to get the public files)"
        )
    items = load_items(dataset_dir)
    valid, test = _read_rows(dataset_dir / "valid.csv"), _read_rows(dataset_dir / "test.csv")
    train = None
    if cfg.use_train_csv and (dataset_dir / "train.csv").exists():
        train = _read_rows(dataset_dir / "train.csv")
    rows = build_requests(valid, test, cfg, train)

    known = set(items["item_id"].tolist())
    used = set(rows["target"].tolist()) | {i for h in rows["history"] for i in h}
    unknown = used - known
    if unknown:
        raise ValueError(f"{len(unknown)} item id(s) in the rows are not in items.json, e.g. {min(unknown)}")

    user_ids, _ = pd.factorize(rows["user_key"])
    n = len(rows)
    requests = pd.DataFrame(
        {
            "request_id": np.arange(n, dtype=np.int64),
            "user_id": user_ids.astype(np.int64),
            "query": [""] * n,
            "timestamp": np.arange(n, dtype=np.int64),
            "history": [list(map(int, h)) for h in rows["history"]],
            "split": rows["split"].to_numpy(),
            "source": rows["source"].to_numpy(),
            "source_row": rows["source_row"].to_numpy(dtype=np.int64),
            "user_key": rows["user_key"].to_numpy(),
        }
    )
    impressions = pd.DataFrame(
        {
            "request_id": requests["request_id"].to_numpy(),
            "item_id": rows["target"].to_numpy(dtype=np.int64),
            "position": np.zeros(n, dtype=np.int64),
            "clicked": np.ones(n, dtype=bool),
            "purchased": np.full(n, bool(cfg.target_purchased)),
        }
    )
    log = SearchLog(items=items, requests=requests, impressions=impressions)
    counts = rows.groupby(["split", "source"]).size()
    provenance = {
        "dataset_dir": str(dataset_dir.resolve()),
        "config": asdict(cfg),
        "used_train_csv": train is not None,
        "rows": {f"{s}/{src}": int(c) for (s, src), c in counts.items()},
        "splits": {s: int((rows["split"] == s).sum()) for s in SPLITS},
        "num_items": len(items),
        "eval_targets_unseen_in_train": {
            s: float(
                (
                    ~rows.loc[rows["split"] == s, "target"].isin(rows.loc[rows["split"] == "train", "target"])
                ).mean()
            )
            for s in ("valid", "test")
            if (rows["split"] == s).any()
        },
    }
    return log, provenance


def copy_reference_sids(dataset_dir: str | Path, data_dir: str | Path) -> bool:
    """Copies ``reference_sids.json`` into the output data folder if the dataset ships one."""
    src = Path(dataset_dir) / REFERENCE_SIDS_FILE
    if not src.exists():
        return False
    shutil.copyfile(src, Path(data_dir) / REFERENCE_SIDS_FILE)
    return True
